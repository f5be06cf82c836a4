"""SpidevLink: program an AVR from a Linux board's own SPI pins (a Raspberry Pi).

UNTESTED HERE: this machine has no SPI controller and no GPIO chip, so the
link has only been run against fakes of the ``spidev`` and ``gpiod`` modules
(tests/isp/test_spidev.py: the frames it sends, the RESET sequence).  The
wiring, the 3.3 V warning and what to check first are in docs/isp.md.

The SPI bus is ``/dev/spidevB.D`` through the ``spidev`` module (SPI mode 0:
the AVR samples MOSI on SCK's rising edge, datasheet "Serial Programming
Algorithm"); RESET is a GPIO line driven through the GPIO character device
with the ``gpiod`` module (libgpiod's Python binding, version 1 or 2),
like avrdude's ``linuxspi`` programmer.  The chip-select line (CE0/CE1)
toggles with every transfer and is not wired to the AVR.

Entering programming mode follows the datasheet (ATmega328P §28.8.2): RESET
low with SCK low, wait 20 ms, Programming Enable; without the 0x53 echo, a
positive RESET pulse and again (:meth:`IspLink.connect`, 32 tries).
"""

from __future__ import annotations

import time
from typing import Any, Callable

from .errors import IspError, IspInputError
from .link import IspLink

#: the AVR needs SCK below a quarter of its clock: 100 kHz suits the 1 MHz factory clock
#: (8 MHz RC divided by 8, CKDIV8 programmed) of every AVR in the database
DEFAULT_SPEED_HZ = 100_000
#: datasheet step 2: "Wait for at least 20 ms and enable serial programming"
RESET_SETTLE_S = 0.020


def _missing(package: str, pip: str, what: str) -> IspError:
    return IspError(f"SpidevLink needs the '{package}' Python package for {what} (pip install {pip})")


class _GpiodLine:
    """One output line through libgpiod's binding, v2 (``request_lines``) or v1 (``Chip.get_line``)."""

    def __init__(self, chip: str, offset: int, consumer: str = "bootkit-isp"):
        try:
            import gpiod  # type: ignore[import-not-found,unused-ignore]  # optional, Linux only
        except ImportError:
            raise _missing("gpiod", "gpiod", "the RESET line (GPIO character device)") from None
        self.offset = offset
        # (ACTIVE, INACTIVE) of libgpiod 2's Value enum; None with libgpiod 1
        self._v2: tuple[Any, Any] | None = None
        path = chip if chip.startswith("/") else f"/dev/{chip}"
        try:
            if hasattr(gpiod, "request_lines"):  # libgpiod 2.x
                from gpiod.line import Direction, Value  # type: ignore[import-not-found,unused-ignore]

                self._v2 = (Value.ACTIVE, Value.INACTIVE)
                self._request = gpiod.request_lines(path, consumer=consumer, config={
                    offset: gpiod.LineSettings(direction=Direction.OUTPUT, output_value=Value.ACTIVE)})
            else:  # libgpiod 1.x
                self._line = gpiod.Chip(path).get_line(offset)
                self._line.request(consumer=consumer, type=gpiod.LINE_REQ_DIR_OUT, default_vals=[1])
        except OSError as exc:
            raise IspError(f"{path} line {offset}: {exc.strerror or exc} (is the GPIO chip there, "
                           "and may this user open it?)") from None

    def set(self, high: bool) -> None:
        if self._v2 is not None:
            self._request.set_value(self.offset, self._v2[0] if high else self._v2[1])
        else:
            self._line.set_value(1 if high else 0)

    def close(self) -> None:
        if self._v2 is not None:
            self._request.release()
        else:
            self._line.release()


class SpidevLink(IspLink):
    """An AVR on ``/dev/spidev{bus}.{device}`` with RESET on GPIO ``reset_gpio`` of ``gpio_chip``.

    ``spi`` and ``gpio`` replace the ``spidev.SpiDev`` and the RESET line (objects with
    ``open/xfer2/close`` and ``set(high)/close``), for tests; ``sleep`` the waits.
    """

    def __init__(self, bus: int = 0, device: int = 0, reset_gpio: int = 25, speed_hz: int = DEFAULT_SPEED_HZ, *,
                 gpio_chip: str = "gpiochip0", spi: Any = None, gpio: Any = None,
                 sleep: Callable[[float], None] = time.sleep):
        if speed_hz <= 0:
            raise IspInputError(f"speed_hz must be positive, got {speed_hz}")
        self.bus, self.device, self.reset_gpio, self.speed_hz = bus, device, reset_gpio, speed_hz
        self._sleep = sleep
        if spi is None:
            try:
                import spidev  # type: ignore[import-not-found,unused-ignore]  # optional, Linux only
            except ImportError:
                raise _missing("spidev", "spidev", "the SPI bus") from None
            spi = spidev.SpiDev()
            try:
                spi.open(bus, device)
            except OSError as exc:
                raise IspError(f"/dev/spidev{bus}.{device}: {exc.strerror or exc} (enable SPI: "
                               "dtparam=spi=on in config.txt)") from None
        self._spi = spi
        self._spi.mode = 0  # CPOL 0, CPHA 0: the AVR samples on SCK's rising edge
        self._spi.max_speed_hz = speed_hz
        self._reset = gpio if gpio is not None else _GpiodLine(gpio_chip, reset_gpio)
        self._reset.set(True)  # RESET released: the target runs
        self._closed = False

    def connect(self, *, sck_hz: int | None = None) -> None:
        if sck_hz:
            self._spi.max_speed_hz = min(sck_hz, self.speed_hz)
        super().connect(sck_hz=sck_hz)

    def set_reset(self, active: bool) -> None:
        self._reset.set(not active)  # RESET is active low
        if active:
            self._sleep(RESET_SETTLE_S)

    def transact(self, cmd: bytes) -> bytes:
        if len(cmd) != 4:
            raise IspInputError(f"an ISP instruction is 4 bytes, got {len(cmd)}")
        try:
            answer = self._spi.xfer2(list(cmd))
        except OSError as exc:
            raise IspError(f"/dev/spidev{self.bus}.{self.device}: {exc.strerror or exc}") from None
        return bytes(answer)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.disconnect()
        finally:
            self._spi.close()
            self._reset.close()
