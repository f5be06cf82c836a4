"""UF2, Microsoft's flashing format for mass-storage bootloaders.

Layout from the spec (github.com/microsoft/uf2, README "File format"):
each 512-byte block is eight little-endian u32 (magicStart0, magicStart1,
flags, targetAddr, payloadSize, blockNo, numBlocks, fileSize-or-familyID),
476 bytes of data (payload first), then magicEnd.  Writing follows
``uf2conv.py``: 256-byte payloads at 256-aligned target addresses.
"""

from __future__ import annotations

import struct
import sys
from array import array
from dataclasses import dataclass

from .image import FileOrigin, FormatError, Image

UF2_MAGIC_START0 = 0x0A324655  # "UF2\n"
UF2_MAGIC_START1 = 0x9E5D5157
UF2_MAGIC_END = 0x0AB16F30
UF2_BLOCK_SIZE = 512
UF2_DATA_SIZE = 476

UF2_FLAG_NOT_MAIN_FLASH = 0x00000001
UF2_FLAG_FILE_CONTAINER = 0x00001000
UF2_FLAG_FAMILY_ID_PRESENT = 0x00002000
UF2_FLAG_MD5_CHECKSUM_PRESENT = 0x00004000
UF2_FLAG_EXTENSION_TAGS_PRESENT = 0x00008000

_HEADER = struct.Struct("<8I")
_U32 = "I" if array("I").itemsize == 4 else "L"  # the array typecode of a 32-bit unsigned int
_END = struct.Struct("<I")

# A subset of utils/uf2families.json in microsoft/uf2 (short_name lowercased).
FAMILIES: dict[str, int] = {
    "atmega32": 0x16573617,
    "saml21": 0x1851780A,
    "samd21": 0x68ED2B88,
    "samd51": 0x55114460,
    "nrf52": 0x1B57745F,
    "nrf52833": 0x621E937A,
    "nrf52840": 0xADA52840,
    "stm32f0": 0x647824B6,
    "stm32f1": 0x5EE21072,
    "stm32f2": 0x5D1A0A2E,
    "stm32f3": 0x6B846188,
    "stm32f4": 0x57755A57,
    "stm32f407": 0x6D0922FA,
    "stm32f7": 0x53B80F00,
    "stm32g0": 0x300F5633,
    "stm32g4": 0x4C71240A,
    "stm32h7": 0x6DB66082,
    "stm32l0": 0x202E3A91,
    "stm32l1": 0x1E1F432D,
    "stm32l4": 0x00FF6919,
    "stm32l5": 0x04240BDF,
    "stm32wb": 0x70D16653,
    "stm32wl": 0x21460FF0,
    "esp32": 0x1C5F21B0,
    "esp32s2": 0xBFDD4EEE,
    "esp32s3": 0xC47E5767,
    "esp32c3": 0xD42BA06C,
    "rp2040": 0xE48BFF56,
    "rp2350": 0xE48BFF59,  # uf2families.json rp2350_arm_s: the RP2350's ARM secure image
    "rp2350riscv": 0xE48BFF5A,
    "rp2xxxabsolute": 0xE48BFF57,
    "mimxrt10xx": 0x4FB2D5BD,
    "lpc55": 0x2ABC77EC,
    "gd32f350": 0x31D228C6,
}


def family_id(name_or_number: str | int) -> int:
    """A family ID from a name in :data:`FAMILIES` (any case) or a number ("0x...")."""
    if isinstance(name_or_number, int):
        value = name_or_number
    else:
        key = name_or_number.strip().lower().replace("-", "").replace("_", "")
        if key in FAMILIES:
            return FAMILIES[key]
        try:
            value = int(name_or_number, 0)
        except ValueError:
            raise ValueError(
                f"unknown UF2 family {name_or_number!r} (known: {', '.join(sorted(FAMILIES))}, or a number like 0xe48bff56)"
            ) from None
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"UF2 family ID 0x{value:X} does not fit in 32 bits")
    return value


def _family_name(value: int) -> str:
    names = [n for n, v in FAMILIES.items() if v == value]
    return f"{names[0]} (0x{value:08X})" if names else f"0x{value:08X}"


def is_uf2_block(buf: bytes) -> bool:
    """True if ``buf`` is a 512-byte block with the three UF2 magic numbers."""
    if len(buf) != UF2_BLOCK_SIZE:
        return False
    m0, m1 = struct.unpack_from("<II", buf, 0)
    return m0 == UF2_MAGIC_START0 and m1 == UF2_MAGIC_START1 and _END.unpack_from(buf, 508)[0] == UF2_MAGIC_END


