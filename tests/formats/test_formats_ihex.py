import io

import intelhex
import pytest
from hypothesis import given, settings, strategies as st

from bootkit.formats import FormatError, HexStream, Image, parse_hex, write_hex
from formats_helpers import intelhex_to_image, record, sparse_images

EOF_LINE = ":00000001FF"


def hexfile(*lines: str, eol: str = "\n") -> str:
    return eol.join(lines) + eol


def error_of(text, source="fw.hex") -> str:
    with pytest.raises(FormatError) as exc:
        parse_hex(text, source=source)
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_parse_simple_file_with_extended_linear_address_and_start():
    text = hexfile(
        record(4, 0, b"\x08\x00"),
        record(0, 0x0000, b"\x01\x02\x03"),
        record(0, 0x0003, b"\x04"),
        record(5, 0, bytes.fromhex("08000101")),
        EOF_LINE,
    )
    image = parse_hex(text)
    assert image.segments == [(0x08000000, b"\x01\x02\x03\x04")]
    assert image.start_address == 0x08000101 and image.start_address_kind == "linear"


def test_lower_case_crlf_blank_lines_and_data_after_eof():
    text = "\r\n" + record(0, 0x10, b"\xab\xcd").lower() + "\r\n\r\n  " + EOF_LINE + "  \r\ngarbage after EOF\r\n"
    assert parse_hex(text).segments == [(0x10, b"\xab\xcd")]


def test_segment_addressing_and_start_segment_address():
    text = hexfile(
        record(2, 0, b"\x12\x34"),  # base 0x12340
        record(0, 0x0005, b"AB"),
        record(3, 0, bytes.fromhex("12340005")),
        EOF_LINE,
    )
    image = parse_hex(text)
    assert image.segments == [(0x12345, b"AB")]
    assert image.start_address == 0x12340005 and image.start_address_kind == "segment"
    again = parse_hex(write_hex(image))
    assert again == image and again.start_address_kind == "segment" and again.start_address == 0x12340005


@pytest.mark.parametrize("ext", [(2, b"\xF0\x00"), (4, b"\x00\x01")])
def test_record_crossing_0xffff_continues_upwards_like_intelhex(ext):
    text = hexfile(record(ext[0], 0, ext[1]), record(0, 0xFFFE, b"wxyz"), EOF_LINE)
    ours = parse_hex(text)
    ref = intelhex_to_image(intelhex.IntelHex(io.StringIO(text)))
    assert ours == ref
    base = 0xF0000 if ext[0] == 2 else 0x10000
    assert ours.segments == [(base + 0xFFFE, b"wxyz")]


@pytest.mark.parametrize(
    "line, problem",
    [
        (record(0, 0x10, b"\x01\x02", checksum=0x3B), "bad checksum (expected 0xEB, got 0x3B)"),
        (record(6, 0, b""), "unknown record type 0x06"),
        (record(0, 0, b"\x01") + "0", "odd number of hex digits (13)"),
        (":0300000001FE", "bad length (length byte says 3 data bytes, line has 1)"),
        (":0100000001FG", "non-hex digit 'G'"),
        ("10000000", "expected ':'"),
        (":0000", "record too short (2 bytes, at least 5 needed)"),
        (record(4, 0, b"\x01"), "bad extended address record (type 0x04 needs 2 data bytes at offset 0)"),
        (record(5, 0, b"\x01\x02"), "bad start address record (type 0x05 needs 4 data bytes at offset 0)"),
        (record(1, 0, b"\x00"), "end-of-file record with data"),
    ],
)
def test_each_error_is_one_line_naming_file_and_line(line, problem):
    text = hexfile(record(0, 0, b"ok"), line, EOF_LINE)
    assert error_of(text) == f"fw.hex: line 2: {problem}"


def test_missing_eof_is_truncation():
    assert error_of(hexfile(record(0, 0, b"ok"), record(0, 2, b"ok"))) == (
        "fw.hex: line 2: missing end-of-file record (truncated?)"
    )


def test_overlap_names_the_line():
    text = hexfile(record(0, 0, b"abcd"), record(0, 0x100, b"x"), record(0, 2, b"cX"), EOF_LINE)
    assert error_of(text) == "fw.hex: line 3: overlapping data at 0x00000003"
    # identical bytes twice are accepted
    assert parse_hex(hexfile(record(0, 0, b"abcd"), record(0, 2, b"cd"), EOF_LINE)).segments == [(0, b"abcd")]


