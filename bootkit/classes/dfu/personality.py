"""The DFU personality as the registry sees it: DFU 1.1, ST DfuSe and Atmel FLIP."""

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


def _can_download(value: int) -> tuple[str, str] | None:
    # bmAttributes: bitCanDnload, bitCanUpload, bitManifestationTolerant, bitWillDetach (DFU 1.1 4.1.3)
    if value & 0x01:
        return None
    return f"0x{value:02X} lacks bitCanDnload (0x01): nothing could be flashed", "0x01-0x0F with bit 0 set"


@dataclass(frozen=True)
class DfuOptions(DeviceOptions):
    """DFU 1.1 and DfuSe: the device's functional descriptor, the host's alternate setting."""

    transfer_size: int | None = option(help="wTransferSize (a u16); the host's when the device does not say "
                                            "(dfu-util -t)", min=1, max=0xFFFF, cli="--transfer-size")
    attributes: int | None = option(help="bmAttributes of the DFU functional descriptor", min=0x00, max=0x0F,
                                    hex=True, check=_can_download, device_only=True)
    alt: int | None = option(help="the DFU alternate setting to talk to", min=0, max=255, host_only=True,
                             cli="--alt", product=False)
    leave_timeout: float = option(5.0, help="seconds the host watches the bus after leaving", min=0.0,
                                  max=3600.0, host_only=True, product=False)
    will_detach: bool = option(False, help="the application's run-time interface sets bitWillDetach",
                               device_only=True, product=False)
    detach_timeout: int = option(1000, help="wDetachTimeOut (ms) of the run-time interface", min=0, max=0xFFFF,
                                 device_only=True, product=False)


@dataclass(frozen=True)
class FlipOptions(DfuOptions):
    """Atmel FLIP (LUFA's DFU bootloader): plus its secure mode."""

    secure: bool = option(False, help="secure mode: a chip erase before anything else (LUFA SECURE_MODE)",
                          device_only=True)


class DfuHost:
    """bootkit.classes.dfu.host behind the one HostSide signature."""

    def flash(self, image: Image, link: Link, *, dialect: str | None = None, chip: Chip | None = None,
              options: DeviceOptions | None = None, progress: bool | None = None, memory: str = "flash",
              verify: bool = True, leave: bool = True, force: bool = False) -> FlashResult:
        from . import host

        link.check(PERSONALITY.name)
        o = PERSONALITY.options_or_default(dialect, options)
        assert isinstance(o, DfuOptions)
        return host.flash(image, link.backend, vid=link.vid, pid=link.pid, serial=link.serial, dialect=dialect,
                          alt=o.alt, chip=chip, memory=memory, verify=verify, leave=leave, progress=progress,
                          transfer_size=o.transfer_size, force=force, leave_timeout=o.leave_timeout)

    def read(self, link: Link, *, dialect: str | None = None, chip: Chip | None = None,
             options: DeviceOptions | None = None, start: int | None = None, length: int | None = None,
             memory: str = "flash", progress: bool | None = None) -> Image:
        from . import host

        link.check(PERSONALITY.name)
        o = PERSONALITY.options_or_default(dialect, options)
        assert isinstance(o, DfuOptions)
        return host.read(link.backend, vid=link.vid, pid=link.pid, serial=link.serial, dialect=dialect, alt=o.alt,
                         chip=chip, memory=memory, start=start, length=length, progress=progress,
                         transfer_size=o.transfer_size)

    # -- bootkit.contracts.FuseAccess: FLIP reads the signature; no DFU dialect has fuses (dfu/fuses.py)

    def signature(self, link: Link, *, dialect: str | None = None, chip: Chip | None = None,
                  options: DeviceOptions | None = None) -> bytes:
        from . import fuses

        link.check(PERSONALITY.name)
        o = PERSONALITY.options_or_default(dialect, options)
        assert isinstance(o, DfuOptions)
        return fuses.signature(link.backend, vid=link.vid, pid=link.pid, serial=link.serial, dialect=dialect,
                               alt=o.alt, chip=chip, transfer_size=o.transfer_size)

    def read_fuses(self, link: Link, *, dialect: str | None = None, chip: Chip | None = None,
                   options: DeviceOptions | None = None) -> dict[str, int]:
        from . import fuses

        return fuses.read_fuses(dialect)

    def write_fuses(self, link: Link, values: dict[str, int], *, dialect: str | None = None,
                    chip: Chip | None = None, options: DeviceOptions | None = None) -> dict[str, int]:
        from . import fuses

        return fuses.write_fuses(values, dialect)

    # -- bootkit.contracts.Verbs: bootkit erase / verify / reset

    def _open(self, link: Link, dialect: str | None, chip: Chip | None, options: DeviceOptions | None,
              progress: bool | None = None) -> Any:
        from . import host

        link.check(PERSONALITY.name)
        o = PERSONALITY.options_or_default(dialect, options)
        assert isinstance(o, DfuOptions)
        return host.open_dialect(link.backend, vid=link.vid, pid=link.pid, serial=link.serial, dialect=dialect,
                                 alt=o.alt, chip=chip, progress=progress, transfer_size=o.transfer_size)

    def erase(self, link: Link, *, dialect: str | None = None, chip: Chip | None = None,
              options: DeviceOptions | None = None, progress: bool | None = None) -> str:
        import struct

        from ...contracts import OptionError
        from ...progress import progress_bar
        from .dialects import DfuSe, Flip
        from .protocol import DFUSE_ERASE

        d = self._open(link, dialect, chip, options, progress)
        if isinstance(d, Flip):
            d.erase()  # FLIP 04 00 FF: LUFA erases the application section only (BootloaderDFU.c)
            return f"application section of {d.chip.name} erased (FLIP chip erase)"
        if not isinstance(d, DfuSe):
            raise OptionError("plain DFU 1.1 has no erase command (the device erases as it downloads): "
                              "use --dialect dfuse or flip, or flash")
        # every erasable sector of the alternate setting's layout outside the bootloader region,
        # one DfuSe ERASE (0x41 + address) each, as dfu-util erases the sectors it writes
        protected = d.chip.layout().protected if d.chip is not None else ()
        sectors = [start for region in d.regions if region.erasable for start, size in region.sector_bounds()
                   if not any(p0 < start + size and start < p1 for p0, p1 in protected)]
        d.client.make_idle()
        with progress_bar("erase", len(sectors), progress, unit="sectors") as bar:
            for start in sectors:
                d._command(struct.pack("<BI", DFUSE_ERASE, start), f"erase sector 0x{start:X}")
                bar(1)
        return f"{len(sectors)} sectors of \"{d.mem_name}\" erased"

    def verify(self, image: Image, link: Link, *, dialect: str | None = None, chip: Chip | None = None,
               options: DeviceOptions | None = None, progress: bool | None = None, memory: str = "flash") -> str:
        from ..native import first_difference
        from .client import DfuError

        back = self.read(link, dialect=dialect, chip=chip, options=options, start=image.start,
                         length=image.end - image.start, memory=memory, progress=progress)
        for seg_start, data in image.segments:
            got = back.crop(seg_start, seg_start + len(data))
            if got.size != len(data):  # what was not read back is not verified (no 0xFF filling in)
                raise DfuError(f"verify failed at 0x{seg_start + got.size:X}: the device returned {got.size} "
                               f"of the {len(data)} bytes from 0x{seg_start:X}")
            differs = first_difference(seg_start, data, got.tobytes(seg_start, seg_start + len(data)))
            if differs:
                raise DfuError(differs)
        return f"{image.size} bytes equal to a read-back of 0x{image.start:X}-0x{image.end - 1:X}"

    def reset(self, link: Link, *, dialect: str | None = None, chip: Chip | None = None,
              options: DeviceOptions | None = None) -> str:
        from ...formats.image import Image as _Image
        from ..usbhost import bus_snapshot
        from . import host

        o = PERSONALITY.options_or_default(dialect, options)
        assert isinstance(o, DfuOptions)
        d = self._open(link, dialect, chip, options, False)
        before = bus_snapshot(link.backend)
        d.leave()  # DfuSe: jump to the first region's start (dfu-util -s ADDR:leave), FLIP: launch, DFU: reset
        return host.observe_leave(d, before, _Image(), o.leave_timeout)


