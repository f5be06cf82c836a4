"""SpidevLink against fakes of the spidev and gpiod modules (no SPI controller here).

What can be checked without a Raspberry Pi: the frames handed to spidev's
xfer2 (4 ints, mode 0, the speed), the RESET sequence (active low, 20 ms
settle after asserting it, a pulse between Programming Enable tries), the
libgpiod 1 and 2 call shapes, and the one-line errors when a package is missing.
"""

from __future__ import annotations

import sys
import types

import pytest

from bootkit.isp import AVRprog
from bootkit.isp import protocol as P
from bootkit.isp.errors import IspError
from bootkit.isp.spidev import RESET_SETTLE_S, SpidevLink
from bootkit.isp.target import EmulatedAvr
from bootkit.samples import sample_image


class FakeSpiDev:
    """spidev.SpiDev's surface: open, mode, max_speed_hz, xfer2(list) -> list, close; MOSI/MISO
    wired to an EmulatedAvr."""

    def __init__(self, target: EmulatedAvr | None = None):
        self.target = target
        self.opened: tuple[int, int] | None = None
        self.mode: int | None = None
        self.max_speed_hz: int | None = None
        self.transfers: list[tuple[list[int], int | None]] = []
        self.closed = False

    def open(self, bus, device):
        self.opened = (bus, device)

    def xfer2(self, data):
        assert isinstance(data, list) and all(isinstance(b, int) for b in data)
        self.transfers.append((list(data), self.max_speed_hz))
        if self.target is None:
            return [0xFF] * len(data)
        return list(self.target.spi(bytes(data)))

    def close(self):
        self.closed = True


class FakeReset:
    def __init__(self, target: EmulatedAvr | None = None, log=None):
        self.target = target
        self.log = log if log is not None else []
        self.closed = False

    def set(self, high):
        self.log.append(("reset", high))
        if self.target is not None:
            self.target.reset(not high)

    def close(self):
        self.closed = True


def test_avrprog_over_spidev_programs_the_target(tmp_path):
    target = EmulatedAvr("atmega328p")
    spi = FakeSpiDev(target)
    link = SpidevLink(0, 1, 25, 200_000, spi=spi, gpio=FakeReset(target), sleep=lambda s: None)
    assert (spi.mode, spi.max_speed_hz) == (0, 200_000)
    image = sample_image("atmega328p", 1000, 0x600, 33)
    fw = tmp_path / "fw.hex"
    from bootkit.formats import save

    save(image, fw)
    prog = AVRprog(link)
    assert prog.program_file("atmega328p", fw) is True
    assert target.memory.flash_bytes()[:image.end] == image.tobytes(0, image.end)
    assert all(len(data) == 4 for data, _ in spi.transfers)
    # signature and fuses at Adafruit's slow clock (100 kHz), flash at the link's limit
    assert spi.transfers[1] == ([0x30, 0, 0, 0], 100_000)
    assert max(speed for _, speed in spi.transfers) == 200_000
    prog.close()
    assert spi.closed and not target.programming


def test_reset_sequence_and_the_settle_time():
    log: list = []
    spi = FakeSpiDev()
    link = SpidevLink(spi=spi, gpio=FakeReset(log=log), sleep=lambda s: log.append(("sleep", s)))
    assert log == [("reset", True)]  # released at start: the target runs
    with pytest.raises(IspError, match="target does not answer programming enable"):
        link.connect()
    # RESET low then 20 ms, and between tries a positive pulse (high, low, 20 ms)
    assert log[1:3] == [("reset", False), ("sleep", RESET_SETTLE_S)]
    assert log[3:6] == [("reset", True), ("reset", False), ("sleep", RESET_SETTLE_S)]
    assert log[-1] == ("reset", True)
    assert [d for d, _ in spi.transfers] == [list(P.programming_enable())] * 32


def test_a_missing_package_is_one_line_naming_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "spidev", None)
    with pytest.raises(IspError) as err:
        SpidevLink()
    assert str(err.value) == "SpidevLink needs the 'spidev' Python package for the SPI bus (pip install spidev)"
    monkeypatch.setitem(sys.modules, "gpiod", None)
    with pytest.raises(IspError, match=r"needs the 'gpiod' Python package for the RESET line"):
        SpidevLink(spi=FakeSpiDev())


def _fake_gpiod_v1(log):
    mod = types.ModuleType("gpiod")
    mod.LINE_REQ_DIR_OUT = 3

    class Line:
        def request(self, consumer, type, default_vals):
            log.append(("request", consumer, type, default_vals))

        def set_value(self, v):
            log.append(("value", v))

        def release(self):
            log.append(("release",))

    class Chip:
        def __init__(self, path):
            log.append(("chip", path))

        def get_line(self, offset):
            log.append(("line", offset))
            return Line()

    mod.Chip = Chip
    return mod


def _fake_gpiod_v2(log):
    mod = types.ModuleType("gpiod")
    line = types.ModuleType("gpiod.line")

    class Direction:
        OUTPUT = "output"

    class Value:
        ACTIVE, INACTIVE = "active", "inactive"

    line.Direction, line.Value = Direction, Value

    class LineSettings:
        def __init__(self, direction, output_value):
            self.direction, self.output_value = direction, output_value

    class Request:
        def set_value(self, offset, value):
            log.append(("value", offset, value))

        def release(self):
            log.append(("release",))

    def request_lines(path, consumer, config):
        ((offset, settings),) = config.items()
        log.append(("request", path, consumer, offset, settings.direction, settings.output_value))
        return Request()

    mod.LineSettings, mod.request_lines, mod.line = LineSettings, request_lines, line
    return mod, line


def test_libgpiod_1_and_2_call_shapes(monkeypatch):
    log: list = []
    monkeypatch.setitem(sys.modules, "gpiod", _fake_gpiod_v1(log))
    link = SpidevLink(reset_gpio=25, spi=FakeSpiDev(), sleep=lambda s: None)
    link.set_reset(True)
    link.close()
    assert log == [("chip", "/dev/gpiochip0"), ("line", 25), ("request", "bootkit-isp", 3, [1]),
                   ("value", 1), ("value", 0), ("value", 1), ("release",)]
    log.clear()
    mod, line = _fake_gpiod_v2(log)
    monkeypatch.setitem(sys.modules, "gpiod", mod)
    monkeypatch.setitem(sys.modules, "gpiod.line", line)
    link = SpidevLink(reset_gpio=24, gpio_chip="gpiochip4", spi=FakeSpiDev(), sleep=lambda s: None)
    link.set_reset(True)
    link.close()
    assert log == [("request", "/dev/gpiochip4", "bootkit-isp", 24, "output", "active"),
                   ("value", 24, "active"), ("value", 24, "inactive"), ("value", 24, "active"), ("release",)]


def test_spi_errors_are_isp_errors():
    class Broken(FakeSpiDev):
        def xfer2(self, data):
            raise OSError(5, "Input/output error")

    link = SpidevLink(spi=Broken(), gpio=FakeReset(), sleep=lambda s: None)
    with pytest.raises(IspError, match=r"^/dev/spidev0.0: Input/output error$"):
        link.transact(P.read_signature(0))
