"""Issue 19 item 2 through ``bootkit serve``: the board's events from outside the bus.

``bootkit serve`` (USB/IP on loopback, another process) takes SIGUSR1 as the
reset button and SIGUSR2 as the application's magic word; xusb-boot's entry
policy decides what enumerates: the reset button toggles between bootloader
and application, the magic word brings the bootloader back, and the
watchdog starts the application when no host comes within its period.
Another process lists the bus through bootkit's USB/IP client backend.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from bootkit.classes.hid import host
from bootkit.memory import get_chip
from bootkit.transports import usbip_client

PROFILE = """
[product]
name = "t"
chip = "atxmega32a4u"
personality = "hid"
dialect = "xusb"
[hid]
watchdog = {watchdog}
[entry]
triggers = ["blank", "magic", "reset-button", "watchdog"]
"""


@pytest.fixture
def serve(tmp_path):
    procs = []

    def start(watchdog="false"):
        chip = get_chip("atxmega32a4u")
        (tmp_path / "flash.bin").write_bytes(b"\x0c\x94" + b"\xff" * (chip.flash_size - 2))  # an application
        (tmp_path / "p.toml").write_text(PROFILE.format(watchdog=watchdog))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        proc = subprocess.Popen([sys.executable, "-m", "bootkit", "serve", "--product", "p.toml", "--transport",
                                 "usbip", "--listen", "127.0.0.1:0", "--image", "flash.bin"], cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        procs.append(proc)
        line = proc.stdout.readline()
        if "exporting" not in line:
            proc.kill()
            raise AssertionError(f"serve did not start: {line!r} {proc.stderr.read()}")
        proc.stdout.readline()  # "serving hid ..."
        return proc, int(line.rsplit(":", 1)[1])

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()


def listed(port) -> list[str]:
    backend = usbip_client.UsbipBackend(port=port)
    try:
        return [line for line in host.list_devices(backend) if " xusb " in line]
    finally:
        backend.close()


def eventually(port, want: int, limit: float = 10.0) -> list[str]:
    deadline = time.monotonic() + limit
    while True:
        lines = listed(port)
        if len(lines) == want or time.monotonic() > deadline:
            return lines
        time.sleep(0.1)


def test_reset_button_and_magic_word(serve):
    proc, port = serve()
    assert len(eventually(port, 1)) == 1  # started in the bootloader (as an emulator always is)
    proc.send_signal(signal.SIGUSR1)  # reset button while the bootloader runs: the application
    assert eventually(port, 0) == []
    proc.send_signal(signal.SIGUSR1)  # pressed while the application runs: the bootloader
    assert len(eventually(port, 1)) == 1
    proc.send_signal(signal.SIGUSR1)
    assert eventually(port, 0) == []
    proc.send_signal(signal.SIGUSR2)  # the application's magic word and software reset
    [line] = eventually(port, 1)
    assert 'mcu="atxmega32a4u"' in line


def test_watchdog_starts_the_application_without_a_host(serve):
    proc, port = serve(watchdog="0.5")
    time.sleep(2.0)  # no host: no SOF within 0.5 s
    assert eventually(port, 0) == []
