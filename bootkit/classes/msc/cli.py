"""The mass-storage personality's own command: ``bootkit drop`` (a file onto a UF2 drive)."""

from __future__ import annotations

import argparse

from ...cli.arguments import add_file_arguments
from ...cli.errors import EXIT_OK, BadInput
from ...cli.images import find_chip, input_image, target_chip
from ...cli.session import Session, talking


def add_commands(sub) -> None:
    s = sub.add_parser("drop", formatter_class=argparse.RawDescriptionHelpFormatter,
                       help="drop a firmware file onto a UF2/mass-storage bootloader",
                       description="Copy FILE onto a mass-storage bootloader drive, converted to UF2 when the drive "
                                   "says so in INFO_UF2.TXT, and wait for the device to leave. On the emulator or a "
                                   "raw USB device it writes through FAT on SCSI commands.",
                       epilog="examples:\n  bootkit drop fw.hex --drive /media/RPI-RP2\n"
                              "  bootkit drop fw.uf2 --emulate rp2040 --image flash.bin\n"
                              "  bootkit drop fw.bin --emulate stm32f411 --accept uf2,bin --as bin\n"
                              "  bootkit drop fw.uf2 --emulate rp2040 --image flash.bin --force   # another family")
    add_file_arguments(s, "a USB device, written through SCSI (pyusb)", "drop onto an emulated drive in this process")
    s.add_argument("--drive", metavar="MOUNTPOINT", help="the mounted drive")
    s.add_argument("--as", dest="as_kind", choices=("uf2", "bin", "hex"), help="kind of file to drop (default: UF2 "
                   "when the drive takes it)")
    s.add_argument("--accept", metavar="uf2,bin,hex", help="with --emulate: the file kinds the drive accepts")
    s.set_defaults(func=cmd_drop, via="msc", usbip=None, dialect=None, port=None, product=None)


def cmd_drop(args) -> int:
    from . import host

    if args.drive and (args.emulate or args.device):
        raise BadInput("--drive excludes --emulate and --device")
    if args.accept and not args.emulate:
        raise BadInput("--accept configures an emulated drive: it needs --emulate")
    image = input_image(args, target_chip(args))
    args.usbip = None
    from .personality import PERSONALITY

    accept = {"accept": tuple(k.strip() for k in args.accept.split(",") if k.strip())} if args.accept else {}
    session = None if args.drive else Session(args, PERSONALITY, accept)
    vid, pid = args.device or (None, None)
    with talking(args.file, session):
        result = host.flash(image, session.backend if session else None, drive=args.drive, vid=vid, pid=pid,
                            serial=args.serial, chip=session.chip if session else find_chip(args.chip),
                            fmt=args.as_kind, progress=args.progress, force=args.force)
    print(f"{args.file}: dropped {result.bytes} bytes as {result.dialect}; " + ", ".join(result.steps))
    return EXIT_OK
