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

This module is the entry (:func:`flash`, :func:`read`); the Bulk-Only
Transport client is in ``bot``, the SCSI disk in ``scsi``, the pyfatfs
adapter in ``fatfs``, what to drop in ``plan``, the read-back of
CURRENT.UF2 in ``readback`` and the mounted-drive path in ``drive``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import usb.core

from ...formats.image import FormatError, Image
from ...formats.uf2 import UF2_BLOCK_SIZE, UF2Block
from ...memory import Chip
from ...progress import phase, progress_bar, ticking
from ..common import FlashResult, ImageRejected
from ..usbhost import CAME_BACK, STAYED, LeaveWatch, UsbLook, bus_snapshot, gone, in_process
from .bot import BotClient, MscError, MscTarget, find_devices
from .drive import flash_drive
from .fatfs import BlockFile, mount
from .plan import FILE_NAMES, app_from_current, parse_info, plan_drop
from .protocol import MSC_CLASS, MSC_SUBCLASS_SCSI
from .readback import drop_page_cache, hold_back, placeholder, read_back, scsi_current, verify_before_last, verify_last, why_stayed
from .scsi import ScsiDisk


LEAVE_WAIT_IN_PROCESS = 2.0  # s: the emulated drive leaves 0.05-0.2 s after the last block ...


AGAIN_IN_PROCESS = 0.3  # ... and what replaces it is there at once


AGAIN = 5.0  # s a real board gets to come back as its application


def flash(image: Image, backend=None, *, drive=None, vid=None, pid=None, serial=None, dialect=None,
          chip: Chip | None = None, progress=None, fmt=None, force: bool = False, timeout: float | None = None,
          again: float | None = None, memory: str = "flash", verify: bool = True,
          leave: bool = True) -> FlashResult:
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
        return flash_drive(image, Path(drive), requested=fmt or dialect, chip=chip, force=force,
                            timeout=15.0 if timeout is None else timeout, again=AGAIN if again is None else again,
                            verify=verify, progress=progress)
    t0 = time.perf_counter()
    wait = (LEAVE_WAIT_IN_PROCESS if in_process(backend) else 15.0) if timeout is None else timeout
    again = (AGAIN_IN_PROCESS if in_process(backend) else AGAIN) if again is None else again
    target = _find_one(backend, vid, pid, serial)
    steps = [target.describe()]
    disk = _open_disk(target)
    # Look first, read-only (pyfatfs marks a writable volume dirty at mount):
    # nothing is written before the image is known to fit.
    looking = mount(BlockFile(disk, writable=False), read_only=True)
    info = None
    if looking.exists("/INFO_UF2.TXT"):
        info = parse_info(looking.readbytes("/INFO_UF2.TXT").decode("ascii", "replace"))
        steps.append(f"INFO_UF2.TXT: {info.get('version', '?')}, board {info.get('Board-ID', '?')}")
    app = current = None
    if looking.exists("/CURRENT.UF2"):
        with looking.openbin("/CURRENT.UF2", "r") as f:
            first = f.read(UF2_BLOCK_SIZE)
        app = app_from_current(first)
        if app is not None:
            current = scsi_current(disk, looking, first)
    looking.close()
    drop = plan_drop(image, info, app, chip, fmt or dialect, force)
    name = "/" + FILE_NAMES[drop.kind]
    steps.append(f"{name[1:]}: {len(drop.payload)} bytes")
    hold = hold_back(drop, current, verify)
    payload = drop.payload
    last = b""
    if hold:
        at = hold[1]
        last = payload[at:at + UF2_BLOCK_SIZE]
        payload = payload[:at] + placeholder(last) + payload[at + UF2_BLOCK_SIZE:]
    before = bus_snapshot(backend)
    block = BlockFile(disk)
    block.watch = placeholder(last) if hold else None
    volume = mount(block)
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
        unread, again_spans = verify_before_last(hold[0], drop)
        phase("copying the last block")
        try:
            disk.write(block.watched[0], last)
            disk.synchronize()
        except (usb.core.USBError, MscError) as exc:
            if not (gone(exc) and _left_now(backend, target)):
                raise MscError(f"copy failed: the last block: {exc}") from None
        checked = unread or verify_last(hold[0], drop, again_spans)
    else:
        checked = read_back(current, drop, verify)
    steps.append(checked)
    seconds = time.perf_counter() - t0  # the copy and its read-back, not the watch after it
    with progress_bar("waiting for the drive to leave", max(1, round(wait)), progress, unit="s") as tick:
        steps.append(_outcome(backend, target, before, wait, again,
                              lambda: why_stayed(drop, current, chip, wait), tick))
    return FlashResult(drop.kind, drop.expected.size, seconds, checked.startswith("CURRENT.UF2 read back"), steps)


