"""What to drop on a UF2 drive: INFO_UF2.TXT read, the file kind chosen, the image
turned into the payload, all checked before anything is written."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ...formats import write_hex
from ...formats.image import FormatError, Image
from ...formats.uf2 import (
    FAMILIES,
    UF2_BLOCK_SIZE,
    UF2_FLAG_FILE_CONTAINER,
    UF2_FLAG_NOT_MAIN_FLASH,
    UF2Block,
    is_uf2_block,
    write_uf2,
)
from ...memory import Chip
from ..common import ImageRejected, check_ranges, family_name, preflight


FILE_NAMES = {"uf2": "FIRMWARE.UF2", "bin": "FIRMWARE.BIN", "hex": "FIRMWARE.HEX"}


def parse_info(text: str) -> dict[str, str]:
    """INFO_UF2.TXT as a dict ("Model", "Board-ID", "Family-ID", "Accepts", ...; "version": line 1)."""
    out = {}
    lines = text.replace("\r", "").split("\n")
    if lines:
        out["version"] = lines[0].strip()
    for line in lines[1:]:
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def _accepts(info: dict | None) -> tuple[str, ...]:
    """What the drive takes: INFO_UF2.TXT's Accepts line; UF2 for any UF2 drive; BIN for a plain drive."""
    if info is None:
        return ("bin",)
    listed = tuple(a.strip().lower() for a in info.get("Accepts", "").split(",") if a.strip())
    return listed or ("uf2",)


def family_of_drive(info: dict | None) -> tuple[int | None, str]:
    """The UF2 family the drive takes, from INFO_UF2.TXT, and where that was read.

    bootkit's drives write a ``Family-ID`` line.  uf2-samdx1 and tinyuf2 write
    none, but their Board-ID starts with the chip ("SAMD21G18A-Feather-v0",
    "STM32F411CE-blackpill-v3", "nRF52840-Feather-revD"), and the RP2040 boot
    ROM's is "RPI-RP2": the longest family name the Board-ID starts with.
    """
    if not info:
        return None, ""
    family: int | None
    if "Family-ID" in info:
        try:
            family = int(info["Family-ID"], 0)
            return family, f"the drive's Family-ID {family_name(family)}"
        except ValueError:
            pass
    board = info.get("Board-ID", "")
    key = board.strip().lower().replace("_", "-")
    names = [n for n in FAMILIES if key.startswith(n)]
    family = FAMILIES["rp2040"] if key == "rpi-rp2" else FAMILIES[max(names, key=len)] if names else None
    if family is not None:
        return family, f"the drive's Board-ID {board}, UF2 family {family_name(family)}"
    return None, ""


def app_from_current(first_block: bytes) -> tuple[int, int] | None:
    """The application region from CURRENT.UF2's first block: (start, end)."""
    if len(first_block) < UF2_BLOCK_SIZE or not is_uf2_block(first_block[:UF2_BLOCK_SIZE]):
        return None
    b = UF2Block.unpack(first_block[:UF2_BLOCK_SIZE])
    return b.target_addr, b.target_addr + b.num_blocks * b.payload_size


def _payload(image: Image, kind: str, family: int | None, app_start: int) -> bytes:
    if kind == "uf2":
        return write_uf2(image, family=family)
    if kind == "bin":
        return image.tobytes(app_start, image.end)
    return write_hex(image).encode("ascii")


def _choose_kind(requested: str | None, accepts: tuple[str, ...]) -> str:
    if requested is not None:
        requested = requested.lower()
        if requested not in FILE_NAMES:
            raise ImageRejected(f"unknown file kind {requested!r} (uf2, bin or hex)")
        if requested in accepts:
            return requested
        if "uf2" not in accepts:
            raise ImageRejected(f"the drive takes {', '.join(accepts).upper()}, not {requested.upper()}")
    return "uf2" if "uf2" in accepts else accepts[0]


@dataclass
class Drop:
    """What is written, and what the flash must hold afterwards."""

    kind: str
    payload: bytes
    expected: Image  # the data the drive takes from the file, at its addresses
    held: int | None  # index of the UF2 block sent last, once the others were read back
    foreign: str = ""  # the file has no block the drive takes (dropped with force): why it will stay


