"""Firmware input for host commands: read FILE, tell its format, place a binary, check it
against the target chip before any device is touched; and the chip named on the command line."""

from __future__ import annotations

from pathlib import Path

from ..classes.common import ImageRejected
from .errors import BadInput


def read_input(path: str) -> bytes:
    """An input file's bytes; a missing or unreadable one is one line (BadInput)."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise BadInput(f"{path}: no such file") from None
    except OSError as exc:
        raise BadInput(f"{path}: cannot read: {exc.strerror or exc}") from None


def load_image(path: str, *, base=None, family=None, fmt=None, memory: str = "flash"):
    """A firmware file as an Image: format from --format, else content and extension
    together (formats.identify refuses a MIDI file, text, an unknown or contradicting
    one); every problem is one line (BadInput)."""
    from ..formats import FormatError, identify, load

    data = read_input(path)
    try:
        fmt = identify(data, path, fmt)
        return load(data, fmt=fmt, base=base, family=family, source=path, memory=memory)
    except FormatError as exc:
        raise BadInput(str(exc)) from None
    except ValueError as exc:  # e.g. an unknown --family name
        raise BadInput(f"{path}: {exc}") from None


def target_chip(args):
    """The chip an image is checked against before any device is touched: --chip (or the
    product's), else the emulated one; None for a real device named by neither."""
    return find_chip(args.chip) if getattr(args, "chip", None) else find_chip(getattr(args, "emulate", None))


def input_image(args, chip, *, memory: str = "flash"):
    """Load FILE for a host command and check it against ``chip`` before any device is
    touched.

    - A binary (or the payload of a plain DFU-suffix file) carries no address: it goes
      to --address, else to the application start of the known chip (what `flash --help`
      promises); with no chip known it is refused, since a wrong guess writes the
      application at the wrong place (a DfuSe download needs an address too).
    - A UF2 file is read with the chip's family selected, so a multi-family file keeps
      only the chip's blocks (as a UF2 bootloader does: uf2conv.py / tinyuf2 skip blocks
      of another familyID); a file with none of them, or blocks without a familyID, is
      refused by common.preflight, naming both families, unless --force.
    """
    from ..classes.common import firmware_image

    path = args.file
    try:
        return firmware_image(read_input(path), path, chip=chip, address=getattr(args, "address", None),
                              fmt=getattr(args, "fmt", None), memory=memory, force=getattr(args, "force", False),
                              give="give --address, or --chip so it goes to the application start")
    except ImageRejected as exc:
        raise BadInput(str(exc)) from None


def find_chip(name):
    from ..memory import get_chip

    if name is None:
        return None
    try:
        return get_chip(name)
    except KeyError:
        pass
    from ..registry import resolve_chip  # only then: it loads the personalities

    try:
        return resolve_chip(name)
    except KeyError as exc:
        raise BadInput(exc.args[0]) from None
