"""A DfuSe device behind other personalities, over USB/IP (issue 23 items 2 and 3).

The back-end is ``serve dfu --dialect dfuse`` of a simulated stm32f411; the front is
another personality whose memory is that device, reached through our own DFU host
client (``--target usbip://...``).  The host flashes the front; the DfuSe device's
image must then hold the firmware, and every failure of the back-end must reach the
host as the front protocol's own error.
"""

from __future__ import annotations

import json
import random

import pytest

from bootkit.api import load_image
from bootkit.cli import main
from bootkit.classes.dfu.memory import DfuseMemory
from bootkit.emulator import Emulator
from bootkit.memory import get_chip
from bootkit.memory.backends import open_target

CHIP = get_chip("stm32f411")


def holds(flash: bytes, image, chip=CHIP) -> bool:
    return all(flash[a - chip.flash_start:a - chip.flash_start + len(d)] == d for a, d in image.segments)


@pytest.fixture
def big_firmware(tmp_path):
    """200 KiB of firmware: several batches of the back-end's writer (32 KiB each)."""
    data = bytes(random.Random(23).getrandbits(8) for _ in range(200 * 1024))
    (tmp_path / "big.bin").write_bytes(data)
    path = tmp_path / "big.uf2"
    assert main(["convert", str(tmp_path / "big.bin"), str(path), "--base", "0x08000000", "--family", "stm32f4"]) == 0
    return path, load_image(path)


@pytest.fixture
def firmware(tmp_path):
    path = tmp_path / "fw.uf2"
    assert main(["sample", "stm32f411", "-o", str(path)]) == 0
    return path, load_image(path)  # what the host flashes, padding of the UF2 blocks included


def test_msc_in_front_of_dfuse_over_usbip(usbip_servers, firmware, tmp_path, capsys):
    """The must-show: serve dfu (DfuSe) on USB/IP, serve msc --target usbip://... on a second
    port, drop a UF2 through the second: the DfuSe device's image is the firmware, and
    CURRENT.UF2 read through the drive is too."""
    fw, image = firmware
    back = Emulator(CHIP, "dfu", options={"dialect": "dfuse"}, image=tmp_path / "back.bin")
    s1 = usbip_servers([back.target])
    memory = open_target(f"usbip://127.0.0.1:{s1.port}", CHIP)
    assert isinstance(memory, DfuseMemory)
    # the layout is the device's own DfuSe string (4x16K, 64K, 3x128K), not our database's copy
    assert memory.layout.flash.sectors == ((4, 16384), (1, 65536), (3, 131072))
    front = Emulator(CHIP, "msc", backend=memory)
    s2 = usbip_servers([front.target])
    try:
        assert main(["flash", str(fw), "--via", "msc", "--usbip", f"127.0.0.1:{s2.port}", "--no-progress"]) == 0
        out = capsys.readouterr().out
        assert "CURRENT.UF2 read back: 8960 bytes match" in out
        # the back-end confirmed its leave (manifest) before the drive said the update completed
        assert "leave: manifested" in back.events and memory.app_valid
        assert holds(back.memory.flash_bytes(), image)
        # the drive left for the application; the application asks for its bootloader again
        front.press("magic")
        assert main(["read", str(tmp_path / "cur.bin"), "--via", "msc", "--usbip", f"127.0.0.1:{s2.port}"]) == 0
        current = (tmp_path / "cur.bin").read_bytes()
        assert current == back.memory.flash_bytes() and holds(current, image)
    finally:
        front.close()
        back.close()
    # the back-end's image file: the firmware, and the application valid
    assert holds((tmp_path / "back.bin").read_bytes(), image)
    assert json.loads((tmp_path / "back.bin.state.json").read_text())["app_valid"] is True


def test_program_holds_at_most_one_transfer(usbip_servers, tmp_path):
    """Bounded memory: whatever the image's size, the back-end holds what one round trip
    carries ahead (16 blocks of wTransferSize 2048) at most; the rest is on the device."""
    back = Emulator(CHIP, "dfu", options={"dialect": "dfuse"})
    s1 = usbip_servers([back.target])
    memory = open_target(f"usbip://127.0.0.1:{s1.port}", CHIP)
    assert isinstance(memory, DfuseMemory)
    try:
        data = bytes((i * 7 + 3) & 0xFF for i in range(256 * 1024 + 100))
        start = CHIP.flash_start
        for s, size in memory.layout.flash.sector_bounds():
            if s < start + len(data):
                memory.erase(s)
        most = 0
        for off in range(0, len(data), 256):  # as a UF2 drive programs: 256 bytes a block
            memory.program(start + off, data[off:off + 256])
            most = max(most, len(memory._pending))
        assert memory.transfer_size == 2048 and most <= memory.hold == 16 * 2048
        memory.flush()
        assert back.memory.flash_bytes()[:len(data)] == data
        assert memory.read(start + 1000, 3000) == data[1000:4000]
    finally:
        memory.close()
        back.close()


