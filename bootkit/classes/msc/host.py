"""Mass-storage host side: drop a firmware file on a UF2 drive, read CURRENT.UF2 back.

Two paths:

- a mounted drive (``drive=`` its mount point): what a user does with a
  file manager, done carefully: read INFO_UF2.TXT, convert the image to
  UF2 with the board's family (or to the BIN/HEX the drive takes), write
  it, flush it to the device (``os.fsync``; ``F_FULLFSYNC`` on macOS,
  whose fsync stops at the drive cache), then wait for the drive to go;
- a device on a pyusb backend (the emulator, or a raw device with no
  kernel driver bound): the FAT file system is written with pyfatfs on a
  block device made of SCSI READ(10)/WRITE(10) over the Bulk-Only
  Transport, with the bulk endpoints found from the descriptors.

pyfatfs's PyFatFS opens its volume by file name only, but its PyFat core
takes any seekable binary stream (``PyFat.set_fp``); :class:`BlockFile`
is that stream, a write-back sector cache over SCSI commands, and
:class:`ScsiFatFS` is PyFatFS with the stream handed in.
"""

from __future__ import annotations

import datetime
import errno
import io
import os
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import usb.core
import usb.util

from ...formats import write_hex
from ...formats.image import FormatError, Image
from ...formats.uf2 import UF2_BLOCK_SIZE, UF2Block, is_uf2_block, write_uf2
from ...memory import Chip
from ...progress import progress_bar
from ..common import FlashResult, HostError, ImageRejected, check_ranges
from ..usbhost import endpoint_pair, matching_devices, take_interfaces
from .protocol import (
    BLOCK_SIZE,
    BULK_ONLY_RESET,
    CBW,
    CBW_FLAG_IN,
    CSW,
    CSW_FAILED,
    CSW_GOOD,
    CSW_LENGTH,
    GET_MAX_LUN,
    MSC_CLASS,
    MSC_PROTOCOL_BOT,
    MSC_SUBCLASS_SCSI,
    NOT_READY,
    UNIT_ATTENTION,
    BotError,
    cdb_inquiry,
    cdb_read10,
    cdb_read_capacity10,
    cdb_request_sense,
    cdb_synchronize_cache10,
    cdb_test_unit_ready,
    cdb_write10,
    decode_sense,
)

GONE_ERRNOS = {errno.ENODEV, errno.EIO, errno.ENOENT, errno.EPROTO}
FILE_NAMES = {"uf2": "FIRMWARE.UF2", "bin": "FIRMWARE.BIN", "hex": "FIRMWARE.HEX"}
MAX_SECTORS = 128  # per READ(10)/WRITE(10): 64 KiB (Linux usb-storage uses up to 240)


class MscError(HostError):
    """The drive or the exchange failed."""


class CheckCondition(MscError):
    """A SCSI command ended in CHECK CONDITION; ``sense`` is (key, ASC, ASCQ)."""

    def __init__(self, what: str, sense: tuple[int, int, int]):
        super().__init__(f"{what}: CHECK CONDITION, sense key 0x{sense[0]:X} ASC 0x{sense[1]:02X} "
                         f"ASCQ 0x{sense[2]:02X}")
        self.sense = sense


def _gone(exc: Exception) -> bool:
    return isinstance(exc, usb.core.USBError) and getattr(exc, "errno", None) in GONE_ERRNOS


def _stalled(exc: Exception) -> bool:
    return isinstance(exc, usb.core.USBError) and getattr(exc, "errno", None) == errno.EPIPE


# --------------------------------------------------------------------------
# finding the drive


@dataclass
class MscTarget:
    device: object  # usb.core.Device
    interface: int
    ep_in: int  # bEndpointAddress, from the descriptors
    ep_out: int

    def describe(self) -> str:
        d = self.device
        return (f"[{d.idVendor:04x}:{d.idProduct:04x}] msc intf={self.interface} "
                f"in=0x{self.ep_in:02x} out=0x{self.ep_out:02x}")


