"""Our host client flashes each HID dialect on the virtual bus; native reads back."""

import time

import pytest

from bootkit.classes import hid
from bootkit.classes.hid import host
from bootkit.classes.hid.protocol import HALFKAY_MCUS, halfkay_chip
from bootkit.emulator import Emulator
from bootkit.formats.image import Image
from bootkit.samples import load_sample, sample_image
from bootkit.transports.virtual import VirtualBus, get_backend


VECTOR = b"\x0c\x94"  # an AVR jmp: the application's first word, which preflight requires


def reference(chip, image):
    """The whole flash as it must be: the image placed on erased (0xFF) flash."""
    flash = bytearray(b"\xff" * chip.flash_size)
    for start, data in image.segments:
        flash[start - chip.flash_start:start - chip.flash_start + len(data)] = data
    return bytes(flash)


def run(dialect, chip, image, **kw):
    board = hid.chip_for(chip, dialect)
    bus = VirtualBus()
    em = Emulator(board, "hid", options={"dialect": dialect})
    em.attach(bus)
    result = host.flash(image, get_backend(bus), dialect=dialect, chip=board, progress=False, **kw)
    settle(bus)
    return em, result


def settle(bus):
    """Let a reset the device delayed (native: reply first, then leave) happen."""
    time.sleep(0.06)
    bus.present()


@pytest.mark.parametrize("dialect", hid.DIALECTS)
def test_sample_flashes_and_equals_reference(dialect):
    chip, image = load_sample("sample-atmega32u4")
    em, result = run(dialect, chip, image)
    assert em.memory.flash_bytes() == reference(em.chip, image)
    assert em.memory.app_valid
    assert em.mode == "application"
    assert result.verified == (dialect in ("native", "xusb"))  # xusb: the NVM CRC compared
    assert result.dialect == dialect


@pytest.mark.parametrize("dialect", hid.DIALECTS)
def test_large_part_addressing(dialect):
    """at90usb1286: HalfKay's addr>>8/addr>>16, LUFA's page numbers above 64 KiB."""
    chip, image = load_sample("sample-at90usb1286")
    assert image.end > 0x10000
    em, result = run(dialect, chip, image)
    assert em.memory.flash_bytes() == reference(em.chip, image)


@pytest.mark.parametrize("mcu", ["mkl26z64", "mk20dx128", "at90usb162", "at90usb646"])
def test_halfkay_presets(mcu):
    m = HALFKAY_MCUS[mcu]
    chip = halfkay_chip(m)
    assert chip.layout().application_ranges("flash")[0][1] - chip.flash_start == m.code_size
    image = sample_image(chip, 3000, 0x2000, 700)
    em, _ = run("halfkay", chip, image, mcu=mcu)
    assert em.memory.flash_bytes() == reference(chip, image)


def test_halfkay_first_block_erases_whole_chip():
    chip = hid.chip_for("atmega32u4", "halfkay")
    bus = VirtualBus()
    em = Emulator(chip, "hid", options={"dialect": "halfkay"})
    em.memory.poke(0x6000, b"\x00" * 128)  # stale data far from the image
    em.attach(bus)
    image = Image([(0, VECTOR), (0x100, bytes(range(200)))])
    host.flash(image, get_backend(bus), dialect="halfkay", chip=chip, progress=False)
    assert em.memory.flash_bytes() == reference(chip, image)


def test_lufa_erases_page_by_page():
    """Pages the host does not send keep what they held (BootloaderHID.c erases per page)."""
    chip = hid.chip_for("atmega32u4", "lufa")
    bus = VirtualBus()
    em = Emulator(chip, "hid", options={"dialect": "lufa"})
    em.memory.poke(0x6000, b"\x00" * 128)
    em.memory.poke(0x100, b"\x00" * 128)
    em.attach(bus)
    image = Image([(0, VECTOR), (0x100, bytes(range(200)))])
    host.flash(image, get_backend(bus), dialect="lufa", chip=chip, progress=False)
    assert em.memory.read(0x6000, 128) == b"\x00" * 128
    assert em.memory.read(0x100, 200) == bytes(range(200))
    assert em.memory.read(0x1C8, 0x200 - 0x1C8) == b"\xff" * (0x200 - 0x1C8)


