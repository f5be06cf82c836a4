"""The image file behind a SimulatedFlash: crash-consistent saves and one writer per image.

Files beside ``FILE.bin``:

- ``FILE.bin.state.json``: what a real bootloader keeps in a reserved flash
  word (application valid, read-out protection, erase counters, EEPROM),
  plus ``image_sha256``, the hash of the image it describes (:func:`image_hash`:
  SHA-256 over the SHA-256 digests of the image's 4 KiB blocks, a hash list,
  so a save rehashes only the blocks that changed since the last one; a state
  written before, naming the plain SHA-256 of the whole image, still loads);
- ``FILE.bin.new`` and ``FILE.bin.state.json.tmp``: a save in progress;
- ``FILE.bin.journal``: the blocks of an in-place save (below);
- ``FILE.bin.lock``: the advisory lock, holding the writer's PID.

A save (:meth:`ImageStore.save`) is write, fsync, rename, fsync the
directory: rename(2) replaces a name atomically, but neither a file's bytes
nor a directory entry is durable until fsync(2) of the file, respectively of
its directory, returns (fsync(2): "fsync() on a file descriptor for the
directory is also needed"):

1. write ``FILE.bin.new``, fsync it;
2. write the state, naming the new image's hash, to a temp file, fsync it,
   fsync the directory (so both staged names are durable);
3. rename the temp file over ``FILE.bin.state.json``: THE COMMIT POINT;
4. fsync the directory;
5. rename ``FILE.bin.new`` over ``FILE.bin``; fsync the directory.

A save that changes at most :data:`IN_PLACE_SHARE` of the image (a host streaming
an update into a 2 MiB flash) rewrites only the changed 4 KiB blocks, in place,
behind a redo journal, instead of the whole image:

1. write ``FILE.bin.journal`` (the new hash, the block numbers, their new bytes), fsync it;
2. write the state, naming the new image's hash, to a temp file, fsync it,
   fsync the directory;
3. rename the temp file over ``FILE.bin.state.json``: THE COMMIT POINT;
4. fsync the directory;
5. write the blocks into ``FILE.bin`` in place, fsync it; remove the journal.

:meth:`ImageStore.load` trusts a state only for the image whose hash it
names: ``FILE.bin`` matches (consistent), or ``FILE.bin.new`` matches (a save
was cut after its commit: roll forward by finishing step 5), or ``FILE.bin``
with the journal's blocks written over it matches (an in-place save cut after
its commit, FILE.bin possibly torn in those blocks: roll forward by writing
them again).  Anything else
(no state, an empty or unparsable one, an old one without a hash, a hash
that matches no image: a hand-edited or foreign ``FILE.bin``) loads the image
with the application INVALID, so the bootloader keeps control.  Leftovers of
a save cut before its commit are removed.

Every step that touches the file system calls the :class:`FaultPlan`
first (write, fsync, rename, dirsync, unlink), so a campaign can cut the
power at each of them.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import sys
from pathlib import Path

from .faults import FaultPlan


class ImageBusy(OSError):
    """Another process holds the image: one writer per image, readers share.

    An OSError (the environment failed, exit 1), never a ValueError (bad input).
    """


#: bytes per block of the hash list (image_hash), and of an in-place save
HASH_BLOCK = 4096
#: a save whose changed blocks are at most this share of the image rewrites them in place
IN_PLACE_SHARE = 0.25


def block_digests(data: bytes | bytearray | memoryview) -> list[bytes]:
    """SHA-256 of each HASH_BLOCK bytes of ``data`` (the last block may be shorter)."""
    view = memoryview(data).cast("B")
    sha256 = hashlib.sha256
    return [sha256(view[i:i + HASH_BLOCK]).digest() for i in range(0, len(view), HASH_BLOCK)]


def list_hash(digests: list[bytes]) -> str:
    """The image hash from its blocks' digests."""
    return hashlib.sha256(b"".join(digests)).hexdigest()


def image_hash(data: bytes | bytearray | memoryview) -> str:
    """What ``image_sha256`` in the state names: SHA-256 over the SHA-256 of each 4 KiB block.

    A hash list rather than the SHA-256 of the whole image, so a save after a few blocks
    changed hashes those blocks only: the whole 2 MiB of an RP2040 took 0.24 s of CPU
    per save under QEMU TCG (benchmarks/bench_gadget_vs_kernel.py --profile msc)."""
    return list_hash(block_digests(data))


