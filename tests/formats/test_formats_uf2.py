import struct

import pytest
from hypothesis import given, settings, strategies as st

from bootkit.formats import FAMILIES, FormatError, Image, UF2Block, family_id, is_uf2_block, parse_uf2, write_uf2
from bootkit.formats.uf2 import UF2_FLAG_FAMILY_ID_PRESENT, UF2_FLAG_NOT_MAIN_FLASH
from formats_helpers import pad, sparse_images


def test_families_and_family_id():
    assert FAMILIES["rp2040"] == 0xE48BFF56 and FAMILIES["nrf52840"] == 0xADA52840
    assert FAMILIES["stm32f1"] == 0x5EE21072 and FAMILIES["stm32f4"] == 0x57755A57
    assert FAMILIES["samd21"] == 0x68ED2B88 and FAMILIES["samd51"] == 0x55114460
    assert FAMILIES["atmega32"] == 0x16573617
    assert family_id("RP2040") == family_id("0xe48bff56") == family_id(0xE48BFF56) == 0xE48BFF56
    with pytest.raises(ValueError):
        family_id("no-such-chip")


def test_block_layout_matches_the_spec():
    block = UF2Block(UF2_FLAG_FAMILY_ID_PRESENT, 0x10000100, 3, 9, 0xE48BFF56, b"\xAA" * 256)
    raw = block.pack()
    assert len(raw) == 512 and is_uf2_block(raw)
    assert raw[:4] == b"UF2\n"
    assert struct.unpack_from("<8I", raw) == (
        0x0A324655, 0x9E5D5157, 0x2000, 0x10000100, 256, 3, 9, 0xE48BFF56,
    )
    assert raw[32:288] == b"\xAA" * 256 and raw[288:508] == bytes(220)
    assert struct.unpack_from("<I", raw, 508) == (0x0AB16F30,)
    again = UF2Block.unpack(raw)
    assert again == UF2Block(0x2000, 0x10000100, 3, 9, 0xE48BFF56, b"\xAA" * 256, bytes(220))
    assert again.pack() == raw and again.family_id == 0xE48BFF56 and again.payload_size == 256
    assert not is_uf2_block(raw[:511]) and not is_uf2_block(bytes(512))


def test_write_uf2_chunks_are_256_aligned_padded_and_numbered():
    image = Image([(0x2000_0010, b"\x01" * 300), (0x2000_1000, b"\x02")])
    data = write_uf2(image, family="rp2040")
    blocks = [UF2Block.unpack(data[i:i + 512]) for i in range(0, len(data), 512)]
    assert [(b.target_addr, b.block_no, b.num_blocks) for b in blocks] == [
        (0x2000_0000, 0, 3), (0x2000_0100, 1, 3), (0x2000_1000, 2, 3),
    ]
    assert all(b.flags == UF2_FLAG_FAMILY_ID_PRESENT and b.family_id == 0xE48BFF56 for b in blocks)
    assert blocks[0].data == b"\xff" * 16 + b"\x01" * 240
    assert blocks[1].data == b"\x01" * 60 + b"\xff" * 196
    assert blocks[2].data == b"\x02" + b"\xff" * 255
    # an odd-length segment comes back as its data plus 0xFF padding only
    assert parse_uf2(data) == pad(image, 256)
    assert parse_uf2(data).crop(0x2000_0010, 0x2000_0010 + 300) == image.crop(0x2000_0000, 0x2000_0200)
    assert write_uf2(image)[8:12] == b"\0\0\0\0"  # no flags without a family


