"""The verbs next to flash and read (issue 21 item 4): ``erase``, ``verify FILE``, ``reset``
and ``info FILE``.

The first three reach the device as ``flash`` does (the same selection options, the same
:class:`~bootkit.contracts.Link`) and run :class:`~bootkit.contracts.Verbs` on the
personality's host side; a host side without it still verifies by reading back through
:meth:`HostSide.read` (a comparison that can fail), and says it cannot erase or reset alone.
``info`` only reads the file.
"""

from __future__ import annotations

import argparse
import json
import zlib
from typing import Any

from .arguments import add_input_options, parse_int
from .errors import EXIT_OK, BadInput, Failed
from .transfer import say

FMT = argparse.RawDescriptionHelpFormatter
TAIL = "\n\nexit status: 0 success, 1 the device or tool failed, 2 bad input"


def add_commands(sub, argv=()) -> None:
    from .transfer import add_selection, unknown_arguments

    s = sub.add_parser("erase", formatter_class=FMT, help="erase a device's application region",
                       description="Erase the application region (never the bootloader's). A bootloader that "
                                   "erases only as it is written says so (exit 2).",
                       epilog="examples:\n  bootkit erase --via PERSONALITY --emulate stm32f411\n"
                              "  bootkit erase --via PERSONALITY --dialect DIALECT --device VID:PID" + TAIL)
    add_selection(s, argv)
    s.set_defaults(func=cmd_erase, unknown_arguments=unknown_arguments)

    s = sub.add_parser("verify", formatter_class=FMT, help="compare a firmware file with a device's memory",
                       description="Compare FILE with what the device holds: a read-back of every byte of it, "
                                   "or the device's own CRC where that is all it has (xusb-boot). A difference "
                                   "is exit 1 naming its first address.",
                       epilog="examples:\n  bootkit verify fw.hex --via PERSONALITY --emulate atmega32u4 --image flash.bin\n"
                              "  bootkit verify fw.hex --via PERSONALITY --device VID:PID --chip atxmega128a4u"
                              + TAIL)
    s.add_argument("file", metavar="FILE")
    add_selection(s, argv)
    s.add_argument("--address", type=parse_int, help="load address of a binary file")
    add_input_options(s)
    s.set_defaults(func=cmd_verify, unknown_arguments=unknown_arguments)

    s = sub.add_parser("reset", formatter_class=FMT, help="leave the bootloader and start the application",
                       description="Send the bootloader's leave request and say what the bus then showed "
                                   "(\"application started (came back as VVVV:PPPP)\" only when seen).",
                       epilog="examples:\n  bootkit reset --via PERSONALITY --device VID:PID\n"
                              "  bootkit reset --via PERSONALITY --usbip 127.0.0.1" + TAIL)
    add_selection(s, argv)
    s.set_defaults(func=cmd_reset, unknown_arguments=unknown_arguments)

    s = sub.add_parser("info", formatter_class=FMT, help="what a firmware file holds",
                       description="FILE's format, segments (addresses and sizes), UF2 families, DFU suffix or "
                                   "DfuSe targets, CRC-32 of its bytes, and the chips of the database it fits.",
                       epilog="examples:\n  bootkit info examples/firmware/sample-atmega32u4.hex\n"
                              "  bootkit info fw.uf2 --json" + TAIL)
    s.add_argument("file", metavar="FILE")
    s.add_argument("--address", type=parse_int, help="load address of a binary file (default 0)")
    s.add_argument("--json", action="store_true", help="one JSON object")
    add_input_options(s)
    s.set_defaults(func=cmd_info)


# --------------------------------------------------------------------------
# erase, verify, reset


def _device(args):
    """The personality, its host side, options, session and link of a verb's device."""
    from .transfer import _apply_product, _prepare, needs_discovery, pick_device, quiet_progress

    quiet_progress(args)
    if args.image and not args.emulate:
        raise BadInput("--image needs --emulate CHIP")  # bad input before any device is looked for
    if needs_discovery(args):
        pick_device(args)
    settings = _apply_product(args)
    personality, options, session, link = _prepare(args, settings)
    return personality, personality.host(), options, session, link


