"""What the ISP programmer dialects trade off, for ``bootkit choose`` (see
docs/isp-programmers.md).  An ISP programmer is not a bootloader: it needs no code in the
target, reaches all of flash, EEPROM, fuses and lock bits, and needs a programmer and
six wires to the target's ISP header.

Throughput: no figure is declared here (nothing is typed as a throughput figure); the
STK500 v2 path is measured against avrdude on one pty by benchmarks/bench_avr_serial.py,
side by side.
"""

from ..common import DialectFacts

_NO_BOOTLOADER = "0 B: an ISP programmer needs no code in the target"
_QUIRKS = (
    ("a chip erase comes first and takes EEPROM with it (unless the EESAVE fuse is programmed)",
     "as avrdude: flash writes erase first; EEPROM writes do not, and are refused on a write-locked target"),
    ("a wrong --chip would program another part's layout", "the signature is read first: a mismatch writes nothing"),
    ("iPadOS: apps cannot open a USB serial port or a vendor-class USB device",
     "none possible: program from a computer (or an Android phone for STK500 v2)"),
    ("fuse values with unimplemented bits", "both spellings pass (bits 0 as AVRprog, 1 as avrdude shows them); "
                                            "any other bit outside the chip's mask is refused before writing"),
)

FACTS = (
    DialectFacts(
        personality="isp", dialect="stk500v2",
        summary="an STK500 v2 / AVRISP-class programmer (AVR068) on a serial or CDC-ACM port: avrdude -c stk500v2, "
                "-c avrisp2; flash, EEPROM, fuses, lock, signature",
        driver={"windows": "none", "macos": "none", "linux": "none", "ipados": "no",
                "android": "OTG app (usb-serial-for-android)"},
        host_software="avrdude, or bootkit",
        eeprom=True, readback=True, verify="read-back",
        feedback="an AVR068 status per command; avrdude and bootkit name the first mismatching byte",
        unattended=True,
        bootloader_size=_NO_BOOTLOADER,
        families=("avr",),
        quirks=_QUIRKS + (
            ("a real STK500 reads Vtarget and the top card; an AVRISP does not",
             "the sign_on option answers STK500_2 or AVRISP_2, as avrdude tells them apart"),
        ),
        benchmark="benchmarks/bench_avr_serial.py: bootkit's STK500 v2 path against avrdude on one pty, per KiB",
    ),
    DialectFacts(
        personality="isp", dialect="usbasp",
        summary="a USBasp (16c0:05dc, vendor requests): avrdude -c usbasp; flash, EEPROM, fuses, lock, signature",
        driver={"windows": "libusb driver (Zadig: WinUSB or libusb-win32)", "macos": "none", "linux": "none",
                "ipados": "no", "android": "no"},
        host_software="avrdude, or bootkit (libusb)",
        eeprom=True, readback=True, verify="read-back",
        feedback="a USB request that fails or a byte count short; avrdude names the first mismatching byte",
        unattended=True,
        bootloader_size=_NO_BOOTLOADER,
        families=("avr",),
        quirks=_QUIRKS + (
            ("Linux: a udev rule is needed to open 16c0:05dc as a user", "documented in docs/isp-programmers.md"),
            ("Android: no avrdude-style app drives a USBasp", "none here: program from a computer"),
        ),
        benchmark="",
    ),
)
