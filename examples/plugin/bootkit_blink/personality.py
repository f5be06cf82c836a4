"""The blink personality as bootkit's registry sees it.

Registered in this package's pyproject.toml, exactly as bootkit registers its
own::

    [project.entry-points."bootkit.personalities"]
    blink = "bootkit_blink.personality:PERSONALITY"

This module is what ``bootkit --help``, product profiles and ``bootkit
choose`` load: names, dialects, options.  The device side (device.py) and the
host side (host.py, pyusb) are imported only when they are used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from bootkit.contracts import DeviceOptions, Link, Personality, option

if TYPE_CHECKING:
    from bootkit.classes.common import DialectFacts, FlashResult
    from bootkit.formats.image import Image
    from bootkit.memory import Chip, MemoryIO
    from bootkit.usb.device import Device

DIALECT = "ep0"  # bootkit_blink.protocol.DIALECT (not imported here: this module stays small)


@dataclass(frozen=True)
class BlinkOptions(DeviceOptions):
    """The one dialect's settings: one for the device, one for the host."""

    max_transfer: int = option(1024, help="the longest WRITE/READ data stage the device takes (its info record "
                                          "says so; Linux usbfs allows 4096)", min=8, max=4096, device_only=True)
    leave_wait: float | None = option(help="seconds the host watches the bus after LEAVE (default 5 s, "
                                           "0.5 s on the in-process bus)", min=0.0, max=3600.0, host_only=True,
                                      product=False)


class BlinkHost:
    """bootkit_blink.host behind the one HostSide signature."""

    def flash(self, image: Image, link: Link, *, dialect: str | None = None, chip: Chip | None = None,
              options: DeviceOptions | None = None, progress: bool | None = None, memory: str = "flash",
              verify: bool = True, leave: bool = True, force: bool = False) -> FlashResult:
        from . import host

        link.check(PERSONALITY.name, PERSONALITY.link_fields)
        o = PERSONALITY.options_or_default(PERSONALITY.check_dialect(dialect), options)
        assert isinstance(o, BlinkOptions)
        return host.flash(image, link.backend, vid=link.vid, pid=link.pid, serial=link.serial, chip=chip,
                          memory=memory, verify=verify, leave=leave, progress=progress, wait=link.wait,
                          force=force, leave_wait=o.leave_wait)

    def read(self, link: Link, *, dialect: str | None = None, chip: Chip | None = None,
             options: DeviceOptions | None = None, start: int | None = None, length: int | None = None,
             memory: str = "flash", progress: bool | None = None) -> Image:
        from . import host

        link.check(PERSONALITY.name, PERSONALITY.link_fields)
        PERSONALITY.options_or_default(PERSONALITY.check_dialect(dialect), options)
        return host.read(link.backend, vid=link.vid, pid=link.pid, serial=link.serial, chip=chip, memory=memory,
                         start=start, length=length, progress=progress, wait=link.wait)


class Blink(Personality):
    name = "blink"
    order = 100
    summary = "an example plug-in: a vendor-class interface driven by control transfers on endpoint 0"
    dialects = (DIALECT,)
    options = {DIALECT: BlinkOptions}
    demo = ((DIALECT, "sample-stm32f103c8"), (DIALECT, "sample-atmega32u4"))
    link_fields = ("wait",)
    cli_examples = {"serve": ["bootkit serve blink --chip stm32f103c8 --transport usbip"],
                    "flash": ["bootkit flash fw.hex --via blink --usbip 127.0.0.1"]}

    def default_dialect(self, chip: Chip) -> str:
        return DIALECT

    def bootloader_device(self, memory: MemoryIO, chip: Chip, dialect: str, options: DeviceOptions) -> Device:
        from bootkit.usb.device import Device

        from .device import BlinkEngine, BlinkFunction

        assert isinstance(options, BlinkOptions)
        return Device(_info(chip, options, "bootloader"),
                      [BlinkFunction(BlinkEngine(memory, max_transfer=options.max_transfer))])

    def application_device(self, memory: MemoryIO, chip: Chip, dialect: str,
                           options: DeviceOptions) -> Device | None:
        """The application enumerates with the same ids and a run-time interface (DETACH)."""
        from bootkit.usb.device import Device

        from .device import BlinkAppFunction

        return Device(_info(chip, options, "application"), [BlinkAppFunction()])

    def host(self) -> BlinkHost:
        return BlinkHost()

    def facts(self) -> tuple[DialectFacts, ...]:
        from .facts import FACTS

        return tuple(FACTS)


def _info(chip: Chip, options: DeviceOptions, what: str):
    from bootkit.usb.descriptors import DeviceInfo

    from . import protocol as P

    return DeviceInfo(options.vid if options.vid is not None else P.BLINK_VID,
                      options.pid if options.pid is not None else P.BLINK_PID,
                      options.bcd_device if options.bcd_device is not None else 0x0100,
                      manufacturer=options.manufacturer or "bootkit-plugin-blink",
                      product=options.product or f"{chip.name} blink {what}", serial=options.serial)


PERSONALITY = Blink()
