"""The fast converters of issue 22 item 2: the streaming HEX writer, the HEX parser's batch
path and the UF2 writer.

Each is checked two ways: it gives exactly what the slow way gave (intelhex's own writer and
parser, and the UF2Block-per-block writer, as references: same records, same record lengths
and order, same 04 records, same errors on the same lines), and it does its work in whole
batches (a bounded number of calls and of memory, counted, never timed: the speed itself is
measured by benchmarks/bench_formats.py).
"""

from __future__ import annotations

import io
import random
import sys
import tracemalloc

import intelhex
import pytest
from hypothesis import given, settings, strategies as st

from bootkit.formats import FormatError, Image, iter_hex, parse_hex, save, write_uf2
from bootkit.formats.uf2 import UF2_FLAG_FAMILY_ID_PRESENT, UF2Block, family_id
from formats_helpers import intelhex_to_image, record, sparse_images

EOF_LINE = ":00000001FF"


def intelhex_text(image: Image, record_size: int = 16) -> str:
    """What write_hex wrote before issue 22: intelhex's write_hex_file."""
    ih = intelhex.IntelHex()
    for address, data in image.segments:
        ih.puts(address, data)
    if image.start_address is not None:
        sa = image.start_address
        if image.start_address_kind == "segment":
            ih.start_addr = {"CS": (sa >> 16) & 0xFFFF, "IP": sa & 0xFFFF}
        else:
            ih.start_addr = {"EIP": sa & 0xFFFFFFFF}
    out = io.StringIO()
    ih.write_hex_file(out, byte_count=record_size)
    return out.getvalue().replace("\r\n", "\n")


def streamed(image: Image, record_size: int = 16) -> str:
    return b"".join(iter_hex(image, record_size=record_size)).decode("ascii")


def random_image(rnd: random.Random) -> Image:
    """Runs long enough for the batch paths (thousands of records), short odd ones, runs
    crossing 64 KiB boundaries, gaps of a byte to several windows, up to the 4 GiB top."""
    image = Image()
    address = rnd.choice([0, 0x100, 0xFF00, 0xFFF3, 0x1FFF0, 0x0800_0000, 0xFFFF_0000]) + rnd.randrange(0x3000)
    for _ in range(rnd.randrange(0, 5)):
        length = rnd.choice([1, 2, 15, 16, 17, 127, 128, 129, 700, 5000, 70_000, 140_001])
        if address + length > 1 << 32:
            break
        image.add(address, rnd.randbytes(length))
        address += length + rnd.choice([1, 5, 16, 300, 0x1_0000, 0x3_0000])
    if rnd.random() < 0.4:
        image.start_address = rnd.randrange(1, 1 << 32)
        image.start_address_kind = rnd.choice(["segment", "linear"])
    return image


# -- the HEX writer ----------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(60))
def test_streamed_hex_is_intelhex_byte_for_byte(seed):
    rnd = random.Random(seed)
    image = random_image(rnd)
    size = rnd.choice([16, 16, 32, 1, 7, 64, 252, 253, 255])
    assert streamed(image, size) == intelhex_text(image, size)


@settings(max_examples=100, deadline=None)
@given(sparse_images(), st.sampled_from([16, 1, 3, 16, 32, 255]))
def test_streamed_hex_is_intelhex_on_random_sparse_images(image, size):
    assert streamed(image, size) == intelhex_text(image, size)


def test_streamed_hex_edges_64k_boundary_and_4gib_top():
    # a run over 0xFFFF: the record stops at the boundary, an 04, the next starts at 0x10000
    image = Image([(0xFFF8, bytes(range(24)))])
    lines = streamed(image).splitlines()
    assert lines == [record(4, 0, b"\0\0"), record(0, 0xFFF8, bytes(range(8))), record(4, 0, b"\0\1"),
                     record(0, 0, bytes(range(8, 24))), EOF_LINE]
    top = Image([(0xFFFF_FFF0, bytes(16))])
    assert streamed(top) == intelhex_text(top)
    with pytest.raises(FormatError, match="above the 4 GiB"):
        next(iter_hex(Image([(0xFFFF_FFFF, b"\0\0")])))
    with pytest.raises(ValueError):
        next(iter_hex(top, record_size=256))


