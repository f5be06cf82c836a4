"""Descriptors as pyusb sees them through the virtual backend."""

import struct

import pytest
import usb.core
import usb.util

from bootkit.classes import hid
from bootkit.classes.hid.protocol import parse_report_descriptor
from bootkit.emulator import Emulator
from bootkit.transports.virtual import VirtualBus, get_backend

EXPECTED = {
    # dialect: (vid, pid, usage page, usage, output report, input report, endpoints)
    "halfkay": (0x16C0, 0x0478, 0xFF9C, 0x1B, 130, 0, {"in"}),
    "lufa": (0x03EB, 0x2067, 0xFFDC, 0xFB, 130, 0, {"in"}),
    "native": (0x1209, 0xB00F, 0xFFB0, 0x01, 64, 64, {"in", "out"}),
    "xusb": (0x1209, 0xBB01, 0xFF00, 0x80, 64, 64, {"in", "out"}),  # xusb-boot descriptors.c
}


@pytest.mark.parametrize("dialect", hid.DIALECTS)
def test_descriptors_through_pyusb(dialect):
    vid, pid, page, usage, out_len, in_len, eps = EXPECTED[dialect]
    bus = VirtualBus()
    Emulator(hid.chip_for("atmega32u4", dialect), "hid", options={"dialect": dialect}).attach(bus)
    dev = usb.core.find(backend=get_backend(bus))
    assert (dev.idVendor, dev.idProduct) == (vid, pid)
    cfg = dev[0]
    assert cfg.bNumInterfaces == 1
    intf = cfg[(0, 0)]
    assert intf.bInterfaceClass == 3
    extra = bytes(intf.extra_descriptors)
    assert extra[:2] == b"\x09\x21"
    bcd, country, num, dtype, length = struct.unpack_from("<HBBBH", extra, 2)
    assert (bcd, num, dtype) == (0x0111, 1, 0x22)
    # GET_DESCRIPTOR(HID report) and GET_DESCRIPTOR(HID) on the interface
    report = bytes(dev.ctrl_transfer(0x81, 6, 0x2200, 0, 512))
    assert len(report) == length
    hid_desc = bytes(dev.ctrl_transfer(0x81, 6, 0x2100, 0, 9))
    assert hid_desc == extra[:9]
    info = parse_report_descriptor(report)
    assert (info.usage_page, info.usage, info.output_length, info.input_length) == (page, usage, out_len, in_len)
    kinds = set()
    for ep in intf:
        assert usb.util.endpoint_type(ep.bmAttributes) == usb.util.ENDPOINT_TYPE_INTR
        kinds.add("in" if usb.util.endpoint_direction(ep.bEndpointAddress) == usb.util.ENDPOINT_IN else "out")
        assert ep.wMaxPacketSize == 64
    assert kinds == eps
    if dialect == "lufa":
        assert dev.bMaxPacketSize0 == 8 and dev.bcdUSB == 0x0110  # LUFA Descriptors.c
    if dialect == "xusb":  # xusb-boot descriptors.c: USB 1.1, EP0 64, bcdDevice 0, 500 mA, its strings
        assert (dev.bMaxPacketSize0, dev.bcdUSB, dev.bcdDevice, cfg.bMaxPower) == (64, 0x0110, 0, 250)
        assert (dev.manufacturer, dev.product) == ("Xusb", "Xusb-boot")


def test_hid_class_requests_linux_sends_at_probe():
    bus = VirtualBus()
    Emulator("atmega32u4", "hid", options={"dialect": "native"}).attach(bus)
    dev = usb.core.find(backend=get_backend(bus))
    dev.set_configuration()
    dev.ctrl_transfer(0x21, 0x0A, 0, 0, None)  # SET_IDLE
    assert bytes(dev.ctrl_transfer(0xA1, 0x03, 0, 0, 1)) == b"\x01"  # GET_PROTOCOL: report
    with pytest.raises(usb.core.USBError):
        dev.ctrl_transfer(0x81, 6, 0x2300, 0, 9)  # physical descriptor: none


def test_endpoints_found_from_descriptors_not_assumed():
    """Put another function first so the HID endpoints are not 0x81/0x01."""
    from bootkit.classes.hid import host
    from bootkit.classes.hid.device import HidFunction, NativeEngine
    from bootkit.memory import SimulatedFlash, get_chip
    from bootkit.usb.descriptors import DeviceInfo, Endpoint, Interface
    from bootkit.usb.device import Device, Function

    class Other(Function):
        def __init__(self):
            super().__init__()
            self.eps = [Endpoint(1, "in", "bulk"), Endpoint(1, "out", "bulk")]

        def interfaces(self, speed="full"):
            return [Interface(0, 0xFF, endpoints=self.eps)]

    chip = get_chip("atmega32u4")
    mem = SimulatedFlash(chip)
    dev = Device(DeviceInfo(0x1209, 0xB00F), [Other(), HidFunction(NativeEngine(mem, chip))])
    bus = VirtualBus()
    bus.attach(dev)
    t = host.find_devices(get_backend(bus))[0]
    assert (t.interface, t.ep_in, t.ep_out) == (1, 0x82, 0x02)
    back = host.read(get_backend(bus), start=0, length=100, progress=False)
    assert back.tobytes() == b"\xff" * 100
