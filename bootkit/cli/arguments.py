"""Argument types and the argument groups several commands share."""

from __future__ import annotations

import argparse


def parse_int(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r} (use 4096 or 0x1000)") from None


def parse_vidpid(text: str) -> tuple[int, int]:
    try:
        vid, pid = text.split(":")
        return int(vid, 16), int(pid, 16)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected VID:PID in hex, e.g. 03eb:2ff4, got {text!r}") from None


def input_formats() -> tuple[str, ...]:
    """What --format takes on input.  Imported only when the parser of a command that reads a
    firmware file is built: that command loads the formats package anyway."""
    from ..formats import FORMATS

    return FORMATS


def add_input_options(sp: argparse.ArgumentParser) -> None:
    """What every command that takes a firmware FILE shares: its format and --force."""
    INPUT_FORMATS = input_formats()
    sp.add_argument("--format", dest="fmt", choices=INPUT_FORMATS, metavar="FORMAT",
                    help="FILE's format (" + ", ".join(INPUT_FORMATS) + "); default: from its content and "
                         "extension together, refusing a file they disagree on or that is not firmware")
    sp.add_argument("--force", action="store_true",
                    help="flash a UF2 file of another family, or a DFU file whose VID:PID is not the "
                         "target's (never lifts the bootloader-region or reset-vector checks)")


def add_file_arguments(sp, device_help: str, emulate_help: str) -> None:
    """What `drop` and `print` share: FILE, its format and --force, the device selection and an
    emulated target."""
    sp.add_argument("file", metavar="FILE")
    sp.add_argument("--device", type=parse_vidpid, metavar="VID:PID", help=device_help)
    sp.add_argument("--serial", help="select the device by serial number")
    sp.add_argument("--chip", help="the target chip (validates the image against it first)")
    sp.add_argument("--address", type=parse_int, help="load address of a binary file (default: the application "
                    "start of --chip/--emulate)")
    sp.add_argument("--emulate", metavar="CHIP", help=emulate_help)
    sp.add_argument("--image", metavar="FILE.bin", help="with --emulate: the chip's whole flash")
    sp.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    add_input_options(sp)
