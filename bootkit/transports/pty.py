"""The pty transport: a serial personality's byte stream on a pseudo-terminal.

avrdude (or pyserial, or screen) opens the slave path printed at start and
talks to the device as it would to ``/dev/ttyACM0``, without USB.
:class:`PtyTransport` is its :class:`~.base.DeviceTransport`.  What it serves
is either

- a :class:`~bootkit.usb.device.ByteStream` (``feed(bytes) -> bytes`` and
  ``disconnect()``, called when the port is closed): an engine served bare;
- an emulated device without a CDC-ACM interface whose Function offers a
  byte stream (:meth:`~bootkit.usb.device.Function.byte_stream`: a MIDI
  device's, as on a serial MIDI cable), or
- an emulated USB device (an Emulator, a Target or a Device) with a CDC-ACM
  data interface: the transport plays the USB host's ``cdc_acm`` driver,
  moving bytes through the bulk endpoints it finds in the descriptors and
  turning port opens, baud changes and closes into SET_LINE_CODING and
  SET_CONTROL_LINE_STATE, so the Arduino 1200-baud touch works on a pty too;
  while the device's memory is busy (real-time mode) its next transfer waits.

The pty is put in raw mode (no echo, no line discipline); avrdude and
pyserial set raw mode again when they open it.  A closed port is seen as
POLLHUP on the master; the next open is served afresh.
"""

from __future__ import annotations

import errno
import os
import select
import struct
import termios
import threading
import time
import tty
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from ..usb import descriptors as D
from ..usb.device import ByteStream, Device, SetupPacket, Stall, Target
from .base import DeviceTransport, target_of

# CDC PSTN120 table 13: the class requests the host's cdc_acm driver sends.
_SET_LINE_CODING = 0x20
_SET_CONTROL_LINE_STATE = 0x22
_CDC_COMM_CLASS, _CDC_DATA_CLASS = 0x02, 0x0A

BAUD_RATES = {getattr(termios, name): int(name[1:]) for name in dir(termios)
              if name.startswith("B") and name[1:].isdigit()}


class _EngineStream:
    """A byte-stream engine served directly."""

    def __init__(self, engine: ByteStream):
        self.engine = engine

    def write(self, data: bytes) -> bytes:
        return self.engine.feed(data)

    def read(self) -> bytes:
        return b""

    def opened(self, baud: int) -> None:
        pass

    def baud_changed(self, baud: int) -> None:
        pass

    def closed(self, baud: int) -> None:
        self.engine.disconnect()

    def poll(self) -> None:
        pass

    def describe(self) -> str:
        return type(self.engine).__name__

    def usb_ids(self) -> tuple[int, int] | None:
        return None


