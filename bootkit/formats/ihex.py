"""Intel HEX: a fast batch parser, a streaming parser, and a writer.

Record types (Intel "Hexadecimal Object File Format Specification" rev A):
00 data, 01 end of file, 02 extended segment address, 03 start segment
address, 04 extended linear address, 05 start linear address.

Why the parsers are hand-written instead of using the ``intelhex``
library (which we do use for writing):

* speed: ``IntelHex`` keeps a dict entry per byte, so a 1 MiB image costs
  a million dict insertions.  Here each line is one ``binascii.unhexlify``
  and one ``sum``, and contiguous records are appended to one bytearray
  (benchmarks/bench_hex.py: about a tenth of intelhex's time);
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
import io
import zlib
from typing import NamedTuple

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
    number = 0
    base = 0
    for text in lines:
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


def write_hex(image: Image, *, record_size: int = 16) -> str:
    """The image as Intel HEX text (LF line ends), written by ``intelhex``.

    intelhex emits 04 records when any address is above 64 KiB, the start
    address as a 03 (segment) or 05 (linear) record first, and the 01 EOF.
    """
    from intelhex import IntelHex  # the library does this job; speed is fine

    if image.end > 0x1_0000_0000:
        raise FormatError(f"address 0x{image.end - 1:X} is above the 4 GiB Intel HEX can express")
    ih = IntelHex()
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
