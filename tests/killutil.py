"""Helpers for the real-process tests of issue 17: `bootkit serve` and host commands run as
separate processes (``sys.executable -m bootkit``, this checkout first on the import path),
killed with SIGKILL, and the image file they leave judged by loading it as the next process
would.

Waits: every wait here only ends a hung test, it never decides a result.  They are derived
from the measured start-up time of this interpreter with bootkit (see :func:`startup_seconds`),
with a floor of 30 s so a loaded 2-core machine is never mistaken for a hang.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from functools import lru_cache
from pathlib import Path

from bootkit.formats import Image
from bootkit.memory import get_chip
from bootkit.memory.flash import SimulatedFlash

CHECKOUT = Path(__file__).resolve().parents[1]

# What the serve processes print once they are ready (cli.cmd_serve and the transports).
USBIP_READY = re.compile(r"usbip: exporting \S+ on [\d.]+:(\d+)")
PTY_READY = re.compile(r"serving USB device \S+ on (/dev/pts/\d+)")


def env() -> dict:
    """The environment for a child: this checkout first on the import path, so the code under
    test is what runs (the editable install may point at another clone)."""
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(CHECKOUT)] + ([e["PYTHONPATH"]] if e.get("PYTHONPATH") else []))
    return e


def command(*args) -> list[str]:
    return [sys.executable, "-m", "bootkit", *map(str, args)]


@lru_cache(maxsize=None)
def startup_seconds() -> float:
    """How long one `bootkit` process takes to start and run a trivial command here, now."""
    t = time.monotonic()
    subprocess.run(command("chips"), env=env(), capture_output=True, check=True, timeout=300)
    return time.monotonic() - t


def hang_limit() -> float:
    """The longest any single step (a server starting, a flash) may take before the test calls
    it hung: 100 process start-ups, at least 30 s.  A flash here is a fraction of a second."""
    return max(30.0, 100 * startup_seconds())


def run(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(command(*args), env=env(), cwd=cwd, capture_output=True, text=True,
                          timeout=hang_limit())


def start(*args, cwd) -> subprocess.Popen:
    return subprocess.Popen(command(*args), env=env(), cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def stop(proc: subprocess.Popen) -> tuple[str, str]:
    """SIGKILL a child (if still running) and collect its output."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=hang_limit())
    return out, err


