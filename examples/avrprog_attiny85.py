"""Adafruit AVRprog's Trinket (ATtiny85) example, run against bootkit's emulated ATtiny85.

The calls are Adafruit AVRprog's, verbatim (verify_sig, write_fuses, verify_fuses,
program_file, verify_file, read_fuses); only the set-up differs: instead of
``AVRprog()`` + ``init(spi, board.D5)`` on a CircuitPython board, the programmer is
an ``AVRprog`` on an ISP link (here an emulated chip; a USBasp, an STK500 v2
programmer or a Raspberry Pi's SPI with bootkit.isp's other links).

    python examples/avrprog_attiny85.py [FIRMWARE.hex [FLASH.bin]]

Without FIRMWARE.hex it writes a sample image to a temporary file first; with
FLASH.bin the emulated chip's flash is that file (it survives the run; EEPROM,
fuses and lock bits go to FLASH.bin.state.json).
"""

import sys
import tempfile
from pathlib import Path

from bootkit.isp import AVRprog, EmulatedTarget

firmware = sys.argv[1] if len(sys.argv) > 1 else None
flash_file = sys.argv[2] if len(sys.argv) > 2 else None

if firmware is None:
    from bootkit.formats import save
    from bootkit.samples import sample_image

    firmware = str(Path(tempfile.mkdtemp()) / "trinket_sample.hex")
    save(sample_image("attiny85", 3 * 1024 + 5, 0x1400, 77), firmware)

avrprog = AVRprog(EmulatedTarget("attiny85", image=flash_file))

# Each chip has to have a definition so the script knows how to find it
attiny85 = {"name": "ATtiny85"}
attiny85["sig"] = [0x1E, 0x93, 0x0B]
attiny85["flash_size"] = 8192
attiny85["page_size"] = 64
attiny85["fuse_mask"] = (0xFF, 0xFF, 0x07, 0x3F)


def error(err):
    """Helper to print out errors for us and then stop"""
    print("ERROR: " + err)
    avrprog.end()
    sys.exit(1)


if not avrprog.verify_sig(attiny85, verbose=True):
    error("Signature read failure")
print("Found", attiny85["name"])

avrprog.write_fuses(attiny85, low=0xF1, high=0xD5, ext=0x06, lock=0x3F)
if not avrprog.verify_fuses(attiny85, low=0xF1, high=0xD5, ext=0x06, lock=0x3F):
    error("Failure verifying fuses!")

print("Programming flash from file")
if not avrprog.program_file(attiny85, firmware, verbose=False, verify=True):
    error("Failure programming flash!")
if not avrprog.verify_file(attiny85, firmware):
    error("Failure verifying flash!")

print("Fuses:", [hex(f) for f in avrprog.read_fuses(attiny85)])
avrprog.close()
print("Done!")
