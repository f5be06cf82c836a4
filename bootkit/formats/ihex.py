"""Intel HEX: a fast batch parser, a streaming parser, and a streaming writer.

Record types (Intel "Hexadecimal Object File Format Specification" rev A):
00 data, 01 end of file, 02 extended segment address, 03 start segment
address, 04 extended linear address, 05 start linear address.

Why the parsers and the writer are hand-written instead of using the
``intelhex`` library:

* speed and memory: ``IntelHex`` keeps a dict entry per byte, so a 1 MiB
  image costs a million dict insertions, and writing a 16 MiB one peaked
  at 1.39 GiB.  Here runs of uniform records are read and written as whole
  columns (see ``_data_batch`` and the comment above ``iter_hex``), other
  lines one ``binascii.unhexlify`` each, and contiguous records go into one
  bytearray (benchmarks/bench_formats.py measures both against intelhex and
  bincopy);
* the printer personality receives a print job over USB in arbitrary
  chunks and must check and program records as they arrive, which needs a
  parser that can be fed bytes (:class:`HexStream`); intelhex only reads
  whole files.

Addresses follow ``intelhex`` exactly: a data byte lands at
``base + offset + i`` where ``base`` is ``segment * 16`` (record 02) or
``upper * 65536`` (record 04).  Neither kind wraps at a 64 KiB boundary, so a
record running past offset 0xFFFF continues into the next 64 KiB.
"""

from __future__ import annotations

import binascii
import sys
import zlib
from array import array
from itertools import groupby
from typing import Iterator, NamedTuple

from .image import FormatError, Image

DATA = 0x00
END_OF_FILE = 0x01
EXTENDED_SEGMENT_ADDRESS = 0x02
START_SEGMENT_ADDRESS = 0x03
EXTENDED_LINEAR_ADDRESS = 0x04
START_LINEAR_ADDRESS = 0x05

_HEX_DIGITS = b"0123456789abcdefABCDEF"
# ':' + 2 * (length, address x2, type, 255 data bytes, checksum)
_MAX_RECORD_CHARS = 1 + 2 * (5 + 255)


class HexRecord(NamedTuple):
    """One checked record.

    ``address`` is the absolute address for data records (extended address
    already applied); for the other types it is the record's 16-bit
    address field.  ``line`` is the 1-based line number in the file/stream.
    """

    line: int
    rectype: int
    address: int
    data: bytes


def unhex(digits: bytes, fail) -> bytes:
    """Hex digits of one text record (Intel HEX or S-record) to bytes; ``fail(problem)`` builds the error."""
    if digits.strip(_HEX_DIGITS):
        bad = next(chr(c) for c in digits if c not in _HEX_DIGITS)
        raise fail(f"non-hex digit {bad!r}")
    if len(digits) % 2:
        raise fail(f"odd number of hex digits ({len(digits)})")
    return binascii.unhexlify(digits)


def _decode_record(text: bytes, line: int, source: str | None) -> tuple[int, int, bytes]:
    """Check one record line (stripped, starting with ':'): (type, offset, data)."""

    def fail(problem: str) -> FormatError:
        return FormatError(problem, source=source, where=f"line {line}")

    raw = unhex(text[1:], fail)
    if len(raw) < 5:
        raise fail(f"record too short ({len(raw)} bytes, at least 5 needed)")
    if raw[0] + 5 != len(raw):
        raise fail(f"bad length (length byte says {raw[0]} data bytes, line has {len(raw) - 5})")
    if sum(raw) & 0xFF:
        expected = -sum(raw[:-1]) & 0xFF
        raise fail(f"bad checksum (expected 0x{expected:02X}, got 0x{raw[-1]:02X})")
    if raw[3] > START_LINEAR_ADDRESS:
        raise fail(f"unknown record type 0x{raw[3]:02X}")
    return raw[3], (raw[1] << 8) | raw[2], raw[4:-1]


