"""Finding DFU interfaces on a bus, and bringing a run-time device into DFU mode
(DFU 1.1 section 5.1, as dfu-util does)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import usb.core
import usb.util

from ..usbhost import FoundDevice, matching_devices
from .client import DfuClient, DfuError
from .protocol import (
    ATMEL_VID,
    DFU_CLASS,
    DFU_FUNCTIONAL,
    DFU_SUBCLASS,
    DFUSE_PID,
    DFUSE_VERSION,
    FLIP_PIDS,
    PROTOCOL_RUNTIME,
    ST_VID,
    FunctionalDescriptor,
)


@dataclass
class DfuInterface(FoundDevice):
    """A DFU interface found on a device (run-time or DFU mode)."""

    device: usb.core.Device
    interface: int
    alts: list[tuple[int, str]]
    functional: FunctionalDescriptor
    runtime: bool
    # False when the device carries no functional descriptor (a FunctionFS
    # gadget on Linux before 6.12): wTransferSize is then only a guess.
    described: bool = True

    def guess_dialect(self) -> str:
        if self.functional.bcdDFUVersion == DFUSE_VERSION:
            return "dfuse"
        if not self.described and (any(name.startswith("@") for _, name in self.alts)
                                   or (self.vid, self.pid) == (ST_VID, DFUSE_PID)):
            # no functional descriptor to read bcdDFUVersion 0x011A from (a gadget on
            # an older kernel): DfuSe layout strings in the alternate names, or ST's
            # ROM ids, say DfuSe as surely
            return "dfuse"
        if self.vid == ATMEL_VID and self.pid in FLIP_PIDS.values():
            return "flip"
        return "dfu"

    def describe(self) -> str:
        mode = "runtime" if self.runtime else "dfu"
        alts = "; ".join(f"alt={a} name=\"{n}\"" for a, n in self.alts)
        return (f"[{self.vid:04x}:{self.pid:04x}] ver={self.device.bcdDevice:04x} intf={self.interface} "
                f"mode={mode} serial=\"{self.serial or ''}\" {alts}")


def find_interfaces(backend=None, *, vid=None, pid=None, serial=None) -> list[DfuInterface]:
    found = []
    for dev, cfg in matching_devices(backend, vid=vid, pid=pid, serial=serial):
        groups: dict[int, list] = {}
        for intf in cfg:
            if intf.bInterfaceClass == DFU_CLASS and intf.bInterfaceSubClass == DFU_SUBCLASS:
                groups.setdefault(intf.bInterfaceNumber, []).append(intf)
        for number, alts in groups.items():
            raw = bytes(alts[0].extra_descriptors)
            functional = _functional_from(raw)
            names = []
            for a in alts:
                try:
                    name = usb.util.get_string(dev, a.iInterface) if a.iInterface else ""
                except (usb.core.USBError, ValueError):
                    name = ""
                names.append((a.bAlternateSetting, name or ""))
            found.append(DfuInterface(dev, number, names, functional or FunctionalDescriptor(),
                                      alts[0].bInterfaceProtocol == PROTOCOL_RUNTIME, functional is not None))
    return found


def _functional_from(extra: bytes) -> FunctionalDescriptor | None:
    i = 0
    while i + 2 <= len(extra):
        length = extra[i]
        if length < 2:
            break
        if extra[i + 1] == DFU_FUNCTIONAL:
            return FunctionalDescriptor.unpack(extra[i:i + length])
        i += length
    return None


def wait_for(backend, *, vid=None, pid=None, serial=None, runtime: bool | None = False, timeout: float = 5.0):
    """Wait for a DFU interface to (re)appear, as dfu-util does after a detach."""
    deadline = time.monotonic() + timeout
    while True:
        for item in find_interfaces(backend, vid=vid, pid=pid, serial=serial):
            if runtime is None or item.runtime == runtime:
                return item
        if time.monotonic() >= deadline:
            raise DfuError("no DFU device came back after detach" if runtime is False else "no DFU device found")
        time.sleep(0.05)


def detach_to_dfu(item: DfuInterface, backend, timeout: float = 5.0) -> DfuInterface:
    """DETACH a run-time device and wait for its DFU-mode self (DFU 1.1 section 5.1)."""
    client = DfuClient(item)
    serial = item.serial
    client.detach(min(item.functional.wDetachTimeOut or 1000, 1000))
    if not item.functional.will_detach:
        try:
            item.device.reset()
        except usb.core.USBError:
            pass  # the device re-enumerated under us: that is the point
    return wait_for(backend, serial=serial, runtime=False, timeout=timeout)


def find(backend=None, *, local: bool = True) -> list:
    """:class:`~bootkit.contracts.Found` for every DFU interface on ``backend``'s bus
    (run-time ones too: ``details["mode"]`` says which), for ``bootkit list``."""
    from ..finding import release, usb_found
    from .protocol import FLIP_PIDS

    if backend is None:
        return []
    out = []
    for item in find_interfaces(backend):
        dialect = item.guess_dialect()
        chip = None
        if dialect == "flip":  # the product id names the part, when only one part has it
            parts = [name for name, pid in FLIP_PIDS.items() if pid == item.pid]
            chip = parts[0] if len(parts) == 1 else None
        out.append(usb_found("dfu", dialect, item.device, backend, serial=item.serial, chip=chip,
                             mode="runtime" if item.runtime else "dfu", interface=item.interface,
                             alternates=[{"alt": a, "name": n} for a, n in item.alts],
                             transfer_size=item.functional.wTransferSize))
        release(item.device)  # the alternate settings' names were read through an open handle
    return out
