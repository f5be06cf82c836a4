"""The mass-storage personality's own command: ``bootkit drop`` (a file onto a UF2 drive)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ...cli.arguments import add_file_arguments
from ...cli.errors import EXIT_OK, BadInput, Failed
from ...cli.images import find_chip, input_image, target_chip
from ...cli.parser import add_verbosity
from ...cli.session import Session, talking


def add_commands(sub) -> None:
    s = sub.add_parser("drop", formatter_class=argparse.RawDescriptionHelpFormatter,
                       help="drop a firmware file onto a UF2/mass-storage bootloader",
                       description="Copy FILE onto a mass-storage bootloader drive, converted to UF2 when the drive "
                                   "says so in INFO_UF2.TXT, and wait for the device to leave. With no --drive, "
                                   "--device, --usbip or --emulate, the drive is the one mounted FAT volume holding "
                                   "an INFO_UF2.TXT (as uf2conv.py finds it), and without --chip the chip is the "
                                   "one its Board-ID or family names. On the emulator, a USB/IP server or a raw USB "
                                   "device it writes through FAT on SCSI commands.",
                       epilog="examples:\n  bootkit drop fw.hex                       # the one mounted UF2 drive\n"
                              "  bootkit drop fw.hex --drive /media/RPI-RP2\n"
                              "  bootkit drop fw.uf2 --emulate rp2040 --image flash.bin\n"
                              "  bootkit drop fw.uf2 --usbip 127.0.0.1   # a drive served by serve msc --transport usbip\n"
                              "  bootkit drop fw.bin --emulate stm32f411 --accept uf2,bin --as bin\n"
                              "  bootkit drop fw.uf2 --emulate rp2040 --image flash.bin --force   # another family")
    add_file_arguments(s, "a USB device, written through SCSI (pyusb)", "drop onto an emulated drive in this process")
    s.add_argument("--drive", metavar="MOUNTPOINT", help="the mounted drive (default: the one mounted UF2 drive)")
    s.add_argument("--usbip", metavar="HOST[:PORT]",
                   help="a drive served by `bootkit serve msc --transport usbip` (no kernel needed)")
    s.add_argument("--as", dest="as_kind", choices=("uf2", "bin", "hex"), help="kind of file to drop (default: UF2 "
                   "when the drive takes it)")
    s.add_argument("--accept", metavar="uf2,bin,hex", help="with --emulate: the file kinds the drive accepts")
    add_verbosity(s, suppress=True)  # `bootkit drop ... -q` as `bootkit -q drop ...`
    s.set_defaults(func=cmd_drop, via="msc", dialect=None, port=None, product=None)


def mounted_uf2_drives():
    """The mounted drives holding an INFO_UF2.TXT (``finder.mounted_drives``: the mount table's
    FAT volumes, macOS /Volumes)."""
    from . import finder

    return finder.mounted_drives()


def _the_mounted_drive():
    """The one mounted UF2 drive; none is exit 1 (nothing to drop onto), several exit 2 (say which)."""
    drives = mounted_uf2_drives()
    if not drives:
        raise Failed("no mounted UF2 drive (a FAT volume with an INFO_UF2.TXT): put the board in its bootloader, "
                     "or give --drive MOUNTPOINT, --device VID:PID or --usbip HOST[:PORT]")
    if len(drives) > 1:
        listed = ", ".join(f"{d.link.path} ({d.details.get('Board-ID', 'no Board-ID')})" for d in drives)
        raise BadInput(f"{len(drives)} UF2 drives are mounted: {listed}; choose one with --drive MOUNTPOINT")
    return drives[0]


def _drive_info(drive: str) -> dict[str, str] | None:
    from .plan import parse_info

    try:
        with open(Path(drive) / "INFO_UF2.TXT", "rb") as f:
            return parse_info(f.read(4096).decode("ascii", "replace"))
    except OSError:
        return None  # a plain drive (BIN), or not a drive: flash_drive says which


def cmd_drop(args) -> int:
    from . import host

    if getattr(args, "quiet", False):
        args.progress = False  # -q: no bar nor plain progress line either

    if args.drive and (args.emulate or args.device or args.usbip):
        raise BadInput("--drive excludes --emulate, --device and --usbip")
    if args.accept and not args.emulate:
        raise BadInput("--accept configures an emulated drive: it needs --emulate")
    if args.image and not args.emulate:
        raise BadInput("--image needs --emulate CHIP")
    found = ""
    if not (args.drive or args.emulate or args.device or args.usbip):
        drive = _the_mounted_drive()
        args.drive = drive.link.path
        found = f"{args.drive}: the mounted UF2 drive"
    chip = given = target_chip(args)
    if chip is None and args.drive:
        # no --chip: the chip the drive's INFO_UF2.TXT names (Board-ID "SAMD21G18A-Feather-v0",
        # "RPI-RP2"; or the only chip of its UF2 family), so a .bin goes to its application start
        # and the image is checked against it before anything is written
        from .finder import chip_of

        info = _drive_info(args.drive)
        name = chip_of(info) if info is not None else None
        if info is not None and name is not None:
            chip = find_chip(name)
            found = (found or args.drive) + f", chip {name} from its INFO_UF2.TXT (Board-ID {info.get('Board-ID', '?')})"
    from .personality import PERSONALITY

    accept = {"accept": tuple(k.strip() for k in args.accept.split(",") if k.strip())} if args.accept else {}
    session = None if args.drive else Session(args, PERSONALITY, accept)
    try:
        if chip is None and session is not None and session.backend is not None:
            # a bootkit drive on a USB/IP server or the bus: its INFO_UF2.TXT, read through SCSI
            from .finder import on_bus

            named = {f.chip for f in on_bus(session.backend)}
            if len(named) == 1 and None not in named:
                name = named.pop()
                chip = find_chip(name)
                found = f"chip {name} from the drive's INFO_UF2.TXT"
        # a chip taken from the drive's INFO_UF2.TXT: a UF2 file (it carries its addresses) is loaded
        # without it, so that the drop judges its family against the drive's own Family-ID first
        # ("does not match the drive's Family-ID ...; --force drops it anyway": plan_drop)
        inferred = chip is not None and given is None and _is_uf2(args.file)
        image = input_image(args, None if inferred else chip)
        if inferred and args.drive and not args.force:
            _same_family_as_drive(args.file, image, _drive_info(args.drive))
    except BaseException:
        if session is not None:
            session.close()
        raise
    vid, pid = args.device or (None, None)
    with talking(args.file, session):
        result = host.flash(image, session.backend if session else None, drive=args.drive, vid=vid, pid=pid,
                            serial=args.serial, chip=(session.chip or chip) if session else chip,
                            fmt=args.as_kind, progress=args.progress, force=args.force)
    steps = ([found] if found else []) + list(result.steps)
    if not getattr(args, "quiet", False):  # -q: only errors
        print(f"{args.file}: dropped {result.bytes} bytes as {result.dialect}; " + ", ".join(steps))
    return EXIT_OK


def _is_uf2(path: str) -> bool:
    """A UF2 file by its first block's magic numbers (UF2 spec: "UF2\\n", 0x9E5D5157)."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return False  # input_image says what is wrong with it
    return head[:4] == b"UF2\n" and head[4:8] == b"\x57\x51\x5d\x9e"


def _same_family_as_drive(path: str, image, info: dict | None) -> None:
    """A UF2 file dropped on a drive whose chip was only inferred from its INFO_UF2.TXT is judged
    against what the drive itself says (its Family-ID), as uf2conv.py and the board's bootloader
    see it; the inferred chip's own checks follow in plan_drop."""
    from ..common import family_name
    from .plan import family_of_drive

    drive_family, says = family_of_drive(info)
    origin = getattr(image, "origin", None)
    if drive_family is None or origin is None or origin.format != "uf2":
        return
    wrong = sorted((f for f in origin.uf2_families if f != drive_family), key=lambda f: -1 if f is None else f)
    if wrong:
        raise BadInput(f"{path}: UF2 family {', '.join(family_name(f) for f in wrong)} does not match "
                       f"{says}; --force drops it anyway")
