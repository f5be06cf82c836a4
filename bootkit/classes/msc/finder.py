"""Finding UF2 drives: mounted drives holding INFO_UF2.TXT (as Microsoft's uf2conv.py
finds them: it looks for that file on every drive), and, on a bus with no kernel in
between (bootkit's in-process bus, its USB/IP client), the mass-storage interfaces of
bootkit's ids, whose INFO_UF2.TXT is read through SCSI and the FAT volume.

The dialect is what the drive takes besides UF2 (INFO_UF2.TXT's ``Accepts``, which
bootkit's drives write: ``UF2, BIN`` is the bin dialect); the chip is the one the
drive names (bootkit's ``Board-ID: <chip>-bootkit``, a Board-ID starting with the part's
name) or the only chip of the database with the drive's UF2 family.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from ...contracts import Found, Link
from ..finding import real_usb, release, usb_found

NAME = "msc"
BOOTKIT_IDS = ((0x1209, 0xB010),)  # msc.BOOTKIT_VID, BOOTKIT_MSC_PID (repeated: __init__ is the device side's)
# file systems a UF2 drive can carry: a FAT volume, seen through the kernel or FUSE; nothing else is
# looked into (an NFS mount that hangs would hang the listing)
FAT_TYPES = frozenset({"vfat", "msdos", "fat", "exfat", "fuseblk", "fuse.exfat", "fuse.fat"})


def find(backend: Any = None, *, local: bool = True) -> list[Found]:
    found: list[Found] = []
    if backend is not None and not real_usb(backend):
        found += on_bus(backend)
    if local:
        found += mounted_drives()
    return found


def _unescape(field: str) -> str:
    """A /proc/self/mounts field: space, tab, newline and backslash as octal escapes (\\040)."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mount_points(mounts: str | None = None, volumes: Path | None = None) -> list[str]:
    """Where a FAT volume is mounted: /proc/self/mounts (Linux, fstab(5)'s fields), or every
    folder of /Volumes (macOS).  ``mounts``: the table's text; ``volumes``: the folder (tests)."""
    if mounts is None and volumes is None:
        if sys.platform == "darwin":
            volumes = Path("/Volumes")
        else:
            try:
                mounts = Path("/proc/self/mounts").read_text()
            except OSError:
                return []
    points: list[str] = []
    if mounts is not None:
        for line in mounts.splitlines():
            fields = line.split()
            if len(fields) >= 3 and fields[2] in FAT_TYPES:
                points.append(_unescape(fields[1]))
    if volumes is not None:
        try:
            points += sorted(str(p) for p in volumes.iterdir() if p.is_dir())
        except OSError:
            pass
    return list(dict.fromkeys(points))


def mounted_drives(mounts: str | None = None, volumes: Path | None = None) -> list[Found]:
    """Every mounted drive with an INFO_UF2.TXT."""
    out = []
    for point in mount_points(mounts, volumes):
        info_path = os.path.join(point, "INFO_UF2.TXT")
        try:
            with open(info_path, "rb") as f:
                text = f.read(4096).decode("ascii", "replace")
        except OSError:
            continue
        from .plan import parse_info  # only now: it brings the image formats and the chip database

        info = parse_info(text)
        out.append(Found(NAME, dialect_of(info), Link(path=point), f"{point} (UF2 drive)", chip=chip_of(info),
                         details=info))
    return out


def dialect_of(info: dict[str, str]) -> str:
    accepts = [a.strip().lower() for a in info.get("Accepts", "").split(",") if a.strip()]
    others = [a for a in accepts if a in ("bin", "hex")]
    return others[0] if len(others) == 1 else "uf2"


def chip_of(info: dict[str, str]) -> str | None:
    from ...memory import CHIPS
    from .plan import family_of_drive

    board = info.get("Board-ID", "")
    if board.endswith("-bootkit"):
        name = board[:-len("-bootkit")]
        if name in {c.name for c in CHIPS}:
            return name
    # uf2-samdx1 and tinyuf2 start the Board-ID with the part ("SAMD21G18A-Feather-v0")
    key = board.strip().lower()
    named = [c.name for c in CHIPS if key.startswith(c.name.lower())]
    if named:
        return max(named, key=len)
    family, _ = family_of_drive(info)
    if family is None:
        return None
    chips = [c.name for c in CHIPS if c.uf2_family == family]
    return chips[0] if len(chips) == 1 else None


def on_bus(backend: Any) -> list[Found]:
    from ..usbhost import device_serial
    from .bot import BotClient, MscError, find_devices

    out = []
    for target in find_devices(backend):
        dev = target.device
        if (dev.idVendor, dev.idProduct) not in BOOTKIT_IDS:
            continue
        serial = device_serial(dev)
        try:
            info = _bus_info(BotClient(target))
        except (MscError, OSError) as exc:
            out.append(usb_found(NAME, None, dev, backend, serial=serial, note=f"INFO_UF2.TXT unreadable: {exc}"))
            continue
        finally:
            release(dev)
        out.append(usb_found(NAME, dialect_of(info) if info else None, dev, backend, serial=serial,
                             chip=chip_of(info) if info else None, **({"info": info} if info else {})))
    return out


def _bus_info(client: Any) -> dict[str, str] | None:
    """INFO_UF2.TXT read from the drive's FAT volume, read-only (nothing is written)."""
    from .fatfs import BlockFile, mount
    from .plan import parse_info
    from .scsi import ScsiDisk

    looking = mount(BlockFile(ScsiDisk(client), writable=False), read_only=True)
    try:
        if not looking.exists("/INFO_UF2.TXT"):
            return None
        return parse_info(looking.readbytes("/INFO_UF2.TXT").decode("ascii", "replace"))
    finally:
        looking.close()
