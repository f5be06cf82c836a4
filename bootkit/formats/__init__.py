"""Firmware image formats: one sparse :class:`Image`, many file formats.

``load`` / ``dump`` / ``save`` / ``convert`` pick the format by name, by
the file's content (``detect_format``) or by its extension.
"""

from __future__ import annotations

import importlib
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from .image import FileOrigin, FormatError, Image

if TYPE_CHECKING:
    from .binary import parse_bin, write_bin
    from .dfu import DfuSuffix, add_suffix, parse_dfuse, parse_dfuse_targets, split_suffix, write_dfuse
    from .elf import parse_elf
    from .ihex import HexRecord, HexStream, iter_hex, parse_hex, write_hex
    from .srec import parse_srec, write_srec
    from .uf2 import FAMILIES, UF2Block, family_id, is_uf2_block, parse_uf2, write_uf2

# name -> the format module that defines it, imported on first use (PEP 562): every command's
# argument parser reads FORMATS, and needs none of the six format modules for that
_LAZY = {
    "parse_bin": "binary", "write_bin": "binary",
    "DfuSuffix": "dfu", "add_suffix": "dfu", "parse_dfuse": "dfu", "parse_dfuse_targets": "dfu",
    "split_suffix": "dfu", "write_dfuse": "dfu",
    "parse_elf": "elf",
    "HexRecord": "ihex", "HexStream": "ihex", "iter_hex": "ihex", "parse_hex": "ihex", "write_hex": "ihex",
    "parse_srec": "srec", "write_srec": "srec",
    "FAMILIES": "uf2", "UF2Block": "uf2", "family_id": "uf2", "is_uf2_block": "uf2", "parse_uf2": "uf2",
    "write_uf2": "uf2",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # once: later lookups do not come back here
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))

__all__ = [
    "FORMATS", "FileOrigin", "FormatError", "Image", "detect_format", "identify", "format_from_name", "load", "dump", "save", "convert",
    "parse_hex", "write_hex", "iter_hex", "HexStream", "HexRecord", "parse_bin", "write_bin",
    "parse_uf2", "write_uf2", "UF2Block", "is_uf2_block", "FAMILIES", "family_id",
    "DfuSuffix", "add_suffix", "split_suffix", "parse_dfuse", "parse_dfuse_targets", "write_dfuse",
    "parse_srec", "write_srec", "parse_elf",
]

FORMATS = ("hex", "bin", "uf2", "dfu", "dfuse", "srec", "elf")
#: formats whose files carry their load addresses; the others (a binary, a plain DFU-suffix
#: file) need one from the user or the chip
ADDRESSED = ("hex", "uf2", "dfuse", "srec", "elf")

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
    from .uf2 import UF2_BLOCK_SIZE, is_uf2_block

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


# Extensions of files that are not firmware images but get handed to a flashing tool
# by mistake (a MIDI file for `midi play`, a SysEx dump, notes, a product profile).
_NOT_FIRMWARE = {
    ".mid": "a Standard MIDI File", ".midi": "a Standard MIDI File", ".syx": "a SysEx dump",
    ".txt": "a text file", ".md": "a text file", ".json": "a JSON file", ".toml": "a TOML file",
    ".csv": "a text file", ".xml": "an XML file", ".html": "an HTML file", ".c": "C source", ".h": "C source",
    ".py": "Python source", ".zip": "a ZIP archive", ".gz": "a gzip file", ".tar": "a tar archive",
    ".png": "an image", ".jpg": "an image", ".pdf": "a PDF file", ".map": "a linker map", ".lst": "a listing",
}
_NAMES = {"hex": "Intel HEX", "srec": "S-records", "uf2": "UF2", "dfu": "a DFU suffix file", "dfuse": "DfuSe",
          "elf": "ELF", "bin": "raw binary"}
_HEX_LINE = re.compile(rb"^:[0-9A-Fa-f]{10}")
_SREC_LINE = re.compile(rb"^[Ss][0-9][0-9A-Fa-f]{6}")


def _content_kind(data: bytes) -> tuple[str | None, str | None]:
    """(format, None) when the bytes carry a firmware format's signature, (None, what) when
    they are recognisably something else, (None, None) when they could be a raw binary."""
    from .uf2 import UF2_MAGIC_START0

    if data[:4] == UF2_MAGIC_START0.to_bytes(4, "little"):
        return "uf2", None
    if data[:5] == b"DfuSe":
        return "dfuse", None
    if data[:4] == b"\x7fELF":
        return "elf", None
    first = data.lstrip()[:64]
    if _HEX_LINE.match(first):
        return "hex", None
    if _SREC_LINE.match(first):
        return "srec", None
    if len(data) >= 16 and data[-8:-5] == b"UFD" and 16 <= data[-5] <= len(data):
        return "dfu", None
    if data[:4] == b"MThd":
        return None, "a Standard MIDI File"
    if data[:1] == b"\xf0" and data.rstrip()[-1:] == b"\xf7":
        return None, "a SysEx dump"
    for magic, what in ((b"PK\x03\x04", "a ZIP archive"), (b"\x1f\x8b", "a gzip file"), (b"%PDF", "a PDF file"),
                        (b"\x89PNG", "an image")):
        if data.startswith(magic):
            return None, what
    head = data[:4096]
    text: str | None
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        text = head[:exc.start].decode("utf-8") if exc.start > len(head) - 4 else None
    if text is not None and all(c.isprintable() or c in "\r\n\t" for c in text):
        return None, "text" if text.strip() else "blank text (only spaces and line ends)"
    return None, None


