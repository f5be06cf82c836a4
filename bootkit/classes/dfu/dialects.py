"""The three DFU dialects' clients: plain DFU 1.1 (dfu-util), ST's DfuSe (dfu-util -s)
and Atmel FLIP (dfu-programmer), each over one :class:`~bootkit.classes.dfu.client.DfuClient`."""

from __future__ import annotations

import struct
import time

import usb.core

from ...formats.image import Image
from ...memory import Chip, parse_dfuse_layout
from ...memory.chips import get_chip
from ...progress import phase, progress_bar
from ..common import ImageRejected, check_ranges
from ..usbhost import STAYED, gone, stalled
from .client import DfuClient, DfuError
from .protocol import (
    DFUSE_ERASE,
    DFUSE_SET_ADDRESS_POINTER,
    DNLOAD,
    FLIP_CONTROL_SIZE,
    FLIP_DISPLAY_DATA,
    FLIP_HEADER_SIZE,
    FLIP_PIDS,
    FLIP_PROG_START,
    FLIP_READ_COMMAND,
    FLIP_SUFFIX_SIZE,
    FLIP_WRITE_COMMAND,
    FLIP_CHANGE_BASE_ADDR,
    State,
    Status,
)


class Dialect:
    """What the three dialects share: a DFU client, the chip (when known), the steps seen."""

    name = "dfu"

    def __init__(self, client: DfuClient, chip: Chip | None, progress: bool | None = None):
        self.client = client
        self.chip = chip
        self.progress = progress
        self.steps: list[str] = []
        self.backend = None
        self.runtime_ids: tuple[int, int] | None = None

    def validate(self, image: Image, memory: str = "flash") -> None:
        raise NotImplementedError


class Dfu11(Dialect):
    """Plain DFU 1.1: the image goes, in order, from the first application address."""

    name = "dfu"
    origin = 0

    def app_range(self, image: Image) -> tuple[int, int]:
        if self.chip is not None:
            return self.chip.layout().application_ranges("flash")[0]
        # no chip given: the image says where the application starts
        return image.start, image.start + (1 << 32)

    def validate(self, image: Image, memory: str = "flash") -> None:
        if memory != "flash":
            raise ImageRejected("plain DFU carries flash only")
        start, end = self.app_range(image)
        protected = self.chip.layout().protected if self.chip else ()
        check_ranges(image, [(start, end)], protected, self.chip.name if self.chip else "the device")

    def write(self, image: Image, memory: str = "flash") -> int:
        start, _ = self.app_range(image)
        self.origin = start  # where an UPLOAD of this device starts (plain DFU has no addresses)
        data = image.tobytes(start, image.end)
        c = self.client
        c.make_idle()
        size = c.transfer_size
        blocks = [(block, data[off:off + size], f"block {block} at 0x{start + off:X}")
                  for block, off in enumerate(range(0, len(data), size))]
        with progress_bar("download", len(data), self.progress) as bar:
            c.download_session(blocks, bar)
        self.steps.append(f"downloaded {len(data)} bytes from 0x{start:X}")
        return len(data)

    def read(self, start: int | None = None, length: int | None = None, memory: str = "flash") -> Image:
        c = self.client
        c.make_idle()
        app_start = self.app_range(Image())[0] if self.chip else self.origin
        limit = length if length is not None else 1 << 32
        out = c.upload_all(0, limit, self.progress, length)
        if len(out) >= limit and len(out) % c.transfer_size == 0:
            try:
                c.abort()
            except usb.core.USBError:
                pass
        return Image([(app_start, bytes(out))])

    def manifest(self) -> None:
        """Zero-length DNLOAD, then GETSTATUS through manifestation (DFU 1.1 section 7)."""
        c = self.client
        try:
            st = c.dnload_status(0, b"")
            while st.bState == State.dfuMANIFEST and c.functional.manifestation_tolerant:
                time.sleep(st.bwPollTimeout / 1000.0)
                st = c.get_status()
        except usb.core.USBError as exc:
            if gone(exc) or stalled(exc):
                self.steps.append("manifested (device reset)")
                self.gone = True
                return
            raise DfuError(f"manifestation: {exc}") from None
        if st.bStatus != Status.OK or st.bState == State.dfuERROR:
            raise DfuError(f"{STAYED}: manifestation failed, device reports {st.describe()}")
        self.steps.append("manifested")

    def leave(self) -> None:
        # Tolerant devices wait in dfuIDLE for the reset that starts the
        # application (dfu-util -R); others in dfuMANIFEST-WAIT-RESET.
        if getattr(self, "gone", False):
            return
        try:
            self.client.dev.reset()
        except usb.core.USBError as exc:
            if not (gone(exc) or stalled(exc)):
                raise DfuError(f"leaving DFU mode: {exc}") from None


