"""USB/IP server and client backend: wire layout, URB semantics, security, errors.

Layouts are checked against the kernel's Documentation/usb/usbip_protocol.rst
(offsets quoted from its tables); everything runs on loopback with an
ephemeral port.
"""

from __future__ import annotations

import errno
import socket
import struct
import time

import pytest
import usb.core
import usb.util

from bootkit.classes.dfu import host
from bootkit.emulator import Emulator
from bootkit.samples import sample_image
from bootkit.transports import usbip, usbip_client
from bootkit.transports.usbip import UsbipServer
from bootkit.usb.descriptors import DeviceInfo, Endpoint, Interface
from bootkit.usb.device import Device, Function, Stall, Target

VERSION = 0x0111


class Echo(Function):
    """Bulk OUT data comes back on bulk IN; IN NAKs while nothing is queued."""

    def __init__(self):
        super().__init__()
        self.out = Endpoint(1, "out", "bulk")
        self.inp = Endpoint(1, "in", "bulk")
        self.queue = bytearray()

    def interfaces(self, speed="full"):
        return [Interface(0, 0xFF, 0x12, 0x34, name="echo", endpoints=[self.out, self.inp])]

    def ep_out(self, ep, data):
        if data == b"stall":
            raise Stall
        self.queue += data

    def ep_in(self, ep, max_length):
        if not self.queue:
            return None
        chunk, self.queue[:max_length] = bytes(self.queue[:max_length]), b""
        return chunk


def echo_device(pid=0x0001):
    return Device(DeviceInfo(0x1209, pid, product="echo", serial="E1"), [Echo()])


