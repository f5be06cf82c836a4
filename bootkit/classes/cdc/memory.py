"""An AVR109 bootloader on a serial port as a memory back-end (issue 23): our own AVR109
host client behind the MemoryIO contract, registered as the ``serial.avr109`` adapter of
the ``bootkit.memories`` group (``--target serial:PORT,avr109``).

How each MemoryIO operation maps onto AVR109 (Atmel AVR109 application note; LUFA's
BootloaderCDC.c):

- ``layout``: the chip the bootloader's signature ('s') names, its boot section protected
  (the bootloader refuses it too).
- ``erase``: the first erase of an update is 'e' (chip erase: the whole application, as
  avrdude does first); a page written since is erased by writing it as 0xFF (LUFA erases
  the page a 'B'..'F' block write starts at).
- ``program``: gathered a page at a time and sent as 'A' + 'B' size 'F' data (one page
  held at most; a page written again in the same update is read first and sent whole).
- ``read``: 'A' + 'g' size 'F'.
- ``manifest``: 'L' and 'E' (leave programming mode, exit the bootloader): valid only
  when both were acknowledged with '\\r'.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...memory.backends import BackendEraseFault, BackendFault, BackendWriteFault
from ...memory.core import AddressFault, FirmwareFault, Layout, ProtectedFault, Region, Timing, WriteFault
from ..common import HostError

if TYPE_CHECKING:
    from ...memory.chips import Chip
    from .host import Avr109Client


def serial_memory(port: str, dialect: str, chip: Chip | None = None) -> Avr109Memory:
    """The ``serial.avr109`` adapter: the bootloader on ``port`` (a device path)."""
    from .host import DEFAULT_BAUD, Avr109Client, _open_serial

    try:
        ser = _open_serial(port, DEFAULT_BAUD)
    except HostError as exc:
        raise OSError(str(exc)) from None
    client = Avr109Client(ser, progress=False)
    try:
        client.connect(chip)
    except HostError as exc:
        ser.close()
        raise OSError(f"AVR109 target on {port}: {exc}") from None
    return Avr109Memory(client, ser)


class Avr109Memory:
    """MemoryIO over an open :class:`~bootkit.classes.cdc.host.Avr109Client` session."""

    def __init__(self, client: Avr109Client, ser: Any):
        self.client = client
        self.ser = ser
        self.chip = client.target
        base = self.chip.layout()
        self.layout = Layout((base.flash,), base.protected)
        self.page_size = max(self.chip.page_size, 2)
        self.timing = Timing()  # every command is acknowledged when the bootloader is done
        self.read_protected = False
        self.app_valid = False
        self._left = False
        self._erased_once = False
        self._written: set[int] = set()
        self._page = bytearray()
        self._page_at = -1

    def _live(self) -> Avr109Client:
        if self._left:
            raise BackendFault("AVR109 target: the bootloader has left (its application runs)")
        return self.client

    def _fail(self, exc: Exception, what: str, fault: type[BackendFault] = BackendFault) -> BackendFault:
        self.app_valid = False
        return fault(f"AVR109 target: {what}: {exc}")

    def _region(self, address: int, length: int) -> Region:
        region = self.layout.find(address)
        if address + length > region.end:
            raise AddressFault(f"0x{address:X}+{length} runs past the end of {region.name} (0x{region.end:X})",
                               address)
        return region

    # ------------------------------------------------------------------
    def read(self, address: int, length: int) -> bytes:
        if length == 0:
            return b""
        self._region(address, length)
        self.flush()
        c = self._live()
        # AVR109 reads flash in words: from an even address, an even count
        lo, hi = address & ~1, (address + length + 1) & ~1
        try:
            data = c.read_range(lo, hi - lo)
        except (HostError, OSError) as exc:
            raise self._fail(exc, f"read at 0x{address:X}") from None
        return data[address - lo:address - lo + length]

    def is_blank(self) -> bool:
        if self.app_valid:
            return False  # checked before the confirmed leave; the bootloader has gone since
        start = self.layout.application_ranges()[0][0]
        return self.read(start, 2) == b"\xff\xff"

    def erase(self, address: int) -> float:
        region = self._region(address, 1)
        start, size = region.sector_at(address)
        if self.layout.is_protected(start, start + size):
            raise ProtectedFault(f"page 0x{start:X} holds the bootloader", address)
        if not self._erased_once:
            return self.erase_all()
        if start in self._written:
            self.flush()
            self._send(start, b"\xff" * size, BackendEraseFault)
        return 0.0

    def erase_all(self) -> float:
        """'e': the application section (the bootloader keeps itself)."""
        self._page.clear()
        self.app_valid = False
        c = self._live()
        try:
            c.chip_erase()
        except (HostError, OSError) as exc:
            raise self._fail(exc, "chip erase", BackendEraseFault) from None
        self._erased_once = True
        self._written.clear()
        return 0.0

    def program(self, address: int, data: bytes) -> float:
        if not data:
            return 0.0
        region = self._region(address, len(data))
        if not region.writable:
            raise WriteFault(f"{region.name} is read-only", address)
        if self.layout.is_protected(address, address + len(data)):
            raise ProtectedFault(f"0x{address:X}+{len(data)} reaches into the bootloader region", address)
        self.app_valid = False
        pos = 0
        while pos < len(data):
            at = address + pos
            page = at - at % self.page_size
            if self._page and page != self._page_at:
                self.flush()
            if not self._page:
                self._page_at = page
                self._page[:] = self.read(page, self.page_size) if page in self._written else \
                    b"\xff" * self.page_size
            take = min(len(data) - pos, page + self.page_size - at)
            self._page[at - page:at - page + take] = data[pos:pos + take]
            pos += take
        return 0.0

    def flush(self) -> None:
        if not self._page:
            return
        at, data = self._page_at, bytes(self._page)
        self._page.clear()
        self._send(at, data, BackendWriteFault)

    def _send(self, at: int, data: bytes, fault: type[BackendFault]) -> None:
        from .host import Avr109Error

        c = self._live()
        try:
            c.ack(c.set_address(at >> 1), f"set address 0x{at:X}")
            c.ack(b"B" + len(data).to_bytes(2, "big") + b"F" + data, f"write at 0x{at:X}", timeout=5.0)
        except (HostError, OSError) as exc:
            if isinstance(exc, Avr109Error) and "answered b'?'" in str(exc):
                raise fault(f"AVR109 target: write at 0x{at:X} refused ('?')", at) from None
            raise self._fail(exc, f"write at 0x{at:X}", fault) from None
        self._written.add(at)

    def manifest(self) -> float:
        """'L' and 'E': valid only once both are acknowledged."""
        self.flush()
        if self.is_blank():
            raise FirmwareFault("no application: the first word of flash is erased")
        c = self._live()
        try:
            c.leave()
        except (HostError, OSError) as exc:
            raise self._fail(exc, "leave (manifest)") from None
        self._left = True
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
            try:
                self.ser.close()
            except OSError:
                pass