class DfuSe(Dialect):
    """ST DfuSe: erase the sectors the image touches, download at addresses, leave."""

    name = "dfuse"

    def __init__(self, client, chip, progress=None):
        super().__init__(client, chip, progress)
        name = client.target.alts[client.alt][1] if client.target.alts else ""
        try:
            self.mem_name, self.regions = parse_dfuse_layout(name)
        except ValueError:
            raise DfuError(f"alt {client.alt} has no DfuSe layout string (interface name {name!r})") from None

    def validate(self, image: Image, memory: str = "flash") -> None:
        writable = [(r.start, r.end) for r in self.regions if r.writable]
        protected = self.chip.layout().protected if self.chip else ()
        check_ranges(image, writable, protected, f"\"{self.mem_name}\"")

    def _command(self, payload: bytes, what: str) -> None:
        self.client.dnload_and_wait(0, payload, what)

    def set_address(self, address: int) -> None:
        self._command(struct.pack("<BI", DFUSE_SET_ADDRESS_POINTER, address), f"set address 0x{address:X}")

    def sectors_for(self, image: Image) -> list[int]:
        sectors = []
        for region in self.regions:
            for start, size in region.sector_bounds():
                if any(s < start + size and start < s + len(d) for s, d in image.segments):
                    sectors.append(start)
        return sectors

    def erase(self, image: Image) -> None:
        c = self.client
        c.make_idle()
        sectors = self.sectors_for(image)
        with progress_bar("erase", len(sectors), self.progress, unit="sectors") as bar:
            for start in sectors:
                self._command(struct.pack("<BI", DFUSE_ERASE, start), f"erase sector 0x{start:X}")
                bar(1)
        self.steps.append(f"erased {len(sectors)} sectors")

    def write(self, image: Image, memory: str = "flash") -> int:
        c = self.client
        size = c.transfer_size
        total = 0
        with progress_bar("download", image.size, self.progress) as bar:
            for seg_start, data in image.segments:
                off = 0
                block = None
                while off < len(data):
                    # AN3156: data lands at (wBlockNum - 2) x wTransferSize + pointer,
                    # so one pointer serves a run of sequential blocks (dfu-util
                    # resets the pointer for every chunk: twice the transfers).
                    address = seg_start + off
                    if block is None or block > 0xFFFF or not c.sequential_blocks:
                        # wTransferSize unknown or not ours (DfuClient.sequential_blocks):
                        # block 2 from a fresh pointer is right whatever the device uses
                        self.set_address(address)
                        block = 2
                    chunk = data[off:off + size]
                    c.dnload_and_wait(block, chunk, f"write at 0x{address:X}")
                    block += 1
                    off += len(chunk)
                    total += len(chunk)
                    bar(len(chunk))
        self.steps.append(f"downloaded {total} bytes")
        return total

    def read(self, start: int | None = None, length: int | None = None, memory: str = "flash") -> Image:
        c = self.client
        c.make_idle()
        region = self.regions[0]
        start = region.start if start is None else start
        length = (region.end - start) if length is None else length
        out: bytes | bytearray
        if c.sequential_blocks:
            self.set_address(start)
            c.abort()  # dfu-util: ABORT to dfuIDLE, then UPLOAD from block 2
            out = c.upload_all(2, length, self.progress)
        else:
            # wTransferSize unknown or not ours: block 2 from a fresh pointer for every chunk
            out = bytearray()
            with progress_bar("upload", length, self.progress) as bar:
                while len(out) < length:
                    c.abort()  # dfuUPLOAD-IDLE takes no DNLOAD: back to dfuIDLE first
                    self.set_address(start + len(out))
                    c.abort()
                    chunk = c.upload(2, min(c.transfer_size, length - len(out)))
                    if not chunk:
                        break
                    out += chunk
                    bar(len(chunk))
            out = bytes(out)
        try:
            c.abort()
        except usb.core.USBError:
            pass
        return Image([(start, bytes(out))])

    def leave(self, address: int | None = None) -> None:
        """Set the jump address, then a zero-length DNLOAD and the GETSTATUS that runs it
        (AN3156 6.3.3; dfu-util dfuse_dnload_done).  The device answers that GETSTATUS
        with dfuMANIFEST and resets, or with its error: the latter is the flash's failure
        (e.g. errFIRMWARE: no application to start) and is reported as such."""
        c = self.client
        c.make_idle()
        self.set_address(address if address is not None else self.regions[0].start)
        try:
            c._out(DNLOAD, 2)  # dfu-util: zero-length DNLOAD with wBlockNum 2
            st = c.get_status()  # dfuMANIFEST: the device leaves now
        except usb.core.USBError as exc:
            if gone(exc):
                return  # it reset under the request: what came back is observed next
            raise c.refused("leaving DFU mode", exc) from None
        if st.bStatus != Status.OK or st.bState == State.dfuERROR:
            raise DfuError(f"{STAYED}: device reports {st.describe()}")


