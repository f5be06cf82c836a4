"""Printer device side: a text printer whose print jobs are Intel HEX files.

The idea is LUFA's printer bootloader (Bootloaders/Printer): the device
enumerates as a "Generic / Text Only" printer and whatever is printed to it
is parsed as Intel HEX and written to flash.  This engine keeps that shape
and fixes what LUFA's byte-at-a-time parser leaves out: every record's
checksum is checked before any of its bytes reach flash (the stream is
parsed by :class:`~bootkit.formats.ihex.HexStream`), extended segment and
linear addresses are decoded, data may come in any order and alignment,
the last partial page is flushed, and the application is only manifested
after the end-of-file record of a job that had no error.

:class:`PrinterEngine` is the sans-I/O state machine (events: bulk OUT
bytes, SOFT_RESET, the clock); :class:`PrinterFunction` puts it on the bus.

Job states::

    IDLE -- first record --> RECEIVING -- EOF record --> DONE (manifest, leave)
                               |   \\-- ':' inside a line / restart at the
                               |        job's first address --> RECEIVING (new job)
                               bad record, data out of range, SOFT_RESET,
                               bus reset, idle timeout: the job fails
                               v
    ERROR (discard) -- EOF record --> RESYNC -- ':' record at address 0 --> RECEIVING
    ERROR / RESYNC -- SOFT_RESET or idle timeout --> IDLE

A job that fails leaves the application invalid: the page holding the
reset vector is erased when a job starts (the blank-vector test LUFA's
Application_Jump_Check and our entry policy make), and manifest only runs
after a good end-of-file record.
"""

from __future__ import annotations

import re
import time
import zlib
from typing import Callable

from ...formats.ihex import (
    DATA,
    END_OF_FILE,
    EXTENDED_LINEAR_ADDRESS,
    EXTENDED_SEGMENT_ADDRESS,
    HexStream,
)
from ...formats.image import FormatError
from ...memory import MemoryFault
from ...memory.writer import SessionWriter
from ...usb.descriptors import Endpoint, Interface
from ...usb.device import RECIP_INTERFACE, RECIP_OTHER, TYPE_CLASS, Function, SetupPacket, SignalKind, Stall
from .protocol import (
    DEFAULT_DEVICE_ID,
    GET_DEVICE_ID,
    GET_PORT_STATUS,
    NOT_ERROR,
    PAPER_EMPTY,
    PRINTER_CLASS,
    PRINTER_SUBCLASS,
    PROTOCOL_BIDIRECTIONAL,
    PROTOCOL_UNIDIRECTIONAL,
    SELECT,
    SOFT_RESET,
    encode_device_id,
    format_error,
    format_ok,
)

IDLE, RECEIVING, ERROR, RESYNC, DONE = "idle", "receiving", "error", "resync", "done"

_EOF_RECORD = b":00000001FF"


class JobFailed(Exception):
    def __init__(self, message: str, *, out_of_range: bool = False):
        super().__init__(message)
        self.out_of_range = out_of_range


def _record_text(line: bytes) -> bytes:
    """The record part of a line: from its last ':' (a print job header may precede it)."""
    s = line.strip()
    i = s.rfind(b":")
    return s[i:] if i > 0 else s


def _extended_record(rectype: int, value: int) -> bytes:
    raw = bytes([2, 0, 0, rectype, value >> 8, value & 0xFF])
    return b":" + (raw + bytes([-sum(raw) & 0xFF])).hex().upper().encode() + b"\n"


