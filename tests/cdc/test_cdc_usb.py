"""CDC-ACM on the virtual bus: descriptors as pyusb reads them, class requests, 1200-baud touch."""

import struct

import pytest
import usb.core
import usb.util

from bootkit.classes import cdc
from bootkit.emulator import Emulator
from bootkit.memory import SimulatedFlash, get_chip
from bootkit.transports.virtual import VirtualBus, get_backend
from bootkit.usb.device import Target

CHIP = get_chip("atmega32u4")


def functional(extra):
    out, i = [], 0
    while i < len(extra):
        n = extra[i]
        out.append(bytes(extra[i:i + n]))
        i += n
    return out


@pytest.mark.parametrize("dialect,ids", [("lufa", (0x03EB, 0x204A)), ("caterina", (0x2341, 0x0036))])
def test_descriptors_through_pyusb(dialect, ids):
    bus = VirtualBus()
    bus.attach(cdc.bootloader_device(SimulatedFlash(CHIP), CHIP, dialect=dialect))
    dev = usb.core.find(idVendor=ids[0], idProduct=ids[1], backend=get_backend(bus))
    assert dev is not None
    cfg = dev[0]
    comm, data = cfg[(0, 0)], cfg[(1, 0)]
    assert (comm.bInterfaceClass, comm.bInterfaceSubClass, comm.bInterfaceProtocol) == (0x02, 0x02, 0x01)
    descs = functional(bytes(comm.extra_descriptors))
    subtypes = [d[2] for d in descs]
    assert all(d[1] == 0x24 for d in descs)
    assert subtypes == [0x00, 0x01, 0x02, 0x06]  # header, call management, ACM, union
    assert struct.unpack_from("<H", descs[0], 3)[0] == 0x0110
    assert descs[1][4] == 1  # call management: data interface 1
    assert descs[2][3] & 0x02  # line coding + serial state supported
    assert descs[3][3:5] == bytes((0, 1))  # union: master 0, slave 1
    (notify,) = comm.endpoints()
    assert usb.util.endpoint_direction(notify.bEndpointAddress) == usb.util.ENDPOINT_IN
    assert usb.util.endpoint_type(notify.bmAttributes) == usb.util.ENDPOINT_TYPE_INTR
    assert (data.bInterfaceClass, data.bInterfaceSubClass, data.bInterfaceProtocol) == (0x0A, 0, 0)
    eps = data.endpoints()
    assert sorted(usb.util.endpoint_direction(e.bEndpointAddress) for e in eps) == [0x00, 0x80]
    assert all(usb.util.endpoint_type(e.bmAttributes) == usb.util.ENDPOINT_TYPE_BULK for e in eps)
    assert cdc.CdcAcmFunction.iad == (0x02, 0x02, 0x01)


def _endpoints(dev):
    data = dev[0][(1, 0)]
    out = usb.util.find_descriptor(data, custom_match=lambda e: not e.bEndpointAddress & 0x80)
    inp = usb.util.find_descriptor(data, custom_match=lambda e: e.bEndpointAddress & 0x80)
    notify = dev[0][(0, 0)].endpoints()[0]
    return out, inp, notify


def test_line_coding_serial_state_and_avr109_over_bulk():
    bus = VirtualBus()
    bus.attach(cdc.bootloader_device(SimulatedFlash(CHIP), CHIP))
    dev = usb.core.find(idVendor=0x03EB, idProduct=0x204A, backend=get_backend(bus))
    dev.set_configuration()
    coding = struct.pack("<IBBB", 57600, 0, 0, 8)
    dev.ctrl_transfer(0x21, 0x20, 0, 0, coding)
    assert bytes(dev.ctrl_transfer(0xA1, 0x21, 0, 0, 7)) == coding
    dev.ctrl_transfer(0x21, 0x22, 0x03, 0, None)
    out, inp, notify = _endpoints(dev)
    note = bytes(notify.read(16, timeout=100))
    assert note[:2] == b"\xa1\x20" and note[8:] == b"\x03\x00"  # SERIAL_STATE: DCD | DSR
    out.write(b"\x1bSs")
    assert bytes(inp.read(64, timeout=500)) == b"LUFACDC" + bytes((0x87, 0x95, 0x1E))
    with pytest.raises(usb.core.USBError):
        dev.ctrl_transfer(0x21, 0x7F, 0, 0, None)  # unknown class request: STALL


