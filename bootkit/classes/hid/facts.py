"""What the HID dialects trade off, for ``bootkit choose`` (see docs/personalities/hid.md).

Every OS binds its own HID driver, so no driver is ever installed; but
every dialect needs a host program, and iPadOS gives apps no access to a
vendor-defined HID interface.  Throughput: ``benchmarks/bench_hid.py``
prices the image at one 64-byte report per 1 ms frame (64 KB/s).
"""

from ..common import DialectFacts

_DRIVERS = {"windows": "none", "macos": "none", "linux": "none", "ipados": "no", "android": "OTG app (USB host API)"}
_QUIRKS = (
    ("Linux: usbhid claims the interface and hidraw is root-only by default",
     "the host client detaches usbhid (as teensy_loader_cli does); add a udev rule for non-root use"),
    ("iPadOS: apps cannot open a vendor-defined HID interface",
     "none possible: choose msc (UF2 drive) or midi for iPad users"),
)
_BENCH = "benchmarks/bench_hid.py: wire limit 62 KiB/s (one 64-byte report per 1 ms frame)"

FACTS = (
    DialectFacts(
        personality="hid", dialect="halfkay",
        summary="PJRC HalfKay (Teensy): 512 B, driverless everywhere, write-only",
        driver=dict(_DRIVERS),
        host_software="teensy_loader_cli or the Teensy Loader app",
        eeprom=False, readback=False, verify="none",
        feedback="none beyond a STALL: the tool only says a block was refused",
        unattended=True,  # teensy_loader_cli -s: a Teensy USB application reboots on request
        bootloader_size="512 B",
        families=("avr",),
        quirks=_QUIRKS + (
            ("the first block erases the whole chip (teensy_loader_cli waits 3 s)",
             "the host client sends the first block always and gives it the same time"),
            ("no read command: nothing can be verified", "bootkit reports 'not verified'; use native for read-back"),
        ),
        benchmark=_BENCH,
    ),
    DialectFacts(
        personality="hid", dialect="lufa",
        summary="LUFA's HID bootloader: one flash page per report, write-only",
        driver=dict(_DRIVERS),
        host_software="hid_bootloader_cli (LUFA) or bootkit",
        eeprom=False, readback=False, verify="none",
        feedback="none beyond a STALL",
        unattended=False,  # HWB button or an application jump
        bootloader_size="2 KiB",
        families=("avr",),
        quirks=_QUIRKS + (
            ("the device does not say which part it is", "the host needs the chip (profile chip or --chip)"),
            ("real LUFA ignores a page in the bootloader section silently",
             "bootkit STALLs it, and its host refuses such an image before sending anything"),
        ),
        benchmark=_BENCH,
    ),
    DialectFacts(
        personality="hid", dialect="native",
        summary="bootkit's raw-HID protocol (after the xmega raw-HID bootloader): read-back, CRC, status codes",
        driver=dict(_DRIVERS),
        host_software="bootkit",
        eeprom=False, readback=True, verify="read-back",
        feedback="a status in every reply (ERROR, MISALIGNED, NOT_ERASED)",
        unattended=True,  # the application writes the magic word and resets
        bootloader_size="4 KiB",
        families=(),
        quirks=_QUIRKS,
        benchmark=_BENCH,
    ),
    DialectFacts(
        personality="hid", dialect="xusb",
        summary="xusb-boot, the xmega raw-HID bootloader: page writes with a status each, NVM CRC check",
        driver=dict(_DRIVERS),
        host_software="xusbboot-cli (PyPI xusbboot) or bootkit",
        eeprom=False, readback=False, verify="CRC",
        feedback="a status after every report (ERROR_MISALIGNED, ERROR_NOT_ERASED) and the 24-bit NVM CRC",
        unattended=True,  # the application writes 0x97e1e28e to its flag address and resets
        bootloader_size="4 KiB, 8 KiB on the 128/256 KiB parts",
        families=("xmega",),
        quirks=_QUIRKS + (
            ("no read command: the check is the NVM controller's 24-bit application CRC",
             "bootkit compares it with the image placed on erased flash and names both CRCs when they differ"),
            ("WRITE needs whole pages and an ERASE since the bootloader started",
             "the host erases first and writes each run of pages the image touches, 0xFF-padded"),
            ("the watchdog resets into the application when no host sends SOFs within 2 s",
             "modelled: bootkit serve's board resets unless a host is on the bus"),
        ),
        benchmark=_BENCH,
    ),
)