class PrinterEngine:
    """The print-job-to-flash state machine over a MemoryIO."""

    def __init__(self, memory, *, clock: Callable[[], float] = time.monotonic,
                 signal: Callable[..., None] | None = None, job_timeout: float | None = 5.0,
                 leave: bool = True, leave_delay: float = 0.5):
        self.memory = memory
        self.clock = clock
        self.signal = signal or (lambda kind, reason="", delay=0.0: None)
        #: the memory's busy seconds: a printer has no way to say "wait", so the Function
        #: hands them to the transport, which holds the next transfer (Function.busy)
        self.busy: Callable[[float], None] = lambda seconds: None
        self.job_timeout = job_timeout
        self.leave = leave
        self.leave_delay = leave_delay
        flash = memory.layout.flash
        self.flash = flash
        self.page_size = flash.write_size if flash.write_size > 1 else 256
        self.app_ranges = memory.layout.application_ranges("flash")
        # the fast range check: the largest application range
        first = self.app_ranges[0][0] if self.app_ranges else flash.start
        self._vector_page = first - (first - flash.start) % self.page_size
        largest: tuple[int, int] = max(self.app_ranges, key=lambda r: r[1] - r[0], default=(0, 0))
        self._app_lo, self._app_hi = largest
        self.protected = memory.layout.protected
        self.writer = SessionWriter(memory)
        self.state = IDLE
        self.port_status = SELECT | NOT_ERROR
        self.jobs = 0
        self.history: list[str] = []  # every job's status line
        self.start_address: int | None = None
        self._status_out = b""  # the latest status line, not yet read from bulk IN
        self._pending = b""  # an unterminated line
        self._after_cr = False
        self._stale_pages: set[int] = set()  # written by failed jobs since the last manifest
        self._last_activity = clock()
        self._new_stream()

    # ------------------------------------------------------------------
    # job bookkeeping
    def _new_stream(self) -> None:
        self.stream = HexStream(source=None)
        self.line = 0  # lines of this job, as a text editor numbers them
        self.records = 0
        self.base = 0
        self.first_address: int | None = None
        self._run = bytearray()  # contiguous data not yet programmed ...
        self._run_page = 0  # ... starting at this page boundary ...
        self._run_end = -1  # ... and ending here
        self._flushed: set[int] = set()
        self._vector = bytearray(b"\xff" * self.page_size)  # the reset-vector page, held back

    def _start_job(self) -> None:
        self.jobs += 1
        self.state = RECEIVING
        self.port_status = SELECT | NOT_ERROR
        self._status_out = b""
        self.writer.reset()
        self._flushed = set()
        self._vector = bytearray(b"\xff" * self.page_size)
        # Invalidate the application first: erase the page holding the reset
        # vector (LUFA's Application_Jump_Check treats 0xFFFF there as "no
        # application"), so any failure from here on leaves it invalid.
        try:
            self.busy(self.writer.write(self._vector_page, b"\xff"))
        except MemoryFault:
            pass

    def _finish(self, text: str, *, ok: bool, out_of_range: bool = False) -> None:
        self.history.append(text.rstrip("\n"))
        self._status_out = text.encode("ascii", "replace")
        if ok:
            self.port_status = SELECT | NOT_ERROR
        else:
            self.port_status = SELECT | (PAPER_EMPTY if out_of_range else 0)
            self._stale_pages |= set(self.writer.erased)
        self._run = bytearray()
        self._run_end = -1

    def _fail(self, message: str, *, out_of_range: bool = False) -> None:
        self._finish(format_error(self.jobs, message), ok=False, out_of_range=out_of_range)
        self.state = ERROR

    def _cut_off(self, why: str) -> None:
        """The open job ends without its end-of-file record."""
        self._fail(f"job cut off after record {self.records} (line {self.line}): {why}")

    def _where(self) -> str:
        return f"record {self.records + 1} (line {self.line})"

    # ------------------------------------------------------------------
    # events
    def write(self, data: bytes) -> None:
        """Bytes of the print job from the bulk OUT endpoint, in chunks of any size."""
        self._last_activity = self.clock()
        if not data:
            return
        if self._after_cr and not self._pending and data[:1] == b"\n":
            data = data[1:]  # the LF of a CRLF split across two packets
        buf = self._pending + data if self._pending else bytes(data)
        cut = max(buf.rfind(b"\n"), buf.rfind(b"\r")) + 1
        if cut:
            self._after_cr = buf[cut - 1] == 13
            self._pending = buf[cut:]
            self._lines(buf[:cut])
        else:
            self._pending = buf
        pending = self._pending
        if pending and self.state == RECEIVING and len(pending) <= 64:
            # A last EOF record without a line end ("...:00000001FF" then
            # nothing, or a form feed) ends the job now, as LUFA's parser
            # does at the checksum byte.
            if pending.strip().upper() == _EOF_RECORD:
                self._pending = b""
                self._lines(pending.strip() + b"\n")
        if len(self._pending) > 4096:
            # No record is that long: keep the tail a record might start in.
            i = self._pending.rfind(b":")
            if self.state == RECEIVING:
                self.line += 1
                self._fail(f"{self._where()}: line longer than any record")
            self._pending = self._pending[i:] if i >= 0 else b""

    def soft_reset(self) -> None:
        """SOFT_RESET (printer class 1.1 section 4.2.3): flush, and be ready for a new job."""
        if self._job_open():
            self._cut_off("no end-of-file record before SOFT_RESET")
        if self.state != DONE:
            self.state = IDLE
            self._new_stream()
        self._pending = b""
        self._after_cr = False

    def bus_reset(self) -> None:
        if self._job_open():
            self._cut_off("no end-of-file record before a USB reset")
        if self.state != DONE:
            self.state = IDLE
            self._new_stream()
        self._pending = b""
        self._after_cr = False

    def tick(self, now: float) -> None:
        if self.job_timeout is None or self.state not in (RECEIVING, ERROR, RESYNC):
            return
        if now - self._last_activity >= self.job_timeout:
            if self._job_open():
                self._cut_off(f"no data for {self.job_timeout:g} s before the end-of-file record")
            self.state = IDLE
            self._new_stream()
            self._pending = b""

    def _job_open(self) -> bool:
        """A job under way, or the first record of one still without its line end."""
        if self.state == RECEIVING:
            return True
        if self.state == IDLE and self._pending.strip()[:1] == b":":
            self._start_job()
            return True
        return False

    def read_status(self, max_length: int) -> bytes | None:
        """Bulk IN: the latest job's status line once, else NAK (None)."""
        if not self._status_out:
            return None
        out, self._status_out = self._status_out[:max_length], self._status_out[max_length:]
        return out

    # ------------------------------------------------------------------
    # lines
    def _lines(self, text: bytes) -> None:
        """Complete lines (``text`` ends with a line terminator)."""
        while text:
            if self.state == RECEIVING and text.count(b":") == (
                    text.count(b"\n:") + text.count(b"\r:") + (text[0] == 58)):
                # Fast path: every ':' starts a line, so no record was cut
                # short by another; HexStream takes the whole batch.
                text = self._feed(text)
                continue
            # Slow path, a line at a time, until a job is under way.
            end = _line_end(text)
            self._take_line(text[:end])
            text = text[end:]

    def _take_line(self, line: bytes) -> None:
        state = self.state
        if state == RECEIVING:
            s = line.strip()
            if s.find(b":", 1) >= 0:
                # A ':' inside a line: the record before it was cut short and
                # a new job begins (LUFA restarts its parser at every ':').
                self.line += 1
                self._cut_off("a new record starts inside this line")
                self._begin(_record_text(s) + b"\n")
                return
            self._feed(line)
        elif state == IDLE:
            self._feed(line)
        elif state == ERROR:
            if _record_text(line).upper() == _EOF_RECORD:
                self.state = RESYNC
        elif state == RESYNC:
            rec = _record_text(line)
            # After a failed job's EOF: a new job starts with a record at
            # address 0000 (an extended address record, or data at the start)
            if rec[:1] == b":" and rec[3:7] == b"0000":
                self._begin(rec + b"\n")
        # DONE: everything after a good job's EOF (form feed, a PJL trailer,
        # a second copy of the job) is ignored; the device leaves.

    def _begin(self, line: bytes, base: int = 0) -> None:
        """Start a new job with ``line``, at extended address ``base`` (a restart keeps it)."""
        self.state = IDLE
        self._new_stream()
        if base:
            # Replay the extended address record in force, so the new
            # stream decodes the line's address as the old one did.
            self._start_job()
            if base >= 0x10000 and not base & 0xFFFF:
                self.stream.feed(_extended_record(EXTENDED_LINEAR_ADDRESS, base >> 16))
            else:
                self.stream.feed(_extended_record(EXTENDED_SEGMENT_ADDRESS, base >> 4))
            self.base = base
            self.line = 0
        self._feed(line)

    def _feed(self, text: bytes) -> bytes:
        """Complete lines into the job's HexStream; returns lines left to process after a restart."""
        try:
            records = self.stream.feed(text)
        except FormatError as exc:
            return self._format_error(exc, text)
        if self.state == IDLE:
            if not records:
                self.line += _count_lines(text)
                return b""
            self._start_job()
        self.line += _count_lines(text)
        try:
            self._records(records)
        except JobFailed as exc:
            self._fail(str(exc), out_of_range=exc.out_of_range)
        except MemoryFault as exc:
            self._fail(f"{self._where()}: {exc.kind} error: {exc}")
        return b""

    def _format_error(self, exc: FormatError, text: bytes) -> bytes:
        if self.state == IDLE:
            self._start_job()
        m = _LINE_RE.search(exc.where or "")
        lines = text.splitlines(keepends=True)
        index = int(m[1]) - self.line - 1 if m else len(lines) - 1
        index = min(max(index, 0), len(lines) - 1)
        # Records before the bad line were checked but the stream raised
        # before returning them; the job fails (or restarts) either way.
        self.records += sum(1 for ln in lines[:index] if ln.strip()[:1] == b":")
        self.line += index + 1
        if exc.problem.startswith("overlapping data") and self._restart(lines[index]):
            return b"".join(lines[index + 1:])
        self._fail(f"{self._where()}: {exc.problem}")
        return b"".join(lines[index + 1:])

    def _restart(self, line: bytes) -> bool:
        """A record that goes back to the job's first address: the job was cut and sent again."""
        rec = _record_text(line)
        try:
            offset = int(rec[3:7], 16)
        except ValueError:
            return False
        if self.first_address is None or self.base + offset != self.first_address:
            return False
        base = self.base
        self._cut_off("the job starts again at its first address")
        self._begin(rec + b"\n", base)
        return True

    def _records(self, records) -> None:
        lo, hi = self._app_lo, self._app_hi
        for rec in records:
            if rec.rectype == DATA:
                address, data = rec.address, rec.data
                n = len(data)
                if n:
                    if not (lo <= address and address + n <= hi):
                        self._check_range(address, n, rec.line)
                    if address == self._run_end:
                        self._run += data
                        self._run_end += n
                        if self._run_end - self._run_page >= self.page_size:
                            self._flush(final=False)
                    else:
                        self._new_run(address, data)
                self.records += 1
            else:
                self._record(rec)
                if self.state != RECEIVING:
                    return

    def _record(self, rec) -> None:
        t = rec.rectype
        self.records += 1
        if t == END_OF_FILE:
            self._end_of_file()
        elif t == EXTENDED_LINEAR_ADDRESS:
            self.base = ((rec.data[0] << 8) | rec.data[1]) << 16
        elif t == EXTENDED_SEGMENT_ADDRESS:
            self.base = ((rec.data[0] << 8) | rec.data[1]) << 4
        # 03/05 start address records: HexStream keeps them (self.stream.image)

    def _check_range(self, address: int, size: int, line: int) -> None:
        end = address + size
        for start, stop in self.app_ranges:
            if start <= address and end <= stop:
                return
        where = f"record {self.records + 1} (line {line})"
        for ps, pe in self.protected:
            if address < pe and ps < end:
                raise JobFailed(f"{where}: data at 0x{max(address, ps):X} reaches into the bootloader "
                                f"region 0x{ps:X}-0x{pe - 1:X}", out_of_range=True)
        span = ", ".join(f"0x{s:X}-0x{e - 1:X}" for s, e in self.app_ranges)
        raise JobFailed(f"{where}: data 0x{address:X}-0x{end - 1:X} is beyond the application flash "
                        f"({span})", out_of_range=True)

    # ------------------------------------------------------------------
    # the page buffer: a run of contiguous data from a page start; whole
    # pages are programmed as soon as the data has moved past them
    def _new_run(self, address: int, data: bytes) -> None:
        self._flush(final=True)
        if self.first_address is None:
            self.first_address = address
        page = address - (address - self.flash.start) % self.page_size
        if page in self._flushed:  # data came back to a page already written
            head = self._read(page, address - page)
        else:
            head = b"\xff" * (address - page)
        self._run = bytearray(head)
        self._run += data
        self._run_page = page
        self._run_end = address + len(data)

    def _read(self, address: int, size: int) -> bytes:
        """What a page written in this job holds (the held reset-vector page from RAM)."""
        vp = self._vector_page
        if vp <= address < vp + self.page_size:
            return bytes(self._vector[address - vp:address - vp + size])
        return self.memory.read(address, size)

    def _flush(self, *, final: bool) -> None:
        """Program the run's whole pages (and, ``final``, its last partial page padded)."""
        run = self._run
        if not run:
            return
        psize = self.page_size
        page = self._run_page
        full = len(run) // psize * psize
        if final and full < len(run):
            tail = page + full
            if tail in self._flushed:  # merge with what the page already holds
                old = self._read(tail, psize)
                rest = run[full:] + old[len(run) - full:]
            else:
                rest = run[full:] + b"\xff" * (psize - (len(run) - full))
            run = run[:full] + rest
            full = len(run)
        if full:
            vp = self._vector_page
            if page <= vp < page + full:
                # The page holding the reset vector is programmed last, at
                # the end-of-file record: until then the vector reads blank
                # and a cut job leaves no half application that could run.
                off = vp - page
                self._vector[:] = run[off:off + psize]
                if off:
                    self.busy(self.writer.write(page, bytes(run[:off])))
                if off + psize < full:
                    self.busy(self.writer.write(vp + psize, bytes(run[off + psize:full])))
            else:
                self.busy(self.writer.write(page, bytes(run[:full])))
            for p in range(page, page + full, psize):
                self._flushed.add(p)
            del self._run[:full]
            self._run_page = page + full
        if final:
            self._run = bytearray()
            self._run_end = -1

    def _end_of_file(self) -> None:
        try:
            self._flush(final=True)
            if self._vector_page in self._flushed:
                self.busy(self.writer.write(self._vector_page, bytes(self._vector)))
            # Pages a failed job wrote that this one did not: erase them, so
            # flash holds exactly this image.
            for page in sorted(self._stale_pages - self.writer.erased):
                self.busy(self.memory.erase(page))
            image = self.stream.image
            crc = 0
            for start, data in image.segments:
                crc = zlib.crc32(self.memory.read(start, len(data)), crc)
            self.busy(self.memory.manifest())
        except MemoryFault as exc:
            self._fail(f"{self._where()}: {exc.kind} error: {exc}")
            self.state = RESYNC  # this job's EOF has been seen
            return
        self._stale_pages.clear()
        self.start_address = image.start_address
        self._finish(format_ok(self.jobs, image.size, self.records, crc), ok=True)
        self.state = DONE
        if self.leave:
            self.signal(SignalKind.LEAVE, f"print job {self.jobs} programmed", self.leave_delay)