def _cannot(personality, verb: str) -> BadInput:
    return BadInput(f"the {personality.name} host side cannot {verb} alone (it implements no "
                    f"bootkit.contracts.Verbs): bootkit flash does what it needs")


def _running(what: str, session):
    """session.talking, with a dialect's "cannot do that" (OptionError) as bad input."""
    from contextlib import contextmanager

    from ..contracts import OptionError
    from .session import talking

    @contextmanager
    def run():
        with talking(what, session):
            try:
                yield
            except OptionError as exc:
                raise BadInput(str(exc)) from None
    return run()


def cmd_erase(args) -> int:
    from ..contracts import Verbs

    personality, host, options, session, link = _device(args)
    if not isinstance(host, Verbs):
        session.close()
        raise _cannot(personality, "erase")
    with _running("erase", session):
        line = host.erase(link, dialect=args.dialect, chip=session.chip, options=options, progress=args.progress)
    say(args, f"erased: {line}")
    return EXIT_OK


def _compare(image, back) -> str:
    """The generic verify: ``back`` (a read-back) against every segment of ``image``."""
    from ..classes.native import first_difference

    for seg_start, data in image.segments:
        got = back.crop(seg_start, seg_start + len(data))
        if got.size != len(data):  # what was not read is not verified (no 0xFF filling in)
            raise Failed(f"verify failed at 0x{seg_start + got.size:X}: the device returned {got.size} of the "
                         f"{len(data)} bytes from 0x{seg_start:X}")
        differs = first_difference(seg_start, data, got.tobytes(seg_start, seg_start + len(data)))
        if differs:
            raise Failed(differs)
    return f"{image.size} bytes equal to a read-back of 0x{image.start:X}-0x{image.end - 1:X}"


def cmd_verify(args) -> int:
    from ..contracts import Verbs
    from .images import load_image, target_chip

    # not flash's input_image: a file that only compares (a data block without the reset
    # vector) is fine here; a binary goes to --address, else to the application start
    base = args.address
    chip = target_chip(args)
    if base is None and chip is not None:
        base = chip.layout().application_ranges("flash")[0][0]
    image = load_image(args.file, base=base, fmt=args.fmt, memory=args.memory)
    if not image:
        raise BadInput(f"{args.file}: holds no data to compare")
    personality, host, options, session, link = _device(args)
    with _running(args.file, session):
        if isinstance(host, Verbs):
            line = host.verify(image, link, dialect=args.dialect, chip=session.chip, options=options,
                               progress=args.progress, memory=args.memory)
        else:
            back = host.read(link, dialect=args.dialect, chip=session.chip, options=options, start=image.start,
                             length=image.end - image.start, memory=args.memory, progress=args.progress)
            line = _compare(image, back)
    say(args, f"{args.file}: verified: {line}")
    return EXIT_OK


def cmd_reset(args) -> int:
    from ..contracts import Verbs

    personality, host, options, session, link = _device(args)
    if not isinstance(host, Verbs):
        session.close()
        raise _cannot(personality, "reset")
    with _running("reset", session):
        line = host.reset(link, dialect=args.dialect, chip=session.chip, options=options)
    say(args, line)
    return EXIT_OK


# --------------------------------------------------------------------------
# info


def _fits(image) -> list[str]:
    """The database's chips the image fits: inside the application region, outside the
    bootloader's, the right UF2 family, the application's first word where it is needed."""
    from ..classes.common import check_ranges, preflight
    from ..contracts import ImageRejected
    from ..memory.chips import CHIPS

    names = []
    for chip in CHIPS:
        layout = chip.layout()
        try:
            check_ranges(image, layout.application_ranges("flash"), layout.protected, chip.name)
            preflight(image, chip)
        except ImageRejected:
            continue
        names.append(chip.name)
    return names


