"""The FunctionFS descriptor blobs, checked without a kernel."""

import struct

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


def test_sigterm_ends_a_wait_for_a_data_stage_the_host_never_sends():
    """dfu-util killed mid-DNLOAD: ep0 waits for a data stage that never comes, and f_fs's
    wait ends only on a signal with EINTR, which Python retries (PEP 475).  SIGTERM must
    still stop serve (here ep0 is a pipe; a timer feeds it after 3 s so a regression fails
    instead of hanging)."""
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
    read_end, write_end = os.pipe()
    port = SimpleNamespace(ep0=read_end, fn=SimpleNamespace(name="dfu"), layout=None)
    dnload = SetupPacket.unpack(bytes([0x21, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x04]))  # DNLOAD, 1024 bytes
    previous = signal.signal(signal.SIGTERM, stop_on_signal(server, lines.append))
    kill = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM))
    rescue = threading.Timer(3.0, os.write, (write_end, b"\0" * 1024))
    try:
        kill.start()
        rescue.start()
        t0 = time.monotonic()
        server._setup(port, dnload)
        elapsed = time.monotonic() - t0
    finally:
        kill.cancel()
        rescue.cancel()
        signal.signal(signal.SIGTERM, previous)
        os.close(read_end)
        os.close(write_end)
    assert elapsed < 2.0, lines
    assert server._stop.is_set() and not server.waiting_on_host
    assert lines[-1] == "functionfs: dfu: stopped while waiting for the data stage of request 0x21/0x01", lines
