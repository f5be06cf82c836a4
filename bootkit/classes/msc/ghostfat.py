"""The ghost FAT16 volume: computed sector by sector, never stored whole.

What Microsoft's uf2-samdx1 (src/fat.c) and Adafruit's tinyuf2
(src/ghostfat.c) present, generalised and with their reported problems
fixed:

- the geometry is computed from the flash size, so CURRENT.UF2 and a new
  file of the same size both fit, the cluster count stays inside FAT16's
  range with a margin (tinyuf2 asserts 0x1015 <= clusters < 0xFFD5: many
  FAT drivers have small off-by-one errors near the limits), and sectors
  per cluster grow only when they must;
- CURRENT.UF2 covers the application region only, from its real start
  address (tinyuf2 compared an absolute address with the flash *size*), so
  writing it back reprograms the same image and never the bootloader;
- multi-sector clusters hold the right sector of each file (tinyuf2's
  "BUGBUG: copies the first sector data to all sectors of the cluster");
- the volume label is in the boot sector *and* as the first root
  directory entry, the FAT16 clean-shutdown bit is set and the boot
  sector's dirty flag clear, so ``fsck.fat -n`` finds nothing to fix.

Writes never reach a stored copy of the volume: FAT, directory and boot
sectors go to a small *overlay* (at most reserved + 2 FATs + root
directory sectors), so the host reads back what it wrote and its view
stays consistent; UF2 sectors are kept as their 32-byte header and
re-read from flash; other data sectors (a .BIN or .HEX being copied,
macOS metadata) go to a bounded data overlay until they can be used.
"""

from __future__ import annotations

import struct
import zlib
from array import array
from dataclasses import dataclass

from ...formats.uf2 import (
    UF2_BLOCK_SIZE,
    UF2_DATA_SIZE,
    UF2_FLAG_FAMILY_ID_PRESENT,
    UF2_MAGIC_END,
    UF2_MAGIC_START0,
    UF2_MAGIC_START1,
)

SECTOR = 512
RESERVED_SECTORS = 1
NUM_FATS = 2
ROOT_ENTRIES = 512  # 32 sectors: room for macOS metadata and long file names
MEDIA_FIXED = 0xF8
MIN_VOLUME_BYTES = 8 * 1024 * 1024
# FAT16 by the cluster count alone (Microsoft FAT spec "FAT type
# determination"), kept 32 clusters away from both limits as tinyuf2 does.
FAT16_MIN_CLUSTERS = 0x1015
FAT16_MAX_CLUSTERS = 0xFFD5
UF2_PAYLOAD = 256  # CURRENT.UF2 carries 256 bytes per block, as uf2conv.py writes

ATTR_READ_ONLY = 0x01
ATTR_HIDDEN = 0x02
ATTR_SYSTEM = 0x04
ATTR_VOLUME_ID = 0x08
ATTR_DIRECTORY = 0x10
ATTR_ARCHIVE = 0x20
ATTR_LONG_NAME = 0x0F

# A fixed timestamp (2024-01-01 00:00:00): the volume is the same on every enumeration.
DOS_DATE = ((2024 - 1980) << 9) | (1 << 5) | 1
DOS_TIME = 0


def volume_label(text: str) -> str:
    """An 11-character FAT volume label: upper case, characters every FAT driver accepts."""
    keep = "".join(c for c in text.upper() if c.isascii() and (c.isalnum() or c in "-_ "))
    return (keep.strip() or "BOOTKIT")[:11]


def short_name(name: str) -> bytes:
    base, _, ext = name.partition(".")
    return base.encode("ascii").ljust(8, b" ") + ext.encode("ascii").ljust(3, b" ")


def dir_entry(name11: bytes, attr: int, cluster: int, size: int) -> bytes:
    return struct.pack("<11sBBBHHHHHHHI", name11, attr, 0, 0, DOS_TIME, DOS_DATE, DOS_DATE,
                       cluster >> 16, DOS_TIME, DOS_DATE, cluster & 0xFFFF, size)


@dataclass(frozen=True)
class DirEntry:
    """A short directory entry as the host left it (FAT spec section 6)."""

    name: str  # "NAME.EXT"
    ext: str
    attr: int
    cluster: int
    size: int
    long_name: str = ""


@dataclass
class GhostFile:
    name: str
    first_cluster: int
    size: int
    content: bytes | None  # None: CURRENT.UF2, generated from flash

    @property
    def name11(self) -> bytes:
        return short_name(self.name)