class _AddressState:
    """The non-data records' meaning: extended address, entry point, EOF.

    Checks follow intelhex's ``_decode_record``: 02/04 need 2 data bytes and
    address field 0, 03/05 need 4, 01 needs none.
    """

    __slots__ = ("base", "start_address", "start_address_kind", "done", "source")

    def __init__(self, source: str | None):
        self.base = 0
        self.start_address: int | None = None
        self.start_address_kind: str | None = None
        self.done = False
        self.source = source

    def apply(self, rectype: int, offset: int, data: bytes, line: int) -> None:
        def fail(problem: str) -> FormatError:
            return FormatError(problem, source=self.source, where=f"line {line}")

        if rectype == END_OF_FILE:
            if data:
                raise fail("end-of-file record with data")
            self.done = True
        elif rectype in (EXTENDED_SEGMENT_ADDRESS, EXTENDED_LINEAR_ADDRESS):
            if len(data) != 2 or offset != 0:
                raise fail(f"bad extended address record (type 0x{rectype:02X} needs 2 data bytes at offset 0)")
            value = (data[0] << 8) | data[1]
            self.base = value << 4 if rectype == EXTENDED_SEGMENT_ADDRESS else value << 16
        elif rectype in (START_SEGMENT_ADDRESS, START_LINEAR_ADDRESS):
            if len(data) != 4 or offset != 0:
                raise fail(f"bad start address record (type 0x{rectype:02X} needs 4 data bytes at offset 0)")
            value = int.from_bytes(data, "big")  # CS:IP as (CS << 16) | IP, or EIP
            kind = "segment" if rectype == START_SEGMENT_ADDRESS else "linear"
            if self.start_address is not None and (value, kind) != (self.start_address, self.start_address_kind):
                raise fail("second, different start address record")
            self.start_address, self.start_address_kind = value, kind


_BATCH = 1024  # lines tried at once by the batch path
_MIN_BATCH = 8  # fewer lines than this: the line-by-line path is as fast
_SLOW_STRETCH = 64  # lines done one by one after a failed batch


def _first_diff(a: bytes | bytearray, b: bytes | bytearray) -> int:
    """Index of the first byte where ``a`` and ``b`` (of equal length) differ, ``len(a)`` if
    none: a bisection of slice comparisons, so the work is done in C."""
    if a == b:
        return len(a)
    lo, hi = 0, len(a)  # a[:lo] == b[:lo]; the first difference is in [lo, hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    return lo


