"""The CDC personality as the registry sees it: a CDC-ACM serial port speaking AVR109
(LUFA's CDC bootloader, Arduino's Caterina)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import DEMO, DIALECTS, NAME
from ...contracts import DeviceOptions, Link, Personality, option

if TYPE_CHECKING:
    from ...formats.image import Image
    from ...memory import Chip, MemoryIO
    from ...usb.device import Device
    from ..common import DialectFacts, FlashResult

_LEAVE_HELP = "seconds without host traffic before leaving for a valid application (false: never)"


@dataclass(frozen=True)
class CdcOptions(DeviceOptions):
    """LUFA's CDC bootloader: it never leaves by itself."""

    # AVR109 'S': a 7-character software identifier (LUFACDC, CATERIN, AVRBOOT)
    software_id: str | None = option(help="the AVR109 software identifier ('S')", pattern=r"[ -~]{7}",
                                     allowed="7 printable ASCII characters", device_only=True)
    timeout: float | None = option(None, help=_LEAVE_HELP, min=0.1, max=3600.0, kind="number", none=False,
                                   device_only=True)
    baudrate: int = option(57600, help="the serial port's baud rate (a CDC port ignores it)", min=300,
                           max=4_000_000, host_only=True, product=False)
    touch: bool = option(True, help="open the port at 1200 baud first when the application is running "
                                    "(Arduino's touch)", host_only=True, product=False)
    leave_wait: float = option(5.0, help="seconds the host waits for the device to leave", min=0.0,
                               max=3600.0, host_only=True, product=False)


@dataclass(frozen=True)
class CaterinaOptions(CdcOptions):
    """Caterina leaves for a valid sketch after 8 s without host traffic (TIMEOUT_PERIOD)."""

    timeout: float | None = option(8.0, help=_LEAVE_HELP, min=0.1, max=3600.0, kind="number", none=False,
                                   device_only=True)


class CdcHost:
    """bootkit.classes.cdc.host behind the one HostSide signature (a serial port, or found by VID:PID)."""

    def flash(self, image: Image, link: Link, *, dialect: str | None = None, chip: Chip | None = None,
              options: DeviceOptions | None = None, progress: bool | None = None, memory: str = "flash",
              verify: bool = True, leave: bool = True, force: bool = False) -> FlashResult:
        from . import host

        link.check(PERSONALITY.name, PERSONALITY.link_fields)
        o = PERSONALITY.options_or_default(dialect, options)
        assert isinstance(o, CdcOptions)
        return host.flash(image, link.backend, port=link.port, vid=link.vid, pid=link.pid, serial=link.serial,
                          dialect=dialect, chip=chip, memory=memory, verify=verify, leave=leave, progress=progress,
                          baudrate=o.baudrate, touch=o.touch, force=force, leave_wait=o.leave_wait)

    def read(self, link: Link, *, dialect: str | None = None, chip: Chip | None = None,
             options: DeviceOptions | None = None, start: int | None = None, length: int | None = None,
             memory: str = "flash", progress: bool | None = None) -> Image:
        from . import host

        link.check(PERSONALITY.name, PERSONALITY.link_fields)
        o = PERSONALITY.options_or_default(dialect, options)
        assert isinstance(o, CdcOptions)
        return host.read(link.backend, port=link.port, vid=link.vid, pid=link.pid, serial=link.serial,
                         dialect=dialect, chip=chip, memory=memory, start=start, length=length, progress=progress,
                         baudrate=o.baudrate, touch=o.touch)


class Cdc(Personality):
    name = NAME
    order = 30
    summary = "a CDC-ACM serial port speaking AVR109: LUFA's CDC bootloader, Arduino's Caterina; avrdude"
    dialects = DIALECTS
    options = {"lufa": CdcOptions, "caterina": CaterinaOptions}
    demo = DEMO
    triggers = frozenset({"baud1200"})  # Arduino's 1200-baud touch needs a serial port
    link_fields = ("port",)
    serial_emulation = True  # avrdude and the host side reach an emulated device on a pty
    cli_examples = {
        "flash": ["bootkit flash fw.elf --memory eeprom --via cdc --emulate atmega32u4 --image flash.bin",
                  "bootkit flash fw.hex --via cdc --port /dev/ttyACM0 --chip atmega32u4"],
        "read": ["bootkit read back.hex --via cdc --port /dev/ttyACM0 --chip atmega32u4"],
        "serve": ["bootkit serve cdc --chip atmega32u4 --transport pty"],
    }

    def default_dialect(self, chip: Chip) -> str:
        from . import default_dialect

        return default_dialect(chip)

    def bootloader_device(self, memory: MemoryIO, chip: Chip, dialect: str, options: DeviceOptions) -> Device:
        from . import bootloader_device

        assert isinstance(options, CdcOptions)
        return bootloader_device(memory, chip, dialect=dialect, software_id=options.software_id,
                                 timeout=options.timeout, **options.usb_ids())

    def application_device(self, memory: MemoryIO, chip: Chip, dialect: str,
                           options: DeviceOptions) -> Device | None:
        from . import application_device

        return application_device(memory, chip, dialect=dialect, vid=options.vid, pid=options.pid,
                                  serial=options.serial)

    def host(self) -> CdcHost:
        return CdcHost()

    def run_demo_row(self, dialect: str, chip: Chip, image: Image) -> dict[str, Any] | None:
        """Through the host client into an emulated board served on a pty."""
        from .host import run_demo_row

        return run_demo_row(dialect, chip, image)

    def facts(self) -> tuple[DialectFacts, ...]:
        from .facts import FACTS

        return tuple(FACTS)


PERSONALITY = Cdc()
