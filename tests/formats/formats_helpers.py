"""Shared hypothesis strategies and helpers for the formats tests."""

from __future__ import annotations

from hypothesis import strategies as st

from bootkit.formats import Image


@st.composite
def sparse_images(draw, *, max_segments=4, max_len=700, align=1, high=True):
    """Random sparse images: gaps, odd lengths, 64 KiB crossings, high bases.

    With ``align`` > 1 every segment starts on and spans whole ``align`` units.
    """
    n = draw(st.integers(0, max_segments))
    if high:
        address = draw(st.sampled_from([0, 0x100, 0xFF00, 0x1FFF0, 0x08000000, 0x10000000]))
    else:
        address = 0
    address += draw(st.integers(0, 0x3000))
    segments = []
    for _ in range(n):
        address = -(-address // align) * align
        units = draw(st.integers(1, max(1, max_len // align)))
        length = units * align if align > 1 else draw(st.integers(1, max_len))
        segments.append((address, draw(st.binary(min_size=length, max_size=length))))
        gap = draw(st.one_of(st.integers(1, 300), st.integers(0x100, 0x30000)))
        address += length + gap * align
    start = draw(st.one_of(st.none(), st.integers(1, 0xFFFFFFFF)))
    return Image(segments, start_address=start)


def pad(image: Image, unit: int, fill: int = 0xFF) -> Image:
    """The image as UF2 stores it: whole ``unit`` chunks, gaps inside a chunk filled."""
    return Image(image.pages(unit, fill))


def intelhex_to_image(ih) -> Image:
    """An intelhex.IntelHex object as our Image (the reference for agreement tests)."""
    image = Image((start, ih.gets(start, end - start)) for start, end in ih.segments())
    sa = ih.start_addr
    if sa:
        if "EIP" in sa:
            image.start_address, image.start_address_kind = sa["EIP"], "linear"
        else:
            image.start_address, image.start_address_kind = (sa["CS"] << 16) | sa["IP"], "segment"
    return image


def record(rectype: int, offset: int, data: bytes = b"", *, checksum: int | None = None) -> str:
    """One Intel HEX record line (no line end), with a correct checksum unless given."""
    body = bytes([len(data), offset >> 8, offset & 0xFF, rectype]) + data
    cs = (-sum(body)) & 0xFF if checksum is None else checksum
    return ":" + body.hex().upper() + f"{cs:02X}"
