"""The blink device side: a sans-I/O engine over any MemoryIO, and the Function that
puts it on endpoint 0.

:class:`BlinkEngine` knows nothing of USB: a request code, a data stage or a
length in, reply bytes out (or :class:`Refused`), plus the seconds its memory
is busy.  :class:`BlinkFunction` routes the vendor requests addressed to its
interface to it and turns a refusal into a STALL; the transport (in-process
bus, USB/IP, a FunctionFS gadget) owns every loop, thread and wait.
"""

from __future__ import annotations

import struct
from typing import Callable

from bootkit.memory import (
    AddressFault,
    EraseFault,
    FirmwareFault,
    MemoryFault,
    MemoryIO,
    NotErasedFault,
    ProtectedFault,
    VerifyFault,
    WriteFault,
)
from bootkit.usb.descriptors import Interface
from bootkit.usb.device import RECIP_INTERFACE, TYPE_VENDOR, Function, SetupPacket, SignalKind, Stall

from . import protocol as P

# one status code per memory fault (the built-ins keep the same kind of table: FAULT_STATUS)
FAULT_STATUS: dict[type[MemoryFault], int] = {
    AddressFault: P.ERR_ADDRESS,
    ProtectedFault: P.ERR_PROTECTED,
    NotErasedFault: P.ERR_NOT_ERASED,
    WriteFault: P.ERR_WRITE,
    EraseFault: P.ERR_ERASE,
    VerifyFault: P.ERR_VERIFY,
    FirmwareFault: P.ERR_FIRMWARE,
}


class Refused(Exception):
    """A request the engine refuses; ``status`` is what GET_STATUS reports next."""

    def __init__(self, why: str, status: int):
        super().__init__(why)
        self.status = status


class BlinkEngine:
    """The protocol of :mod:`bootkit_blink.protocol` as a state machine: one address
    pointer, the last status, and the memory.  ``signal(kind, reason)`` is how it asks
    to be reset into the application (the Function's :meth:`~Function.signal`).  ``busy``:
    the seconds the memory stays busy after the last request (what MemoryIO returned; 0.0
    in fast mode), which the Function hands to its transport."""

    def __init__(self, memory: MemoryIO, *, max_transfer: int = 1024,
                 signal: Callable[[SignalKind, str], None] | None = None):
        self.memory = memory
        self.max_transfer = max_transfer
        self.signal = signal or (lambda kind, reason: None)
        flash = memory.layout.flash
        app = memory.layout.application_ranges("flash")
        self.info = P.Info(max_transfer, flash.start, flash.size, *(app[0] if app else (flash.start, flash.start)))
        self.pointer = flash.start
        self.status = P.OK
        self.busy = 0.0
        self.refusals: list[str] = []  # why requests were refused, for logs and tests

    def request(self, code: int, *, data: bytes | None = None, length: int = 0) -> bytes | None:
        """One request: an OUT request with its data stage ``data``, or an IN request
        (``data`` None) for ``length`` bytes.  Returns the IN data (None for an OUT
        request); raises :class:`Refused`."""
        self.busy = 0.0
        try:
            if (code in P.IN_REQUESTS) != (data is None):
                raise Refused(f"request 0x{code:02X} in the wrong direction", P.ERR_REQUEST)
            reply = self._request(code, data or b"", length)
        except MemoryFault as fault:
            refused = Refused(str(fault), FAULT_STATUS.get(type(fault), P.ERR_WRITE))
            self.status = refused.status
            self.refusals.append(str(refused))
            raise refused from None
        except Refused as refused:
            self.status = refused.status
            self.refusals.append(str(refused))
            raise
        if code != P.GET_STATUS:
            self.status = P.OK
        return reply

    def _request(self, code: int, data: bytes, length: int) -> bytes | None:
        if code == P.GET_INFO:
            return self.info.pack()
        if code == P.GET_STATUS:
            return P.Status(self.status, bool(self.memory.app_valid), self.pointer).pack()
        if code == P.SET_ADDRESS:
            if len(data) != 4:
                raise Refused(f"SET_ADDRESS takes 4 bytes, got {len(data)}", P.ERR_REQUEST)
            self.pointer = struct.unpack("<I", data)[0]
            return None
        if code == P.ERASE:
            start, size = self.memory.layout.find(self.pointer, "flash").sector_at(self.pointer)
            # MemoryIO refuses the bootloader's sectors itself (ProtectedFault): no request reaches them
            self.busy = self.memory.erase(start)
            self.pointer = start + size
            return None
        if code == P.WRITE:
            if not 1 <= len(data) <= self.max_transfer:
                raise Refused(f"WRITE of {len(data)} bytes (1..{self.max_transfer})", P.ERR_REQUEST)
            self.busy = self.memory.program(self.pointer, bytes(data))
            self.pointer += len(data)
            return None
        if code == P.READ:
            if not 1 <= length <= self.max_transfer:
                raise Refused(f"READ of {length} bytes (1..{self.max_transfer})", P.ERR_REQUEST)
            if self.memory.read_protected:
                raise Refused("read-out protected", P.ERR_PROTECTED)
            out = self.memory.read(self.pointer, length)
            self.pointer += length
            return out
        if code == P.LEAVE:
            # the application is marked valid only now, after the host's complete image
            # (DESIGN: power safety); an interrupted update leaves it invalid
            self.busy = self.memory.manifest()
            self.signal(SignalKind.LEAVE, "LEAVE request")
            return None
        raise Refused(f"unknown request 0x{code:02X}", P.ERR_REQUEST)


class BlinkFunction(Function):
    """One vendor-specific interface, control requests only (no endpoints)."""

    name = "blink"

    def __init__(self, engine: BlinkEngine, interface_name: str | None = "blink bootloader"):
        super().__init__()
        self.engine = engine
        self.interface_name = interface_name
        engine.signal = lambda kind, reason: self.signal(kind, reason)

    def interfaces(self, speed: str = "full") -> list[Interface]:
        return [Interface(0, P.INTERFACE_CLASS, P.INTERFACE_SUBCLASS, P.INTERFACE_PROTOCOL,
                          name=self.interface_name)]

    def setup(self, req: SetupPacket, data: bytes) -> bytes | None:
        if req.type != TYPE_VENDOR or req.recipient != RECIP_INTERFACE or req.wIndex & 0xFF != 0:
            raise Stall
        try:
            reply = self.engine.request(req.bRequest, data=None if req.is_in else bytes(data),
                                        length=req.wLength)
        except Refused as refused:
            raise Stall(str(refused)) from None
        finally:
            self.busy(self.engine.busy)  # the transport holds the next transfer meanwhile
        return reply


class BlinkAppFunction(Function):
    """The application's run-time interface: DETACH resets the board into its bootloader
    (the application then blinks no more: it was asked to make room for an update)."""

    name = "blink-app"

    def interfaces(self, speed: str = "full") -> list[Interface]:
        return [Interface(0, P.INTERFACE_CLASS, P.APP_SUBCLASS, P.INTERFACE_PROTOCOL, name="blink application")]

    def setup(self, req: SetupPacket, data: bytes) -> bytes | None:
        if (req.type, req.recipient, req.bRequest, req.is_in) != (TYPE_VENDOR, RECIP_INTERFACE, P.DETACH, False):
            raise Stall
        self.signal(SignalKind.ENTER_BOOTLOADER, "DETACH request")
        return None