def test_1200_baud_touch_reenumerates_into_the_bootloader():
    bus = VirtualBus()
    with Emulator(CHIP, "cdc", options={"dialect": "caterina"}) as em:
        # a valid sketch is running (the emulator starts in the bootloader: leave it)
        em.memory.program(0, b"\x0c\x94" * 64)
        em.memory.manifest()
        em.run_application()
        em.attach(bus)
        backend = get_backend(bus)
        app = usb.core.find(idVendor=0x2341, idProduct=0x8036, backend=backend)
        assert app is not None and em.mode == "application"
        app.set_configuration()
        # what Linux cdc_acm sends for: open at 1200 baud, close
        app.ctrl_transfer(0x21, 0x20, 0, 0, struct.pack("<IBBB", 1200, 0, 0, 8))
        app.ctrl_transfer(0x21, 0x22, 0x03, 0, None)
        assert em.mode == "application"  # opening at 1200 alone is not the touch
        app.ctrl_transfer(0x21, 0x22, 0x00, 0, None)
        em.target.poll()
        assert em.mode == "bootloader"
        boot = usb.core.find(idVendor=0x2341, idProduct=0x0036, backend=backend)
        assert boot is not None
        assert usb.core.find(idVendor=0x2341, idProduct=0x8036, backend=backend) is None
        assert any("1200-baud touch" in e for e in em.events)


def test_other_baud_rates_do_not_reset_the_application():
    fn = cdc.CdcApplicationFunction()
    dev = cdc.application_device(SimulatedFlash(CHIP), CHIP, dialect="caterina")
    fn = dev.functions[0]
    from bootkit.usb.device import SetupPacket

    dev.set_configuration(1)
    dev.control(SetupPacket(0x21, 0x20, 0, 0, 7), struct.pack("<IBBB", 9600, 0, 0, 8))
    dev.control(SetupPacket(0x21, 0x22, 3, 0, 0))
    dev.control(SetupPacket(0x21, 0x22, 0, 0, 0))
    assert dev.take_signals() == []
    assert fn.touched is False


def test_caterina_leaves_after_its_timeout_without_host_traffic():
    now = [0.0]
    mem = SimulatedFlash(CHIP)
    mem.program(0, b"\x0c\x94" * 64)
    dev = cdc.bootloader_device(mem, CHIP, dialect="caterina")
    fn = dev.functions[0]
    fn.clock = lambda: now[0]
    fn.last_activity = 0.0
    target = Target(dev, lambda sig: None, clock=lambda: now[0])
    now[0] = 7.9
    target.poll()
    assert target.generation == 0
    now[0] = 8.1
    target.poll()
    assert target.generation == 1 and "timeout" in target.history[0]
    # LUFA has no timeout
    lufa = cdc.bootloader_device(SimulatedFlash(CHIP), CHIP, dialect="lufa")
    lufa.tick(1e9)
    assert lufa.take_signals() == []


def test_dtr_drop_abandons_a_half_received_block():
    mem = SimulatedFlash(CHIP)
    dev = cdc.bootloader_device(mem, CHIP)
    from bootkit.usb.device import SetupPacket

    dev.set_configuration(1)
    out = next(a for a in dev._bindings[0].endpoints if not a & 0x80)
    dev.control(SetupPacket(0x21, 0x22, 3, 0, 0))
    dev.ep_out(out, b"A\x00\x00B\x00\x80F" + b"\x00" * 60)
    dev.control(SetupPacket(0x21, 0x22, 0, 0, 0))  # port closed mid-block
    dev.control(SetupPacket(0x21, 0x22, 3, 0, 0))
    dev.ep_out(out, b"\x00" * 68)  # the next host's bytes are commands again, not block data
    assert mem.read(0, 128) == b"\xff" * 128
