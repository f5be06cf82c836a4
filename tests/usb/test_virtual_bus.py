"""pyusb, through the virtual backend, sees emulated devices as real ones."""

import collections

import pytest
import usb.core
import usb.util

from bootkit.transports.virtual import VirtualBus, get_backend
from bootkit.usb.descriptors import DeviceInfo, Endpoint, Interface, parse_configuration
from bootkit.usb.device import Device, Function, SetupPacket, Stall


class Echo(Function):
    """Echoes bulk OUT data on bulk IN; vendor request 0x01 echoes the setup data."""

    name = "echo"

    def __init__(self):
        super().__init__()
        self.queue = collections.deque()
        self.ep_out_ = Endpoint(1, "out", "bulk")
        self.ep_in_ = Endpoint(1, "in", "bulk")
        self.stored = b""

    def interfaces(self, speed="full"):
        return [Interface(0, 0xFF, name="echo", endpoints=[self.ep_out_, self.ep_in_])]

    def setup(self, req, data):
        if req.bRequest == 1 and not req.is_in:
            self.stored = data
            return None
        if req.bRequest == 2 and req.is_in:
            return self.stored
        raise Stall

    def ep_out(self, ep, data):
        self.queue.append(bytes(data))

    def ep_in(self, ep, max_length):
        if not self.queue:
            return None
        return self.queue.popleft()


class Notify(Function):
    """A second function with an interrupt IN endpoint and two alt settings."""

    name = "notify"
    iad = (0xFF, 0, 0)

    def __init__(self):
        super().__init__()
        self.ep = Endpoint(1, "in", "interrupt", max_packet_size=8, interval=10)
        self.alt_seen = []

    def interfaces(self, speed="full"):
        return [
            Interface(0, 0xFF, 1, name="notify-a"),
            Interface(0, 0xFF, 1, alternate=1, name="notify-b", endpoints=[self.ep]),
            Interface(1, 0xFF, 2, extra=bytes([5, 0x24, 0, 0x10, 0x01])),
        ]

    def set_alternate(self, interface, alternate):
        self.alt_seen.append((interface, alternate))

    def ep_in(self, ep, max_length):
        return b"\x01\x02\x03"


@pytest.fixture
def bus():
    return VirtualBus()


def make_device(bus):
    echo, notify = Echo(), Notify()
    dev = Device(DeviceInfo(0x1209, 0x0001, manufacturer="bootkit", product="test", serial="S1"), [echo, notify])
    bus.attach(dev)
    return dev, echo, notify


def test_composite_descriptors_seen_by_pyusb(bus):
    dev, echo, notify = make_device(bus)
    found = list(usb.core.find(find_all=True, backend=get_backend(bus)))
    assert len(found) == 1
    d = found[0]
    assert (d.idVendor, d.idProduct) == (0x1209, 0x0001)
    assert d.bDeviceClass == 0xEF  # IAD composite
    assert usb.util.get_string(d, d.iSerialNumber) == "S1"
    assert d.serial_number == "S1" and d.product == "test"
    cfg = d.get_active_configuration() if False else d[0]
    numbers = sorted({(i.bInterfaceNumber, i.bAlternateSetting) for i in cfg})
    assert numbers == [(0, 0), (1, 0), (1, 1), (2, 0)]
    eps = {e.bEndpointAddress for i in cfg for e in i}
    assert eps == {0x01, 0x81, 0x82}
    i2 = cfg[(2, 0)]
    assert bytes(i2.extra_descriptors) == bytes([5, 0x24, 0, 0x10, 0x01])
    assert usb.util.get_string(d, cfg[(1, 1)].iInterface) == "notify-b"
    # The wire form parses back to what was declared
    tree = parse_configuration(dev.configuration_descriptor())
    assert tree["bNumInterfaces"] == 3
    assert tree["wTotalLength"] == len(dev.configuration_descriptor())


