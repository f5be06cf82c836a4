"""load / dump / save / convert, format detection, and the HEX -> UF2 ->
DfuSe -> SREC -> HEX chain."""

import pytest
from hypothesis import given, settings, strategies as st

from bootkit.formats import (
    FORMATS, FormatError, Image, convert, detect_format, dump, load, parse_bin, save, write_bin, write_hex,
)
from formats_helpers import pad, sparse_images


def chain(image: Image, tmp_path) -> Image:
    """HEX -> UF2 -> DfuSe -> SREC -> HEX through files and ``convert``."""
    save(image, tmp_path / "a.hex")
    convert(tmp_path / "a.hex", tmp_path / "b.uf2", family="stm32f4")
    # ".dfu" alone means a raw binary + DFU 1.1 suffix; DfuSe keeps the addresses
    save(load(tmp_path / "b.uf2", family="stm32f4"), tmp_path / "c.dfu", fmt="dfuse")
    convert(tmp_path / "c.dfu", tmp_path / "d.s37")
    convert(tmp_path / "d.s37", tmp_path / "e.hex")
    return load(tmp_path / "e.hex")


def test_chain_keeps_every_byte_of_an_aligned_image_with_gaps_above_64k(tmp_path):
    image = Image([
        (0x0000_0000, bytes(range(256)) * 2),
        (0x0000_FF00, b"\x5a" * 0x200),  # crosses 64 KiB
        (0x0801_0000, bytes(range(255, -1, -1)) * 3),
    ])
    assert chain(image, tmp_path) == image


def test_odd_lengths_survive_hex_srec_dfuse_bin_exactly_and_uf2_pads_with_ff(tmp_path):
    image = Image([(0x1_0003, b"odd"), (0x1_2345, bytes(range(77))), (0x2_FFFF, b"xy")], start_address=0x10003)
    for fmt in ("hex", "srec", "dfuse"):
        again = load(dump(image, fmt))
        assert again == image, fmt
        if fmt != "dfuse":  # DfuSe has no field for an entry point
            assert again.start_address == image.start_address, fmt
    for fmt in ("bin", "dfu"):
        assert load(dump(image, fmt), fmt=fmt, base=image.start) == Image([(image.start, image.tobytes())])
    uf2 = load(dump(image, "uf2"))
    assert uf2 == pad(image, 256)
    for address, data in image.segments:  # the data is there...
        assert uf2.tobytes(address, address + len(data)) == data
    rest = Image(uf2.segments)  # ...and everything else is 0xFF padding
    for address, data in image.segments:
        rest.add(address, b"\xff" * len(data), overwrite=True)
    assert set(rest.tobytes(fill=0xFF)) == {0xFF}


@settings(max_examples=60, deadline=None)
@given(sparse_images(align=256, max_len=768))
def test_chain_property(tmp_path_factory, image):
    assert chain(image, tmp_path_factory.mktemp("chain")) == image


@settings(max_examples=100, deadline=None)
@given(sparse_images(), st.sampled_from(["hex", "srec", "dfuse", "uf2", "bin", "dfu"]))
def test_every_format_write_then_load(image, fmt):
    data = dump(image, fmt)
    if image and fmt != "bin":  # raw binary has no signature to detect
        assert detect_format(data) == fmt
    if fmt in ("bin", "dfu"):
        expected = Image([(image.start, image.tobytes())]) if image else Image()
        assert load(data, fmt=fmt, base=image.start) == expected
    elif fmt == "uf2":
        assert load(data) == pad(image, 256)
    else:
        assert load(data) == image


def test_detect_format_by_content_then_extension():
    img = Image([(0x100, b"abc")])
    assert detect_format(dump(img, "hex")) == "hex"
    assert detect_format(b"\r\n  " + dump(img, "hex")) == "hex"
    assert detect_format(dump(img, "srec")) == "srec"
    assert detect_format(dump(img, "uf2"), "x.bin") == "uf2"
    assert detect_format(dump(img, "dfuse")) == "dfuse"
    assert detect_format(dump(img, "dfu")) == "dfu"
    assert detect_format(b"\x7fELF" + bytes(60)) == "elf"
    assert detect_format(b"\x00\x01", "fw.HEX") == "hex"
    assert detect_format(b"\x00\x01", "fw.s19") == "srec"
    assert detect_format(b"\x00\x01", "fw.mot") == "srec"
    assert detect_format(b"\x00\x01", "fw.ihx") == "hex"
    assert detect_format(b"\x00\x01", "fw.unknown") == "bin"
    assert detect_format(b"\x00\x01") == "bin"
    assert set(FORMATS) == {"hex", "bin", "uf2", "dfu", "dfuse", "srec", "elf"}


def test_load_path_names_the_file_in_errors(tmp_path):
    path = tmp_path / "broken.hex"
    path.write_text(":0100000041BE\n:0100010042BB\n")
    with pytest.raises(FormatError) as exc:
        load(path)
    assert str(exc.value) == f"{path}: line 2: bad checksum (expected 0xBC, got 0xBB)"
    with pytest.raises(FormatError, match=r"^job\.hex: line 2"):
        load(path.read_bytes(), source="job.hex")


def test_binary_and_plain_dfu_load_at_base(tmp_path):
    (tmp_path / "fw.bin").write_bytes(b"\x01\x02")
    assert load(tmp_path / "fw.bin").segments == [(0, b"\x01\x02")]
    assert load(tmp_path / "fw.bin", base=0x0800_0000).segments == [(0x0800_0000, b"\x01\x02")]
    save(Image([(0x100, b"ab"), (0x104, b"c")]), tmp_path / "fw.dfu", base=0xF0)
    assert load(tmp_path / "fw.dfu", base=0xF0) == Image([(0xF0, b"\xff" * 16 + b"ab\xff\xffc")])
    assert write_bin(parse_bin(b"xyz", 5)) == b"xyz"
    with pytest.raises(ValueError):
        save(Image(), tmp_path / "fw.what")


def test_hex_text_output_is_ascii_bytes():
    image = Image([(0, b"a")])
    assert dump(image, "hex") == write_hex(image).encode()
