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
    s = sub.add_parser("sample", formatter_class=FMT, help="write a sample firmware file for a chip",
                       description="Write a deterministic sample firmware for CHIP (any chip of `bootkit chips`) "
                                   "to OUT, in the format OUT's extension names (.hex, .bin, .uf2, .srec ...): "
                                   "pseudo-random code from the chip's application start, a gap, a data block "
                                   "and an odd final length, the shape real images have. The same CHIP and "
                                   "--seed always give the same bytes.",
                       epilog="examples:\n  bootkit sample atmega32u4 -o avr.hex\n"
                              "  bootkit sample rp2040 -o pico.uf2\n"
                              "  bootkit sample stm32f411 -o f411.bin --size 40000")
    s.add_argument("chip", metavar="CHIP")
    s.add_argument("-o", "--output", required=True, metavar="OUT")
    s.add_argument("--size", type=parse_int, help="bytes of code (default: about 8 KiB, less on small chips)")
    s.add_argument("--seed", type=int, default=1, help="another seed, other bytes (default 1)")
    s.set_defaults(func=cmd_sample)


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


def cmd_sample(args) -> int:
    from ..formats import FORMATS, FormatError, format_from_name, save
    from ..memory import get_chip
    from ..samples import sample_image

    try:
        chip = get_chip(args.chip)
    except KeyError as exc:
        raise BadInput(str(exc).strip("'\"")) from None
    fmt = format_from_name(args.output)
    if fmt is None or fmt not in FORMATS or fmt == "elf":
        raise BadInput(f"{args.output}: cannot tell the format from the name "
                       f"({', '.join(f for f in FORMATS if f != 'elf')})")
    start, end = chip.application_ranges[0]
    room = end - start
    size = args.size if args.size is not None else min(8 * 1024 + 3, room // 2)
    data_size = min(301, room // 8)
    data_offset = -(-(size + 256) // 256) * 256
    if size <= 0 or data_offset + data_size > room:
        raise BadInput(f"--size {size}: {chip.name}'s application holds {room} bytes "
                       f"(0x{start:X}-0x{end - 1:X}) and the sample adds a data block after a gap")
    image = sample_image(chip, size, data_offset, data_size, seed=args.seed)
    family = f"0x{chip.uf2_family:08x}" if chip.uf2_family is not None else None
    if fmt == "uf2" and family is None:
        raise BadInput(f"{chip.name} has no UF2 family id: write .hex or .bin")
    try:
        save(image, args.output, fmt, family=family)
    except (FormatError, ValueError) as exc:
        raise BadInput(str(exc)) from None
    print(f"{args.output}: a sample for {chip.name}, {image.size} bytes in {len(image.segments)} segments "
          f"from 0x{image.start:X}" + (" (gaps filled with 0xFF)" if fmt not in ADDRESSED else ""))
    return EXIT_OK