def test_dfu_front_reports_a_killed_back_end_and_a_retry_succeeds(usbip_servers, served, big_firmware, tmp_path,
                                                                    monkeypatch, capsys):
    """The back-end process is killed in the middle of the download: the DFU host flashing the
    front sees the front's DFU error status (not a success), the back-end's image is marked
    invalid (it comes back in its bootloader), and the same flash again succeeds."""
    fw, image = big_firmware
    back = served("dfu", "--chip", "stm32f411", "--dialect", "dfuse", "--image", str(tmp_path / "back.bin"),
                  "--listen", "127.0.0.1:0")
    port = back.port
    memory = open_target(f"usbip://127.0.0.1:{port}", CHIP)
    assert isinstance(memory, DfuseMemory)
    front = Emulator(CHIP, "dfu", options={"dialect": "dfuse"}, backend=memory)
    s2 = usbip_servers([front.target])
    batches = []
    real_write = memory._write_batch

    def write_then_die(at, data):  # the writer thread, sending a batch to the back-end
        batches.append(at)
        if len(batches) == 3 and back.proc.poll() is None:
            back.kill()  # SIGKILL: no write-back, no goodbye on the socket
        real_write(at, data)

    monkeypatch.setattr(memory, "_write_batch", write_then_die)
    try:
        code = main(["flash", str(fw), "--via", "dfu", "--usbip", f"127.0.0.1:{s2.port}", "--no-progress"])
        err = capsys.readouterr().err.strip()
        assert code == 1 and len(err.splitlines()) == 1
        assert "errWRITE" in err, err  # the front's own protocol: DFU status errWRITE
        assert not memory.app_valid
        # what the killed back-end left: not a valid application
        state = tmp_path / "back.bin.state.json"
        assert not state.exists() or json.loads(state.read_text()).get("app_valid") is not True
        # it comes back (same port, same image file) and the same flash succeeds
        again = served("dfu", "--chip", "stm32f411", "--dialect", "dfuse", "--image", str(tmp_path / "back.bin"),
                       "--listen", f"127.0.0.1:{port}")
        assert main(["flash", str(fw), "--via", "dfu", "--usbip", f"127.0.0.1:{s2.port}", "--no-progress"]) == 0
        assert memory.app_valid
    finally:
        front.close()
    out = again.stop()
    assert "flash written back (application valid)" in out
    assert holds((tmp_path / "back.bin").read_bytes(), image)


def test_msc_front_never_reports_success_when_its_back_end_is_killed(usbip_servers, served, big_firmware, tmp_path,
                                                                      monkeypatch, capsys):
    """The same kill behind the UF2 drive: the drop fails (exit 1, one line), never 'verified'."""
    fw, image = big_firmware
    back = served("dfu", "--chip", "stm32f411", "--dialect", "dfuse", "--image", str(tmp_path / "back.bin"),
                  "--listen", "127.0.0.1:0")
    memory = open_target(f"usbip://127.0.0.1:{back.port}", CHIP)
    assert isinstance(memory, DfuseMemory)
    front = Emulator(CHIP, "msc", backend=memory)
    s2 = usbip_servers([front.target])
    real_write = memory._write_batch
    batches = []

    def write_then_die(at, data):
        batches.append(at)
        if len(batches) == 2 and back.proc.poll() is None:
            back.kill()
        real_write(at, data)

    monkeypatch.setattr(memory, "_write_batch", write_then_die)
    try:
        code = main(["flash", str(fw), "--via", "msc", "--usbip", f"127.0.0.1:{s2.port}", "--no-progress"])
        captured = capsys.readouterr()
        print("MSC FAULT:", captured.err.strip())
        assert code == 1 and len(captured.err.strip().splitlines()) == 1
        assert "verified" not in captured.out
        assert not memory.app_valid
    finally:
        front.close()


def test_the_front_never_uses_the_device_while_the_writer_thread_does(usbip_servers, monkeypatch):
    """Every use of the DfuSe device from the front's thread waits for the writer thread's
    job (a write batch or a read ahead) first: two threads' requests interleaved on one DFU
    interface (the leave after is_blank() ran into a read ahead) stall the device."""
    import threading
    import time

    back = Emulator(CHIP, "dfu", options={"dialect": "dfuse"})
    s1 = usbip_servers([back.target])
    memory = open_target(f"usbip://127.0.0.1:{s1.port}", CHIP)
    assert isinstance(memory, DfuseMemory)
    real_upload, real_device = memory._upload, memory._device
    overlaps = []

    def slow_upload(d, address, want):
        if threading.current_thread() is memory._writer:
            # slow enough that the front's thread reaches the device first unless it waits:
            # a generous margin, the front's next step is microseconds away
            time.sleep(0.3)
        return real_upload(d, address, want)

    def watched_device():
        if threading.current_thread() is not memory._writer and memory._queue.unfinished_tasks:
            overlaps.append(memory._queue.unfinished_tasks)
        return real_device()

    monkeypatch.setattr(memory, "_upload", slow_upload)
    monkeypatch.setattr(memory, "_device", watched_device)
    try:
        memory.erase(CHIP.flash_start)
        memory.program(CHIP.flash_start, b"\x01\x02\x03\x04" * 1024)
        memory.manifest()  # flush, is_blank() (a read that starts a read ahead), the leave
        assert memory.app_valid and not overlaps
    finally:
        memory.close()
        back.close()
