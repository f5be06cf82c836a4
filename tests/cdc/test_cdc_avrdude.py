"""Interop: avrdude (a tool nobody here wrote) against the AVR109 engine on a pty.

Skipped only when avrdude is absent and CI is unset; under CI=true they run
(and fail without avrdude).
"""

import os
import shutil
import subprocess

import pytest

import random

from bootkit.classes.cdc.avr109 import Avr109Engine
from bootkit.classes.cdc.protocol import avrdude_avr910_config
from bootkit.formats import load, save
from bootkit.formats.image import Image
from bootkit.memory import SimulatedFlash, get_chip
from bootkit.memory.chips import EEPROM_BASE, FUSE_BASE, LOCK_BASE
from bootkit.samples import named_sample, sample_image
from bootkit.transports.pty import pty_server

AVRDUDE = shutil.which("avrdude")
pytestmark = pytest.mark.skipif(AVRDUDE is None and not os.environ.get("CI"),
                                reason="avrdude is not installed (apt-get install avrdude)")


def avrdude(port, *args, part="m32u4", programmer="avr109", timeout=120, config=None):
    extra = ["-C", f"+{config}"] if config else []
    cmd = [AVRDUDE or "avrdude", *extra, "-c", programmer, "-p", part, "-P", port, "-b", "57600", *args]
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


# --------------------------------------------------------------------------
# generated images: gaps, odd lengths, segment starts off any page, above 64 KiB


def generated(chip, seed: int) -> Image:
    """Segments of odd lengths at odd addresses with gaps between them, over the whole
    application section: the first word, a segment across the 64 KiB line where the chip
    has one, and one ending on the last byte below the bootloader."""
    rng = random.Random(seed)
    top = chip.boot_start
    starts = [0, rng.randrange(3, 0x200, 2), rng.randrange(0x1001, top // 2, 2) + 1]
    if top > 0x10000:
        starts += [0x10000 - rng.randrange(1, 0x80, 2), rng.randrange(0x11001, top - 0x1000, 2)]
    tail = rng.randrange(3, 0x81, 2)
    starts = sorted(starts) + [top - tail]
    segments = []
    for start, following in zip(starts, starts[1:] + [None]):
        room = top - start if following is None else following - start - 1  # a gap of at least one byte
        shortest = 0x81 if start < 0x10000 < start + 0x80 else 1  # this one crosses the 64 KiB line
        length = room if following is None else min(room, rng.randrange(shortest, 0x300) | 1)  # odd
        segments.append((start, bytes(rng.randrange(256) for _ in range(length))))
    image = Image(segments)
    assert image.end == top and any(s % 2 for s, _ in segments)
    assert top <= 0x10000 or any(s < 0x10000 < s + len(d) for s, d in segments)
    return image


@pytest.mark.parametrize("programmer", ["avr109", "avr910"])
@pytest.mark.parametrize("chip_name,part,seed", [("atmega32u4", "m32u4", 1), ("atmega32u4", "m32u4", 2),
                                                 ("at90usb1286", "usb1286", 3), ("at90usb1286", "usb1286", 4)])
def test_avrdude_flashes_generated_images_byte_for_byte(tmp_path, board, programmer, chip_name, part, seed):
    chip, mem, eng = board(chip_name)
    mem.poke(0x4000, b"\x5a" * 64)  # old content: avrdude's 'e' erases it
    image = generated(chip, seed)
    fw = tmp_path / "gen.hex"
    save(image, fw)
    config = tmp_path / "avr910.conf"
    config.write_text(avrdude_avr910_config())
    with pty_server(eng) as srv:
        r = avrdude(srv.slave_path, "-U", f"flash:w:{fw}:i", part=part, programmer=programmer,
                    config=config if programmer == "avr910" else None)
        assert "verified" in r.stderr
        back = tmp_path / "back.hex"
        avrdude(srv.slave_path, "-U", f"flash:r:{back}:i", part=part, programmer=programmer,
                config=config if programmer == "avr910" else None)
    assert mem.flash_bytes() == reference(image, chip)
    assert load(back).tobytes(0, image.end) == reference(image, chip)[:image.end]


# --------------------------------------------------------------------------
# avrdude -c avr910 (the AVR910 programmer protocol against the AVR109 bootloader)


@pytest.fixture
def avr910_config(tmp_path):
    """avrdude.conf (7.1) gives m32u4 no avr910_devcode, so avr910.c refuses the part
    ("selected device is not supported by programmer") whatever the programmer lists;
    bootkit's overlay names the code its bootloader lists (see protocol.avrdude_avr910_config)."""
    path = tmp_path / "avr910.conf"
    path.write_text(avrdude_avr910_config())
    return path


def test_avrdude_avr910_reads_the_real_fuses_lock_and_signature(board, avr910_config):
    chip, mem, eng = board()
    with pty_server(eng) as srv:
        r = avrdude(srv.slave_path, "-U", "lfuse:r:-:h", "-U", "hfuse:r:-:h", "-U", "efuse:r:-:h",
                    "-U", "lock:r:-:h", "-U", "signature:r:-:h", "-q", "-q",
                    programmer="avr910", config=avr910_config)
    assert r.stdout.split() == ["0x5e", "0x99", "0xf3", "0xff", "0x1e,0x95,0x87"], r.stderr
    assert "not responding" not in r.stderr and "did not respond" not in r.stderr, r.stderr


def test_avrdude_avr910_flash_eeprom_and_lock(tmp_path, board, avr910_config):
    chip, mem, eng = board()
    _, image = named_sample("sample-atmega32u4")
    fw, ee = tmp_path / "fw.hex", tmp_path / "ee.hex"
    save(image, fw)
    data = bytes((i * 7) & 0xFF for i in range(33))
    save(Image([(0x101, data)]), ee)
    with pty_server(eng) as srv:
        r = avrdude(srv.slave_path, "-U", f"flash:w:{fw}:i", "-U", f"eeprom:w:{ee}:i", "-U", "lock:w:0xef:m",
                    programmer="avr910", config=avr910_config)
    assert "bytes of flash verified" in r.stderr and "bytes of eeprom verified" in r.stderr
    assert "1 byte of lock verified" in r.stderr
    assert mem.flash_bytes() == reference(image, chip)
    assert mem.read(EEPROM_BASE + 0x101, 33) == data
    assert mem.read(LOCK_BASE, 1) == b"\xef"


def test_avrdude_avr910_fuse_write_is_refused_by_the_read_back(board, avr910_config):
    """A bootloader cannot write fuses: the write changes nothing and avrdude's verify fails."""
    chip, mem, eng = board()
    with pty_server(eng) as srv:
        cmd = [AVRDUDE or "avrdude", "-C", f"+{avr910_config}", "-c", "avr910", "-p", "m32u4", "-P", srv.slave_path,
               "-b", "57600", "-U", "lfuse:w:0xff:m"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stderr
    assert "device 0x5e != input 0xff" in r.stderr
    assert mem.read(FUSE_BASE, 1) == b"\x5e"
