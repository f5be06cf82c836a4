"""The USB core's hooks instead of special cases: a class that names its interface
elsewhere than wIndex's low byte routes through Function.request_interface (the printer's
GET_DEVICE_ID is one), and signal kinds are an enum whose values are the old strings."""

from __future__ import annotations

import pytest

from bootkit.usb.descriptors import DeviceInfo, Interface
from bootkit.usb.device import Device, Function, SetupPacket, SignalKind, Stall, Target

VENDOR_REQUEST = 0x42


class Plain(Function):
    name = "plain"

    def interfaces(self, speed="full"):
        return [Interface(0, 0xFF, 0, 0)]


class HighByte(Function):
    """A class whose request VENDOR_REQUEST carries the interface in wIndex's high byte."""

    name = "high-byte"

    def __init__(self):
        super().__init__()
        self.seen: list[int] = []

    def interfaces(self, speed="full"):
        return [Interface(0, 0xFE, 0, 0)]

    def request_interface(self, req):
        return req.wIndex >> 8 if req.bRequest == VENDOR_REQUEST else None

    def with_local_interface(self, req, local):
        return req.with_index(local << 8 | (req.wIndex & 0xFF))

    def setup(self, req, data):
        self.seen.append(req.wIndex)
        return b"ok"


def test_a_function_routes_a_request_that_names_its_interface_in_the_high_byte():
    plain, high = Plain(), HighByte()
    device = Device(DeviceInfo(0x1209, 0x0001), [plain, high])
    device.set_configuration(1)
    # interface 1 (the second function) in the high byte, alternate 0 in the low byte
    reply = device.control(SetupPacket(0xA1, VENDOR_REQUEST, 0, 1 << 8 | 0, 2))
    assert reply == b"ok" and high.seen == [0 << 8 | 0]  # function-local interface 0
    with pytest.raises(Stall):  # another request goes by the low byte, as always: interface 0 stalls it
        device.control(SetupPacket(0xA1, VENDOR_REQUEST + 1, 0, 1 << 8 | 0, 2))


def test_signal_kinds_are_an_enum_with_the_old_strings():
    fn = Plain()
    target = Target(Device(DeviceInfo(0x1209, 0x0002), [fn]), lambda sig: None)
    fn.signal("leave", "old spelling")
    target.poll()
    assert target.history == ["leave: old spelling"]
    assert SignalKind.LEAVE == "leave" and str(SignalKind.ENTER_BOOTLOADER) == "enter-bootloader"
    with pytest.raises(ValueError):
        fn.signal("levae")  # a misspelt kind fails where it is raised, not silently later