def _legacy_hash(data: bytes | bytearray | memoryview) -> str:
    """The image hash of states written before the hash list: SHA-256 of the whole image."""
    return hashlib.sha256(data).hexdigest()


class ImageStore:
    """The files of one image: lock, load and save.  ``readonly`` never writes a byte of them."""

    def __init__(self, path: str | os.PathLike, *, readonly: bool = False, faults: FaultPlan | None = None):
        self.path = Path(path)
        self.readonly = readonly
        self.faults = faults
        name = self.path.name
        self.state_path = self.path.with_name(name + ".state.json")
        self.new_path = self.path.with_name(name + ".new")
        self.state_tmp_path = self.path.with_name(name + ".state.json.tmp")
        self.lock_path = self.path.with_name(name + ".lock")
        self.journal_path = self.path.with_name(name + ".journal")
        self._lock_fd: int | None = None
        #: image_hash of what FILE.bin holds on disk now (None: unknown or absent)
        self.disk_hash: str | None = None
        #: block_digests of the image given to the last save (or loaded): what save(changed=...) updates
        self._digests: list[bytes] | None = None
        #: list_hash of those digests
        self._given_hash: str | None = None

    # ------------------------------------------------------------------
    # fault plan

    def _step(self, kind: str, tear=None) -> None:
        if self.faults is not None:
            self.faults.step(kind, tear)

    # ------------------------------------------------------------------
    # lock

    def lock(self) -> None:
        """Take the lock (exclusive, or shared when read-only) without waiting; ImageBusy if held.

        The lock is on a companion file, not on FILE.bin, whose inode changes
        with every save's rename.  flock(2) locks belong to the open file
        description: a second open in the same process conflicts too.
        """
        if self._lock_fd is not None:
            return
        flags = os.O_CLOEXEC | (os.O_RDONLY if self.readonly and self.lock_path.exists() else
                                os.O_RDWR | os.O_CREAT)
        fd = os.open(self.lock_path, flags, 0o666)
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if self.readonly else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise
            holder = self._holder(fd)
            os.close(fd)
            raise ImageBusy(f"{self.path} is in use by {holder}: one writer per image") from None
        if not self.readonly:
            # Who holds it, for the next process's message (readers share the
            # lock and write nothing: /proc/locks names them).
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {_command()}\n".encode(), 0)
        self._lock_fd = fd

    def unlock(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)  # closing the last descriptor of the open file releases the flock

    @property
    def locked(self) -> bool:
        return self._lock_fd is not None

    def _holder(self, fd: int) -> str:
        """'PID 1234 (bootkit serve dfu)' for the process holding the lock, as well as we can tell."""
        try:
            written = os.pread(fd, 4096, 0).decode(errors="replace").split("\n")[0].split(" ", 1)
        except OSError:
            written = []
        written_pid = int(written[0]) if written and written[0].isdigit() else None
        pids = _flock_holders(os.fstat(fd).st_ino)
        if written_pid is not None and (not pids or written_pid in pids):
            return f"PID {written_pid} ({written[1] if len(written) > 1 else '?'})"
        for pid in pids:
            return f"PID {pid} ({_command_of(pid)})"
        return "another process"

    # ------------------------------------------------------------------
    # load

    def load(self) -> tuple[bytes | None, dict, bool]:
        """(image bytes or None when there is none, state, whether the state describes the image).

        Recovers a save cut after its commit (roll forward) and removes the
        leftovers of one cut before it; read-only, it only reads.
        """
        state = self._read_state() or {}
        want = state.get("image_sha256")
        image = _read_or_none(self.path)
        if image is not None and want is not None and self._matches(image, want):
            self.disk_hash = self._given_hash
            self._remove_leftovers()
            return image, state, True
        staged = _read_or_none(self.new_path) if want is not None else None
        if staged is not None and want is not None and self._matches(staged, want):
            # cut between the commit (step 3) and the image's rename (step 5): finish it
            if not self.readonly:
                self._step("rename")
                os.replace(self.new_path, self.path)
                self._dirsync()
                self.disk_hash = self._given_hash
            self._remove_leftovers()
            return staged, state, True
        journal = _read_or_none(self.journal_path) if want is not None and image is not None else None
        replayed = _replay(image, journal, want) if journal is not None and image is not None and want is not None \
            else None
        if replayed is not None and want is not None and self._matches(replayed[0], want):
            # an in-place save cut after its commit (step 3): write its blocks again
            if not self.readonly:
                self._write_in_place(replayed[0], replayed[1])
                self.disk_hash = self._given_hash
            self._remove_leftovers()
            return replayed[0], state, True
        # No trustworthy state for this image: whatever it holds, the application is invalid.
        self._digests = block_digests(image) if image is not None else None
        self._given_hash = list_hash(self._digests) if self._digests is not None else None
        self.disk_hash = self._given_hash
        self._remove_leftovers()
        return image, state, False

    def _matches(self, image: bytes, want: str) -> bool:
        """``image`` is the one ``want`` names (the hash list, or a state's older whole-image
        SHA-256); keeps its block digests for the next save."""
        digests = block_digests(image)
        given = list_hash(digests)
        if given == want or _legacy_hash(image) == want:
            self._digests, self._given_hash = digests, given
            return True
        return False

    def _read_state(self) -> dict | None:
        try:
            state = json.loads(self.state_path.read_text())
        except (OSError, ValueError, UnicodeDecodeError):
            return None
        return state if isinstance(state, dict) else None

    def _remove_leftovers(self) -> None:
        if self.readonly:
            return
        for leftover in (self.new_path, self.state_tmp_path, self.journal_path):
            if leftover.exists():
                self._step("unlink")
                leftover.unlink(missing_ok=True)

    # ------------------------------------------------------------------
    # save

    def save(self, image: bytes | bytearray | memoryview, state: dict,
             changed: bytes | bytearray | None = None, granule: int = 1) -> None:
        """Write image and state so that a cut at any step leaves the old pair or the new pair.

        ``changed``: which parts of ``image`` may differ from what the last save (or load) of
        this store was given, one flag byte per ``granule`` bytes (1: changed); only the
        hash blocks holding a flagged byte are hashed again.  None: anything may have changed.
        """
        if self.readonly:
            raise RuntimeError(f"{self.path} is open read-only")
        given_before = self._given_hash
        digest, blocks = self._hash(image, changed, granule)
        state = dict(state, image_sha256=digest)
        text = (json.dumps(state, indent=1) + "\n").encode()
        same_image = digest == self.disk_hash
        # FILE.bin holds what the last save was given, and few blocks changed since: in place
        in_place = (not same_image and blocks is not None and self.disk_hash is not None
                    and self.disk_hash == given_before and len(blocks) * HASH_BLOCK <= IN_PLACE_SHARE * len(image))
        if in_place:
            assert blocks is not None  # in_place requires them
            self._write_synced(self.journal_path, _journal(image, blocks, digest))
        elif not same_image:
            self._write_synced(self.new_path, image)
        self._write_synced(self.state_tmp_path, text)
        # The staged files' names must be on disk before the commit names them: a
        # directory entry is durable only after fsync of the directory (fsync(2)).
        self._dirsync()
        self._step("rename")
        os.replace(self.state_tmp_path, self.state_path)  # the commit point
        self._dirsync()
        if same_image:
            return
        self.disk_hash = None  # until FILE.bin holds this image
        if in_place:
            assert blocks is not None
            self._write_in_place(image, blocks)
            # a journal left behind (a cut here) is harmless: load uses it only for a
            # state that names an image FILE.bin does not hold, and then removes it
            self._step("unlink")
            self.journal_path.unlink(missing_ok=True)
        else:
            self._step("rename")
            os.replace(self.new_path, self.path)
            self._dirsync()
        self.disk_hash = digest

    def _write_in_place(self, image, blocks: list[int]) -> None:
        """Write these HASH_BLOCKs of ``image`` over FILE.bin's, fsync it."""
        view = memoryview(image).cast("B")

        def tear():  # the power went mid-way: the first half of the blocks arrived
            fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                for b in blocks[:len(blocks) // 2]:
                    os.pwrite(fd, view[b * HASH_BLOCK:(b + 1) * HASH_BLOCK], b * HASH_BLOCK)
            finally:
                os.close(fd)

        self._step("write", tear)
        fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            for b in blocks:
                offset = b * HASH_BLOCK
                chunk = view[offset:offset + HASH_BLOCK]
                while chunk:
                    n = os.pwrite(fd, chunk, offset)
                    chunk, offset = chunk[n:], offset + n
            self._step("fsync")
            os.fsync(fd)
        finally:
            os.close(fd)

    def _hash(self, image, changed, granule: int) -> tuple[str, list[int] | None]:
        """image_hash(image), rehashing only the blocks ``changed`` flags when the digests of the
        image given last are known; and those blocks' numbers (None: all were hashed)."""
        view = memoryview(image).cast("B")
        digests = self._digests
        count = -(-len(view) // HASH_BLOCK)
        blocks: list[int] | None = None
        if changed is None or digests is None or len(digests) != count or HASH_BLOCK % granule:
            digests = block_digests(view)
        else:
            digests, blocks = list(digests), []
            per_block = HASH_BLOCK // granule
            sha256 = hashlib.sha256
            pos = changed.find(1) if isinstance(changed, (bytes, bytearray)) else -1
            while pos >= 0:
                block = pos // per_block
                start = block * HASH_BLOCK
                digests[block] = sha256(view[start:start + HASH_BLOCK]).digest()
                blocks.append(block)
                pos = changed.find(1, (block + 1) * per_block)
        self._digests = digests
        self._given_hash = list_hash(digests)
        return self._given_hash, blocks

    def _write_synced(self, path: Path, data: bytes | bytearray | memoryview) -> None:
        def tear():  # the power went while the bytes were on their way: half of them arrived
            with open(path, "wb") as f:
                f.write(data[:len(data) // 2])

        self._step("write", tear)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            self._step("fsync")
            os.fsync(fd)
        finally:
            os.close(fd)

    def _dirsync(self) -> None:
        """fsync the directory, so the renames in it survive a power cut (rename(2) alone does not)."""
        self._step("dirsync")
        fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _journal(image, blocks: list[int], digest: str) -> bytes:
    """An in-place save's redo journal: a JSON line (the image's hash and size, the block
    numbers), then those blocks' new bytes."""
    view = memoryview(image).cast("B")
    head = json.dumps({"image_sha256": digest, "size": len(view), "blocks": blocks}).encode() + b"\n"
    return head + b"".join(view[b * HASH_BLOCK:(b + 1) * HASH_BLOCK] for b in blocks)


def _replay(image: bytes, journal: bytes, want: str) -> tuple[bytes, list[int]] | None:
    """``image`` with the journal's blocks written over it, when the journal is the one of the
    save that made ``want`` (whether the result really hashes to it is the caller's check)."""
    try:
        end = journal.index(b"\n")
        head = json.loads(journal[:end])
        blocks = [int(b) for b in head["blocks"]]
        if head["image_sha256"] != want or head["size"] != len(image):
            return None
    except (ValueError, KeyError, TypeError):
        return None
    data, out, pos = memoryview(journal)[end + 1:], bytearray(image), 0
    for b in blocks:
        start = b * HASH_BLOCK
        n = min(HASH_BLOCK, len(out) - start)
        if not 0 <= start < len(out) or pos + n > len(data):
            return None
        out[start:start + n] = data[pos:pos + n]
        pos += n
    return bytes(out), blocks


def _read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _command() -> str:
    """argv[0..2], the program's name without its directory: 'bootkit serve dfu'."""
    argv = list(sys.argv[:3]) or ["python"]
    argv[0] = _program(argv[0]) or "python"
    return " ".join(argv)


def _program(path: str) -> str:
    """The program's name: 'bootkit' for python -m bootkit (argv[0] is .../bootkit/__main__.py)."""
    base = os.path.basename(path)
    if base == "__main__.py":
        return os.path.basename(os.path.dirname(path)) or base
    return base


def _command_of(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")[:3]
    except OSError:
        return "?"
    argv[0] = _program(argv[0].decode(errors="replace")).encode()
    return " ".join(a.decode(errors="replace") for a in argv if a) or "?"


def _flock_holders(inode: int) -> list[int]:
    """PIDs holding a flock on this inode, from Linux's /proc/locks (empty elsewhere).

    Lines read '1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF'; waiters
    ('1: -> FLOCK ...') are skipped (fs/locks.c, lock_get_status()).
    """
    pids = []
    try:
        with open("/proc/locks") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 6 or parts[1] != "FLOCK":
                    continue
                try:
                    ino = int(parts[5].rsplit(":", 1)[1])
                    pid = int(parts[4])
                except (IndexError, ValueError):
                    continue
                if ino == inode and pid > 0:
                    pids.append(pid)
    except OSError:
        pass
    return pids
