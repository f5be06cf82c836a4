"""Bad input is refused in the dialect's own way, and nothing is written."""

import pytest
import usb.core

from bootkit.classes import hid
from bootkit.classes.hid.protocol import (
    HALFKAY_MCUS,
    REPORT_SIZE,
    Command,
    NativeStatus,
    halfkay_encode,
    lufa_encode,
    native_command,
)
from bootkit.emulator import Emulator
from bootkit.transports.virtual import VirtualBus, get_backend


def board(dialect, chip="atmega32u4"):
    c = hid.chip_for(chip, dialect)
    bus = VirtualBus()
    em = Emulator(c, "hid", options={"dialect": dialect})
    em.attach(bus)
    dev = usb.core.find(backend=get_backend(bus))
    dev.set_configuration()
    return em, dev


def set_report(dev, data):
    return dev.ctrl_transfer(0x21, 9, 0x0200, 0, data)


def stalls(dev, data):
    with pytest.raises(usb.core.USBError) as info:
        set_report(dev, data)
    return info.value.errno == 32  # EPIPE: a STALL


M32 = HALFKAY_MCUS["atmega32u4"]
M1286 = HALFKAY_MCUS["at90usb1286"]

HALFKAY_BAD = {
    "short header": (M32, b"\x00"),
    "short block": (M32, halfkay_encode(M32, 0, bytes(128))[:100]),
    "misaligned": (M32, bytes((0x40, 0x00)) + bytes(128)),
    "beyond code size": (M32, halfkay_encode(M32, 0x8000, bytes(128))),
    "into bootloader": (M32, halfkay_encode(M32, 32256, bytes(128))),
    "1286 into bootloader": (M1286, halfkay_encode(M1286, 130048, bytes(256))),
}


@pytest.mark.parametrize("case", sorted(HALFKAY_BAD))
def test_halfkay_stalls_and_writes_nothing(case):
    mcu, report = HALFKAY_BAD[case]
    em, dev = board("halfkay", mcu.name)
    em.memory.poke(0, b"\x00\x11")  # an erase would show
    before = em.memory.flash_bytes()
    assert stalls(dev, report)
    assert em.memory.flash_bytes() == before
    assert em.memory.erase_counters.total == 0


LUFA_BAD = {
    "short header": b"\x00",
    "short page": lufa_encode(0, bytes(128), 32768)[:64],
    "misaligned": lufa_encode(0x40, bytes(128), 32768),
    "beyond flash": lufa_encode(0x8000, bytes(128), 32768),
    "into bootloader": lufa_encode(0x7000, bytes(128), 32768),
}


@pytest.mark.parametrize("case", sorted(LUFA_BAD))
def test_lufa_stalls_and_writes_nothing(case):
    em, dev = board("lufa")
    em.memory.poke(0, b"\x00\x11")
    before = em.memory.flash_bytes()
    assert stalls(dev, LUFA_BAD[case])
    assert em.memory.flash_bytes() == before
    assert em.memory.erase_counters.total == 0


def test_lufa_large_part_page_numbers():
    em, dev = board("lufa", "at90usb1286")
    set_report(dev, lufa_encode(0x1DE00, b"\x5a" * 256, 128 * 1024))  # field 0x1DE
    assert em.memory.read(0x1DE00, 256) == b"\x5a" * 256
    assert stalls(dev, lufa_encode(0x1F000, bytes(256), 128 * 1024))  # bootloader (top 8 KiB)


def native_exchange(dev, report):
    dev.write(0x01, report)
    return bytes(dev.read(0x81, REPORT_SIZE))


NATIVE_BAD = {
    "short header": (b"\x03\x00", NativeStatus.ERROR),
    "beyond flash": (native_command(Command.WRITE, 0x8000, 128), NativeStatus.ERROR),
    "into bootloader": (native_command(Command.WRITE, 0x6F80, 256), NativeStatus.ERROR),
    "misaligned": (native_command(Command.WRITE, 0x40, 128), NativeStatus.MISALIGNED),
    "not erased": (native_command(Command.WRITE, 0x0, 128), NativeStatus.NOT_ERASED),
    "unknown command": (native_command(0x7E), NativeStatus.ERROR),
    "read into bootloader": (native_command(Command.READ, 0x6F00, 0x200), NativeStatus.ERROR),
}


@pytest.mark.parametrize("case", sorted(NATIVE_BAD))
def test_native_status_and_writes_nothing(case):
    report, status = NATIVE_BAD[case]
    em, dev = board("native")
    em.memory.poke(0, b"\x00\x11")
    before = em.memory.flash_bytes()
    reply = native_exchange(dev, report)
    assert reply[1] == status
    assert reply[0] == report[0]
    # no data phase was opened: a following report is a command again
    assert native_exchange(dev, native_command(Command.GET_INFO))[1] == NativeStatus.OK
    assert em.memory.flash_bytes() == before


def test_native_data_acks_and_short_data_report():
    em, dev = board("native")
    assert native_exchange(dev, native_command(Command.WRITE, 0x100, 100))[1] == NativeStatus.OK
    ack = native_exchange(dev, b"\xaa" * 64)
    assert ack[1] == NativeStatus.OK and int.from_bytes(ack[4:8], "little") == 36
    ack = native_exchange(dev, b"\xbb" * 10)  # shorter than the 36 bytes still due
    assert ack[1] == NativeStatus.ERROR
    assert em.memory.read(0x100, 64) == b"\xaa" * 64
    assert em.memory.read(0x140, 64) == b"\xff" * 64
