"""USB/IP server under abuse: a busy device, stalled and half-open connections,
the connection limit, file-descriptor exhaustion (issue 17 item 5).

Every wait here ends on an event (a socket closing, a log line appearing) with
a generous deadline that only bounds a hang; nothing asserts on elapsed time.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import usb.core
import usb.util

from bootkit.classes.dfu import host
from bootkit.cli import main
from bootkit.emulator import Emulator
from bootkit.formats import save
from bootkit.samples import sample_image
from bootkit.transports import usbip_client

VERSION = 0x0111
HANG = 60.0  # bounds a wait that should end on its own much sooner (a loaded 2-core machine)


def wait_for(predicate, what: str, limit: float = HANG):
    deadline = time.monotonic() + limit
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting after {limit} s for {what}")
        time.sleep(0.01)


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server closed this connection (EOF or reset), without waiting."""
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionError:
        return True


def import_request(busid: str = "1-1") -> bytes:
    return struct.pack(">HHI32s", VERSION, 0x8003, 0, busid.encode())


@pytest.fixture
def log():
    return []


@pytest.fixture
def dfuse(tmp_path):
    em = Emulator("stm32f411", "dfu", image=tmp_path / "flash.bin", options={"dialect": "dfuse"})
    yield em
    em.close()


def flash_small(port: int, seed: int = 5):
    image = sample_image("stm32f411", 3000, 0x4000, 77, seed=seed)
    backend = usbip_client.UsbipBackend(port=port)
    try:
        return host.flash(image, backend, dialect="dfuse", chip="stm32f411", progress=False)
    finally:
        backend.close()


# --------------------------------------------------------------------------
# one importer per device: the second one is told who holds it


def test_a_busy_device_names_its_holder(tmp_path, dfuse, log, usbip_servers, capsys, monkeypatch):
    server = usbip_servers([dfuse.target], log=log.append)
    first = usbip_client.UsbipBackend(port=server.port)
    held = usb.core.find(backend=first)  # listing imports the device (and keeps it while held)
    assert held is not None
    holder = next(m.group(1) for line in log if (m := re.search(r"usbip: (\S+) imported 1-1", line)))
    assert holder.startswith("127.0.0.1:")

    # the wire: ST_DEV_BUSY (usbip_common.h), and the devlist names the holder
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=HANG)
    raw.sendall(import_request())
    assert raw.recv(8) == struct.pack(">HHI", VERSION, 0x0003, 2)  # ST_DEV_BUSY
    raw.close()
    assert usbip_client.list_devices(port=server.port)[0].path.endswith(f" imported by {holder}")

    # our client: one line naming the holder, from pyusb's find and from a flash
    second = usbip_client.UsbipBackend(port=server.port)
    with pytest.raises(usbip_client.UsbipBusy) as exc:
        usb.core.find(backend=second)
    assert str(exc.value) == f"device busy: imported by {holder}"
    image = sample_image("stm32f411", 2000, 0x4000, 9)
    with pytest.raises(usbip_client.UsbipBusy, match=re.escape(f"device busy: imported by {holder}")):
        host.flash(image, second, dialect="dfuse", chip="stm32f411", progress=False)

    # and the command line prints it as its one line, exit 1
    fw = tmp_path / "fw.hex"
    save(image, fw)
    monkeypatch.setattr(usbip_client, "_backends", {})
    code = main(["flash", str(fw), "--via", "dfu", "--dialect", "dfuse", "--chip", "stm32f411",
                 "--usbip", f"127.0.0.1:{server.port}"])
    err = capsys.readouterr().err
    assert code == 1 and err == f"bootkit: failed: device busy: imported by {holder}\n", err

    # once the holder lets go, the same client flashes
    del held
    first.close()
    assert flash_small(server.port).verified


# --------------------------------------------------------------------------
# stalled and half-open connections


def half_open(port: int, count: int) -> list[socket.socket]:
    """``count`` connections that each send half an OP_REQ header, then nothing."""
    socks = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=HANG)
        s.sendall(struct.pack(">HH", VERSION, 0x8003))  # 4 of the 8 bytes of op_common
        socks.append(s)
    return socks


