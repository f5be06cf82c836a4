"""``isp:LINK``: a classic AVR on an in-system programming link, as a memory back-end.

LINK is one of::

    emulated:CHIP[,IMAGE]     an emulated AVR wired straight to the link (bootkit.isp.EmulatedAvr;
                              IMAGE: its flash file, kept as ``serve --image`` keeps one)
    usbasp[:SERIAL]           a USBasp on this machine's USB (avrdude -c usbasp)
    stk500v2:PORT             an STK500 v2 / AVRISP mkII-class programmer on a serial port

How the MemoryIO operations map onto ISP (ATtiny85 datasheet §20.6, ATmega328P §28.8):

- ``layout``: the chip the target's signature names (Read Signature Byte), all of its
  flash writable (ISP has no bootloader region), one region of its pages.
- ``erase``: ISP has no page erase, only Chip Erase.  The first erase of an update is a
  Chip Erase (every page then known erased); erasing a page again after it was
  programmed in the same update cannot be done and is an EraseFault, never a silent
  no-op.  A UF2 drive or a printer erases each page once before its first write
  (SessionWriter), so they work.
- ``program``: bytes gathered into the page buffer, written a page at a time (Load
  Program Memory Page + Write Program Memory Page, RDY/BSY polled by the link): one
  page held at most.
- ``read``: Read Program Memory.
- ``manifest``: RESET released (the AVR starts its program): confirmed when the link
  did it without error.  The next operation enters programming mode again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..core import AddressFault, EraseFault, FirmwareFault, Layout, ProtectedFault, Region, Timing, WriteFault
from . import BackendFault, BackendWriteFault, TargetSpec

if TYPE_CHECKING:
    from ..chips import Chip


def open_isp(spec: TargetSpec, chip: Chip | None = None) -> IspMemory:
    """The ``isp`` scheme: the link LINK names, and the AVR on it."""
    from ...isp.errors import IspError, IspInputError

    assert spec.link is not None
    kind, _, rest = spec.link.partition(":")
    try:
        if kind == "emulated":
            from ...isp.link import EmulatedLink
            from ...isp.target import EmulatedAvr

            name, _, image = rest.partition(",")
            if not name:
                raise ValueError(f"--target {spec.text}: expected isp:emulated:CHIP[,IMAGE]")
            link: Any = EmulatedLink(EmulatedAvr(name, image=image or None))
        elif kind == "usbasp":
            from ...isp.usbasp import UsbaspLink

            link = UsbaspLink(serial=rest or None, chip=chip)
        elif kind == "stk500v2":
            from ...isp.stk500v2 import Stk500v2Link

            if not rest:
                raise ValueError(f"--target {spec.text}: expected isp:stk500v2:PORT")
            link = Stk500v2Link(rest, chip=chip)
        else:
            raise ValueError(f"--target {spec.text}: unknown ISP link {kind!r} (emulated:CHIP, usbasp, stk500v2:PORT)")
    except KeyError as exc:  # an emulated chip the database does not know
        raise ValueError(f"--target {spec.text}: {exc.args[0] if exc.args else exc}") from None
    except IspInputError as exc:
        raise ValueError(f"--target {spec.text}: {exc}") from None
    except IspError as exc:
        raise OSError(str(exc)) from None
    return IspMemory(link, chip)


class IspMemory:
    """MemoryIO over an :class:`~bootkit.isp.link.IspLink`."""

    def __init__(self, link: Any, chip: Chip | None = None):
        from ...isp.errors import IspError
        from ..chips import chips_by_signature

        self.link = link
        self._connected = False
        try:
            self._connect()
            signature = link.read_signature()
        except IspError as exc:
            link.close()
            raise OSError(f"ISP target: {exc}") from None
        found = chips_by_signature(signature)
        if not found:
            link.close()
            raise OSError(f"ISP target: signature {signature.hex(' ')} is no chip of the database")
        if chip is not None and chip.signature != signature:
            link.close()
            raise ValueError(f"the AVR on the link is {found[0].name} (signature {signature.hex(' ')}), "
                             f"not {chip.name}")
        # ISP reaches all of flash (there is no bootloader to keep: Chip Erase takes every page),
        # so the chip the front describes is this one, without a boot region, as the isp
        # personality's programmer describes its target (serve uses it)
        target = self.chip = (chip or found[0]).with_boot(0)
        page = target.page_size
        flash = Region("flash", target.flash_start, ((target.flash_size // page, page),), write_size=page)
        self.layout = Layout((flash,))
        self.page_size = page
        self.timing = Timing()  # the link polls RDY/BSY itself: every call returns when done
        self.read_protected = False
        self.app_valid = False
        self._erased: set[int] | None = None  # pages known erased since this update's Chip Erase
        self._page = bytearray()  # the page being gathered
        self._page_at = -1

    def _connect(self) -> None:
        if not self._connected:
            self.link.connect()
            self._connected = True

    def _fail(self, exc: Exception, what: str, fault: type[BackendFault] = BackendFault) -> BackendFault:
        self.app_valid = False
        self._connected = False
        return fault(f"ISP target: {what}: {exc}")

    # ------------------------------------------------------------------
    def _check(self, address: int, length: int) -> Region:
        region = self.layout.find(address)
        if address + length > region.end:
            raise AddressFault(f"0x{address:X}+{length} runs past the end of flash (0x{region.end:X})", address)
        return region

    def read(self, address: int, length: int) -> bytes:
        from ...isp.errors import IspError

        if length == 0:
            return b""
        self._check(address, length)
        self.flush()
        try:
            self._connect()
            return bytes(self.link.read_memory("flash", address, length))
        except IspError as exc:
            raise self._fail(exc, f"read at 0x{address:X}") from None

    def is_blank(self) -> bool:
        if self.app_valid:
            # checked before the confirmed manifest, and nothing changed since: asking again
            # would bring a target that now runs its application back to its bootloader
            return False
        start = self.layout.application_ranges()[0][0]
        return self.read(start, 2) == b"\xff\xff"

    def erase(self, address: int) -> float:
        from ...isp.errors import IspError

        region = self._check(address, 1)
        start, size = region.sector_at(address)
        if self.layout.is_protected(start, start + size):
            raise ProtectedFault(f"page 0x{start:X} holds the bootloader", address)
        if self._erased is not None:
            if start in self._erased:
                return 0.0
            raise EraseFault(f"ISP erases the whole chip only: page 0x{start:X} was programmed since this "
                             f"update's chip erase", address)
        self.erase_all()
        return 0.0

    def erase_all(self) -> float:
        from ...isp.errors import IspError

        if self.layout.protected:
            # Chip Erase would take the front's boot region too: refuse rather than erase it
            raise ProtectedFault("a chip erase would erase the protected region the front keeps")
        self._page.clear()
        self.app_valid = False
        try:
            self._connect()
            self.link.chip_erase()
        except IspError as exc:
            raise self._fail(exc, "chip erase", BackendWriteFault) from None
        flash = self.layout.flash
        self._erased = {s for s, _ in flash.sector_bounds()}
        self.read_protected = False
        return 0.0

    def program(self, address: int, data: bytes) -> float:
        if not data:
            return 0.0
        region = self._check(address, len(data))
        if not region.writable:
            raise WriteFault("flash is read-only", address)
        if self.layout.is_protected(address, address + len(data)):
            raise ProtectedFault(f"0x{address:X}+{len(data)} reaches into the bootloader region", address)
        self.app_valid = False
        pos = 0
        while pos < len(data):
            at = address + pos
            page = at - at % self.page_size
            if self._page and (page != self._page_at or at != self._page_at + len(self._page)):
                self.flush()
            if not self._page:
                self._page_at = page
                self._page += b"\xff" * (at - page)  # an erased cell stays erased under 0xFF
            take = min(len(data) - pos, page + self.page_size - at)
            self._page += data[pos:pos + take]
            pos += take
            if len(self._page) == self.page_size:
                self.flush()
        return 0.0

    def flush(self) -> None:
        """Write the gathered page (Write Program Memory Page; the link polls RDY/BSY)."""
        from ...isp.errors import IspError

        if not self._page:
            return
        at, data = self._page_at, bytes(self._page)
        self._page.clear()
        try:
            self._connect()
            self.link.write_page("flash", at, data, page_size=self.page_size)
        except IspError as exc:
            raise self._fail(exc, f"write at 0x{at:X}", BackendWriteFault) from None
        if self._erased is not None:
            self._erased.discard(at)

    def manifest(self) -> float:
        """Release RESET: the AVR runs what its flash holds."""
        from ...isp.errors import IspError

        self.flush()
        if self.is_blank():
            raise FirmwareFault("no application: the first word of flash is erased")
        try:
            self.link.disconnect()
        except IspError as exc:
            raise self._fail(exc, "releasing RESET") from None
        self._connected = False
        self._erased = None  # the next update starts with a chip erase again
        self.app_valid = True
        return 0.0

    def persist(self) -> None:
        self.flush()

    def close(self) -> None:
        try:
            self.flush()
        except BackendFault:
            pass  # never reported to the host as written (no manifest): nothing lost
        finally:
            self.link.close()
