"""``convert``: one firmware format to another."""

from __future__ import annotations

import argparse

from .errors import EXIT_OK, BadInput
from .arguments import input_formats, parse_int
from ..formats import ADDRESSED
from .images import load_image

FMT = argparse.RawDescriptionHelpFormatter


def add_commands(sub, argv=()) -> None:
    INPUT_FORMATS = input_formats()
    s = sub.add_parser("convert", formatter_class=FMT, help="convert between firmware formats",
                       description="Convert IN to OUT; formats come from the content (IN) and extension (OUT): "
                                   + ", ".join(INPUT_FORMATS) + " (elf: read only; the DFU suffix format is a "
                                   "binary with a DFU 1.1 suffix).",
                       epilog="examples:\n  bootkit convert fw.hex fw.uf2 --family rp2040\n"
                              "  bootkit convert fw.bin fw.hex --base 0x08000000\n"
                              "  bootkit convert fw.img fw.hex --from bin --base 0x08000000")
    s.add_argument("input", metavar="IN")
    s.add_argument("output", metavar="OUT")
    s.add_argument("--base", type=parse_int, help="load address of a binary input")
    s.add_argument("--family", help="UF2 family: a name (rp2040, nrf52840, ...) or 0x... id")
    s.add_argument("--format", dest="fmt", metavar="FORMAT",
                   help="OUT's format, when the extension does not say (the DFU suffix format: a plain suffix "
                        "file even when IN has addresses; its extension picks DfuSe for an image with addresses)")
    s.add_argument("--from", dest="from_fmt", choices=INPUT_FORMATS, metavar="FORMAT",
                   help="IN's format (" + ", ".join(INPUT_FORMATS) + "); default: from its content and extension")
    s.set_defaults(func=cmd_convert)


def cmd_convert(args) -> int:
    from ..formats import FORMATS, FormatError, format_from_name, save

    try:
        image = load_image(args.input, base=args.base, family=args.family, fmt=args.from_fmt)
    except BadInput as exc:  # convert's --format names OUT's format; IN's is --from
        raise BadInput(str(exc).replace("--format", "--from")) from None
    if not image:
        raise BadInput(f"{args.input}: no data to convert")
    fmt = args.fmt or format_from_name(args.output)
    if fmt is None or fmt not in FORMATS or fmt == "elf":
        raise BadInput(f"{args.output}: cannot tell the output format from the name; give --format "
                       f"({', '.join(f for f in FORMATS if f != 'elf')})")
    if fmt == "uf2" and args.family is None:
        raise BadInput("UF2 output needs --family (e.g. rp2040, nrf52840, or 0xe48bff56)")
    addressed = image.start != 0 or len(image.segments) > 1
    note = ""
    suffix = fmt not in ADDRESSED and fmt != "bin"  # a plain DFU-suffix file: a binary with a suffix
    if suffix and addressed and args.fmt is None:
        # a plain DFU 1.1 suffix file has no addresses (DFU 1.1 appendix B); DfuSe's elements
        # carry one each (UM0391), which is what an STM32's DfuSe download needs
        fmt, note = "dfuse", f"; written as DfuSe to keep its addresses (--format {fmt}: a plain suffix file)"
    elif fmt not in ADDRESSED and addressed:
        note = (f"; the address is dropped: a {'plain DFU suffix' if suffix else 'binary'} file holds "
                f"bytes from 0x{image.start:X} on, gaps filled with 0xFF (flash it with --address 0x{image.start:X})")
    try:
        save(image, args.output, fmt, family=args.family)
    except (FormatError, ValueError) as exc:
        raise BadInput(str(exc)) from None
    print(f"{args.input} -> {args.output}: {image.size} bytes in {len(image.segments)} segment(s), "
          f"0x{image.start:X}-0x{image.end - 1:X}" + note)
    return EXIT_OK
