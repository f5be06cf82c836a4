"""A sans-I/O USB device: Functions composed into a Device.

Events in (a setup packet with its data, OUT data on an endpoint, an IN
token, bus reset), results out (reply bytes, ACK, STALL, IN data or NAK),
plus *signals* a personality raises for its transport (re-enumerate,
disconnect).  No threads, sockets or sleeps here: transports own the I/O.

A :class:`Function` is one personality's interface group and sees only
function-local interface numbers and its own :class:`Endpoint` objects;
that is exactly what FunctionFS gives a gadget function (the kernel
composes the device and renumbers), so the same Function runs under every
transport.  The :class:`Device` answers the chapter-9 standard requests
for the other transports.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Iterable, Protocol, runtime_checkable

from . import descriptors as D
from .descriptors import DeviceInfo, Endpoint, Interface

# bRequest (USB 2.0 table 9-4)
GET_STATUS = 0
CLEAR_FEATURE = 1
SET_FEATURE = 3
SET_ADDRESS = 5
GET_DESCRIPTOR = 6
SET_DESCRIPTOR = 7
GET_CONFIGURATION = 8
SET_CONFIGURATION = 9
GET_INTERFACE = 10
SET_INTERFACE = 11
SYNCH_FRAME = 12

# feature selectors (table 9-6)
ENDPOINT_HALT = 0
DEVICE_REMOTE_WAKEUP = 1
TEST_MODE = 2

TYPE_STANDARD, TYPE_CLASS, TYPE_VENDOR = 0, 1, 2
RECIP_DEVICE, RECIP_INTERFACE, RECIP_ENDPOINT, RECIP_OTHER = 0, 1, 2, 3


class Stall(Exception):
    """Raised by a request handler: the transport answers with a STALL handshake."""


@dataclass(frozen=True)
class SetupPacket:
    bmRequestType: int
    bRequest: int
    wValue: int
    wIndex: int
    wLength: int

    @classmethod
    def unpack(cls, raw: bytes) -> "SetupPacket":
        return cls(*struct.unpack("<BBHHH", raw[:8]))

    def pack(self) -> bytes:
        return struct.pack("<BBHHH", self.bmRequestType, self.bRequest, self.wValue, self.wIndex, self.wLength)

    @property
    def is_in(self) -> bool:
        return bool(self.bmRequestType & 0x80)

    @property
    def type(self) -> int:
        return (self.bmRequestType >> 5) & 3

    @property
    def recipient(self) -> int:
        return self.bmRequestType & 0x1F

    def with_index(self, index: int) -> "SetupPacket":
        return SetupPacket(self.bmRequestType, self.bRequest, self.wValue, index, self.wLength)


class SignalKind(str, Enum):
    """What a Function tells its Target (and the board behind it) to do.  The values are
    the strings the kinds always had, so ``kind == "leave"`` keeps working."""

    LEAVE = "leave"  # start the application (or the bootloader again when it is not valid)
    ENTER_BOOTLOADER = "enter-bootloader"  # an application asks for its bootloader (DFU_DETACH)
    TOUCH_1200 = "touch-1200"  # Arduino's 1200-baud touch on an application's serial port
    REENUMERATE = "reenumerate"  # reset and enumerate again as whatever the board is now
    DISCONNECT = "disconnect"  # gone from the bus, nothing comes back
    WATCHDOG = "watchdog"  # the bootloader's watchdog reset the chip (xusb-boot: no SOF within 2 s)
    RESET_BUTTON = "reset-button"  # the board's reset button (an event from outside: bootkit serve)

    def __str__(self) -> str:  # "leave", in messages and history, as before
        return self.value


# Signals a Function raises for its transport.
@dataclass(frozen=True)
class Signal:
    kind: SignalKind
    reason: str = ""
    delay: float = 0.0  # seconds the device stays as it is before acting (MSC: let the host finish)


@runtime_checkable
class ByteStream(Protocol):
    """A function's data as a plain byte stream, for transports that carry no USB
    (a pseudo-terminal, an ALSA MIDI port): what :meth:`Function.byte_stream` returns.

    ``feed(data)`` takes bytes from the host and returns what the device answers
    at once (empty when it waits for more; a MIDI device answers whole messages);
    ``disconnect()`` says the host went away (the port was closed), so a partial
    command is dropped.
    """

    def feed(self, data: bytes) -> bytes: ...

    def disconnect(self) -> None: ...


class Function:
    """Base class of one personality's interface group.

    Subclasses define :meth:`interfaces` and override the handlers they need.
    ``setup`` gets class and vendor requests (and standard requests aimed at
    an interface that the Device does not handle itself, such as HID's
    GET_DESCRIPTOR for the report descriptor), with ``wIndex`` rewritten to
    the function-local interface number for interface recipients, as
    FunctionFS does.
    """

    name = "function"
    # Interface Association: set for multi-interface classes (CDC, MIDI)
    # so composite devices group them (USB ECN IAD).
    iad: tuple[int, int, int] | None = None  # (class, subclass, protocol)
    _busy = 0.0  # seconds reported by busy() and not yet taken by the Target

    def __init__(self) -> None:
        self._signals: list[Signal] = []
        self._busy = 0.0
        self.device: "Device | None" = None

    # --- declarations
    def interfaces(self, speed: str = "full") -> list[Interface]:
        raise NotImplementedError

    def strings(self) -> list[str]:
        """Extra strings this function refers to, besides interface names."""
        return []

    def endpoints(self) -> list[Endpoint]:
        seen: dict[tuple[int, str], Endpoint] = {}
        for intf in self.interfaces():
            for ep in intf.endpoints:
                seen.setdefault((ep.number, ep.direction), ep)
        return list(seen.values())

    # --- events from the bus
    def setup(self, req: SetupPacket, data: bytes) -> bytes | None:
        raise Stall

    def ep_out(self, ep: Endpoint, data: bytes) -> None:
        raise Stall

    def ep_in(self, ep: Endpoint, max_length: int) -> bytes | None:
        """IN token: return data, or None to NAK (nothing queued)."""
        return None

    def set_alternate(self, interface: int, alternate: int) -> None:
        pass

    def configured(self, active: bool) -> None:
        pass

    def bus_reset(self) -> None:
        pass

    def tick(self, now: float) -> None:
        pass

    def clear_halt(self, ep: Endpoint) -> None:
        pass

    # --- hooks for transports and the Device
    def request_interface(self, req: SetupPacket) -> int | None:
        """The (bus) interface number a class request names, when this function's class
        carries it somewhere else than the low byte of wIndex; None (the default): the
        usual place, which the Device reads itself.  The Device routes the request here
        when the number is one of this function's interfaces, rewritten by
        :meth:`with_local_interface`."""
        return None

    def with_local_interface(self, req: SetupPacket, local: int) -> SetupPacket:
        """``req`` with the interface :meth:`request_interface` found made function-local."""
        return req.with_index((req.wIndex & 0xFF00) | local)

    def byte_stream(self) -> ByteStream | None:
        """This function's data as a :class:`ByteStream` for a transport without USB,
        or None (the default: it only speaks USB)."""
        return None

    # --- signals
    def signal(self, kind: SignalKind | str, reason: str = "", delay: float = 0.0) -> None:
        """Raise a signal; a string must be a SignalKind value (ValueError otherwise)."""
        self._signals.append(Signal(SignalKind(kind), reason, delay))

    def take_signals(self) -> list[Signal]:
        out, self._signals = self._signals, []
        return out

    # --- busy time
    def busy(self, seconds: float) -> None:
        """The memory behind this function is busy for ``seconds`` more (what a MemoryIO
        operation returned; 0.0 in fast mode) and the protocol has no way to tell the host
        to wait (AVR109 answers a byte, Bulk-Only a CSW): the transport holds this
        device's next transfer until it is over, as a real device's USB controller NAKs
        while its CPU waits for the flash.  A protocol that reports the wait itself (DFU's
        bwPollTimeout) keeps answering and does not call this."""
        if seconds and seconds > 0:
            self._busy += seconds

    def take_busy(self) -> float:
        out, self._busy = self._busy, 0.0
        return out

    def halt(self, ep: Endpoint) -> None:
        """Set the endpoint halt feature (STALL until the host clears it)."""
        if self.device is not None:
            self.device.halted.add(ep.address)


@dataclass
class _Binding:
    function: Function
    first_interface: int
    interfaces: list[Interface]
    endpoints: dict[int, Endpoint] = field(default_factory=dict)  # bus address -> endpoint


class Device:
    """A device descriptor plus Functions; answers chapter-9 requests itself."""

    def __init__(self, info: DeviceInfo, functions: Iterable[Function], *, speed: str = "full"):
        self.info = info
        self.functions = list(functions)
        self.speed = speed
        self.address = 0
        self.configuration = 0
        self.halted: set[int] = set()
        self.remote_wakeup = False
        self._bindings: list[_Binding] = []
        self._alt: dict[int, int] = {}
        self._strings: list[str] = []
        self._string_index: dict[str, int] = {}
        self._bind()

    # ------------------------------------------------------------------
    # numbering
    def _string(self, text: str | None) -> int:
        if not text:
            return 0
        if text not in self._string_index:
            self._strings.append(text)
            self._string_index[text] = len(self._strings)
        return self._string_index[text]

    def _bind(self) -> None:
        for s in (self.info.manufacturer, self.info.product, self.info.serial):
            self._string(s)
        self._string(self.info.configuration_name)
        next_intf = 0
        next_ep = {"in": 1, "out": 1}
        for fn in self.functions:
            fn.device = self
            intfs = fn.interfaces(self.speed)
            binding = _Binding(fn, next_intf, intfs)
            for ep in fn.endpoints():
                n = next_ep[ep.direction]
                next_ep[ep.direction] += 1
                if n > 15:
                    raise ValueError("more than 15 endpoints in one direction")
                ep.address = n | (D.DIR_IN if ep.is_in else D.DIR_OUT)
                binding.endpoints[ep.address] = ep
            # Interface objects of every alternate share the Endpoint objects
            # by (number, direction); copy the assigned addresses across.
            by_key = {(ep.number, ep.direction): ep for ep in binding.endpoints.values()}
            for intf in intfs:
                for ep in intf.endpoints:
                    ep.address = by_key[(ep.number, ep.direction)].address
                self._string(intf.name)
            for s in fn.strings():
                self._string(s)
            next_intf += len({i.number for i in intfs})
            self._bindings.append(binding)
        self.num_interfaces = next_intf

    # ------------------------------------------------------------------
    # descriptors
    def device_descriptor(self) -> bytes:
        i = self.info
        cls, sub, proto = i.bDeviceClass, i.bDeviceSubClass, i.bDeviceProtocol
        if any(b.function.iad for b in self._bindings) and len(self._bindings) > 1 and cls == 0:
            cls, sub, proto = 0xEF, 0x02, 0x01  # Miscellaneous / Common / IAD
        return struct.pack(
            "<BBHBBBBHHHBBBB", 18, D.DEVICE, i.bcdUSB, cls, sub, proto, i.bMaxPacketSize0,
            i.idVendor, i.idProduct, i.bcdDevice, self._string(i.manufacturer), self._string(i.product),
            self._string(i.serial), 1,
        )

    def configuration_descriptor(self, speed: str | None = None) -> bytes:
        speed = speed or self.speed
        body = b""
        for b in self._bindings:
            numbers = sorted({intf.number for intf in b.interfaces})
            if b.function.iad and len(self._bindings) > 1:
                cls, sub, proto = b.function.iad
                body += D.interface_association(b.first_interface, len(numbers), cls, sub, proto)
            for intf in b.interfaces:
                body += intf.descriptor(b.first_interface + intf.number, self._string(intf.name), speed)
        total = 9 + len(body)
        head = struct.pack("<BBHBBBBB", 9, D.CONFIGURATION, total, self.num_interfaces, 1,
                           self._string(self.info.configuration_name), self.info.bmAttributes, self.info.bMaxPower)
        return head + body

    def string(self, index: int) -> bytes:
        if index == 0:
            return D.langid_descriptor()
        if 1 <= index <= len(self._strings):
            return D.string_descriptor(self._strings[index - 1])
        raise Stall

    @property
    def strings(self) -> list[str]:
        return list(self._strings)

    # ------------------------------------------------------------------
    # routing
    def _binding_for_interface(self, number: int) -> _Binding:
        for b in self._bindings:
            local = number - b.first_interface
            if any(intf.number == local for intf in b.interfaces):
                return b
        raise Stall

    def _binding_for_endpoint(self, address: int) -> tuple[_Binding, Endpoint]:
        for b in self._bindings:
            if address in b.endpoints:
                return b, b.endpoints[address]
        raise Stall

    def endpoint(self, address: int) -> Endpoint:
        return self._binding_for_endpoint(address)[1]

    # ------------------------------------------------------------------
    # events
    def control(self, req: SetupPacket, data: bytes = b"") -> bytes | None:
        """A whole control transfer.  Returns IN data (truncated to wLength) or None; raises Stall."""
        if req.type == TYPE_STANDARD and req.recipient in (RECIP_DEVICE, RECIP_ENDPOINT) or (
                req.type == TYPE_STANDARD and req.recipient == RECIP_INTERFACE
                and req.bRequest in (GET_STATUS, GET_INTERFACE, SET_INTERFACE, CLEAR_FEATURE, SET_FEATURE)):
            reply = self._standard(req, data)
        else:
            reply = self._to_function(req, data)
        if reply is not None:
            if not req.is_in:
                return None
            reply = bytes(reply[:req.wLength])
        elif req.is_in:
            reply = b""
        return reply

    def _to_function(self, req: SetupPacket, data: bytes) -> bytes | None:
        for b in self._bindings:
            # a class that names its interface elsewhere than wIndex's low byte (a printer's
            # GET_DEVICE_ID) says so through its function's hook
            number = b.function.request_interface(req)
            if number is not None and any(i.number == number - b.first_interface for i in b.interfaces):
                return b.function.setup(b.function.with_local_interface(req, number - b.first_interface), data)
        if req.recipient in (RECIP_INTERFACE, RECIP_OTHER):
            b = self._binding_for_interface(req.wIndex & 0xFF)
            local = req.with_index((req.wIndex & 0xFF00) | ((req.wIndex & 0xFF) - b.first_interface))
            return b.function.setup(local, data)
        if req.recipient == RECIP_ENDPOINT:
            b, _ = self._binding_for_endpoint(req.wIndex & 0xFF)
            return b.function.setup(req, data)
        # Device-recipient class/vendor requests go to the first function
        # that does not stall them.
        for b in self._bindings:
            try:
                return b.function.setup(req, data)
            except Stall:
                continue
        raise Stall

    def _standard(self, req: SetupPacket, data: bytes) -> bytes | None:
        r = req.bRequest
        if r == GET_DESCRIPTOR:
            dtype, index = req.wValue >> 8, req.wValue & 0xFF
            if dtype == D.DEVICE:
                return self.device_descriptor()
            if dtype == D.CONFIGURATION:
                if index != 0:
                    raise Stall
                return self.configuration_descriptor()
            if dtype == D.STRING:
                return self.string(index)
            # A full-speed-only device STALLs DEVICE_QUALIFIER (USB 2.0 9.6.2).
            raise Stall
        if r == SET_ADDRESS:
            self.address = req.wValue & 0x7F
            return None
        if r == GET_CONFIGURATION:
            return bytes([self.configuration])
        if r == SET_CONFIGURATION:
            value = req.wValue & 0xFF
            if value not in (0, 1):
                raise Stall
            self.set_configuration(value)
            return None
        if r == GET_INTERFACE:
            if not self.configuration:
                raise Stall
            self._binding_for_interface(req.wIndex & 0xFF)
            return bytes([self._alt.get(req.wIndex & 0xFF, 0)])
        if r == SET_INTERFACE:
            if not self.configuration:
                raise Stall
            self.set_interface(req.wIndex & 0xFF, req.wValue & 0xFF)
            return None
        if r == GET_STATUS:
            if req.recipient == RECIP_ENDPOINT:
                address = req.wIndex & 0xFF
                if address & 0x7F:
                    self._binding_for_endpoint(address)
                return struct.pack("<H", 1 if address in self.halted else 0)
            if req.recipient == RECIP_INTERFACE:
                self._binding_for_interface(req.wIndex & 0xFF)
                return b"\x00\x00"
            return struct.pack("<H", (2 if self.remote_wakeup else 0) | (1 if self.info.bmAttributes & 0x40 else 0))
        if r in (CLEAR_FEATURE, SET_FEATURE):
            on = r == SET_FEATURE
            if req.recipient == RECIP_ENDPOINT and req.wValue == ENDPOINT_HALT:
                address = req.wIndex & 0xFF
                if not address & 0x7F:
                    return None
                b, ep = self._binding_for_endpoint(address)
                if on:
                    self.halted.add(address)
                else:
                    self.halted.discard(address)
                    b.function.clear_halt(ep)
                return None
            if req.recipient == RECIP_DEVICE and req.wValue == DEVICE_REMOTE_WAKEUP:
                self.remote_wakeup = on
                return None
            if req.recipient == RECIP_DEVICE and req.wValue == TEST_MODE and on:
                return None
            raise Stall
        raise Stall

    def set_configuration(self, value: int) -> None:
        self.configuration = value
        self.halted.clear()
        self._alt = {}
        for b in self._bindings:
            for number in sorted({i.number for i in b.interfaces}):
                self._alt[b.first_interface + number] = 0
            b.function.configured(bool(value))

    def set_interface(self, number: int, alternate: int) -> None:
        b = self._binding_for_interface(number)
        local = number - b.first_interface
        if not any(i.number == local and i.alternate == alternate for i in b.interfaces):
            raise Stall
        self._alt[number] = alternate
        # USB 2.0 9.1.1.5: SET_INTERFACE resets the data toggle and clears halts
        for ep in b.endpoints.values():
            self.halted.discard(ep.address)
        b.function.set_alternate(local, alternate)

    def alternate(self, number: int) -> int:
        return self._alt.get(number, 0)

    def ep_out(self, address: int, data: bytes) -> None:
        if not self.configuration or address in self.halted:
            raise Stall
        b, ep = self._binding_for_endpoint(address)
        b.function.ep_out(ep, data)

    def ep_in(self, address: int, max_length: int) -> bytes | None:
        if not self.configuration or address in self.halted:
            raise Stall
        b, ep = self._binding_for_endpoint(address)
        return b.function.ep_in(ep, max_length)

    def bus_reset(self) -> None:
        self.address = 0
        self.configuration = 0
        self.halted.clear()
        self._alt = {}
        for b in self._bindings:
            b.function.bus_reset()

    def tick(self, now: float) -> None:
        for b in self._bindings:
            b.function.tick(now)

    def take_signals(self) -> list[Signal]:
        out = []
        for b in self._bindings:
            out.extend(b.function.take_signals())
        return out

    def take_busy(self) -> float:
        """Seconds of memory busy time the functions reported since the last call."""
        return sum(b.function.take_busy() for b in self._bindings)


class Target:
    """What a transport serves: a device that may disconnect and come back as another.

    ``on_signal(signal) -> Device | None`` decides what appears after a
    personality signals (DFU detach: the DFU-mode device; leave: the
    application, or the bootloader again when the image is invalid).
    ``generation`` changes on every re-enumeration so hosts holding the old
    device see it gone.  ``busy_until`` (on ``clock``) is when the memory behind
    the device finishes what its functions reported busy (:meth:`Function.busy`);
    a transport holds the device's next transfer until then (:meth:`busy_left`).
    """

    def __init__(self, device: Device | None, on_signal=None, *, clock=None):
        import time

        self.device = device
        self.on_signal = on_signal
        self.generation = 0
        self.clock = clock or time.monotonic
        self._pending: tuple[float, Signal] | None = None
        self.history: list[str] = []
        self.busy_until = 0.0
        self.bus: Any = None  # the in-process bus and port it is plugged into, if any
        self.port: int | None = None

    def inject(self, sig: Signal) -> None:
        """A signal from outside the device (the board's reset button): acted on at the next
        :meth:`poll`, as a personality's own signal is."""
        self._pending = (self.clock(), sig)

    def busy_left(self) -> float:
        """Seconds until the device may take its next transfer (0.0: now)."""
        return max(0.0, self.busy_until - self.clock())

    def poll(self) -> None:
        """Run timers and act on signals; transports call it between transactions."""
        now = self.clock()
        if self.device is not None:
            self.device.tick(now)
            busy = self.device.take_busy()
            if busy > 0:
                # one operation after another: the memory starts the new one when the last is over
                self.busy_until = max(self.busy_until, now) + busy
            for sig in self.device.take_signals():
                if self._pending is None or sig.kind == SignalKind.DISCONNECT:
                    self._pending = (now + sig.delay, sig)
        if self._pending and now >= self._pending[0]:
            _, sig = self._pending
            self._pending = None
            self.history.append(f"{sig.kind}: {sig.reason}")
            self.device = self.on_signal(sig) if self.on_signal else None
            self.generation += 1