_LINE_RE = re.compile(r"line (\d+)")


def _count_lines(text: bytes) -> int:
    return text.count(b"\n") + text.count(b"\r") - text.count(b"\r\n")


def _line_end(text: bytes) -> int:
    """Index just past the first line terminator (LF, CR or CRLF) of ``text``."""
    n, r = text.find(b"\n"), text.find(b"\r")
    if r >= 0 and (n < 0 or r < n):
        return r + 2 if text[r + 1:r + 2] == b"\n" else r + 1
    return n + 1 if n >= 0 else len(text)


class PrinterFunction(Function):
    """Printer class interface (07/01/02 or 07/01/01): bulk OUT, and bulk IN when bidirectional."""

    name = "printer"

    def __init__(self, engine: PrinterEngine, *, device_id: str = DEFAULT_DEVICE_ID,
                 protocol: int = PROTOCOL_BIDIRECTIONAL, interface_name: str | None = None):
        super().__init__()
        if protocol not in (PROTOCOL_UNIDIRECTIONAL, PROTOCOL_BIDIRECTIONAL):
            raise ValueError(f"printer protocol must be 1 (unidirectional) or 2 (bidirectional), not {protocol}")
        self.engine = engine
        self.device_id = device_id
        self.protocol = protocol
        self.interface_name = interface_name
        self.ep_out_ = Endpoint(1, "out", "bulk", 64)
        self.ep_in_ = Endpoint(1, "in", "bulk", 64) if protocol == PROTOCOL_BIDIRECTIONAL else None
        engine.signal = self.signal
        engine.busy = self.busy

    def interfaces(self, speed: str = "full") -> list[Interface]:
        eps = [self.ep_out_] + ([self.ep_in_] if self.ep_in_ else [])
        return [Interface(0, PRINTER_CLASS, PRINTER_SUBCLASS, self.protocol, name=self.interface_name,
                          endpoints=eps)]

    def request_interface(self, req: SetupPacket) -> int | None:
        # Printer class 1.1 section 4.2.1: GET_DEVICE_ID carries the interface in the HIGH
        # byte of wIndex (interface << 8 | alternate), as usblp sends it; Linux devio.c
        # check_ctrlrecip special-cases exactly this request.
        if req.bmRequestType == 0xA1 and req.bRequest == GET_DEVICE_ID:
            return req.wIndex >> 8
        return None

    def with_local_interface(self, req: SetupPacket, local: int) -> SetupPacket:
        return req.with_index(local << 8 | (req.wIndex & 0xFF))

    def setup(self, req: SetupPacket, data: bytes) -> bytes | None:
        if req.type != TYPE_CLASS:
            raise Stall
        r = req.bRequest
        if r == GET_DEVICE_ID and req.is_in and req.recipient == RECIP_INTERFACE:
            # usblp puts the interface in the high byte and the alternate
            # setting in the low byte (printer class 1.1 section 4.2.1).
            interface, alternate = req.wIndex >> 8, req.wIndex & 0xFF
            if interface != 0 or alternate != 0:
                raise Stall
            return encode_device_id(self.device_id)
        if r == GET_PORT_STATUS and req.is_in and req.recipient == RECIP_INTERFACE:
            if req.wIndex & 0xFF:
                raise Stall
            return bytes([self.engine.port_status])
        if r == SOFT_RESET and not req.is_in and req.recipient in (RECIP_INTERFACE, RECIP_OTHER):
            # The spec says interface (0x21); usblp sends "other" (0x23).
            self.engine.soft_reset()
            if self.device is not None:  # "clears all stall conditions"
                for ep in self.endpoints():
                    self.device.halted.discard(ep.address)
            return None
        raise Stall

    def ep_out(self, ep: Endpoint, data: bytes) -> None:
        self.engine.write(data)

    def ep_in(self, ep: Endpoint, max_length: int) -> bytes | None:
        return self.engine.read_status(max_length)

    def configured(self, active: bool) -> None:
        self.engine.bus_reset()

    def bus_reset(self) -> None:
        self.engine.bus_reset()

    def tick(self, now: float) -> None:
        self.engine.tick(now)