class Flip(Dialect):
    """Atmel FLIP (dfu-programmer's protocol against LUFA's DFU bootloader)."""

    name = "flip"
    BLOCK = 1024  # dfu-programmer's ATMEL_MAX_TRANSFER_SIZE

    chip: Chip  # FLIP needs the chip: given, or known by its product id

    def __init__(self, client, chip, progress=None):
        if chip is None:
            names = [n for n, p in FLIP_PIDS.items() if p == client.target.pid]
            for n in names:
                try:
                    chip = get_chip(n)
                    break
                except KeyError:
                    continue
        if chip is None:
            raise DfuError(f"unknown FLIP product id 0x{client.target.pid:04X}: give the chip with --chip")
        super().__init__(client, chip, progress)

    def _cmd(self, payload: bytes, what: str) -> None:
        st = self.client.dnload_status(0, payload)
        if st.bStatus != Status.OK:
            raise DfuError(f"{what}: device reports {st.describe()}")

    def validate(self, image: Image, memory: str = "flash") -> None:
        layout = self.chip.layout()
        if memory == "eeprom":
            check_ranges(image, [(0, self.chip.eeprom_size)], (), f"{self.chip.name} EEPROM")
        else:
            check_ranges(image, layout.application_ranges("flash"), layout.protected, self.chip.name)

    def signature(self) -> bytes:
        out = []
        for index in (0x31, 0x60, 0x61):
            self._cmd(bytes((FLIP_READ_COMMAND, 0x01, index)), "read signature")
            out.append(self.client.upload(0, 1)[0])
        return bytes(out)

    def erase(self, image: Image | None = None) -> None:
        self.client.make_idle()
        self._cmd(bytes((FLIP_WRITE_COMMAND, 0x00, 0xFF)), "chip erase")
        self.steps.append("chip erased")

    def _select_page(self, page: int) -> None:
        self._cmd(bytes((FLIP_CHANGE_BASE_ADDR, 0x03, 0x00, page)), f"select 64 KiB page {page}")

    def _blocks(self, image: Image, memory: str = "flash"):
        """The (address, data) program blocks: at most BLOCK bytes, none across a 64 KiB page.

        Flash goes in whole flash pages, as dfu-programmer sends it from 0.7.0 on: LUFA's
        bootloader erases the page a block starts in and each further page it reaches
        (BootloaderDFU.c ProcessMemProgCommand / BootloaderAPI_ErasePage) and writes words,
        so a block that started mid-page would wipe what an earlier block put in that page,
        and an odd address or length would shift or drop a byte.  Gaps inside a page go
        as 0xFF: the chip was erased first, and 0xFF programs nothing.  EEPROM is written
        byte by byte (eeprom_update_byte) and goes as it is.
        """
        segments = image.segments
        if memory == "flash":
            page = max(self.chip.layout().flash.write_size, 2)
            runs: list[list[int]] = []
            for s, d in image.segments:
                lo, hi = s - s % page, -(-(s + len(d)) // page) * page
                if runs and lo <= runs[-1][1]:
                    runs[-1][1] = max(runs[-1][1], hi)
                else:
                    runs.append([lo, hi])
            segments = [(lo, image.tobytes(lo, hi)) for lo, hi in runs]
        for seg_start, data in segments:
            off = 0
            while off < len(data):
                address = seg_start + off
                room = min(self.BLOCK, 0x10000 - (address & 0xFFFF), len(data) - off)
                yield address, data[off:off + room]
                off += room

    def write(self, image: Image, memory: str = "flash") -> int:
        mem = 0x00 if memory == "flash" else 0x01
        page = None
        total = 0
        with progress_bar("download", image.size, self.progress) as bar:
            for address, chunk in self._blocks(image, memory):
                if mem == 0 and address >> 16 != page:
                    page = address >> 16
                    self._select_page(page)
                start = address & 0xFFFF
                end = start + len(chunk) - 1
                header = bytes((FLIP_PROG_START, mem, start >> 8, start & 0xFF, end >> 8, end & 0xFF))
                payload = (header + bytes(FLIP_HEADER_SIZE - len(header)) + bytes(start % FLIP_CONTROL_SIZE)
                           + chunk + bytes(FLIP_SUFFIX_SIZE))
                self._cmd(payload, f"program 0x{address:X}")
                done = image.crop(address, address + len(chunk)).size  # the image's bytes, not the 0xFF filling
                total += done
                bar(done)
        self.steps.append(f"programmed {total} bytes of {memory}")
        return total

    def read_range(self, address: int, length: int, memory: str = "flash") -> bytes:
        c = self.client
        out = bytearray()
        page = None
        code = 0x00 if memory == "flash" else 0x02
        while len(out) < length:
            a = address + len(out)
            if code == 0 and a >> 16 != page:
                page = a >> 16
                self._select_page(page)
            n = min(self.BLOCK, length - len(out), 0x10000 - (a & 0xFFFF))
            s, e = a & 0xFFFF, (a & 0xFFFF) + n - 1
            self._cmd(bytes((FLIP_DISPLAY_DATA, code, s >> 8, s & 0xFF, e >> 8, e & 0xFF)), f"read 0x{a:X}")
            chunk = c.upload(0, n)
            if not chunk:
                raise DfuError(f"read 0x{a:X}: the device returned no data")
            out += chunk
        return bytes(out)

    def read(self, start: int | None = None, length: int | None = None, memory: str = "flash") -> Image:
        self.client.make_idle()
        if memory == "eeprom":
            start, length = start or 0, length or self.chip.eeprom_size
        else:
            app = self.chip.layout().application_ranges("flash")[0]
            start = app[0] if start is None else start
            length = (app[1] - start) if length is None else length
        with progress_bar("upload", length, self.progress) as bar:
            data = self.read_range(start, length, memory)
            bar(len(data))
        return Image([(start, data)])

    def verify(self, image: Image, memory: str = "flash") -> None:
        phase("verify")
        with progress_bar("verify", image.size, self.progress) as bar:
            for seg_start, data in image.segments:
                back = self.read_range(seg_start, len(data), memory)
                if back != data:
                    bad = next(i for i in range(len(data)) if back[i] != data[i])
                    raise DfuError(f"verify failed at 0x{seg_start + bad:X}: wrote 0x{data[bad]:02X}, "
                                   f"read 0x{back[bad]:02X}")
                bar(len(data))

    def leave(self) -> None:
        """dfu-programmer's launch: 04 03 00 (start via watchdog), its status, then the
        zero-length DNLOAD on which LUFA leaves (BootloaderDFU.c: WaitForExit).  LUFA starts
        nothing when the first word of flash is erased: the device comes back as itself,
        which :func:`observe_leave` sees."""
        c = self.client
        c.make_idle()
        try:
            c._out(DNLOAD, 0, bytes((FLIP_WRITE_COMMAND, 0x03, 0x00)))
            st = c.get_status()
        except usb.core.USBError as exc:
            if gone(exc):
                return
            raise c.refused("starting the application", exc) from None
        if st.bStatus != Status.OK or st.bState == State.dfuERROR:
            raise DfuError(f"{STAYED}: device reports {st.describe()}")
        try:
            c._out(DNLOAD, 0)
        except usb.core.USBError as exc:
            if not (gone(exc) or stalled(exc)):
                raise c.failure("starting the application", exc) from None


DIALECT_CLASSES = {"dfu": Dfu11, "dfuse": DfuSe, "flip": Flip}
