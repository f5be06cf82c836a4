"""What the printer personality trades off, for ``bootkit choose`` (see docs/personalities/printer.md).

Throughput: ``benchmarks/bench_printer.py`` prices the bulk OUT packets of
the Intel HEX job at USB full speed; the wire limit is image bytes over
that time (ATmega32U4, 16-byte records: 28672 B in 0.0617 s).
"""

from ..common import DialectFacts

FACTS = (
    DialectFacts(
        personality="printer", dialect="lufa",
        summary="print an Intel HEX file to flash (LUFA's printer bootloader): no tool but the OS's printing",
        driver={"windows": "none", "macos": "raw queue (lpadmin -m raw)", "linux": "none", "ipados": "no",
                "android": "OTG app (USB host API)"},
        host_software="none",
        eeprom=False, readback=False, verify="CRC",
        feedback="a status line per job (OK with CRC-32, or ERROR with record and line) and the port status",
        unattended=False,  # the job needs no action, entering the bootloader does (button or application)
        bootloader_size="8 KiB",  # LUFA Bootloaders/Printer: BOOT_SECTION_SIZE_KB = 8
        families=(),
        quirks=(
            ("Windows installs 'Generic / Text Only' by the IEEE 1284 id", "the default device id matches it; "
             "Notepad's trailing form feed and a header line before the first record are ignored"),
            ("Linux: usblp binds /dev/usb/lp0", "cat fw.hex > /dev/usb/lp0, or bootkit print (pyusb detaches usblp)"),
            ("macOS has no generic USB text printer driver", "add a raw queue once: lpadmin -p bootkit -E -v usb://... -m raw"),
            ("iPadOS prints over AirPrint only: no USB printers", "none possible: choose msc (UF2 drive) or midi"),
            ("a driver that reformats the job (margins, PCL) corrupts the HEX", "print raw (lp -o raw); every "
             "record's checksum is checked before its bytes reach flash"),
            ("the real LUFA printer bootloader needs an 8 KiB boot section (AT90USB128x/64x)",
             "bootkit's engine also runs in a 4 KiB region, but a real ATmega32U4 cannot host LUFA's"),
        ),
        benchmark="benchmarks/bench_printer.py: wire limit 454 KiB/s (HEX text, 16-byte records; "
                  "emulator: 0.08 x wire time)",
    ),
)
