"""The vmm provider: a model of the bhyve vmm driver's VMs, soft state and kstats.

The pluggy plugin is ``kstatpy_providers.vmm.provider`` (entry point ``vmm``); the
instance life cycle is in ``ops`` (hooks) and ``kstatpy.instance`` (the order).
This package imports nothing, so ``vmmctl`` (``kstatpy_providers.vmm.vmmctl``)
starts without pluggy or the chain.
"""