def _blocks_taken(raw: bytes, family: int | None, source: str) -> tuple[Image, int | None, str]:
    """The blocks of a UF2 file the drive takes: those of its family (tinyuf2's uf2_write_block
    programs only ``familyID == BOARD_UF2_FAMILY_ID``; uf2conv.py and a copy send every block)."""
    if len(raw) % UF2_BLOCK_SIZE:
        raise ImageRejected(f"{source}: length {len(raw)} is not a multiple of {UF2_BLOCK_SIZE} (truncated?)")
    expected = Image()
    held = None
    others: set = set()
    for i in range(len(raw) // UF2_BLOCK_SIZE):
        try:
            b = UF2Block.unpack(raw[i * UF2_BLOCK_SIZE:(i + 1) * UF2_BLOCK_SIZE], source=source, index=i)
        except FormatError as exc:
            raise ImageRejected(str(exc)) from None
        if b.family_id != family:
            others.add(b.family_id)
            continue
        held = i
        if b.flags & (UF2_FLAG_NOT_MAIN_FLASH | UF2_FLAG_FILE_CONTAINER):
            continue
        try:
            expected.add(b.target_addr, b.data)
        except FormatError as exc:
            raise ImageRejected(str(exc.at(source=source, where=f"block {i}"))) from None
    foreign = ""
    if held is None:
        names = ", ".join(family_name(f) for f in sorted(others, key=lambda f: -1 if f is None else f))
        foreign = f"its blocks are for UF2 family {names}, the drive takes {family_name(family)}"
    return expected, held, foreign


def plan_drop(image: Image, info: dict | None, app: tuple[int, int] | None, chip: Chip | None,
              requested: str | None, force: bool) -> Drop:
    """Check everything before a byte is written (issue 16: refuse before erasing)."""
    if not image:
        raise ImageRejected("the image is empty")
    kind = _choose_kind(requested, _accepts(info))
    drive_family, says = family_of_drive(info)
    origin = getattr(image, "origin", None)
    if chip is not None:
        family = chip.uf2_family
        if drive_family is not None and family is not None and drive_family != family and not force:
            raise ImageRejected(f"{says} does not match {chip.name}'s UF2 family {family_name(family)}; "
                                f"--force drops it anyway")
        app = chip.layout().application_ranges("flash")[0]
        protected, what = chip.layout().protected, chip.name
    else:
        family = drive_family
        if app is None:
            raise ImageRejected("cannot tell the application region: give the chip")
        protected, what = (), "the drive's application region"
    if chip is not None and not force:
        preflight(image, chip)  # the file's UF2 families, and on AVR/XMEGA the reset vector
    elif family is not None and origin is not None and origin.format == "uf2" and not force:
        wrong = sorted((f for f in origin.uf2_families if f != family), key=lambda f: -1 if f is None else f)
        if wrong:
            raise ImageRejected(f"UF2 family {', '.join(family_name(f) for f in wrong)} does not match "
                                f"{says}; --force drops it anyway")
    raw = None
    if kind == "uf2" and origin is not None and origin.format == "uf2" and origin.path:
        try:
            raw = Path(origin.path).read_bytes()
        except OSError:
            raw = None
    # the blocks the drive will program: its own family's (what it says, else the chip's)
    takes = drive_family if drive_family is not None else family
    foreign = ""
    if raw is not None and origin is not None:
        # a UF2 file goes as its own blocks, as uf2conv.py and a file copy send it
        expected, held, foreign = _blocks_taken(raw, takes, origin.path)
        expected.origin = origin
        payload = raw
    else:
        expected, payload = image, _payload(image, kind, family, app[0])
        held = len(payload) // UF2_BLOCK_SIZE - 1 if kind == "uf2" else None
        if kind == "uf2" and family != takes:  # forced past a drive of another family
            foreign = f"its blocks are for UF2 family {family_name(family)}, the drive takes {family_name(takes)}"
    if chip is not None:
        # what the device takes: its first word (AVR/XMEGA), whatever force says about families
        preflight(expected, chip, force=True)
    if expected:
        check_ranges(expected, [app], protected, what)
    return Drop(kind, payload, expected, held, foreign)