class _UsbSerialStream:
    """An emulated CDC-ACM device, driven as the host's cdc_acm driver would."""

    def __init__(self, target: Target):
        self.target = target
        self._generation: int | None = None
        self._ports: tuple[int, int, int] | None = None  # (comm interface, bulk OUT, bulk IN)
        self.dtr = False
        self.baud = 9600

    def _device(self) -> Device | None:
        self.target.poll()
        while (left := self.target.busy_left()) > 0:
            time.sleep(left)  # the memory is busy: this (the pty's only) device's next transfer waits
        dev = self.target.device
        if dev is None:
            self._ports = None
            return None
        if self._generation != self.target.generation or self._ports is None:
            self._generation = self.target.generation
            self._ports = self._find(dev)
            if self._ports is not None:
                dev.control(SetupPacket(0x00, 9, 1, 0, 0))  # SET_CONFIGURATION 1
                if self.dtr:  # the port is open across a re-enumeration: reopen it
                    self._line(self.baud, True)
        return dev if self._ports is not None else None

    @staticmethod
    def _find(dev: Device) -> tuple[int, int, int] | None:
        """(comm interface, bulk OUT, bulk IN) from the descriptors, never hardcoded."""
        config = D.parse_configuration(dev.configuration_descriptor())
        comm = None
        for intf in config["interfaces"]:
            if intf["bInterfaceClass"] == _CDC_COMM_CLASS and comm is None:
                comm = intf["bInterfaceNumber"]
            if intf["bInterfaceClass"] == _CDC_DATA_CLASS:
                eps = {ep["bEndpointAddress"] & 0x80: ep["bEndpointAddress"] for ep in intf["endpoints"]
                       if ep["bmAttributes"] & 3 == D.BULK}
                if 0x00 in eps and 0x80 in eps:
                    return (comm if comm is not None else 0, eps[0x00], eps[0x80])
        return None

    def _line(self, baud: int, dtr: bool) -> None:
        dev = self.target.device
        if dev is None or self._ports is None:
            return
        comm = self._ports[0]
        try:
            dev.control(SetupPacket(0x21, _SET_LINE_CODING, 0, comm, 7), struct.pack("<IBBB", baud, 0, 0, 8))
            dev.control(SetupPacket(0x21, _SET_CONTROL_LINE_STATE, 0x03 if dtr else 0x00, comm, 0))
        except Stall:
            pass

    def write(self, data: bytes) -> bytes:
        dev = self._device()
        if dev is None or self._ports is None:
            return b""  # nothing enumerated: bytes fall on the floor, as on an unplugged cable
        try:
            dev.ep_out(self._ports[1], data)
        except Stall:
            return b""
        # drain the answer from this very device before any signal is acted
        # on (LUFA sends the 'E' acknowledgement, then detaches)
        return self._drain(dev)

    def read(self) -> bytes:
        dev = self._device()
        return self._drain(dev) if dev is not None else b""

    def _drain(self, dev: Device) -> bytes:
        out = bytearray()
        while self._ports is not None:
            try:
                chunk = dev.ep_in(self._ports[2], 4096)
            except Stall:
                break
            if not chunk:
                break
            out += chunk
        return bytes(out)

    def opened(self, baud: int) -> None:
        self.baud, self.dtr = baud, True
        if self._device() is not None:
            self._line(baud, True)

    def baud_changed(self, baud: int) -> None:
        self.baud = baud
        if self._device() is not None:
            self._line(baud, self.dtr)

    def closed(self, baud: int) -> None:
        self.baud, self.dtr = baud, False
        if self._device() is not None:
            self._line(baud, False)  # DTR drops on close (HUPCL): the 1200-baud touch
        self.target.poll()

    def poll(self) -> None:
        self._device()

    def usb_ids(self) -> tuple[int, int] | None:
        dev = self.target.device  # read only: the serving thread polls and re-enumerates
        return (dev.info.idVendor, dev.info.idProduct) if dev is not None else None

    def describe(self) -> str:
        dev = self.target.device
        return f"USB device {dev.info.idVendor:04x}:{dev.info.idProduct:04x}" if dev else "no device"


def _function_stream(device: Device | None) -> ByteStream | None:
    for fn in device.functions if device is not None else ():
        stream = fn.byte_stream()
        if stream is not None:
            return stream
    return None


class _FunctionStream(_EngineStream):
    """The byte stream a Function of the target's device offers (Function.byte_stream),
    looked up again after every re-enumeration; nothing while no device offers one."""

    def __init__(self, target: Target):
        self.target = target
        self._generation = -1
        self._stream: ByteStream | None = None

    def _current(self) -> ByteStream | None:
        self.target.poll()
        while (left := self.target.busy_left()) > 0:
            time.sleep(left)  # the memory is busy: this (the pty's only) device's next transfer waits
        if self._generation != self.target.generation:
            self._generation = self.target.generation
            self._stream = _function_stream(self.target.device)
        return self._stream

    def write(self, data: bytes) -> bytes:
        stream = self._current()
        return stream.feed(data) if stream is not None else b""

    def closed(self, baud: int) -> None:
        stream = self._current()
        if stream is not None:
            stream.disconnect()
        self.target.poll()

    def poll(self) -> None:
        self._current()

    def describe(self) -> str:
        dev = self.target.device
        return f"the byte stream of {dev.info.product or 'a USB device'}" if dev is not None else "no device"


