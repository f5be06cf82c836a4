"""An AVR109 bootloader on a serial port as a memory back-end (issue 23): our own AVR109
host client behind the MemoryIO contract, registered as the ``serial.avr109`` adapter of
the ``bootkit.memories`` group (``--target serial:PORT,avr109``).  Optiboot and the wiring
bootloader (``serial.optiboot``, ``serial.wiring``) are :class:`UartMemory` at the end.

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


# ----------------------------------------------------------------------
# Optiboot (STK500 v1) and the wiring bootloader (STK500 v2) as memory back-ends
# (``--target serial:PORT,optiboot`` / ``serial:PORT,wiring``)

#: s without an exchange after which the bootloader may have started its application (both
#: watchdogs default to 1 s): the next operation opens the port again first (the open is the
#: reset, as avrdude's DTR pulse), so an idle front never talks to a sketch
UART_REST = 0.5


class _PointerLost(Exception):
    """wiring: the port was opened again mid-sequence (the erase pointer went back to the start)."""


def uart_serial_memory(port: str, dialect: str, chip: Chip | None = None) -> UartMemory:
    """The ``serial.optiboot`` and ``serial.wiring`` adapters: the bootloader on ``port``."""
    memory = UartMemory(port, dialect, chip)
    try:
        memory.connect()
    except BackendFault as exc:
        raise OSError(str(exc)) from None
    return memory


class UartMemory:
    """MemoryIO over an Optiboot or wiring bootloader (cdc host's OptibootClient / WiringClient).

    - ``layout``: the chip its signature names (Optiboot: its 512 B / 1 KiB at the top protected).
    - ``erase``: neither bootloader has an erase of its own (Optiboot ignores the STK500 chip erase,
      wiring's answers FAILED): an erased page is remembered and written as 0xFF when it is not
      written with data before the next read-back point (a page write erases its page first), so
      an update costs one write per page.
    - ``program``: whole pages, one page held at most.  Optiboot: STK_LOAD_ADDRESS + STK_PROG_PAGE
      (any order).  wiring: the bootloader erases the page at its own pointer, which starts at
      the flash's start and moves one page per write (CMD_CHIP_ERASE_ISP sets it back): pages
      are written in order from the pointer; a page below it sets the pointer back and the pages
      before it are read and written again as they are; pages skipped are written as they are.
    - ``read``: STK_READ_PAGE / CMD_READ_FLASH_ISP (pages erased but not yet written read 0xFF).
    - ``manifest``: STK_LEAVE_PROGMODE / CMD_LEAVE_PROGMODE_ISP, valid only when acknowledged and
      the bootloader no longer answers afterwards (its application started).
    - every failure of the port or the exchange is a BackendFault (the application not valid).
    """

    def __init__(self, port: str, dialect: str, chip: Chip | None = None):
        if dialect not in ("optiboot", "wiring"):
            raise ValueError(f"no UART memory for dialect {dialect!r}")
        self.port = port
        self.dialect = dialect
        self._chip_arg = chip
        self.client: Any = None
        self.ser: Any = None
        self.timing = Timing()  # every command is answered when the bootloader is done
        self.read_protected = False
        self.app_valid = False
        self._left = False
        self._pending: set[int] = set()  # pages erased, not written yet
        self._page = bytearray()
        self._page_at = -1
        self._pointer: int | None = None  # wiring: the page the bootloader erases next (None: unknown)
        self._last = 0.0
        self.reconnects = 0

    def connect(self) -> None:
        import time

        from .host import UART_BAUD, _uart_session

        self._close_port()
        try:
            self.client, _ = _uart_session(None, self.port, self.dialect, self._chip_arg, False, UART_BAUD)
        except (HostError, OSError) as exc:
            raise BackendFault(f"{self.dialect} target on {self.port}: {exc}") from None
        self.ser = self.client.port
        self._left = False
        self._pointer = None
        self._last = time.monotonic()
        if not hasattr(self, "chip"):
            self.chip = self.client.target
            base = self.chip.layout()
            self.layout = Layout((base.flash,), base.protected)
            self.page_size = self.chip.page_size
            self.flash_start = base.flash.start

    def _close_port(self) -> None:
        if self.ser is not None:
            try:
                self.ser.close()
            except OSError:
                pass
            self.ser = None

    def _live(self) -> Any:
        import time

        if self._left or self.ser is None or time.monotonic() - self._last > UART_REST:
            # after the leave too: opening the port resets the board into its bootloader (avrdude's
            # DTR pulse), which reads and writes again; the application stays valid until changed
            self.reconnects += 1
            try:
                self.connect()
            except BackendFault:
                self.app_valid = False
                raise
        return self.client

    def _done(self) -> None:
        import time

        self._last = time.monotonic()

    def _fail(self, exc: Exception, what: str, fault: type[BackendFault] = BackendFault) -> BackendFault:
        self.app_valid = False
        self._close_port()  # the next operation opens the port again (a reset) or fails there
        return fault(f"{self.dialect} target: {what}: {exc}")

    def _region(self, address: int, length: int) -> Region:
        region = self.layout.find(address)
        if address + length > region.end:
            raise AddressFault(f"0x{address:X}+{length} runs past the end of {region.name} (0x{region.end:X})",
                               address)
        return region

    def _page_of(self, address: int) -> int:
        return address - (address - self.flash_start) % self.page_size

    # ------------------------------------------------------------------
    def _read_raw(self, address: int, length: int) -> bytes:
        c = self._live()
        lo, hi = address & ~1, (address + length + 1) & ~1  # words
        try:
            data = c.read_range(lo, hi - lo, "flash")
        except (HostError, OSError) as exc:
            raise self._fail(exc, f"read at 0x{address:X}") from None
        self._done()
        return data[address - lo:address - lo + length]

    def read(self, address: int, length: int) -> bytes:
        if length == 0:
            return b""
        self._region(address, length)
        self.flush()
        data = bytearray(self._read_raw(address, length))
        for page in self._pending:  # erased here, not written on the target yet
            lo, hi = max(page, address), min(page + self.page_size, address + length)
            if lo < hi:
                data[lo - address:hi - address] = b"\xff" * (hi - lo)
        return bytes(data)

    def is_blank(self) -> bool:
        if self.app_valid:
            return False  # checked before the confirmed leave; the bootloader has gone since
        start = self.layout.application_ranges()[0][0]
        return self.read(start, 2) == b"\xff\xff"

    def erase(self, address: int) -> float:
        self._region(address, 1)
        start = self._page_of(address)
        if self.layout.is_protected(start, start + self.page_size):
            raise ProtectedFault(f"page 0x{start:X} holds the bootloader", address)
        self.app_valid = False
        if self._page and self._page_at == start:
            self._page.clear()
        self._pending.add(start)
        return 0.0

    def erase_all(self) -> float:
        self._page.clear()
        self.app_valid = False
        for lo, hi in self.layout.application_ranges():
            self._pending.update(range(self._page_of(lo), hi, self.page_size))
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
            page = self._page_of(at)
            if self._page and page != self._page_at:
                self.flush()
            if not self._page:
                base = b"\xff" * self.page_size if page in self._pending else self._read_raw(page, self.page_size)
                self._page_at = page
                self._page[:] = base
            take = min(len(data) - pos, page + self.page_size - at)
            self._page[at - page:at - page + take] = data[pos:pos + take]
            pos += take
        return 0.0

    def flush(self) -> None:
        if not self._page:
            return
        at, data = self._page_at, bytes(self._page)
        self._page.clear()
        self._write_page(at, data)

    def _write_page(self, at: int, data: bytes) -> None:
        if self.dialect == "wiring":
            self._wiring_write(at, data)
        else:
            self._send(at, data)
        self._pending.discard(at)

    def _send(self, at: int, data: bytes) -> None:
        """One page to the bootloader: Optiboot's STK_PROG_PAGE, wiring's CMD_PROGRAM_FLASH_ISP."""
        from .host import UART_ANSWER

        c = self._live()
        if self.dialect == "wiring" and self._pointer is None:
            raise _PointerLost  # the port was opened again: the bootloader's erase pointer is back at the start
        try:
            c._load(at, "flash")
            if self.dialect == "wiring":
                from ...isp.stk500v2 import CMD_PROGRAM_FLASH_ISP

                c.command(bytes((CMD_PROGRAM_FLASH_ISP,)) + len(data).to_bytes(2, "big")
                          + bytes((0xC1, 10, 0x40, 0x4C, 0x20, 0, 0)) + data, f"write at 0x{at:X}")
            else:
                c.command(b"\x64" + len(data).to_bytes(2, "big") + b"F" + data, 0, f"write at 0x{at:X}",
                          timeout=UART_ANSWER + 0.01 * len(data))
        except (HostError, OSError) as exc:
            raise self._fail(exc, f"write at 0x{at:X}", BackendWriteFault) from None
        self._done()

    def _wiring_write(self, at: int, data: bytes) -> None:
        for _ in range(3):
            try:
                self._wiring_sequence(at, data)
                return
            except _PointerLost:
                continue
        raise self._fail(HostError("the port kept resetting"), f"write at 0x{at:X}", BackendWriteFault)

    def _wiring_sequence(self, at: int, data: bytes) -> None:
        c = self._live()  # may open the port again: that sets the pointer back (None: unknown)
        if self._pointer is None or at < self._pointer:
            from ...isp.stk500v2 import CMD_CHIP_ERASE_ISP

            try:
                c.command(bytes((CMD_CHIP_ERASE_ISP, 10, 0, 0xAC, 0x80, 0, 0)), "reset the erase pointer",
                          check=False)
            except (HostError, OSError) as exc:
                raise self._fail(exc, "reset the erase pointer", BackendWriteFault) from None
            self._done()
            self._pointer = self.flash_start
        while self._pointer < at:  # the bootloader erases in order: the pages between go again as they are
            p = self._pointer
            self._send(p, b"\xff" * self.page_size if p in self._pending else self._read_raw(p, self.page_size))
            self._pending.discard(p)
            self._pointer = p + self.page_size
        self._send(at, data)
        self._pointer = at + self.page_size

    def _materialise(self) -> None:
        """Pages erased and not written since: written as 0xFF now."""
        self.flush()
        for page in sorted(self._pending):
            self._write_page(page, b"\xff" * self.page_size)

    def manifest(self) -> float:
        """Leave: valid only when acknowledged and the bootloader answers no more."""
        from ..usbhost import STAYED

        self._materialise()
        if self.is_blank():
            raise FirmwareFault("no application: the first word of flash is erased")
        c = self._live()
        try:
            step = c.leave()
        except (HostError, OSError) as exc:
            raise self._fail(exc, "leave (manifest)") from None
        if step.startswith(STAYED):
            raise self._fail(HostError(step), "leave (manifest)")
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
            self._close_port()