def test_two_different_start_addresses():
    text = hexfile(record(5, 0, b"\0\0\0\1"), record(5, 0, b"\0\0\0\2"), EOF_LINE)
    assert error_of(text) == "fw.hex: line 2: second, different start address record"


def test_write_hex_uses_04_records_above_64k_and_ends_with_eof():
    image = Image([(0x1FFF8, bytes(range(16)))], start_address=0x20000)
    text = write_hex(image)
    lines = text.splitlines()
    assert lines[0] == record(5, 0, b"\x00\x02\x00\x00")
    assert record(4, 0, b"\x00\x01") in lines and record(4, 0, b"\x00\x02") in lines
    assert lines[-1] == EOF_LINE
    assert parse_hex(text) == image
    assert all(len(line) <= 11 + 2 * 8 for line in write_hex(image, record_size=8).splitlines())


# -- agreement with intelhex on random valid files ---------------------------


@st.composite
def valid_hex_files(draw):
    """Random valid HEX text: 02 and 04 addressing, records crossing 64 KiB,
    ranges in any order, any case, LF or CRLF, maybe a start address."""
    ranges = []
    address = draw(st.integers(0, 0x2FFF0))
    for _ in range(draw(st.integers(0, 5))):
        length = draw(st.integers(1, 300))
        ranges.append((address, draw(st.binary(min_size=length, max_size=length))))
        address += length + draw(st.one_of(st.integers(0, 40), st.integers(0x1000, 0x20000)))
    ranges = draw(st.permutations(ranges))
    lines = []
    for start, data in ranges:
        pos = 0
        while pos < len(data):
            n = draw(st.integers(1, 40)) if draw(st.integers(0, 9)) else draw(st.integers(1, 255))
            chunk = data[pos:pos + n]
            addr = start + pos
            if addr <= 0xFFFF0 and draw(st.booleans()):
                segment = draw(st.integers(max(0, -(-(addr - 0xFFFF) // 16)), addr // 16))
                lines.append(record(2, 0, segment.to_bytes(2, "big")))
                lines.append(record(0, addr - segment * 16, chunk))
            else:
                lines.append(record(4, 0, (addr >> 16).to_bytes(2, "big")))
                lines.append(record(0, addr & 0xFFFF, chunk))
            pos += len(chunk)
    start_kind = draw(st.sampled_from([None, 3, 5]))
    if start_kind:
        lines.insert(draw(st.integers(0, len(lines))), record(start_kind, 0, draw(st.binary(min_size=4, max_size=4))))
    lines.append(EOF_LINE)
    if draw(st.booleans()):
        lines = [line.lower() for line in lines]
    return hexfile(*lines, eol=draw(st.sampled_from(["\n", "\r\n"])))


@settings(max_examples=150, deadline=None)
@given(valid_hex_files())
def test_parse_hex_agrees_with_intelhex(text):
    ref = intelhex_to_image(intelhex.IntelHex(io.StringIO(text)))
    ours = parse_hex(text)
    assert ours == ref
    assert (ours.start_address, ours.start_address_kind) == (ref.start_address, ref.start_address_kind)


def chunked(data: bytes, sizes):
    pos = 0
    for n in sizes:
        if pos >= len(data):
            break
        yield data[pos:pos + n]
        pos += n
    if pos < len(data):
        yield data[pos:]


@settings(max_examples=100, deadline=None)
@given(valid_hex_files(), st.sampled_from(["one", "random", "whole"]), st.randoms(use_true_random=False))
def test_hexstream_in_any_chunks_matches_intelhex(text, mode, rnd):
    data = text.encode()
    sizes = {"one": [1] * len(data), "whole": [len(data)], "random": [rnd.randint(1, 64) for _ in range(len(data))]}
    stream = HexStream(source="job")
    records = []
    for chunk in chunked(data, sizes[mode]):
        records += stream.feed(chunk)
    records += stream.close()
    assert stream.done
    ref = intelhex_to_image(intelhex.IntelHex(io.StringIO(text)))
    assert stream.image == ref and stream.image.start_address == ref.start_address
    # records carry absolute addresses and the right line numbers
    rebuilt = Image()
    for r in records:
        if r.rectype == 0:
            rebuilt.add(r.address, r.data)
    assert rebuilt == ref
    assert [r.line for r in records] == list(range(1, len(records) + 1))
    assert records[-1].rectype == 1


# -- HexStream specifics ------------------------------------------------------


def test_hexstream_skips_a_print_job_header_and_trailer():
    job = (
        b"\x1b%-12345X@PJL JOB NAME=\"fw: v1.2\"\r\n@PJL ENTER LANGUAGE=HEX\r\n"
        + record(4, 0, b"\x00\x01").encode() + b"\r\n"
        + record(0, 0x10, b"data").encode() + b"\r\n"
        + EOF_LINE.encode() + b"\r\n\x0c\x1b%-12345X@PJL EOJ\r\n"
    )
    stream = HexStream()
    records = [r for i in range(0, len(job), 7) for r in stream.feed(job[i:i + 7])]
    stream.close()
    assert [(r.line, r.rectype, r.address, r.data) for r in records] == [
        (3, 4, 0, b"\x00\x01"),
        (4, 0, 0x10010, b"data"),
        (5, 1, 0, b""),
    ]
    assert stream.image.segments == [(0x10010, b"data")]


def test_hexstream_header_glued_to_first_record():
    stream = HexStream()
    stream.feed(b"\x1b%-12345X" + record(0, 0, b"hi").encode() + b"\n" + EOF_LINE.encode())
    assert stream.close()[0].rectype == 1
    assert stream.image.segments == [(0, b"hi")]


def test_hexstream_returns_records_as_lines_complete():
    stream = HexStream()
    line = (record(0, 0, b"abc") + "\n").encode()
    assert stream.feed(line[:5]) == []
    (r,) = stream.feed(line[5:])
    assert (r.line, r.address, r.data) == (1, 0, b"abc")


def test_hexstream_bad_checksum_raises_before_returning():
    stream = HexStream(source="job")
    with pytest.raises(FormatError) as exc:
        stream.feed(b"PJL header\n" + record(0, 0, b"ab", checksum=0).encode() + b"\n")
    assert str(exc.value) == "job: line 2: bad checksum (expected 0x3B, got 0x00)"
    with pytest.raises(FormatError):  # stays broken
        stream.feed(b"\n")


def test_hexstream_close_mid_record_or_before_eof():
    stream = HexStream(source="job")
    stream.feed((record(0, 0, b"ab") + "\n" + record(0, 2, b"cd")[:7]).encode())
    with pytest.raises(FormatError) as exc:
        stream.close()
    assert str(exc.value).startswith("job: line 2: truncated record (")
    stream = HexStream(source="job")
    stream.feed((record(0, 0, b"ab") + "\n").encode())
    with pytest.raises(FormatError) as exc:
        stream.close()
    assert str(exc.value) == "job: line 1: missing end-of-file record (truncated?)"


def test_hexstream_eof_without_newline_is_returned_by_close():
    stream = HexStream()
    assert stream.feed(EOF_LINE.encode()) == []
    assert [r.rectype for r in stream.close()] == [1]


def test_hexstream_overlap_names_line_and_garbage_line_is_an_error():
    stream = HexStream(source="job")
    with pytest.raises(FormatError, match=r"^job: line 2: overlapping data at 0x00000001$"):
        stream.feed((record(0, 0, b"ab") + "\r\n" + record(0, 1, b"X") + "\r\n").encode())
    stream = HexStream(source="job")
    with pytest.raises(FormatError, match=r"^job: line 2: expected ':'$"):
        stream.feed((record(0, 0, b"ab") + "\rhello\r").encode())


def test_hexstream_cr_split_from_lf_does_not_count_a_line():
    stream = HexStream()
    data = (record(0, 0, b"a") + "\r\n" + record(0, 1, b"b") + "\r\n" + EOF_LINE + "\r\n").encode()
    cut = data.index(b"\r") + 1
    records = stream.feed(data[:cut]) + stream.feed(data[cut:])
    assert [r.line for r in records] == [1, 2, 3]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_into_hex_parsers_raises_only_format_error(data):
    for feed in (lambda d: parse_hex(d), lambda d: (HexStream().feed(d), HexStream().close())):
        try:
            feed(data)
        except FormatError:
            pass


@settings(max_examples=200, deadline=None)
@given(valid_hex_files(), st.data())
def test_mutated_hex_raises_only_format_error(text, data):
    raw = bytearray(text.encode())
    for _ in range(data.draw(st.integers(1, 3))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    for parse in (parse_hex, lambda d: HexStream().feed(d)):
        try:
            parse(bytes(raw))
        except FormatError:
            pass


@settings(max_examples=100, deadline=None)
@given(sparse_images())
def test_write_then_parse_hex_roundtrip(image):
    again = parse_hex(write_hex(image))
    assert again == image and again.start_address == image.start_address