def find_devices(backend=None, *, vid=None, pid=None, serial=None) -> list[MscTarget]:
    """Mass-storage (SCSI, Bulk-Only) interfaces on the bus, endpoints read from the descriptors."""
    found = []
    for dev, cfg in matching_devices(backend, vid=vid, pid=pid, serial=serial):
        for intf in cfg:
            if (intf.bInterfaceClass, intf.bInterfaceSubClass, intf.bInterfaceProtocol) != (
                    MSC_CLASS, MSC_SUBCLASS_SCSI, MSC_PROTOCOL_BOT) or intf.bAlternateSetting:
                continue
            ep_in, ep_out = endpoint_pair(intf, usb.util.ENDPOINT_TYPE_BULK)
            if ep_in is None or ep_out is None:
                continue
            found.append(MscTarget(dev, intf.bInterfaceNumber, ep_in, ep_out))
            break
    return found


# --------------------------------------------------------------------------
# Bulk-Only Transport and SCSI


class BotClient:
    """CBW, data, CSW over the bulk endpoints (BOT 1.0 section 5 and 6)."""

    def __init__(self, target: MscTarget, *, timeout: int = 5000):
        self.target = target
        self.dev = target.device
        self.timeout = timeout
        self.tag = 0
        take_interfaces(self.dev, target.interface)  # usb-storage holds a real drive
        try:
            # Get Max LUN (BOT 3.2); a device with one LUN may STALL it
            self.max_lun = bytes(self.dev.ctrl_transfer(0xA1, GET_MAX_LUN, 0, target.interface, 1, timeout))[0]
        except (usb.core.USBError, IndexError):
            self.max_lun = 0

    def reset_recovery(self) -> None:
        """BOT 5.3.4: Bulk-Only Mass Storage Reset, then CLEAR_FEATURE(HALT) on both bulk endpoints."""
        self.dev.ctrl_transfer(0x21, BULK_ONLY_RESET, 0, self.target.interface, None, self.timeout)
        self.dev.clear_halt(self.target.ep_in)
        self.dev.clear_halt(self.target.ep_out)

    def transport(self, cb: bytes, *, data_out: bytes | None = None, in_length: int = 0,
                  lun: int = 0) -> tuple[int, bytes, int]:
        """One command: (bCSWStatus, data-in, dCSWDataResidue).  A STALL in the data phase is cleared."""
        self.tag = (self.tag + 1) & 0xFFFFFFFF
        length = len(data_out) if data_out is not None else in_length
        cbw = CBW(self.tag, length, CBW_FLAG_IN if in_length else 0, lun, cb)
        t = self.target
        self.dev.write(t.ep_out, cbw.pack(), self.timeout)
        data = b""
        try:
            if data_out:
                self.dev.write(t.ep_out, data_out, self.timeout)
            elif in_length:
                data = bytes(self.dev.read(t.ep_in, in_length, self.timeout))
        except usb.core.USBError as exc:
            if not _stalled(exc):
                raise
            # BOT 6.7.2/6.7.3: the device ended the data phase with a STALL
            self.dev.clear_halt(t.ep_out if data_out else t.ep_in)
        csw = self._read_csw()
        if csw.tag != self.tag:
            self.reset_recovery()
            raise MscError(f"CSW tag 0x{csw.tag:08X} does not match CBW tag 0x{self.tag:08X}")
        if csw.status > CSW_FAILED:
            self.reset_recovery()  # phase error: BOT 5.3.3.1
            raise MscError(f"phase error on SCSI opcode 0x{cb[0]:02X}")
        return csw.status, data, csw.residue

    def _read_csw(self) -> CSW:
        for attempt in range(2):
            try:
                raw = bytes(self.dev.read(self.target.ep_in, CSW_LENGTH, self.timeout))
                break
            except usb.core.USBError as exc:
                if not _stalled(exc) or attempt:
                    raise
                self.dev.clear_halt(self.target.ep_in)  # BOT 5.3.3: clear, then read the CSW again
        try:
            return CSW.unpack(raw)
        except BotError as exc:
            self.reset_recovery()
            raise MscError(f"invalid CSW: {exc}") from None


