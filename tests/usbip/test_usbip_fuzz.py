"""Malformed USB/IP traffic for a bounded time: the server survives and still flashes.

Loopback only, at most a few seconds and a bounded number of connections.
Each case is one connection: random bytes, truncated headers, bad
versions, unknown operations and commands, huge lengths, unlinks of
unknown seqnums, abrupt disconnects (RST) mid-transfer, and random URBs
aimed at a scratch device.  Afterwards the server thread is alive, no
connection hit an internal error, and a well-formed client flashes the
DFU board and talks to the scratch device.
"""

from __future__ import annotations

import random
import socket
import struct
import time

import usb.core
import usb.util

from bootkit.classes.dfu import host
from bootkit.emulator import Emulator
from bootkit.samples import sample_image
from bootkit.transports import usbip_client
from bootkit.transports.usbip import UsbipServer
from bootkit.usb.descriptors import DeviceInfo, Endpoint, Interface
from bootkit.usb.device import Device, Function

VERSION = 0x0111
SECONDS = 3.0
MAX_CASES = 600


class Sink(Function):
    """Scratch device for random URBs: bulk OUT swallows, bulk IN answers every other time."""

    def __init__(self):
        super().__init__()
        self.out = Endpoint(1, "out", "bulk")
        self.inp = Endpoint(1, "in", "bulk")
        self.n = 0

    def interfaces(self, speed="full"):
        return [Interface(0, 0xFF, name="sink", endpoints=[self.out, self.inp])]

    def setup(self, req, data):
        return bytes(req.wLength) if req.is_in else None

    def ep_out(self, ep, data):
        pass

    def ep_in(self, ep, max_length):
        self.n += 1
        return b"x" * min(max_length, 3) if self.n % 2 else None


def op(code, version=VERSION, status=0):
    return struct.pack(">HHI", version, code, status)


def imp(busid):
    return op(0x8003) + busid.encode().ljust(32, b"\0")


def submit(rng, seq, ep=None, direction=None, length=None, setup=None, packets=0):
    ep = rng.randrange(16) if ep is None else ep
    direction = rng.randrange(2) if direction is None else direction
    length = rng.choice([0, 1, 8, 64, 4096]) if length is None else length
    setup = bytes(rng.getrandbits(8) for _ in range(8)) if setup is None else setup
    return struct.pack(">IIIIIIIIII8s", 1, seq, 0x10002, direction, ep, 0, length, 0, packets, 0, setup)


