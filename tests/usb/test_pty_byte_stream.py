"""The pty transport carries a Function's byte stream (Function.byte_stream), not only a
CDC-ACM device: a MIDI device's SysEx on a pseudo-terminal, as on a serial MIDI cable."""

from __future__ import annotations

import os
import select
import time
import tty

from bootkit.classes.midi import protocol as P
from bootkit.classes.midi.sysex import frame, parse_frame
from bootkit.emulator import Emulator
from bootkit.transports.pty import pty_server
from bootkit.usb.device import ByteStream


def read_until(fd: int, end: bytes, limit: float = 30.0) -> bytes:
    """Bytes from ``fd`` up to ``end``; ``limit`` is generous (a loaded machine), not a timed assertion."""
    out = b""
    deadline = time.monotonic() + limit
    while not out.endswith(end) and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            out += os.read(fd, 4096)
    return out


def test_a_midi_device_byte_stream_is_served_on_a_pty():
    with Emulator("atmega32u4", "midi") as em:
        (fn,) = em.target.device.functions
        assert isinstance(fn.byte_stream(), ByteStream)
        with pty_server(em) as server:
            fd = os.open(server.slave_path, os.O_RDWR | os.O_NOCTTY)
            try:
                tty.setraw(fd)
                os.write(fd, frame(P.Cmd.IDENTIFY, 1))
                reply = read_until(fd, b"\xf7")
            finally:
                os.close(fd)
    assert reply.startswith(b"\xf0"), reply
    cmd, tag, payload = parse_frame(reply[1:-1])
    assert cmd == P.Cmd.ACK and tag == 1 and P.unpack_info(payload[1:]).chip == "atmega32u4"
