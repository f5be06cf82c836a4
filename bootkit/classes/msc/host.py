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
from ...formats.uf2 import (
    FAMILIES,
    UF2_BLOCK_SIZE,
    UF2_FLAG_FILE_CONTAINER,
    UF2_FLAG_NOT_MAIN_FLASH,
    UF2Block,
    is_uf2_block,
    write_uf2,
)
from ...memory import Chip
from ...progress import phase, progress_bar
from ..common import FlashResult, HostError, ImageRejected, _family_name, app_first_address, check_ranges, preflight
from ..usbhost import (
    CAME_BACK,
    STAYED,
    Arrival,
    LeaveWatch,
    Look,
    UsbLook,
    bus_snapshot,
    endpoint_pair,
    gone,
    in_process,
    matching_devices,
    stalled,
    take_interfaces,
)
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
            if not stalled(exc):
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
                if not stalled(exc) or attempt:
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
        self.watch: bytes | None = None  # a sector whose LBA the caller wants to know ...
        self.watched: list[int] = []  # ... and where it was written

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
        if self.watch is not None:
            self.watched += [lba for lba in lbas if self.dirty[lba] == self.watch and lba not in self.watched]
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


def _drive_family(info: dict | None) -> tuple[int | None, str]:
    """The UF2 family the drive takes, from INFO_UF2.TXT, and where that was read.

    bootkit's drives write a ``Family-ID`` line.  uf2-samdx1 and tinyuf2 write
    none, but their Board-ID starts with the chip ("SAMD21G18A-Feather-v0",
    "STM32F411CE-blackpill-v3", "nRF52840-Feather-revD"), and the RP2040 boot
    ROM's is "RPI-RP2": the longest family name the Board-ID starts with.
    """
    if not info:
        return None, ""
    if "Family-ID" in info:
        try:
            family = int(info["Family-ID"], 0)
            return family, f"the drive's Family-ID {_family_name(family)}"
        except ValueError:
            pass
    board = info.get("Board-ID", "")
    key = board.strip().lower().replace("_", "-")
    names = [n for n in FAMILIES if key.startswith(n)]
    family = FAMILIES["rp2040"] if key == "rpi-rp2" else FAMILIES[max(names, key=len)] if names else None
    if family is not None:
        return family, f"the drive's Board-ID {board}, UF2 family {_family_name(family)}"
    return None, ""


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


@dataclass
class _Drop:
    """What is written, and what the flash must hold afterwards."""

    kind: str
    payload: bytes
    expected: Image  # the data the drive takes from the file, at its addresses
    held: int | None  # index of the UF2 block sent last, once the others were read back
    foreign: str = ""  # the file has no block the drive takes (dropped with force): why it will stay


