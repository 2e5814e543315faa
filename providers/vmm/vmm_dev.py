"""The vmm ioctl numbers (illumos ``sys/vmm_dev.h``), importable without the provider.

``vmmctl`` needs only these and the micro-state constants, so this module imports
nothing: a client does not load pluggy, the chain or the instance framework. The
handlers are in ``kstatpy_providers.vmm.ioctl``; the contract in docs/VMM.md §5.
"""

from __future__ import annotations

__all__ = ["VMM_CLOSE", "VMM_CREATE_VM", "VMM_DESTROY_VM", "VMM_LIST", "VMM_OPEN", "VMM_VCPU_USTATE"]

# illumos numbers: VMMCTL_IOC_BASE (("V" << 16) | ("M" << 8)) | 1 and | 2, on /dev/vmmctl.
VMM_CREATE_VM = 0x564D01
VMM_DESTROY_VM = 0x564D02
# kstatpy's own, for what bhyve does with open(2), close(2) and VM_RUN.
VMM_OPEN = 0x564DF0
VMM_CLOSE = 0x564DF1
VMM_VCPU_USTATE = 0x564DF2
VMM_LIST = 0x564DF3
