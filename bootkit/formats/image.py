"""The sparse firmware image every format parses into and writes from.

An :class:`Image` is a sorted list of non-overlapping, non-adjacent
segments (adjacent ones are merged), each one ``bytearray``.  A 1 MiB image
read from a HEX file is therefore a handful of byte strings, never a dict
per byte as in the ``intelhex`` library.  A segment may also be the
immutable ``bytes`` a binary file was read into (:meth:`Image._adopt`), so
that a 16 MiB binary is not held twice; it becomes a ``bytearray`` the
first time it is written to.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from typing import Iterable, Iterator


class FormatError(ValueError):
    """A corrupt, truncated or unsupported firmware file.

    ``str()`` is one line, ``"fw.hex: line 12: bad checksum (...)"``:
    the file (``source``), the place in it (``where``: ``"line N"``,
    ``"block N"`` or ``"offset 0x.."``) and the problem, leaving out the
    parts that are unknown.
    """

    def __init__(self, problem: str, *, source: str | None = None, where: str | None = None):
        self.problem = problem
        self.source = source
        self.where = where
        super().__init__(str(self))

    def __str__(self) -> str:
        return ": ".join(str(p) for p in (self.source, self.where, self.problem) if p is not None)

    def at(self, *, source: str | None = None, where: str | None = None) -> "FormatError":
        """The same error with ``source``/``where`` filled in where still unknown."""
        return FormatError(
            self.problem,
            source=self.source if self.source is not None else source,
            where=self.where if self.where is not None else where,
        )


@dataclass(frozen=True)
class FileOrigin:
    """What a firmware file says about the target it was built for.

    Host clients compare it with the device before erasing anything:
    ``uf2_families`` holds every familyID of the UF2 blocks that were kept
    (None for a block without one), ``dfu_ids`` the DFU suffix's
    (idVendor, idProduct), 0xFFFF meaning "any" (DFU 1.1 appendix B),
    ``eeprom`` how many EEPROM bytes a flash read of the file left out.
    """

    format: str
    path: str | None = None
    uf2_families: frozenset = frozenset()
    dfu_ids: tuple[int, int] | None = None
    # EEPROM bytes the file also holds, left out of a flash image (an AVR ELF's .eeprom)
    eeprom: int = 0


class Image:
    """A sparse firmware image: data at addresses, plus an optional entry point.

    ``start_address`` is the entry point read from the file (HEX record 03
    CS:IP stored as ``(CS << 16) | IP``, HEX record 05 EIP, SREC S7/S8/S9,
    ELF e_entry) or None.  ``start_address_kind`` remembers whether it came
    as a segment (03) or linear (05) address so a HEX round trip writes the
    same record type back.
    """

    __slots__ = ("_starts", "_chunks", "start_address", "start_address_kind", "origin")

    def __init__(
        self,
        segments: Iterable[tuple[int, bytes | bytearray]] | None = None,
        start_address: int | None = None,
        start_address_kind: str | None = None,
    ):
        self._starts: list[int] = []
        self._chunks: list[bytearray | bytes] = []  # bytes: adopted, copied on first write
        # What the file said about its target, filled in by formats.load: see FileOrigin.
        self.origin: FileOrigin | None = None
        self.start_address = start_address
        if start_address is not None and start_address_kind is None:
            start_address_kind = "linear"
        if start_address_kind not in (None, "segment", "linear"):
            raise ValueError(f"start_address_kind must be 'segment', 'linear' or None, not {start_address_kind!r}")
        self.start_address_kind = start_address_kind if start_address is not None else None
        if segments is not None:
            for address, data in segments:
                self.add(address, data)

    # -- building ---------------------------------------------------------

    def add(self, address: int, data: bytes | bytearray, *, overwrite: bool = False) -> None:
        """Put ``data`` at ``address``.

        Data that overlaps what is already there raises
        ``FormatError("overlapping data at 0x....")`` naming the first byte
        that differs, unless ``overwrite`` is true (the new bytes win).
        Overlapping bytes that are identical are accepted: a file that says
        the same thing twice is not corrupt.  (``intelhex`` is stricter and
        refuses any overlap.)
        """
        if address < 0:
            raise ValueError(f"negative address {address}")
        n = len(data)
        if not n:
            return
        end = address + n
        starts, chunks = self._starts, self._chunks
        i = bisect_right(starts, address) - 1
        # Fast path (every HEX record of a contiguous run): data continues
        # or lies inside segment i and stays clear of segment i+1.
        if i >= 0:
            s = starts[i]
            buf = chunks[i]
            if address <= s + len(buf) and (i + 1 == len(starts) or end < starts[i + 1]):
                if not isinstance(buf, bytearray):  # adopted bytes: copy before the first write
                    buf = chunks[i] = bytearray(buf)
                off = address - s
                if off == len(buf):
                    buf += data
                    return
                if not overwrite:
                    old = buf[off:end - s]
                    if old != data[:len(old)]:
                        self._overlap_error(address, old, data)
                buf[off:end - s] = data
                return
        # General case: merge with every segment it touches or overlaps.
        j = i if i >= 0 and starts[i] + len(chunks[i]) >= address else i + 1
        k = bisect_right(starts, end)  # segments j..k-1 touch [address, end]
        if j == k:
            starts.insert(j, address)
            chunks.insert(j, bytearray(data))
            return
        new_start = min(starts[j], address)
        new_end = max(end, starts[k - 1] + len(chunks[k - 1]))
        merged = bytearray(new_end - new_start)
        for m in range(j, k):
            s, buf = starts[m], chunks[m]
            if not overwrite:
                lo, hi = max(s, address), min(s + len(buf), end)
                if lo < hi:
                    there = buf[lo - s:hi - s]
                    new = data[lo - address:hi - address]
                    if there != new:
                        self._overlap_error(lo, there, new)
            merged[s - new_start:s - new_start + len(buf)] = buf
        merged[address - new_start:end - new_start] = data
        starts[j:k] = [new_start]
        chunks[j:k] = [merged]

    @classmethod
    def _adopt(cls, address: int, data: bytes) -> "Image":
        """An image of one segment that is ``data`` itself, not a copy (``bytes`` are
        immutable, so the image cannot change under the caller, nor the caller's under the
        image): a raw binary read from a file is then held once, not twice."""
        if address < 0:
            raise ValueError(f"negative address {address}")
        image = cls()
        if data:
            image._starts.append(address)
            image._chunks.append(data)
        return image

    @staticmethod
    def _overlap_error(address: int, old: bytes | bytearray, new: bytes | bytearray) -> None:
        first = next(i for i, (a, b) in enumerate(zip(old, new)) if a != b)
        raise FormatError(f"overlapping data at 0x{address + first:08X}")

    def merge(self, other: "Image", *, overwrite: bool = False) -> None:
        """Add all of ``other`` (and its entry point, if this image has none)."""
        for address, data in other._iter_chunks():
            self.add(address, data, overwrite=overwrite)
        if other.start_address is not None:
            if self.start_address is None or overwrite:
                self.start_address = other.start_address
                self.start_address_kind = other.start_address_kind
            elif self.start_address != other.start_address:
                raise FormatError(
                    f"conflicting start addresses 0x{self.start_address:08X} and 0x{other.start_address:08X}"
                )

    def copy(self) -> "Image":
        new = Image(start_address=self.start_address, start_address_kind=self.start_address_kind)
        new._starts = list(self._starts)
        new._chunks = [c if isinstance(c, bytes) else bytearray(c) for c in self._chunks]  # bytes: immutable, shared
        new.origin = self.origin
        return new

    def shifted(self, offset: int) -> "Image":
        """A copy with every segment moved by ``offset`` bytes.

        The entry point is carried over unchanged: it is where the CPU jumps
        to, which relocating the data does not move.
        """
        if self._starts and self._starts[0] + offset < 0:
            raise ValueError(f"shifting by {offset} moves data below address 0")
        new = self.copy()
        new._starts = [s + offset for s in new._starts]
        return new

    def crop(self, start: int, end: int) -> "Image":
        """A new Image holding only the data in ``[start, end)``."""
        new = Image(start_address=self.start_address, start_address_kind=self.start_address_kind)
        new.origin = self.origin
        for s, buf in self._iter_range(start, end):
            lo, hi = max(s, start), min(s + len(buf), end)
            new._starts.append(lo)
            new._chunks.append(bytearray(buf[lo - s:hi - s]))
        return new

    # -- reading ----------------------------------------------------------

    def _iter_chunks(self) -> Iterator[tuple[int, bytearray | bytes]]:
        """(start, live buffer) of every segment: read them, do not write them."""
        return zip(self._starts, self._chunks)

    def _iter_range(self, start: int, end: int) -> Iterator[tuple[int, bytearray | bytes]]:
        """Segments (live buffers, read only) that intersect ``[start, end)``."""
        starts, chunks = self._starts, self._chunks
        i = max(bisect_right(starts, start) - 1, 0)
        while i < len(starts) and starts[i] < end:
            if starts[i] + len(chunks[i]) > start:
                yield starts[i], chunks[i]
            i += 1

    @property
    def segments(self) -> list[tuple[int, bytes]]:
        return [(s, bytes(c)) for s, c in zip(self._starts, self._chunks)]

    @property
    def start(self) -> int:
        """Lowest address holding data (0 for an empty image)."""
        return self._starts[0] if self._starts else 0

    @property
    def end(self) -> int:
        """One past the highest address holding data (0 for an empty image)."""
        return self._starts[-1] + len(self._chunks[-1]) if self._starts else 0

    @property
    def size(self) -> int:
        """Number of data bytes (gaps not counted)."""
        return sum(len(c) for c in self._chunks)

    def __bool__(self) -> bool:
        return bool(self._starts)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Image):
            return NotImplemented
        return self._starts == other._starts and self._chunks == other._chunks

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        segs = ", ".join(f"0x{s:X}+{len(c)}" for s, c in self._iter_chunks())
        entry = "" if self.start_address is None else f", start_address=0x{self.start_address:X}"
        return f"Image([{segs}]{entry})"

    def tobytes(self, start: int | None = None, end: int | None = None, fill: int = 0xFF) -> bytes:
        """The bytes of ``[start, end)`` (default: the whole image), gaps filled with ``fill``."""
        if start is None:
            start = self.start
        if end is None:
            end = self.end
        if end <= start:
            return b""
        out = bytearray(bytes((fill,))) * (end - start)
        for s, buf in self._iter_range(start, end):
            lo, hi = max(s, start), min(s + len(buf), end)
            out[lo - start:hi - start] = buf[lo - s:hi - s]
        return bytes(out)

    def pages(self, page_size: int, fill: int = 0xFF, *, align: int = 0) -> Iterator[tuple[int, bytes]]:
        """``(page_address, page_bytes)`` for every page that holds any data.

        Pages are ``page_size`` long and start at addresses congruent to
        ``align`` modulo ``page_size``; gaps inside a page are ``fill``.
        """
        if page_size <= 0:
            raise ValueError("page_size must be positive")
        last = None
        for s, buf in list(self._iter_chunks()):
            first_page = s - (s - align) % page_size
            seg_end = s + len(buf)
            page = first_page if first_page != last else first_page + page_size
            while page < seg_end:
                yield page, self.tobytes(page, page + page_size, fill)
                last = page
                page += page_size
