import pytest
from hypothesis import given, strategies as st

from bootkit.formats import FormatError, Image


def test_format_error_is_one_line_with_the_parts_that_are_known():
    e = FormatError("bad checksum (expected 0x3A, got 0x3B)", source="fw.hex", where="line 12")
    assert str(e) == "fw.hex: line 12: bad checksum (expected 0x3A, got 0x3B)"
    assert (e.source, e.where, e.problem) == ("fw.hex", "line 12", "bad checksum (expected 0x3A, got 0x3B)")
    assert str(FormatError("truncated", where="block 3")) == "block 3: truncated"
    assert str(FormatError("truncated", source="a.uf2")) == "a.uf2: truncated"
    assert isinstance(e, ValueError)
    assert str(FormatError("x", where="line 2").at(source="f", where="line 9")) == "f: line 2: x"


def test_segments_are_sorted_and_adjacent_ones_merged():
    image = Image([(0x200, b"cd"), (0x100, b"ab"), (0x102, b"xy")])
    assert image.segments == [(0x100, b"abxy"), (0x200, b"cd")]
    assert (image.start, image.end, image.size) == (0x100, 0x202, 6)
    assert bool(image) and not Image()
    image.add(0x104, bytes(0xFC))  # fills the gap exactly: one segment
    assert image.segments == [(0x100, b"abxy" + bytes(0xFC) + b"cd")]


def test_add_bridging_several_segments():
    image = Image([(0, b"a"), (4, b"b"), (8, b"c")])
    image.add(1, b"___b___")
    assert image.segments == [(0, b"a___b___c")]


def test_overlap_of_differing_bytes_is_an_error_naming_the_first_differing_address():
    image = Image([(0x1000, b"abcdef")])
    with pytest.raises(FormatError) as exc:
        image.add(0x1002, b"cdXY")
    assert str(exc.value) == "overlapping data at 0x00001004"
    image.add(0x1002, b"cd")  # identical bytes: accepted
    image.add(0x0FFE, b"zzab")  # identical overlap plus new data before
    assert image.segments == [(0x0FFE, b"zzabcdef")]
    image.add(0x1002, b"CDEFGH", overwrite=True)
    assert image.segments == [(0x0FFE, b"zzabCDEFGH")]


def test_overlap_across_segments():
    image = Image([(0, b"aa"), (10, b"bb")])
    with pytest.raises(FormatError, match="overlapping data at 0x0000000B"):
        image.add(5, b"12345" + b"bX")


def test_equality_ignores_start_address_but_copy_keeps_it():
    a = Image([(1, b"x")], start_address=0x1234)
    b = Image([(1, b"x")])
    assert a == b
    c = a.copy()
    c.add(2, b"y")
    assert a.segments == [(1, b"x")] and c.start_address == 0x1234 and c.start_address_kind == "linear"


def test_tobytes_crop_shift_merge():
    image = Image([(0x10, b"ab"), (0x14, b"cd")])
    assert image.tobytes() == b"ab\xff\xffcd"
    assert image.tobytes(0x0E, 0x12, fill=0) == b"\0\0ab"
    assert image.crop(0x11, 0x15).segments == [(0x11, b"b"), (0x14, b"c")]
    assert image.shifted(0x100).segments == [(0x110, b"ab"), (0x114, b"cd")]
    other = Image([(0x12, b"zz")], start_address=5)
    image.merge(other)
    assert image.segments == [(0x10, b"abzzcd")] and image.start_address == 5
    with pytest.raises(FormatError):
        image.merge(Image([(0x10, b"X")]))


def test_pages_fill_gaps_and_skip_empty_pages():
    image = Image([(0x102, b"ab"), (0x1FF, b"cd"), (0x500, b"e")])
    pages = list(image.pages(0x100, fill=0xEE))
    assert [a for a, _ in pages] == [0x100, 0x200, 0x500]
    assert pages[0][1] == b"\xee\xee" + b"ab" + b"\xee" * 0xFB + b"c"
    assert pages[1][1] == b"d" + b"\xee" * 0xFF
    assert pages[2][1] == b"e" + b"\xee" * 0xFF
    assert [a for a, _ in Image([(0x10, b"x" * 0x20)]).pages(0x10, align=8)] == [0x08, 0x18, 0x28]


def test_a_big_image_is_a_few_segments():
    image = Image()
    for address in range(0x10000, 0x10000 + (1 << 20), 16):
        image.add(address, bytes(16))
    assert len(image.segments) == 1 and image.size == 1 << 20


@given(st.lists(st.tuples(st.integers(0, 300), st.binary(min_size=1, max_size=40)), max_size=20))
def test_image_matches_a_dict_of_bytes(writes):
    image = Image()
    model = {}
    for address, data in writes:
        image.add(address, data, overwrite=True)
        for i, b in enumerate(data):
            model[address + i] = b
    flat = {a + i: b for a, d in image.segments for i, b in enumerate(d)}
    assert flat == model
    segs = image.segments
    assert all(a + len(d) < b for (a, d), (b, _) in zip(segs, segs[1:]))  # sorted, not adjacent