def _is_uf2_drive(dev) -> bool:
    """A device with a SCSI mass-storage interface: a drive with its bootloader's ids is the bootloader."""
    try:
        return any((i.bInterfaceClass, i.bInterfaceSubClass) == (MSC_CLASS, MSC_SUBCLASS_SCSI)
                   for cfg in dev for i in cfg)
    except (usb.core.USBError, ValueError):
        return False


def _outcome(backend, target: MscTarget, before: dict | None, wait: float, again: float, why,
             tick=lambda n=1: None) -> str:
    """What happened after the copy, as seen on the bus.

    - the drive left and another device appeared: "application started (came back as VVVV:PPPP)";
    - it left and nothing came back within ``again`` s: "left the bootloader (not seen again within N s)";
    - it is still there after ``wait`` s, or came back as the same drive: MscError
      "the device stayed in its bootloader: <why>".
    """
    look = UsbLook(backend, target.device, before, bootloader=_is_uf2_drive)
    out = LeaveWatch(ticking(look, tick), wait=wait, again=again, interval=0.02).run()
    if out.seen == CAME_BACK and out.arrival is not None:
        raise MscError(f"{STAYED}: it came back as its bootloader drive ({out.arrival.vid:04X}:{out.arrival.pid:04X})")
    if out.stayed:
        raise MscError(f"{STAYED}: {why()}")
    return out.step


def read(backend=None, *, drive=None, vid=None, pid=None, serial=None, dialect: str | None = None,
         chip=None, memory: str = "flash", start=None, length=None, progress=None) -> Image:
    """The application as CURRENT.UF2 holds it (cropped to ``start``/``length`` when given).

    Every dialect reads the same CURRENT.UF2; ``dialect`` is only checked to be one."""
    if dialect is not None and dialect not in FILE_NAMES:
        raise ImageRejected(f"unknown mass-storage dialect {dialect!r} (choose from {', '.join(FILE_NAMES)})")
    if memory != "flash":
        raise ImageRejected(f"a UF2 drive holds flash only, not {memory}")
    if drive is not None:
        source = open(Path(drive) / "CURRENT.UF2", "rb")
        try:
            drop_page_cache(source.fileno())
            image = parse_stream(source, os.fstat(source.fileno()).st_size, progress)
        finally:
            source.close()
    else:
        target = _find_one(backend, vid, pid, serial)
        volume = mount(BlockFile(_open_disk(target), writable=False), read_only=True)
        if not volume.exists("/CURRENT.UF2"):
            raise MscError("the drive has no CURRENT.UF2")
        size = volume.getinfo("/CURRENT.UF2", namespaces=["details"]).size
        with volume.openbin("/CURRENT.UF2", "r") as f:
            image = parse_stream(f, size, progress)
    if start is not None or length is not None:
        lo = image.start if start is None else start
        hi = image.end if length is None else lo + length
        image = image.crop(lo, hi)
    return image


def parse_stream(f, size: int, progress) -> Image:
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


__all__ = ["flash", "read"]
