"""DFU files: the DFU 1.1 suffix and ST's DfuSe container.

Suffix: USB DFU 1.1 specification, appendix B (table B-1), as dfu-util
reads and writes it (src/dfu_file.c).  The last 16 bytes of the file are
bcdDevice, idProduct, idVendor, bcdDFU (u16 LE each, 0xFFFF = any),
ucDfuSignature "DFU" stored reversed as the bytes 'U','F','D', bLength
(16) and dwCRC.  dwCRC is dfu-util's crc32_byte() loop: the reflected
CRC-32 (poly 0xEDB88320) from 0xFFFFFFFF *without* the final xor, over the
whole file except dwCRC itself, i.e. ``~zlib.crc32(body) & 0xFFFFFFFF``.

DfuSe: ST UM0391 "DfuSe File Format Specification" (and dfu-util's
dfuse-pack.py): an 11-byte prefix ("DfuSe", bVersion 1, DFUImageSize,
bTargets), then per target a 274-byte prefix ("Target", bAlternateSetting,
bTargetNamed, szTargetName[255], dwTargetSize, dwNbElements) and its
elements (dwElementAddress, dwElementSize, data), then the suffix with
bcdDFU 0x011A.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from .image import FormatError, Image

DFU_SUFFIX_LENGTH = 16
BCD_DFU_1_1 = 0x0100
BCD_DFU_DFUSE = 0x011A
_SUFFIX = struct.Struct("<HHHH3sBI")  # bcdDevice idProduct idVendor bcdDFU ucDfuSignature bLength dwCRC
_SIGNATURE = b"UFD"

_DFUSE_PREFIX = struct.Struct("<5sBIB")  # szSignature bVersion DFUImageSize bTargets
_TARGET_PREFIX = struct.Struct("<6sBI255sII")  # szSignature bAlternateSetting bTargetNamed szTargetName dwTargetSize dwNbElements
_ELEMENT = struct.Struct("<II")  # dwElementAddress dwElementSize


def dfu_crc(data: bytes) -> int:
    """dwCRC as dfu-util computes it (CRC-32 without the final xor)."""
    return ~zlib.crc32(data) & 0xFFFFFFFF


@dataclass
class DfuSuffix:
    bcdDevice: int = 0xFFFF
    idProduct: int = 0xFFFF
    idVendor: int = 0xFFFF
    bcdDFU: int = BCD_DFU_1_1
    bLength: int = DFU_SUFFIX_LENGTH
    dwCRC: int = 0


def add_suffix(
    payload: bytes, *, vid: int = 0xFFFF, pid: int = 0xFFFF, bcd_device: int = 0xFFFF, bcd_dfu: int = BCD_DFU_1_1
) -> bytes:
    """``payload`` followed by a DFU suffix with its CRC."""
    body = bytes(payload) + _SUFFIX.pack(bcd_device, pid, vid, bcd_dfu, _SIGNATURE, DFU_SUFFIX_LENGTH, 0)[:-4]
    return body + struct.pack("<I", dfu_crc(body))


def split_suffix(data: bytes, *, source: str | None = None) -> tuple[bytes, DfuSuffix | None]:
    """``(payload, suffix)``; ``(data, None)`` when there is no 'UFD' suffix."""
    data = bytes(data)
    if len(data) < DFU_SUFFIX_LENGTH or data[-8:-5] != _SIGNATURE:
        return data, None
    bcd_device, pid, vid, bcd_dfu, _, length, crc = _SUFFIX.unpack_from(data, len(data) - DFU_SUFFIX_LENGTH)
    where = f"offset 0x{len(data) - DFU_SUFFIX_LENGTH:X}"
    # dfu-util refuses a bLength below 16; a longer suffix is allowed by the spec.
    if length < DFU_SUFFIX_LENGTH or length > len(data):
        raise FormatError(f"bad DFU suffix bLength {length}", source=source, where=where)
    expected = dfu_crc(data[:-4])
    if crc != expected:
        raise FormatError(
            f"DFU suffix CRC mismatch (expected 0x{expected:08X}, file has 0x{crc:08X})", source=source, where=where
        )
    return data[:-length], DfuSuffix(bcd_device, pid, vid, bcd_dfu, length, crc)


def parse_dfuse_targets(data: bytes, *, source: str | None = None) -> list[tuple[int, str, Image]]:
    """Every target of a DfuSe file as ``(alt, name, Image)`` in file order."""
    body, _suffix = split_suffix(data, source=source)

    def fail(problem: str, offset: int) -> FormatError:
        return FormatError(problem, source=source, where=f"offset 0x{offset:X}")

    def need(offset: int, size: int, what: str) -> None:
        if offset + size > len(body):
            raise fail(f"truncated {what} ({len(body) - offset} of {size} bytes)", offset)

    need(0, _DFUSE_PREFIX.size, "DfuSe prefix")
    signature, version, image_size, n_targets = _DFUSE_PREFIX.unpack_from(body, 0)
    if signature != b"DfuSe":
        raise fail(f"wrong magic {signature!r} (expected b'DfuSe')", 0)
    if version != 1:
        raise fail(f"unsupported DfuSe bVersion {version}", 5)
    # UM0391 counts the prefix and the targets; dfuse-pack.py (dfu-util's) counts the
    # 16-byte suffix too, and ST's own DfuSe tools read those files: both are accepted.
    if image_size not in (len(body), len(data)):
        raise fail(f"DFUImageSize says {image_size} bytes, file has {len(body)} before the suffix (truncated?)", 6)
    targets = []
    offset = _DFUSE_PREFIX.size
    for _ in range(n_targets):
        need(offset, _TARGET_PREFIX.size, "target prefix")
        signature, alt, named, raw_name, target_size, n_elements = _TARGET_PREFIX.unpack_from(body, offset)
        if signature != b"Target":
            raise fail(f"wrong magic {signature!r} (expected b'Target')", offset)
        name = raw_name.split(b"\0", 1)[0].decode("latin-1") if named else ""
        offset += _TARGET_PREFIX.size
        need(offset, target_size, "target")
        end = offset + target_size
        image = Image()
        for _ in range(n_elements):
            if offset + _ELEMENT.size > end:
                raise fail("element outside its target (dwTargetSize too small)", offset)
            address, size = _ELEMENT.unpack_from(body, offset)
            offset += _ELEMENT.size
            if offset + size > end:
                raise fail(f"element of {size} bytes runs past its target (truncated?)", offset)
            try:
                image.add(address, body[offset:offset + size])
            except FormatError as exc:
                raise exc.at(source=source, where=f"offset 0x{offset:X}") from None
            offset += size
        if offset != end:
            raise fail(f"dwTargetSize {target_size} disagrees with its elements", offset)
        targets.append((alt, name, image))
    if offset != len(body):
        raise fail(f"{len(body) - offset} bytes after the last target", offset)
    return targets


def parse_dfuse(data: bytes, *, alt: int = 0, source: str | None = None) -> Image:
    """The image of the target(s) for alternate setting ``alt`` (0: internal flash)."""
    targets = parse_dfuse_targets(data, source=source)
    image = Image()
    found = False
    for target_alt, _name, target_image in targets:
        if target_alt == alt:
            found = True
            try:
                image.merge(target_image)
            except FormatError as exc:
                raise exc.at(source=source) from None
    if not found:
        have = ", ".join(str(a) for a, _, _ in targets) or "none"
        raise FormatError(f"no target for alternate setting {alt} (file has {have})", source=source)
    return image


def write_dfuse_targets(
    targets: list[tuple[int, str, Image]], *, vid: int = 0x0483, pid: int = 0xDF11, bcd_device: int = 0xFFFF
) -> bytes:
    """A DfuSe file of several ``(alt, name, Image)`` targets, one element per segment."""
    parts = []
    for alt, name, image in targets:
        elements = b"".join(_ELEMENT.pack(address, len(data)) + data for address, data in image.segments)
        raw_name = name.encode("latin-1")
        if len(raw_name) > 254:
            raise ValueError("DfuSe target name longer than 254 bytes")
        parts.append(
            _TARGET_PREFIX.pack(b"Target", alt, 1 if name else 0, raw_name, len(elements), len(image.segments))
            + elements
        )
    body = b"".join(parts)
    prefix = _DFUSE_PREFIX.pack(b"DfuSe", 1, _DFUSE_PREFIX.size + len(body), len(targets))
    return add_suffix(prefix + body, vid=vid, pid=pid, bcd_device=bcd_device, bcd_dfu=BCD_DFU_DFUSE)


def write_dfuse(
    image: Image,
    *,
    vid: int = 0x0483,
    pid: int = 0xDF11,
    bcd_device: int = 0xFFFF,
    alt: int = 0,
    name: str = "ST...",  # dfuse-pack.py's default target name
) -> bytes:
    """The image as a one-target DfuSe file (ST's DFU bootloader VID:PID by default)."""
    if image.end > 0x1_0000_0000:
        raise FormatError("address above 4 GiB cannot be expressed in DfuSe")
    return write_dfuse_targets([(alt, name, image)], vid=vid, pid=pid, bcd_device=bcd_device)
