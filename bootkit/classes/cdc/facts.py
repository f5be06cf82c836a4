"""What the CDC (AVR109) dialects trade off, for ``bootkit choose`` (see docs/personalities/cdc.md).

Throughput: ``benchmarks/bench_cdc.py`` compares bootkit's client with
avrdude on a pseudo-terminal (no USB wire model), so no wire limit is
declared here.
"""

from ..common import DialectFacts

_DRIVERS = {"windows": "none", "macos": "none", "linux": "none", "ipados": "no",
            "android": "OTG app (usb-serial-for-android)"}
_QUIRKS = (
    ("Windows before 10 needs an INF for a CDC-ACM device", "Windows 10+ binds usbser.sys by class: nothing to do"),
    ("Linux: ModemManager may probe a new ttyACM for seconds",
     "LUFA/Arduino ids are on its ignore list; else udev ENV{ID_MM_DEVICE_IGNORE}=\"1\""),
    ("the port name changes after the 1200-baud touch (new ttyACM / COM number)",
     "the host client finds the bootloader again by VID:PID (pyserial list_ports)"),
    ("iPadOS: apps cannot open a USB serial port", "none possible: choose msc (UF2 drive) or midi for iPad users"),
)
# the figures come from a run of the script, not from here: it prints bootkit's time against avrdude's
_BENCH = "benchmarks/bench_cdc.py: bootkit against avrdude on a pty, side by side"

FACTS = (
    DialectFacts(
        personality="cdc", dialect="caterina",
        summary="Arduino's Caterina (Leonardo, Micro, Pro Micro): avrdude -c avr109, 1200-baud touch, 8 s timeout",
        driver=dict(_DRIVERS),
        host_software="avrdude or the Arduino IDE",
        eeprom=True, readback=True, verify="read-back",
        feedback="'?' for a refused command; avrdude reports the first mismatching byte",
        unattended=True,  # the application's own port: 1200-baud touch
        bootloader_size="4 KiB",
        families=("avr",),
        quirks=_QUIRKS + (
            ("Caterina starts the sketch after 8 s without host traffic",
             "modelled (cdc.timeout); the host client flashes at once after the touch"),
        ),
        benchmark=_BENCH,
    ),
    DialectFacts(
        personality="cdc", dialect="lufa",
        summary="LUFA's CDC bootloader: avrdude -c avr109, flash, EEPROM, fuse and lock reads",
        driver=dict(_DRIVERS),
        host_software="avrdude",
        eeprom=True, readback=True, verify="read-back",
        feedback="'?' for a refused command; avrdude reports the first mismatching byte",
        unattended=True,  # when the application honours the 1200-baud touch (bootkit's emulated one does)
        bootloader_size="4 KiB",
        families=("avr",),
        quirks=_QUIRKS + (
            ("LUFA's CDC bootloader never leaves by itself", "no timeout unless cdc.timeout is set"),
        ),
        benchmark=_BENCH,
    ),
)
