"""The in-process bus, and a pyusb backend that sees the devices on it.

``usb.core.find(backend=bootkit.transports.virtual.get_backend())`` finds
emulated devices; pyusb's own descriptor parsing, ctrl_transfer, bulk and
interrupt transfers, set_configuration and set_interface_altsetting work
unchanged.  Errors surface as the exceptions pyusb's libusb1 backend
raises for a real device: a STALL is ``USBError(errno=EPIPE)`` "Pipe
error", a vanished device ``errno=ENODEV``, a timeout ``USBTimeoutError``.

Everything is synchronous: a transfer calls straight into the sans-I/O
device, so an emulated device is never the slow part of a test.  In
real-time mode a device whose memory is busy (``Target.busy_left()``) holds
its next transfer: the host's calling thread waits, outside the bus lock, so
the other devices on the bus answer meanwhile.

:class:`VirtualTransport` is the :class:`~.base.DeviceTransport` of the bus.
"""

from __future__ import annotations

import errno
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import usb.core

from ..usb import descriptors as D
from .pyusbbase import BlobBackend, Desc
from ..usb.device import Device, SetupPacket, Stall, Target
from .base import DeviceTransport, target_of

# libusb_speed
SPEED_FULL, SPEED_HIGH = 2, 3

# libusb error codes, as pyusb's libusb1 backend reports them
_PIPE = ("Pipe error", -9, errno.EPIPE)
_NODEV = ("No such device (it may have been disconnected)", -4, errno.ENODEV)
_TIMEOUT = ("Operation timed out", -7, errno.ETIMEDOUT)
_INVALID = ("Invalid parameter", -2, errno.EINVAL)


class VirtualBus:
    """Devices plugged into this process.  Thread-safe."""

    number = 1

    def __init__(self):
        self._ports: dict[int, Target] = {}
        self._lock = threading.RLock()
        self._next_address = 1
        self._addresses: dict[tuple[int, int], int] = {}
        self._pyusb_backend: VirtualBackend | None = None  # get_backend(self), made once

    def attach(self, target: Target | Device) -> Target:
        """Plug a device (or a re-enumerating Target) into a free port."""
        if isinstance(target, Device):
            target = Target(target)
        with self._lock:
            port = 1
            while port in self._ports:
                port += 1
            self._ports[port] = target
            target.bus = self
            target.port = port
        return target

    def detach(self, target: Target) -> None:
        with self._lock:
            for port, t in list(self._ports.items()):
                if t is target:
                    del self._ports[port]

    def clear(self) -> None:
        with self._lock:
            self._ports.clear()

    def _address(self, port: int, generation: int) -> int:
        key = (port, generation)
        if key not in self._addresses:
            self._addresses[key] = self._next_address
            self._next_address = self._next_address % 127 + 1
        return self._addresses[key]

    def present(self) -> list["_DeviceId"]:
        with self._lock:
            out = []
            for port, target in sorted(self._ports.items()):
                target.poll()
                if target.device is not None:
                    out.append(_DeviceId(self, port, target, target.generation,
                                         self._address(port, target.generation)))
            return out

    @property
    def lock(self):
        return self._lock


DEFAULT_BUS = VirtualBus()


@dataclass(frozen=True)
class _DeviceId:
    bus: VirtualBus
    port: int
    target: Target
    generation: int
    address: int


class _Handle:
    def __init__(self, devid: _DeviceId):
        self.devid = devid
        self.claimed: set[int] = set()