def _blocks_taken(raw: bytes, family: int | None, source: str) -> tuple[Image, int | None, str]:
    """The blocks of a UF2 file the drive takes: those of its family (tinyuf2's uf2_write_block
    programs only ``familyID == BOARD_UF2_FAMILY_ID``; uf2conv.py and a copy send every block)."""
    if len(raw) % UF2_BLOCK_SIZE:
        raise ImageRejected(f"{source}: length {len(raw)} is not a multiple of {UF2_BLOCK_SIZE} (truncated?)")
    expected = Image()
    held = None
    others: set = set()
    for i in range(len(raw) // UF2_BLOCK_SIZE):
        try:
            b = UF2Block.unpack(raw[i * UF2_BLOCK_SIZE:(i + 1) * UF2_BLOCK_SIZE], source=source, index=i)
        except FormatError as exc:
            raise ImageRejected(str(exc)) from None
        if b.family_id != family:
            others.add(b.family_id)
            continue
        held = i
        if b.flags & (UF2_FLAG_NOT_MAIN_FLASH | UF2_FLAG_FILE_CONTAINER):
            continue
        try:
            expected.add(b.target_addr, b.data)
        except FormatError as exc:
            raise ImageRejected(str(exc.at(source=source, where=f"block {i}"))) from None
    foreign = ""
    if held is None:
        names = ", ".join(_family_name(f) for f in sorted(others, key=lambda f: -1 if f is None else f))
        foreign = f"its blocks are for UF2 family {names}, the drive takes {_family_name(family)}"
    return expected, held, foreign


def _plan(image: Image, info: dict | None, app: tuple[int, int] | None, chip: Chip | None,
          requested: str | None, force: bool) -> _Drop:
    """Check everything before a byte is written (issue 16: refuse before erasing)."""
    if not image:
        raise ImageRejected("the image is empty")
    kind = _choose_kind(requested, _accepts(info))
    drive_family, says = _drive_family(info)
    origin = getattr(image, "origin", None)
    if chip is not None:
        family = chip.uf2_family
        if drive_family is not None and family is not None and drive_family != family and not force:
            raise ImageRejected(f"{says} does not match {chip.name}'s UF2 family {_family_name(family)}; "
                                f"--force drops it anyway")
        app = chip.layout().application_ranges("flash")[0]
        protected, what = chip.layout().protected, chip.name
    else:
        family = drive_family
        if app is None:
            raise ImageRejected("cannot tell the application region: give the chip")
        protected, what = (), "the drive's application region"
    if chip is not None and not force:
        preflight(image, chip)  # the file's UF2 families, and on AVR/XMEGA the reset vector
    elif family is not None and origin is not None and origin.format == "uf2" and not force:
        wrong = sorted((f for f in origin.uf2_families if f != family), key=lambda f: -1 if f is None else f)
        if wrong:
            raise ImageRejected(f"UF2 family {', '.join(_family_name(f) for f in wrong)} does not match "
                                f"{says}; --force drops it anyway")
    raw = None
    if kind == "uf2" and origin is not None and origin.format == "uf2" and origin.path:
        try:
            raw = Path(origin.path).read_bytes()
        except OSError:
            raw = None
    # the blocks the drive will program: its own family's (what it says, else the chip's)
    takes = drive_family if drive_family is not None else family
    foreign = ""
    if raw is not None:
        # a UF2 file goes as its own blocks, as uf2conv.py and a file copy send it
        expected, held, foreign = _blocks_taken(raw, takes, origin.path)
        expected.origin = origin
        payload = raw
    else:
        expected, payload = image, _payload(image, kind, family, app[0])
        held = len(payload) // UF2_BLOCK_SIZE - 1 if kind == "uf2" else None
        if kind == "uf2" and family != takes:  # forced past a drive of another family
            foreign = f"its blocks are for UF2 family {_family_name(family)}, the drive takes {_family_name(takes)}"
    if chip is not None:
        # what the device takes: its first word (AVR/XMEGA), whatever force says about families
        preflight(expected, chip, force=True)
    if expected:
        check_ranges(expected, [app], protected, what)
    return _Drop(kind, payload, expected, held, foreign)


# --------------------------------------------------------------------------
# reading CURRENT.UF2 back


class _NotReadBack(Exception):
    """CURRENT.UF2 could not be read back (the drive left, or it is not a flash image)."""


class _Current:
    """CURRENT.UF2 as a view of the flash: block k holds ``step`` bytes at ``base + k * step``
    (tinyuf2 and uf2-samdx1 generate it from flash on every read, as our ghost FAT does)."""

    def __init__(self, first_block: bytes, read_sectors):
        b = UF2Block.unpack(first_block[:UF2_BLOCK_SIZE])
        self.base, self.step, self.count = b.target_addr, b.payload_size, b.num_blocks
        self.read_sectors = read_sectors  # (first sector of the file, count) -> bytes

    def read(self, start: int, end: int) -> bytes:
        if self.step == 0 or start < self.base or end > self.base + self.count * self.step:
            raise _NotReadBack(f"0x{start:X}-0x{end - 1:X} is outside CURRENT.UF2")
        k0, k1 = (start - self.base) // self.step, (end - 1 - self.base) // self.step + 1
        out = bytearray()
        for k in range(k0, k1, MAX_SECTORS):
            n = min(MAX_SECTORS, k1 - k)
            chunk = self.read_sectors(k, n)
            for j in range(n):
                raw = chunk[j * UF2_BLOCK_SIZE:(j + 1) * UF2_BLOCK_SIZE]
                want = self.base + (k + j) * self.step
                if not is_uf2_block(raw) or UF2Block.unpack(raw).target_addr != want:
                    raise _NotReadBack(f"CURRENT.UF2 block {k + j} is not the flash at 0x{want:X}")
                out += UF2Block.unpack(raw).data
        off = start - (self.base + k0 * self.step)
        return bytes(out[off:off + end - start])

    def differs(self, image: Image) -> str:
        """'' when the flash holds ``image``; else where it does not (one line)."""
        return self.compare(image)[0]

    def compare(self, image: Image) -> tuple[str, list[tuple[int, int]]]:
        """('' , []) when the flash holds ``image``; else the first difference (one line) and
        the spans of CURRENT.UF2 blocks that differ."""
        first, spans, count = "", [], 0
        for start, data in image.segments:
            got = self.read(start, start + len(data))
            if got == data:
                continue
            for i in range(len(data)):
                if got[i] == data[i]:
                    continue
                count += 1
                a = start + i
                if not first:
                    first = f"0x{got[i]:02X} at 0x{a:X} where the file has 0x{data[i]:02X}"
                lo = a - (a - self.base) % self.step
                if spans and spans[-1][1] >= lo:
                    spans[-1] = (spans[-1][0], max(spans[-1][1], lo + self.step))
                else:
                    spans.append((lo, lo + self.step))
        if not first:
            return "", []
        return f"CURRENT.UF2 reads {first} ({count} byte(s) differ)", spans


def _scsi_current(disk: ScsiDisk, volume, first_block: bytes) -> _Current | None:
    """CURRENT.UF2 read sector by sector with READ(10), its clusters found once (the file
    is the device's: it does not move while we write ours)."""
    try:
        entry = volume._get_dir_entry("/CURRENT.UF2")
        fat = volume.fs
        chain = list(fat.get_cluster_chain(entry.get_cluster()))
        per_cluster = fat.bytes_per_cluster // BLOCK_SIZE
    except Exception:  # pyfatfs: a FAT it cannot follow; then nothing is read back
        return None

    def lba(k: int) -> int:
        return fat.get_data_cluster_address(chain[k // per_cluster]) // BLOCK_SIZE + k % per_cluster

    def read_sectors(k: int, n: int) -> bytes:
        if (k + n - 1) // per_cluster >= len(chain):
            raise _NotReadBack("CURRENT.UF2 is shorter than its first block says")
        out = b""
        i = k
        while i < k + n:  # runs of consecutive LBAs, one READ(10) each
            j = i + 1
            while j < k + n and lba(j) == lba(j - 1) + 1:
                j += 1
            out += disk.read(lba(i), j - i)
            i = j
        return out

    return _Current(first_block, read_sectors)


def _file_current(path: Path, first_block: bytes) -> _Current | None:
    """CURRENT.UF2 on a mounted drive, its cached pages dropped before every read (Linux keeps
    them: a second read would show the flash as it was).  None where that cannot be done."""
    if not hasattr(os, "posix_fadvise"):
        return None

    def read_sectors(k: int, n: int) -> bytes:
        try:
            with open(path, "rb", buffering=0) as f:
                _drop_page_cache(f.fileno())
                f.seek(k * UF2_BLOCK_SIZE)
                data = f.read(n * UF2_BLOCK_SIZE)
        except OSError as exc:
            raise _NotReadBack(str(exc)) from None
        if len(data) != n * UF2_BLOCK_SIZE:
            raise _NotReadBack("CURRENT.UF2 is shorter than its first block says")
        return data

    return _Current(first_block, read_sectors)


def _held_range(drop: _Drop) -> tuple[int, int] | None:
    raw = drop.payload[drop.held * UF2_BLOCK_SIZE:(drop.held + 1) * UF2_BLOCK_SIZE]
    b = UF2Block.unpack(raw)
    if b.flags & (UF2_FLAG_NOT_MAIN_FLASH | UF2_FLAG_FILE_CONTAINER):
        return None
    return b.target_addr, b.target_addr + b.payload_size


def _without(image: Image, span: tuple[int, int] | None) -> Image:
    if span is None:
        return image
    out = Image()
    for start, data in image.segments:
        end = start + len(data)
        if start < span[0]:
            out.add(start, data[:min(end, span[0]) - start])
        if end > span[1]:
            lo = max(start, span[1])
            out.add(lo, data[lo - start:])
    return out


def _only(image: Image, spans) -> Image:
    out = Image()
    for lo, hi in spans:
        for start, data in image.crop(lo, hi).segments:
            out.add(start, data, overwrite=True)
    return out


def _placeholder(block: bytes) -> bytes:
    """The held block with magicStart0 cleared: not a UF2 block to any drive (tinyuf2 and
    uf2-samdx1 check the magics first), so the file is laid out whole and complete later."""
    return bytes(4) + block[4:]


def _verify_before_last(current: _Current, drop: _Drop) -> tuple[str, list]:
    """Every block but the held one is on the drive: read them back before the last goes.

    Returns ('', spans to read again after the last block) or ("not verified: ...", []) when
    CURRENT.UF2 cannot be read.  A difference now is not yet a failure: tinyuf2 keeps the
    flash sector it is filling in RAM until the next one or the file's end (its
    board_flash_write caches, board_flash_flush writes), so those bytes are read again."""
    try:
        _, spans = current.compare(_without(drop.expected, _held_range(drop)))
    except _NotReadBack as exc:
        return f"not verified: {exc}", []
    return "", spans


def _verify_last(current: _Current, drop: _Drop, again: list) -> str:
    """The held block's data, and what differed before it, read back right after it was sent
    (the drive leaves about a second later).  Returns the step; raises when the flash holds
    something else."""
    held = _held_range(drop)
    part = _only(drop.expected, list(again) + ([held] if held else []))
    try:
        wrong = current.differs(part)
    except (_NotReadBack, usb.core.USBError, MscError, OSError):
        return "not verified: the drive left before its last block was read back"
    if wrong:
        raise MscError(f"verify failed: {wrong}")
    return f"CURRENT.UF2 read back: {drop.expected.size} bytes match"


def _verify_all(current: _Current | None, drop: _Drop) -> str:
    """A BIN/HEX file is programmed whole once its last sector arrives: read back at once."""
    if current is None:
        return "not verified: CURRENT.UF2 cannot be read back here"
    try:
        wrong = current.differs(drop.expected)
    except (_NotReadBack, usb.core.USBError, MscError, OSError):
        return "not verified: the drive left before CURRENT.UF2 was read back"
    if wrong:
        raise MscError(f"verify failed: {wrong}")
    return f"CURRENT.UF2 read back: {drop.expected.size} bytes match"


def _why_stayed(drop: _Drop, current: _Current | None, chip: Chip | None, waited: float) -> str:
    """The drive is still there after the copy: what CURRENT.UF2 says about why."""
    if drop.foreign:
        return f"it ignored the file: {drop.foreign}"
    if current is not None:
        try:
            first = app_first_address(chip) if chip is not None else current.base
            if current.read(first, first + 2) == b"\xff\xff":
                return "first word of flash is erased: the bootloader kept control"
            wrong = current.differs(drop.expected)
            if wrong:
                return f"the flash does not hold the file: {wrong}"
            return f"the flash holds the file, but the drive did not restart within {waited:g} s"
        except (_NotReadBack, usb.core.USBError, MscError, OSError):
            pass
    return f"the drive did not restart within {waited:g} s after the copy"


# --------------------------------------------------------------------------
# flash and read

LEAVE_WAIT_IN_PROCESS = 2.0  # s: the emulated drive leaves 0.05-0.2 s after the last block ...
AGAIN_IN_PROCESS = 0.3  # ... and what replaces it is there at once
AGAIN = 5.0  # s a real board gets to come back as its application


def flash(image: Image, backend=None, *, drive=None, vid=None, pid=None, serial=None, dialect=None,
          chip: Chip | None = None, progress=None, fmt=None, force: bool = False, timeout: float | None = None,
          again: float | None = None, memory: str = "flash", verify: bool = True, leave: bool = True,
          **_) -> FlashResult:
    """Drop ``image`` on the drive and report what was observed.

    Everything is checked first (nothing is written to a drive whose family,
    region or reset vector the image does not fit; ``force`` lifts only the
    family check).  A UF2 file goes as its own blocks.  All blocks but one are
    written and read back from CURRENT.UF2; then the last one, which completes
    the file, and its data is read back too.  ``verified`` is True only when
    every byte was read back equal.  Then the drive must leave (else
    HostError "the device stayed in its bootloader: ...") and the bus is
    watched for what comes back.
    """
    if memory != "flash":
        raise ImageRejected(f"a UF2 drive programs flash only, not {memory}")
    if not leave:
        raise ImageRejected("a UF2 drive starts its application once the file is complete: it cannot stay")
    if drive is not None:
        return _flash_drive(image, Path(drive), requested=fmt or dialect, chip=chip, force=force,
                            timeout=15.0 if timeout is None else timeout, again=AGAIN if again is None else again,
                            verify=verify)
    t0 = time.perf_counter()
    wait = (LEAVE_WAIT_IN_PROCESS if in_process(backend) else 15.0) if timeout is None else timeout
    again = (AGAIN_IN_PROCESS if in_process(backend) else AGAIN) if again is None else again
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
    app = current = None
    if looking.exists("/CURRENT.UF2"):
        with looking.openbin("/CURRENT.UF2", "r") as f:
            first = f.read(UF2_BLOCK_SIZE)
        app = _app_from_current(first)
        if app is not None:
            current = _scsi_current(disk, looking, first)
    looking.close()
    drop = _plan(image, info, app, chip, fmt or dialect, force)
    name = "/" + FILE_NAMES[drop.kind]
    steps.append(f"{name[1:]}: {len(drop.payload)} bytes")
    hold = verify and drop.held is not None and current is not None and not drop.foreign
    payload = drop.payload
    last = b""
    if hold:
        at = drop.held * UF2_BLOCK_SIZE
        last = payload[at:at + UF2_BLOCK_SIZE]
        payload = payload[:at] + _placeholder(last) + payload[at + UF2_BLOCK_SIZE:]
    before = bus_snapshot(backend)
    block = BlockFile(disk)
    block.watch = _placeholder(last) if hold else None
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
        # slow host may see it go during its final FAT writes.
        if not (written or gone(exc) and _left_now(backend, target)):
            raise MscError(f"copy failed: {exc}") from None
    if hold:
        if len(block.watched) != 1:
            raise MscError(f"copy failed: the held-back block was written to {len(block.watched)} sectors")
        unread, again_spans = _verify_before_last(current, drop)
        phase("copying the last block")
        try:
            disk.write(block.watched[0], last)
            disk.synchronize()
        except (usb.core.USBError, MscError) as exc:
            if not (gone(exc) and _left_now(backend, target)):
                raise MscError(f"copy failed: the last block: {exc}") from None
        checked = unread or _verify_last(current, drop, again_spans)
    else:
        checked = _read_back(current, drop, verify)
    steps.append(checked)
    seconds = time.perf_counter() - t0  # the copy and its read-back, not the watch after it
    steps.append(_outcome(backend, target, before, wait, again,
                          lambda: _why_stayed(drop, current, chip, wait)))
    return FlashResult(drop.kind, drop.expected.size, seconds, checked.startswith("CURRENT.UF2 read back"), steps)


def _read_back(current, drop, verify: bool) -> str:
    """The verify step of a drop whose last block was not held back: the whole file read
    back from CURRENT.UF2 (or why it was not)."""
    if drop.foreign:
        return "not verified: the drive takes none of the file's blocks"
    if not verify:
        return "not verified (--no-verify)"
    return _verify_all(current, drop)


def _is_uf2_drive(dev) -> bool:
    """A device with a SCSI mass-storage interface: a drive with its bootloader's ids is the bootloader."""
    try:
        return any((i.bInterfaceClass, i.bInterfaceSubClass) == (MSC_CLASS, MSC_SUBCLASS_SCSI)
                   for cfg in dev for i in cfg)
    except (usb.core.USBError, ValueError):
        return False


def _outcome(backend, target: MscTarget, before: dict | None, wait: float, again: float, why) -> str:
    """What happened after the copy, as seen on the bus.

    - the drive left and another device appeared: "application started (came back as VVVV:PPPP)";
    - it left and nothing came back within ``again`` s: "left the bootloader (not seen again within N s)";
    - it is still there after ``wait`` s, or came back as the same drive: MscError
      "the device stayed in its bootloader: <why>".
    """
    look = UsbLook(backend, target.device, before, bootloader=_is_uf2_drive)
    out = LeaveWatch(look, wait=wait, again=again, interval=0.02).run()
    if out.seen == CAME_BACK and out.arrival is not None:
        raise MscError(f"{STAYED}: it came back as its bootloader drive ({out.arrival.vid:04X}:{out.arrival.pid:04X})")
    if out.stayed:
        raise MscError(f"{STAYED}: {why()}")
    return out.step


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


def _left_now(backend, target: MscTarget) -> bool:
    """True when the device is not at the target's bus address now (it left, or came back as something else)."""
    return UsbLook(backend, target.device, None).left()


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


def _flash_drive(image: Image, drive: Path, *, requested, chip, force, timeout, again, verify=True) -> FlashResult:
    t0 = time.perf_counter()
    if not drive.is_dir():
        raise MscError(f"{drive}: not a mounted drive")
    info_path = drive / "INFO_UF2.TXT"
    info = parse_info(info_path.read_text("ascii", "replace")) if info_path.exists() else None
    app = current = None
    current_path = drive / "CURRENT.UF2"
    if current_path.exists():
        with open(current_path, "rb") as f:
            first = f.read(UF2_BLOCK_SIZE)
        app = _app_from_current(first)
        if app is not None:
            current = _file_current(current_path, first)
    drop = _plan(image, info, app, chip, requested, force)
    path = drive / FILE_NAMES[drop.kind]
    steps = [f"{drive}: {info.get('version', 'UF2 drive') if info else 'drive'}",
             f"{path.name}: {len(drop.payload)} bytes"]
    hold = verify and drop.held is not None and current is not None and not drop.foreign
    payload = drop.payload
    at = drop.held * UF2_BLOCK_SIZE if hold else 0
    last = payload[at:at + UF2_BLOCK_SIZE] if hold else b""
    if hold:
        payload = payload[:at] + _placeholder(last) + payload[at + UF2_BLOCK_SIZE:]

    def present() -> bool:
        try:
            return info_path.exists() if info is not None else os.path.ismount(drive)
        except OSError:
            return False

    checked, again_spans = "", []
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
            if hold:
                checked, again_spans = _verify_before_last(current, drop)
                phase("copying the last block")
                os.pwrite(fd, last, at)
                _full_sync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        # the drive may vanish right after the last block (its reset): looked at below
        if present():
            raise MscError(f"{path}: {exc}") from None
        checked = checked or "not verified: the drive left before its last block was read back"
    if not checked:
        checked = _verify_last(current, drop, again_spans) if hold else _read_back(current, drop, verify)
    steps.append(checked)
    was_gone = False

    def look() -> Look:
        # a drive shows no ids: once it went, the same mount point back is its bootloader
        # mounted again where it was (an automounter), and nothing else can be seen
        nonlocal was_gone
        if not present():
            was_gone = True
            return Look(False)
        return Look(False, Arrival(0, 0, True, where=str(drive))) if was_gone else Look(True)

    out = LeaveWatch(look, wait=timeout, again=again, interval=0.1).run()
    if out.seen == CAME_BACK:
        raise MscError(f"{STAYED}: {drive} came back after the copy")
    if out.stayed:
        raise MscError(f"{STAYED}: {_why_stayed(drop, current, chip, timeout)}")
    steps.append(out.step)
    return FlashResult(drop.kind, drop.expected.size, time.perf_counter() - t0,
                       checked.startswith("CURRENT.UF2 read back"), steps)


__all__ = ["MscError", "CheckCondition", "MscTarget", "find_devices", "BotClient", "ScsiDisk", "BlockFile",
           "ScsiFatFS", "parse_info", "flash", "read"]
