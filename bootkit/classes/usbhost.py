"""The host plumbing every personality's client shares.

- finding a personality's interface on a bus (pyusb): host clients never
  hard-code endpoint numbers, since a Linux UDC renumbers them (dummy_hcd
  turned OUT 0x01 into 0x02), so they are read from the descriptors here;
- telling a device that went away (:func:`gone`) from one that refused
  (:func:`stalled`);
- watching what a device does after it was told to leave its bootloader
  (:class:`LeaveWatch`), reporting only what was seen (issue 16 item 3).
"""

from __future__ import annotations

import errno
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import usb.core
import usb.util

from ..progress import phase


def device_serial(dev) -> str | None:
    """The iSerialNumber string, or None when the device has none or will not say."""
    try:
        return dev.serial_number if dev.iSerialNumber else None
    except (ValueError, usb.core.USBError):
        return None


def in_process(backend) -> bool:
    """Whether ``backend`` is bootkit's in-process bus, where an emulated device leaves and
    re-enumerates at once, so a host waits for it far less than for real hardware.  The
    backend is recognised by its module, not imported: classes sit below transports."""
    return backend is not None and type(backend).__module__.endswith("transports.virtual")


def matching_devices(backend=None, *, vid=None, pid=None, serial=None) -> Iterator[tuple[usb.core.Device, Any]]:
    """(device, first configuration) for every device the selection matches."""
    for dev in usb.core.find(find_all=True, backend=backend):
        if vid is not None and dev.idVendor != vid:
            continue
        if pid is not None and dev.idProduct != pid:
            continue
        if serial is not None and device_serial(dev) != serial:
            continue
        try:
            cfg = dev[0]
        except (usb.core.USBError, IndexError):
            continue
        yield dev, cfg


def take_interfaces(dev, *interfaces: int) -> None:
    """Detach the kernel drivers bound to ``interfaces`` (usbhid, usblp, usb-storage,
    snd-usb-audio hold real devices; teensy_loader_cli and dfu-util detach the same
    way), then select the configuration.  Neither is an error when there is nothing
    to do: the emulator has no kernel, a configured device may refuse a second
    SET_CONFIGURATION while an interface is claimed elsewhere."""
    for number in interfaces:
        try:
            if number >= 0 and dev.is_kernel_driver_active(number):
                dev.detach_kernel_driver(number)
        except (usb.core.USBError, NotImplementedError):
            pass
    try:
        dev.set_configuration()
    except usb.core.USBError:
        pass


def endpoint_pair(intf, transfer: int) -> tuple[int | None, int | None]:
    """The first IN and OUT bEndpointAddress of a transfer type (usb.util.ENDPOINT_TYPE_*)."""
    ep_in = ep_out = None
    for ep in intf:
        if usb.util.endpoint_type(ep.bmAttributes) != transfer:
            continue
        if usb.util.endpoint_direction(ep.bEndpointAddress) == usb.util.ENDPOINT_IN:
            ep_in = ep.bEndpointAddress if ep_in is None else ep_in
        else:
            ep_out = ep.bEndpointAddress if ep_out is None else ep_out
    return ep_in, ep_out


class FoundDevice:
    """Mixin for a host client's "interface found on a device" record (with a ``device`` field)."""

    device: usb.core.Device

    @property
    def vid(self) -> int:
        return self.device.idVendor

    @property
    def pid(self) -> int:
        return self.device.idProduct

    @property
    def serial(self) -> str | None:
        return device_serial(self.device)


# --------------------------------------------------------------------------
# a device that went away

# How a device that is no longer there is reported, as pyusb's errno: libusb's NO_DEVICE,
# IO and NOT_FOUND become ENODEV, EIO and ENOENT (pyusb backend/libusb1.py _libusb_errno);
# EPROTO is the status Linux gives an URB cut by a disconnect, for a backend that passes it on.
GONE_ERRNOS = frozenset({errno.ENODEV, errno.EIO, errno.ENOENT, errno.EPROTO})


def gone(exc: BaseException) -> bool:
    """Whether an exchange failed because the device is not there any more (it reset or
    was unplugged).  A STALL (EPIPE) is an answer from a device that is there: see
    :func:`stalled`.  usb.core.USBError is an OSError, as is an error on /dev/usb/lpN."""
    return isinstance(exc, OSError) and exc.errno in GONE_ERRNOS


def stalled(exc: BaseException) -> bool:
    """Whether the device answered with a STALL (pyusb: USBError with errno EPIPE)."""
    return isinstance(exc, OSError) and exc.errno == errno.EPIPE


# --------------------------------------------------------------------------
# what a device does after it was told to leave

STAYED = "the device stayed in its bootloader"
POLL = 0.05  # s between two looks at the bus (a USB re-enumeration takes 10 ms at the very least)


@dataclass(frozen=True)
class Arrival:
    """A device seen appearing after the leave request."""

    vid: int
    pid: int
    bootloader: bool  # it is the bootloader again (its ids, and its class where that can be seen)
    device: usb.core.Device | None = None  # the pyusb device, when it was seen through pyusb
    where: str = ""  # where it appeared, when that is not a USB address (a serial port)


@dataclass(frozen=True)
class Look:
    """One look at the bus after the leave request."""

    there: bool  # the device told to leave is still where it was
    arrival: Arrival | None = None  # what appeared since the snapshot taken before it was told