class Dfu(Personality):
    name = NAME
    order = 10
    summary = "USB DFU 1.1, ST DfuSe and Atmel FLIP: dfu-util, STM32CubeProgrammer, dfu-programmer"
    dialects = DIALECTS
    options = {"dfu": DfuOptions, "dfuse": DfuOptions, "flip": FlipOptions}
    demo = DEMO
    read_protection = ("dfuse", "flip")
    cli_examples = {
        "flash": ["bootkit flash fw.hex --via dfu --emulate atmega32u4 --image flash.bin",
                  "bootkit flash fw.bin --via dfu --dialect dfuse --address 0x08000000",
                  "bootkit flash fw.hex --via dfu --device 03eb:2ff4",
                  "bootkit flash fw.img --format bin --via dfu --chip stm32f411 --device 0483:df11"],
        "read": ["bootkit read back.hex --via dfu --emulate atmega32u4 --image flash.bin",
                 "bootkit read back.bin --via dfu --device 0483:df11 --start 0x08000000 --length 65536"],
        "serve": ["bootkit serve dfu --chip stm32f411 --image flash.bin --transport functionfs",
                  "bootkit serve dfu --chip atmega32u4 --dialect flip --transport usbip"],
        "signature": ["bootkit signature --via dfu --emulate atmega32u4",
                      "bootkit signature --via dfu --dialect flip --device 03eb:2ff4"],
    }

    def default_dialect(self, chip: Chip) -> str:
        from . import default_dialect

        return default_dialect(chip)

    def bootloader_device(self, memory: MemoryIO, chip: Chip, dialect: str, options: DeviceOptions) -> Device:
        from . import bootloader_device

        assert isinstance(options, DfuOptions)
        return bootloader_device(memory, chip, dialect=dialect, transfer_size=options.transfer_size,
                                 attributes=options.attributes,
                                 secure=options.secure if isinstance(options, FlipOptions) else False,
                                 **options.usb_ids())

    def application_device(self, memory: MemoryIO, chip: Chip, dialect: str,
                           options: DeviceOptions) -> Device | None:
        from . import application_device

        assert isinstance(options, DfuOptions)
        return application_device(memory, chip, vid=options.vid, pid=options.pid, serial=options.serial,
                                  will_detach=options.will_detach, detach_timeout=options.detach_timeout)

    def host(self) -> DfuHost:
        return DfuHost()

    def list_devices(self, backend: Any) -> list[str]:
        from .finder import find_interfaces

        return [item.describe() for item in find_interfaces(backend)]

    def find_devices(self, backend: Any = None, *, local: bool = True) -> list[Found]:
        from .finder import find

        return find(backend, local=local)

    def facts(self) -> tuple[DialectFacts, ...]:
        from .facts import FACTS

        return tuple(FACTS)


PERSONALITY = Dfu()