def identify(data: bytes, name: str | os.PathLike | None = None, fmt: str | None = None) -> str:
    """The format of a firmware file from its content and its extension together, refusing
    (FormatError, one line naming the file) what is not a firmware image or is ambiguous.

    ``fmt`` (a --format option) is taken as given.  Otherwise a signature in the content
    (UF2 magic, "DfuSe", "\\x7fELF", a HEX or S-record first line, a DFU suffix) must agree
    with a known extension (.dfu holds a DFU suffix file or DfuSe; a .bin with a DFU suffix
    is dfu-suffix's in-place convention and reads as one); content with no signature is a
    raw binary only when the extension says .bin; a MIDI file, SysEx, text, an archive or
    an unknown extension is refused.
    """
    source = None if name is None else os.fspath(name)
    if fmt is not None:
        if fmt not in FORMATS:
            raise FormatError(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})", source=source)
        return fmt
    data = bytes(data)
    if not data:
        raise FormatError("empty file (0 bytes)", source=source)
    ext = Path(source).suffix.lower() if source else ""
    by_name = _EXTENSIONS.get(ext)
    found, other = _content_kind(data)
    if ext in _NOT_FIRMWARE and by_name is None:
        what = found and _NAMES[found] or other or _NOT_FIRMWARE[ext]
        said = f"it is {what} ({ext})" if what == _NOT_FIRMWARE[ext] else \
            f"the name says {_NOT_FIRMWARE[ext]} ({ext}), the content is {what}"
        raise FormatError(f"not a firmware image: {said}; give --format to flash it anyway", source=source)
    if found is not None:
        if by_name is None or by_name == found or (by_name == "dfu" and found == "dfuse") or \
                (by_name == "bin" and found == "dfu"):
            return "dfu" if found == "dfuse" and by_name == "dfu" else found
        raise FormatError(f"the extension says {_NAMES[by_name]} ({ext}) but the content is {_NAMES[found]}; "
                          f"rename the file or give --format", source=source)
    if other is not None and by_name in (None, "bin"):
        raise FormatError(f"not a firmware image: the content is {other}; give --format bin to flash its bytes "
                          f"anyway", source=source)
    if by_name == "bin":
        return "bin"
    if by_name is not None:
        raise FormatError(f"the extension says {_NAMES[by_name]} ({ext}) but the content is not {_NAMES[by_name]} "
                          f"(first bytes {data[:8].hex(' ')}); give --format if it is another one", source=source)
    raise FormatError(f"cannot tell the format: {'no extension' if not ext else f'unknown extension {ext}'} and no "
                      f"HEX, S-record, UF2, DFU, DfuSe or ELF signature; give --format (e.g. bin)", source=source)


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
    memory: str = "flash",
) -> Image:
    """Read a firmware file (a path, or its bytes) into an :class:`Image`.

    ``base`` is where a raw binary (or the payload of a plain ``.dfu``)
    starts, 0 by default; formats that carry addresses ignore it.
    ``family`` selects the UF2 family of a multi-family file.  ``memory``
    "eeprom" reads an AVR ELF's .eeprom section (at offset 0) instead of its
    flash; the other formats hold one memory and ignore it.  Errors name
    ``source`` (by default the path).
    """
    data, path = _read(path_or_bytes)
    source = source if source is not None else path
    if fmt is None:
        fmt = detect_format(data, path)
    if fmt == "elf":
        from .elf import parse_elf

        image = parse_elf(data, source=source, memory=memory)
    else:
        image = _parse(data, fmt, 0 if base is None else base, family, source)
    if image.origin is None or image.origin.format != fmt:
        image.origin = FileOrigin(fmt, source, uf2_families=image.origin.uf2_families if image.origin else frozenset(),
                                  dfu_ids=_suffix_ids(data) if fmt in ("dfu", "dfuse") else None)
    return image


def _suffix_ids(data: bytes) -> tuple[int, int] | None:
    """The (idVendor, idProduct) of a DFU suffix, or None when there is none."""
    from .dfu import split_suffix

    try:
        _payload, suffix = split_suffix(data)
    except FormatError:
        return None
    return None if suffix is None else (suffix.idVendor, suffix.idProduct)


def _parse(data: bytes, fmt: str, base: int, family, source) -> Image:
    from .binary import parse_bin
    from .dfu import parse_dfuse, split_suffix

    if fmt == "hex":
        from .ihex import parse_hex

        return parse_hex(data, source=source)
    if fmt == "bin":
        return parse_bin(data, base)
    if fmt == "uf2":
        from .uf2 import parse_uf2

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
        from .srec import parse_srec

        return parse_srec(data, source=source)
    if fmt == "elf":
        from .elf import parse_elf

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
        from .ihex import iter_hex

        return b"".join(iter_hex(image))
    if fmt in ("bin", "dfu"):
        start = image.start if base is None else base
        if image and image.start < start:
            raise ValueError(f"image starts at 0x{image.start:X}, below base 0x{start:X}")
        payload = image.tobytes(start, image.end) if image else b""
        if fmt == "bin":
            return payload
        from .dfu import add_suffix

        return add_suffix(payload, vid=0xFFFF if vid is None else vid, pid=0xFFFF if pid is None else pid)
    if fmt == "uf2":
        from .uf2 import write_uf2

        return write_uf2(image, family=family)
    if fmt == "dfuse":
        from .dfu import write_dfuse

        return write_dfuse(image, vid=0x0483 if vid is None else vid, pid=0xDF11 if pid is None else pid)
    if fmt == "srec":
        from .srec import write_srec

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
    if fmt == "hex":  # dump's other options (family, base, ids) do not apply to HEX
        from .ihex import iter_hex

        pieces = iter_hex(image)
        first = next(pieces)  # errors (an address above 4 GiB) before the file is opened
        with open(path, "wb") as f:  # a piece at a time: a 16 MiB image's 46 MB of text is never held
            f.write(first)
            for piece in pieces:
                f.write(piece)
        return
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