def test_lufa_interrupt_out_endpoint():
    chip, image = load_sample("sample-atmega32u4")
    bus = VirtualBus()
    em = Emulator(chip, "hid", options={"dialect": "lufa", "interrupt_out": True})
    em.attach(bus)
    target = host.find_devices(get_backend(bus))[0]
    assert target.ep_out is not None
    host.flash(image, get_backend(bus), dialect="lufa", chip=chip, progress=False)
    assert em.memory.flash_bytes() == reference(chip, image)


def test_native_read_back_and_crc():
    chip, image = load_sample("sample-atmega32u4")
    bus = VirtualBus()
    em = Emulator(chip, "hid", options={"dialect": "native"})
    em.attach(bus)
    be = get_backend(bus)
    host.flash(image, be, progress=False, leave=False)
    back = host.read(be, progress=False)
    app_start, app_end = chip.layout().application_ranges("flash")[0]
    assert back.start == app_start and back.end == app_end
    assert back.tobytes() == reference(chip, image)[app_start:app_end]
    crc, start, size = host.crc(be)
    from bootkit.classes.native import crc32
    assert (start, size) == (app_start, app_end - app_start)
    assert crc == crc32(reference(chip, image)[app_start:app_end])
    bcrc, bstart, bsize = host.crc(be, region="bootloader")
    assert (bstart, bsize) == (chip.boot_start, chip.boot_size)
    assert bcrc == crc32(b"\xff" * chip.boot_size)


def test_read_refused_by_write_only_dialects():
    chip = hid.chip_for("atmega32u4", "halfkay")
    bus = VirtualBus()
    Emulator(chip, "hid", options={"dialect": "halfkay"}).attach(bus)
    with pytest.raises(host.HostError, match="no read command"):
        host.read(get_backend(bus))


@pytest.mark.parametrize("dialect", hid.DIALECTS)
def test_boot_only(dialect):
    chip, image = load_sample("sample-atmega32u4")
    board = hid.chip_for(chip, dialect)
    bus = VirtualBus()
    em = Emulator(board, "hid", options={"dialect": dialect})
    em.attach(bus)
    host.flash(image, get_backend(bus), chip=board, dialect=dialect, leave=False, progress=False)
    assert em.mode == "bootloader"
    host.boot(get_backend(bus), chip=board, dialect=dialect)
    settle(bus)
    assert em.mode == "application"


def test_list_and_wait():
    bus = VirtualBus()
    be = get_backend(bus)
    with pytest.raises(host.HostError):
        host.wait_for_device(be, timeout=0.1, interval=0.02)
    for dialect in hid.DIALECTS:
        Emulator(hid.chip_for("atmega32u4", dialect), "hid", options={"dialect": dialect}).attach(bus)
    lines = host.list_devices(be)
    assert len(lines) == len(hid.DIALECTS)
    assert any(line.startswith("[16c0:0478] halfkay") and "Teensy 2.0" in line for line in lines)
    assert any(line.startswith("[03eb:2067] lufa") and "report=130B" in line for line in lines)
    assert host.wait_for_device(be, dialect="native").dialect == "native"


def test_image_rejected_before_anything_is_erased():
    chip = hid.chip_for("atmega32u4", "halfkay")
    for dialect in hid.DIALECTS:
        board = hid.chip_for("atmega32u4", dialect)
        bus = VirtualBus()
        em = Emulator(board, "hid", options={"dialect": dialect})
        em.memory.poke(0, b"\x12\x34")
        em.attach(bus)
        before = em.memory.flash_bytes()
        bad = Image([(0, b"\x01" * 16), (board.boot_start, b"\x00")])
        with pytest.raises(host.ImageRejected, match="bootloader"):
            host.flash(bad, get_backend(bus), dialect=dialect, chip=board, progress=False)
        assert em.memory.flash_bytes() == before
    assert chip.boot_size == 512