def test_multi_family_and_not_main_flash():
    a = write_uf2(Image([(0x1000, b"A" * 256)]), family="rp2040")
    b = write_uf2(Image([(0x1000, b"B" * 256)]), family="samd51")
    extra = UF2Block(UF2_FLAG_NOT_MAIN_FLASH, 0x0, 0, 1, 0, b"C" * 256).pack()
    both = a + b
    assert parse_uf2(both, family="rp2040").segments == [(0x1000, b"A" * 256)]
    assert parse_uf2(both, family="samd51").segments == [(0x1000, b"B" * 256)]
    assert parse_uf2(a + extra).segments == [(0x1000, b"A" * 256)]
    with pytest.raises(FormatError) as exc:
        parse_uf2(both, family="nrf52840", source="x.uf2")
    assert str(exc.value) == (
        "x.uf2: no blocks for family nrf52840 (0xADA52840) "
        "(file has samd51 (0x55114460), rp2040 (0xE48BFF56))"
    )
    with pytest.raises(FormatError) as exc:  # both families claim 0x1000 with different data
        parse_uf2(both, source="x.uf2")
    assert str(exc.value) == "x.uf2: block 1: overlapping data at 0x00001000"


def blocks_of(n=3):
    return write_uf2(Image([(0, bytes(range(256)) * n)]))


def test_errors_name_the_block():
    data = bytearray(blocks_of())
    cases = []
    bad = bytearray(data); bad[512 + 4] ^= 1
    cases.append((bad, "x.uf2: block 1: bad magic (magicStart0 0x0A324655, magicStart1 0x9E5D5156)"))
    bad = bytearray(data); bad[1024 + 508] = 0
    cases.append((bad, "x.uf2: block 2: bad magic (magicEnd 0x0AB16F00)"))
    bad = bytearray(data); struct.pack_into("<I", bad, 512 + 16, 477)
    cases.append((bad, "x.uf2: block 1: payloadSize 477 exceeds 476"))
    bad = bytearray(data); struct.pack_into("<I", bad, 20, 3)
    cases.append((bad, "x.uf2: block 0: blockNo 3 not below numBlocks 3"))
    cases.append((data[:1000], "x.uf2: block 1: file length 1000 is not a multiple of 512 (truncated?)"))
    cases.append((data[:1024], "x.uf2: 1 of 3 blocks missing, first blockNo 2 (truncated?)"))
    for raw, message in cases:
        with pytest.raises(FormatError) as exc:
            parse_uf2(bytes(raw), source="x.uf2")
        assert str(exc.value) == message


@settings(max_examples=100, deadline=None)
@given(sparse_images(align=256, max_len=1024))
def test_uf2_roundtrip_of_256_aligned_images_is_exact(image):
    assert parse_uf2(write_uf2(image, family="stm32f4"), family="stm32f4") == image


@settings(max_examples=100, deadline=None)
@given(sparse_images())
def test_uf2_roundtrip_of_any_image_adds_only_ff_padding(image):
    assert parse_uf2(write_uf2(image)) == pad(image, 256)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=1100), st.lists(st.sampled_from([blocks_of(1), bytes(512)]), max_size=3).map(b"".join)),
       st.data())
def test_garbage_into_parse_uf2_raises_only_format_error(raw, data):
    raw = bytearray(raw)
    if raw:
        for _ in range(data.draw(st.integers(0, 4))):
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    try:
        parse_uf2(bytes(raw), family=data.draw(st.sampled_from([None, "rp2040"])))
    except FormatError:
        pass


def test_a_huge_numblocks_is_a_missing_blocks_error_not_a_huge_allocation():
    # numBlocks comes from the file (up to 2**32; a fuzzed one took 22 GB once):
    # naming the first missing blockNo must not build a set of them all
    import tracemalloc

    raw = bytearray(write_uf2(Image([(0x10000000, b"\x01" * 256)]), family="rp2040"))
    raw[24:28] = (2_000_000).to_bytes(4, "little")  # numBlocks
    tracemalloc.start()
    try:
        with pytest.raises(FormatError, match=r"1999999 of 2000000 blocks missing, first blockNo 1"):
            parse_uf2(bytes(raw))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000, f"parse_uf2 peaked at {peak} bytes for one block"
