"""Test-only providers for a real kstatd (``kstatd --plugin tests.providers_fixture.NAME``).

The subprocess needs the repository root on PYTHONPATH (tests/kstatd_fixture.py sets it).
"""
