"""usbhost.LeaveWatch: the one watch every host runs after telling a device to leave.

It reports only what it saw: "application started" only when a device appeared,
"left the bootloader" when the device went and nothing appeared, and the two ways a
bootloader keeps control (it never went, or it came back as itself).  Run here on a
scripted clock and scripted looks, so no test waits for real time.
"""

from __future__ import annotations

import errno

import pytest
import usb.core

from bootkit.classes.usbhost import (
    CAME_BACK,
    LEFT,
    STARTED,
    STILL_THERE,
    Arrival,
    LeaveWatch,
    Look,
    UsbLook,
    bus_snapshot,
    gone,
    stalled,
)

APP = Arrival(0x2341, 0x8036, False)
BOOT = Arrival(0x03EB, 0x2FF4, True)


def watch(looks, wait=5.0, again=None, **kw):
    """A LeaveWatch over ``looks`` (the last one repeats) on a clock that only sleep() advances."""
    t = [0.0]
    seq = list(looks)

    def look():
        return seq.pop(0) if len(seq) > 1 else seq[0]

    def sleep(s):
        t[0] += s

    return LeaveWatch(look, wait=wait, again=again, sleep=sleep, clock=lambda: t[0], **kw).run()


def test_an_application_is_reported_only_once_it_appeared():
    out = watch([Look(True), Look(False), Look(False), Look(False, APP)])
    assert (out.seen, out.stayed, out.step) == (STARTED, False, "application started (came back as 2341:8036)")


def test_gone_and_nothing_appearing_is_left_not_started():
    assert watch([Look(True), Look(False)], wait=5, again=2).step == "left the bootloader (not seen again within 2 s)"
    # without ``again`` the whole wait counts, from the leave request (DFU, HID, MIDI)
    assert watch([Look(False)], wait=5).step == "left the bootloader (not seen again within 5 s)"


def test_a_device_that_never_went_stayed():
    out = watch([Look(True)], wait=3)
    assert (out.seen, out.stayed, out.seconds) == (STILL_THERE, True, 3)
    with pytest.raises(ValueError):
        out.step


def test_the_bootloader_coming_back_stayed():
    out = watch([Look(False), Look(False, BOOT)])
    assert (out.seen, out.stayed, out.arrival) == (CAME_BACK, True, BOOT)


def test_an_arrival_while_the_device_is_still_there_is_not_taken_for_its_application():
    # another device plugged in beside a bootloader that ignores the leave request
    assert watch([Look(True, APP)], wait=2).seen == STILL_THERE
    # ... unless the caller's listing lags behind a hang-up (serial ports)
    assert watch([Look(True, APP)], wait=2, arrival_needs_gone=False).seen == STARTED


def test_a_bus_that_cannot_be_listed_is_not_the_device_leaving():
    # the DFU host used to take an unlistable bus ({}) for "left the bootloader"
    assert watch([None], wait=2).seen == STILL_THERE
    assert watch([Look(True), None, None, Look(False, APP)]).seen == STARTED


def test_once_gone_a_lagging_look_does_not_bring_it_back():
    assert watch([Look(False), Look(True)], wait=5, again=1).seen == LEFT


def test_gone_and_stalled():
    assert gone(usb.core.USBError("No such device", errno=errno.ENODEV))
    assert gone(OSError(errno.EIO, "I/O error"))  # /dev/usb/lpN after a disconnect
    assert not gone(usb.core.USBError("Pipe error", errno=errno.EPIPE))
    assert stalled(usb.core.USBError("Pipe error", errno=errno.EPIPE))
    assert not gone(usb.core.USBTimeoutError("Operation timed out", errno=errno.ETIMEDOUT))
    assert not gone(ValueError("not an OSError"))


def test_usb_look_on_the_in_process_bus():
    from bootkit.emulator import Emulator
    from bootkit.transports.virtual import VirtualBus, get_backend

    bus = VirtualBus()
    backend = get_backend(bus)
    with Emulator("atmega32u4", "dfu") as em:
        target = em.attach(bus)
        before = bus_snapshot(backend)
        (dev,) = before.values()
        look = UsbLook(backend, dev, before)
        assert look() == Look(True) and not look.left()
        bus.detach(target)
        assert look() == Look(False) and look.left()
        bus.attach(target)  # the same device again, at a new address: its bootloader came back
        target.generation += 1
        seen = look()
        assert seen.arrival is not None and seen.arrival.bootloader
        assert (seen.arrival.vid, seen.arrival.pid) == (dev.idVendor, dev.idProduct)
        # an arrival the caller does not recognise as its bootloader (another class) is not one
        assert not UsbLook(backend, dev, before, bootloader=lambda d: False)().arrival.bootloader