def test_200_stalled_connections_do_not_stop_a_flash_and_are_closed_after_the_header_timeout(
        dfuse, log, usbip_servers):
    # the header timeout: well above what a flash takes here (measured), so that the
    # stalled connections are still open while it runs, however loaded the machine
    baseline = usbip_servers([dfuse.target])
    started = time.monotonic()
    assert flash_small(baseline.port, seed=1).verified
    timeout = max(2.0, 20 * (time.monotonic() - started))
    baseline.close()

    server = usbip_servers([dfuse.target], log=log.append, header_timeout=timeout, max_connections=256)
    stalled = half_open(server.port, 200)
    try:
        wait_for(lambda: len(server._connections) >= 200, "the server to hold the 200 connections")
        assert flash_small(server.port).verified
        wait_for(lambda: all(closed_by_server(s) for s in stalled), "the server to close the stalled connections")
    finally:
        for s in stalled:
            s.close()
    timeouts = [line for line in log if "no complete request within" in line]
    assert timeouts and f"within {timeout:g} s" in timeouts[0]
    assert len(timeouts) <= 4, timeouts  # one line, then a summary per 10 s window: not 200 lines


def test_at_the_limit_silent_connections_make_room_for_a_real_client(dfuse, log, usbip_servers):
    """Default limit (64): 200 silent connections cannot lock a real client out: the
    oldest ones that sent no request are closed for the newcomers."""
    server = usbip_servers([dfuse.target], log=log.append)
    stalled = half_open(server.port, 200)
    try:
        wait_for(lambda: sum(closed_by_server(s) for s in stalled) >= 200 - 64, "room made under the limit")
        assert flash_small(server.port).verified
        assert len(server._connections) <= 64  # the default limit
    finally:
        for s in stalled:
            s.close()
    assert any("closed to make room" in line for line in log)
    assert len([line for line in log if "to make room" in line]) <= 4


def test_over_the_limit_of_imports_new_connections_are_refused_with_one_line(tmp_path, log, usbip_servers):
    ems = [Emulator("stm32f411", "dfu", options={"dialect": "dfuse"}) for _ in range(2)]
    server = usbip_servers([em.target for em in ems], log=log.append, max_connections=2)
    holders = []
    for busid in ("1-1", "1-2"):
        s = socket.create_connection(("127.0.0.1", server.port), timeout=HANG)
        s.sendall(import_request(busid))
        reply = b""
        while len(reply) < 8 + 312:
            reply += s.recv(8 + 312 - len(reply))
        assert struct.unpack_from(">I", reply, 4)[0] == 0
        holders.append(s)
    refused = [socket.create_connection(("127.0.0.1", server.port), timeout=HANG) for _ in range(30)]
    wait_for(lambda: all(closed_by_server(s) for s in refused), "the server to close the connections over the limit")
    assert not any(closed_by_server(s) for s in holders)  # the imports carry on
    holders.pop().close()  # one slot free again
    wait_for(lambda: len(server._connections) < 2, "the server to see the import end")
    s = socket.create_connection(("127.0.0.1", server.port), timeout=HANG)
    s.sendall(import_request("1-2"))
    assert struct.unpack(">HHI", s.recv(8)) == (VERSION, 0x0003, 0)
    server.close()  # says what it counted
    for s in refused + holders + [s]:
        s.close()
    lines = [line for line in log if "over the limit" in line or "(the limit)" in line]
    assert re.fullmatch(r"usbip: refused 127\.0\.0\.1:\d+: 2 connections open \(the limit\), each holding an import",
                        lines[0]), lines
    # then one summary per 10 s window (one, unless connecting took that long)
    summaries = [re.fullmatch(r"usbip: refused (\d+) more connections over the limit of 2 in the last 10 s", line)
                 for line in lines[1:]]
    assert summaries and all(summaries) and sum(int(m.group(1)) for m in summaries) == 29, lines
    for em in ems:
        em.close()


def test_an_importer_stalled_mid_urb_is_cut_and_a_quiet_one_is_kept(log, usbip_servers):
    ems = [Emulator("stm32f411", "dfu", options={"dialect": "dfuse"}) for _ in range(2)]
    server = usbip_servers([em.target for em in ems], log=log.append, urb_timeout=1.0)

    def imported(busid):
        s = socket.create_connection(("127.0.0.1", server.port), timeout=HANG)
        s.sendall(import_request(busid))
        reply = b""
        while len(reply) < 8 + 312:
            reply += s.recv(8 + 312 - len(reply))
        assert struct.unpack_from(">I", reply, 4)[0] == 0
        return s

    quiet = imported("1-1")  # then sends nothing at all, for longer than the URB timeout
    stalled = imported("1-2")
    stalled.sendall(bytes(24))  # half a USBIP_CMD_SUBMIT header
    wait_for(lambda: closed_by_server(stalled), "the server to cut the stalled importer")
    assert not closed_by_server(quiet)  # idle longer than the stalled one, and kept
    assert any("sent part of a URB (24 of 48 bytes) and nothing more for 1 s" in line for line in log)
    again = imported("1-2")  # the stalled import released the device
    for s in (quiet, stalled, again):
        s.close()
    server.close()
    for em in ems:
        em.close()


