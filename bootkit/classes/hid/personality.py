"""The HID personality as the registry sees it: PJRC HalfKay, LUFA's HID bootloader, bootkit's raw HID."""

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


def _known_mcu(value: str) -> tuple[str, str] | None:
    from .protocol import HALFKAY_MCUS

    if value.lower() in HALFKAY_MCUS:
        return None
    return f"unknown HalfKay MCU {value!r}", ", ".join(HALFKAY_MCUS)


@dataclass(frozen=True)
class HidOptions(DeviceOptions):
    """Every HID dialect: how long the host watches the bus after the boot command."""

    leave_wait: float | None = option(help="seconds the host watches the bus after the boot command "
                                           "(default 5 s, 0.5 s on the in-process bus)", min=0.0, max=3600.0,
                                      host_only=True, product=False)


@dataclass(frozen=True)
class HalfKayOptions(HidOptions):
    """HalfKay: the Teensy MCU decides the block size and the bootloader region."""

    mcu: str | None = option(help="the Teensy MCU, as teensy_loader_cli --mcu names it", check=_known_mcu,
                             convert=str.lower, cli="--mcu")


@dataclass(frozen=True)
class LufaHidOptions(HidOptions):
    """LUFA's HID bootloader: optionally an interrupt OUT endpoint."""

    interrupt_out: bool = option(False, help="add an interrupt OUT endpoint to the interface", device_only=True)


@dataclass(frozen=True)
class XusbOptions(HidOptions):
    """xusb-boot: the prototype's USB ids, the MCU string, the watchdog period."""

    prototype_ids: bool = option(False, help="enumerate as the prototype 6666:B007 instead of 1209:BB01",
                                 device_only=True)
    mcu_string: str | None = option(help="the boot info's MCU string (default: the chip's name)", max_len=31,
                                    device_only=True)
    watchdog: float | None = option(2.0, help="seconds without an SOF before the bootloader's watchdog "
                                              "resets the chip (WATCH_DOG_PERIOD; false: never)",
                                    min=0.1, max=60.0, kind="number", none=False,
                                    device_only=True)


class HidHost:
    """bootkit.classes.hid.host behind the one HostSide signature."""

    def flash(self, image: Image, link: Link, *, dialect: str | None = None, chip: Chip | None = None,
              options: DeviceOptions | None = None, progress: bool | None = None, memory: str = "flash",
              verify: bool = True, leave: bool = True, force: bool = False) -> FlashResult:
        from . import host

        link.check(PERSONALITY.name, PERSONALITY.link_fields)
        o = PERSONALITY.options_or_default(dialect, options)
        assert isinstance(o, HidOptions)
        return host.flash(image, link.backend, vid=link.vid, pid=link.pid, serial=link.serial, dialect=dialect,
                          chip=chip, mcu=_mcu(o), memory=memory, verify=verify, leave=leave, progress=progress,
                          wait=link.wait, force=force, leave_wait=o.leave_wait)

    def read(self, link: Link, *, dialect: str | None = None, chip: Chip | None = None,
             options: DeviceOptions | None = None, start: int | None = None, length: int | None = None,
             memory: str = "flash", progress: bool | None = None) -> Image:
        from . import host

        link.check(PERSONALITY.name, PERSONALITY.link_fields)
        o = PERSONALITY.options_or_default(dialect, options)
        return host.read(link.backend, vid=link.vid, pid=link.pid, serial=link.serial, dialect=dialect, chip=chip,
                         mcu=_mcu(o), memory=memory, start=start, length=length, progress=progress, wait=link.wait)

    # -- bootkit.contracts.Verbs: bootkit erase / verify / reset

    def _open(self, link: Link, dialect: str | None, chip: Chip | None, options: DeviceOptions | None,
              progress: bool | None = None) -> Any:
        from . import host

        link.check(PERSONALITY.name, PERSONALITY.link_fields)
        o = PERSONALITY.options_or_default(dialect, options)
        return host.open_dialect(link.backend, vid=link.vid, pid=link.pid, serial=link.serial, dialect=dialect,
                                 chip=chip, mcu=_mcu(o), progress=progress, wait=link.wait)

    def erase(self, link: Link, *, dialect: str | None = None, chip: Chip | None = None,
              options: DeviceOptions | None = None, progress: bool | None = None) -> str:
        from ...contracts import OptionError
        from .host import NativeHost, XusbHost

        d = self._open(link, dialect, chip, options, progress)
        if not isinstance(d, (NativeHost, XusbHost)):
            # HalfKay erases the chip on the first block it is sent, LUFA's HID bootloader page by page
            raise OptionError(f"the {d.name} bootloader has no erase command (it erases as it is written): "
                              "flash erases what it needs")
        d.erase()  # native ERASE / xusb-boot ERASE: the application section only
        return d.steps[-1]

    def verify(self, image: Image, link: Link, *, dialect: str | None = None, chip: Chip | None = None,
               options: DeviceOptions | None = None, progress: bool | None = None, memory: str = "flash") -> str:
        from ...contracts import OptionError
        from . import host
        from .host import NativeHost, XusbHost

        d = self._open(link, dialect, chip, options, progress)
        if not d.can_verify:
            raise OptionError(f"the {d.name} bootloader has no read or CRC command: nothing to compare with")
        d.validate(image, memory)
        try:
            d.verify(image)  # HidError naming the first difference (native) or the CRCs (xusb)
        except host.HidError as exc:
            if isinstance(d, XusbHost) and "ERROR_NOT_ERASED" in str(exc):
                # boot_protocol.c answers CRC only once an ERASE ran since the bootloader started
                # (no read-out of an application it did not just write): flash verifies by it
                raise host.HidError("xusb-boot computes its CRC only after an ERASE since it started "
                                    "(ERROR_NOT_ERASED): flash verifies by it, a later verify cannot") from None
            raise
        if isinstance(d, XusbHost):
            return d.steps[-1] + " (xusb-boot cannot be read back: its NVM CRC is the comparison)"
        assert isinstance(d, NativeHost)
        return (f"{image.size} bytes equal to a read-back of 0x{image.start:X}-0x{image.end - 1:X}, "
                "and the application CRC-32 to the image's on erased flash")

    def reset(self, link: Link, *, dialect: str | None = None, chip: Chip | None = None,
              options: DeviceOptions | None = None) -> str:
        from . import host

        link.check(PERSONALITY.name, PERSONALITY.link_fields)
        o = PERSONALITY.options_or_default(dialect, options)
        assert isinstance(o, HidOptions)
        return host.boot(link.backend, vid=link.vid, pid=link.pid, serial=link.serial, dialect=dialect, chip=chip,
                         mcu=_mcu(o), wait=link.wait, leave_wait=o.leave_wait)