# What a LeaveWatch can see, and nothing more:
STARTED = "started"  # it left and another device appeared
LEFT = "left"  # it left and nothing appeared
CAME_BACK = "came back"  # it left and came back as its bootloader
STILL_THERE = "still there"  # it did not leave


@dataclass(frozen=True)
class Outcome:
    """What a :class:`LeaveWatch` saw.  ``seconds``: how long it watched for the thing that
    did not happen (the device leaving, or something appearing after it left)."""

    seen: str  # STARTED, LEFT, CAME_BACK or STILL_THERE
    seconds: float
    arrival: Arrival | None = None

    @property
    def stayed(self) -> bool:
        """The bootloader kept control: the caller raises "<STAYED>: <its reason>"."""
        return self.seen in (CAME_BACK, STILL_THERE)

    @property
    def step(self) -> str:
        """The step to report when the device did not stay."""
        if self.seen == STARTED and self.arrival is not None:
            return f"application started (came back as {self.arrival.vid:04X}:{self.arrival.pid:04X})"
        if self.seen == LEFT:
            return f"left the bootloader (not seen again within {self.seconds:g} s)"
        raise ValueError(f"no step for a device that stayed ({self.seen})")


class LeaveWatch:
    """Watch a device after it was told to leave its bootloader and say what was seen.

    ``look()`` returns a :class:`Look`, or None when nothing could be seen this time (the
    bus could not be listed: that is not the device leaving).  The device is watched for
    ``wait`` s to leave; once it left, for ``again`` s for something to appear (None: until
    the ``wait`` s are over, counted from the start).  An application is only reported as
    started when a device was seen to appear; a device that left and showed nothing is
    "left the bootloader", never "started".

    ``arrival_needs_gone=False`` accepts an arrival while the device is still seen where it
    was: a serial port listing keeps a hung-up port a moment after its device detached.
    """

    def __init__(self, look: Callable[[], Look | None], *, wait: float, again: float | None = None,
                 arrival_needs_gone: bool = True, sleep: Callable[[float], object] = time.sleep,
                 clock: Callable[[], float] = time.monotonic, interval: float = POLL):
        self.look = look
        self.wait = wait
        self.again = again
        self.arrival_needs_gone = arrival_needs_gone
        self.sleep = sleep
        self.clock = clock
        self.interval = interval

    def run(self) -> Outcome:
        phase("leave")  # an interrupt from here on: the device was told to leave
        deadline = self.clock() + self.wait
        gone_at: float | None = None
        while True:
            seen = self.look()
            now = self.clock()
            if seen is not None:
                if not seen.there and gone_at is None:
                    gone_at = now  # once gone, gone: a look that lags behind does not undo it
                arrival = seen.arrival
                if arrival is not None and (gone_at is not None or not self.arrival_needs_gone):
                    return Outcome(CAME_BACK if arrival.bootloader else STARTED, now - (gone_at or now), arrival)
            if gone_at is not None:
                if self.again is None:
                    if now >= deadline:
                        return Outcome(LEFT, self.wait)
                elif now - gone_at >= self.again:
                    return Outcome(LEFT, self.again)
            elif now >= deadline:
                # never seen gone (a bus that could not be listed included): it stayed, the safe
                # conclusion, since the flash is then retried rather than taken as done
                return Outcome(STILL_THERE, self.wait)
            self.sleep(self.interval)


def device_key(dev) -> tuple[int, int, int, int]:
    """Where a pyusb device is and what it is: (bus, address, idVendor, idProduct)."""
    return dev.bus, dev.address, dev.idVendor, dev.idProduct


def bus_snapshot(backend) -> dict[tuple[int, int, int, int], usb.core.Device] | None:
    """Every device on the bus by :func:`device_key`; None when the bus cannot be listed."""
    try:
        return {device_key(dev): dev for dev in usb.core.find(find_all=True, backend=backend)}
    except usb.core.USBError:
        return None


class UsbLook:
    """:class:`LeaveWatch`'s look at a pyusb bus: is ``device`` still at its address, and which
    device appeared that was not in ``before`` (a :func:`bus_snapshot` taken before the leave
    request).  An arrival with the device's ids is the bootloader again when ``bootloader(dev)``
    says so (its class interface is there); one that is the bootloader wins over another
    arrival.  ``same_bus``: only arrivals on the device's own bus count."""

    def __init__(self, backend, device, before: dict | set | None, *,
                 bootloader: Callable[[usb.core.Device], bool] = lambda dev: True, same_bus: bool = False):
        self.backend = backend
        self.key = device_key(device)
        self.ids = (device.idVendor, device.idProduct)
        self.before = set(before or ())
        self.bootloader = bootloader
        self.same_bus = same_bus

    def __call__(self) -> Look | None:
        now = bus_snapshot(self.backend)
        if now is None:
            return None
        arrivals = []
        for key, dev in sorted(now.items()):
            if key in self.before or key == self.key or (self.same_bus and key[0] != self.key[0]):
                continue
            again = key[2:] == self.ids and self.bootloader(dev)
            arrivals.append(Arrival(key[2], key[3], again, dev))
        arrivals.sort(key=lambda a: not a.bootloader)  # stable: otherwise in bus order
        return Look(self.key in now, arrivals[0] if arrivals else None)

    def left(self) -> bool:
        """True when the device is not at its address now (a look that cannot list the bus: False)."""
        seen = self()
        return seen is not None and not seen.there