def _stream_for(obj: Any) -> "_EngineStream | _UsbSerialStream":
    if isinstance(obj, ByteStream):
        return _EngineStream(obj)
    try:
        target = target_of(obj)
    except TypeError:
        raise TypeError(f"cannot serve {type(obj).__name__} on a pty: need a ByteStream (feed, disconnect) "
                        "or a device with a CDC-ACM interface or a Function byte stream") from None
    device = target.device
    if device is not None and _UsbSerialStream._find(device) is None and _function_stream(device) is not None:
        return _FunctionStream(target)
    return _UsbSerialStream(target)


# slave path -> the server on it, while it serves (this process only)
_SERVING: dict[str, "PtyServer"] = {}


def serves(path: str) -> bool:
    """True when this process serves the pty at ``path``."""
    return path in _SERVING


def usb_ids(path: str) -> tuple[int, int] | None:
    """The VID:PID of the emulated USB device now behind the pty at ``path`` (served by
    this process), as sysfs would tell for a real ttyACM; None for a bare byte-stream
    engine, for nothing enumerated, or for a path this process does not serve.  A host
    client asks it after a leave ('E') to name what came back."""
    server = _SERVING.get(path)
    if server is None:
        return None
    return server.stream.usb_ids()


class PtyServer:
    """One pseudo-terminal serving one byte stream."""

    def __init__(self, engine_or_emulator, *, log: Callable[[str], None] | None = print):
        self.stream = _stream_for(engine_or_emulator)
        self.log = log or (lambda msg: None)
        self.master, slave = os.openpty()
        self.slave_path = os.ttyname(slave)
        tty.setraw(self.master)
        os.close(slave)  # a client's close must be seen as POLLHUP: we hold no slave fd
        os.set_blocking(self.master, False)
        #: the line speed while no client has the port open (a client's settings outlive its close)
        self._idle_baud = self._baud()
        self.connected = False
        self.sessions = 0
        self.bytes_in = 0
        self.bytes_out = 0
        _SERVING[self.slave_path] = self

    def _baud(self) -> int:
        try:
            return BAUD_RATES.get(termios.tcgetattr(self.master)[5], 0)
        except termios.error:
            return 0

    def _send(self, data: bytes) -> None:
        view = memoryview(data)
        deadline = time.monotonic() + 5.0
        while view:
            try:
                n = os.write(self.master, view)
                view = view[n:]
                self.bytes_out += n
            except BlockingIOError:
                if time.monotonic() > deadline:
                    self.log(f"pty: client not reading, {len(view)} byte(s) dropped")
                    return
                select.select([], [self.master], [], 0.05)
            except OSError as exc:
                if exc.errno == errno.EIO:  # the client closed the port
                    return
                raise

    def serve(self, stop: threading.Event | None = None) -> None:
        """Serve until ``stop`` is set (forever without one)."""
        stop = stop or threading.Event()
        poller = select.poll()
        poller.register(self.master, select.POLLIN)
        baud = 0
        try:
            while not stop.is_set():
                events = poller.poll(20)
                flags = 0
                for _, ev in events:
                    flags |= ev
                data = b""
                if flags & select.POLLIN:
                    try:
                        data = os.read(self.master, 65536)
                    except BlockingIOError:
                        data = b""
                    except OSError as exc:
                        if exc.errno != errno.EIO:
                            raise
                        flags |= select.POLLHUP
                if data:
                    if not self.connected:
                        self._open()
                        baud = self._baud()
                    self.bytes_in += len(data)
                    reply = self.stream.write(data)
                    if reply:
                        self._send(reply)
                    continue
                if flags & select.POLLHUP:
                    if self.connected:
                        self.connected = False
                        # The speed the client left, not the one last polled: a
                        # 1200-baud touch may set it and close between two polls.
                        last = self._baud()
                        self.stream.closed(last)
                        self.log(f"pty: port closed (last at {last} baud)")
                        self._idle()
                    elif self._baud() != self._idle_baud:
                        # A whole session between two polls (a loaded machine: the
                        # touch holds the port 0.1 s): it sent nothing, or POLLIN
                        # would have shown it, so it was a touch; replay it.
                        last = self._baud()
                        self.sessions += 1
                        self.stream.opened(last)
                        self.stream.closed(last)
                        self.log(f"pty: port opened and closed at {last} baud")
                        self._idle()
                    else:
                        self.stream.poll()
                    stop.wait(0.01)
                    continue
                if not self.connected:
                    self._open()
                    baud = self._baud()
                    continue
                now_baud = self._baud()
                if now_baud != baud:
                    baud = now_baud
                    self.stream.baud_changed(baud)
                self.stream.poll()
                late = self.stream.read()  # IN data produced by timers (notifications, delayed replies)
                if late:
                    self._send(late)
        finally:
            self.close()

    def _idle(self) -> None:
        """Back to a fresh pty's settings once the client closed (raw, 38400 baud, as
        openpty leaves it): the next client's speed then shows as a change, even a
        repeated 1200-baud touch that comes and goes unseen."""
        tty.setraw(self.master)
        try:
            attrs = termios.tcgetattr(self.master)
            attrs[4] = attrs[5] = termios.B38400
            termios.tcsetattr(self.master, termios.TCSANOW, attrs)
        except termios.error:
            pass
        self._idle_baud = self._baud()

    def _open(self) -> None:
        self.connected = True
        self.sessions += 1
        self.stream.opened(self._baud())
        self.log(f"pty: port opened ({self.stream.describe()})")

    def close(self) -> None:
        if _SERVING.get(self.slave_path) is self:
            del _SERVING[self.slave_path]
        if self.master >= 0:
            try:
                os.close(self.master)
            except OSError:
                pass
            self.master = -1


