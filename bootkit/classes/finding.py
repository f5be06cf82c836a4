"""What the personalities' finders (``<personality>/finder.py``) share: how a USB device is
named on one line, which backend is real hardware, and this machine's serial ports.

Nothing here imports pyusb or pyserial at module level: ``bootkit list`` loads only the
finders it runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

from ..contracts import Found, Link


def real_usb(backend: Any) -> bool:
    """Whether ``backend`` is a pyusb backend for real hardware (libusb, openusb): there the
    kernel binds its own driver to a CDC-ACM, mass-storage, printer or MIDI interface and
    a host talks through what that driver makes (a tty, a mounted drive, /dev/usb/lpN, an
    ALSA port), so those are found as such, not as USB interfaces.  bootkit's in-process
    bus and its USB/IP client have no kernel driver in between."""
    return backend is not None and type(backend).__module__.startswith("usb.backend")


def usb_where(dev: Any, backend: Any = None) -> str:
    """"USB 03eb:2ff4 (bus 1 dev 5)", or the USB/IP server and bus id for a device a server exports."""
    ids = f"{dev.idVendor:04x}:{dev.idProduct:04x}"
    server = getattr(backend, "host", None), getattr(backend, "port", None)
    busid = getattr(getattr(dev, "_ctx", None), "dev", None)
    busid = getattr(busid, "busid", None)
    if server[0] is not None and busid:
        return f"USB/IP {server[0]}:{server[1]} {busid} ({ids})"
    return f"USB {ids} (bus {dev.bus} dev {dev.address})"


def usb_found(personality: str, dialect: str | None, dev: Any, backend: Any, *, serial: str | None = None,
              chip: str | None = None, **details: Any) -> Found:
    """A :class:`Found` for a device on a pyusb bus (its link selects it by ids and serial)."""
    return Found(personality, dialect, Link(backend=backend, vid=dev.idVendor, pid=dev.idProduct, serial=serial),
                 usb_where(dev, backend), vid=dev.idVendor, pid=dev.idProduct, serial=serial, chip=chip,
                 details={"bus": dev.bus, "address": dev.address, **details})


def release(dev: Any) -> None:
    """Close what a finder opened on ``dev`` (pyusb's handle, claimed interfaces).  Over USB/IP
    an open device holds the server's one import: left to the garbage collector, it would
    keep the device from every other client (another process's listing or flash)."""
    import usb.util

    try:
        usb.util.dispose_resources(dev)
    except Exception:  # noqa: BLE001 - closing is best effort: the device may be gone
        pass


@dataclass(frozen=True)
class SerialPort:
    """A serial port as pyserial's list_ports describes it (vid/pid None: not a USB port)."""

    device: str
    vid: int | None = None
    pid: int | None = None
    serial: str | None = None
    description: str = ""


def serial_ports(comports: Callable[[], Iterable[Any]] | None = None) -> list[SerialPort]:
    """This machine's serial ports (pyserial's ``serial.tools.list_ports.comports()``, or the
    ``comports`` given: a test's fake entries)."""
    if comports is None:
        from serial.tools import list_ports

        comports = list_ports.comports
    return [SerialPort(p.device, p.vid, p.pid, p.serial_number or None,
                       p.description if p.description and p.description != "n/a" else "")
            for p in comports()]


def port_found(personality: str, dialect: str | None, port: SerialPort, **details: Any) -> Found:
    """A :class:`Found` for a serial port: "/dev/ttyACM0 (2341:0036)"."""
    ids = f" ({port.vid:04x}:{port.pid:04x})" if port.vid is not None and port.pid is not None else ""
    if port.description:
        details = {"description": port.description, **details}
    return Found(personality, dialect, Link(port=port.device), f"{port.device}{ids}", vid=port.vid, pid=port.pid,
                 serial=port.serial, details=details)


__all__ = ["real_usb", "release", "usb_where", "usb_found", "SerialPort", "serial_ports", "port_found"]
