"""Firmware image formats: one sparse :class:`Image`, many file formats.

``load`` / ``dump`` / ``save`` / ``convert`` pick the format by name, by
the file's content (``detect_format``) or by its extension.
"""

from __future__ import annotations

import os
from pathlib import Path

from .binary import parse_bin, write_bin
from .dfu import DfuSuffix, add_suffix, parse_dfuse, parse_dfuse_targets, split_suffix, write_dfuse
from .elf import parse_elf
from .ihex import HexRecord, HexStream, parse_hex, write_hex
from .image import FileOrigin, FormatError, Image
from .srec import parse_srec, write_srec
from .uf2 import FAMILIES, UF2Block, family_id, is_uf2_block, parse_uf2, write_uf2

__all__ = [
    "FORMATS", "FileOrigin", "FormatError", "Image", "detect_format", "format_from_name", "load", "dump", "save", "convert",
    "parse_hex", "write_hex", "HexStream", "HexRecord", "parse_bin", "write_bin",
    "parse_uf2", "write_uf2", "UF2Block", "is_uf2_block", "FAMILIES", "family_id",
    "DfuSuffix", "add_suffix", "split_suffix", "parse_dfuse", "parse_dfuse_targets", "write_dfuse",
    "parse_srec", "write_srec", "parse_elf",
]

FORMATS = ("hex", "bin", "uf2", "dfu", "dfuse", "srec", "elf")

_EXTENSIONS = {
    ".bin": "bin", ".hex": "hex", ".ihx": "hex", ".ihex": "hex",
    ".srec": "srec", ".s19": "srec", ".s28": "srec", ".s37": "srec", ".mot": "srec",
    ".uf2": "uf2", ".dfu": "dfu", ".elf": "elf",
}


def format_from_name(name: str | os.PathLike | None) -> str | None:
    """The format a file name's extension stands for, or None."""
    if name is None:
        return None
    return _EXTENSIONS.get(Path(name).suffix.lower())


def detect_format(data: bytes, name: str | os.PathLike | None = None) -> str:
    """Guess a file's format from its content first, then its name; "bin" if nothing fits."""
    from .uf2 import UF2_BLOCK_SIZE

    data = bytes(data)
    if len(data) >= UF2_BLOCK_SIZE and is_uf2_block(data[:UF2_BLOCK_SIZE]):
        return "uf2"
    if data[:5] == b"DfuSe":
        return "dfuse"
    if len(data) >= 16 and data[-8:-5] == b"UFD" and 16 <= data[-5] <= len(data):
        return "dfu"
    if data[:4] == b"\x7fELF":
        return "elf"
    text = data[:4096].lstrip()
    if text[:1] == b":":
        return "hex"
    if len(text) >= 2 and text[:1] in (b"S", b"s") and text[1:2] in b"0123456789":
        return "srec"
    return format_from_name(name) or "bin"


def _read(path_or_bytes) -> tuple[bytes, str | None]:
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        return bytes(path_or_bytes), None
    return Path(path_or_bytes).read_bytes(), os.fspath(path_or_bytes)


def load(
    path_or_bytes,
    *,
    fmt: str | None = None,
    base: int | None = None,
    family: str | int | None = None,
    source: str | None = None,
) -> Image:
    """Read a firmware file (a path, or its bytes) into an :class:`Image`.

    ``base`` is where a raw binary (or the payload of a plain ``.dfu``)
    starts, 0 by default; formats that carry addresses ignore it.
    ``family`` selects the UF2 family of a multi-family file.  Errors name
    ``source`` (by default the path).
    """
    data, path = _read(path_or_bytes)
    source = source if source is not None else path
    if fmt is None:
        fmt = detect_format(data, path)
    image = _parse(data, fmt, 0 if base is None else base, family, source)
    if image.origin is None or image.origin.format != fmt:
        image.origin = FileOrigin(fmt, source, uf2_families=image.origin.uf2_families if image.origin else frozenset(),
                                  dfu_ids=_suffix_ids(data) if fmt in ("dfu", "dfuse") else None)
    return image


def _suffix_ids(data: bytes) -> tuple[int, int] | None:
    """The (idVendor, idProduct) of a DFU suffix, or None when there is none."""
    try:
        _payload, suffix = split_suffix(data)
    except FormatError:
        return None
    return None if suffix is None else (suffix.idVendor, suffix.idProduct)


def _parse(data: bytes, fmt: str, base: int, family, source) -> Image:
    if fmt == "hex":
        return parse_hex(data, source=source)
    if fmt == "bin":
        return parse_bin(data, base)
    if fmt == "uf2":
        return parse_uf2(data, family=family, source=source)
    if fmt == "dfu":
        # ".dfu" covers both a raw binary with a DFU 1.1 suffix and DfuSe.
        if data[:5] == b"DfuSe":
            return parse_dfuse(data, source=source)
        payload, _suffix = split_suffix(data, source=source)
        return parse_bin(payload, base)
    if fmt == "dfuse":
        return parse_dfuse(data, source=source)
    if fmt == "srec":
        return parse_srec(data, source=source)
    if fmt == "elf":
        return parse_elf(data, source=source)
    raise ValueError(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})")


def dump(
    image: Image,
    fmt: str,
    *,
    family: str | int | None = None,
    base: int | None = None,
    vid: int | None = None,
    pid: int | None = None,
) -> bytes:
    """The image as the bytes of a ``fmt`` file.

    ``base`` makes a binary (or plain ``.dfu``) start at that address
    instead of the image's lowest one.  ``vid``/``pid`` go into the DFU
    suffix (default 0xFFFF "any" for ``dfu``, ST's 0483:DF11 for ``dfuse``).
    """
    if fmt == "hex":
        return write_hex(image).encode("ascii")
    if fmt in ("bin", "dfu"):
        start = image.start if base is None else base
        if image and image.start < start:
            raise ValueError(f"image starts at 0x{image.start:X}, below base 0x{start:X}")
        payload = image.tobytes(start, image.end) if image else b""
        if fmt == "bin":
            return payload
        return add_suffix(payload, vid=0xFFFF if vid is None else vid, pid=0xFFFF if pid is None else pid)
    if fmt == "uf2":
        return write_uf2(image, family=family)
    if fmt == "dfuse":
        return write_dfuse(image, vid=0x0483 if vid is None else vid, pid=0xDF11 if pid is None else pid)
    if fmt == "srec":
        return write_srec(image).encode("ascii")
    if fmt == "elf":
        raise ValueError("writing ELF is not supported")
    raise ValueError(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})")


def save(image: Image, path: str | os.PathLike, fmt: str | None = None, **kw) -> None:
    """Write the image to ``path``; the format comes from the extension when ``fmt`` is None."""
    if fmt is None:
        fmt = format_from_name(path)
        if fmt is None:
            raise ValueError(f"cannot tell the format from {os.fspath(path)!r}; pass fmt= one of {', '.join(FORMATS)}")
    Path(path).write_bytes(dump(image, fmt, **kw))


def convert(
    src_path: str | os.PathLike,
    dst_path: str | os.PathLike,
    *,
    base: int | None = None,
    family: str | int | None = None,
) -> Image:
    """Read ``src_path`` and write it to ``dst_path`` in the format its extension names.

    ``base`` is where a binary source starts; ``family`` selects a UF2
    family when reading and is written into a UF2 output.  Returns the image.
    """
    image = load(src_path, base=base, family=family)
    save(image, dst_path, family=family)
    return image
