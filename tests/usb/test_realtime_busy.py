"""Real-time mode: the memory reports how long it is busy, nothing sleeps inside the core,
and serving two devices in one process stays responsive while one of them is busy.

What is proved by ordering, not by timed assertions: the other device's answer arrives
before the busy device's erase is over (the erase's own datasheet length, seconds), and the
busy device's next transfer is not answered before it is over.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time

import pytest
import usb.core

from bootkit.classes.dfu.device import DfuFunction, dfuse_interface_names, engine_for
from bootkit.classes.dfu.protocol import (
    DFUSE_ERASE,
    DNLOAD,
    FLIP_WRITE_COMMAND,
    GETSTATUS,
    FunctionalDescriptor,
    State,
    StatusReply,
)
from bootkit.memory import SimulatedFlash, get_chip
from bootkit.memory.core import Timing
from bootkit.transports import usbip_client
from bootkit.transports.usbip import UsbipServer
from bootkit.transports.virtual import VirtualBus, get_backend
from bootkit.usb.descriptors import DeviceInfo
from bootkit.usb.device import Device, Target

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")

CLASS_OUT, CLASS_IN = 0x21, 0xA1
GET_DESCRIPTOR, DEVICE = 6, 1


class Erasing:
    """Wraps a memory's erase_all: notes when it was called (the erase starts then)."""

    def __init__(self, memory: SimulatedFlash):
        self.started = threading.Event()
        self.at = 0.0
        real = memory.erase_all

        def erase_all():
            self.at = time.monotonic()
            self.started.set()
            return real()

        memory.erase_all = erase_all  # type: ignore[method-assign]


def dfu_board(chip, dialect: str, pid: int, memory: SimulatedFlash) -> Target:
    kw = {}
    if dialect == "dfuse":
        names, kw["regions"] = dfuse_interface_names(memory)
    else:
        names = ["FLIP DFU"]
    engine = engine_for(dialect, memory, functional=FunctionalDescriptor(), **kw)
    info = DeviceInfo(0x0483, pid, product=f"board {pid:04x}", serial=f"{pid:04x}")
    return Target(Device(info, [DfuFunction(engine, names)]))


def status(dev, timeout_ms: int | None = None) -> StatusReply:
    return StatusReply.unpack(bytes(dev.ctrl_transfer(CLASS_IN, GETSTATUS, 0, 0, 6, timeout=timeout_ms)))


def test_dfuse_mass_erase_reports_the_full_erase_time_and_answers_dnbusy_meanwhile(monkeypatch):
    # AN3156: the Erase command alone (0x41) is a mass erase; the host waits bwPollTimeout
    # before its next GETSTATUS, so that must be the chip's full-erase time, not a page's.
    slept = []
    monkeypatch.setattr(time, "sleep", slept.append)
    chip = get_chip("stm32f411")
    now = [100.0]
    memory = SimulatedFlash(chip, realtime=True)
    engine = engine_for("dfuse", memory, clock=lambda: now[0], regions=dfuse_interface_names(memory)[1])
    engine.request(DNLOAD, 0, 1, bytes([DFUSE_ERASE]))
    first = StatusReply.unpack(engine.request(GETSTATUS, 0, 6))
    assert (first.bState, first.bwPollTimeout) == (State.dfuDNBUSY, int(chip.timing.full_erase_ms))
    assert chip.timing.full_erase_ms > chip.timing.erase_ms  # the page figure would be wrong
    now[0] += 1.0  # a host polling early, a second into the erase (DFU 1.1 A.2.4)
    early = StatusReply.unpack(engine.request(GETSTATUS, 0, 6))
    assert (early.bState, early.bwPollTimeout) == (State.dfuDNBUSY, int(chip.timing.full_erase_ms) - 1000)
    now[0] += chip.timing.full_erase_ms / 1000.0
    assert StatusReply.unpack(engine.request(GETSTATUS, 0, 6)).bState == State.dfuDNLOAD_IDLE
    assert slept == []  # the memory reported the time; nothing slept