def _mcu(options: DeviceOptions) -> str | None:
    return options.mcu if isinstance(options, HalfKayOptions) else None


class Hid(Personality):
    name = NAME
    order = 20
    summary = ("HID bootloaders: PJRC HalfKay (Teensy), LUFA's HID bootloader, bootkit's raw HID, "
               "xusb-boot (xmega); no driver")
    dialects = DIALECTS
    options = {"halfkay": HalfKayOptions, "lufa": LufaHidOptions, "native": HidOptions, "xusb": XusbOptions}
    triggers = frozenset({"reset-button", "watchdog"})  # xusb-boot's (memory.entry)
    demo = DEMO
    link_fields = ("wait",)
    cli_examples = {
        "flash": ["bootkit flash fw.hex --via hid --mcu atmega32u4 --wait 10"],
        "read": ["bootkit read back.hex --via hid --dialect native --emulate atmega32u4"],
        "serve": ["bootkit serve hid --chip atmega32u4 --dialect halfkay --transport usbip",
                  "bootkit serve hid --chip atxmega128a4u --dialect xusb --transport functionfs"],
    }

    def default_dialect(self, chip: Chip) -> str:
        from . import default_dialect

        return default_dialect(chip)

    def chip_for(self, chip: Chip, dialect: str | None) -> Chip:
        from . import chip_for

        return chip_for(chip, dialect)

    def chip_named(self, name: str) -> Chip | None:
        from .protocol import chip_named

        try:
            return chip_named(name)
        except KeyError:
            return None

    def bootloader_device(self, memory: MemoryIO, chip: Chip, dialect: str, options: DeviceOptions) -> Device:
        from . import bootloader_device

        if isinstance(options, XusbOptions):
            return bootloader_device(memory, chip, dialect=dialect, mcu=options.mcu_string,
                                     prototype_ids=options.prototype_ids, watchdog=options.watchdog,
                                     **options.usb_ids())
        return bootloader_device(memory, chip, dialect=dialect, mcu=_mcu(options),
                                 interrupt_out=options.interrupt_out if isinstance(options, LufaHidOptions)
                                 else False, **options.usb_ids())

    def entry_triggers(self, dialect: str) -> frozenset[str] | None:
        """xusb-boot enters as its README says (blank flash, magic word, reset button, watchdog)."""
        from ...memory.entry import XUSB_TRIGGERS

        return XUSB_TRIGGERS if dialect == "xusb" else None

    def host(self) -> HidHost:
        return HidHost()

    def list_devices(self, backend: Any) -> list[str]:
        from .host import list_devices

        return list_devices(backend)

    def find_devices(self, backend: Any = None, *, local: bool = True) -> list[Found]:
        from .finder import find

        return find(backend, local=local)

    def facts(self) -> tuple[DialectFacts, ...]:
        from .facts import FACTS

        return tuple(FACTS)

    def check_product(self, check: Any, product: Any) -> None:
        """HalfKay's bootloader size is the MCU's; its --mcu must be the product's chip."""
        if product.dialect != "halfkay":
            return
        if product.boot_size_given:
            check.fail("protection.bootloader_size", "conflicts with dialect halfkay, whose bootloader size is "
                                                     "fixed by the MCU (512 B or 1 KiB)", "omit it for halfkay")
        mcu = product.settings.get("mcu")
        if mcu is not None and mcu.lower() != product.chip.name.lower():
            check.fail("hid.mcu", f"{mcu!r} conflicts with product.chip {product.chip.name!r}", product.chip.name)


PERSONALITY = Hid()
