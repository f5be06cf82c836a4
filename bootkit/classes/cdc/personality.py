"""The CDC personality as the registry sees it: a serial port speaking AVR109 (LUFA's CDC
bootloader, Arduino's Caterina), STK500 v1 (Optiboot) or STK500 v2 (the wiring bootloader)."""

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
    from ..common import DialectFacts, FlashResult, HostError

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


@dataclass(frozen=True)
class UartBootloaderOptions(DeviceOptions):
    """A bootloader on the UART of an AVR without USB, behind the board's USB-serial bridge."""

    timeout: float | None = option(1.0, help="seconds without a byte before the bootloader starts a present "
                                            "application (false: never)", min=0.01, max=3600.0, kind="number",
                                   none=False, device_only=True)
    baudrate: int = option(115200, help="the serial port's baud rate (the board's bootloader: 115200)", min=300,
                           max=4_000_000, host_only=True, product=False)


@dataclass(frozen=True)
class OptibootOptions(UartBootloaderOptions):
    """Optiboot (Arduino Uno): its watchdog starts the sketch 1 s after the last byte."""


@dataclass(frozen=True)
class WiringOptions(UartBootloaderOptions):
    """The Mega 2560's stk500v2 bootloader: it starts the sketch about 1 s after the last byte."""


def _uart_dialect(dialect: str | None, chip: Chip | None, options: DeviceOptions | None,
                  link: Link | None = None) -> str | None:
    """The UART dialect a host call is for: given, said by its options' class, the chip's usual
    one, or the board behind the port (an Uno's bridge is 2341:0043, a Mega 2560's 2341:0042:
    pyserial's port listing, or what this process serves on a pty); None: an AVR109 device (it
    names its own dialect)."""
    from . import UART_DIALECTS, default_dialect, default_ids

    if dialect is not None:
        return dialect if dialect in UART_DIALECTS else None
    if isinstance(options, OptibootOptions):
        return "optiboot"
    if isinstance(options, WiringOptions):
        return "wiring"
    if chip is not None and default_dialect(chip) in UART_DIALECTS:
        return default_dialect(chip)
    if chip is None and link is not None and link.port is not None:
        from .host import _port_ids

        ids = _port_ids(link.port)
        return next((d for d in UART_DIALECTS if ids == default_ids(d)), None)
    return None


def _uart_options(uart: str, dialect: str | None, options: DeviceOptions | None) -> UartBootloaderOptions:
    """The UART dialect's options: those given, or its defaults when the dialect was not named and
    the options given are another dialect's (the command line's first match, before the chip said)."""
    if dialect is None and not isinstance(options, UartBootloaderOptions):
        options = None
    o = PERSONALITY.options_or_default(uart, options)
    assert isinstance(o, UartBootloaderOptions)
    return o


def _no_fuse_write(dialect: str) -> HostError:
    from ..common import HostError

    return HostError(f"the {dialect} bootloader cannot write fuses: use an ISP programmer (bootkit serve isp)")


