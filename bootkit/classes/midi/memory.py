"""A two-way MIDI SysEx bootloader as a memory back-end (issue 23): bootkit's SysEx client
behind the MemoryIO contract, registered as the ``usb.midi`` adapter of the
``bootkit.memories`` group (``--target usb:VID:PID`` / ``usbip://HOST:PORT``).

- ``layout``: IDENTIFY (flash start and size, the application's span: the rest of flash is the
  bootloader's, protected; the page size); the sectors are the chip's own when IDENTIFY names
  the chip given (its flash the same), else one sector per page.
- ``erase``: ERASE of the sector's span.
- ``program``: whole pages, WRITE each (one page held); a page written again in the same update
  is read with the rest of its sector, the sector erased and written again.
- ``read``: READ.
- ``manifest``: BOOT, valid only when the device ACKed it (a lost ACK is a BackendFault).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import usb.core

from ...memory.backends import BackendEraseFault, BackendFault, BackendWriteFault, UsbSelection
from ...memory.core import AddressFault, FirmwareFault, Layout, ProtectedFault, Region, Timing, WriteFault
from ..common import HostError

if TYPE_CHECKING:
    from ...memory.chips import Chip

REOPEN_WAIT = 5.0  # s the device gets to come back after its BOOT


def usb_memory(backend, sel: UsbSelection, chip: Chip | None = None) -> MidiMemory | None:
    """The ``usb.midi`` adapter: a MidiMemory for a USB-MIDI device with an IN endpoint (two-way)."""
    from .host import find_devices

    try:
        items = find_devices(backend, vid=sel.vid, pid=sel.pid, serial=sel.serial)
    except usb.core.USBError as exc:
        raise OSError(f"cannot list the devices: {exc}") from None
    if not [t for t in items if t.ep_in is not None]:
        return None
    return MidiMemory(backend, sel, chip)


class MidiMemory:
    """MemoryIO over a two-way SysEx MIDI bootloader reached through ``backend`` (pyusb)."""

    def __init__(self, backend, sel: UsbSelection, chip: Chip | None = None):
        self.backend = backend
        self.sel = sel
        self.timing = Timing()  # every request is ACKed when the device is done
        self.read_protected = False
        self.app_valid = False
        self._leaving = False
        self._c: Any = None
        self._c = self._open()
        info = self.info = self._info
        self.page_size = info.page_size
        flash = None
        if chip is not None and chip.name == info.chip:
            base = chip.layout().flash
            if (base.start, base.size) == (info.flash_start, info.flash_size):
                flash = Region("flash", base.start, base.sectors, write_size=info.page_size)
        if flash is None:
            flash = Region("flash", info.flash_start, ((info.flash_size // info.page_size, info.page_size),),
                           write_size=info.page_size)
        self.chip = chip
        self.layout = Layout((flash,), info.protected)
        self._written: set[int] = set()
        self._page = bytearray()
        self._page_at = -1

    def _open(self) -> Any:
        from .host import SysexClient, open_link

        try:
            link = open_link(self.backend, vid=self.sel.vid, pid=self.sel.pid, serial=self.sel.serial)
            client = SysexClient(link)
            self._info = client.identify()
        except (HostError, usb.core.USBError, OSError) as exc:
            raise BackendFault(f"MIDI target: {exc}") from None
        return client

    def _client(self) -> Any:
        if self._c is None:
            deadline = time.monotonic() + (REOPEN_WAIT if self._leaving else 0.0)
            while True:
                try:
                    self._c = self._open()
                    self._leaving = False
                    break
                except BackendFault:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        return self._c

    def _lost(self, exc: Exception, what: str, fault: type[BackendFault] = BackendFault) -> BackendFault:
        self._forget()
        self.app_valid = False
        return fault(f"MIDI target: {what}: {exc}")

    def _forget(self) -> None:
        c, self._c = self._c, None
        if c is not None:
            c.link.close()

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
        return self._read(address, length)

    def _read(self, address: int, length: int) -> bytes:
        c = self._client()
        out = bytearray()
        try:
            for at in range(address, address + length, self.page_size):
                out += c.read(at, min(self.page_size, address + length - at))
        except (HostError, usb.core.USBError) as exc:
            raise self._lost(exc, f"read at 0x{address:X}") from None
        return bytes(out)

    def is_blank(self) -> bool:
        if self.app_valid:
            return False
        start = self.layout.application_ranges()[0][0]
        return self.read(start, 2) == b"\xff\xff"

    def erase(self, address: int) -> float:
        region = self._region(address, 1)
        start, size = region.sector_at(address)
        if self.layout.is_protected(start, start + size):
            raise ProtectedFault(f"sector 0x{start:X} holds the bootloader", address)
        if self._page and start <= self._page_at < start + size:
            self._page.clear()
        self.app_valid = False
        self._erase(start, size, BackendEraseFault)
        return 0.0

    def _erase(self, start: int, size: int, fault: type[BackendFault]) -> None:
        c = self._client()
        try:
            c.erase(start, size, 2.0 + 2 * self.info.erase_us / 1e6)
        except (HostError, usb.core.USBError) as exc:
            raise self._lost(exc, f"erase at 0x{start:X}", fault) from None
        self._written.difference_update(range(start, start + size, self.page_size))

    def erase_all(self) -> float:
        self._page.clear()
        self.app_valid = False
        for lo, hi in self.layout.application_ranges():
            self._erase(lo, hi - lo, BackendEraseFault)  # one ERASE for the span's sectors
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
            page = at - (at - self.layout.flash.start) % self.page_size
            if self._page and page != self._page_at:
                self.flush()
            if not self._page:
                self._page_at = page
                self._page[:] = self._read(page, self.page_size) if page in self._written else \
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
        if at in self._written:
            # written already in this update: its sector is read, erased and written again
            start, size = self.layout.flash.sector_at(at)
            sector = bytearray(self._read(start, size))
            sector[at - start:at - start + len(data)] = data
            self._erase(start, size, BackendWriteFault)
            for p in range(start, start + size, self.page_size):
                chunk = bytes(sector[p - start:p - start + self.page_size])
                if chunk.count(0xFF) != len(chunk):
                    self._send(p, chunk)
            return
        self._send(at, data)

    def _send(self, at: int, data: bytes) -> None:
        c = self._client()
        try:
            c.write(at, data)
        except (HostError, usb.core.USBError) as exc:
            raise self._lost(exc, f"write at 0x{at:X}", BackendWriteFault) from None
        self._written.add(at)

    def manifest(self) -> float:
        """BOOT: valid only when the device ACKed it."""
        self.flush()
        if self.is_blank():
            raise FirmwareFault("no application: the first word of flash is erased")
        c = self._client()
        try:
            c.boot()  # a lost ACK (Gone) is no confirmation: a failure here, never a false success
        except (HostError, usb.core.USBError) as exc:
            raise self._lost(exc, "BOOT (manifest)") from None
        self._forget()
        self._leaving = True
        self._written.clear()
        self.app_valid = True
        return 0.0

    def persist(self) -> None:
        self.flush()

    def close(self) -> None:
        try:
            self.flush()
        except BackendFault:
            pass
        finally:
            self._forget()
