"""The ISP programmer personality as the registry sees it: a programmer (STK500 v2 or
USBasp) with an emulated AVR on its ISP header; ``--chip`` names that target."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import DEMO, DIALECTS, NAME, SIGN_ON_NAMES
from ...contracts import DeviceOptions, Personality, option

if TYPE_CHECKING:
    from ...contracts import Found
    from ...formats.image import Image
    from ...memory import Chip, MemoryIO
    from ...usb.device import Device
    from ..common import DialectFacts
    from .host import IspHost


@dataclass(frozen=True)
class IspOptions(DeviceOptions):
    """What every ISP programmer takes."""

    sck_hz: int | None = option(None, help="the ISP clock (SCK) in Hz (none: the programmer's own)", min=100,
                                max=8_000_000, host_only=True, product=False)


@dataclass(frozen=True)
class Stk500v2Options(IspOptions):
    """An STK500 v2 programmer: its sign-on name, the serial port's baud rate."""

    sign_on: str = option("STK500_2", help="the name CMD_SIGN_ON answers (avrdude: STK500_2 an STK500, "
                                           "AVRISP_2 an AVRISP)", allowed=SIGN_ON_NAMES, device_only=True)
    baudrate: int = option(115200, help="the serial port's baud rate (a CDC-ACM port ignores it)", min=300,
                           max=4_000_000, host_only=True, product=False)


@dataclass(frozen=True)
class UsbaspOptions(IspOptions):
    """A USBasp (16c0:05dc, www.fischl.de)."""


def target_on(memory: MemoryIO, chip: Chip) -> Any:
    """The EmulatedAvr on the programmer's header, driving ``memory`` (the emulator's: its
    --image, its real-time setting; built from :meth:`Isp.chip_for`'s chip)."""
    from ...isp.target import EmulatedAvr
    from ...memory import SimulatedFlash

    if not isinstance(memory, SimulatedFlash):
        raise TypeError(f"an emulated ISP target needs a SimulatedFlash, not {type(memory).__name__}")
    return EmulatedAvr(chip, memory=memory, realtime=memory.realtime)