class CdcHost:
    """bootkit.classes.cdc.host behind the one HostSide signature (a serial port, or found by VID:PID)."""

    def flash(self, image: Image, link: Link, *, dialect: str | None = None, chip: Chip | None = None,
              options: DeviceOptions | None = None, progress: bool | None = None, memory: str = "flash",
              verify: bool = True, leave: bool = True, force: bool = False) -> FlashResult:
        from . import host

        link.check(PERSONALITY.name, PERSONALITY.link_fields)
        uart = _uart_dialect(dialect, chip, options, link)
        if uart is not None:
            u = _uart_options(uart, dialect, options)
            return host.uart_flash(image, link.backend, port=link.port, dialect=uart, chip=chip, memory=memory,
                                   verify=verify, leave=leave, progress=progress, baudrate=u.baudrate, force=force)
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
        uart = _uart_dialect(dialect, chip, options, link)
        if uart is not None:
            u = _uart_options(uart, dialect, options)
            return host.uart_read(link.backend, port=link.port, dialect=uart, chip=chip, memory=memory, start=start,
                                  length=length, progress=progress, baudrate=u.baudrate)
        o = PERSONALITY.options_or_default(dialect, options)
        assert isinstance(o, CdcOptions)
        return host.read(link.backend, port=link.port, vid=link.vid, pid=link.pid, serial=link.serial,
                         dialect=dialect, chip=chip, memory=memory, start=start, length=length, progress=progress,
                         baudrate=o.baudrate, touch=o.touch)

    # --- contracts.FuseAccess: what each bootloader can read of itself

    def signature(self, link: Link, *, dialect: str | None = None, chip: Chip | None = None,
                  options: DeviceOptions | None = None) -> bytes:
        """AVR109 's' (LUFA sends it reversed), Optiboot STK_READ_SIGN, wiring CMD_READ_SIGNATURE_ISP."""
        from . import host

        link.check(PERSONALITY.name, PERSONALITY.link_fields)
        uart = _uart_dialect(dialect, chip, options, link)
        if uart is not None:
            u = _uart_options(uart, dialect, options)
            return host.uart_identify(link.backend, port=link.port, dialect=uart, chip=chip, baudrate=u.baudrate)[0]
        o = PERSONALITY.options_or_default(dialect, options)
        assert isinstance(o, CdcOptions)
        s = host._Session(link.backend, link.port, link.vid, link.pid, link.serial, dialect, chip, False, o.baudrate,
                          o.touch)
        try:
            return s.client.signature
        finally:
            s.close()

    def read_fuses(self, link: Link, *, dialect: str | None = None, chip: Chip | None = None,
                   options: DeviceOptions | None = None) -> dict[str, int]:
        """AVR109 'F', 'N', 'Q', 'r' (the fuses the chip has, and the lock byte); wiring
        CMD_READ_FUSE_ISP and CMD_READ_LOCK_ISP.  Optiboot reads none (STK_UNIVERSAL answers 0x00)."""
        from . import host

        link.check(PERSONALITY.name, PERSONALITY.link_fields)
        uart = _uart_dialect(dialect, chip, options, link)
        if uart == "optiboot":
            from ..common import HostError

            raise HostError("the optiboot bootloader cannot read fuses (it answers 0x00 to every universal "
                            "command): use an ISP programmer (bootkit serve isp)")
        if uart is not None:
            u = _uart_options(uart, dialect, options)
            return host.uart_identify(link.backend, port=link.port, dialect=uart, chip=chip, baudrate=u.baudrate,
                                      fuses=True)[1]
        o = PERSONALITY.options_or_default(dialect, options)
        assert isinstance(o, CdcOptions)
        s = host._Session(link.backend, link.port, link.vid, link.pid, link.serial, dialect, chip, False, o.baudrate,
                          o.touch)
        try:
            values = s.client.fuses()
            target = s.client.target
        finally:
            s.close()
        names = {f.name for f in target.fuses} | {"lock"} if target.fuses else set(values)
        return {k: v for k, v in values.items() if k in names}

    def write_fuses(self, link: Link, values: dict[str, int], *, dialect: str | None = None,
                    chip: Chip | None = None, options: DeviceOptions | None = None) -> dict[str, int]:
        """No serial bootloader can write fuses (SPM reaches only the boot lock bits)."""
        uart = _uart_dialect(dialect, chip, options, link)
        raise _no_fuse_write(uart or dialect or "AVR109")

    # --- contracts.Verbs: bootkit erase / verify / reset

    def _avr109(self, link: Link, dialect: str | None, chip: Chip | None, options: DeviceOptions | None,
                progress: bool | None) -> Any:
        from . import host

        o = PERSONALITY.options_or_default(dialect, options)
        assert isinstance(o, CdcOptions)
        return host._Session(link.backend, link.port, link.vid, link.pid, link.serial, dialect, chip, progress,
                             o.baudrate, o.touch)

    def erase(self, link: Link, *, dialect: str | None = None, chip: Chip | None = None,
              options: DeviceOptions | None = None, progress: bool | None = None) -> str:
        from ...contracts import OptionError

        link.check(PERSONALITY.name, PERSONALITY.link_fields)
        uart = _uart_dialect(dialect, chip, options, link)
        if uart is not None:
            # Optiboot erases each page as it writes it; the Mega's stk500v2 reports chip erase
            # FAILED (avrdude needs -D): neither erases alone
            raise OptionError(f"the {uart} bootloader has no chip erase (it erases each page as it writes it): "
                              "flash erases what it needs")
        s = self._avr109(link, dialect, chip, options, progress)
        try:
            s.client.chip_erase()  # AVR109 'e': LUFA/Caterina erase the application section only
            return f"application section of {s.client.target.name} erased (AVR109 'e')"
        finally:
            s.close()

    def verify(self, image: Image, link: Link, *, dialect: str | None = None, chip: Chip | None = None,
               options: DeviceOptions | None = None, progress: bool | None = None, memory: str = "flash") -> str:
        from . import host

        link.check(PERSONALITY.name, PERSONALITY.link_fields)
        uart = _uart_dialect(dialect, chip, options, link)
        if uart is not None:
            u = _uart_options(uart, dialect, options)
            client, own = host._uart_session(link.backend, link.port, uart, chip, progress, u.baudrate)
            try:
                client.verify(image, memory)  # read-back, UartBootloaderError at the first difference
            finally:
                if own:
                    client.port.close()  # type: ignore[attr-defined]  # a serial.Serial it opened
        else:
            s = self._avr109(link, dialect, chip, options, progress)
            try:
                normal = host._normalise(image, memory, s.client.target)
                if memory == "flash":
                    s.client.verify_flash(normal)  # read-back ('g'), Avr109Error at the first difference
                else:
                    s.client.verify_eeprom(normal)
            finally:
                s.close()
        return f"{image.size} bytes equal to a read-back of 0x{image.start:X}-0x{image.end - 1:X}"

    def reset(self, link: Link, *, dialect: str | None = None, chip: Chip | None = None,
              options: DeviceOptions | None = None) -> str:
        from . import host

        link.check(PERSONALITY.name, PERSONALITY.link_fields)
        uart = _uart_dialect(dialect, chip, options, link)
        if uart is not None:
            u = _uart_options(uart, dialect, options)
            client, own = host._uart_session(link.backend, link.port, uart, chip, False, u.baudrate)
            try:
                return client.leave()  # what it saw after the leave request
            finally:
                if own:
                    client.port.close()  # type: ignore[attr-defined]  # a serial.Serial it opened
        o = PERSONALITY.options_or_default(dialect, options)
        assert isinstance(o, CdcOptions)
        s = self._avr109(link, dialect, chip, options, False)
        try:
            s.client.leave()  # 'L', 'E'; watch_leave says what the board then did
            return host.watch_leave(s, o.leave_wait)
        finally:
            s.close()