def test_bulk_echo_both_directions(bus):
    make_device(bus)
    d = usb.core.find(idVendor=0x1209, backend=get_backend(bus))
    d.set_configuration()
    intf = d.get_active_configuration()[(0, 0)]
    ep_out = usb.util.find_descriptor(intf, custom_match=lambda e: usb.util.endpoint_direction(e.bEndpointAddress) == usb.util.ENDPOINT_OUT)
    ep_in = usb.util.find_descriptor(intf, custom_match=lambda e: usb.util.endpoint_direction(e.bEndpointAddress) == usb.util.ENDPOINT_IN)
    for payload in (b"hello", bytes(range(256)) * 4, b"x"):
        assert ep_out.write(payload) == len(payload)
        assert bytes(ep_in.read(4096, timeout=100)) == payload
    with pytest.raises(usb.core.USBTimeoutError):
        ep_in.read(64, timeout=20)


def test_control_stall_and_interface_routing(bus):
    _, echo, notify = make_device(bus)
    d = usb.core.find(idVendor=0x1209, backend=get_backend(bus))
    d.set_configuration()
    d.ctrl_transfer(0x41, 1, 0, 0, b"abc")
    assert bytes(d.ctrl_transfer(0xC1, 2, 0, 0, 16)) == b"abc"
    with pytest.raises(usb.core.USBError) as exc:
        d.ctrl_transfer(0xC1, 99, 0, 0, 16)
    assert exc.value.errno == 32  # EPIPE, as libusb reports a STALL
    d.set_interface_altsetting(interface=1, alternate_setting=1)
    assert notify.alt_seen == [(0, 1)]  # function-local interface number
    assert bytes(d.read(0x82, 8, timeout=10)) == b"\x01\x02\x03"
    with pytest.raises(usb.core.USBError):  # SET_INTERFACE to an alternate that does not exist
        d.ctrl_transfer(0x01, 11, 5, 1, None)


def test_endpoint_halt(bus):
    make_device(bus)
    d = usb.core.find(idVendor=0x1209, backend=get_backend(bus))
    d.set_configuration()
    d.ctrl_transfer(0x02, 3, 0, 0x01, None)  # SET_FEATURE(ENDPOINT_HALT)
    assert bytes(d.ctrl_transfer(0x82, 0, 0, 0x01, 2)) == b"\x01\x00"
    with pytest.raises(usb.core.USBError):
        d.write(0x01, b"x")
    d.clear_halt(0x01)
    assert d.write(0x01, b"x") == 1


def test_unconfigured_device_stalls_data_endpoints(bus):
    make_device(bus)
    d = usb.core.find(idVendor=0x1209, backend=get_backend(bus))
    with pytest.raises(usb.core.USBError):
        d._ctx.backend.bulk_write(d._ctx.backend.open_device(d._ctx.dev), 0x01, 0, b"x", 10)
    # device qualifier on a full-speed-only device stalls (USB 2.0 9.6.2)
    with pytest.raises(usb.core.USBError):
        d.ctrl_transfer(0x80, 6, 0x0600, 0, 10)


def test_reenumeration_makes_old_handle_vanish(bus):
    dev, echo, _ = make_device(bus)
    target = next(iter(bus._ports.values()))
    replacement = Device(DeviceInfo(0x1209, 0x0002), [Echo()])
    target.on_signal = lambda sig: replacement
    d = usb.core.find(idVendor=0x1209, idProduct=0x0001, backend=get_backend(bus))
    d.set_configuration()
    echo.signal("reenumerate", "test")
    with pytest.raises(usb.core.USBError) as exc:
        d.ctrl_transfer(0xC1, 2, 0, 0, 16)
    assert exc.value.errno == 19  # ENODEV
    assert usb.core.find(idVendor=0x1209, idProduct=0x0001, backend=get_backend(bus)) is None
    assert usb.core.find(idVendor=0x1209, idProduct=0x0002, backend=get_backend(bus)) is not None


def test_setup_packet_roundtrip():
    raw = bytes([0xA1, 3, 0, 0, 2, 0, 6, 0])
    s = SetupPacket.unpack(raw)
    assert s.is_in and s.type == 1 and s.recipient == 1 and s.wIndex == 2 and s.wLength == 6
    assert s.pack() == raw


def test_device_info_rejects_out_of_range_ids():
    with pytest.raises(ValueError, match="idVendor"):
        DeviceInfo(0x10000, 1)
