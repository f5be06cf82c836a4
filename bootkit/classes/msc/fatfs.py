"""pyfatfs on a SCSI disk.

pyfatfs's PyFatFS opens its volume by file name only, but its PyFat core
takes any seekable binary stream (``PyFat.set_fp``); :class:`BlockFile`
is that stream, a write-back sector cache over SCSI commands, and
:func:`ScsiFatFS` is PyFatFS with the stream handed in.
"""

from __future__ import annotations

import datetime
import errno
import io
import pkgutil
import sys
import types

import usb.core

from .bot import MscError
from .protocol import BLOCK_SIZE
from .scsi import MAX_SECTORS, ScsiDisk


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


class _NamespaceShim(types.ModuleType):
    """Stands in for setuptools' ``pkg_resources`` while ``fs`` is first imported.

    fs 2.4.16 (pyfatfs's base; its last release) begins fs/__init__.py and
    fs/opener/__init__.py with ``pkg_resources.declare_namespace(__name__)``, and
    fs/opener/registry.py imports pkg_resources for its openers' entry points
    (PyFilesystem/pyfilesystem2#577).  Importing pkg_resources took 84 ms of `bootkit drop`'s
    192 ms of imports (issue 22; 230 ms on a loaded machine), warns that it is deprecated,
    and fails outright under setuptools >= 82, which no longer ships it.  The shim answers
    those two calls the way the fix proposed upstream does (pyfilesystem2#590): the namespace
    through ``pkgutil.extend_path``, the entry points from ``importlib.metadata``.
    """

    def __init__(self) -> None:
        super().__init__("pkg_resources", "bootkit's stand-in while fs is imported (msc/fatfs.py)")

    @staticmethod
    def declare_namespace(name: str) -> None:
        package = sys.modules[name]
        package.__path__ = pkgutil.extend_path(package.__path__, name)

    @staticmethod
    def iter_entry_points(group: str, name: str | None = None):
        from importlib.metadata import entry_points

        return (ep for ep in entry_points(group=group) if name is None or ep.name == name)


def _import_fs() -> None:
    """Import ``fs`` (for pyfatfs) without importing pkg_resources (see _NamespaceShim).

    The shim is in ``sys.modules`` only during this import, so anything importing
    pkg_resources later gets the real one; fs.opener.registry keeps the shim, whose
    iter_entry_points serves it (bootkit never opens a file system by URL).  If fs or
    pkg_resources is already imported there is nothing to save."""
    if "fs" in sys.modules or "pkg_resources" in sys.modules:
        import fs  # noqa: F401
        return
    sys.modules["pkg_resources"] = _NamespaceShim()
    try:
        import fs  # noqa: F401  (fs.opener.registry binds the shim here)
    finally:
        del sys.modules["pkg_resources"]


def ScsiFatFS(block: BlockFile, *, read_only: bool = False):
    """pyfatfs's PyFatFS on a :class:`BlockFile` (PyFatFS itself only opens file names)."""
    _import_fs()
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


def mount(block: BlockFile, read_only: bool = False):
    try:
        return ScsiFatFS(block, read_only=read_only)
    except usb.core.USBError as exc:
        raise MscError(f"cannot mount the drive: {exc}") from None
    except Exception as exc:  # pyfatfs: not a FAT volume
        raise MscError(f"cannot mount the drive's FAT volume: {exc}") from None