class Cdc(Personality):
    name = NAME
    order = 30
    summary = ("a serial port: AVR109 (LUFA's CDC bootloader, Arduino's Caterina), Optiboot (STK500 v1) and the "
               "Mega's wiring bootloader (STK500 v2); avrdude")
    dialects = DIALECTS
    options = {"lufa": CdcOptions, "caterina": CaterinaOptions, "optiboot": OptibootOptions,
               "wiring": WiringOptions}
    demo = DEMO
    triggers = frozenset({"baud1200"})  # Arduino's 1200-baud touch needs a serial port
    link_fields = ("port",)
    serial_emulation = True  # avrdude and the host side reach an emulated device on a pty
    cli_examples = {
        "flash": ["bootkit flash fw.elf --memory eeprom --via cdc --emulate atmega32u4 --image flash.bin",
                  "bootkit flash fw.hex --via cdc --port /dev/ttyACM0 --chip atmega32u4"],
        "read": ["bootkit read back.hex --via cdc --port /dev/ttyACM0 --chip atmega32u4"],
        "serve": ["bootkit serve cdc --chip atmega32u4 --transport pty",
                  "bootkit serve cdc --chip atmega328p --dialect optiboot --transport pty"],
        "signature": ["bootkit signature --via cdc --emulate atmega32u4",
                      "bootkit signature --via cdc --port /dev/ttyACM0"],
        "fuses": ["bootkit fuses read --via cdc --emulate atmega32u4",
                  "bootkit fuses read --via cdc --dialect wiring --port /dev/ttyACM0 --chip atmega2560"],
    }

    def tool_hint(self, dialect: str, chip: Chip, where: str) -> str | None:
        part = chip.aliases[0] if chip.aliases else chip.name  # avrdude's -p id (avrdude.conf)
        if dialect == "optiboot":  # avrdude -c arduino: STK500 v1 at the Uno's 115200 baud
            return f"avrdude -c arduino -p {part} -P {where} -b 115200 -U flash:w:FILE.hex:i"
        if dialect == "wiring":  # -D: the Mega's bootloader answers chip erase with FAILED
            return f"avrdude -c wiring -p {part} -P {where} -b 115200 -D -U flash:w:FILE.hex:i"
        return f"avrdude -c avr109 -p {part} -P {where} -b 57600 -U flash:w:FILE.hex:i"

    def default_dialect(self, chip: Chip) -> str:
        from . import default_dialect

        return default_dialect(chip)

    def chip_for(self, chip: Chip, dialect: str | None) -> Chip:
        """Optiboot keeps 512 B at the top (1 KiB above 64 KiB of flash)."""
        from . import chip_for

        return chip_for(chip, dialect)

    def bootloader_device(self, memory: MemoryIO, chip: Chip, dialect: str, options: DeviceOptions) -> Device:
        from . import bootloader_device

        if isinstance(options, UartBootloaderOptions):
            return bootloader_device(memory, chip, dialect=dialect, timeout=options.timeout, **options.usb_ids())
        assert isinstance(options, CdcOptions)
        return bootloader_device(memory, chip, dialect=dialect, software_id=options.software_id,
                                 timeout=options.timeout, **options.usb_ids())

    def application_device(self, memory: MemoryIO, chip: Chip, dialect: str,
                           options: DeviceOptions) -> Device | None:
        from . import application_device

        if isinstance(options, UartBootloaderOptions):
            return application_device(memory, chip, dialect=dialect, vid=options.vid, pid=options.pid,
                                      serial=options.serial, timeout=options.timeout)
        return application_device(memory, chip, dialect=dialect, vid=options.vid, pid=options.pid,
                                  serial=options.serial)

    def host(self) -> CdcHost:
        return CdcHost()

    def run_demo_row(self, dialect: str, chip: Chip, image: Image) -> dict[str, Any] | None:
        """Through the host client into an emulated board served on a pty."""
        from .host import run_demo_row

        return run_demo_row(dialect, chip, image)

    def find_devices(self, backend: Any = None, *, local: bool = True) -> list[Found]:
        from .finder import find

        return find(backend, local=local)

    def facts(self) -> tuple[DialectFacts, ...]:
        from .facts import FACTS

        return tuple(FACTS)


PERSONALITY = Cdc()
