"""The host side: ``flash`` and ``read`` through any personality."""

from __future__ import annotations

import argparse

from .errors import EXIT_OK, BadInput
from .arguments import add_input_options, parse_int, parse_vidpid
from .images import input_image, target_chip
from .session import Session, talking

FMT = argparse.RawDescriptionHelpFormatter


def add_commands(sub) -> None:
    def selection(sp, reading=False):
        sp.add_argument("--via", metavar="PERSONALITY", help="personality to talk to (default dfu, or the product's)")
        sp.add_argument("--dialect", help="protocol dialect (dfu: dfu, dfuse, flip); default from the device")
        sp.add_argument("--device", type=parse_vidpid, metavar="VID:PID", help="select the device by USB ids")
        sp.add_argument("--serial", help="select the device by serial number")
        sp.add_argument("--alt", type=int, help="DFU alternate setting")
        sp.add_argument("--transfer-size", type=parse_int, metavar="N",
                        help="DFU wTransferSize, when the device does not say (dfu-util -t)")
        sp.add_argument("--chip", help="the target chip (validates the image against it)")
        sp.add_argument("--memory", choices=("flash", "eeprom"), default="flash")
        sp.add_argument("--emulate", metavar="CHIP",
                        help="run the device side in this process on the in-process bus, emulating CHIP")
        sp.add_argument("--image", metavar="FILE.bin",
                        help="with --emulate: the chip's whole flash, created erased if absent, written back")
        sp.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bar (default: on a terminal only)")
        sp.add_argument("--product", metavar="P.toml",
                        help="a product profile: the personality, dialect, ids and chip come from it")
        sp.add_argument("--port", help="cdc: the serial port (default: found by VID:PID)")
        sp.add_argument("--usbip", metavar="HOST[:PORT]",
                        help="talk to a device served by `bootkit serve --transport usbip` (no kernel needed)")
        sp.add_argument("--drive", metavar="MOUNTPOINT", help="msc: a mounted bootloader drive (copy a file to it)")
        sp.add_argument("--mcu", help="hid/halfkay: the Teensy MCU, as teensy_loader_cli --mcu names it")
        sp.add_argument("--wait", type=float, metavar="SECONDS",
                        help="hid: wait this long for the device to appear (teensy_loader_cli -w)")

    s = sub.add_parser("flash", formatter_class=FMT, help="flash a firmware file into a device",
                       description="Validate FILE against the target, erase what it needs, program, verify by "
                                   "reading back, and start the application.",
                       epilog="examples:\n  bootkit flash fw.hex --via dfu --emulate atmega32u4 --image flash.bin\n"
                              "  bootkit flash fw.bin --via dfu --dialect dfuse --address 0x08000000\n"
                              "  bootkit flash fw.hex --via dfu --device 03eb:2ff4\n"
                              "  bootkit flash fw.img --format bin --via dfu --chip stm32f411 --device 0483:df11\n"
                              "  bootkit flash fw.uf2 --via msc --emulate rp2040 --image flash.bin --force\n"
                              "  bootkit flash fw.elf --memory eeprom --via cdc --emulate atmega32u4 --image flash.bin\n\n"
                              "FILE's format comes from its content and extension together (--format overrides);\n"
                              "a binary goes to --address, else to the application start of --chip/--emulate.")
    s.add_argument("file", metavar="FILE")
    selection(s)
    s.add_argument("--address", type=parse_int, help="load address of a binary file (default: the application start "
                   "of --chip/--emulate)")
    add_input_options(s)
    s.add_argument("--no-verify", dest="verify", action="store_false", help="skip the read-back verification")
    s.add_argument("--no-leave", dest="leave", action="store_false", help="stay in the bootloader afterwards")
    s.set_defaults(func=cmd_flash)

    s = sub.add_parser("read", formatter_class=FMT, help="read a device's memory into a file",
                       description="Read the application flash (or EEPROM) back into OUT (format from its "
                                   "extension: .hex, .bin, .uf2, .srec, .dfu).",
                       epilog="examples:\n  bootkit read back.hex --via dfu --emulate atmega32u4 --image flash.bin\n"
                              "  bootkit read back.bin --via dfu --device 0483:df11 --start 0x08000000 --length 65536")
    s.add_argument("output", metavar="OUT")
    selection(s, reading=True)
    s.add_argument("--start", type=parse_int, help="first address to read")
    s.add_argument("--length", type=parse_int, help="number of bytes to read")
    s.set_defaults(func=cmd_read)


def _host_module(via: str):
    import importlib

    from ..emulator import personality_module

    try:  # unknown or not implemented; only this one: importing all six costs a second on a slow board
        personality_module(via)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    return importlib.import_module(f"bootkit.classes.{via}.host")



