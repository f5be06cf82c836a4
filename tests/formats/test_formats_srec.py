import pytest
from hypothesis import given, settings, strategies as st

from bootkit.formats import FormatError, Image, parse_srec, write_srec
from formats_helpers import sparse_images


def srec(kind: int, address: int, data: bytes = b"", width: int = 2, checksum: int | None = None) -> str:
    body = bytes([width + len(data) + 1]) + address.to_bytes(width, "big") + data
    cs = (~sum(body)) & 0xFF if checksum is None else checksum
    return f"S{kind}{body.hex().upper()}{cs:02X}"


def test_known_record():
    # the example from Wikipedia's SREC article (checksums computed by its authors)
    text = "S00F000068656C6C6F202020202000003C\nS11F00007C0802A6900100049421FFF07C6C1B787C8C23783C6000003863000026\nS5030001FB\nS9030000FC\n"
    image = parse_srec(text)
    assert image.segments == [(0, bytes.fromhex("7C0802A6900100049421FFF07C6C1B787C8C23783C60000038630000"))]
    assert image.start_address is None


def test_write_chooses_record_type_by_highest_address():
    assert write_srec(Image([(0xFFF0, b"a")])).splitlines()[1].startswith("S1")
    assert write_srec(Image([(0xFFFF, b"ab")])).splitlines()[1].startswith("S2")
    lines = write_srec(Image([(0x0800_0000, b"ab")], start_address=0x0800_0101)).splitlines()
    assert lines[1].startswith("S3") and lines[2] == srec(5, 1) and lines[3] == srec(7, 0x0800_0101, width=4)
    assert parse_srec("\n".join(lines)).start_address == 0x0800_0101


@pytest.mark.parametrize(
    "line, problem",
    [
        (srec(1, 0x10, b"\x01\x02", checksum=0), "bad checksum (expected 0xE7, got 0x00)"),
        ("S4030000FC", "unknown record type 'S4'"),
        (srec(1, 0, b"ab") + "0", "odd number of hex digits (13)"),
        ("S1050000FC", "bad length (count byte says 5, line has 3)"),
        ("S1030000ZZ", "non-hex digit 'Z'"),
        ("X1030000FC", "expected 'S'"),
        (srec(5, 7), "record count mismatch (S5 says 7, file has 1 data records)"),
    ],
)
def test_errors_name_file_and_line(line, problem):
    text = "\n".join([srec(1, 0, b"ok"), line, srec(9, 0)])
    with pytest.raises(FormatError) as exc:
        parse_srec(text, source="fw.s19")
    assert str(exc.value) == f"fw.s19: line 2: {problem}"


def test_no_termination_record_as_srec_cat_writes_without_a_start_address():
    image = parse_srec(srec(0, 0, b"hdr") + "\n" + srec(3, 0x08000000, b"ok", width=4) + "\n" + srec(5, 1) + "\n")
    assert image.segments == [(0x08000000, b"ok")] and image.start_address is None
    # cut inside a record: still refused, naming the line
    with pytest.raises(FormatError, match=r"^fw.s19: line 2: bad length"):
        parse_srec(srec(1, 0, b"ok") + "\n" + srec(1, 2, b"more")[:-4] + "\n", source="fw.s19")


def test_truncated_and_overlap():
    with pytest.raises(FormatError, match=r"^fw.s19: line 2: overlapping data at 0x00000001$"):
        parse_srec("\n".join([srec(1, 0, b"ok"), srec(1, 1, b"X"), srec(9, 0)]), source="fw.s19")


@settings(max_examples=100, deadline=None)
@given(sparse_images(), st.integers(1, 64))
def test_srec_roundtrip(image, record_size):
    again = parse_srec(write_srec(image, record_size=record_size))
    assert again == image and again.start_address == image.start_address


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.data())
def test_garbage_into_parse_srec_raises_only_format_error(raw, data):
    if data.draw(st.booleans()):
        raw = bytearray(write_srec(Image([(0x123456, raw[:40] or b"x")])).encode())
        for _ in range(data.draw(st.integers(1, 3))):
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    try:
        parse_srec(bytes(raw))
    except FormatError:
        pass
