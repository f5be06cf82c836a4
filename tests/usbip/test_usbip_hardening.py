"""USB/IP server under abuse: a busy device, stalled and half-open connections,
the connection limit, file-descriptor exhaustion (issue 17 item 5).

Every wait here ends on an event (a socket closing, a log line appearing) with
a generous deadline that only bounds a hang; nothing asserts on elapsed time.
"""

from __future__ import annotations

import re
import socket
import struct
import time

import pytest
import usb.core

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
