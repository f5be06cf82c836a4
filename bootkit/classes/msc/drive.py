"""A mounted UF2 drive: the file written with os.write and flushed to the device
(``F_FULLFSYNC`` on macOS), then the drive watched until it goes."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from ...formats.image import Image
from ...formats.uf2 import UF2_BLOCK_SIZE
from ...progress import phase, progress_bar, ticking
from ..common import FlashResult
from ..usbhost import CAME_BACK, STAYED, Arrival, LeaveWatch, Look
from .bot import MscError
from .plan import FILE_NAMES, app_from_current, parse_info, plan_drop
from .readback import file_current, hold_back, placeholder, read_back, verify_before_last, verify_last, why_stayed


def full_sync(fd: int) -> None:
    os.fsync(fd)
    if sys.platform == "darwin":
        import fcntl

        # macOS fsync stops at the drive's cache; F_FULLFSYNC asks the drive to flush (fcntl(2))
        try:
            fcntl.fcntl(fd, getattr(fcntl, "F_FULLFSYNC", 51))
        except OSError:
            pass


COPY_CHUNK = 64 * 1024  # bytes per os.write: the copy's bar moves as the drive takes the file


def flash_drive(image: Image, drive: Path, *, requested, chip, force, timeout, again, verify=True,
                progress=None) -> FlashResult:
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
        app = app_from_current(first)
        if app is not None:
            current = file_current(current_path, first)
    drop = plan_drop(image, info, app, chip, requested, force)
    path = drive / FILE_NAMES[drop.kind]
    steps = [f"{drive}: {info.get('version', 'UF2 drive') if info else 'drive'}",
             f"{path.name}: {len(drop.payload)} bytes"]
    hold = hold_back(drop, current, verify)
    payload = drop.payload
    at = hold[1] if hold else 0
    last = payload[at:at + UF2_BLOCK_SIZE] if hold else b""
    if hold:
        payload = payload[:at] + placeholder(last) + payload[at + UF2_BLOCK_SIZE:]

    def present() -> bool:
        try:
            return info_path.exists() if info is not None else os.path.ismount(drive)
        except OSError:
            return False

    checked = ""
    again_spans: list[tuple[int, int]] = []
    try:
        # Written with os.write, not shutil.copy: no extended attributes or
        # resource forks (macOS Finder copies them, and Ventura's failed on UF2 drives).
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(payload)
            with progress_bar(f"copying {path.name}", len(payload), progress) as advance:
                while view:
                    n = os.write(fd, view[:COPY_CHUNK])
                    view = view[n:]
                    advance(n)
            full_sync(fd)
            if hold:
                checked, again_spans = verify_before_last(hold[0], drop)
                phase("copying the last block")
                os.pwrite(fd, last, at)
                full_sync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        # the drive may vanish right after the last block (its reset): looked at below
        if present():
            raise MscError(f"{path}: {exc}") from None
        checked = checked or "not verified: the drive left before its last block was read back"
    if not checked:
        checked = verify_last(hold[0], drop, again_spans) if hold else read_back(current, drop, verify)
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

    # A real board takes seconds to reset and its drive to unmount: the wait is a bar in
    # seconds (it showed nothing for up to 15 s), ticked from the watch's own looks.
    with progress_bar(f"waiting for {drive} to leave", max(1, round(timeout)), progress, unit="s") as tick:
        out = LeaveWatch(ticking(look, tick), wait=timeout, again=again, interval=0.1).run()
    if out.seen == CAME_BACK:
        raise MscError(f"{STAYED}: {drive} came back after the copy")
    if out.stayed:
        raise MscError(f"{STAYED}: {why_stayed(drop, current, chip, timeout)}")
    steps.append(out.step)
    return FlashResult(drop.kind, drop.expected.size, time.perf_counter() - t0,
                       checked.startswith("CURRENT.UF2 read back"), steps)
