"""CDC-ACM device side: the virtual serial port that carries AVR109.

Two interfaces, as LUFA's CDC bootloader (Bootloaders/CDC/Descriptors.c)
and Caterina declare them (USB CDC 1.2, PSTN120):

- the communication interface (class 0x02, subclass ACM 0x02, protocol
  AT 0x01) with Header, Call Management, ACM and Union functional
  descriptors and an interrupt IN notification endpoint;
- the data interface (class 0x0A) with a bulk OUT and a bulk IN endpoint.

This is what the Linux ``cdc_acm`` driver binds to (it needs the Union
descriptor to find the data interface).  :class:`CdcBootloaderFunction`
feeds the bulk OUT bytes to an :class:`~.avr109.Avr109Engine`;
:class:`CdcApplicationFunction` is the application's serial port that
honours the Arduino 1200-baud touch; :class:`SerialBridgeFunction` is the
USB-serial bridge of an Arduino Uno or Mega 2560 (its ATmega16U2) in front of
an AVR running Optiboot or the wiring bootloader on its UART.
"""

from __future__ import annotations

import time
from typing import Callable, Protocol

from ...usb.descriptors import Endpoint, Interface
from ...usb.device import RECIP_INTERFACE, TYPE_CLASS, Function, SetupPacket, SignalKind, Stall
from .avr109 import Avr109Engine
from .protocol import (
    ACM_CAP_LINE_CODING,
    ACM_CAP_SEND_BREAK,
    ACM_SUBCLASS,
    AT_COMMANDS_V250,
    CDC_CLASS,
    CDC_DATA_CLASS,
    CONTROL_DTR,
    GET_LINE_CODING,
    SEND_BREAK,
    SERIAL_STATE_DCD,
    SERIAL_STATE_DSR,
    SET_CONTROL_LINE_STATE,
    SET_LINE_CODING,
    TOUCH_BAUD,
    LineCoding,
    acm_descriptor,
    call_management_descriptor,
    header_descriptor,
    serial_state_notification,
    union_descriptor,
)


