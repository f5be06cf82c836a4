import struct
import zlib

import pytest
from hypothesis import given, settings, strategies as st

from bootkit.formats import FormatError, Image, add_suffix, parse_dfuse, parse_dfuse_targets, split_suffix, write_dfuse
from bootkit.formats.dfu import DfuSuffix, dfu_crc, write_dfuse_targets
from formats_helpers import sparse_images


def crc32_no_final_xor(data: bytes) -> int:
    """Bit-by-bit reference of dfu-util's crc32_byte loop (reflected, 0xEDB88320)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 if crc & 1 else 0)
    return crc


def test_suffix_crc_vector():
    # CRC-32 of "123456789" is 0xCBF43926; without the final xor it is its complement.
    assert dfu_crc(b"123456789") == 0xCBF43926 ^ 0xFFFFFFFF == 0x340BC6D9
    payload = b"firmware\x00\xff" * 10
    data = add_suffix(payload, vid=0x1209, pid=0x0001, bcd_device=0x0102)
    body = data[:-4]
    (crc,) = struct.unpack("<I", data[-4:])
    assert crc == (~zlib.crc32(body)) & 0xFFFFFFFF == crc32_no_final_xor(body)
    assert data[len(payload):-4] == bytes.fromhex("0201 0100 0912 0001") + b"UFD" + b"\x10"


def test_suffix_round_trip_and_absent_suffix():
    data = add_suffix(b"abc", vid=0x0483, pid=0xDF11)
    payload, suffix = split_suffix(data)
    assert payload == b"abc"
    assert suffix == DfuSuffix(0xFFFF, 0xDF11, 0x0483, 0x0100, 16, struct.unpack("<I", data[-4:])[0])
    assert split_suffix(b"no suffix here at all") == (b"no suffix here at all", None)


def test_suffix_crc_mismatch_is_one_line():
    data = bytearray(add_suffix(b"abcdef"))
    data[0] ^= 0xFF
    with pytest.raises(FormatError) as exc:
        split_suffix(bytes(data), source="fw.dfu")
    expected = dfu_crc(bytes(data[:-4]))
    has = struct.unpack("<I", data[-4:])[0]
    assert str(exc.value) == (
        f"fw.dfu: offset 0x6: DFU suffix CRC mismatch (expected 0x{expected:08X}, file has 0x{has:08X})"
    )


def test_dfuse_layout():
    image = Image([(0x08000000, b"\x01\x02\x03"), (0x08004000, b"\x04")])
    data = write_dfuse(image)
    body_len = 11 + 274 + (8 + 3) + (8 + 1)
    assert len(data) == body_len + 16
    assert data[:11] == b"DfuSe\x01" + struct.pack("<I", body_len) + b"\x01"
    assert data[11:17] == b"Target" and data[17] == 0 and struct.unpack_from("<I", data, 18) == (1,)
    assert data[22:27] == b"ST...\x00"[:5] and struct.unpack_from("<II", data, 277) == (20, 2)
    assert struct.unpack_from("<II", data, 285) == (0x08000000, 3)
    _, suffix = split_suffix(data)
    assert (suffix.idVendor, suffix.idProduct, suffix.bcdDFU) == (0x0483, 0xDF11, 0x011A)
    assert parse_dfuse(data) == image


def test_dfuse_targets_and_alt():
    a, b = Image([(0x0800_0000, b"flash")]), Image([(0x1FFF_7800, b"otp")])
    data = write_dfuse_targets([(0, "Internal Flash", a), (1, "", b)])
    assert [(alt, name) for alt, name, _ in parse_dfuse_targets(data)] == [(0, "Internal Flash"), (1, "")]
    assert parse_dfuse(data, alt=1) == b and parse_dfuse(data) == a
    with pytest.raises(FormatError, match=r"^f: no target for alternate setting 2 \(file has 0, 1\)$"):
        parse_dfuse(data, alt=2, source="f")


def test_dfuse_errors():
    good = write_dfuse(Image([(0x08000000, b"x" * 40)]))
    body, _ = split_suffix(good)
    cases = [
        (add_suffix(b"DfuSx" + body[5:], bcd_dfu=0x011A), "f: offset 0x0: wrong magic b'DfuSx' (expected b'DfuSe')"),
        (add_suffix(body[:-10], bcd_dfu=0x011A),
         f"f: offset 0x6: DFUImageSize says {len(body)} bytes, file has {len(body) - 10} before the suffix (truncated?)"),
        (body[:8], "f: offset 0x0: truncated DfuSe prefix (8 of 11 bytes)"),
        (add_suffix(body[:11] + b"Tarxet" + body[17:], bcd_dfu=0x011A),
         "f: offset 0xB: wrong magic b'Tarxet' (expected b'Target')"),
        (good[:-1], None),  # truncated: the suffix is gone, the prefix size disagrees
    ]
    for data, message in cases:
        with pytest.raises(FormatError) as exc:
            parse_dfuse(data, source="f")
        assert "\n" not in str(exc.value) and str(exc.value).startswith("f: offset 0x")
        if message:
            assert str(exc.value) == message


@settings(max_examples=100, deadline=None)
@given(sparse_images(), st.integers(0, 255), st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40))
def test_dfuse_roundtrip(image, alt, name):
    (got,) = parse_dfuse_targets(write_dfuse(image, alt=alt, name=name))
    assert got == (alt, name, image)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.data())
def test_garbage_into_dfu_parsers_raises_only_format_error(raw, data):
    if data.draw(st.booleans()):
        raw = bytearray(write_dfuse(Image([(0x100, raw[:50])])))
        for _ in range(data.draw(st.integers(1, 3))):
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
        raw = bytes(raw)
        if data.draw(st.booleans()):  # a valid suffix over a corrupt body
            raw = add_suffix(raw[:-16], bcd_dfu=0x011A)
    for parse in (split_suffix, parse_dfuse):
        try:
            parse(raw)
        except FormatError:
            pass


def test_dfuse_image_size_counting_the_suffix_as_dfuse_pack_writes_it():
    import struct

    image = Image([(0x08000000, b"x" * 40), (0x08004000, b"yz")])
    body, _ = split_suffix(write_dfuse(image))
    counted = body[:6] + struct.pack("<I", len(body) + 16) + body[10:]  # dfuse-pack.py: DFUImageSize includes the suffix
    assert parse_dfuse(add_suffix(counted, bcd_dfu=0x011A)) == image
    with pytest.raises(FormatError, match="DFUImageSize"):  # without a suffix that size is a truncated file
        parse_dfuse(counted, source="f")