def _file_facts(data: bytes, image, path: str) -> dict[str, Any]:
    """What the container says beyond the bytes: a DFU suffix, DfuSe targets, UF2 families."""
    from ..formats import FormatError

    facts: dict[str, Any] = {}
    if image.origin is not None and image.origin.dfu_ids is not None:  # the formats that carry a DFU suffix
        from ..formats import parse_dfuse_targets, split_suffix

        try:
            _payload, suffix = split_suffix(data, source=path)
        except FormatError as exc:
            raise BadInput(str(exc)) from None
        if suffix is not None:
            facts["dfu_suffix"] = {"vid": f"{suffix.idVendor:04x}", "pid": f"{suffix.idProduct:04x}",
                                   "bcdDevice": f"{suffix.bcdDevice:04x}", "bcdDFU": f"{suffix.bcdDFU:04x}",
                                   "crc": f"0x{suffix.dwCRC:08X}"}
        if data[:5] == b"DfuSe":
            try:
                targets = parse_dfuse_targets(data, source=path)
            except FormatError as exc:
                raise BadInput(str(exc)) from None
            facts["dfuse_targets"] = [{"alt": alt, "name": name, "segments": len(img.segments),
                                       "bytes": img.size} for alt, name, img in targets]
    return facts


def cmd_info(args) -> int:
    from ..formats import FormatError, identify
    from .images import load_image, read_input

    data = read_input(args.file)
    try:
        fmt = identify(data, args.file, args.fmt)
    except FormatError as exc:
        raise BadInput(str(exc)) from None
    image = load_image(args.file, base=args.address, fmt=fmt)
    facts = _file_facts(data, image, args.file)
    families = sorted(f for f in (image.origin.uf2_families if image.origin else ()) if f is not None)
    segments = [{"start": f"0x{s:X}", "end": f"0x{s + len(d) - 1:X}", "bytes": len(d)} for s, d in image.segments]
    # CRC-32 (zlib's, as in a UF2 drive's or HID native bootloader's check) of the image's
    # bytes in address order, gaps left out, so two files with the same data agree whatever the format
    crc = 0
    for _s, d in image.segments:
        crc = zlib.crc32(d, crc)
    info: dict[str, Any] = {
        "file": args.file, "format": fmt, "file_bytes": len(data), "bytes": image.size, "segments": segments,
        "start": f"0x{image.start:X}" if image else None, "end": f"0x{image.end - 1:X}" if image else None,
        "entry": f"0x{image.start_address:X}" if image.start_address is not None else None,
        "crc32": f"0x{crc:08X}", **facts,
    }
    if families:
        from ..formats.uf2 import _family_name

        info["uf2_families"] = [_family_name(f) for f in families]
    if image.origin is not None and image.origin.eeprom:
        info["eeprom_bytes"] = image.origin.eeprom
    info["fits"] = _fits(image) if image else []
    if args.json:
        print(json.dumps(info))
        return EXIT_OK
    print(f"{args.file}: {fmt}, {len(data)} bytes on disk, {image.size} bytes of data in "
          f"{len(segments)} segment(s), CRC-32 {info['crc32']}")
    for seg in segments:
        print(f"  {seg['start']}-{seg['end']}  {seg['bytes']} bytes")
    if info["entry"]:
        print(f"  entry point {info['entry']}")
    if families:
        print(f"  UF2 families: {', '.join(info['uf2_families'])}")
    if "dfu_suffix" in info:
        sfx = info["dfu_suffix"]
        print(f"  DFU suffix: {sfx['vid']}:{sfx['pid']} bcdDevice {sfx['bcdDevice']} bcdDFU {sfx['bcdDFU']} "
              f"CRC {sfx['crc']}")
    for t in info.get("dfuse_targets", ()):
        print(f"  DfuSe target alt {t['alt']} {t['name']!r}: {t['segments']} element(s), {t['bytes']} bytes")
    if "eeprom_bytes" in info:
        print(f"  EEPROM: {info['eeprom_bytes']} bytes (.eeprom)")
    fits = info["fits"]
    print(f"  fits: {', '.join(fits) if fits else 'no chip of the database (bootkit chips)'}")
    return EXIT_OK
