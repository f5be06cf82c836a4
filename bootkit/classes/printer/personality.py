"""The printer personality as the registry sees it: print an Intel HEX file to flash
the device (LUFA's printer bootloader)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import DEMO, DIALECTS, NAME
from ...contracts import DeviceOptions, Link, OptionError, Personality, option

if TYPE_CHECKING:
    from ...contracts import Found
    from ...formats.image import Image
    from ...memory import Chip, MemoryIO
    from ...usb.device import Device
    from ..common import DialectFacts, FlashResult

_DEVICE_ID_EXAMPLE = "\"MFG:Generic;MDL:Generic_/_Text_Only;CMD:1284.4;CLS:PRINTER;\""


def _ieee1284_id(value: str) -> tuple[str, str] | None:
    """An IEEE 1284 device id needs MFG: and MDL: (or MANUFACTURER:, MODEL:) keys."""
    keys = {part.split(":", 1)[0].strip().upper() for part in value.split(";") if ":" in part}
    if {"MFG", "MDL"} <= keys or {"MANUFACTURER", "MODEL"} <= keys:
        return None
    return ("an IEEE 1284 device id needs MFG: and MDL: (or MANUFACTURER:, MODEL:)",
            f"e.g. {_DEVICE_ID_EXAMPLE}")


@dataclass(frozen=True)
class PrinterOptions(DeviceOptions):
    """LUFA's printer bootloader: what it tells the host it is, and when a job counts as cut off."""

    device_id: str | None = option(help="the IEEE 1284 string GET_DEVICE_ID returns", max_len=1021,
                                   check=_ieee1284_id, device_only=True,
                                   allowed=f"an IEEE 1284 id with MFG: and MDL: keys, e.g. {_DEVICE_ID_EXAMPLE}")
    # 1 unidirectional, 2 bidirectional (USB printer class 4.2)
    protocol: int = option(2, help="bInterfaceProtocol: 1 unidirectional, 2 bidirectional", min=1, max=2,
                           device_only=True)
    job_timeout: float | None = option(5.0, help="seconds without data after which an open job counts as cut "
                                                 "off", min=0.1, max=3600.0, kind="number", device_only=True)
    leave: bool = option(True, help="start the application after a good job", device_only=True, product=False)
    leave_delay: float = option(0.5, help="seconds between the job's status and the reset", min=0.0, max=60.0,
                                device_only=True, product=False)
    record_size: int = option(16, help="data bytes per Intel HEX record of a printed image", min=1, max=255,
                              host_only=True, product=False)
    leave_wait: tuple[float, float] | None = option(help="seconds the host waits for the device to leave, and "
                                                         "for what replaces it to appear", host_only=True,
                                                    product=False)


class PrinterHost:
    """bootkit.classes.printer.host behind the one HostSide signature (``link.path``: /dev/usb/lpN)."""

    def flash(self, image: Image, link: Link, *, dialect: str | None = None, chip: Chip | None = None,
              options: DeviceOptions | None = None, progress: bool | None = None, memory: str = "flash",
              verify: bool = True, leave: bool = True, force: bool = False) -> FlashResult:
        from . import host

        link.check(PERSONALITY.name, PERSONALITY.link_fields)
        PERSONALITY.check_dialect(dialect)
        o = PERSONALITY.options_or_default(dialect, options)
        assert isinstance(o, PrinterOptions)
        if not leave:
            raise OptionError("the printer bootloader starts the application after a good job: it cannot stay")
        if not verify:
            raise OptionError("the printer host side always compares the device's CRC-32 of the job: "
                              "it cannot skip verification")
        return host.flash(image, link.backend, printer=link.path, vid=link.vid, pid=link.pid, serial=link.serial,
                          chip=chip, progress=progress, record_size=o.record_size, force=force, memory=memory,
                          wait=o.leave_wait)

    def read(self, link: Link, *, dialect: str | None = None, chip: Chip | None = None,
             options: DeviceOptions | None = None, start: int | None = None, length: int | None = None,
             memory: str = "flash", progress: bool | None = None) -> Image:
        from . import host

        return host.read(link.backend)  # raises HostError: a printer only receives jobs

    # -- bootkit.contracts.Verbs: a printer only receives jobs

    def erase(self, link: Link, *, dialect: str | None = None, chip: Chip | None = None,
              options: DeviceOptions | None = None, progress: bool | None = None) -> str:
        from ...contracts import OptionError

        raise OptionError("the printer bootloader has no erase command (a job erases what it writes): "
                          "flash sends the job")

    def verify(self, image: Image, link: Link, *, dialect: str | None = None, chip: Chip | None = None,
               options: DeviceOptions | None = None, progress: bool | None = None, memory: str = "flash") -> str:
        from ...contracts import OptionError

        raise OptionError("a printer only receives jobs: it cannot be read back (flash verifies by the CRC-32 "
                          "the device reports for its job)")

    def reset(self, link: Link, *, dialect: str | None = None, chip: Chip | None = None,
              options: DeviceOptions | None = None) -> str:
        from ...contracts import OptionError

        # the class's SOFT_RESET (USB Printer Class 1.1, 4.2.3) only flushes the device's buffers
        raise OptionError("the printer bootloader has no leave request: it starts the application after a "
                          "good job (flash)")


class Printer(Personality):
    name = NAME
    order = 40
    summary = "a plain text printer: print an Intel HEX file to flash (LUFA's printer bootloader)"
    dialects = DIALECTS
    options = {"lufa": PrinterOptions}
    demo = DEMO
    link_fields = ("path",)
    commands = ("print",)
    cli_examples = {
        "flash": ["bootkit flash fw.hex --via printer --emulate atmega32u4"],
        "serve": ["bootkit serve printer --chip at90usb1286 --transport functionfs"],
    }

    def default_dialect(self, chip: Chip) -> str:
        return "lufa"

    def bootloader_device(self, memory: MemoryIO, chip: Chip, dialect: str, options: DeviceOptions) -> Device:
        from . import bootloader_device

        assert isinstance(options, PrinterOptions)
        return bootloader_device(memory, chip, dialect=dialect, device_id=options.device_id,
                                 protocol=options.protocol, job_timeout=options.job_timeout, leave=options.leave,
                                 leave_delay=options.leave_delay, **options.usb_ids())

    def host(self) -> PrinterHost:
        return PrinterHost()

    def add_commands(self, subparsers: Any) -> None:
        from .cli import add_commands

        add_commands(subparsers)

    def find_devices(self, backend: Any = None, *, local: bool = True) -> list[Found]:
        from .finder import find

        return find(backend, local=local)

    def facts(self) -> tuple[DialectFacts, ...]:
        from .facts import FACTS

        return tuple(FACTS)


PERSONALITY = Printer()