class CdcAcmFunction(Function):
    """A CDC-ACM serial port: line coding, control line state, SERIAL_STATE.

    Subclasses get the OUT bytes in :meth:`received` and queue answers
    with :meth:`send`.
    """

    name = "cdc-acm"
    iad = (CDC_CLASS, ACM_SUBCLASS, AT_COMMANDS_V250)

    def __init__(self, *, interface_name: str | None = None, packet_size: int = 64,
                 clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.interface_name = interface_name
        self.clock = clock
        # LUFA: CDC_NOTIFICATION_EPSIZE 8, polled every 0xFF frames
        self.notification = Endpoint(1, "in", "interrupt", 8, interval=0xFF, hs_interval=16)
        self.data_out = Endpoint(2, "out", "bulk", packet_size)
        self.data_in = Endpoint(2, "in", "bulk", packet_size)
        self.line_coding = LineCoding()  # LUFA starts at BaudRateBPS 0, 8N1
        self.control_line_state = 0
        self._tx = bytearray()
        self._notifications: list[bytes] = []
        self.last_activity = clock()

    # --- descriptors
    def interfaces(self, speed="full"):
        # Function-local numbers: 0 communication, 1 data (the Union and Call
        # Management descriptors name them).
        extra = (header_descriptor() + call_management_descriptor(0, 1)
                 + acm_descriptor(ACM_CAP_LINE_CODING | ACM_CAP_SEND_BREAK) + union_descriptor(0, 1))
        return [
            Interface(0, CDC_CLASS, ACM_SUBCLASS, AT_COMMANDS_V250, name=self.interface_name,
                      endpoints=[self.notification], extra=extra),
            Interface(1, CDC_DATA_CLASS, 0, 0, endpoints=[self.data_out, self.data_in]),
        ]

    # --- control
    def setup(self, req: SetupPacket, data: bytes):
        if req.type != TYPE_CLASS or req.recipient != RECIP_INTERFACE or (req.wIndex & 0xFF) != 0:
            raise Stall
        self.last_activity = self.clock()
        if req.bRequest == SET_LINE_CODING:
            try:
                self.line_coding = LineCoding.unpack(data)
            except ValueError:
                raise Stall from None
            self.line_coding_changed()
            return None
        if req.bRequest == GET_LINE_CODING:
            return self.line_coding.pack()
        if req.bRequest == SET_CONTROL_LINE_STATE:
            old, self.control_line_state = self.control_line_state, req.wValue & 0x03
            if (old ^ self.control_line_state) & CONTROL_DTR:
                # the port opened or closed: report the carrier as a modem would
                bitmap = SERIAL_STATE_DCD | SERIAL_STATE_DSR if self.dtr else 0
                self._notifications.append(serial_state_notification(0, bitmap))
            self.control_line_state_changed(old)
            return None
        if req.bRequest == SEND_BREAK:
            return None
        raise Stall

    @property
    def dtr(self) -> bool:
        return bool(self.control_line_state & CONTROL_DTR)

    def line_coding_changed(self) -> None:
        pass

    def control_line_state_changed(self, old: int) -> None:
        pass

    # --- data
    def ep_out(self, ep: Endpoint, data: bytes) -> None:
        if ep is not self.data_out:
            raise Stall
        self.last_activity = self.clock()
        self.received(bytes(data))

    def ep_in(self, ep: Endpoint, max_length: int):
        if ep is self.notification:
            return self._notifications.pop(0) if self._notifications else None
        if ep is self.data_in:
            if not self._tx:
                return None
            n = min(max_length, len(self._tx))
            out = bytes(self._tx[:n])
            del self._tx[:n]
            return out
        raise Stall

    def received(self, data: bytes) -> None:
        pass

    def send(self, data: bytes) -> None:
        self._tx += data

    def bus_reset(self):
        self._tx.clear()
        self._notifications.clear()
        self.control_line_state = 0


class CdcBootloaderFunction(CdcAcmFunction):
    """The bootloader's serial port: bulk OUT bytes into the AVR109 engine.

    ``timeout``: leave for a valid application after this many seconds
    without host traffic (Caterina: TIMEOUT_PERIOD 8000 ms, counted only
    while the first flash word is programmed); None never leaves (LUFA).
    """

    name = "cdc-avr109"

    def __init__(self, engine: Avr109Engine, *, timeout: float | None = None, **kw):
        super().__init__(**kw)
        self.engine = engine
        self.timeout = timeout
        self._left = False
        engine.signal = self._engine_signal
        engine.busy = self.busy

    def _engine_signal(self, kind, reason="", delay=0.0):
        if kind == "leave":
            self._left = True
        self.signal(kind, reason, delay)

    def byte_stream(self) -> Avr109Engine:
        """AVR109 is a byte stream: a pty can carry the engine without USB."""
        return self.engine

    def received(self, data: bytes) -> None:
        reply = self.engine.feed(data)
        if reply:
            self.send(reply)

    def control_line_state_changed(self, old: int) -> None:
        if old & CONTROL_DTR and not self.dtr:
            # the host closed the port: a half-received command is abandoned
            self.engine.disconnect()

    def bus_reset(self):
        super().bus_reset()
        self.engine.disconnect()

    def tick(self, now: float) -> None:
        if (self.timeout is not None and not self._left and not self.engine.memory.is_blank()
                and now - self.last_activity >= self.timeout):
            self._left = True
            try:
                self.busy(self.engine.memory.manifest())
            except Exception:  # noqa: BLE001 - an invalid image keeps the board in its bootloader
                pass
            self.signal(SignalKind.LEAVE, f"bootloader timeout ({self.timeout:g} s without host activity)")


class SerialBootloader(Protocol):
    """What :class:`SerialBridgeFunction` needs of a UART bootloader engine (Optiboot, wiring)."""

    application_running: bool
    busy: Callable[[float], object]

    def feed(self, data: bytes) -> bytes: ...

    def disconnect(self) -> None: ...

    def reset(self, now: float | None = None) -> None: ...

    def tick(self, now: float) -> None: ...


class SerialBridgeFunction(CdcAcmFunction):
    """The USB-serial bridge of an Arduino Uno or Mega 2560 (the ATmega16U2 running
    Arduino's usbserial firmware) with the target AVR on its UART.

    The bridge never re-enumerates: the AVR behind it runs its bootloader or its
    application.  DTR going active (the port opened) pulls the AVR's RESET low
    through the board's 100 nF capacitor (the auto-reset avrdude's arduino_open
    and wiring_open rely on), so the bootloader runs afresh; it leaves for the
    application on its own (the engine's watchdog or leave command).  ``tick``
    runs the engine's watchdog.
    """

    name = "cdc-serial-bridge"

    def __init__(self, engine: SerialBootloader, **kw):
        super().__init__(**kw)
        self.engine = engine
        engine.busy = self.busy

    def byte_stream(self) -> SerialBootloader:
        return self.engine

    def received(self, data: bytes) -> None:
        reply = self.engine.feed(data)
        if reply:
            self.send(reply)

    def control_line_state_changed(self, old: int) -> None:
        if not old & CONTROL_DTR and self.dtr:
            self.engine.reset(self.clock())  # auto-reset: the bootloader starts
        elif old & CONTROL_DTR and not self.dtr:
            self.engine.disconnect()  # the host closed the port: a partial command is abandoned

    def bus_reset(self):
        super().bus_reset()
        self.engine.disconnect()

    def tick(self, now: float) -> None:
        self.engine.tick(now)


class CdcApplicationFunction(CdcAcmFunction):
    """An application's serial port (an Arduino sketch, LUFA's VirtualSerial).

    Opening it at 1200 baud and dropping DTR asks for the bootloader
    (ArduinoCore-avr CDC.cpp: ``1200 == dwDTERate && !(lineState & 0x01)``
    arms the watchdog with the bootloader key).  Data written to it is
    echoed back.
    """

    name = "cdc-application"

    def __init__(self, *, touch_baud: int = TOUCH_BAUD, echo: bool = True, **kw):
        super().__init__(**kw)
        self.touch_baud = touch_baud
        self.echo = echo
        self.touched = False

    def _check_touch(self) -> None:
        if (not self.touched and self.line_coding.dwDTERate == self.touch_baud and not self.dtr):
            self.touched = True
            self.signal(SignalKind.TOUCH_1200, f"{self.touch_baud}-baud touch (DTR dropped at {self.touch_baud} baud)")

    def line_coding_changed(self) -> None:
        # Linux sends SET_LINE_CODING before raising DTR on open: only a
        # port that was open (DTR high) and closes at 1200 baud counts.
        pass

    def control_line_state_changed(self, old: int) -> None:
        if old & CONTROL_DTR and not self.dtr:
            self._check_touch()

    def received(self, data: bytes) -> None:
        if self.echo:
            self.send(data)


__all__ = ["CdcAcmFunction", "CdcBootloaderFunction", "CdcApplicationFunction", "SerialBridgeFunction",
           "SerialBootloader"]
