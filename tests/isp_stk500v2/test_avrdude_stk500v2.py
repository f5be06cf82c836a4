"""Interop: avrdude 7.x (a tool nobody here wrote) drives bootkit's STK500 v2 programmer
with an emulated AVR on its header, on a pty, exactly as ``bootkit serve isp --dialect
stk500v2 --chip CHIP --transport pty`` serves it (the programmer's CDC-ACM function behind
the pty transport).  ``-c stk500v2`` meets the sign-on "STK500_2" (avrdude then treats it
as an STK500: RESET polarity, top card, Vtarget, SCK parameters), ``-c avrisp2`` on a
serial port meets "AVRISP_2" (an AVRISP).

One avrdude run per part and programmer writes, verifies and reads flash and EEPROM and
writes the fuses and lock; a second erases the chip and reads fuses, lock and signature.
Skipped only when avrdude is absent and CI is unset; under CI=true they run.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess

import pytest

from bootkit.emulator import Emulator
from bootkit.formats import load, save
from bootkit.formats.image import Image
from bootkit.memory.chips import EEPROM_BASE, FUSE_BASE, LOCK_BASE
from bootkit.transports.pty import pty_server

AVRDUDE = shutil.which("avrdude")
pytestmark = pytest.mark.skipif(AVRDUDE is None and not os.environ.get("CI"),
                                reason="avrdude is not installed (apt-get install avrdude)")


def avrdude(port, programmer, part, *args, timeout=300):
    """One avrdude run; the timeout is generous (a whole ATmega2560 read back is ~256 commands
    of 256 bytes on a loaded 2-core machine): a hang fails, a slow run does not."""
    cmd = [AVRDUDE or "avrdude", "-c", programmer, "-p", part, "-P", port, *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}"
    return r


def rng_bytes(rng, n):
    return bytes(rng.getrandbits(8) for _ in range(n))


def image_for(chip_name):
    """Generated images with gaps and odd lengths; on the ATmega2560 a segment crosses 64 KiB
    (word 0x8000), one crosses 128 KiB (Load Extended Address) and one starts at an odd address above."""
    rng = random.Random(chip_name)
    if chip_name == "attiny85":
        return Image([(0, rng_bytes(rng, 3001)), (0x1200, rng_bytes(rng, 77))])
    if chip_name == "atmega328p":
        return Image([(0, rng_bytes(rng, 9001)), (0x5000, rng_bytes(rng, 301)), (0x7F00, rng_bytes(rng, 255))])
    return Image([(0, rng_bytes(rng, 5001)), (0xFF80, rng_bytes(rng, 301)), (0x1FF01, rng_bytes(rng, 513)),
                  (0x30001, rng_bytes(rng, 1027))])


def reference(image, size):
    flash = bytearray(b"\xff" * size)
    for s, d in image.segments:
        flash[s:s + len(d)] = d
    return bytes(flash)


# part: (avrdude -p, bootkit chip, fuse values written (masked as avrdude shows them: unimplemented
# bits 1, except the ATmega328P's efuse 0x05, whose unimplemented bits avrdude 7 ignores with a
# warning), what the chip reads back)
PARTS = {
    "t85": ("attiny85", {"lfuse": 0xE2, "hfuse": 0xD7, "efuse": 0xFE, "lock": 0xFC},
            {"lfuse": 0xE2, "hfuse": 0xD7, "efuse": 0xFE, "lock": 0xFC}),
    "m328p": ("atmega328p", {"lfuse": 0xFF, "hfuse": 0xDE, "efuse": 0x05, "lock": 0xCF},
              {"lfuse": 0xFF, "hfuse": 0xDE, "efuse": 0xFD, "lock": 0xCF}),
    "m2560": ("atmega2560", {"lfuse": 0xFF, "hfuse": 0xD8, "efuse": 0xFD, "lock": 0xEF},
              {"lfuse": 0xFF, "hfuse": 0xD8, "efuse": 0xFD, "lock": 0xEF}),
}


@pytest.mark.parametrize("programmer, sign_on", [("stk500v2", "STK500_2"), ("avrisp2", "AVRISP_2")])
@pytest.mark.parametrize("part", list(PARTS))
def test_avrdude_flash_eeprom_fuses_lock_signature_erase(tmp_path, part, programmer, sign_on):
    chip_name, fuses, expect = PARTS[part]
    image = image_for(chip_name)
    fw, back = tmp_path / "fw.hex", tmp_path / "back.hex"
    save(image, fw)
    ee_data = bytes(range(7, 7 + 37))
    ee, eeback = tmp_path / "ee.hex", tmp_path / "eeback.hex"
    save(Image([(0x21, ee_data)]), ee)
    # the ATmega328P runs in real time: the datasheet's write delays, polled by the programmer
    with Emulator(chip_name, "isp", options={"dialect": "stk500v2", "sign_on": sign_on},
                  realtime=part == "m328p") as em, pty_server(em) as server:
        size = em.chip.flash_size
        fuse_ops = [f"-U{name}:w:0x{value:02X}:m" for name, value in fuses.items()]
        r = avrdude(server.slave_path, programmer, part, "-v", "-U", f"flash:w:{fw}:i", "-U", f"flash:r:{back}:i",
                    "-U", f"eeprom:w:{ee}:i", "-U", f"eeprom:r:{eeback}:i", *fuse_ops)
        # what avrdude took it for (stk500v2_display: the sign-on name decides)
        assert f"Programmer Model: {'STK500' if sign_on == 'STK500_2' else 'AVRISP'}\n" in r.stderr
        assert f"{image.size} bytes of flash verified" in r.stderr
        assert em.memory.flash_bytes() == reference(image, size)
        assert load(back).tobytes(0, image.end) == reference(image, size)[:image.end]
        assert em.memory.peek(EEPROM_BASE, 0x21 + 37) == b"\xff" * 0x21 + ee_data
        assert load(eeback).tobytes(0x21, 0x21 + 37) == ee_data
        assert all(f"1 byte of {name} verified" in r.stderr for name in fuses)
        if part == "m328p":  # 0x05 reads back 0xFD: avrdude 7 compares the implemented bits only
            assert "ignoring mismatch in unused bits of efuse" in r.stderr
        held = dict(zip((f.name for f in em.chip.fuses), em.memory.peek(FUSE_BASE, len(em.chip.fuses))))
        held["lock"] = em.memory.peek(LOCK_BASE, 1)[0]
        assert held == expect
        # a second session: chip erase, then what the chip holds
        r = avrdude(server.slave_path, programmer, part, "-e", "-q", "-q", "-U", "signature:r:-:h",
                    "-U", "lfuse:r:-:h", "-U", "hfuse:r:-:h", "-U", "efuse:r:-:h", "-U", "lock:r:-:h")
        sig = ",".join(hex(b) for b in em.chip.signature)  # avrdude 7 writes 0xb, not 0x0b
        assert r.stdout.split() == [sig] + [f"0x{expect[n]:02x}" for n in ("lfuse", "hfuse", "efuse")] + ["0xff"]
        assert em.memory.flash_bytes() == b"\xff" * size  # -e erased flash, and the lock bits
        # EESAVE (hfuse bit 3) programmed keeps the EEPROM through a chip erase: the t85's 0xD7 does
        kept = not expect["hfuse"] & 0x08
        assert em.memory.peek(EEPROM_BASE, 0x21 + 37) == (b"\xff" * 0x21 + ee_data if kept else b"\xff" * (0x21 + 37))
        assert server.sessions == 2
