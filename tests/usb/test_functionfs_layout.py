"""The FunctionFS descriptor blobs, checked without a kernel."""

import struct

import pytest

from bootkit.emulator import Emulator
from bootkit.transports.functionfs import function_layout
from bootkit.usb.descriptors import split_descriptors


def _sets(blob: bytes):
    magic, length, flags, fs_count, hs_count = struct.unpack_from("<IIIII", blob)
    descs = split_descriptors(blob[20:])
    return descs[:fs_count], descs[fs_count:fs_count + hs_count]


def test_interface_counts_its_endpoints():
    """bNumEndpoints must count the endpoints that follow, or the kernel ignores them
    ("has 1 endpoint descriptor, different from the interface descriptor's value: 0")."""
    for personality, chip in (("printer", "atmega32u4"), ("msc", "rp2040"), ("hid", "atmega32u4")):
        em = Emulator(chip, personality, options={"dialect": "native"} if personality == "hid" else {})
        for fn in em.target.device.functions:
            for speed_set in _sets(function_layout(fn, drop_class=True).descriptors):
                current, seen = None, 0
                for d in speed_set + [bytes([9, 4, 0, 0, 0, 0, 0, 0, 0])]:
                    if d[1] == 4:  # INTERFACE
                        if current is not None:
                            assert current[4] == seen, (personality, current.hex(), seen)
                        current, seen = d, 0
                    elif d[1] == 5:
                        seen += 1
                assert any(d[1] == 5 for d in speed_set), personality


def test_full_and_high_speed_packet_sizes():
    em = Emulator("rp2040", "msc")
    (fn,) = em.target.device.functions
    fs, hs = _sets(function_layout(fn).descriptors)
    fs_mps = {d[2]: struct.unpack_from("<H", d, 4)[0] for d in fs if d[1] == 5}
    hs_mps = {d[2]: struct.unpack_from("<H", d, 4)[0] for d in hs if d[1] == 5}
    assert set(fs_mps.values()) == {64} and set(hs_mps.values()) == {512}


def test_class_descriptors_dropped_from_interfaces_and_endpoints():
    """Linux 6.1's f_fs refuses 0x24/0x25 outside HID/CCID: the retry must drop
    them from interfaces (USB-MIDI MS header, jacks) and endpoints (MS_GENERAL)."""
    em = Emulator("atmega32u4", "midi")
    for fn in em.target.device.functions:
        layout = function_layout(fn, drop_class=True)
        assert set(layout.dropped) >= {0x24, 0x25}
        for speed_set in _sets(layout.descriptors):
            assert all(d[1] not in (0x24, 0x25) for d in speed_set)



@pytest.mark.parametrize("request_bytes, direction", [
    (bytes([0x21, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x04]), "out"),  # DNLOAD, 1024 bytes never sent
    (bytes([0xA1, 0x03, 0x00, 0x00, 0x00, 0x00, 0x06, 0x00]), "in"),  # GETSTATUS, its reply never taken
], ids=["dnload-data-stage", "getstatus-reply"])
def test_sigterm_ends_a_wait_for_a_host_that_gave_up(request_bytes, direction):
    """dfu-util killed mid-request: ep0 waits for a data stage the host never finishes, and
    f_fs's wait ends only on a signal with EINTR, which Python retries (PEP 475).  SIGTERM
    must still stop serve (seen in the VM: a killed dfu-util left serve ignoring SIGTERM).
    Here ep0 is a pipe (full, for the reply); a timer frees it after 3 s so a regression
    fails instead of hanging."""
    import fcntl
    import os
    import signal
    import threading
    import time
    from types import SimpleNamespace

    from bootkit.transports.functionfs import FunctionFsServer, stop_on_signal
    from bootkit.usb.device import SetupPacket

    lines = []
    server = FunctionFsServer.__new__(FunctionFsServer)
    server.lock, server.log, server._stop = threading.RLock(), lines.append, threading.Event()
    server.target = SimpleNamespace(poll=lambda: None, busy_left=lambda: 0.0)
    read_end, write_end = os.pipe()
    if direction == "in":  # a pipe that takes nothing more: the reply waits, like an IN stage nobody reads
        fcntl.fcntl(write_end, fcntl.F_SETFL, os.O_NONBLOCK)
        try:
            while True:
                os.write(write_end, b"\0" * 65536)
        except BlockingIOError:
            pass
        fcntl.fcntl(write_end, fcntl.F_SETFL, 0)
        ep0, rescue = write_end, threading.Timer(3.0, lambda: os.read(read_end, 1 << 20))
    else:
        ep0, rescue = read_end, threading.Timer(3.0, os.write, (write_end, b"\0" * 1024))
    port = SimpleNamespace(ep0=ep0, fn=SimpleNamespace(name="dfu", setup=lambda req, data: b"\0" * 6), layout=None)
    req = SetupPacket.unpack(request_bytes)
    previous = signal.signal(signal.SIGTERM, stop_on_signal(server, lines.append))
    kill = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM))
    try:
        kill.start()
        rescue.start()
        t0 = time.monotonic()
        server._setup(port, req)
        elapsed = time.monotonic() - t0
    finally:
        kill.cancel()
        rescue.cancel()
        rescue.join()
        signal.signal(signal.SIGTERM, previous)
        os.close(read_end)
        os.close(write_end)
    assert elapsed < 2.0, lines
    assert server._stop.is_set() and not server.waiting_on_host
    want = f"0x{request_bytes[0]:02x}/0x{request_bytes[1]:02x}"
    assert lines[-1] == f"functionfs: dfu: stopped while the host had not finished request {want}", lines


def test_a_request_read_after_the_stop_does_not_wait_for_the_host():
    """SIGTERM came while serve was between requests (in select), and ep0 then gave it one
    more request of the host that was killed: its reply must not wait (seen in the VM)."""
    import os
    import threading
    from types import SimpleNamespace

    from bootkit.transports.functionfs import FunctionFsServer
    from bootkit.usb.device import SetupPacket

    lines = []
    server = FunctionFsServer.__new__(FunctionFsServer)
    server.lock, server.log, server._stop = threading.RLock(), lines.append, threading.Event()
    server.target = SimpleNamespace(poll=lambda: None, busy_left=lambda: 0.0)
    server.stop()
    read_end, write_end = os.pipe()
    port = SimpleNamespace(ep0=read_end, fn=SimpleNamespace(name="dfu", setup=lambda req, data: b""), layout=None)
    rescue = threading.Timer(3.0, os.write, (write_end, b"\0" * 1024))  # a regression fails, not hangs
    try:
        rescue.start()
        # a DNLOAD whose 1024 bytes never come: with the stop already asked, no read at all
        server._setup(port, SetupPacket.unpack(bytes([0x21, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x04])))
    finally:
        rescue.cancel()
        rescue.join()
        os.close(read_end)
        os.close(write_end)
    assert lines == ["functionfs: dfu: stopped while the host had not finished request 0x21/0x01"]