def _calls_during(func, *args) -> int:
    """Python and C function calls made while ``func`` runs (sys.setprofile)."""
    calls = 0

    def count(frame, event, arg):
        nonlocal calls
        if event in ("call", "c_call"):
            calls += 1

    sys.setprofile(count)
    try:
        func(*args)
    finally:
        sys.setprofile(None)
    return calls


def test_hex_writer_works_a_window_at_a_time_not_a_record_at_a_time():
    image = Image([(0x0800_0000, random.Random(1).randbytes(1 << 20))])  # 65536 records
    calls = _calls_during(lambda: sum(map(len, iter_hex(image))))
    assert calls < 65536 // 8, f"{calls} calls for 65536 records"


def test_saving_a_large_hex_holds_a_window_not_the_file(tmp_path):
    """save() streams: the text of a 4 MiB image (11.5 MB) is never held whole (the old
    intelhex writer held a dict entry per byte: ~100x the image)."""
    image = Image([(0x0800_0000, random.Random(2).randbytes(4 << 20))])
    path = tmp_path / "big.hex"
    tracemalloc.start()
    try:
        save(image, path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < (4 << 20) // 4, f"peak {peak} bytes while writing a 4 MiB image"
    assert path.read_text() == intelhex_text(image)


# -- the HEX parser's batch path ---------------------------------------------------------


def uniform_hex(rnd: random.Random) -> str:
    """intelhex's text for a random image with long uniform runs, in lower case or upper,
    with LF or CRLF."""
    image = random_image(rnd)
    while not image:
        image = random_image(rnd)
    size = rnd.choice([16, 32, 7, 255])
    lines = intelhex_text(image, size).splitlines()
    if rnd.random() < 0.3:
        lines = [line.lower() for line in lines]
    eol = "\r\n" if rnd.random() < 0.3 else "\n"
    return eol.join(lines) + eol


@pytest.mark.parametrize("seed", range(40))
def test_batch_parser_agrees_with_intelhex(seed):
    text = uniform_hex(random.Random(seed))
    ours = parse_hex(text)
    ref = intelhex_to_image(intelhex.IntelHex(io.StringIO(text)))
    assert ours == ref
    assert (ours.start_address, ours.start_address_kind) == (ref.start_address, ref.start_address_kind)


def test_batch_parser_decodes_a_uniform_file_in_batches():
    image = Image([(0x0800_0000, random.Random(3).randbytes(1 << 20))])
    text = intelhex_text(image).encode()
    calls = _calls_during(parse_hex, text)
    assert calls < 65536 // 8, f"{calls} calls for 65536 records"


def _line_by_line(lines: list[bytes]) -> Image:
    """The file parsed with the batch path never engaged: a blank line between records
    (which the batch path does not take: its lines must all be records of one length)."""
    return parse_hex(b"\n\n".join(lines) + b"\n")


@pytest.mark.parametrize("seed", range(12))
def test_an_error_anywhere_in_a_long_run_names_its_line(seed):
    """A bad checksum, a non-hex digit, a wrong length byte, a missing ':' or an overlap
    inside a long uniform run: the batch path stops before the line and the line-by-line
    path raises the same one-line error, naming that line, as for the file read line by line."""
    rnd = random.Random(seed)
    data = rnd.randbytes(16 * 3000)
    image = Image([(0x0801_0000 + rnd.randrange(64), data)])
    lines = intelhex_text(image).encode().splitlines()
    k = rnd.randrange(1, len(lines) - 1)
    while lines[k][7:9] != b"00":
        k = rnd.randrange(1, len(lines) - 1)
    line = bytearray(lines[k])
    kind = seed % 5
    if kind == 0:  # bad checksum
        line[-1:] = b"0" if line[-1:] != b"0" else b"1"
    elif kind == 1:  # non-hex digit
        line[12] = ord("G")
    elif kind == 2:  # length byte says one more
        line[1:3] = b"11"
    elif kind == 3:  # no ':'
        line[0] = ord(";")
    else:  # the same offset as the line before, other data: an overlap
        prev = lines[k - 1]
        line = bytearray(record(0, int(prev[3:7], 16), bytes(16)).encode())
    lines[k] = bytes(line)
    text = b"\n".join(lines) + b"\n"
    with pytest.raises(FormatError) as batch:
        parse_hex(text, source="fw.hex")
    with pytest.raises(FormatError) as slow:
        _line_by_line(lines)
    message = str(batch.value)
    assert f"line {k + 1}:" in message and "\n" not in message
    assert batch.value.problem == slow.value.problem


# -- the UF2 writer ----------------------------------------------------------------------


def blockwise_uf2(image: Image, family=None, payload_size: int = 256) -> bytes:
    """What write_uf2 wrote before issue 22: one UF2Block.pack per Image.pages chunk."""
    fam = None if family is None else family_id(family)
    flags = 0 if fam is None else UF2_FLAG_FAMILY_ID_PRESENT
    pages = list(image.pages(payload_size, 0xFF))
    return b"".join(UF2Block(flags, a, n, len(pages), fam or 0, c).pack() for n, (a, c) in enumerate(pages))


@pytest.mark.parametrize("seed", range(40))
def test_uf2_writer_is_the_blockwise_writer_byte_for_byte(seed):
    rnd = random.Random(seed)
    image = Image()
    address = rnd.randrange(0x3000) + rnd.choice([0, 0x1000_0000])
    for _ in range(rnd.randrange(0, 6)):
        length = rnd.choice([1, 3, 255, 256, 257, 511, 1000, 3000])
        image.add(address, rnd.randbytes(length))
        address += length + rnd.choice([1, 2, 100, 256, 300, 5000])
    family = rnd.choice([None, "rp2040", 0x1234])
    size = rnd.choice([256, 256, 1, 100, 476])
    assert write_uf2(image, family=family, payload_size=size) == blockwise_uf2(image, family, size)


def test_uf2_writer_makes_no_call_per_block():
    image = Image([(0x1000_0000, random.Random(4).randbytes(1 << 20))])  # 4096 blocks
    calls = _calls_during(lambda: write_uf2(image, family="rp2040"))
    assert calls < 4096 // 4, f"{calls} calls for 4096 blocks"


# -- a binary is held once ---------------------------------------------------------------


def test_a_binary_is_held_once_and_copied_only_when_written():
    """load() of a binary keeps the file's bytes as the segment (no second 16 MiB copy for
    `bootkit convert`); writing into the image copies first, leaving the caller's bytes alone."""
    from bootkit.formats import load

    data = bytes(range(256)) * 16
    image = load(data, fmt="bin", base=0x0800_0000)
    assert image.segments[0][1] is data
    copy = image.copy()
    image.add(0x0800_0000 + len(data), b"\x01\x02")  # appends: the segment becomes its own bytearray
    image.add(0x0800_0000, b"\xaa", overwrite=True)
    assert data[:2] == b"\x00\x01" and copy.tobytes() == data
    assert image.tobytes() == b"\xaa" + data[1:] + b"\x01\x02"
    assert write_uf2(copy) == write_uf2(Image([(0x0800_0000, bytearray(data))]))
    assert b"".join(iter_hex(copy)) == b"".join(iter_hex(Image([(0x0800_0000, bytearray(data))])))


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32), st.integers(0, 3), st.sampled_from([b"\n", b"\r\n"]))
def test_batch_parser_and_line_parser_agree_on_mutated_files(seed, mutations, eol):
    """A uniform file with a few bytes changed anywhere (digits, ':', line ends, lengths):
    the batch parser returns the image the line-by-line parser returns, or raises the same
    error on the same line."""
    rnd = random.Random(seed)  # the file and its mutations from one drawn seed: large inputs, small examples
    data = rnd.randbytes(rnd.choice([16 * 40, 16 * 700, 16 * 2100 + 5]))
    image = Image([(rnd.choice([0, 0x0800_0000, 0xFFF0]) + rnd.randrange(32), data)])
    lines = intelhex_text(image, rnd.choice([16, 32])).encode().splitlines()
    text = bytearray(eol.join(lines) + eol)
    for _ in range(mutations):
        text[rnd.randrange(len(text))] = rnd.choice(b"0123456789ABCDEFabcdef:G \n")
    mutated = bytes(text).splitlines()
    try:
        want = parse_hex(b"\n\n".join(mutated) + b"\n")  # blank lines between: the batch path never runs
    except FormatError as exc:
        line = int(exc.where.split()[1]) if exc.where else None
        with pytest.raises(FormatError) as got:
            parse_hex(bytes(text))
        assert got.value.problem == exc.problem
        if line is not None and exc.problem.startswith("missing end-of-file"):
            assert got.value.where == f"line {len(mutated)}"
        elif line is not None:
            assert got.value.where == f"line {(line + 1) // 2}"
    else:
        ours = parse_hex(bytes(text))
        assert ours == want and ours.start_address == want.start_address
