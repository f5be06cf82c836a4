"""Interop: avrdude (a tool nobody here wrote) against the AVR109 engine on a pty.

Skipped only when avrdude is absent and CI is unset; under CI=true they run
(and fail without avrdude).
"""

import os
import shutil
import subprocess

import pytest

from bootkit.classes.cdc.avr109 import Avr109Engine
from bootkit.formats import load, save
from bootkit.formats.image import Image
from bootkit.memory import SimulatedFlash, get_chip
from bootkit.memory.chips import EEPROM_BASE
from bootkit.samples import named_sample, sample_image
from bootkit.transports.pty import pty_server

AVRDUDE = shutil.which("avrdude")
pytestmark = pytest.mark.skipif(AVRDUDE is None and not os.environ.get("CI"),
                                reason="avrdude is not installed (apt-get install avrdude)")


def avrdude(port, *args, part="m32u4", programmer="avr109", timeout=120):
    cmd = [AVRDUDE or "avrdude", "-c", programmer, "-p", part, "-P", port, "-b", "57600", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}"
    return r


def reference(image: Image, chip) -> bytes:
    """The HEX placed on erased (0xFF) flash: what the chip must hold afterwards."""
    flash = bytearray(b"\xff" * chip.flash_size)
    for s, d in image.segments:
        flash[s:s + len(d)] = d
    return bytes(flash)


@pytest.fixture
def board():
    def make(chip_name="atmega32u4"):
        chip = get_chip(chip_name)
        mem = SimulatedFlash(chip)
        return chip, mem, Avr109Engine(mem)
    return make


@pytest.mark.parametrize("programmer", ["avr109", "butterfly"])
@pytest.mark.parametrize("no_erase", [False, True], ids=["auto-erase", "-D"])
def test_avrdude_writes_verifies_and_reads_back(tmp_path, board, programmer, no_erase):
    chip, mem, eng = board()
    _, image = named_sample("sample-atmega32u4")
    fw = tmp_path / "fw.hex"
    save(image, fw)
    with pty_server(eng) as srv:
        extra = ["-D"] if no_erase else []
        r = avrdude(srv.slave_path, *extra, "-U", f"flash:w:{fw}:i", programmer=programmer)
        assert "verified" in r.stderr
        assert mem.flash_bytes() == reference(image, chip)
        assert mem.app_valid  # avrdude's 'E' manifested the image
        back = tmp_path / "back.hex"
        avrdude(srv.slave_path, "-U", f"flash:r:{back}:i", programmer=programmer)
    got = load(back)
    # avrdude drops trailing 0xFF; compare over the image's span
    assert got.tobytes(0, image.end) == reference(image, chip)[:image.end]
    assert srv.sessions == 2


def test_avrdude_eeprom_write_and_fuse_read(tmp_path, board):
    chip, mem, eng = board()
    ee = tmp_path / "ee.hex"
    data = bytes((i * 13) & 0xFF for i in range(100))
    save(Image([(0x20, data)]), ee)
    with pty_server(eng) as srv:
        avrdude(srv.slave_path, "-U", f"eeprom:w:{ee}:i")
        r = avrdude(srv.slave_path, "-U", "lfuse:r:-:h", "-U", "hfuse:r:-:h", "-U", "efuse:r:-:h", "-q", "-q")
        eeback = tmp_path / "eeback.hex"
        avrdude(srv.slave_path, "-U", f"eeprom:r:{eeback}:i")
    assert mem.read(EEPROM_BASE + 0x20, 100) == data
    assert mem.read(EEPROM_BASE, 0x20) == b"\xff" * 0x20
    assert r.stdout.split() == ["0x5e", "0x99", "0xf3"]
    assert load(eeback).tobytes(0x20, 0x20 + 100) == data


def test_avrdude_m2560_image_over_128k_uses_the_h_command(tmp_path, board):
    chip, mem, eng = board("atmega2560")
    image = sample_image(chip, code_size=150 * 1024 + 6, data_offset=0x3C000, data_size=300)
    assert image.end > 128 * 1024
    fw = tmp_path / "big.hex"
    save(image, fw)
    seen = []
    feed = eng.feed
    eng.feed = lambda data: (seen.append(data[:1]), feed(data))[1]
    with pty_server(eng) as srv:
        avrdude(srv.slave_path, "-U", f"flash:w:{fw}:i", part="m2560", timeout=300)
    assert b"H" in seen
    assert mem.flash_bytes() == reference(image, chip)


def test_avrdude_cannot_write_the_bootloader_section(tmp_path, board):
    chip, mem, eng = board()
    fw = tmp_path / "boot.hex"
    save(Image([(chip.boot_start, b"\x00" * 256)]), fw)
    with pty_server(eng) as srv:
        cmd = [AVRDUDE or "avrdude", "-c", "avr109", "-p", "m32u4", "-P", srv.slave_path, "-b", "57600", "-D",
               "-U", f"flash:w:{fw}:i"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert mem.read(chip.boot_start, 256) == b"\xff" * 256