class ScsiDisk:
    """The SCSI block commands a FAT volume needs, over a :class:`BotClient`."""

    def __init__(self, client: BotClient):
        self.client = client
        self.inquiry = self.command(cdb_inquiry(36), in_length=36, what="INQUIRY")
        for _ in range(5):  # a UNIT ATTENTION or NOT READY right after enumeration is normal
            try:
                self.command(cdb_test_unit_ready(), what="TEST UNIT READY")
                break
            except CheckCondition as exc:
                if exc.sense[0] not in (UNIT_ATTENTION, NOT_READY):
                    raise
                time.sleep(0.05)
        last, size = struct.unpack(">II", self.command(cdb_read_capacity10(), in_length=8,
                                                       what="READ CAPACITY(10)"))
        if size != BLOCK_SIZE:
            raise MscError(f"block size {size}, only {BLOCK_SIZE} is supported")
        self.blocks = last + 1

    def command(self, cb: bytes, *, data_out: bytes | None = None, in_length: int = 0, what: str = "") -> bytes:
        status, data, _residue = self.client.transport(cb, data_out=data_out, in_length=in_length)
        if status == CSW_GOOD:
            return data
        _, sense, _ = self.client.transport(cdb_request_sense(18), in_length=18)
        raise CheckCondition(what or f"opcode 0x{cb[0]:02X}", decode_sense(sense))

    def read(self, lba: int, count: int) -> bytes:
        return self.command(cdb_read10(lba, count), in_length=count * BLOCK_SIZE, what=f"READ(10) LBA {lba}")

    def write(self, lba: int, data: bytes) -> None:
        self.command(cdb_write10(lba, len(data) // BLOCK_SIZE), data_out=data, what=f"WRITE(10) LBA {lba}")

    def synchronize(self) -> None:
        self.command(cdb_synchronize_cache10(), what="SYNCHRONIZE CACHE(10)")


class BlockFile(io.RawIOBase):
    """A seekable binary stream over a :class:`ScsiDisk`, for pyfatfs.

    Reads fetch up to 64 KiB ahead (pyfatfs reads one cluster at a time);
    writes are kept as dirty sectors and sent in runs of consecutive LBAs
    at :meth:`flush`, or when 64 KiB have gathered.
    """

    def __init__(self, disk: ScsiDisk, *, writable: bool = True):
        self.disk = disk
        self._writable = writable
        self.size = disk.blocks * BLOCK_SIZE
        self.pos = 0
        self.dirty: dict[int, bytes] = {}
        self.window_start = -1
        self.window = b""
        self.sectors_written = 0
        self.gone = False  # the device left: later writes (pyfatfs closing in __del__) are dropped

    def readable(self):
        return True

    def writable(self):
        return self._writable

    def seekable(self):
        return True

    def tell(self):
        return self.pos

    def seek(self, offset, whence=0):
        self.pos = offset if whence == 0 else self.pos + offset if whence == 1 else self.size + offset
        return self.pos

    def _sector(self, lba: int) -> bytes:
        got = self.dirty.get(lba)
        if got is not None:
            return got
        if not self.window_start <= lba < self.window_start + len(self.window) // BLOCK_SIZE:
            count = min(MAX_SECTORS, self.disk.blocks - lba)
            self.window = self.disk.read(lba, count)
            self.window_start = lba
        off = (lba - self.window_start) * BLOCK_SIZE
        return self.window[off:off + BLOCK_SIZE]

    def read(self, size=-1):
        if size is None or size < 0:
            size = self.size - self.pos
        size = max(0, min(size, self.size - self.pos))
        out = bytearray()
        while len(out) < size:
            lba, off = divmod(self.pos + len(out), BLOCK_SIZE)
            out += self._sector(lba)[off:off + size - len(out)]
        self.pos += size
        return bytes(out)

    def readinto(self, buffer):
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def write(self, data):
        data = bytes(data)
        if self.gone:
            return len(data)
        if self.pos + len(data) > self.size:
            raise OSError(errno.ENOSPC, "write past the end of the drive")
        done = 0
        while done < len(data):
            lba, off = divmod(self.pos + done, BLOCK_SIZE)
            n = min(BLOCK_SIZE - off, len(data) - done)
            if n == BLOCK_SIZE:
                sector = data[done:done + n]
            else:
                old = self._sector(lba)
                sector = old[:off] + data[done:done + n] + old[off + n:]
            self.dirty[lba] = sector
            if self.window_start <= lba < self.window_start + len(self.window) // BLOCK_SIZE:
                self.window_start, self.window = -1, b""
            done += n
        self.pos += len(data)
        if len(self.dirty) >= MAX_SECTORS:
            self.flush()
        return len(data)

    def flush(self):
        if self.gone:
            self.dirty.clear()
            return
        lbas = sorted(self.dirty)
        i = 0
        while i < len(lbas):
            j = i + 1
            while j < len(lbas) and lbas[j] == lbas[j - 1] + 1 and j - i < MAX_SECTORS:
                j += 1
            self.disk.write(lbas[i], b"".join(self.dirty[lba] for lba in lbas[i:j]))
            self.sectors_written += j - i
            i = j
        self.dirty.clear()

    def close(self):
        if not self.closed:
            if self._writable:
                self.flush()
            super().close()


def ScsiFatFS(block: BlockFile, *, read_only: bool = False):
    """pyfatfs's PyFatFS on a :class:`BlockFile` (PyFatFS itself only opens file names)."""
    import fs.base
    from pyfatfs.PyFat import PyFat
    from pyfatfs.PyFatFS import PyFatFS

    volume = PyFatFS.__new__(PyFatFS)
    fs.base.FS.__init__(volume)
    volume.preserve_case = True
    volume.tz = datetime.timezone.utc
    volume.fs = PyFat(encoding="ibm437", lazy_load=True)
    volume.fs.is_read_only = read_only
    if read_only:
        block._writable = False
    volume.fs.set_fp(block)
    return volume


# --------------------------------------------------------------------------
# INFO_UF2.TXT


def parse_info(text: str) -> dict[str, str]:
    """INFO_UF2.TXT as a dict ("Model", "Board-ID", "Family-ID", "Accepts", ...; "version": line 1)."""
    out = {}
    lines = text.replace("\r", "").split("\n")
    if lines:
        out["version"] = lines[0].strip()
    for line in lines[1:]:
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def _accepts(info: dict | None) -> tuple[str, ...]:
    """What the drive takes: INFO_UF2.TXT's Accepts line; UF2 for any UF2 drive; BIN for a plain drive."""
    if info is None:
        return ("bin",)
    listed = tuple(a.strip().lower() for a in info.get("Accepts", "").split(",") if a.strip())
    return listed or ("uf2",)


def _family(info: dict | None, chip: Chip | None) -> int | None:
    if chip is not None and chip.uf2_family is not None:
        return chip.uf2_family
    if info and "Family-ID" in info:
        try:
            return int(info["Family-ID"], 0)
        except ValueError:
            return None
    return None


def _app_from_current(first_block: bytes) -> tuple[int, int] | None:
    """The application region from CURRENT.UF2's first block: (start, end)."""
    if len(first_block) < UF2_BLOCK_SIZE or not is_uf2_block(first_block[:UF2_BLOCK_SIZE]):
        return None
    b = UF2Block.unpack(first_block[:UF2_BLOCK_SIZE])
    return b.target_addr, b.target_addr + b.num_blocks * b.payload_size


def _payload(image: Image, kind: str, family: int | None, app_start: int) -> bytes:
    if kind == "uf2":
        return write_uf2(image, family=family)
    if kind == "bin":
        return image.tobytes(app_start, image.end)
    return write_hex(image).encode("ascii")


def _choose_kind(requested: str | None, accepts: tuple[str, ...]) -> str:
    if requested is not None:
        requested = requested.lower()
        if requested not in FILE_NAMES:
            raise ImageRejected(f"unknown file kind {requested!r} (uf2, bin or hex)")
        if requested in accepts:
            return requested
        if "uf2" not in accepts:
            raise ImageRejected(f"the drive takes {', '.join(accepts).upper()}, not {requested.upper()}")
    return "uf2" if "uf2" in accepts else accepts[0]


def _validate(image: Image, app: tuple[int, int] | None, chip: Chip | None, kind: str,
              family: int | None) -> tuple[int, int]:
    if not image:
        raise ImageRejected("the image is empty")
    protected = chip.layout().protected if chip is not None else ()
    if chip is not None:
        app = chip.layout().application_ranges("flash")[0]
    if app is None:
        raise ImageRejected("cannot tell the application region: give the chip")
    check_ranges(image, [app], protected, chip.name if chip is not None else "the drive's application region")
    if kind == "uf2" and family is None and chip is not None and chip.uf2_family is None:
        pass  # a family-less UF2, for a chip without a family
    return app


# --------------------------------------------------------------------------
# flash and read


def flash(image: Image, backend=None, *, drive=None, vid=None, pid=None, serial=None, dialect=None,
          chip: Chip | None = None, progress=None, fmt=None, timeout: float = 15.0, **_) -> FlashResult:
    """Drop ``image`` on the drive; returns once the device has left (the update is complete)."""
    if drive is not None:
        return _flash_drive(image, Path(drive), dialect=fmt or dialect, chip=chip, timeout=timeout)
    t0 = time.perf_counter()
    target = _find_one(backend, vid, pid, serial)
    steps = [target.describe()]
    disk = _open_disk(target)
    # Look first, read-only (pyfatfs marks a writable volume dirty at mount):
    # nothing is written before the image is known to fit.
    looking = _mount(BlockFile(disk, writable=False), read_only=True)
    info = None
    if looking.exists("/INFO_UF2.TXT"):
        info = parse_info(looking.readbytes("/INFO_UF2.TXT").decode("ascii", "replace"))
        steps.append(f"INFO_UF2.TXT: {info.get('version', '?')}, board {info.get('Board-ID', '?')}")
    app = None
    if looking.exists("/CURRENT.UF2"):
        with looking.openbin("/CURRENT.UF2", "r") as f:
            app = _app_from_current(f.read(UF2_BLOCK_SIZE))
    kind = _choose_kind(fmt or dialect, _accepts(info))
    family = _family(info, chip)
    looking.close()
    app = _validate(image, app, chip, kind, family)
    payload = _payload(image, kind, family, app[0])
    name = "/" + FILE_NAMES[kind]
    steps.append(f"{name[1:]}: {len(payload)} bytes")
    block = BlockFile(disk)
    volume = _mount(block)
    written = False
    try:
        if volume.exists(name):
            volume.remove(name)
        with progress_bar(f"copying {name[1:]}", len(payload), progress) as advance:
            with volume.openbin(name, "w") as f:
                chunk = 64 * 1024
                for i in range(0, len(payload), chunk):
                    f.write(payload[i:i + chunk])
                    advance(min(chunk, len(payload) - i))
        written = True
        volume.close()  # FAT and directory flushed, volume marked clean
        block.flush()
        disk.synchronize()
    except (usb.core.USBError, MscError) as exc:
        block.gone = True
        # The device leaves when the last block arrives (after a delay); a
        # slow host may see it go during its final FAT writes.  That is success.
        if not (written or _gone(exc) and _left(backend, target, 0)):
            raise MscError(f"copy failed: {exc}") from None
    left = _left(backend, target, timeout)
    if not left:
        raise MscError(f"the device did not restart within {timeout:g} s after the copy "
                       f"(the file was not accepted: wrong family, or does not fit)")
    steps.append("device left (update complete)")
    return FlashResult(kind, image.size, time.perf_counter() - t0, left, steps)


def read(backend=None, *, drive=None, vid=None, pid=None, serial=None, chip=None, start=None, length=None,
         progress=None, **_) -> Image:
    """The application as CURRENT.UF2 holds it (cropped to ``start``/``length`` when given)."""
    if drive is not None:
        source = open(Path(drive) / "CURRENT.UF2", "rb")
        try:
            _drop_page_cache(source.fileno())
            image = _parse_stream(source, os.fstat(source.fileno()).st_size, progress)
        finally:
            source.close()
    else:
        target = _find_one(backend, vid, pid, serial)
        volume = _mount(BlockFile(_open_disk(target), writable=False), read_only=True)
        if not volume.exists("/CURRENT.UF2"):
            raise MscError("the drive has no CURRENT.UF2")
        size = volume.getinfo("/CURRENT.UF2", namespaces=["details"]).size
        with volume.openbin("/CURRENT.UF2", "r") as f:
            image = _parse_stream(f, size, progress)
    if start is not None or length is not None:
        lo = image.start if start is None else start
        hi = image.end if length is None else lo + length
        image = image.crop(lo, hi)
    return image


def _parse_stream(f, size: int, progress) -> Image:
    """UF2 blocks read 64 KiB at a time: never the whole file in memory."""
    image = Image()
    with progress_bar("reading CURRENT.UF2", size, progress) as advance:
        index = 0
        while True:
            chunk = f.read(128 * UF2_BLOCK_SIZE)
            if not chunk:
                break
            advance(len(chunk))
            for off in range(0, len(chunk) - UF2_BLOCK_SIZE + 1, UF2_BLOCK_SIZE):
                try:
                    block = UF2Block.unpack(chunk[off:off + UF2_BLOCK_SIZE], source="CURRENT.UF2", index=index)
                except FormatError as exc:
                    raise MscError(str(exc)) from None
                index += 1
                image.add(block.target_addr, block.data, overwrite=True)
    return image


def _mount(block: BlockFile, read_only: bool = False):
    try:
        return ScsiFatFS(block, read_only=read_only)
    except usb.core.USBError as exc:
        raise MscError(f"cannot mount the drive: {exc}") from None
    except Exception as exc:  # pyfatfs: not a FAT volume
        raise MscError(f"cannot mount the drive's FAT volume: {exc}") from None


def _find_one(backend, vid, pid, serial) -> MscTarget:
    found = find_devices(backend, vid=vid, pid=pid, serial=serial)
    if not found:
        raise MscError("no USB mass-storage device found" + (
            f" with {vid:04x}:{pid:04x}" if vid is not None and pid is not None else ""))
    return found[0]


def _open_disk(target: MscTarget) -> ScsiDisk:
    try:
        return ScsiDisk(BotClient(target))
    except usb.core.USBError as exc:
        raise MscError(f"{target.describe()}: {exc}") from None


def _left(backend, target: MscTarget, timeout: float) -> bool:
    """True once the device at the target's bus address is gone (or came back as something else)."""
    d = target.device
    key = (d.bus, d.address, d.idVendor, d.idProduct)
    deadline = time.monotonic() + timeout
    while True:
        present = {(x.bus, x.address, x.idVendor, x.idProduct) for x in usb.core.find(find_all=True, backend=backend)}
        if key not in present:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


# --------------------------------------------------------------------------
# a mounted drive


def _drop_page_cache(fd: int) -> None:
    # Linux keeps a file's pages cached: CURRENT.UF2 read twice would show the old flash.
    if hasattr(os, "posix_fadvise"):
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass


def _full_sync(fd: int) -> None:
    os.fsync(fd)
    if sys.platform == "darwin":
        import fcntl

        # macOS fsync stops at the drive's cache; F_FULLFSYNC asks the drive to flush (fcntl(2))
        try:
            fcntl.fcntl(fd, getattr(fcntl, "F_FULLFSYNC", 51))
        except OSError:
            pass


def _flash_drive(image: Image, drive: Path, *, dialect, chip, timeout) -> FlashResult:
    t0 = time.perf_counter()
    if not drive.is_dir():
        raise MscError(f"{drive}: not a mounted drive")
    info_path = drive / "INFO_UF2.TXT"
    info = parse_info(info_path.read_text("ascii", "replace")) if info_path.exists() else None
    app = None
    current = drive / "CURRENT.UF2"
    if current.exists():
        with open(current, "rb") as f:
            app = _app_from_current(f.read(UF2_BLOCK_SIZE))
    kind = _choose_kind(dialect, _accepts(info))
    family = _family(info, chip)
    app = _validate(image, app, chip, kind, family)
    payload = _payload(image, kind, family, app[0])
    path = drive / FILE_NAMES[kind]
    steps = [f"{drive}: {info.get('version', 'UF2 drive') if info else 'drive'}", f"{path.name}: {len(payload)} bytes"]
    try:
        # Written with os.write, not shutil.copy: no extended attributes or
        # resource forks (macOS Finder copies them, and Ventura's failed on UF2 drives).
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(payload)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            _full_sync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        # the drive may vanish right after the last block (its reset): check below
        if drive.exists() and info_path.exists():
            raise MscError(f"{path}: {exc}") from None
    deadline = time.monotonic() + timeout
    while info_path.exists() if info is not None else os.path.ismount(drive):
        if time.monotonic() >= deadline:
            raise MscError(f"{drive} is still there {timeout:g} s after the copy: the file was not accepted")
        time.sleep(0.1)
    steps.append("drive left (update complete)")
    return FlashResult(kind, image.size, time.perf_counter() - t0, True, steps)


__all__ = ["MscError", "CheckCondition", "MscTarget", "find_devices", "BotClient", "ScsiDisk", "BlockFile",
           "ScsiFatFS", "parse_info", "flash", "read"]
