"""``usb:VID:PID[,SERIAL]`` and ``usbip://HOST[:PORT][/BUSID]``: a device reached through
the host client of its own personality.

Which personality is found by asking each registered ``usb.*`` adapter in turn
(``bootkit.memories`` entry points): the first that recognises the device returns
its memory.  This module names no personality (the layering rule: memory sits below
the personality packages); it only chooses the pyusb backend.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import TargetSpec, UsbSelection, adapters

if TYPE_CHECKING:
    from ..chips import Chip
    from ..core import MemoryIO


class NoTarget(OSError):
    """Nothing a registered adapter can drive at the spec's address (exit 1: the
    environment, not the command line)."""


def _through(backend, sel: UsbSelection, chip: Chip | None, spec: TargetSpec) -> MemoryIO:
    found = adapters("usb")
    for _name, adapter in found:
        memory = adapter(backend, sel, chip)
        if memory is not None:
            return memory
    names = ", ".join(n for n, _ in found) or "none registered"
    raise NoTarget(f"no device there that a memory adapter ({names}) can drive")


def open_usb(spec: TargetSpec, chip: Chip | None = None) -> MemoryIO:
    """A device on this machine's USB, through libusb (pyusb's default backend)."""
    assert spec.usb is not None
    return _through(None, spec.usb, chip, spec)


def open_usbip(spec: TargetSpec, chip: Chip | None = None) -> MemoryIO:
    """A device a USB/IP server exports, through bootkit's userspace client (no vhci-hcd)."""
    from ...transports.usbip_client import UsbipBackend

    assert spec.host is not None and spec.port is not None and spec.usb is not None
    busid = spec.usb.busid
    backend: UsbipBackend
    if busid is None:
        backend = UsbipBackend(spec.host, spec.port)
    else:
        backend = _OneBusId(spec.host, spec.port, busid)
    return _through(backend, spec.usb, chip, spec)


def _one_busid_class():
    from ...transports.usbip_client import UsbipBackend

    class OneBusId(UsbipBackend):
        """The server's devices narrowed to one bus id (``usbip attach -b BUSID``)."""

        def __init__(self, host: str, port: int, busid: str):
            super().__init__(host, port)
            self.busid = busid

        def enumerate_devices(self):
            return [rid for rid in super().enumerate_devices() if rid.busid == self.busid]

    return OneBusId


def _OneBusId(host: str, port: int, busid: str):  # noqa: N802 - a class made on first use (lazy import)
    return _one_busid_class()(host, port, busid)
