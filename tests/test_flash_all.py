"""`bootkit flash --all` against 8 emulated devices on one USB/IP server, and `flash` without
--via (issue 21 items 3-4): every device flashed, one JSON object each, and each device's
flash holds the file afterwards.  Wall time is printed, not asserted (benchmarks/bench_flash_all.py
measures all-8 against one device)."""

from __future__ import annotations

import json
import time

import pytest

from bootkit.cli import main
from bootkit.emulator import Emulator
from bootkit.formats import load
from bootkit.memory import get_chip
from bootkit.transports.usbip import UsbipServer

SAMPLE = "examples/firmware/sample-stm32f411.hex"


@pytest.fixture
def served():
    """Start ``n`` emulated DfuSe devices (distinct serial numbers) on one USB/IP server."""
    made: list = []

    def start(n: int, chip: str = "stm32f411"):
        ems = [Emulator(get_chip(chip), "dfu", options={"serial": f"W2B{i:02d}"}) for i in range(n)]
        server = UsbipServer([em.target for em in ems], ("127.0.0.1", 0), log=None).start()
        made.append((server, ems))
        return server, ems

    yield start
    for server, ems in made:
        server.close()
        for em in ems:
            em.close()


def _holds(em, image) -> bool:
    return all(em.memory.read(s, len(d)) == d for s, d in image.segments)


def test_flash_all_eight_devices_one_json_object_each(served, capsys):
    server, ems = served(8)
    image = load(SAMPLE)
    t0 = time.perf_counter()
    code = main(["flash", SAMPLE, "--all", "--json", "--usbip", f"127.0.0.1:{server.port}", "--no-leave"])
    wall = time.perf_counter() - t0
    out = capsys.readouterr().out.strip().splitlines()
    print(f"flash --all: 8 devices in {wall:.2f} s")
    assert code == 0, out
    objects = [json.loads(line) for line in out]
    assert len(objects) == 8
    assert sorted(o["serial"] for o in objects) == [f"W2B{i:02d}" for i in range(8)]
    assert all(o["ok"] and o["verified"] and o["personality"] == "dfu/dfuse" for o in objects)
    assert all(_holds(em, image) for em in ems)


def test_flash_all_nonzero_when_one_fails(served, capsys, tmp_path):
    # an image for another chip: every device refuses it, each says so, exit non-zero
    server, ems = served(2)
    code = main(["flash", "examples/firmware/sample-atmega32u4.hex", "--all", "--json", "--usbip",
                 f"127.0.0.1:{server.port}", "--no-leave", "--address", "0"])
    out = capsys.readouterr()
    assert code != 0
    objects = [json.loads(line) for line in out.out.strip().splitlines()]
    assert len(objects) == 2 and not any(o["ok"] for o in objects)


def test_flash_without_via_uses_the_one_device(served, capsys):
    server, ems = served(1)
    assert main(["flash", SAMPLE, "--usbip", f"127.0.0.1:{server.port}", "--no-leave"]) == 0
    captured = capsys.readouterr()
    assert "using dfu/dfuse at " in captured.err
    assert "via dfu/dfuse" in captured.out and _holds(ems[0], load(SAMPLE))


def test_flash_without_via_several_lists_them_exit_2(served, capsys):
    server, _ems = served(2)
    assert main(["flash", SAMPLE, "--usbip", f"127.0.0.1:{server.port}"]) == 2
    err = capsys.readouterr().err
    assert "2 devices found" in err and err.count("dfu/dfuse: ") == 2


def test_flash_without_via_none_found_exit_1(served, capsys):
    server = UsbipServer([], ("127.0.0.1", 0), log=None).start()
    try:
        assert main(["flash", SAMPLE, "--usbip", f"127.0.0.1:{server.port}"]) == 1
    finally:
        server.close()
    err = capsys.readouterr().err
    assert "no device found: looked for bootloaders of any personality on the USB/IP server" in err


def test_read_verify_reset_without_via_use_the_one_device(served, capsys, tmp_path):
    server, ems = served(1)
    usbip = ["--usbip", f"127.0.0.1:{server.port}"]
    assert main(["flash", SAMPLE, *usbip, "--no-leave"]) == 0
    back = tmp_path / "back.bin"
    assert main(["read", str(back), *usbip, "--start", "0x08000000", "--length", "256"]) == 0
    assert main(["verify", SAMPLE, *usbip]) == 0
    captured = capsys.readouterr()
    assert captured.err.count("using dfu/dfuse at ") == 3 and "verified" in captured.out
    assert back.read_bytes() == ems[0].memory.read(0x08000000, 256)


def test_erase_without_via_several_lists_them_exit_2(served, capsys):
    server, _ems = served(2)
    assert main(["erase", "--usbip", f"127.0.0.1:{server.port}"]) == 2
    err = capsys.readouterr().err
    assert "2 devices found" in err and err.count("dfu/dfuse: ") == 2