def case(rng) -> tuple[str, bytes]:
    """One malformed (or hostile) conversation: a name and the bytes to send."""
    kind = rng.choice(["random", "short-op", "version", "op-code", "short-busid", "bad-busid", "short-urb",
                       "command", "huge", "huge-control", "iso", "bad-ep", "mid-out", "unlink", "random-urbs",
                       "pending-in"])
    if kind == "random":
        return kind, bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 400)))
    if kind == "short-op":
        return kind, op(0x8005)[:rng.randrange(1, 8)]
    if kind == "version":
        return kind, op(rng.choice([0x8005, 0x8003]), version=rng.choice([0, 0x0100, 0x0106, 0x0110, 0xFFFF]))
    if kind == "op-code":
        return kind, op(rng.choice([0, 3, 5, 0x8000, 0x8004, 0xFFFF]))
    if kind == "short-busid":
        return kind, imp("1-2")[:rng.randrange(8, 39)]
    if kind == "bad-busid":
        return kind, op(0x8003) + bytes(rng.getrandbits(8) for _ in range(32))
    body = imp(rng.choice(["1-1", "1-2"]))
    if kind == "short-urb":
        return kind, body + submit(rng, 1)[:rng.randrange(1, 48)]
    if kind == "command":
        return kind, body + struct.pack(">I", rng.choice([0, 3, 4, 5, 0xFFFFFFFF])) + bytes(44)
    if kind == "huge":
        return kind, body + submit(rng, 1, ep=1, direction=rng.randrange(2),
                                   length=rng.choice([(1 << 20) + 1, 1 << 31, 0xFFFFFFFF]))
    if kind == "huge-control":
        return kind, body + submit(rng, 1, ep=0, direction=0, length=rng.choice([0x10000, 1 << 24]))
    if kind == "iso":
        return kind, body + submit(rng, 1, ep=1, direction=1, packets=rng.randrange(1, 1000))
    if kind == "bad-ep":
        return kind, body + struct.pack(">IIIIIIIIII8s", 1, 1, 0, rng.choice([2, 7, 0xFFFFFFFF]),
                                        rng.choice([1, 16, 0xFFFFFFFF]), 0, 0, 0, 0, 0, bytes(8))
    if kind == "mid-out":  # declares data, sends part of it, vanishes
        n = rng.randrange(10, 4000)
        return kind, body + submit(rng, 1, ep=rng.choice([0, 1]), direction=0, length=n) + bytes(rng.randrange(n))
    if kind == "unlink":
        return kind, body + b"".join(struct.pack(">IIIIII24x", 2, s, 0, 0, 0, rng.getrandbits(32))
                                     for s in range(1, rng.randrange(2, 20)))
    sink = imp("1-2")
    if kind == "random-urbs":  # well-framed, random contents, at the scratch device only
        urbs = b""
        for s in range(1, rng.randrange(2, 30)):
            u = submit(rng, s)
            d, length = struct.unpack_from(">I", u, 12)[0], struct.unpack_from(">I", u, 24)[0]
            urbs += u + (bytes(length) if d == 0 else b"")
        return kind, sink + urbs
    # pending IN URBs, a few unlinked, then the client vanishes
    urbs = b"".join(submit(rng, s, ep=1, direction=1, length=64) for s in range(1, 10))
    return kind, sink + urbs + struct.pack(">IIIIII24x", 2, 99, 0, 0, 0, 3)


def send(port, data, rng):
    s = socket.create_connection(("127.0.0.1", port), timeout=2)
    try:
        s.sendall(data)
        if rng.random() < 0.5:
            s.settimeout(0.02)
            try:
                while s.recv(65536):
                    pass
            except (socket.timeout, TimeoutError, ConnectionError):
                pass
        if rng.random() < 0.5:  # abrupt: RST instead of FIN
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except (ConnectionError, OSError):
        pass
    finally:
        s.close()


def test_malformed_traffic_never_takes_the_server_down(tmp_path):
    log = []
    em = Emulator("stm32f411", "dfu", image=tmp_path / "flash.bin", options={"dialect": "dfuse"})
    sink = Device(DeviceInfo(0x1209, 0x5151, product="sink"), [Sink()])
    rng = random.Random(20240613)
    kinds = set()
    with UsbipServer([em.target, sink], ("127.0.0.1", 0), log=log.append) as server:
        deadline = time.monotonic() + SECONDS
        cases = 0
        while time.monotonic() < deadline and cases < MAX_CASES:
            kind, data = case(rng)
            kinds.add(kind)
            send(server.port, data, rng)
            cases += 1
        time.sleep(0.2)
        assert server._thread.is_alive()
        assert not [line for line in log if "internal error" in line or "Traceback" in line]
        assert any("version" in line for line in log) and any("over the limit" in line for line in log)
        assert cases >= 50 and len(kinds) >= 12

        # a well-formed client still flashes the board, and the scratch device answers
        backend = usbip_client.UsbipBackend(port=server.port)
        dev = usb.core.find(backend=backend, idProduct=0x5151)
        assert dev is not None
        dev.set_configuration()
        assert dev.ctrl_transfer(0xC0, 1, 0, 0, 4) .tobytes() == bytes(4)
        usb.util.dispose_resources(dev)
        image = sample_image("stm32f411", 20 * 1024 + 1, 0x8000, 333, seed=3)
        result = host.flash(image, backend, dialect="dfuse", chip="stm32f411", progress=False)
        assert result.verified
        assert em.memory.read(image.start, 20 * 1024 + 1) == image.segments[0][1]
    em.close()