def _data_batch(batch: list[bytes], length: int) -> tuple[int, int, bytearray]:
    """The leading well-formed, contiguous data records of ``batch`` (lines all ``length``
    characters long) as ``(records, offset of the first, their data)``; ``(0, 0, empty)``
    when the batch does not start with at least ``_MIN_BATCH`` of them.

    The same column trick as the writer's (see the comment above iter_hex): the lines are
    joined, the ':' column must be all ':' and is deleted, one unhexlify decodes every
    record, and the length, type, offset and checksum checks are each one comparison of a
    whole column; the first record failing any of them ends the batch, and the
    line-by-line path then reads that line (and raises its error, naming it).  Written by
    hand for speed: the line-by-line path makes a few calls per line, this a few per
    column of up to _BATCH lines (benchmarks/bench_formats.py: the target is at most 0.2x
    bincopy's time).
    """
    nothing = (0, 0, bytearray())
    width = (length - 1) // 2  # bytes a record
    size = width - 5  # its data bytes
    n = len(batch)
    if not length & 1 or size < 1 or size > 255:
        return nothing
    text = bytearray(b"".join(batch))
    n = min(n, _first_diff(text[0::length], b":" * n))
    if n < _MIN_BATCH:
        return nothing
    del text[n * length:]
    del text[0::length]  # the ':' column
    try:
        raw = binascii.unhexlify(text)
    except (binascii.Error, ValueError):  # not hex digits (blanks, garbage): line by line says where
        return nothing
    offset = (raw[1] << 8) | raw[2]
    n = min(
        n,
        _first_diff(raw[0::width], bytes((size,)) * n),  # length byte
        _first_diff(raw[3::width], bytes(n)),  # type DATA
        (0xFFFF - offset) // size + 1,  # the last record's offset fits in 16 bits
    )
    if n < _MIN_BATCH:
        return nothing
    raw = raw[:n * width]
    # contiguous: record k at offset + k * size
    words = bytearray(2 * n)
    words[0::2] = raw[1::width]
    words[1::2] = raw[2::width]
    expected = array("H", range(offset, offset + n * size, size))
    if sys.byteorder == "little":
        expected.byteswap()
    n = min(n, _first_diff(words, expected.tobytes()) // 2)
    # checksum: every record's bytes sum to 0 modulo 256
    lane = 2 if width * 255 < 1 << 16 else 3
    column = bytearray(len(raw) // width * lane)
    total = 0
    for p in range(width):
        column[0::lane] = raw[p::width]
        total += int.from_bytes(column, "little")
    sums = total.to_bytes(len(column), "little")[0::lane]
    n = min(n, _first_diff(sums, bytes(len(sums))))
    if n < _MIN_BATCH:
        return nothing
    data = bytearray(n * size)
    for j in range(size):
        data[j::size] = raw[4 + j:n * width:width]
    return n, offset, data


def parse_hex(data: bytes | str, *, source: str | None = None) -> Image:
    """Parse a whole Intel HEX file into an :class:`Image`.

    Strict: every non-blank line must be a record starting with ':'; the
    file must end with an end-of-file record (data after it is ignored).
    """
    if isinstance(data, str):
        data = data.encode("ascii", "replace")  # non-ASCII -> '?' -> "non-hex digit"
    else:
        data = bytes(data)
    lines = data.splitlines()
    state = _AddressState(source)
    unhexlify = binascii.unhexlify
    adler32 = zlib.adler32
    runs: list[tuple[int, bytearray]] = []  # contiguous runs of data in file order
    run = bytearray()
    run_start = run_end = -1
    base = 0
    count = len(lines)
    number = 0  # lines done
    slow_until = 0  # no batch tried before this line
    while number < count:
        if number >= slow_until:
            # Batch path (see _data_batch): the leading lines of one length, as columns.
            batch = lines[number:number + _BATCH]
            same = len(list(next(groupby(map(len, batch)))[1]))  # leading lines as long as the first
            used, first, block = _data_batch(batch[:same], len(batch[0])) if same >= _MIN_BATCH else (0, 0, bytearray())
            if used:
                address = base + first
                if address == run_end:
                    run += block
                else:
                    if run:
                        runs.append((run_start, run))
                    run = block
                    run_start = address
                run_end = address + len(block)
                number += used
                continue
            # not a batch of data records: these lines one by one (a failed try costs up to
            # _BATCH lines of column work, so do not retry for a while)
            slow_until = number + (same if same < _MIN_BATCH else _SLOW_STRETCH)
        text = lines[number]
        number += 1
        # Fast path: a well-formed record without surrounding whitespace.
        # The checksum test uses Adler-32, whose low half is 1 + the byte
        # sum modulo 65521: exact for records up to 256 bytes (sum <= 65280),
        # and three times cheaper than sum() on a 21-byte record.
        try:
            raw = unhexlify(text[1:])
        except (binascii.Error, ValueError):
            raw = b""
        n = len(raw)
        if n < 5 or n > 256 or raw[0] + 5 != n or adler32(raw) & 0xFF != 1 or raw[3] > 5 or text[0] != 58:
            text = text.strip()
            if not text:
                continue
            if text[:1] != b":":
                raise FormatError("expected ':'", source=source, where=f"line {number}")
            rectype, offset, payload = _decode_record(text, number, source)
        else:
            rectype = raw[3]
            if rectype == DATA:
                address = base + ((raw[1] << 8) | raw[2])
                if address == run_end:
                    run += raw[4:-1]
                    run_end += n - 5
                    continue
                offset, payload = address - base, raw[4:-1]
            else:
                offset, payload = (raw[1] << 8) | raw[2], raw[4:-1]
        if rectype == DATA:
            address = base + offset
            if address == run_end:
                run += payload
            else:
                if run:
                    runs.append((run_start, run))
                run = bytearray(payload)
                run_start = address
            run_end = address + len(payload)
        else:
            state.apply(rectype, offset, payload, number)
            base = state.base
            if state.done:
                break
    if not state.done:
        raise FormatError("missing end-of-file record (truncated?)", source=source, where=f"line {len(lines)}")
    if run:
        runs.append((run_start, run))
    image = Image(start_address=state.start_address, start_address_kind=state.start_address_kind)
    try:
        for address, chunk in runs:
            image.add(address, chunk)
    except FormatError:
        # Overlap: the runs lost track of lines, so let the record-by-record
        # parser find the line that overlaps (slow, but only on error).
        stream = HexStream(source=source, _strict=True)
        stream.feed(data)
        stream.close()
        raise  # not reached: the stream raised first
    return image


class HexStream:
    """Incremental Intel HEX parser for data arriving in arbitrary chunks.

    Used by the printer personality, which receives the HEX file as a print
    job.  ``feed(chunk)`` returns the records completed by that chunk (each
    checked, data records with absolute addresses); ``close()`` at the end
    of the job raises :class:`FormatError` if the stream ended mid-record or
    without an end-of-file record, and returns a last record that had no
    line ending.

    A print job may carry a header (a PJL job, text, an escape sequence),
    so everything before the first record is skipped: the first record is
    the first line whose first non-blank character is ':', or the text after
    the last ':' of a line when that text is all hex digits (e.g.
    ``ESC%-12345X:10000000...``).  After the end-of-file record everything
    (form feeds, PJL trailer) is ignored.  Lines end with LF, CR or CRLF.
    """

    def __init__(self, source: str | None = None, *, _strict: bool = False):
        self.source = source
        self._strict = _strict  # parse_hex's rules: no header tolerated
        self._state = _AddressState(source)
        self._image = Image()
        self._pending = b""  # an unfinished line
        self._line = 0  # line terminators seen
        self._after_cr = False  # last byte seen was CR: a leading LF is its pair
        self._started = _strict
        self._error: FormatError | None = None

    @property
    def done(self) -> bool:
        """True once the end-of-file record has been seen."""
        return self._state.done

    @property
    def image(self) -> Image:
        """Everything received so far (the live object: do not modify)."""
        self._image.start_address = self._state.start_address
        self._image.start_address_kind = self._state.start_address_kind
        return self._image

    def feed(self, chunk: bytes) -> list[HexRecord]:
        if self._error is not None:
            raise self._error
        if self._state.done or not chunk:
            return []
        if self._after_cr and chunk[:1] == b"\n":
            chunk = chunk[1:]
        self._after_cr = chunk[-1:] == b"\r"
        pieces = (self._pending + chunk).splitlines(keepends=True)
        last = pieces[-1] if pieces else b""
        if last and last[-1:] not in (b"\n", b"\r"):
            pieces.pop()
            self._pending = last
        else:
            self._pending = b""
        records = []
        try:
            for piece in pieces:
                self._line += 1
                record = self._take_line(piece, self._line)
                if record is not None:
                    records.append(record)
                    if record.rectype == END_OF_FILE:  # the state is done: nothing after it counts
                        self._pending = b""
                        break
            self._check_pending()
        except FormatError as exc:
            self._error = exc
            raise
        return records

    def _check_pending(self) -> None:
        """Bound the memory an unterminated line can take."""
        if len(self._pending) <= 2 * _MAX_RECORD_CHARS:
            return
        if self._started:
            raise FormatError("record too long", source=self.source, where=f"line {self._line + 1}")
        # Header text: only the part after its last ':' may yet start a record.
        i = self._pending.rfind(b":")
        self._pending = self._pending[i:] if i >= 0 else b""

    def _take_line(self, text: bytes, line: int) -> HexRecord | None:
        text = text.strip()  # whitespace, CR/LF, form feeds
        if not text:
            return None
        if not self._started:
            if text[:1] != b":":
                i = text.rfind(b":")
                if i < 0 or len(text) - i < 11 or text[i + 1:].strip(_HEX_DIGITS):
                    return None  # header line
                text = text[i:]
            self._started = True
        if text[:1] != b":":
            raise FormatError("expected ':'", source=self.source, where=f"line {line}")
        rectype, offset, payload = _decode_record(text, line, self.source)
        if rectype == DATA:
            address = self._state.base + offset
            try:
                self._image.add(address, payload)
            except FormatError as exc:
                raise exc.at(source=self.source, where=f"line {line}") from None
            return HexRecord(line, rectype, address, payload)
        self._state.apply(rectype, offset, payload, line)
        return HexRecord(line, rectype, offset, payload)

    def close(self) -> list[HexRecord]:
        """End of stream: check it was complete; return a final unterminated record."""
        if self._error is not None:
            raise self._error
        records = []
        if self._pending and not self._state.done:
            line = self._line + 1
            try:
                record = self._take_line(self._pending, line)
            except FormatError as exc:
                if exc.problem.startswith(("bad length", "odd number", "record too short")):
                    exc = FormatError(f"truncated record ({exc.problem})", source=self.source, where=exc.where)
                self._error = exc
                raise exc from None
            self._pending = b""
            self._line = line
            if record is not None:
                records.append(record)
        if not self._state.done:
            self._error = FormatError(
                "missing end-of-file record (truncated?)", source=self.source, where=f"line {max(self._line, 1)}"
            )
            raise self._error
        return records


# -- writing ------------------------------------------------------------------------------
#
# Written by hand rather than with intelhex (which the writer used until issue 22): IntelHex
# keeps one dict entry per byte, so `bootkit convert` of a 16 MiB binary peaked at 1.39 GiB
# and took 2x bincopy's time.  The records are the ones intelhex's write_hex_file emits, byte
# for byte (tests/formats/test_formats_hexwriter.py checks it against intelhex itself):
#
# * the start address first, as a 03 (CS:IP) or 05 (EIP) record;
# * when any data lies above 0xFFFF, an 04 record before the first data record and before
#   the first record of every further 64 KiB window holding data (none otherwise);
# * data records of `record_size` bytes counted from the start of each run of contiguous
#   bytes, cut short at a gap and at every 64 KiB boundary (a record never wraps its 16-bit
#   offset), the next record starting at the boundary;
# * upper-case hex digits, LF line ends, ":00000001FF" last.
#
# Speed: the full records of one run inside one window are built as whole columns, not one
# record at a time: with R = record_size + 5 bytes a record, the length bytes, the two
# offset bytes and each data byte position are one strided slice assignment (out[p::R]) of
# the whole batch; the checksums come from adding the batch's byte columns as big integers
# with one 16-bit (24-bit for records over 252 bytes) lane per record, so no carry reaches
# the next record's lane; binascii.hexlify's separator puts a line end after every R bytes.
# A batch is at most one 64 KiB window, so memory stays a small multiple of 64 KiB whatever
# the image size (iter_hex yields a batch at a time).

_NEGATE = bytes(-b & 0xFF for b in range(256))  # bytes.translate table: b -> two's complement checksum
_SMALL_BATCH = 8  # fewer full records than this: the plain per-record path is faster


def _record(rectype: int, offset: int, data: bytes | memoryview) -> bytes:
    """One record line, the plain way (start/extended address records, short batches)."""
    raw = bytes((len(data), offset >> 8, offset & 0xFF, rectype)) + bytes(data)
    return b":" + (raw + bytes((-sum(raw) & 0xFF,))).hex().upper().encode("ascii") + b"\n"


def _data_records(offset: int, data: memoryview | bytes, size: int) -> bytes:
    """Data records of ``size`` bytes each for ``data`` (a whole number of them) whose first
    byte is at 16-bit ``offset``; the records do not cross 0xFFFF (the caller's window)."""
    count = len(data) // size
    if count < _SMALL_BATCH:
        return b"".join(_record(DATA, offset + k * size, data[k * size:(k + 1) * size]) for k in range(count))
    width = size + 5  # length, offset hi, offset lo, type, data, checksum
    data = bytes(data)  # strided slices of bytes are ~4x faster than of a memoryview
    out = bytearray(count * width)
    out[0::width] = bytes((size,)) * count
    offsets = array("H", range(offset, offset + count * size, size))
    if sys.byteorder == "little":
        offsets.byteswap()  # big-endian on the wire
    words = offsets.tobytes()
    out[1::width] = words[0::2]
    out[2::width] = words[1::2]
    # out[3::width] is the type, DATA (0): already zero
    for j in range(size):
        out[4 + j::width] = data[j::size]
    # checksum = -(sum of the record's bytes) & 0xFF, every record at once
    lane = 2 if (width - 1) * 255 < 1 << 16 else 3
    column = bytearray(count * lane)
    total = 0
    for p in range(width - 1):
        column[0::lane] = out[p::width]
        total += int.from_bytes(column, "little")
    out[width - 1::width] = total.to_bytes(count * lane, "little")[0::lane].translate(_NEGATE)
    text = binascii.hexlify(out, b"\n", width).upper()
    return b":" + text.replace(b"\n", b"\n:") + b"\n"


def iter_hex(image: Image, *, record_size: int = 16) -> Iterator[bytes]:
    """The image as Intel HEX text (ASCII bytes, LF line ends), a piece at a time (at most
    one 64 KiB window of data each), so a large image can be written to a file without
    holding its whole text.  The records are intelhex's (see the comment above)."""
    if not 1 <= record_size <= 255:
        raise ValueError(f"record_size must be 1..255, not {record_size}")
    if image.end > 0x1_0000_0000:
        raise FormatError(f"address 0x{image.end - 1:X} is above the 4 GiB Intel HEX can express")
    if image.start_address is not None:
        rectype = START_SEGMENT_ADDRESS if image.start_address_kind == "segment" else START_LINEAR_ADDRESS
        # 03 holds CS:IP, stored as (CS << 16) | IP, so both are the same four big-endian bytes
        yield _record(rectype, 0, (image.start_address & 0xFFFFFFFF).to_bytes(4, "big"))
    extended = image.end - 1 > 0xFFFF  # intelhex: 04 records only when the data needs them
    window = -1
    for start, chunk in image._iter_chunks():
        view = memoryview(chunk)
        address, end = start, start + len(chunk)
        while address < end:
            if extended and address >> 16 != window:
                window = address >> 16
                yield _record(EXTENDED_LINEAR_ADDRESS, 0, window.to_bytes(2, "big"))
            stop = min(end, ((address >> 16) + 1) << 16)  # this run's part in this window
            offset = address & 0xFFFF
            piece = view[address - start:stop - start]
            full = len(piece) - len(piece) % record_size
            if full:
                yield _data_records(offset, piece[:full], record_size)
            if full < len(piece):
                yield _record(DATA, offset + full, piece[full:])
            address = stop
    yield b":00000001FF\n"


def write_hex(image: Image, *, record_size: int = 16) -> str:
    """The image as Intel HEX text (LF line ends), the records intelhex writes (start
    address first, 04 records when any address is above 64 KiB, the 01 end-of-file last).
    For a large image, :func:`iter_hex` writes it to a file without holding all the text."""
    return b"".join(iter_hex(image, record_size=record_size)).decode("ascii")