class Server:
    """`bootkit serve ...` in a child process; its stdout read by a thread, each line stamped
    with the monotonic time it arrived, so a test can act a measured delay after an event."""

    def __init__(self, *args, cwd, ready: re.Pattern):
        self.args = args
        self.proc = start("serve", *args, cwd=cwd)
        self.lines: list[tuple[float, str]] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.address = self.wait_for(ready).group(1)

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append((time.monotonic(), line.rstrip("\n")))
                self._cond.notify_all()
        with self._cond:
            self.lines.append((time.monotonic(), None))  # end of output
            self._cond.notify_all()

    def mark(self) -> int:
        """An index into the lines: wait_for(..., after=mark) only sees lines printed later."""
        with self._cond:
            return len(self.lines)

    def wait_for(self, pattern: re.Pattern | str, after: int = 0) -> re.Match:
        """The first line matching ``pattern`` from index ``after`` on; its arrival time is
        ``self.when``."""
        pattern = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + hang_limit()
        i = after
        with self._cond:
            while True:
                while i < len(self.lines):
                    when, line = self.lines[i]
                    i += 1
                    if line is None:
                        raise AssertionError(f"serve {' '.join(self.args)} ended (rc {self.proc.wait()}) before "
                                             f"printing {pattern.pattern!r}: {self.output()!r} "
                                             f"{self.proc.stderr.read()!r}")
                    m = pattern.search(line)
                    if m:
                        self.when = when
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"serve {' '.join(self.args)} did not print {pattern.pattern!r} "
                                         f"within {hang_limit():.0f} s: {self.output()!r}")
                self._cond.wait(left)

    def output(self) -> str:
        return "\n".join(line for _, line in self.lines if line is not None)

    def kill(self) -> str:
        """SIGKILL: no handler runs, nothing is written back at exit.  Returns stderr."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=hang_limit())
        self._reader.join(timeout=hang_limit())
        err = self.proc.stderr.read()
        self.proc.stderr.close()
        return err


# ----------------------------------------------------------------------------------------------
# images


BOOT_PATTERN = bytes(range(256))


def make_image(path: Path, chip_name: str) -> bytes:
    """A fresh FILE.bin: the bootloader region filled with a pattern (so "never changes" can
    fail: an erase would leave 0xFF), the rest erased, no state file.  Returns the bytes."""
    chip = get_chip(chip_name)
    data = bytearray(b"\xff" * chip.flash_size)
    for ps, pe in chip.layout().protected:
        for a in range(max(ps, chip.flash_start), min(pe, chip.flash_start + chip.flash_size)):
            data[a - chip.flash_start] = BOOT_PATTERN[a % 256]
    path.write_bytes(bytes(data))
    return bytes(data)


def expected_flash(base: bytes, chip_name: str, image: Image) -> bytes:
    """The whole flash after a complete flash of ``image`` over ``base``, for images that all
    cover the same erase units (so what is outside them is the base, erased or bootloader)."""
    chip = get_chip(chip_name)
    ref = bytearray(base)
    for ps, pe in chip.layout().application_ranges("flash"):
        ref[ps - chip.flash_start:pe - chip.flash_start] = b"\xff" * (pe - ps)
    for start, data in image.segments:
        ref[start - chip.flash_start:start - chip.flash_start + len(data)] = data
    return bytes(ref)


def protected_bytes(data: bytes, chip_name: str) -> bytes:
    chip = get_chip(chip_name)
    return b"".join(data[ps - chip.flash_start:pe - chip.flash_start] for ps, pe in chip.layout().protected)


def load(path: Path, chip_name: str) -> tuple[bytes, bool]:
    """(flash bytes, application valid) as the next process opening FILE.bin sees them."""
    try:
        flash = SimulatedFlash(get_chip(chip_name), path, readonly=True)  # a shared lock, writes nothing
    except TypeError:  # the code before issue 17 (no read-only mode), so these tests can run against it
        flash = SimulatedFlash(get_chip(chip_name), path)
    try:
        return flash.flash_bytes(), flash.app_valid
    finally:
        flash.close()


# ----------------------------------------------------------------------------------------------
# locks


def lock_holders(*paths: Path) -> list[tuple[int, str]]:
    """(pid, READ/WRITE) of every lock /proc/locks lists on one of ``paths`` (flock, POSIX or
    OFD; an OFD lock's pid reads -1).  /proc/locks names a file by device and inode (proc(5))."""
    inodes = set()
    for p in paths:
        try:
            st = os.stat(p)
        except FileNotFoundError:
            continue
        inodes.add((os.major(st.st_dev), os.minor(st.st_dev), st.st_ino))
    found = []
    with open("/proc/locks") as f:
        for line in f:
            # "1: FLOCK  ADVISORY  WRITE 4242 08:01:1234567 0 EOF" (a "->" line is a waiter)
            fields = line.split()
            if "->" in fields:
                continue
            try:
                kind, pid, dev = fields[3], int(fields[4]), fields[5]
                major, minor, ino = dev.split(":")
                key = (int(major, 16), int(minor, 16), int(ino))
            except (IndexError, ValueError):
                continue
            if key in inodes:
                found.append((pid, kind))
    return found


def lock_files(image: Path) -> list[Path]:
    """The files a lock on FILE.bin may be taken on: FILE.bin.lock (the design) or FILE.bin."""
    return [image.with_name(image.name + ".lock"), image]


def stop_while_locked(proc: subprocess.Popen, image: Path, kind: str) -> bool:
    """SIGSTOP ``proc`` while /proc/locks shows it holding a ``kind`` (READ/WRITE) lock on
    ``image``: a deterministic "at once" for a second process.  False if it ended first (the
    caller tries again) or never held such a lock."""
    while proc.poll() is None:
        if (proc.pid, kind) in lock_holders(*lock_files(image)):
            proc.send_signal(signal.SIGSTOP)
            while _state(proc.pid) not in ("T", "Z", "X", None):  # the stop is delivered asynchronously
                time.sleep(0.0005)
            if (proc.pid, kind) in lock_holders(*lock_files(image)):
                return True
            proc.send_signal(signal.SIGCONT)  # it let go between the two looks
        time.sleep(0.0005)
    return False


def _state(pid: int) -> str | None:
    """The process state letter from /proc/PID/stat (proc(5)): 'T' once stopped."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return None