def _personality_options(args, session) -> dict:
    """Options only some personalities take, passed only when given (or always, for their own)."""
    options = {}
    if args.via == "dfu":
        options["alt"] = args.alt
        if args.transfer_size:
            options["transfer_size"] = args.transfer_size
    elif args.alt is not None or getattr(args, "transfer_size", None):
        raise BadInput("--alt and --transfer-size are DFU options")
    for name in ("mcu", "wait"):
        value = getattr(args, name, None)
        if value is not None:
            if args.via != "hid":
                raise BadInput(f"--{name} is a HID option")
            options[name] = value
    if getattr(args, "drive", None):
        if args.via != "msc":
            raise BadInput("--drive is a mass-storage option")
        options["drive"] = args.drive
    if session.port is not None:
        if args.via not in ("cdc", "midi"):
            raise BadInput("--port is a CDC (serial port) or MIDI (port name) option")
        options["port"] = session.port
    return options


def _apply_product(args) -> dict:
    """With --product: the personality, dialect, ids and chip come from the profile."""
    if not getattr(args, "product", None):
        args.via = args.via or "dfu"
        return {}
    from ..product import ProductError, load_product

    try:
        product = load_product(args.product)
    except ProductError as exc:
        raise BadInput(str(exc)) from None
    if args.via and args.via != product.personality:
        raise BadInput(f"--via {args.via} disagrees with {args.product} (personality {product.personality})")
    args.via = product.personality
    args.loaded_product = product
    options = product.host_options()
    if args.dialect and args.dialect != options.get("dialect"):
        raise BadInput(f"--dialect {args.dialect} disagrees with {args.product} (dialect {options.get('dialect')})")
    args.dialect = options.pop("dialect", None)
    if args.chip is None:
        args.chip = options["chip"].name
    options.pop("chip", None)
    if args.device is None and "vid" in options and "pid" in options:
        args.device = (options.pop("vid"), options.pop("pid"))
    if args.serial is None and "serial" in options:
        args.serial = options.pop("serial")
    return {k: v for k, v in options.items() if k not in ("vid", "pid", "serial")}


def cmd_flash(args) -> int:
    extra = _apply_product(args)
    # the file first: a bad one is refused before a personality (or a device) is even loaded
    image = input_image(args, target_chip(args), memory=args.memory)
    host = _host_module(args.via)
    session = Session(args)
    with talking(args.file, session):
        vid, pid = args.device or (None, None)
        result = host.flash(image, session.backend, vid=vid, pid=pid, serial=args.serial, dialect=args.dialect,
                            chip=session.chip, memory=args.memory, verify=args.verify,
                            leave=args.leave, progress=args.progress, force=args.force,
                            **{**extra, **_personality_options(args, session)})
    rate = result.bytes / 1024 / result.seconds if result.seconds else 0
    left_out = image.origin.eeprom if image.origin is not None and args.memory == "flash" else 0
    print(f"{args.file}: {result.bytes} bytes via {args.via}/{result.dialect} in {result.seconds:.2f} s "
          f"({rate:.0f} KiB/s), {'verified' if result.verified else 'not verified'}; " + ", ".join(result.steps)
          + (f"; its {left_out} EEPROM bytes (.eeprom) were not written: flash it again with --memory eeprom"
             if left_out else ""))
    return EXIT_OK


def cmd_read(args) -> int:
    from ..formats import format_from_name, save

    extra = _apply_product(args)
    host = _host_module(args.via)
    fmt = format_from_name(args.output)
    if fmt is None or fmt == "elf":
        raise BadInput(f"{args.output}: give a .hex, .bin, .uf2, .srec or .dfu name")
    session = Session(args)
    with talking(args.output, session):
        vid, pid = args.device or (None, None)
        image = host.read(session.backend, vid=vid, pid=pid, serial=args.serial, dialect=args.dialect,
                          chip=session.chip, memory=args.memory, start=args.start,
                          length=args.length, progress=args.progress,
                          **{**extra, **_personality_options(args, session)})
    family = session.chip.uf2_family if session.chip is not None else None
    if fmt == "uf2" and family is None:
        raise BadInput("UF2 output needs a chip with a UF2 family (--chip)")
    save(image, args.output, fmt, family=family)
    print(f"{args.output}: {image.size} bytes from 0x{image.start:X}")
    return EXIT_OK


def first_example(command: str) -> str:
    """The first personality's first example of ``command`` (the top-level help shows it)."""
    return "bootkit flash fw.hex --via dfu --emulate atmega32u4 --image flash.bin"
