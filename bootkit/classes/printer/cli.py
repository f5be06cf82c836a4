"""The printer personality's own command: ``bootkit print`` (a firmware file as a print job)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ...cli.arguments import add_file_arguments
from ...cli.errors import EXIT_OK, BadInput
from ...cli.images import find_chip
from ...cli.parser import add_verbosity
from ...cli.session import Session, talking
from ..common import ImageRejected


def add_commands(sub) -> None:
    s = sub.add_parser("print", formatter_class=argparse.RawDescriptionHelpFormatter,
                       help="print a HEX file to a printer-personality device",
                       description="Send FILE as a print job to a device with the printer personality (any "
                                   "format; non-HEX input is converted to Intel HEX first), then report the "
                                   "device's port status and its one-line job status.",
                       epilog="examples:\n  bootkit print fw.hex --printer /dev/usb/lp0\n"
                              "  bootkit print fw.hex --emulate atmega32u4 --image flash.bin\n"
                              "  bootkit print fw.bin --device 03eb:206b --address 0\n"
                              "  bootkit print fw.hex --usbip 127.0.0.1   # served by serve printer --transport usbip\n"
                              "  bootkit print fw.img --format hex --emulate atmega32u4 --image flash.bin")
    add_file_arguments(s, "select the device by USB ids (pyusb)", "print into an emulated device in this process")
    s.add_argument("--printer", metavar="/dev/usb/lpN", help="the kernel's printer device (usblp)")
    s.add_argument("--usbip", metavar="HOST[:PORT]",
                   help="a printer served by `bootkit serve printer --transport usbip` (no kernel needed)")
    add_verbosity(s, suppress=True)  # `bootkit print ... -q` as `bootkit -q print ...`
    s.set_defaults(func=cmd_print, via="printer", dialect=None, port=None)


def cmd_print(args) -> int:
    from . import host

    if getattr(args, "quiet", False):
        args.progress = False  # -q: no bar nor plain progress line either

    if args.printer and (args.emulate or args.device or args.usbip):
        raise BadInput("--printer excludes --emulate, --device and --usbip")
    if not Path(args.file).exists():
        raise BadInput(f"{args.file}: no such file")
    # the whole file is parsed first: a corrupt or empty one is refused before anything is sent
    try:
        base, target = args.address, find_chip(args.chip or args.emulate)
        if base is None and target is not None:  # a binary goes to the application start
            from ..common import app_first_address

            base = app_first_address(target)
        job = host.prepare(args.file, fmt=getattr(args, "fmt", None), base=base,
                           family=target.uf2_family if target is not None else None)
    except ImageRejected as exc:
        raise BadInput(str(exc)) from None
    from .personality import PERSONALITY

    session = None if args.printer else Session(args, PERSONALITY)
    backend = session.backend if session else None
    chip = session.chip if session else find_chip(args.chip)
    vid, pid = args.device or (None, None)
    with talking(args.file, session):
        result = host.print_job(job, backend, printer=args.printer, vid=vid, pid=pid, serial=args.serial,
                                chip=chip, force=getattr(args, "force", False), progress=args.progress)
    if not getattr(args, "quiet", False):  # -q: only errors
        print(f"{args.file}: printed {result.bytes} bytes, {'verified' if result.verified else 'not verified'}; "
              + ", ".join(result.steps))
    return EXIT_OK
