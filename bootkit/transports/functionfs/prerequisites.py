"""What the gadget transport needs from the machine: root, configfs, FunctionFS, a free UDC.

:func:`check_prerequisites` looks before anything is touched and raises
:class:`~bootkit.transports.base.TransportUnavailable` with a one-line fix.
"""

from __future__ import annotations

import os

from ..base import TransportUnavailable

CONFIGFS = "/sys/kernel/config"
GADGETS = CONFIGFS + "/usb_gadget"
UDC_CLASS = "/sys/class/udc"
DEFAULT_GADGET = "bootkit"


def _mounts() -> list[tuple[str, str, str]]:
    try:
        with open("/proc/mounts") as f:
            fields = [line.split() for line in f]
        return [(x[0], x[1], x[2]) for x in fields if len(x) >= 3]
    except OSError:
        return []


def _filesystems() -> set[str]:
    try:
        with open("/proc/filesystems") as f:
            return {line.split()[-1] for line in f if line.strip()}
    except OSError:
        return set()


def _functionfs_present() -> bool:
    # f_fs.c registers the "functionfs" filesystem only when the first
    # ffs.* instance is created, so look for the module too.
    if "functionfs" in _filesystems() or os.path.isdir("/sys/module/usb_f_fs"):
        return True
    try:
        with open(f"/lib/modules/{os.uname().release}/modules.builtin") as f:
            return any(line.strip().endswith("/usb_f_fs.ko") for line in f)
    except OSError:
        return False


def available_udcs() -> list[str]:
    try:
        return sorted(os.listdir(UDC_CLASS))
    except OSError:
        return []


def _udc_speed(udc: str) -> str:
    """"full" or "high", from /sys/class/udc/UDC/current_speed ("high-speed", ...)."""
    try:
        with open(os.path.join(UDC_CLASS, udc, "current_speed")) as f:
            text = f.read().strip()
    except OSError:
        return "high"
    return "full" if text in ("full-speed", "low-speed") else "high"


def _udc_owner(udc: str) -> str | None:
    """Name of the configfs gadget bound to `udc`, if any."""
    try:
        names = os.listdir(GADGETS)
    except OSError:
        return None
    for name in names:
        try:
            with open(os.path.join(GADGETS, name, "UDC")) as f:
                if f.read().strip() == udc:
                    return name
        except OSError:
            continue
    return None


def check_prerequisites(udc: str | None = None, gadget_name: str = DEFAULT_GADGET) -> str:
    """Return the UDC to bind, or raise TransportUnavailable with a one-line fix."""
    if os.geteuid() != 0 and not os.access(GADGETS, os.W_OK):
        raise TransportUnavailable(
            "the functionfs transport needs root (configfs gadgets and mount(2)): run it with sudo")
    if not any(fstype == "configfs" and mnt == CONFIGFS for _, mnt, fstype in _mounts()):
        raise TransportUnavailable(
            f"configfs not mounted at {CONFIGFS}: run `modprobe libcomposite` and "
            f"`mount -t configfs none {CONFIGFS}`")
    if not os.path.isdir(GADGETS):
        raise TransportUnavailable(
            f"{GADGETS} is missing (libcomposite not loaded): run `modprobe libcomposite`")
    if not _functionfs_present():
        raise TransportUnavailable("FunctionFS is not available: run `modprobe usb_f_fs`")
    udcs = available_udcs()
    if not udcs:
        raise TransportUnavailable(
            f"no UDC in {UDC_CLASS}: load dummy_hcd (`modprobe dummy_hcd`) or use a board with a "
            "device controller (Raspberry Pi Zero: dtoverlay=dwc2, `modprobe dwc2`)")
    if udc is None:
        free = [u for u in udcs if _udc_owner(u) in (None, gadget_name)]
        if not free:
            raise TransportUnavailable(
                f"every UDC is taken ({', '.join(f'{u} by gadget {_udc_owner(u)}' for u in udcs)}): "
                f"unbind one (`echo > {GADGETS}/NAME/UDC`) or pass --udc")
        udc = free[0]
    elif udc not in udcs:
        raise TransportUnavailable(f"no UDC named {udc!r} in {UDC_CLASS} (present: {', '.join(udcs)})")
    else:
        owner = _udc_owner(udc)
        if owner not in (None, gadget_name):
            raise TransportUnavailable(
                f"UDC {udc} is already bound to gadget {owner!r}: `echo > {GADGETS}/{owner}/UDC` first")
    return udc
