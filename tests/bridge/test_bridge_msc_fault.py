"""The UF2 drive in front of a DfuSe device whose process is killed mid-drop (issue 23 item 2,
fault cases): the drive ends the WRITE(10) that met the dead target with CHECK CONDITION,
MEDIUM ERROR / WRITE ERROR (SBC-3, SPC-4), so the host's copy fails with a write error (not a
transport error), nothing says "verified", the target's application stays invalid, and the
same drop succeeds once the target is back."""

from __future__ import annotations

import json
import random

import pytest

from bootkit.api import load_image
from bootkit.classes.dfu.memory import DfuseMemory
from bootkit.classes.msc.protocol import ASC_WRITE_ERROR, MEDIUM_ERROR
from bootkit.cli import main
from bootkit.emulator import Emulator
from bootkit.memory import get_chip
from bootkit.memory.backends import open_target

CHIP = get_chip("stm32f411")


@pytest.fixture
def big_firmware(tmp_path):
    """200 KiB: several batches of the back-end's writer (32 KiB each), so the kill lands mid-file."""
    data = bytes(random.Random(231).getrandbits(8) for _ in range(200 * 1024))
    (tmp_path / "big.bin").write_bytes(data)
    path = tmp_path / "big.uf2"
    assert main(["convert", str(tmp_path / "big.bin"), str(path), "--base", "0x08000000", "--family", "stm32f4"]) == 0
    return path, load_image(path)


def test_a_killed_back_end_is_a_scsi_write_error_and_a_retry_succeeds(usbip_servers, served, big_firmware,
                                                                        tmp_path, monkeypatch, capsys):
    fw, image = big_firmware
    back = served("dfu", "--chip", "stm32f411", "--dialect", "dfuse", "--image", str(tmp_path / "back.bin"),
                  "--listen", "127.0.0.1:0")
    port = back.port
    memory = open_target(f"usbip://127.0.0.1:{port}", CHIP)
    assert isinstance(memory, DfuseMemory)
    front = Emulator(CHIP, "msc", backend=memory)
    s2 = usbip_servers([front.target])
    log: list[str] = []  # the USB/IP server's lines: a device exception (EPROTO) shows here
    s2.log = log.append
    engine = front.target.device.functions[0].target  # the drive's SCSI target: its sense data is what the host asks for
    senses = []
    real_set_sense = engine.set_sense
    monkeypatch.setattr(engine, "set_sense", lambda key, asc: (senses.append((key, asc)), real_set_sense(key, asc)))
    batches = []
    real_write = memory._write_batch

    def write_then_die(at, data):  # the writer thread, sending a batch to the back-end
        batches.append(at)
        if len(batches) == 2 and back.proc.poll() is None:
            back.kill()  # SIGKILL: no write-back, no goodbye on the socket
        real_write(at, data)

    monkeypatch.setattr(memory, "_write_batch", write_then_die)
    try:
        code = main(["flash", str(fw), "--via", "msc", "--usbip", f"127.0.0.1:{s2.port}", "--no-progress"])
        captured = capsys.readouterr()
        err = captured.err.strip()
        assert code == 1 and len(err.splitlines()) == 1, err
        assert "verified" not in captured.out
        # the drive's own protocol: the WRITE(10) ended in MEDIUM ERROR / WRITE ERROR ...
        assert (MEDIUM_ERROR, ASC_WRITE_ERROR) in senses, senses
        # ... and the host said so (not a USB/IP EPROTO turned into "Input/Output Error")
        assert "sense key 0x3 ASC 0x0C ASCQ 0x00 (medium error: write error)" in err, "\n".join([err, *log])
        assert not memory.app_valid
        state = tmp_path / "back.bin.state.json"
        assert not state.exists() or json.loads(state.read_text()).get("app_valid") is not True
        # the target comes back (same port, same image file): the same drop succeeds
        again = served("dfu", "--chip", "stm32f411", "--dialect", "dfuse", "--image", str(tmp_path / "back.bin"),
                       "--listen", f"127.0.0.1:{port}")
        # The drive reported no update, so it is still the bootloader: a needless "magic" press
        # re-enumerated it under the retry (a flaky retry on a loaded machine).
        assert front.mode == "bootloader"
        assert main(["flash", str(fw), "--via", "msc", "--usbip", f"127.0.0.1:{s2.port}", "--no-progress"]) == 0
        assert "verified" in capsys.readouterr().out or memory.app_valid
        assert memory.app_valid
    finally:
        front.close()
    out = again.stop()
    assert "flash written back (application valid)" in out
    flash = (tmp_path / "back.bin").read_bytes()
    assert all(flash[a - CHIP.flash_start:a - CHIP.flash_start + len(d)] == d for a, d in image.segments)
