"""The mass-storage personality as the registry sees it: a UF2 drive (plus .BIN/.HEX
when the product asks)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import DEMO, DIALECTS, NAME
from ...contracts import DeviceOptions, Link, Personality, option

if TYPE_CHECKING:
    from ...contracts import Found
    from ...formats.image import Image
    from ...memory import Chip, MemoryIO
    from ...usb.device import Device
    from ..common import DialectFacts, FlashResult

FILE_KINDS = ("uf2", "bin", "hex")  # what a drive can take dropped on it (drop.ACCEPTABLE)


def _uf2_family(value: Any) -> tuple[str, str] | None:
    from ...formats.uf2 import FAMILIES, family_id

    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return (f"expected a family name or a 32-bit id, got {value!r}",
                "rp2040, nrf52840, stm32f4, ... or 0x00000001-0xFFFFFFFF")
    try:
        number = family_id(value)
    except ValueError:
        return f"unknown UF2 family {value!r}", ", ".join(sorted(FAMILIES)) + " or a 32-bit id"
    if number == 0:
        return "0 is not a family id", "0x00000001-0xFFFFFFFF or a family name"
    return None


def _family_number(value: int | str) -> int:
    from ...formats.uf2 import family_id

    return family_id(value)


@dataclass(frozen=True)
class MscOptions(DeviceOptions):
    """A UF2 drive: what it accepts, its family, its volume; and how the host watches it leave."""

    accept: tuple[str, ...] = option(("uf2",), help="the file kinds the drive accepts (the dialect's own is "
                                                    "always added)", kind="list", allowed=FILE_KINDS,
                                     table="protection", device_only=True, cli="--accept")
    family: int | None = option(help="the UF2 family id (default: the chip's)", kind="any", hex=True,
                                check=_uf2_family, convert=_family_number, key="uf2_family", device_only=True)
    # FAT volume label: 11 bytes, upper case, no characters FAT forbids
    volume_label: str | None = option(help="the FAT volume label", pattern=r"[A-Z0-9 _\-!#$%&'()@^`{}~]{1,11}",
                                      allowed="1-11 characters: A-Z 0-9 space _ - ! # $ % & ' ( ) @ ^ ` { } ~",
                                      device_only=True)
    accept_no_family: bool = option(False, help="also take UF2 blocks without a family id", device_only=True,
                                    product=False)
    board_id: str | None = option(help="Board-ID in INFO_UF2.TXT", device_only=True, product=False)
    url: str | None = option(help="where INDEX.HTM points", device_only=True, product=False)
    vendor: str | None = option(help="the SCSI INQUIRY vendor", device_only=True, product=False)
    leave_delay: float = option(1.0, help="seconds between a complete update and the reset", min=0.0, max=60.0,
                                device_only=True, product=False)
    min_volume_bytes: int | None = option(help="the smallest volume the drive presents", min=0,
                                          device_only=True, product=False)
    fmt: str | None = option(help="the kind of file the host drops (default: UF2 when the drive takes it)",
                             allowed=FILE_KINDS, host_only=True, product=False, cli="--as")
    leave_wait: float | None = option(help="seconds the host waits for the drive to leave", min=0.0, max=3600.0,
                                      host_only=True, product=False)
    again: float | None = option(help="seconds the host waits for what replaces the drive to appear", min=0.0,
                                 max=3600.0, host_only=True, product=False)


class MscHost:
    """bootkit.classes.msc.host behind the one HostSide signature (``link.path``: a mounted drive)."""

    def flash(self, image: Image, link: Link, *, dialect: str | None = None, chip: Chip | None = None,
              options: DeviceOptions | None = None, progress: bool | None = None, memory: str = "flash",
              verify: bool = True, leave: bool = True, force: bool = False) -> FlashResult:
        from . import host

        link.check(PERSONALITY.name, PERSONALITY.link_fields)
        o = PERSONALITY.options_or_default(dialect, options)
        assert isinstance(o, MscOptions)
        return host.flash(image, link.backend, drive=link.path, vid=link.vid, pid=link.pid, serial=link.serial,
                          dialect=dialect, chip=chip, progress=progress, fmt=o.fmt, force=force,
                          timeout=o.leave_wait, again=o.again, memory=memory, verify=verify, leave=leave)

    def read(self, link: Link, *, dialect: str | None = None, chip: Chip | None = None,
             options: DeviceOptions | None = None, start: int | None = None, length: int | None = None,
             memory: str = "flash", progress: bool | None = None) -> Image:
        from ..common import ImageRejected
        from . import host

        link.check(PERSONALITY.name, PERSONALITY.link_fields)
        PERSONALITY.options_or_default(dialect, options)
        if memory != "flash":
            raise ImageRejected(f"a UF2 drive holds flash only, not {memory}")
        return host.read(link.backend, drive=link.path, vid=link.vid, pid=link.pid, serial=link.serial, chip=chip,
                         start=start, length=length, progress=progress)

    # -- bootkit.contracts.Verbs: a UF2 drive verifies by CURRENT.UF2; it has no erase nor leave request

    def erase(self, link: Link, *, dialect: str | None = None, chip: Chip | None = None,
              options: DeviceOptions | None = None, progress: bool | None = None) -> str:
        from ...contracts import OptionError

        raise OptionError("a UF2 drive has no erase command (each block written replaces its flash): "
                          "flash writes what it needs")

    def verify(self, image: Image, link: Link, *, dialect: str | None = None, chip: Chip | None = None,
               options: DeviceOptions | None = None, progress: bool | None = None, memory: str = "flash") -> str:
        from ..common import HostError
        from ..native import first_difference

        back = self.read(link, dialect=dialect, chip=chip, options=options, start=image.start,
                         length=image.end - image.start, memory=memory, progress=progress)  # CURRENT.UF2
        for address, data in image.segments:
            got = back.crop(address, address + len(data))
            if got.size != len(data):  # what was not read is not verified (no 0xFF filling in)
                raise HostError(f"verify failed at 0x{address + got.size:X}: the device returned {got.size} "
                                f"of the {len(data)} bytes from 0x{address:X}")
            differs = first_difference(address, data, got.tobytes(address, address + len(data)))
            if differs:
                raise HostError(differs)
        return f"{image.size} bytes equal to a read-back of 0x{image.start:X}-0x{image.end - 1:X}"

    def reset(self, link: Link, *, dialect: str | None = None, chip: Chip | None = None,
              options: DeviceOptions | None = None) -> str:
        from ...contracts import OptionError

        raise OptionError("a UF2 drive has no leave request: it starts the application after the last block "
                          "of a copy (flash, drop)")


class Msc(Personality):
    name = NAME
    order = 50
    summary = "a USB flash drive: drop a UF2 (or BIN/HEX) file on it; every OS mounts it"
    dialects = DIALECTS
    options = {"uf2": MscOptions, "bin": MscOptions, "hex": MscOptions}
    demo = DEMO
    # leave soon after the last block (a real drive waits ~1 s for the host's last writes), late
    # enough for the host to read a BIN file back from CURRENT.UF2 first
    demo_options = {"leave_delay": 0.5}
    # an emulated drive leaves soon after the last block (a real one waits about a second
    # for the host's last FAT writes)
    emulated_options = {"leave_delay": 0.2}
    link_fields = ("path",)
    commands = ("drop",)
    cli_examples = {
        "flash": ["bootkit flash fw.uf2 --via msc --emulate rp2040 --image flash.bin --force"],
        "read": ["bootkit read current.uf2 --via msc --emulate rp2040 --image flash.bin"],
        "serve": ["bootkit serve --product examples/products/rp2040-uf2.toml"],
    }

    def default_dialect(self, chip: Chip) -> str:
        return "uf2"

    def bootloader_device(self, memory: MemoryIO, chip: Chip, dialect: str, options: DeviceOptions) -> Device:
        from . import DEFAULT_URL, bootloader_device

        assert isinstance(options, MscOptions)
        return bootloader_device(memory, chip, dialect=dialect, accept=options.accept,
                                 volume_label=options.volume_label, family=options.family,
                                 accept_no_family=options.accept_no_family, board_id=options.board_id,
                                 url=options.url or DEFAULT_URL, vendor=options.vendor or "bootkit",
                                 leave_delay=options.leave_delay, min_volume_bytes=options.min_volume_bytes,
                                 **options.usb_ids())

    def host(self) -> MscHost:
        return MscHost()

    def add_commands(self, subparsers: Any) -> None:
        from .cli import add_commands

        add_commands(subparsers)

    def find_devices(self, backend: Any = None, *, local: bool = True) -> list[Found]:
        from .finder import find

        return find(backend, local=local)

    def facts(self) -> tuple[DialectFacts, ...]:
        from .facts import FACTS

        return tuple(FACTS)

    def check_product(self, check: Any, product: Any) -> None:
        """A UF2 family must be the chip's own when the chip has one."""
        family = product.settings.get("family")
        own = product.chip.uf2_family
        if family is not None and own is not None and family != own:
            check.fail("msc.uf2_family", f"0x{family:08X} conflicts with the chip's family 0x{own:08X} "
                                         f"({product.chip.name})", f"0x{own:08X}, or omit it")


PERSONALITY = Msc()