def test_one_usbip_server_two_boards_one_mass_erasing_the_other_answers():
    chip = get_chip("stm32f411")  # full erase 4 s (datasheet figure in chips.py)
    busy_s = chip.timing.full_erase_ms / 1000.0
    first_memory = SimulatedFlash(chip, realtime=True)
    erasing = Erasing(first_memory)
    boards = [dfu_board(chip, "dfuse", 0xDF11, first_memory),
              dfu_board(chip, "dfuse", 0xDF12, SimulatedFlash(chip, realtime=True))]
    with UsbipServer(boards, ("127.0.0.1", 0), log=None) as server:
        backend = usbip_client.UsbipBackend(port=server.port)
        try:
            one = usb.core.find(backend=backend, idProduct=0xDF11)
            two = usb.core.find(backend=backend, idProduct=0xDF12)
            for dev in (one, two):
                dev.set_configuration()
            got: dict[str, object] = {}

            def erase():
                one.ctrl_transfer(CLASS_OUT, DNLOAD, 0, 0, bytes([DFUSE_ERASE]))
                got["erase"] = status(one)  # this GETSTATUS runs the mass erase
                got["erase at"] = time.monotonic()

            host = threading.Thread(target=erase)
            host.start()
            # generous: the erase request itself has to travel first (not a timed assertion)
            assert erasing.started.wait(60)
            descriptor = two.ctrl_transfer(0x80, GET_DESCRIPTOR, DEVICE << 8, 0, 18)
            other = status(two)
            answered = time.monotonic()
            host.join(60)
            # the other board answered while the first one's erase was still going on
            assert answered < erasing.at + busy_s, "the second board waited for the first one's erase"
            assert len(descriptor) == 18 and other.bState == State.dfuIDLE
            reply = got["erase"]
            assert isinstance(reply, StatusReply)
            assert (reply.bState, reply.bwPollTimeout) == (State.dfuDNBUSY, int(chip.timing.full_erase_ms))
            # the first board answers its own early GETSTATUS too: still busy (DFU 1.1 A.2.4)
            asked = time.monotonic()
            early = status(one)
            if asked < erasing.at + busy_s:
                assert early.bState == State.dfuDNBUSY and 0 < early.bwPollTimeout <= reply.bwPollTimeout
        finally:
            backend.close()


@pytest.mark.parametrize("transport", ["virtual", "usbip"])
def test_a_busy_device_holds_its_next_transfer_and_only_its_own(transport):
    # FLIP's chip erase runs inside its DNLOAD (LUFA): no DFU status can say "wait", so the
    # transport holds the board's next request until the erase is over (virtual: the host's
    # thread waits; usbip: that board's connection stops reading, the server goes on).  A
    # made-up 3 s erase, long enough for the other board's answer to fall inside it on a
    # loaded machine.
    base = get_chip("atmega32u4")
    chip = dataclasses.replace(base, timing=Timing(program_ms=0.0, erase_ms=0.0, full_erase_ms=3000.0))
    busy_s = 3.0
    first_memory = SimulatedFlash(chip, realtime=True)
    erasing = Erasing(first_memory)
    boards = [dfu_board(chip, "flip", 0x2FF4, first_memory),
              dfu_board(chip, "flip", 0x2FF5, SimulatedFlash(chip, realtime=True))]
    with contextlib.ExitStack() as stack:
        if transport == "virtual":
            bus = VirtualBus()
            for board in boards:
                bus.attach(board)
            backend = get_backend(bus)
        else:
            server = stack.enter_context(UsbipServer(boards, ("127.0.0.1", 0), log=None))
            backend = usbip_client.UsbipBackend(port=server.port)
            stack.callback(backend.close)
        one = usb.core.find(backend=backend, idProduct=0x2FF4)
        two = usb.core.find(backend=backend, idProduct=0x2FF5)
        for dev in (one, two):
            dev.set_configuration()
        got: dict[str, float] = {}

        def erase():
            one.ctrl_transfer(CLASS_OUT, DNLOAD, 0, 0, bytes([FLIP_WRITE_COMMAND, 0x00, 0xFF, 0, 0, 0]))
            got["erased"] = time.monotonic()
            status(one, 60_000)  # the board's next request: held until the erase is over (generous)
            got["next"] = time.monotonic()

        host = threading.Thread(target=erase)
        host.start()
        assert erasing.started.wait(60)
        descriptor = two.ctrl_transfer(0x80, GET_DESCRIPTOR, DEVICE << 8, 0, 18)
        answered = time.monotonic()
        host.join(60)
        assert len(descriptor) == 18
        assert answered < erasing.at + busy_s, "the other board waited for the busy one"
        assert got["next"] >= erasing.at + busy_s, "the busy board answered before its erase was over"
