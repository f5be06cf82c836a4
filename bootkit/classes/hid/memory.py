"""A HID bootloader as a memory back-end (issue 23): bootkit's native raw-HID dialect and
xusb-boot behind the MemoryIO contract, registered as the ``usb.hid`` adapter of the
``bootkit.memories`` group (``--target usb:VID:PID`` / ``usbip://HOST:PORT``).

- ``layout``: native: GET_INFO (flash start and size, the application's span, the page
  size: the rest of flash is the bootloader's, protected); xusb: GET_BOOT_INFO (flash size,
  page size) and the chip its MCU string names (its boot section protected).
- ``erase``: the first erase of an update is ERASE (the whole application, both dialects);
  a page written since cannot be erased again (the dialects have no page erase): EraseFault.
- ``program``: whole pages, one WRITE each (one page held at most).
- ``read``: native: READ.  xusb has no read command: every read is a BackendFault saying so
  (a write-only back-end: a front cannot serve CURRENT.UF2 or read back through it).
- ``manifest``: RESET; native answers it (valid only when it said OK), xusb answers nothing:
  valid when the RESET report was taken (the device then resets).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import usb.core
import usb.util

from ...memory.backends import BackendEraseFault, BackendFault, BackendWriteFault, UsbSelection
from ...memory.core import AddressFault, EraseFault, FirmwareFault, Layout, ProtectedFault, Region, Timing, \
    WriteFault
from ..common import HostError

if TYPE_CHECKING:
    from ...memory.chips import Chip

REOPEN_WAIT = 5.0  # s the device gets to come back after its RESET


def usb_memory(backend, sel: UsbSelection, chip: Chip | None = None) -> HidMemory | None:
    """The ``usb.hid`` adapter: a HidMemory for a native or xusb device, None for anything else."""
    from .host import find_devices

    try:
        items = find_devices(backend, vid=sel.vid, pid=sel.pid, serial=sel.serial)
    except usb.core.USBError as exc:
        raise OSError(f"cannot list the devices: {exc}") from None
    items = [t for t in items if t.dialect in ("native", "xusb")]
    if not items:
        return None
    return HidMemory(backend, sel, items[0].dialect or "native", chip)


class HidMemory:
    """MemoryIO over a native or xusb HID bootloader reached through ``backend`` (pyusb)."""

    def __init__(self, backend, sel: UsbSelection, dialect: str, chip: Chip | None = None):
        self.backend = backend
        self.sel = sel
        self.dialect = dialect
        self._given = chip
        self.timing = Timing()  # every report is answered when the device is done
        self.read_protected = False
        self.app_valid = False
        self._leaving = False
        self._d: Any = None
        self._d = self._open()
        d = self._d
        if dialect == "native":
            info = d.info
            start, size, page = info.flash_start, info.flash_size, info.page_size
            protected = info.protected
            self.chip = d.target_chip()
        else:
            # GET_BOOT_INFO's flash size is the application section's; the boot section above it
            # (the chip its MCU string names) is the bootloader's
            start, size, page = 0, d.info.flash_size, d.info.page_size
            self.chip = d.target_chip()
            protected = ((size, self.chip.flash_size),) if self.chip and self.chip.flash_size > size else ()
            if protected:
                size = self.chip.flash_size
        self.page_size = page
        self.layout = Layout((Region("flash", start, ((size // page, page),), write_size=page),), tuple(protected))
        self._erased_once = False
        self._written: set[int] = set()
        self._page = bytearray()
        self._page_at = -1
        # the application's first page is held until the manifest (or a read of it): fronts write
        # its first word last (the power-safe order), and neither dialect can write a page twice
        self._first_at = self.layout.application_ranges()[0][0]
        self._first = bytearray()

    @property
    def name(self) -> str:
        return f"HID {self.dialect} target"

    def _open(self) -> Any:
        from .host import open_dialect

        try:
            return open_dialect(self.backend, vid=self.sel.vid, pid=self.sel.pid, serial=self.sel.serial,
                                dialect=self.dialect, chip=self._given, progress=False)
        except (HostError, usb.core.USBError, OSError) as exc:
            raise BackendFault(f"HID {self.dialect} target: {exc}") from None

    def _device(self) -> Any:
        if self._d is None:
            deadline = time.monotonic() + (REOPEN_WAIT if self._leaving else 0.0)
            while True:
                try:
                    self._d = self._open()
                    self._leaving = False
                    break
                except BackendFault:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        return self._d

    def _lost(self, exc: Exception, what: str, fault: type[BackendFault] = BackendFault) -> BackendFault:
        self._forget()
        self.app_valid = False
        return fault(f"{self.name}: {what}: {exc}")

    def _forget(self) -> None:
        d, self._d = self._d, None
        if d is not None:
            try:
                usb.util.dispose_resources(d.client.dev)
            except (usb.core.USBError, OSError, ValueError):
                pass

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
        if self.dialect == "xusb":
            raise BackendFault(f"{self.name}: xusb-boot has no read command (a write-only back-end): "
                               f"cannot read 0x{address:X}+{length}")
        self.flush()
        if address < self._first_at + self.page_size and address + length > self._first_at:
            self._flush_first()
        d = self._device()
        try:
            return d.read(address, length).tobytes(address, address + length)
        except (HostError, usb.core.USBError) as exc:
            raise self._lost(exc, f"read at 0x{address:X}") from None

    def is_blank(self) -> bool:
        if self.app_valid:
            return False
        start = self.layout.application_ranges()[0][0]
        if self.dialect == "xusb":  # no read: what this update wrote is all that is known
            return self._erased_once and not (start in self._written or self._first)
        return self.read(start, 2) == b"\xff\xff"

    def erase(self, address: int) -> float:
        self._region(address, 1)
        start = address - address % self.page_size
        if self.layout.is_protected(start, start + self.page_size):
            raise ProtectedFault(f"page 0x{start:X} holds the bootloader", address)
        if not self._erased_once:
            return self.erase_all()
        if start in self._written or (self._page and self._page_at == start) or (self._first and
                                                                                    start == self._first_at):
            raise EraseFault(f"{self.name} erases the whole application only: page 0x{start:X} was "
                             "written in this update", address)
        return 0.0

    def erase_all(self) -> float:
        self._page.clear()
        self._first.clear()
        self.app_valid = False
        d = self._device()
        try:
            d.erase()
        except (HostError, usb.core.USBError) as exc:
            raise self._lost(exc, "ERASE", BackendEraseFault) from None
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
            take = min(len(data) - pos, page + self.page_size - at)
            if page == self._first_at:
                if page in self._written:
                    raise WriteFault(f"{self.name}: page 0x{page:X} was written in this update already", at)
                if not self._first:
                    self._first[:] = b"\xff" * self.page_size
                self._first[at - page:at - page + take] = data[pos:pos + take]
                pos += take
                continue
            if self._page and page != self._page_at:
                self.flush()
            if not self._page:
                if page in self._written:
                    raise WriteFault(f"{self.name}: page 0x{page:X} was written in this update already", at)
                self._page_at = page
                self._page[:] = b"\xff" * self.page_size
            self._page[at - page:at - page + take] = data[pos:pos + take]
            pos += take
        return 0.0

    def flush(self) -> None:
        if not self._page:
            return
        at, data = self._page_at, bytes(self._page)
        self._page.clear()
        self._send(at, data)

    def _flush_first(self) -> None:
        if self._first:
            data = bytes(self._first)
            self._first.clear()
            self._send(self._first_at, data)

    def _send(self, at: int, data: bytes) -> None:
        from ...formats.image import Image

        d = self._device()
        try:
            d.write(Image([(at, data)]))
            d.steps.clear()
        except (HostError, usb.core.USBError) as exc:
            raise self._lost(exc, f"write at 0x{at:X}", BackendWriteFault) from None
        self._written.add(at)

    def manifest(self) -> float:
        """RESET: valid only when the device took it (native: answered OK)."""
        self.flush()
        self._flush_first()
        if self.is_blank():
            raise FirmwareFault("no application: the first word of flash is erased")
        d = self._device()
        try:
            d.leave()
        except (HostError, usb.core.USBError) as exc:
            raise self._lost(exc, "RESET (manifest)") from None
        self._forget()
        self._leaving = True
        self._erased_once = False
        self._written.clear()
        self.app_valid = True
        return 0.0

    def persist(self) -> None:
        self.flush()

    def close(self) -> None:
        try:
            self.flush()  # the first page stays unwritten without a manifest: the application stays invalid
        except BackendFault:
            pass
        finally:
            self._forget()