class Isp(Personality):
    name = NAME
    order = 70
    summary = ("an ISP programmer with an AVR on its header: STK500 v2 / AVRISP (avrdude -c stk500v2, "
               "-c avrisp2) and USBasp (avrdude -c usbasp)")
    dialects = DIALECTS
    options = {"stk500v2": Stk500v2Options, "usbasp": UsbaspOptions}
    demo = DEMO
    link_fields = ("port",)
    cli_examples = {
        "flash": ["bootkit flash fw.hex --via isp --port /dev/ttyACM0 --chip atmega328p",
                  "bootkit flash fw.hex --via isp --dialect usbasp --chip attiny85",
                  "bootkit flash fw.hex --via isp --emulate attiny85 --image t85.bin"],
        "read": ["bootkit read back.hex --via isp --port /dev/ttyACM0 --chip atmega328p"],
        "serve": ["bootkit serve isp --dialect stk500v2 --chip attiny85 --transport pty",
                  "bootkit serve isp --dialect usbasp --chip atmega328p --transport usbip"],
        "fuses": ["bootkit fuses read --via isp --emulate attiny85",
                  "bootkit fuses write lfuse=0xE2 --via isp --chip attiny85 --port /dev/ttyACM0"],
        "signature": ["bootkit signature --via isp --port /dev/ttyACM0"],
    }

    def tool_hint(self, dialect: str, chip: Chip, where: str) -> str | None:
        if dialect != "stk500v2":
            return None  # a USBasp is a USB device, not a serial port
        part = chip.aliases[0] if chip.aliases else chip.name  # avrdude's -p id (avrdude.conf)
        return f"avrdude -c stk500v2 -p {part} -P {where} -U flash:w:FILE.hex:i"

    def default_dialect(self, chip: Chip) -> str:
        return "stk500v2"

    def chip_for(self, chip: Chip, dialect: str | None) -> Chip:
        """The target as a programmer sees it: a classic AVR with all of its flash writable
        (ISP has no bootloader region).  Another family is refused (ValueError: exit 2)."""
        from .host import isp_chip

        return isp_chip(chip)

    def bootloader_device(self, memory: MemoryIO, chip: Chip, dialect: str, options: DeviceOptions) -> Device:
        """The programmer as it enumerates, with the target on its header."""
        target = target_on(memory, chip)
        if dialect == "usbasp":
            # H20c's module: imported only for this dialect, so the STK500 v2 one never needs it
            from .usbasp_device import usbasp_device

            ids = {k: v for k, v in (("vid", options.vid), ("pid", options.pid)) if v is not None}
            return usbasp_device(target, serial=options.serial, **ids)
        from ...usb.descriptors import DeviceInfo
        from ...usb.device import Device
        from .device import IspProgrammerFunction, Stk500v2Programmer
        from .protocol import BOOTKIT_ISP_PID, BOOTKIT_VID, STRINGS

        assert isinstance(options, Stk500v2Options)
        engine = Stk500v2Programmer(target, sign_on=options.sign_on)
        info = DeviceInfo(options.vid if options.vid is not None else BOOTKIT_VID,
                          options.pid if options.pid is not None else BOOTKIT_ISP_PID,
                          options.bcd_device if options.bcd_device is not None else 0x0100,
                          manufacturer=options.manufacturer or STRINGS[0], product=options.product or STRINGS[1],
                          serial=options.serial, bDeviceClass=0x02)  # a CDC device, as LUFA's USB-serial ones
        return Device(info, [IspProgrammerFunction(engine)])

    def host(self) -> IspHost:
        from .host import IspHost

        return IspHost()

    def list_devices(self, backend: Any) -> list[str]:
        """USBasps and bootkit's STK500 v2 programmers on ``backend``."""
        import usb.core

        from ...isp.usbasp import USBASP_PID, USBASP_VID
        from .protocol import BOOTKIT_ISP_PID, BOOTKIT_VID

        known = {(USBASP_VID, USBASP_PID): "usbasp", (BOOTKIT_VID, BOOTKIT_ISP_PID): "stk500v2"}
        out = []
        try:
            devices = list(usb.core.find(find_all=True, backend=backend) or [])
        except usb.core.USBError:
            return []
        for dev in devices:
            dialect = known.get((dev.idVendor, dev.idProduct))
            if dialect is not None:
                out.append(f"{dev.idVendor:04x}:{dev.idProduct:04x}  isp/{dialect}  ISP programmer")
        return out

    def run_demo_row(self, dialect: str, chip: Chip, image: Image) -> dict[str, Any] | None:
        """Through the host side on an in-process bus, as the default row, but "verified" is
        the target's flash holding the image: an ISP target has no bootloader to mark an
        application valid (the default row's manifest check does not apply)."""
        from ...contracts import Link
        from ...emulator import Emulator
        from ...transports.virtual import VirtualBus, get_backend

        bus = VirtualBus()
        with Emulator(chip, self.name, options={"dialect": dialect}) as em:
            em.attach(bus)
            result = self.host().flash(image, Link(backend=get_backend(bus)), dialect=dialect, chip=em.chip,
                                       progress=False)
            flash = em.memory.flash_bytes()
            identical = all(flash[s:s + len(d)] == d for s, d in image.segments)
            return {"personality": self.name, "dialect": dialect, "chip": em.chip.name, "bytes": image.size,
                    "seconds": result.seconds, "verified": identical and result.verified}

    def check_product(self, check: Any, product: Any) -> None:
        """The product's chip is the programmer's TARGET: a classic AVR with no bootloader
        region (ISP writes all of its flash)."""
        if product.chip.family != "avr":
            check.fail("product.chip", f"{product.chip.name} is of family {product.chip.family}: an ISP "
                                       "programmer's target is a classic AVR", "a chip of family avr")
        if product.boot_size_given:
            check.fail("protection.bootloader_size", "an ISP programmer writes all of the target's flash: there is "
                                                     "no bootloader region", "omit it for isp")

    def find_devices(self, backend: Any = None, *, local: bool = True) -> list[Found]:
        from .finder import find

        return find(backend, local=local)

    def facts(self) -> tuple[DialectFacts, ...]:
        from .facts import FACTS

        return tuple(FACTS)


PERSONALITY = Isp()
