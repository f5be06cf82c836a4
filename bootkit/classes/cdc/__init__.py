"""The CDC personality: a serial port speaking an AVR bootloader protocol.

Dialects: ``lufa`` (LUFA's CDC bootloader, 03EB:204A, "LUFACDC") and
``caterina`` (Arduino's Leonardo bootloader, 2341:0036, "CATERIN", which
leaves for the sketch after 8 s without host traffic) speak AVR109 over the
AVR's own USB; ``optiboot`` (the Arduino Uno's bootloader, STK500 v1,
avrdude -c arduino) and ``wiring`` (the Arduino Mega 2560's, STK500 v2
framing, avrdude -c wiring) run on the UART of an AVR without USB, behind
the board's USB-serial bridge (2341:0043, 2341:0042).  Each engine is a
pure byte-stream state machine (:mod:`.avr109`, :mod:`.optiboot`,
:mod:`.wiring`): the same engine runs behind the USB Function and on a
pseudo-terminal for avrdude.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from .. import lazy_names

from .protocol import IDS, SOFTWARE_IDS

# The device side is imported when a device is built, so a host client
# (bootkit flash) does not pay for it at start-up.
if TYPE_CHECKING:
    from ...memory import Chip
    from ...usb.device import Device

NAME = "cdc"
DIALECTS = ("lufa", "caterina", "optiboot", "wiring")
# the dialects of a UART bootloader behind a USB-serial bridge
UART_DIALECTS = ("optiboot", "wiring")
# their boards' USB-serial bridge (the ATmega16U2's usbserial firmware), one device in both modes:
# boards.txt uno.vid.0/uno.pid.0 and mega.vid.0/mega.pid.0 (the Mega 2560 R3)
BRIDGE_IDS = {"optiboot": (0x2341, 0x0043), "wiring": (0x2341, 0x0042)}
# bootkit demo: (dialect, sample image in examples/firmware)
DEMO = (("lufa", "sample-atmega32u4"),)

# Caterina's TIMEOUT_PERIOD (8000 ms)
CATERINA_TIMEOUT = 8.0

_STRINGS = {
    # LUFA Bootloaders/CDC/Descriptors.c; Caterina's Leonardo build (Makefile)
    "lufa": ("Dean Camera", "LUFA CDC", "Dean Camera", "LUFA USB-RS232 Adapter"),
    "caterina": ("Arduino LLC", "Arduino Leonardo", "Arduino LLC", "Arduino Leonardo"),
    # the bridge (Arduino's usbserial firmware on the ATmega16U2) is the same device in both modes
    "optiboot": ("Arduino (www.arduino.cc)", "Arduino Uno", "Arduino (www.arduino.cc)", "Arduino Uno"),
    "wiring": ("Arduino (www.arduino.cc)", "Arduino Mega 2560", "Arduino (www.arduino.cc)", "Arduino Mega 2560"),
}


def default_dialect(chip: Chip) -> str:
    """LUFA for an AVR with USB (Caterina is chosen explicitly: it is the Leonardo's);
    an AVR without USB runs its bootloader on its UART: the wiring bootloader on the
    ATmega2560 (the Mega's), Optiboot on the others (the Uno's)."""
    if chip.family == "avr" and not chip.usb:
        return "wiring" if chip.name == "atmega2560" else "optiboot"
    return "lufa"


def chip_for(chip: Chip, dialect: str | None = None) -> Chip:
    """The chip with the boot region its dialect's bootloader occupies: Optiboot keeps
    512 B at the top (1 KiB above 64 KiB of flash); the others keep the chip database's."""
    if (dialect or default_dialect(chip)) == "optiboot" and chip.family == "avr":
        from .optiboot import boot_size

        return chip.with_boot(boot_size(chip), "top")
    return chip


def _check(dialect: str | None) -> str:
    dialect = dialect or "lufa"
    if dialect not in DIALECTS:
        raise ValueError(f"unknown CDC dialect {dialect!r} (choose from {', '.join(DIALECTS)})")
    return dialect


def default_ids(dialect: str, application: bool = False) -> tuple[int, int]:
    if dialect in BRIDGE_IDS:
        return BRIDGE_IDS[dialect]
    return IDS[dialect][1 if application else 0]


def uart_engine(dialect: str, memory, *, timeout: float | None = None, clock=None, started=None) -> Any:
    """The Optiboot or wiring engine over ``memory`` (timeout: its watchdog, None: off)."""
    import time

    kw = {"timeout": timeout, "clock": clock or time.monotonic, "started": started}
    if dialect == "optiboot":
        from .optiboot import OptibootEngine

        return OptibootEngine(memory, **kw)
    if dialect == "wiring":
        from .wiring import WiringEngine

        return WiringEngine(memory, **kw)
    raise ValueError(f"{dialect!r} is not a UART bootloader dialect ({', '.join(UART_DIALECTS)})")


def bridge_device(memory, chip: Chip, *, dialect: str, timeout: float | None = None, running: bool = False,
                  vid: int | None = None, pid: int | None = None, serial: str | None = None,
                  manufacturer: str | None = None, product: str | None = None,
                  bcd_device: int | None = None, clock=None) -> Device:
    """An Arduino Uno / Mega 2560 as it enumerates: its USB-serial bridge (one CDC-ACM
    function, 2341:0043 / 2341:0042) with the AVR and its UART bootloader behind it.
    ``running``: the AVR runs its application (until the port's DTR resets it); ``clock``: the
    bridge's and the engine's (injectable for tests; default time.monotonic)."""
    import time

    from ...usb.descriptors import DeviceInfo
    from ...usb.device import Device
    from .device import SerialBridgeFunction

    def started(reason: str) -> None:
        persist = getattr(memory, "persist", None)  # the image file follows what the host was told
        if persist is not None:
            persist()

    clock = clock or time.monotonic
    function = SerialBridgeFunction(uart_engine(dialect, memory, timeout=timeout, clock=clock, started=started),
                                    clock=clock)
    function.engine.application_running = running
    dvid, dpid = default_ids(dialect)
    man, prod, _, _ = _STRINGS[dialect]
    # the 16U2's usbserial firmware: a CDC-ACM device, class on the interfaces (bcdDevice 0x0001)
    info = DeviceInfo(vid if vid is not None else dvid, pid if pid is not None else dpid,
                      bcd_device if bcd_device is not None else 0x0001, manufacturer=manufacturer or man,
                      product=product or prod, serial=serial, bDeviceClass=0x02)
    return Device(info, [function])


def bootloader_device(memory, chip: Chip, *, dialect: str | None = None, vid: int | None = None,
                      pid: int | None = None, serial: str | None = None, software_id: str | bytes | None = None,
                      timeout: float | None | Literal["default"] = "default", manufacturer: str | None = None,
                      product: str | None = None, bcd_device: int | None = None) -> Device:
    """The bootloader as it enumerates: one CDC-ACM function feeding an AVR109 engine.

    ``timeout`` (seconds without host traffic before leaving for a valid
    application): Caterina's 8 s by default for ``caterina``, never for ``lufa``.
    """
    from ...usb.descriptors import DeviceInfo
    from ...usb.device import Device
    from .avr109 import engine_for
    from .device import CdcBootloaderFunction

    dialect = _check(dialect or default_dialect(chip))
    if dialect in UART_DIALECTS:
        from .optiboot import WATCHDOG_TIMEOUT

        return bridge_device(memory, chip, dialect=dialect,
                             timeout=WATCHDOG_TIMEOUT if isinstance(timeout, str) else timeout, vid=vid, pid=pid,
                             serial=serial, manufacturer=manufacturer, product=product, bcd_device=bcd_device)
    leave_after = (CATERINA_TIMEOUT if dialect == "caterina" else None) if isinstance(timeout, str) else timeout
    engine = engine_for(dialect, memory, software_id=software_id)
    dvid, dpid = default_ids(dialect)
    man, prod, _, _ = _STRINGS[dialect]
    info = DeviceInfo(vid if vid is not None else dvid, pid if pid is not None else dpid,
                      bcd_device if bcd_device is not None else 0x0001, manufacturer=manufacturer or man, product=product or prod, serial=serial,
                      # LUFA's CDC bootloader declares the CDC class on the device (USB_CSCP_CDCClass)
                      bDeviceClass=0x02 if dialect == "lufa" else 0x00)
    return Device(info, [CdcBootloaderFunction(engine, timeout=leave_after)])


def application_device(memory, chip: Chip, *, dialect: str | None = None, vid: int | None = None,
                       pid: int | None = None, serial: str | None = None,
                       timeout: float | None | Literal["default"] = "default") -> Device:
    """The application as it enumerates: a serial port honouring the 1200-baud touch."""
    from ...usb.descriptors import DeviceInfo
    from ...usb.device import Device
    from .device import CdcApplicationFunction

    dialect = _check(dialect or default_dialect(chip))
    if dialect in UART_DIALECTS:  # the same bridge; the AVR behind it runs the sketch
        from .optiboot import WATCHDOG_TIMEOUT

        return bridge_device(memory, chip, dialect=dialect, running=True, vid=vid, pid=pid, serial=serial,
                             timeout=WATCHDOG_TIMEOUT if isinstance(timeout, str) else timeout)
    dvid, dpid = default_ids(dialect, application=True)
    _, _, man, prod = _STRINGS[dialect]
    info = DeviceInfo(vid if vid is not None else dvid, pid if pid is not None else dpid, 0x0100,
                      manufacturer=man, product=prod, serial=serial, bDeviceClass=0xEF, bDeviceSubClass=0x02,
                      bDeviceProtocol=0x01)
    return Device(info, [CdcApplicationFunction()])


def run_demo_row(dialect: str, chip: Chip, image) -> dict:
    """Flash ``image`` through the host client into an emulated board served on a pty."""
    from .host import run_demo_row as _run

    return _run(dialect, chip, image)


__getattr__ = lazy_names(__name__, {
    "Avr109Engine": ".avr109", "engine_for": ".avr109", "CdcAcmFunction": ".device",
    "CdcBootloaderFunction": ".device", "CdcApplicationFunction": ".device", "SerialBridgeFunction": ".device",
    "OptibootEngine": ".optiboot", "WiringEngine": ".wiring"})


__all__ = [
    "NAME", "DIALECTS", "DEMO", "default_dialect", "default_ids", "bootloader_device", "application_device",
    "run_demo_row", "Avr109Engine", "engine_for", "CdcAcmFunction", "CdcBootloaderFunction",
    "CdcApplicationFunction", "SOFTWARE_IDS", "UART_DIALECTS", "chip_for", "uart_engine", "bridge_device",
    "SerialBridgeFunction", "OptibootEngine", "WiringEngine",
]
