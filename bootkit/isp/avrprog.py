"""AVRprog: Adafruit AVRprog's API over any ISP link.

Adafruit's ``adafruit_avrprog`` (CircuitPython) programs an AVR through its
ISP header; a chip is a dict (``name``, ``sig``, ``flash_size``,
``page_size``, ``fuse_mask`` = (low, high, ext, lock)).  :class:`AVRprog`
keeps its method names, arguments and return values (``verify_sig``,
``erase_chip``, ``read_fuses``, ``write_fuses``, ``verify_fuses``,
``program_file``, ``verify_file``, and the mid-level ``begin``, ``end``,
``read_signature``, ``read``), so a script written for it runs here with
``AVRprog(link)`` in place of ``AVRprog()`` + ``init(spi, reset_pin)``.  It
also takes bootkit's :class:`~bootkit.memory.chips.Chip` objects and chip
names, and adds what AVRprog lacks: :meth:`AVRprog.read_flash` and
:meth:`AVRprog.read_eeprom` to a file, :meth:`AVRprog.program_eeprom`, and
a progress bar.

Where this differs from Adafruit's code, on purpose:

- a fuse value of 0 is written and checked (Adafruit's ``if fuse:`` skips it);
- ``write_fuses`` writes the lock byte last: lock mode 2 locks the fuses
  (ATmega328P Table 27-2), so writing it first (as Adafruit does) makes the
  fuse writes after it fail silently;
- bad input is refused before anything is written (:class:`IspInputError`):
  a value outside a fuse's mask, an image larger than the flash, a file that
  is not a firmware image; a locked target where a read cannot work is an
  :class:`IspError` that says so;
- ``program_file`` reads any format bootkit reads (HEX, binary from 0,
  S-records, ELF, ...), validated whole before the chip is erased;
- ``verify_file`` compares the pages the file holds data in.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..memory.chips import EEPROM_BASE, Chip, chips_by_signature, get_chip
from . import protocol as P
from .errors import IspError, IspInputError
from .link import EmulatedLink, IspLink
from .target import EmulatedAvr

#: Adafruit's SCK rates: fuses, signature and erase at the slow one
_SLOW_CLOCK = 100000
_FAST_CLOCK = 1000000

#: what read_flash/read_eeprom write, by extension
_READ_FORMATS = {".hex": "hex", ".ihx": "hex", ".bin": "bin", ".srec": "srec"}


@dataclass(frozen=True)
class _Target:
    """The chip a call names, whatever way it was given."""

    name: str
    sig: bytes
    flash_size: int
    page_size: int
    fuse_mask: tuple[int, int, int, int]
    eeprom_size: int
    eeprom_page: int
    chip: Chip | None
    clock: int = _FAST_CLOCK


def _from_chip(chip: Chip, clock: int = _FAST_CLOCK) -> _Target:
    if chip.family != "avr":
        raise IspInputError(f"{chip.name} is not a classic AVR (family {chip.family}): ISP programs AVRs")
    masks = {f.name: f.mask for f in chip.fuses}
    mask = (masks.get("lfuse", 0), masks.get("hfuse", 0), masks.get("efuse", 0), chip.lock.mask if chip.lock else 0)
    return _Target(chip.name, chip.signature, chip.flash_size, chip.page_size, mask, chip.eeprom_size,
                   chip.eeprom_page, chip, clock)


def _resolve(chip: Any) -> _Target:
    if isinstance(chip, Chip):
        return _from_chip(chip)
    if isinstance(chip, str):
        try:
            return _from_chip(get_chip(chip))
        except KeyError as exc:
            raise IspInputError(str(exc.args[0])) from None
    if isinstance(chip, Mapping):
        missing = [k for k in ("name", "sig", "flash_size", "page_size", "fuse_mask") if k not in chip]
        if missing:
            raise IspInputError(f"chip dict {chip.get('name', '?')!r} lacks {', '.join(repr(k) for k in missing)} "
                                "(AVRprog's keys: name, sig, flash_size, page_size, fuse_mask)")
        try:
            sig = bytes(chip["sig"])
            mask = tuple(int(m) for m in chip["fuse_mask"])
            flash_size, page_size = int(chip["flash_size"]), int(chip["page_size"])
        except (TypeError, ValueError) as exc:
            raise IspInputError(f"chip dict {chip['name']!r}: {exc}") from None
        if len(sig) != 3 or len(mask) != 4 or page_size <= 0 or flash_size <= 0 or flash_size % page_size:
            raise IspInputError(f"chip dict {chip['name']!r}: sig needs 3 bytes, fuse_mask 4 values, "
                                "flash_size a multiple of page_size")
        known = chips_by_signature(sig)
        db = known[0] if known else None
        return _Target(str(chip["name"]), sig, flash_size, page_size, (mask[0], mask[1], mask[2], mask[3]),
                       int(chip.get("eeprom_size", db.eeprom_size if db else 0)),
                       int(chip.get("eeprom_page", db.eeprom_page if db else 0)), db,
                       int(chip.get("clock_speed", _FAST_CLOCK)))
    raise IspInputError(f"a chip is a dict (AVRprog's), a bootkit Chip or a chip name, not {type(chip).__name__}")


def _hexes(data: Sequence[int]) -> str:
    return " ".join(f"{b:02X}" for b in data)


class AVRprog:
    """Adafruit AVRprog's calls over an :class:`~.link.IspLink`.

    ``progress``: None shows a bar on a terminal only, True always, False never.
    """

    class Boards:
        """Adafruit AVRprog's board definitions (its ``AVRprog.Boards``)."""

        ATtiny13a = {"name": "ATtiny13a", "sig": [0x1E, 0x90, 0x07], "flash_size": 1024, "page_size": 32,
                     "fuse_mask": (0xFF, 0xFF, 0x00, 0x03), "clock_speed": 100000}
        ATtiny85 = {"name": "ATtiny85", "sig": [0x1E, 0x93, 0x0B], "flash_size": 8192, "page_size": 64,
                    "fuse_mask": (0xFF, 0xFF, 0x07, 0x3F)}
        ATmega328p = {"name": "ATmega328p", "sig": [0x1E, 0x95, 0x0F], "flash_size": 32768, "page_size": 128,
                      "fuse_mask": (0xFF, 0xFF, 0x07, 0x3F)}
        ATmega2560 = {"name": "ATmega2560", "sig": [0x1E, 0x98, 0x01], "flash_size": 262144, "page_size": 256,
                      "fuse_mask": (0xFF, 0xFF, 0x07, 0x3F)}

    def __init__(self, link: IspLink, *, progress: bool | None = None):
        if not isinstance(link, IspLink):
            raise IspInputError(f"AVRprog needs an ISP link (bootkit.isp.IspLink), not {type(link).__name__}; "
                                "EmulatedTarget('attiny85') makes one")
        self.link = link
        self.progress = progress
        self._connected = False

    # ------------------------------------------------------------ context manager

    def close(self) -> None:
        self.link.close()

    def __enter__(self) -> "AVRprog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ mid level (Adafruit's)

    def begin(self, clock: int = _FAST_CLOCK) -> None:
        """Enter programming mode: RESET low, Programming Enable (retried; IspError if no echo)."""
        self.link.connect(sck_hz=clock)
        self._connected = True

    def end(self) -> None:
        """Leave programming mode: RESET released, the target runs."""
        self._connected = False
        self.link.disconnect()

    def read_signature(self) -> list[int]:
        """The three signature bytes (call begin() first)."""
        return list(self.link.read_signature())

    def read(self, addr: int, read_buffer: bytearray) -> None:
        """Fill ``read_buffer`` with flash from byte address ``addr`` (call begin() first)."""
        read_buffer[:] = self.link.read_memory("flash", addr, len(read_buffer))

    # ------------------------------------------------------------ signature, erase, fuses

    def verify_sig(self, chip: Any, verbose: bool = False) -> bool:
        """Whether the target answers with ``chip``'s signature."""
        target = _resolve(chip)
        self.begin(clock=_SLOW_CLOCK)
        try:
            sig = self.read_signature()
        finally:
            self.end()
        if verbose:
            print(f"Found signature: {[hex(i) for i in sig]}")
        return bytes(sig) == target.sig

    def _check_sig(self, target: _Target) -> None:
        self.begin(clock=_SLOW_CLOCK)
        try:
            sig = bytes(self.read_signature())
        finally:
            self.end()
        if sig != target.sig:
            raise IspError(f"signature {_hexes(sig)} is not {target.name}'s {_hexes(target.sig)}: wrong chip "
                           "or wiring; nothing was written")

    def erase_chip(self) -> None:
        """Chip erase: flash, EEPROM (unless EESAVE is programmed) and lock bits."""
        from ..progress import phase

        phase("erase chip")  # what an interrupted command reports: the device is being changed
        self.begin(clock=_SLOW_CLOCK)
        try:
            self.link.chip_erase()
        finally:
            self.end()

    def _raw_fuses(self) -> dict[str, int]:
        self.begin(clock=_SLOW_CLOCK)
        try:
            return self.link.read_fuses()
        finally:
            self.end()

    def read_fuses(self, chip: Any) -> tuple[int, int, int, int]:
        """(low, high, ext, lock), each ANDed with the chip's fuse mask (as Adafruit's)."""
        target = _resolve(chip)
        raw = self._raw_fuses()
        names = (*P.FUSE_NAMES, "lock")
        low, high, ext, lock = (raw.get(n, 0xFF) & m for n, m in zip(names, target.fuse_mask))
        return (low, high, ext, lock)

    def write_fuses(self, chip: Any, low: int | None = None, high: int | None = None, ext: int | None = None,
                    lock: int | None = None) -> None:
        """Write the given fuses (None: skipped), the lock byte last.  Every value is checked
        against the chip's mask before anything is written (IspInputError)."""
        target = _resolve(chip)
        given = {n: v for n, v in zip((*P.FUSE_NAMES, "lock"), (low, high, ext, lock)) if v is not None}
        problems = []
        for (name, mask) in zip((*P.FUSE_NAMES, "lock"), target.fuse_mask):
            if name in given:
                problem = P.fuse_value_problem(name, given[name], mask)
                if problem is None and target.chip is not None and name != "lock" and \
                        name not in {f.name for f in target.chip.fuses}:
                    problem = f"{target.chip.name} has no {name}"
                if problem:
                    problems.append(problem)
        if problems:
            raise IspInputError(f"{target.name}: {'; '.join(problems)}; nothing was written")
        if not given:
            return
        self.begin(clock=_SLOW_CLOCK)
        try:
            if any(n != "lock" for n in given):
                held = self.link.read_fuses().get("lock", 0xFF)
                if held & 0x03 != 0x03:
                    raise IspError(f"{target.name} is locked (lock byte 0x{held:02X}): its fuses cannot be "
                                   "written; erase_chip() clears the lock bits")
            for name in (*P.FUSE_NAMES, "lock"):
                if name in given:
                    self.link.write_fuse(name, given[name])
        finally:
            self.end()

    def verify_fuses(self, chip: Any, low: int | None = None, high: int | None = None, ext: int | None = None,
                     lock: int | None = None) -> bool:
        """Whether the given fuses (None: not checked) read back, compared under the chip's mask."""
        target = _resolve(chip)
        fuses = self.read_fuses(chip)
        for want, got, mask in zip((low, high, ext, lock), fuses, target.fuse_mask):
            if want is not None and want & mask != got:
                return False
        return True

    # ------------------------------------------------------------ files

    def _load(self, file_name: str | os.PathLike, target: _Target, memory: str):
        from ..formats import ADDRESSED, FormatError, identify, load

        path = os.fspath(file_name)
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise IspInputError(f"{path}: cannot read: {exc.strerror or exc}") from None
        try:
            fmt = identify(data, path)
            image = load(data, fmt=fmt, base=0, source=path, memory=memory)
        except FormatError as exc:
            raise IspInputError(str(exc)) from None
        except ValueError as exc:
            raise IspInputError(f"{path}: {exc}") from None
        size = target.flash_size if memory == "flash" else target.eeprom_size
        what = "flash" if memory == "flash" else "EEPROM"
        if memory == "eeprom" and image and fmt in ADDRESSED and image.start >= EEPROM_BASE:
            image = image.shifted(-EEPROM_BASE)  # avr-objcopy's .eeprom section address (0x810000)
        if not image:
            raise IspInputError(f"{path}: no {what} data")
        if not size:
            raise IspInputError(f"{path}: {target.name} has no {what}")
        if image.end > size:
            raise IspInputError(f"{path}: the image ends at 0x{image.end:X}, past the end of {target.name}'s "
                                f"{what} ({size} bytes); nothing was written")
        return image

    def _bar(self, description: str, total: int):
        from ..progress import progress_bar

        return progress_bar(description, total, self.progress)

    def _check_readable(self, target: _Target) -> None:
        held = self.link.read_fuses().get("lock", 0xFF)
        if held & 0x02 == 0:  # LB2 programmed: lock mode 3, "further verification disabled"
            raise IspError(f"{target.name} is locked (lock byte 0x{held:02X}, lock mode 3): its flash and "
                           "EEPROM cannot be read; only erase_chip() unlocks it (and erases them)")

    def program_file(self, chip: Any, file_name: str | os.PathLike, verbose: bool = False,
                     verify: bool = True) -> bool:
        """Erase the chip and program the file, verifying page by page as it writes.

        Returns False at the first page that does not read back (True when ``verify`` is
        False).  The file is checked whole, and the signature read, before the erase.
        """
        target = _resolve(chip)
        image = self._load(file_name, target, "flash")
        self._check_sig(target)
        if verbose:
            print("Erasing chip....")
        self.erase_chip()
        pages = [(a, p) for a, p in image.pages(target.page_size) if p.count(0xFF) != len(p)]
        self.begin(clock=target.clock)
        try:
            with self._bar("program flash", len(pages) * target.page_size) as advance:
                for address, page in pages:
                    if verbose:
                        print(f"Programming page ${address:04X}...", end="")
                    self.link.write_page("flash", address, page, page_size=target.page_size)
                    if verify:
                        if verbose:
                            print(f"Verifying page @ ${address:04X}")
                        back = self.link.read_memory("flash", address, target.page_size)
                        if back != page:
                            if verbose:
                                print(f"Verify fail at address {address:04X}\nPage should be: {page.hex()}\n"
                                      f"But contains: {back.hex()}")
                            return False
                    elif verbose:
                        print("done!")
                    advance(target.page_size)
        finally:
            self.end()
        return True

    def verify_file(self, chip: Any, file_name: str | os.PathLike, verbose: bool = False) -> bool:
        """Whether the flash holds the file (every page the file has data in)."""
        target = _resolve(chip)
        image = self._load(file_name, target, "flash")
        self._check_sig(target)
        pages = list(image.pages(target.page_size))
        self.begin(clock=target.clock)
        try:
            self._check_readable(target)
            with self._bar("verify flash", len(pages) * target.page_size) as advance:
                for address, page in pages:
                    if verbose:
                        print(f"Verifying page @ ${address:04X}")
                    back = self.link.read_memory("flash", address, target.page_size)
                    if back != page:
                        if verbose:
                            print(f"Verify fail at address {address:04X}\nPage should be: {page.hex()}\n"
                                  f"But contains: {back.hex()}")
                        return False
                    advance(target.page_size)
        finally:
            self.end()
        return True

    def program_eeprom(self, chip: Any, file_name: str | os.PathLike, verbose: bool = False,
                       verify: bool = True) -> bool:
        """Write the file's bytes to EEPROM (no erase: the other bytes keep their values);
        False when a page does not read back."""
        target = _resolve(chip)
        image = self._load(file_name, target, "eeprom")
        self._check_sig(target)
        page_size = max(target.eeprom_page, 1)
        chunks = []
        for start, data in image.segments:
            a = start
            while a < start + len(data):
                n = min(page_size - a % page_size, start + len(data) - a)
                chunks.append((a, data[a - start:a - start + n]))
                a += n
        self.begin(clock=target.clock)
        try:
            held = self.link.read_fuses().get("lock", 0xFF)
            if held & 0x03 != 0x03:
                raise IspError(f"{target.name} is locked (lock byte 0x{held:02X}): its EEPROM cannot be written; "
                               "erase_chip() clears the lock bits")
            with self._bar("program EEPROM", image.size) as advance:
                for address, data in chunks:
                    if verbose:
                        print(f"Programming EEPROM ${address:04X}+{len(data)}")
                    self.link.write_page("eeprom", address, data, page_size=page_size)
                    if verify and self.link.read_memory("eeprom", address, len(data)) != data:
                        if verbose:
                            print(f"Verify fail at EEPROM address {address:04X}")
                        return False
                    advance(len(data))
        finally:
            self.end()
        return True

    def _read_to_file(self, chip: Any, file_name: str | os.PathLike, memory: str) -> bytes:
        from ..formats import Image, save

        target = _resolve(chip)
        path = os.fspath(file_name)
        fmt = _READ_FORMATS.get(Path(path).suffix.lower())
        if fmt is None:
            raise IspInputError(f"{path}: cannot tell the format to write from the extension "
                                f"(use {', '.join(sorted(_READ_FORMATS))})")
        size = target.flash_size if memory == "flash" else target.eeprom_size
        if not size:
            raise IspInputError(f"{target.name} has no {memory}")
        self._check_sig(target)
        block = 256
        out = bytearray()
        self.begin(clock=target.clock)
        try:
            self._check_readable(target)
            with self._bar(f"read {memory}", size) as advance:
                for address in range(0, size, block):
                    out += self.link.read_memory(memory, address, min(block, size - address))
                    advance(min(block, size - address))
        finally:
            self.end()
        data = bytes(out)
        # trailing erased bytes are left out, as avrdude does when it reads a memory to a file
        used = data.rstrip(b"\xff")
        image = Image()
        if used:
            image.add(0, used)
        try:
            save(image, path, fmt)
        except OSError as exc:
            raise IspError(f"{path}: cannot write: {exc.strerror or exc}") from None
        return data

    def read_flash(self, chip: Any, file_name: str | os.PathLike) -> bytes:
        """Read the whole flash to ``file_name`` (.hex, .bin or .srec; trailing 0xFF left
        out, as avrdude does); returns all of it."""
        return self._read_to_file(chip, file_name, "flash")

    def read_eeprom(self, chip: Any, file_name: str | os.PathLike) -> bytes:
        """Read the whole EEPROM to ``file_name`` (as :meth:`read_flash`); returns all of it."""
        return self._read_to_file(chip, file_name, "eeprom")


def EmulatedTarget(chip_name: Chip | str, **kw: Any) -> EmulatedLink:
    """An emulated AVR on a link, for ``AVRprog(EmulatedTarget("attiny85"))``; ``kw`` goes to
    :class:`~.target.EmulatedAvr` (``image=``, ``realtime=``, ``clock=``)."""
    return EmulatedLink(EmulatedAvr(chip_name, **kw))