@dataclass
class UF2Block:
    """One UF2 block.  ``data`` is the payload (``payloadSize`` bytes);
    ``extra`` is the rest of the 476-byte data area (MD5, extension tags,
    padding), kept so that ``unpack`` then ``pack`` gives the same bytes."""

    flags: int
    target_addr: int
    block_no: int
    num_blocks: int
    file_size_or_family_id: int  # fileSize, or familyID when that flag is set
    data: bytes
    extra: bytes = b""

    @property
    def payload_size(self) -> int:
        return len(self.data)

    @property
    def family_id(self) -> int | None:
        """familyID if the block carries one (flag 0x00002000), else None."""
        return self.file_size_or_family_id if self.flags & UF2_FLAG_FAMILY_ID_PRESENT else None

    def pack(self) -> bytes:
        if len(self.data) + len(self.extra) > UF2_DATA_SIZE:
            raise ValueError(f"payload {len(self.data)} + extra {len(self.extra)} bytes exceed {UF2_DATA_SIZE}")
        header = _HEADER.pack(
            UF2_MAGIC_START0, UF2_MAGIC_START1, self.flags, self.target_addr, len(self.data),
            self.block_no, self.num_blocks, self.file_size_or_family_id,
        )
        area = (bytes(self.data) + bytes(self.extra)).ljust(UF2_DATA_SIZE, b"\0")
        return header + area + _END.pack(UF2_MAGIC_END)

    @classmethod
    def unpack(cls, buf: bytes | memoryview, *, source: str | None = None, index: int | None = None) -> "UF2Block":
        where = None if index is None else f"block {index}"

        def fail(problem: str) -> FormatError:
            return FormatError(problem, source=source, where=where)

        if len(buf) != UF2_BLOCK_SIZE:
            raise fail(f"block is {len(buf)} bytes, not {UF2_BLOCK_SIZE} (truncated?)")
        m0, m1, flags, target, size, block_no, num_blocks, fsize = _HEADER.unpack_from(buf, 0)
        (m_end,) = _END.unpack_from(buf, 508)
        if m0 != UF2_MAGIC_START0 or m1 != UF2_MAGIC_START1:
            raise fail(f"bad magic (magicStart0 0x{m0:08X}, magicStart1 0x{m1:08X})")
        if m_end != UF2_MAGIC_END:
            raise fail(f"bad magic (magicEnd 0x{m_end:08X})")
        if size > UF2_DATA_SIZE:
            raise fail(f"payloadSize {size} exceeds {UF2_DATA_SIZE}")
        if block_no >= num_blocks:
            raise fail(f"blockNo {block_no} not below numBlocks {num_blocks}")
        area = buf[32:32 + UF2_DATA_SIZE]
        return cls(flags, target, block_no, num_blocks, fsize, bytes(area[:size]), bytes(area[size:]))


