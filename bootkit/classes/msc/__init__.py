"""The mass-storage personality: a UF2 drive (plus .BIN/.HEX when the product asks).

The device enumerates as a USB flash drive (class 0x08, SCSI transparent,
Bulk-Only Transport) holding a ghost FAT16 volume with INFO_UF2.TXT,
INDEX.HTM and CURRENT.UF2; the user drops a firmware file on it.  Every
OS mounts it with its own driver (docs/personalities/msc.md).

Dialects name the file the host drops: ``uf2`` (Microsoft's UF2, the
default), ``bin`` (raw image at the application start) and ``hex`` (Intel
HEX).  A device always takes UF2; it takes BIN or HEX when its product
lists them in ``accept`` (the ``bin``/``hex`` dialects add themselves).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import lazy_names

from ... import __version__

# The device side is imported when a device is built, so a host client
# (bootkit flash) does not pay for it at start-up.
if TYPE_CHECKING:
    from ...memory import Chip
    from ...usb.device import Device

NAME = "msc"
DIALECTS = ("uf2", "bin", "hex")
# bootkit demo: (dialect, sample image in examples/firmware)
DEMO = (("uf2", "sample-stm32f411"), ("bin", "sample-stm32f103c8"))

BOOTKIT_VID, BOOTKIT_MSC_PID = 0x1209, 0xB010  # pid.codes test VID, bootkit's PID block
DEFAULT_URL = "https://github.com/microsoft/uf2"
DEFAULT_LEAVE_DELAY = 1.0  # seconds between the last block and the reset (see drop.py)


def default_dialect(chip: Chip) -> str:
    return "uf2"


def info_text(*, model: str, board_id: str, flash_size: int, family: int | None, accept) -> bytes:
    """INFO_UF2.TXT, in the layout uf2-samdx1 and tinyuf2 use (CRLF lines), plus what we accept."""
    lines = [f"UF2 Bootloader bootkit-{__version__}", f"Model: {model}", f"Board-ID: {board_id}",
             f"Flash Size: 0x{flash_size:08X} bytes"]
    if family is not None:
        lines.append(f"Family-ID: 0x{family:08X}")
    lines.append("Accepts: " + ", ".join(k.upper() for k in accept))
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


def index_html(url: str) -> bytes:
    # A meta refresh works with scripts disabled (tinyuf2 uses location.replace)
    return (f'<!doctype html>\n<html><head><meta http-equiv="refresh" content="0; url={url}">'
            f'</head><body><a href="{url}">{url}</a></body></html>\n').encode("ascii")


def bootloader_device(memory, chip: Chip, *, dialect: str | None = None, accept=("uf2",),
                      volume_label: str | None = None, family: int | None = None,
                      accept_no_family: bool = False, vid: int | None = None, pid: int | None = None,
                      serial: str | None = None, manufacturer: str | None = None, product: str | None = None,
                      board_id: str | None = None, url: str = DEFAULT_URL, vendor: str = "bootkit",
                      leave_delay: float = DEFAULT_LEAVE_DELAY, min_volume_bytes: int | None = None,
                      bcd_device: int | None = None) -> Device:
    """The UF2 drive as it enumerates.

    ``accept``: which of "uf2", "bin", "hex" the product takes (the dialect
    is always added); ``family``: the UF2 family id (default: the chip's);
    ``accept_no_family``: also take UF2 blocks without a family id;
    ``leave_delay``: seconds between a complete update and the reset.
    """
    from ...usb.descriptors import DeviceInfo
    from ...usb.device import Device
    from .device import BulkOnlyEngine, MscFunction, ScsiTarget
    from .drop import ACCEPTABLE, DropTarget
    from .ghostfat import GhostFat

    dialect = dialect or default_dialect(chip)
    if dialect not in DIALECTS:
        raise ValueError(f"unknown MSC dialect {dialect!r} (choose from {', '.join(DIALECTS)})")
    if isinstance(accept, str):
        accept = tuple(a.strip() for a in accept.split(","))
    accept = tuple(dict.fromkeys(("uf2",) + tuple(a.lower() for a in accept) + (dialect,)))
    bad = [a for a in accept if a not in ACCEPTABLE]
    if bad:
        raise ValueError(f"unknown file kind(s) {bad} (accept from {', '.join(ACCEPTABLE)})")
    family = chip.uf2_family if family is None else family
    app = memory.layout.application_ranges("flash")
    flash = memory.layout.flash
    app_start, app_end = app[0] if app else (flash.start, flash.start)
    product = product or f"{chip.name} UF2 bootloader"
    label = volume_label or chip.name
    board_id = board_id or f"{chip.name}-bootkit"
    files = [("INFO_UF2.TXT", info_text(model=product, board_id=board_id, flash_size=flash.size, family=family,
                                        accept=accept)),
             ("INDEX.HTM", index_html(url))]
    function_box: list[MscFunction] = []

    def signal(kind, reason="", delay=0.0):
        function_box[0].signal(kind, reason, delay)

    sink = DropTarget(memory, app_start=app_start, app_end=app_end, family=family, accept=accept,
                      accept_no_family=accept_no_family, leave_delay=leave_delay, signal=signal)
    kw = {} if min_volume_bytes is None else {"min_bytes": min_volume_bytes}
    volume = GhostFat(memory, app_start=app_start, app_size=app_end - app_start, family=family, label=label,
                      files=files, sink=sink, **kw)
    target = ScsiTarget(volume, vendor=vendor, product=product[:16], revision=__version__[:4])
    function = MscFunction(BulkOnlyEngine(target), "bootkit mass storage")
    function_box.append(function)
    sink.busy = function.busy  # the memory's busy seconds hold the drive's next transfer
    function.sink, function.volume, function.target = sink, volume, target  # for tests and logs
    info = DeviceInfo(vid if vid is not None else BOOTKIT_VID, pid if pid is not None else BOOTKIT_MSC_PID,
                      bcd_device if bcd_device is not None else 0x0100, manufacturer=manufacturer or "bootkit",
                      product=product,
                      serial=serial or f"{chip.name.upper()}0001")
    return Device(info, [function])


__getattr__ = lazy_names(__name__, {"volume_label": ".ghostfat"})


__all__ = ["NAME", "DIALECTS", "DEMO", "default_dialect", "bootloader_device",
           "info_text", "index_html", "volume_label"]
