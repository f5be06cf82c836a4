"""What the CDC dialects (AVR109, Optiboot, wiring) trade off, for ``bootkit choose`` (see
docs/personalities/cdc.md).

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
# the Uno's and Mega's bridge is a CDC-ACM port too (the ATmega16U2), with ids fixed in its firmware
_UART_QUIRKS = (_QUIRKS[1], _QUIRKS[3])
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
    DialectFacts(
        personality="cdc", dialect="optiboot",
        summary="Optiboot (Arduino Uno, Nano, Pro Mini): STK500 v1 on the UART behind a USB-serial bridge; "
                "avrdude -c arduino",
        driver=dict(_DRIVERS),
        host_software="avrdude or the Arduino IDE",
        eeprom=True, readback=True, verify="read-back",
        feedback="STK_NOSYNC / STK_FAILED; avrdude reports the first mismatching byte",
        unattended=True,  # opening the port resets the AVR into Optiboot (DTR auto-reset)
        bootloader_size="512 B",
        families=("avr",),
        quirks=_UART_QUIRKS + (
            ("Optiboot leaves for the sketch 1 s after the last byte (watchdog)",
             "modelled (cdc.timeout); opening the port resets the board into it again"),
            ("the stock 512-B build has no EEPROM support (a write waits for the watchdog)",
             "bootkit models a SUPPORT_EEPROM build: 'E' pages are written"),
            ("fuses cannot be read: every universal command answers 0x00",
             "bootkit fuses says so; use an ISP programmer (bootkit serve isp)"),
            ("clones use a CH340 or FTDI bridge instead of the 16U2",
             "Windows installs their drivers from Windows Update; Linux: ch341 / ftdi_sio"),
        ),
        benchmark=_BENCH,
    ),
    DialectFacts(
        personality="cdc", dialect="wiring",
        summary="the Arduino Mega 2560's stk500v2 bootloader: STK500 v2 messages on the UART behind a USB-serial "
                "bridge; avrdude -c wiring",
        driver=dict(_DRIVERS),
        host_software="avrdude or the Arduino IDE",
        eeprom=True, readback=True, verify="read-back",
        feedback="STATUS_CMD_FAILED for a refused page; avrdude reports the first mismatching byte",
        unattended=True,  # DTR auto-reset, as on the Uno
        bootloader_size="8 KiB",
        families=("avr",),
        quirks=_UART_QUIRKS + (
            ("its chip erase answers FAILED (issue 543): avrdude stops unless run with -D",
             "the Arduino IDE passes -D; bootkit's host writes every page from 0 instead"),
            ("pages are erased in order from 0, not where they are written",
             "bootkit's host writes every page from the start, gaps filled with 0xFF"),
            ("it starts the sketch about 1 s after the last byte", "modelled (cdc.timeout)"),
        ),
        benchmark=_BENCH,
    ),
)