def parse_uf2(data: bytes, *, family: str | int | None = None, source: str | None = None) -> Image:
    """The flash contents of a UF2 file.

    Blocks flagged "not main flash" and file-container blocks are skipped.
    With ``family``, blocks carrying a different familyID are skipped (a
    multi-family file); blocks without a familyID always count.  Every
    group of blocks (one per familyID) must be complete (numBlocks blocks).
    """
    want = None if family is None else family_id(family)
    if len(data) % UF2_BLOCK_SIZE:
        raise FormatError(
            f"file length {len(data)} is not a multiple of {UF2_BLOCK_SIZE} (truncated?)",
            source=source, where=f"block {len(data) // UF2_BLOCK_SIZE}",
        )
    image = Image()
    seen: dict[int | None, tuple[int, set[int], int]] = {}  # family -> numBlocks, blockNos, first index
    families: set[int] = set()
    kept: set[int | None] = set()
    used = 0
    view = memoryview(data)
    for index in range(len(data) // UF2_BLOCK_SIZE):
        block = UF2Block.unpack(view[index * UF2_BLOCK_SIZE:(index + 1) * UF2_BLOCK_SIZE], source=source, index=index)
        fam = block.family_id
        if fam is not None:
            families.add(fam)
        if want is not None and fam is not None and fam != want:
            continue
        num, numbers, first = seen.setdefault(fam, (block.num_blocks, set(), index))
        if block.num_blocks != num:
            raise FormatError(
                f"numBlocks {block.num_blocks} differs from {num} in block {first}", source=source, where=f"block {index}"
            )
        if block.block_no in numbers:
            raise FormatError(f"duplicate blockNo {block.block_no}", source=source, where=f"block {index}")
        numbers.add(block.block_no)
        kept.add(fam)
        used += 1
        if block.flags & (UF2_FLAG_NOT_MAIN_FLASH | UF2_FLAG_FILE_CONTAINER):
            continue
        try:
            image.add(block.target_addr, block.data)
        except FormatError as exc:
            raise exc.at(source=source, where=f"block {index}") from None
    for fam, (num, numbers, first) in seen.items():
        if len(numbers) != num:
            # numBlocks is the file's word (up to 2**32): never build range(num)
            missing = next(i for i in range(num) if i not in numbers)
            raise FormatError(
                f"{num - len(numbers)} of {num} blocks missing, first blockNo {missing} (truncated?)", source=source
            )
    if want is not None and not used and data:
        have = ", ".join(_family_name(f) for f in sorted(families)) or "none"
        raise FormatError(f"no blocks for family {_family_name(want)} (file has {have})", source=source)
    image.origin = FileOrigin("uf2", source, uf2_families=frozenset(kept))
    return image


def write_uf2(image: Image, *, family: str | int | None = None, payload_size: int = 256) -> bytes:
    """The image as UF2 blocks, like ``uf2conv.py``.

    Each block carries ``payload_size`` bytes at a ``payload_size``-aligned
    targetAddr; only chunks holding data are emitted, and gaps inside a
    chunk are 0xFF (erased flash), so a sparse or odd-length image comes
    back padded to whole chunks.

    Written by hand for speed (UF2Block.pack per block was 3.5-4.2x a plain
    struct.pack_into writer; issue 22): one buffer of identical blocks (magic numbers,
    flags, payloadSize, numBlocks, familyID, magicEnd), the targetAddr and blockNo columns
    set for all blocks at once by strided slice assignment, and one slice copy per block
    for its payload.
    """
    if not 0 < payload_size <= UF2_DATA_SIZE:
        raise ValueError(f"payload_size must be 1..{UF2_DATA_SIZE}")
    fam = None if family is None else family_id(family)
    flags = 0 if fam is None else UF2_FLAG_FAMILY_ID_PRESENT
    size = payload_size
    # the chunks holding data, in address order: (first address, chunks, segment view, its
    # start) for a run of whole chunks inside one segment, (address, 1, bytes, None) for a
    # chunk the segment covers only in part (the neighbours' bytes or 0xFF fill the rest)
    plan: list[tuple[int, int, memoryview | bytes, int | None]] = []
    last = -1  # the last chunk planned
    for start, chunk in image._iter_chunks():
        end = start + len(chunk)
        page = start - start % size
        if page == last:  # shared with the segment before: already planned with both
            page += size
        if page < start and page < end:
            plan.append((page, 1, image.tobytes(page, page + size, 0xFF), None))
            last = page
            page += size
        whole = max(0, (end - page) // size)
        if whole:
            plan.append((page, whole, memoryview(chunk), start))
            last = page + (whole - 1) * size
            page += whole * size
        if page < end:
            plan.append((page, 1, image.tobytes(page, page + size, 0xFF), None))
            last = page
    if plan and plan[-1][0] + plan[-1][1] * size > 0x1_0000_0000:
        raise FormatError("address above 4 GiB cannot be expressed in UF2")
    count = sum(n for _, n, _, _ in plan)
    block = bytearray(UF2_BLOCK_SIZE)
    _HEADER.pack_into(block, 0, UF2_MAGIC_START0, UF2_MAGIC_START1, flags, 0, size, 0, count, fam or 0)
    _END.pack_into(block, UF2_BLOCK_SIZE - 4, UF2_MAGIC_END)
    out = block * count
    addresses = array(_U32)
    offset = 32  # the payload of block 0
    for address, n, data, first in plan:
        addresses.extend(range(address, address + n * size, size))
        if first is None:
            out[offset:offset + size] = data
            offset += UF2_BLOCK_SIZE
            continue
        i = address - first
        for _ in range(n):
            out[offset:offset + size] = data[i:i + size]
            offset += UF2_BLOCK_SIZE
            i += size
    numbers = array(_U32, range(count))
    if sys.byteorder == "big":  # UF2 is little-endian
        addresses.byteswap()
        numbers.byteswap()
    for field, column in ((12, addresses.tobytes()), (20, numbers.tobytes())):  # targetAddr, blockNo
        for b in range(4):
            out[field + b::UF2_BLOCK_SIZE] = column[b::4]
    return bytes(out)