class Raw:
    """A hand-driven USB/IP connection (what vhci-hcd sends)."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.seq = 0
        self.dirs = {}

    def recv(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError(f"closed after {len(buf)} of {n} bytes")
            buf += chunk
        return buf

    def closed(self, wait=2.0) -> bool:
        self.sock.settimeout(wait)
        try:
            return self.sock.recv(1) == b""
        except (socket.timeout, TimeoutError):
            return False
        except ConnectionResetError:
            return True

    def devlist(self) -> bytes:
        self.sock.sendall(struct.pack(">HHI", VERSION, 0x8005, 0))
        head = self.recv(12)
        out = head
        for _ in range(struct.unpack_from(">I", head, 8)[0]):
            dev = self.recv(312)
            out += dev + self.recv(4 * dev[311])
        return out

    def import_(self, busid: str) -> bytes:
        self.sock.sendall(struct.pack(">HHI32s", VERSION, 0x8003, 0, busid.encode()))
        head = self.recv(8)
        if struct.unpack_from(">I", head, 4)[0] != 0:
            return head
        return head + self.recv(312)

    def submit(self, ep, direction, length=0, setup=b"\0" * 8, data=b"", devid=0x00010001):
        self.seq += 1
        self.dirs[self.seq] = direction
        self.sock.sendall(struct.pack(">IIIIIIIIII8s", 1, self.seq, devid, direction, ep, 0, length, 0, 0, 0, setup)
                          + data)
        return self.seq

    def unlink(self, victim):
        self.seq += 1
        self.sock.sendall(struct.pack(">IIIIII24x", 2, self.seq, 0x00010001, 0, 0, victim))
        return self.seq

    def reply(self):
        head = self.recv(48)
        command, seqnum, devid, direction, ep, status, actual = struct.unpack_from(">IIIIIiI", head)
        assert (devid, direction, ep) == (0, 0, 0)  # "for server this shall be 0"
        is_in = self.dirs.get(seqnum) == 1
        data = self.recv(actual) if command == 3 and is_in and actual else b""
        return command, seqnum, status, actual, data

    def close(self):
        self.sock.close()


@pytest.fixture
def log():
    return []


@pytest.fixture
def serve(log, usbip_servers):
    return lambda targets, **kw: usbip_servers(targets, log=log.append, **kw)


# --------------------------------------------------------------------------
# wire layout (usbip_protocol.rst)


def test_devlist_bytes_match_the_kernel_layout(serve):
    dfu = Emulator("stm32f411", "dfu", options={"dialect": "dfuse"})
    echo = echo_device()
    s = serve([dfu.target, echo])
    raw = Raw(s.port)
    reply = raw.devlist()
    version, code, status, count = struct.unpack_from(">HHII", reply)
    assert (version, code, status, count) == (VERSION, 0x0005, 0, 2)
    # one 312-byte usbip_usb_device + 4 bytes per interface, for each device
    assert len(reply) == 12 + (312 + 4 * 1) + (312 + 4 * 1)
    first = 0x0C
    assert reply[first:first + 256].rstrip(b"\0").startswith(b"/sys/")
    assert reply[first + 256:first + 256 + 256].find(b"\0") > 0  # path is NUL terminated
    assert reply[0x10C:0x10C + 32].rstrip(b"\0") == b"1-1"
    busnum, devnum, speed = struct.unpack_from(">III", reply, 0x12C)
    assert (busnum, speed) == (1, usbip.USB_SPEED_FULL) and 1 <= devnum <= 127
    assert struct.unpack_from(">HHH", reply, 0x138) == (0x0483, 0xDF11, dfu.target.device.info.bcdDevice)
    assert reply[0x13E:0x141] == b"\0\0\0"  # class, subclass, protocol
    assert reply[0x142] == 1 and reply[0x143] == 1  # bNumConfigurations, bNumInterfaces
    assert reply[0x144:0x148] == bytes((0xFE, 0x01, 0x02, 0x00))  # DFU mode interface + padding
    # the second device starts at 0xC + 1 * 0x138 + m_0 * 4
    second = 0x0C + 0x138 + 1 * 4
    assert reply[second + 256:second + 256 + 32].rstrip(b"\0") == b"1-2"
    assert struct.unpack_from(">HH", reply, second + 0x12C) == (0x1209, 0x0001)
    assert reply[second + 0x138:second + 0x13C] == bytes((0xFF, 0x12, 0x34, 0))
    assert raw.closed()  # OP_REP_DEVLIST ends the connection


def test_import_reply_layout_and_one_importer_per_device(serve, log):
    s = serve({"3-2": echo_device()})
    a = Raw(s.port)
    reply = a.import_("3-2")
    assert len(reply) == 8 + 312
    assert struct.unpack_from(">HHI", reply) == (VERSION, 0x0003, 0)
    assert reply[0x108:0x108 + 32].rstrip(b"\0") == b"3-2"
    busnum, devnum, speed = struct.unpack_from(">III", reply, 0x128)
    assert busnum == 3 and speed == usbip.USB_SPEED_FULL
    assert struct.unpack_from(">HHH", reply, 0x134) == (0x1209, 0x0001, 0x0100)
    assert reply[0x13F] == 1  # bNumInterfaces, no interface records follow in OP_REP_IMPORT

    b = Raw(s.port)
    assert b.import_("3-2") == struct.pack(">HHI", VERSION, 0x0003, 2)  # ST_DEV_BUSY (usbip_common.h)
    assert b.closed()
    c = Raw(s.port)
    assert c.import_("9-9") == struct.pack(">HHI", VERSION, 0x0003, 4)  # ST_NODEV
    a.close()
    time.sleep(0.1)
    d = Raw(s.port)
    assert len(d.import_("3-2")) == 320  # free again once the first importer left
    assert any("in use by" in line for line in log)


# --------------------------------------------------------------------------
# URB semantics


def get_descriptor(dtype, index, length):
    return struct.pack("<BBHHH", 0x80, 6, dtype << 8 | index, 0, length)


def test_control_urbs_truncate_and_stall(serve):
    dev = echo_device()
    s = serve([dev])
    r = Raw(s.port)
    r.import_("1-1")
    seq = r.submit(0, 1, 8, get_descriptor(1, 0, 64))
    assert r.reply() == (3, seq, 0, 8, dev.device_descriptor()[:8])  # truncated to transfer_buffer_length
    seq = r.submit(0, 1, 64, get_descriptor(1, 0, 64))
    assert r.reply()[4] == dev.device_descriptor()
    seq = r.submit(0, 1, 10, get_descriptor(6, 0, 10))  # DEVICE_QUALIFIER: a full-speed device stalls
    assert r.reply() == (3, seq, -32, 0, b"")
    seq = r.submit(0, 0, 0, struct.pack("<BBHHH", 0, 9, 1, 0, 0))  # SET_CONFIGURATION 1
    assert r.reply()[:3] == (3, seq, 0)
    assert dev.configuration == 1


def test_bulk_in_waits_for_data_and_unlink(serve):
    dev = echo_device()
    s = serve([dev])
    r = Raw(s.port)
    r.import_("1-1")
    r.submit(0, 0, 0, struct.pack("<BBHHH", 0, 9, 1, 0, 0))
    r.reply()
    waiting = r.submit(1, 1, 64)  # NAKed: stays pending
    r.sock.settimeout(0.3)
    with pytest.raises((socket.timeout, TimeoutError)):
        r.recv(1)
    r.sock.settimeout(5)
    out = r.submit(1, 0, 5, data=b"hello")
    replies = {r.reply()[1:] for _ in range(2)}
    assert (out, 0, 5, b"") in replies
    assert (waiting, 0, 5, b"hello") in replies

    doomed = r.submit(1, 1, 64)
    time.sleep(0.05)
    u = r.unlink(doomed)
    assert r.reply() == (4, u, -104, 0, b"")  # found: -ECONNRESET
    u = r.unlink(12345)
    assert r.reply() == (4, u, 0, 0, b"")  # unknown seqnum: 0
    # the unlinked URB never completes: new data goes to the next URB
    r.submit(1, 0, 3, data=b"abc")
    assert r.reply()[2:] == (0, 3, b"")
    nxt = r.submit(1, 1, 64)
    assert r.reply() == (3, nxt, 0, 3, b"abc")
    seq = r.submit(1, 0, 5, data=b"stall")
    assert r.reply() == (3, seq, -32, 0, b"")
    seq = r.submit(5, 1, 64)  # no such endpoint: STALL
    assert r.reply()[:3] == (3, seq, -32)


def test_reenumeration_closes_the_importer_and_the_new_device_is_importable(serve, log):
    em = Emulator("stm32f411", "dfu", options={"dialect": "dfuse"})
    s = serve([em.target])
    backend = usbip_client.UsbipBackend(port=s.port)
    before = usbip_client.list_devices(port=s.port)[0]
    image = sample_image("stm32f411", 5000, 0x4000, 100)
    result = host.flash(image, backend, dialect="dfuse", chip="stm32f411", progress=False)
    assert result.verified
    deadline = time.monotonic() + 3
    while em.mode != "application" and time.monotonic() < deadline:
        time.sleep(0.01)
    after = usbip_client.list_devices(port=s.port)
    assert [d.busid for d in after] == ["1-1"]
    assert after[0].devnum != before.devnum  # a new device, as after a real re-enumeration
    assert any("re-enumerated" in line for line in log)
    r = Raw(s.port)
    assert len(r.import_("1-1")) == 320


# --------------------------------------------------------------------------
# security


def test_allow_list_refuses_other_clients(serve, log):
    s = serve([echo_device()], allow=["10.1.2.3", "192.168.0.0/16"])
    r = Raw(s.port)
    assert r.closed()
    assert any("not in the allow list" in line for line in log)
    s2 = serve([echo_device()], allow=["127.0.0.1"])
    assert len(Raw(s2.port).import_("1-1")) == 320


def test_default_listen_is_loopback_and_other_addresses_warn(log, monkeypatch):
    import inspect

    assert inspect.signature(UsbipServer).parameters["listen"].default == ("127.0.0.1", 3240)
    assert inspect.signature(usbip.serve).parameters["listen"].default == ("127.0.0.1", 3240)
    assert usbip.parse_listen("0.0.0.0:4000") == ("0.0.0.0", 4000)
    assert usbip.parse_listen("[::1]:5") == ("::1", 5)
    assert usbip.parse_listen(":7") == ("127.0.0.1", 7)
    # an explicit non-loopback listen logs a warning (bound here to loopback
    # through a stub, so the test never opens a port to the network)
    real = usbip._listeners
    monkeypatch.setattr(usbip, "_listeners", lambda host, port: real("127.0.0.1", port))
    with UsbipServer([echo_device()], ("0.0.0.0", 0), log=log.append):
        pass
    assert any("WARNING" in line and "0.0.0.0" in line for line in log)


# --------------------------------------------------------------------------
# client backend errors


def test_client_maps_errors_like_libusb(serve):
    target = Target(echo_device())
    s = serve([target])
    backend = usbip_client.UsbipBackend(port=s.port)
    dev = usb.core.find(backend=backend, idVendor=0x1209)
    assert dev is not None and dev.serial_number == "E1"
    dev.set_configuration()
    ep_out = usb.util.find_descriptor(dev[0][0, 0], bEndpointAddress=0x01)
    ep_in = usb.util.find_descriptor(dev[0][0, 0], bEndpointAddress=0x81)
    assert ep_out.write(b"ping") == 4
    assert bytes(ep_in.read(64, timeout=1000)) == b"ping"
    with pytest.raises(usb.core.USBError) as exc:
        ep_out.write(b"stall")
    assert exc.value.errno == errno.EPIPE and "Pipe error" in str(exc.value)
    with pytest.raises(usb.core.USBTimeoutError):
        ep_in.read(64, timeout=100)  # nothing queued: the client unlinks the URB
    ep_out.write(b"after")  # the unlinked URB did not swallow the data
    assert bytes(ep_in.read(64, timeout=1000)) == b"after"
    target.device = None  # unplugged
    target.generation += 1
    time.sleep(0.1)
    with pytest.raises(usb.core.USBError) as exc:
        dev.ctrl_transfer(0x80, 0, 0, 0, 2)
    assert exc.value.errno == errno.ENODEV
    assert list(usb.core.find(find_all=True, backend=backend)) == []


def test_listing_then_opening_imports_once_and_dropped_devices_are_released(serve, log):
    s = serve([echo_device()])

    def imports():
        return sum("imported 1-1" in line for line in log)

    def importable_by_another_client() -> bool:
        time.sleep(0.1)  # let the server see our import close
        reply = Raw(s.port).import_("1-1")
        return len(reply) == 320

    backend = usbip_client.UsbipBackend(port=s.port)
    dev = usb.core.find(backend=backend, idVendor=0x1209)
    assert dev.serial_number == "E1"  # opened: the import that read the descriptors serves it
    assert imports() == 1
    usb.util.dispose_resources(dev)
    del dev
    assert importable_by_another_client()
    assert imports() == 2

    # listed and held, not opened: still imported (the next open needs no new import) ...
    backend = usbip_client.UsbipBackend(port=s.port)
    held = list(usb.core.find(find_all=True, backend=backend))
    assert len(held) == 1 and imports() == 3
    time.sleep(0.1)
    assert Raw(s.port).import_("1-1") == struct.pack(">HHI", VERSION, 0x0003, 2)  # ST_DEV_BUSY
    # ... and released when pyusb lets go of it
    del held
    assert importable_by_another_client()

    # backend.close() releases what it listed too
    backend = usbip_client.UsbipBackend(port=s.port)
    held = usb.core.find(backend=backend, idVendor=0x1209)
    backend.close()
    assert importable_by_another_client()
    del held