class PtyTransport(DeviceTransport):
    """Serve on a new pseudo-terminal until :meth:`stop`; ``ready(path)`` names its slave."""

    name = "pty"
    summary = "a serial byte stream on a pseudo-terminal (avrdude -P /dev/pts/N), no USB"

    def __init__(self, *, log: Callable[[str], None] | None = print):
        self.log = log
        self._stop = threading.Event()
        self.server: PtyServer | None = None

    def serve(self, emulator: Any, *, ready: Callable[[str], None] | None = None) -> None:
        server = self.server = PtyServer(emulator, log=self.log)
        if self.log:
            self.log(f"serving {server.stream.describe()} on {server.slave_path}")
            hint = emulator.tool_hint(server.slave_path) if hasattr(emulator, "tool_hint") else None
            if hint:
                self.log(f"  e.g. {hint}")
        if ready is not None:
            ready(server.slave_path)
        server.serve(self._stop)

    def stop(self) -> None:
        self._stop.set()


def serve_pty(engine_or_emulator, log: Callable[[str], None] | None = print,
              stop: threading.Event | None = None) -> None:
    """Serve on a new pty until ``stop`` is set; the slave path is logged first (PtyTransport)."""
    transport = PtyTransport(log=log)
    if stop is not None:
        transport._stop = stop  # stop() sets the caller's event
    transport.serve(engine_or_emulator)


@contextmanager
def pty_server(engine_or_emulator, log: Callable[[str], None] | None = None) -> Iterator[PtyServer]:
    """Serve in a background thread; yields the server (``.slave_path``)."""
    server = PtyServer(engine_or_emulator, log=log)
    stop = threading.Event()
    thread = threading.Thread(target=server.serve, args=(stop,), name=f"pty {server.slave_path}", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        stop.set()
        thread.join(5)


__all__ = ["PtyTransport", "PtyServer", "serve_pty", "pty_server", "serves", "usb_ids", "BAUD_RATES"]
