"""Memory back-ends: what stands behind a personality, chosen with ``--target SPEC``.

A back-end is anything that satisfies :class:`~bootkit.memory.core.MemoryIO`: the
simulated flash (``sim:CHIP``, the default), or a real target reached through a host
client (a device on USB or USB/IP, a serial bootloader, an AVR on an ISP link).  The
front personality drives it exactly as it drives the simulated flash, so a UF2 drive
can program a chip whose own bootloader speaks something else entirely (issue 23).

Target specifications (one per ``--target``)::

    sim:CHIP                         the simulated flash of CHIP (the default)
    usb:VID:PID[,SERIAL]             a device on this machine's USB (libusb)
    usbip://HOST[:PORT][/BUSID]      a device a USB/IP server exports
    serial:PORT,DIALECT              a bootloader on a serial port
    <link>:LINK                      an AVR on a programming link (the links' own syntax)

Back-ends are found through the ``bootkit.memories`` entry-point group, as
personalities and transports are (:mod:`bootkit.registry`).  An entry named after a
scheme (``sim``, ``usb``, ``usbip``, ``serial``, ...) is a factory
``factory(spec: TargetSpec, chip: Chip | None) -> MemoryIO``.  A personality that
exposes its host client as a memory registers an *adapter* under ``usb.NAME`` (tried
in turn on the device a ``usb:``/``usbip:`` spec selects:
``adapter(backend, selection: UsbSelection, chip) -> MemoryIO | None``, None when
the device is not one of its own) or ``serial.DIALECT``
(``adapter(port, dialect, chip) -> MemoryIO``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core import EraseFault, MemoryFault, WriteFault

if TYPE_CHECKING:
    from ..chips import Chip
    from ..core import MemoryIO

__all__ = [
    "TargetSpec", "UsbSelection", "parse_target", "open_target", "BackendFault", "BackendWriteFault",
    "BackendEraseFault", "adapters",
]

#: the USB/IP port the kernel's usbipd listens on (usbip_common.h USBIP_PORT)
USBIP_PORT = 3240


class BackendFault(MemoryFault):
    """The target behind the front failed: it went away, or its bootloader answered
    with an error.  The front reports it through its own protocol (the DFU engine's
    FAULT_STATUS maps the subclasses below to errWRITE/errERASE, anything else to
    errUNKNOWN), never as success."""

    kind = "target"


class BackendWriteFault(BackendFault, WriteFault):
    """Programming the target failed (DFU errWRITE)."""


class BackendEraseFault(BackendFault, EraseFault):
    """Erasing on the target failed (DFU errERASE)."""


@dataclass(frozen=True)
class UsbSelection:
    """Which device a ``usb:`` or ``usbip:`` spec selects (None: any)."""

    vid: int | None = None
    pid: int | None = None
    serial: str | None = None
    busid: str | None = None


@dataclass(frozen=True)
class TargetSpec:
    """A parsed ``--target``: ``scheme`` and the fields that scheme uses."""

    text: str
    scheme: str
    chip: str | None = None  # sim
    usb: UsbSelection | None = None  # usb, usbip
    host: str | None = None  # usbip
    port: int | None = None  # usbip
    device: str | None = None  # serial: the port's path
    dialect: str | None = None  # serial
    link: str | None = None  # any other scheme: the rest of the spec, as the link reads it

    def describe(self) -> str:
        return self.text


def _hex16(text: str, what: str, spec: str) -> int:
    try:
        value = int(text, 16)
    except ValueError:
        raise ValueError(f"--target {spec}: {what} {text!r} is not a hex number") from None
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"--target {spec}: {what} {text!r} is not 16 bits")
    return value


def parse_target(text: str) -> TargetSpec:
    """``--target SPEC`` -> :class:`TargetSpec`; ValueError, one line naming the spec and
    what is wrong with it.  The scheme is checked against the registered back-ends
    by :func:`open_target`, not here (a plug-in may add one)."""
    spec = text.strip()
    if not spec:
        raise ValueError("--target: empty (e.g. sim:stm32f411, usbip://127.0.0.1:3240)")
    if spec.startswith("usbip://"):
        rest = spec[len("usbip://"):]
        where, _, busid = rest.partition("/")
        if not where:
            raise ValueError(f"--target {spec}: no host (usbip://HOST[:PORT][/BUSID])")
        host, port = where, USBIP_PORT
        if where.startswith("["):  # [v6]:PORT
            close = where.find("]")
            if close < 0:
                raise ValueError(f"--target {spec}: unclosed '[' in the host")
            host, tail = where[1:close], where[close + 1:]
            if tail:
                if not tail.startswith(":"):
                    raise ValueError(f"--target {spec}: expected :PORT after ]")
                port = _port(tail[1:], spec)
        elif ":" in where:
            host, _, p = where.rpartition(":")
            port = _port(p, spec)
        if "/" in busid or (busid and len(busid.encode()) > 31):
            raise ValueError(f"--target {spec}: bus id {busid!r} is not a USB/IP bus id (e.g. 1-1)")
        return TargetSpec(spec, "usbip", usb=UsbSelection(busid=busid or None), host=host, port=port)
    scheme, sep, rest = spec.partition(":")
    if not sep or not scheme:
        raise ValueError(f"--target {spec}: expected SCHEME:..., e.g. sim:CHIP, usb:VID:PID, "
                         f"usbip://HOST[:PORT], serial:PORT,DIALECT")
    scheme = scheme.lower()
    if scheme == "sim":
        if not rest:
            raise ValueError(f"--target {spec}: sim needs a chip (sim:CHIP)")
        return TargetSpec(spec, "sim", chip=rest)
    if scheme == "usb":
        ids, _, serial = rest.partition(",")
        vid, sep2, pid = ids.partition(":")
        if not sep2 or not vid or not pid:
            raise ValueError(f"--target {spec}: expected usb:VID:PID[,SERIAL] (hex ids)")
        return TargetSpec(spec, "usb", usb=UsbSelection(_hex16(vid, "VID", spec), _hex16(pid, "PID", spec),
                                                        serial or None))
    if scheme == "serial":
        device, _, dialect = rest.rpartition(",")
        if not device or not dialect:
            raise ValueError(f"--target {spec}: expected serial:PORT,DIALECT (e.g. serial:/dev/ttyACM0,avr109)")
        return TargetSpec(spec, "serial", device=device, dialect=dialect.lower())
    if not rest:
        raise ValueError(f"--target {spec}: nothing after {scheme}:")
    return TargetSpec(spec, scheme, link=rest)


def _port(text: str, spec: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise ValueError(f"--target {spec}: port {text!r} is not a number") from None
    if not 0 < port < 65536:
        raise ValueError(f"--target {spec}: port {port} is outside 1-65535")
    return port


def schemes() -> list[str]:
    """The registered schemes (entries without a dot): what ``--target`` accepts."""
    from ... import registry

    return [n for n in registry.memory_names() if "." not in n]


def adapters(kind: str) -> list[tuple[str, Any]]:
    """The registered adapters ``KIND.NAME`` (``usb.*``, ``serial.*``), loaded, by name."""
    from ... import registry

    return [(n.partition(".")[2], registry.memory(n)) for n in registry.memory_names()
            if n.startswith(kind + ".")]


def open_target(spec: TargetSpec | str, chip: Chip | None = None) -> MemoryIO:
    """The memory ``spec`` names, opened.  ValueError (bad input: one line) for a scheme no
    back-end is registered for; the back-end's own errors otherwise (OSError, a host
    client's HostError: the target could not be reached)."""
    from ... import registry

    if isinstance(spec, str):
        spec = parse_target(spec)
    names = schemes()
    if spec.scheme not in names:
        raise ValueError(f"--target {spec.text}: no memory back-end {spec.scheme!r} "
                         f"(registered: {', '.join(names)})")
    memory: MemoryIO = registry.memory(spec.scheme)(spec, chip)
    return memory
