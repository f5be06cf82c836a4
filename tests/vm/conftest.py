"""Fixtures for the VM tests: one QEMU guest shared by every test that asks
for `guest` (booted again only if a test left it dead).

Skip policy: a missing system tool skips the tests, except under CI (the
CI environment variable set), where it fails them.
Set BOOTKIT_VM_KEEP=1 to keep each VM's work directory (console.log,
qemu.cmd, initramfs) in /tmp after the session.
"""

import os
from pathlib import Path

import pytest

from .harness import GuestVM, vm_available

HERE = Path(__file__).resolve().parent


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require_vm():
    """Skip (or, under CI, fail) when qemu, the kernel or busybox-static is missing."""
    ok, why = vm_available()
    if not ok:
        if in_ci():
            pytest.fail(f"CI is set and a required tool is missing: {why}", pytrace=False)
        pytest.skip(why)


# Two guests, one per xdist worker (--dist loadgroup), each running its share of the VM
# tests from the start: a TCG guest is one busy core, so with one guest the VM tests ran
# one after another (about 90% of CI's wall time) while the other core ran out of
# in-process tests.  xdist hands out the largest groups first, so both start at once.
# The split is by file, balanced by the files' CI durations (pytest --durations); a file
# not named here goes to vm-b.
VM_GROUP_A = frozenset({
    "test_msc_interop.py", "test_xusb_interop.py", "test_usbip_interop.py",
    "test_bridge_interop.py", "test_cdc_interop.py", "test_printer_interop.py",
})


def vm_group(path: Path) -> str:
    return "vm-a" if path.name in VM_GROUP_A else "vm-b"


def pytest_collection_modifyitems(config, items):
    # This hook sees the whole session's items: mark only ours.
    for item in items:
        path = Path(str(item.path)).resolve()
        if HERE in path.parents:
            item.add_marker(pytest.mark.vm)
            # under pytest-xdist every test of a group runs on one worker, which
            # boots that group's shared guest, beside the in-process tests
            item.add_marker(pytest.mark.xdist_group(vm_group(path)))


class _SharedGuest:
    def __init__(self):
        self.vm = None
        self.boots = 0
        self.boot_error = None

    def get(self) -> GuestVM:
        if self.boot_error is not None:
            # one failed boot is enough: do not pay the boot timeout per test
            raise self.boot_error
        if self.vm is None or not self.vm.alive:
            if self.vm is not None:
                self.vm.close()
            self.vm = GuestVM(keep_workdir=bool(os.environ.get("BOOTKIT_VM_KEEP")))
            self.boots += 1
            try:
                self.vm.start()
            except Exception as e:
                self.boot_error = e
                raise
        return self.vm

    def close(self):
        if self.vm is not None:
            self.vm.close()
            self.vm = None


@pytest.fixture(scope="session")
def _shared_guest():
    shared = _SharedGuest()
    yield shared
    shared.close()


@pytest.fixture
def vm_tools():
    """For tests that start their own GuestVM: applies the skip policy."""
    require_vm()


@pytest.fixture
def guest(_shared_guest) -> GuestVM:
    """The session's running GuestVM (booted on first use)."""
    require_vm()
    return _shared_guest.get()