class VirtualBackend(BlobBackend):
    def __init__(self, bus: VirtualBus = DEFAULT_BUS):
        super().__init__()
        self.bus = bus
        self._config_cache: dict[_DeviceId, dict] = {}

    # ------------------------------------------------------------------
    # enumeration
    def enumerate_devices(self):
        return self.bus.present()

    def get_parent(self, dev):
        return None

    def _device(self, devid: _DeviceId) -> Device:
        t = devid.target
        if t.generation != devid.generation or t.device is None:
            raise usb.core.USBError(*_NODEV)
        return t.device

    def get_device_descriptor(self, dev):
        raw = self._device(dev).device_descriptor()
        fields = D.parse_descriptor(raw)
        speed = SPEED_HIGH if self._device(dev).speed == "high" else SPEED_FULL
        return Desc(fields, bus=self.bus.number, address=dev.address, port_number=dev.port,
                     port_numbers=(dev.port,), speed=speed)

    def _config_tree(self, dev, config):
        if config != 0:
            raise IndexError("virtual devices have one configuration")
        if dev not in self._config_cache:
            self._config_cache[dev] = D.parse_configuration(self._device(dev).configuration_descriptor())
        return self._config_cache[dev]

    # ------------------------------------------------------------------
    # handles
    def open_device(self, dev):
        self._device(dev)
        return _Handle(dev)

    def close_device(self, dev_handle):
        pass

    def _call(self, handle: _Handle, fn, *args):
        devid = handle.devid
        _wait_while_busy(devid.target)
        with self.bus.lock:
            devid.target.poll()
            device = self._device(devid)
            try:
                return fn(device, *args)
            except Stall:
                raise usb.core.USBError(*_PIPE) from None
            finally:
                devid.target.poll()

    def get_configuration(self, dev_handle):
        return self._call(dev_handle, lambda d: d.configuration)

    # ------------------------------------------------------------------
    # transfers: the three primitives BlobBackend builds everything else on
    def _control(self, handle, bmRequestType, bRequest, wValue, wIndex, data_or_length, timeout=None):
        if isinstance(data_or_length, int):
            req = SetupPacket(bmRequestType, bRequest, wValue, wIndex, data_or_length)
            return self._call(handle, lambda d: d.control(req, b""))
        req = SetupPacket(bmRequestType, bRequest, wValue, wIndex, len(data_or_length))
        self._call(handle, lambda d: d.control(req, data_or_length))
        return len(data_or_length)

    def _write_bytes(self, handle, ep, payload, timeout):
        self._call(handle, lambda d: d.ep_out(ep, payload))
        return len(payload)

    def _read_bytes(self, handle, ep, size, timeout):
        deadline = None
        delay = 0.0002
        while True:
            chunk = self._call(handle, lambda d: d.ep_in(ep, size))
            if chunk is not None:
                return chunk
            now = time.monotonic()
            if deadline is None:
                deadline = now + (timeout / 1000.0 if timeout else 3600.0)
            if now >= deadline:
                raise usb.core.USBTimeoutError(*_TIMEOUT)
            time.sleep(delay)
            delay = min(delay * 2, 0.01)

    def reset_device(self, dev_handle):
        devid = dev_handle.devid

        def reset(d):
            d.bus_reset()

        self._call(dev_handle, reset)
        # libusb_reset_device reports NOT_FOUND when the device re-enumerated
        # as something else (a DFU detach); pyusb callers ignore it.
        if devid.target.generation != devid.generation:
            raise usb.core.USBError("Entity not found", -5, errno.ENOENT)


def _wait_while_busy(target: Target) -> None:
    """Hold the caller (the host's thread) while the device's memory is busy; the bus
    lock is not held, so other devices, and other threads, go on meanwhile."""
    while (left := target.busy_left()) > 0:
        time.sleep(left)


class VirtualTransport(DeviceTransport):
    """Serve on a :class:`VirtualBus` (the process-wide default one unless ``bus`` is
    given) until :meth:`stop`, polling the target's timers every ``poll_interval`` s."""

    name = "virtual"
    summary = "the in-process bus: only this process sees the device (pyusb backend=get_backend())"

    def __init__(self, *, bus: VirtualBus | None = None, poll_interval: float = 0.2):
        self.bus = bus or DEFAULT_BUS
        self.poll_interval = poll_interval
        self._stop = threading.Event()

    def serve(self, emulator: Any, *, ready: Callable[[str], None] | None = None) -> None:
        target = target_of(emulator)
        self.bus.attach(target)
        try:
            if ready is not None:
                ready(f"the in-process bus {self.bus.number}, port {target.port}")
            while not self._stop.wait(self.poll_interval):
                target.poll()  # timers: a delayed leave, the entry policy's timeout
        finally:
            self.bus.detach(target)

    def stop(self) -> None:
        self._stop.set()


def get_backend(bus: VirtualBus | None = None) -> VirtualBackend:
    """The pyusb backend of ``bus`` (one per bus, kept on the bus itself: a module-level
    table kept every bus a long-running process made alive forever)."""
    bus = bus or DEFAULT_BUS
    backend = bus._pyusb_backend
    if backend is None:
        backend = bus._pyusb_backend = VirtualBackend(bus)
    return backend