def test_an_importer_that_leaves_its_replies_unread_is_cut(log, usbip_servers, dfuse):
    server = usbip_servers([dfuse.target], log=log.append, urb_timeout=1.0)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window: the server's replies back up soon
    s.settimeout(HANG)
    s.connect(("127.0.0.1", server.port))
    s.sendall(import_request())
    reply = b""
    while len(reply) < 8 + 312:
        reply += s.recv(8 + 312 - len(reply))
    assert struct.unpack_from(">I", reply, 4)[0] == 0
    # GET_DESCRIPTOR(configuration) URBs, never reading a reply, until the server stops reading them
    get_config = struct.pack("<BBHHH", 0x80, 6, 0x0200, 0, 255)
    batch = b"".join(struct.pack(">IIIIIIIIII8s", 1, seq, 0x00010001, 1, 0, 0x200, 255, 0, 0, 0, get_config)
                     for seq in range(1, 101))
    s.setblocking(False)
    wait_for(lambda: _send_until_full(s, batch), "the server to stop reading")
    wait_for(lambda: any("left its replies unread for 1 s" in line for line in log), "the server to cut it")
    s.close()
    assert flash_small(server.port).verified  # the device was released


def _send_until_full(sock: socket.socket, data: bytes) -> bool:
    try:
        for _ in range(1000):
            sock.send(data)
    except (BlockingIOError, ConnectionError):  # full, or cut already
        return True
    return False


# --------------------------------------------------------------------------
# file-descriptor exhaustion

FD_SERVER = textwrap.dedent("""
    import os, resource, sys
    from bootkit.emulator import Emulator
    from bootkit.transports import usbip

    em = Emulator("stm32f411", "dfu", image=sys.argv[1], options={"dialect": "dfuse"})
    # room for the loop's own descriptors and about 20 connections, far below the
    # connection limit (64): accept() meets EMFILE first
    spare = int(sys.argv[2])
    used = len(os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (used + spare, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    try:
        usbip.serve([em.target], ("127.0.0.1", 0), log=lambda line: print(line, file=sys.stderr, flush=True),
                    ready=lambda address: print(address[1], flush=True))
    finally:
        em.close()
    print("stopped", flush=True)
""")


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts its descriptors in /proc (Linux)")
def test_at_the_fd_limit_the_server_logs_a_few_lines_keeps_serving_and_recovers(tmp_path):
    script = tmp_path / "fd_server.py"
    script.write_text(FD_SERVER)
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "flash.bin"), "24"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True)
    reader.start()
    flood: list[socket.socket] = []
    try:
        port = int(proc.stdout.readline())
        backend = usbip_client.UsbipBackend(port=port)
        held = usb.core.find(backend=backend)  # an import made before the flood
        assert held is not None
        for _ in range(100):  # more than the server has descriptors for: the rest wait in its backlog
            flood.append(socket.create_connection(("127.0.0.1", port), timeout=HANG))
        wait_for(lambda: any("Too many open files" in line for line in lines), "the server to hit EMFILE")
        # the connection made before goes on working meanwhile
        assert len(held.ctrl_transfer(0x80, 6, 0x0100, 0, 18)) == 18
        usb.util.dispose_resources(held)
        del held
        backend.close()
        for s in flood:
            s.close()
        flood.clear()
        assert flash_small(port).verified  # accepted again once descriptors are free
    finally:
        for s in flood:
            s.close()
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=HANG)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        reader.join(HANG)
    assert proc.returncode == 0 and "stopped" in out, lines
    text = "".join(lines)
    assert "Traceback" not in text and "out of system resource" not in text, text[-3000:]
    assert sum("cannot accept connections" in line for line in lines) == 1, text
    assert len(lines) < 20, text