class GhostFat:
    """The volume.  ``read(lba)`` / ``write(lba, sector)``; a *sink* receives what is written.

    ``sink`` has ``uf2_sector(lba, raw) -> bool`` (True: a UF2 block the
    sink recorded, so the volume keeps only its header) and
    ``volume_changed(volume, meta, data_lbas)`` (called by :meth:`settle`
    after a WRITE command with what changed).
    """

    def __init__(self, memory, *, app_start: int, app_size: int, family: int | None, label: str,
                 files: list[tuple[str, bytes]], min_bytes: int = MIN_VOLUME_BYTES,
                 data_overlay_limit: int | None = None, sink=None):
        self.memory = memory
        self.app_start = app_start
        self.app_size = app_size
        self.family = family
        self.label = volume_label(label)
        self.sink = sink
        self.current_blocks = -(-app_size // UF2_PAYLOAD)
        current_bytes = self.current_blocks * UF2_BLOCK_SIZE
        text_bytes = sum(len(c) for _, c in files)
        # CURRENT.UF2, room for a file as large (copying CURRENT.UF2 back), the
        # text files, and a MiB for the host's own files; whole MiBs.
        need = 2 * current_bytes + text_bytes + (1 << 20)
        total = max(min_bytes, -(-need // (1 << 20)) << 20)
        self.total_sectors = total // SECTOR
        self.root_sectors = ROOT_ENTRIES * 32 // SECTOR
        spc = 1
        while True:
            clusters_max = -(-self.total_sectors // spc)
            fat_sectors = -(-(clusters_max + 2) * 2 // SECTOR)
            data_sectors = self.total_sectors - RESERVED_SECTORS - NUM_FATS * fat_sectors - self.root_sectors
            clusters = data_sectors // spc
            if clusters < FAT16_MAX_CLUSTERS or spc == 128:
                break
            spc *= 2
        if not FAT16_MIN_CLUSTERS <= clusters < FAT16_MAX_CLUSTERS:
            raise ValueError(f"a {total} byte volume does not make a FAT16 file system ({clusters} clusters)")
        self.sectors_per_cluster = spc
        self.cluster_bytes = spc * SECTOR
        self.fat_sectors = fat_sectors
        self.clusters = clusters
        self.fat0 = RESERVED_SECTORS
        self.root_start = RESERVED_SECTORS + NUM_FATS * fat_sectors
        self.data_start = self.root_start + self.root_sectors
        self.serial = zlib.crc32(f"{self.label}:{app_start:x}:{app_size:x}".encode()) & 0xFFFFFFFF
        # the files, in cluster order; CURRENT.UF2 last
        self.files: list[GhostFile] = []
        cluster = 2
        for name, content in list(files) + [("CURRENT.UF2", None)]:
            size = current_bytes if content is None else len(content)
            self.files.append(GhostFile(name, cluster, size, content))
            cluster += max(1, -(-size // self.cluster_bytes))
        self.first_free_cluster = cluster
        # overlays
        self.meta: dict[int, bytes] = {}  # boot, FAT, root directory sectors the host wrote
        self.data: dict[int, bytes] = {}  # other data sectors the host wrote (bounded)
        self.uf2: dict[int, bytes] = {}  # UF2 sectors the sink took: header + non-zero tail, re-read from flash
        self.data_limit = data_overlay_limit if data_overlay_limit is not None else 3 * app_size + (1 << 20)
        self.data_bytes = 0
        self.dropped: list[int] = []  # data sectors not kept: the overlay was full
        self._meta_dirty = False
        self._data_written: set[int] = set()

    # ------------------------------------------------------------------
    # geometry helpers
    def cluster_lba(self, cluster: int) -> int:
        return self.data_start + (cluster - 2) * self.sectors_per_cluster

    def lba_cluster(self, lba: int) -> int:
        return (lba - self.data_start) // self.sectors_per_cluster + 2

    @property
    def current(self) -> GhostFile:
        return self.files[-1]

    # ------------------------------------------------------------------
    # the pristine volume
    def boot_sector(self) -> bytes:
        total16 = self.total_sectors if self.total_sectors < 0x10000 else 0
        total32 = 0 if total16 else self.total_sectors
        bpb = struct.pack(
            "<3s8sHBHBHHBHHHII", b"\xEB\x3C\x90", b"BOOTKIT ", SECTOR, self.sectors_per_cluster,
            RESERVED_SECTORS, NUM_FATS, ROOT_ENTRIES, total16, MEDIA_FIXED, self.fat_sectors,
            63, 255, 0, total32)
        # BS_DrvNum 0x80 (fixed disk, matches media 0xF8), BS_Reserved1 0 (clean), BS_BootSig 0x29
        ext = struct.pack("<BBBI11s8s", 0x80, 0, 0x29, self.serial, self.label.encode("ascii").ljust(11),
                          b"FAT16   ")
        # Boot code: print nothing, halt (INT 18h "no bootable disk" would be kinder on a PC; it never boots)
        code = b"\xFA\xF4\xEB\xFD"  # cli; hlt; jmp $-1
        sector = bytearray(SECTOR)
        head = bpb + ext
        sector[:len(head)] = head
        sector[len(head):len(head) + len(code)] = code
        sector[510:512] = b"\x55\xAA"
        return bytes(sector)

    def _fat_sector(self, index: int) -> bytes:
        entries = array("H", bytes(SECTOR))
        first = index * (SECTOR // 2)
        last = first + SECTOR // 2
        if index == 0:
            # FAT[0] = media byte in the low 8 bits; FAT[1] = EOC with the
            # clean-shutdown (0x8000) and no-error (0x4000) bits set.
            entries[0] = 0xFF00 | MEDIA_FIXED
            entries[1] = 0xFFFF
        for f in self.files:
            n = max(1, -(-f.size // self.cluster_bytes))
            lo, hi = max(first, f.first_cluster), min(last, f.first_cluster + n)
            for c in range(lo, hi):
                entries[c - first] = c + 1 if c + 1 < f.first_cluster + n else 0xFFFF
        if entries.itemsize == 2 and struct.pack("=H", 1) != struct.pack("<H", 1):  # pragma: no cover
            entries.byteswap()
        return entries.tobytes()

    def _root_sector(self, index: int) -> bytes:
        if index:
            return bytes(SECTOR)
        out = dir_entry(self.label.encode("ascii").ljust(11), ATTR_VOLUME_ID, 0, 0)
        for f in self.files:
            out += dir_entry(f.name11, ATTR_READ_ONLY | ATTR_ARCHIVE, f.first_cluster, f.size)
        return out.ljust(SECTOR, b"\0")

    def current_block(self, block_no: int) -> bytes:
        """Block ``block_no`` of CURRENT.UF2: the flash read back now, with our family id."""
        target = self.app_start + block_no * UF2_PAYLOAD
        size = min(UF2_PAYLOAD, self.app_start + self.app_size - target)
        try:
            data = self.memory.read(target, size)
        except Exception:  # read-out protection: the block is there, its data reads as zeros
            data = bytes(size)
        flags = UF2_FLAG_FAMILY_ID_PRESENT if self.family is not None else 0
        header = struct.pack("<8I", UF2_MAGIC_START0, UF2_MAGIC_START1, flags, target, size, block_no,
                             self.current_blocks, self.family or 0)
        return header + data + bytes(UF2_DATA_SIZE - size) + struct.pack("<I", UF2_MAGIC_END)

    def _data_sector(self, lba: int) -> bytes:
        cluster = self.lba_cluster(lba)
        for f in self.files:
            n = max(1, -(-f.size // self.cluster_bytes))
            if f.first_cluster <= cluster < f.first_cluster + n:
                offset = (lba - self.cluster_lba(f.first_cluster)) * SECTOR
                if f.content is None:
                    block = offset // SECTOR
                    return self.current_block(block) if block < self.current_blocks else bytes(SECTOR)
                return f.content[offset:offset + SECTOR].ljust(SECTOR, b"\0")
        return bytes(SECTOR)

    def pristine(self, lba: int) -> bytes:
        """Sector ``lba`` as the device presents it before any write."""
        if lba == 0:
            return self.boot_sector()
        if lba < self.root_start:
            index = (lba - self.fat0) % self.fat_sectors  # both FAT copies are the same
            return self._fat_sector(index) if lba >= self.fat0 else bytes(SECTOR)
        if lba < self.data_start:
            return self._root_sector(lba - self.root_start)
        return self._data_sector(lba)

    # ------------------------------------------------------------------
    # the host's view
    def read(self, lba: int) -> bytes:
        if lba < self.data_start:
            got = self.meta.get(lba)
            return got if got is not None else self.pristine(lba)
        got = self.data.get(lba)
        if got is not None:
            return got
        rec = self.uf2.get(lba)
        if rec is not None:
            return self._uf2_sector(rec)
        return self._data_sector(lba)

    def _uf2_sector(self, rec: bytes) -> bytes:
        """A UF2 sector the host wrote: its header, the payload as flash holds it now, its tail."""
        _, _, _, target, size = struct.unpack_from("<5I", rec)
        try:
            data = self.memory.read(target, size)
        except Exception:
            data = bytes(size)
        tail = rec[32:].ljust(UF2_DATA_SIZE - size, b"\0")
        return rec[:32] + data + tail + struct.pack("<I", UF2_MAGIC_END)

    def write(self, lba: int, sector: bytes) -> None:
        sector = bytes(sector)
        if lba < self.data_start:
            self.meta[lba] = sector
            self._meta_dirty = True
            return
        self._forget(lba)
        if self.sink is not None and self.sink.uf2_sector(lba, sector):
            _, _, _, _, size = struct.unpack_from("<5I", sector)
            tail = sector[32 + size:508].rstrip(b"\0")
            self.uf2[lba] = sector[:32] + tail
            return
        if self.data_bytes + SECTOR > self.data_limit:
            self.dropped.append(lba)
            return
        self.data[lba] = sector
        self.data_bytes += SECTOR
        self._data_written.add(lba)

    def _forget(self, lba: int) -> None:
        if self.data.pop(lba, None) is not None:
            self.data_bytes -= SECTOR
        self.uf2.pop(lba, None)

    def settle(self) -> None:
        """After a WRITE command: tell the sink what changed (raw files are assembled here)."""
        if self.sink is None or not (self._meta_dirty or self._data_written):
            return
        meta, data = self._meta_dirty, self._data_written
        self._meta_dirty, self._data_written = False, set()
        self.sink.volume_changed(self, meta, data)

    def holds(self, lba: int) -> bool:
        """True when the host has written data sector ``lba``."""
        return lba in self.data or lba in self.uf2

    # ------------------------------------------------------------------
    # reading the host's file system back
    def fat_entry(self, cluster: int, cache: dict | None = None) -> int:
        lba = self.fat0 + cluster * 2 // SECTOR
        if cache is not None and lba in cache:
            sector = cache[lba]
        else:
            sector = self.read(lba)
            if cache is not None:
                cache[lba] = sector
        return struct.unpack_from("<H", sector, (cluster * 2) % SECTOR)[0]

    def chain(self, first: int, clusters: int) -> list[int] | None:
        """The ``clusters`` clusters of the chain at ``first``, the last one marked EOC; None if not (yet) so."""
        out: list[int] = []
        seen: set[int] = set()
        cache: dict[int, bytes] = {}
        c = first
        for i in range(clusters):
            if not 2 <= c < self.clusters + 2 or c in seen:
                return None
            out.append(c)
            seen.add(c)
            nxt = self.fat_entry(c, cache)
            if i == clusters - 1:
                return out if nxt >= 0xFFF8 else None
            if nxt < 2 or nxt >= 0xFFF0:  # free (the FAT is not written yet), bad, or ends too early
                return None
            c = nxt
        return None

    def root_entries(self) -> list[DirEntry]:
        """The short entries of the root directory, each with its long name when it has one."""
        out: list[DirEntry] = []
        lfn: dict[int, str] = {}
        for i in range(self.root_sectors):
            sector = self.read(self.root_start + i)
            for off in range(0, SECTOR, 32):
                raw = sector[off:off + 32]
                if raw[0] == 0x00:
                    return out
                if raw[0] == 0xE5:
                    lfn.clear()
                    continue
                attr = raw[11]
                if attr & 0x3F == ATTR_LONG_NAME:
                    part = (raw[1:11] + raw[14:26] + raw[28:32]).decode("utf-16-le", "replace")
                    lfn[raw[0] & 0x1F] = part.split("\0")[0]
                    continue
                base = raw[0:8].decode("ascii", "replace").rstrip()
                ext = raw[8:11].decode("ascii", "replace").rstrip()
                hi, lo, size = struct.unpack_from("<H", raw, 20)[0], struct.unpack_from("<H", raw, 26)[0], \
                    struct.unpack_from("<I", raw, 28)[0]
                long_name = "".join(lfn[k] for k in sorted(lfn))
                lfn.clear()
                out.append(DirEntry(f"{base}.{ext}" if ext else base, ext, attr, hi << 16 | lo, size, long_name))
        return out

    def image(self) -> bytes:
        """The whole volume as the host sees it (tests and fsck only: a real device never builds it)."""
        return b"".join(self.read(lba) for lba in range(self.total_sectors))
