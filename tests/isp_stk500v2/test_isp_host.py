"""The isp personality's host side (IspHost: HostSide + FuseAccess) against its own
device side: bootkit as programmer AND target, no avrdude.  Over a pty (STK500 v2 on a
serial port) and on the in-process bus (the programmer's CDC-ACM function; a USBasp)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bootkit.classes.common import HostError, ImageRejected
from bootkit.classes.isp import host as isp_host
from bootkit.contracts import FuseAccess, HostSide, Link
from bootkit.emulator import Emulator
from bootkit.formats import load, save
from bootkit.formats.image import Image
from bootkit.isp.errors import IspInputError
from bootkit.memory import get_chip
from bootkit.memory.chips import EEPROM_BASE, LOCK_BASE
from bootkit.registry import personality
from bootkit.samples import sample_image
from bootkit.transports.pty import pty_server
from bootkit.transports.virtual import VirtualBus, get_backend

ISP = personality("isp")


def gapped(chip_name, seed=1):
    """Code at 0, a gap, an odd-length data block: the shape of a real image."""
    chip = get_chip(chip_name)
    return sample_image(chip, chip.flash_size // 4 + 3, chip.flash_size // 2, 301, seed=seed)


@pytest.fixture
def on_pty():
    """An emulated STK500 v2 programmer on a pty: yields (emulator, Link(port=...))."""
    opened = []

    def make(chip, **options):
        em = Emulator(chip, "isp", options={"dialect": "stk500v2", **options})
        server = pty_server(em)
        opened.append((em, server))
        return em, Link(port=server.__enter__().slave_path)

    yield make
    for em, server in opened:
        server.__exit__(None, None, None)
        em.close()


@pytest.fixture
def on_bus():
    made = []

    def make(chip, dialect):
        em = Emulator(chip, "isp", options={"dialect": dialect})
        bus = VirtualBus()
        em.attach(bus)
        made.append(em)
        return em, Link(backend=get_backend(bus))

    yield make
    for em in made:
        em.close()


def test_the_host_side_has_fuse_access():
    host = ISP.host()
    assert isinstance(host, HostSide) and isinstance(host, FuseAccess)


@pytest.mark.parametrize("chip", ["attiny85", "atmega2560"])
def test_flash_read_eeprom_fuses_over_a_pty(on_pty, chip):
    em, link = on_pty(chip)
    host = ISP.host()
    image = gapped(chip)
    result = host.flash(image, link, chip=get_chip(chip), progress=False)
    assert result.verified and result.bytes == image.size and result.dialect == "stk500v2"
    flash = em.memory.flash_bytes()
    assert all(flash[s:s + len(d)] == d for s, d in image.segments)
    back = host.read(link, chip=get_chip(chip), progress=False)
    assert back.tobytes(0, image.end) == image.tobytes(0, image.end)
    # EEPROM, at avr-gcc's .eeprom address as a HEX carries it; only its bytes change
    ee = Image([(EEPROM_BASE + 5, b"\x10\x20\x30"), (EEPROM_BASE + 17, b"\x99")])
    assert host.flash(ee, link, chip=get_chip(chip), memory="eeprom", progress=False).verified
    back_ee = host.read(link, chip=get_chip(chip), memory="eeprom", progress=False)
    assert back_ee.start == EEPROM_BASE and back_ee.tobytes() == ee.tobytes(EEPROM_BASE, ee.end)
    assert em.memory.flash_bytes()[:16] == flash[:16]  # an EEPROM write erases no flash
    assert host.signature(link) == get_chip(chip).signature
    after = host.write_fuses(link, {"lfuse": 0xE2, "lock": 0xFC}, chip=get_chip(chip))
    assert after["lfuse"] == 0xE2 and after["lock"] == 0xFC
    assert host.read_fuses(link) == after


def test_a_segment_above_64k_on_the_atmega2560(on_bus):
    em, link = on_bus("atmega2560", "stk500v2")  # through the programmer's CDC-ACM function
    image = Image([(0, b"\x0c\x94" * 50), (0x1FFF1, bytes(range(33))), (0x3FF00, b"\xa5" * 255)])
    assert ISP.host().flash(image, link, chip=get_chip("atmega2560"), progress=False).verified
    flash = em.memory.flash_bytes()
    assert flash[0x1FFF1:0x20012] == bytes(range(33)) and flash[0x3FF00:0x3FFFF] == b"\xa5" * 255


@pytest.mark.parametrize("dialect", ["stk500v2", "usbasp"])
def test_both_dialects_on_the_in_process_bus(on_bus, dialect):
    em, link = on_bus("atmega328p", dialect)
    image = gapped("atmega328p", seed=2)
    result = ISP.host().flash(image, link, dialect=dialect, progress=False)  # the chip from its signature
    assert result.verified and result.dialect == dialect
    assert ISP.host().read(link, dialect=dialect, length=image.end, progress=False).tobytes(0, image.end) \
        == image.tobytes(0, image.end)
    assert em.memory.app_valid  # RESET released on a programmed chip: it runs


def test_an_image_larger_than_the_target_is_refused_before_the_programmer_is_opened():
    too_big = Image([(0, b"\x00" * (8 * 1024 + 1))])
    with pytest.raises(ImageRejected, match=r"does not fit attiny85 flash \(8192 bytes\)"):
        ISP.host().flash(too_big, Link(port="/nonexistent/tty"), chip=get_chip("attiny85"), progress=False)
    with pytest.raises(ImageRejected, match="does not fit attiny85 EEPROM"):
        ISP.host().flash(Image([(EEPROM_BASE + 510, b"abc")]), Link(port="/nonexistent/tty"),
                         chip=get_chip("attiny85"), memory="eeprom", progress=False)


def test_a_wrong_signature_writes_nothing(on_pty):
    em, link = on_pty("atmega328p")
    em.memory.program(0, b"\x12\x34")
    with pytest.raises(HostError, match=r"^the target's signature is 1E 95 0F \(atmega328p\), not attiny85's "
                                        r"1E 93 0B: nothing written$"):
        ISP.host().flash(Image([(0, b"\x00" * 64)]), link, chip=get_chip("attiny85"), progress=False)
    assert em.memory.flash_bytes()[:4] == b"\x12\x34\xff\xff"  # not erased


def test_an_image_too_big_for_the_chip_the_signature_names(on_pty):
    em, link = on_pty("attiny85")
    em.memory.program(0, b"\x12\x34")
    with pytest.raises(ImageRejected, match="does not fit attiny85 flash"):
        ISP.host().flash(Image([(0, b"\x00" * 9000)]), link, progress=False)  # no --chip: read from the target
    assert em.memory.flash_bytes()[:2] == b"\x12\x34"


def test_fuse_values_outside_the_mask_are_refused_before_writing(on_pty):
    em, link = on_pty("attiny85")
    before = em.memory.region_bytes("fuses")
    with pytest.raises(IspInputError, match=r"attiny85: efuse value 0x03 sets bits outside its mask 0x01 "
                                            r"\(use 0x01 or 0xFF\)"):
        ISP.host().write_fuses(link, {"lfuse": 0xE2, "efuse": 0x03}, chip=get_chip("attiny85"))
    with pytest.raises(IspInputError, match="attiny85 has no fuse 'xfuse'"):
        ISP.host().write_fuses(link, {"xfuse": 1})  # the chip from the signature
    assert em.memory.region_bytes("fuses") == before  # lfuse was not written either
    # both spellings of unimplemented bits pass: 0 (AVRprog's masked value) and 1 (as avrdude
    # shows them); the target reads them back as 1
    assert ISP.host().write_fuses(link, {"efuse": 0x00})["efuse"] == 0xFE
    assert ISP.host().write_fuses(link, {"efuse": 0xFF})["efuse"] == 0xFF


def test_a_locked_target(on_pty):
    em, link = on_pty("attiny85")
    ISP.host().flash(Image([(0, b"\x0c\x94\x00\x00")]), link, progress=False)
    ISP.host().write_fuses(link, {"lock": 0xFC})  # LB1 and LB2 programmed: mode 3
    with pytest.raises(HostError, match=r"^the target is read-locked \(lock 0xFC\): its flash reads as 0xFF; "
                                        r"only a chip erase clears the lock bits$"):
        ISP.host().read(link, progress=False)
    with pytest.raises(HostError, match=r"^the target is locked \(lock 0xFC\): it ignores EEPROM writes"):
        ISP.host().flash(Image([(0, b"\x01")]), link, memory="eeprom", progress=False)
    assert em.memory.peek(EEPROM_BASE, 1) == b"\xff"
    # flashing erases the chip first, which clears the lock bits: it works
    assert ISP.host().flash(Image([(0, b"\x0c\x94\x34\x00")]), link, progress=False).verified
    assert em.memory.peek(LOCK_BASE, 1) == b"\xff"


def test_link_fields_and_dialects(on_pty):
    with pytest.raises(ValueError, match="takes no path"):
        ISP.host().read(Link(path="/mnt/x"), progress=False)
    with pytest.raises(HostError, match="needs its serial port"):
        ISP.host().signature(Link())
    with pytest.raises(ImageRejected, match="takes no --port"):
        ISP.host().signature(Link(port="/dev/null"), dialect="usbasp")
    with pytest.raises(HostError, match="no STK500 v2 programmer 1209:b011 found on the USB bus"):
        ISP.host().signature(Link(backend=get_backend(VirtualBus())))


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "bootkit", *args], capture_output=True, text=True, timeout=120)


def test_cli_one_line_errors_and_exit_codes(tmp_path):
    small = tmp_path / "t85.hex"
    save(gapped("attiny85"), str(small))
    big = tmp_path / "big.hex"
    save(Image([(0, b"\x00" * 9000)]), str(big))
    image = tmp_path / "t85.bin"
    ok = run_cli("flash", str(small), "--via", "isp", "--emulate", "attiny85", "--image", str(image))
    assert ok.returncode == 0, ok.stderr
    assert "via isp/stk500v2" in ok.stdout and "verified" in ok.stdout
    too_big = run_cli("flash", str(big), "--via", "isp", "--emulate", "attiny85", "--image", str(image))
    assert too_big.returncode == 2
    assert too_big.stderr.strip().splitlines() == [
        f"bootkit: error: {big}: image data 0x0-0x2327 does not fit attiny85 flash (8192 bytes) (writable: "
        "0x0-0x1FFF)"]
    wrong = run_cli("flash", str(small), "--via", "isp", "--emulate", "attiny85", "--chip", "atmega328p",
                    "--image", str(image))
    assert wrong.returncode == 1
    assert wrong.stderr.strip().splitlines() == [
        "bootkit: failed: the target's signature is 1E 93 0B (attiny85), not atmega328p's 1E 95 0F: nothing written"]
    other = run_cli("flash", str(small), "--via", "isp", "--emulate", "stm32f411")
    assert other.returncode == 2
    assert other.stderr.strip().splitlines() == [
        "bootkit: error: an ISP programmer programs classic AVRs (family avr): stm32f411 is of family stm32"]
    back = tmp_path / "back.hex"
    assert run_cli("read", str(back), "--via", "isp", "--emulate", "attiny85", "--image", str(image)).returncode == 0
    sent = gapped("attiny85")
    assert load(str(back)).tobytes(0, sent.end) == sent.tobytes(0, sent.end)


def test_over_usbip_through_the_cdc_acm_function():
    """The userspace USB/IP client in front of serve isp's USB/IP server: the host finds the
    programmer's CDC-ACM bulk endpoints from the descriptors, as over the in-process bus."""
    from bootkit.transports import usbip_client
    from bootkit.transports.usbip import UsbipServer

    em = Emulator("atmega328p", "isp", options={"dialect": "stk500v2"})
    server = UsbipServer([em.target], ("127.0.0.1", 0), log=None).start()
    backend = usbip_client.UsbipBackend(port=server.port)
    try:
        image = gapped("atmega328p", seed=5)
        link = Link(backend=backend)
        assert ISP.host().flash(image, link, chip=get_chip("atmega328p"), progress=False).verified
        assert ISP.host().signature(link) == b"\x1e\x95\x0f"
        flash = em.memory.flash_bytes()
        assert all(flash[s:s + len(d)] == d for s, d in image.segments)
    finally:
        backend.close()
        server.close()
        em.close()


def test_list_devices_names_both_programmers(on_bus):
    bus = VirtualBus()
    for chip, dialect in (("attiny85", "stk500v2"), ("atmega328p", "usbasp")):
        em = Emulator(chip, "isp", options={"dialect": dialect})
        em.attach(bus)
    lines = ISP.list_devices(get_backend(bus))
    assert sorted(lines) == ["1209:b011  isp/stk500v2  ISP programmer", "16c0:05dc  isp/usbasp  ISP programmer"]


def test_a_product_profile_of_an_isp_programmer(tmp_path):
    from bootkit.product import ProductError, load_product

    text = ('[product]\nname = "ISP"\nchip = "atmega32u4"\npersonality = "isp"\ndialect = "stk500v2"\n\n'
            '[isp]\nsign_on = "AVRISP_2"\n')
    good = tmp_path / "isp.toml"
    good.write_text(text)
    with load_product(good).emulator() as em:
        assert em.chip.boot_size == 0  # the target: all of its flash writable
        assert em.target.device.functions[0].engine.sign_on == b"AVRISP_2"
    bad = tmp_path / "bad.toml"
    bad.write_text(text + '\n[protection]\nbootloader_size = "4K"\n')
    with pytest.raises(ProductError, match="key protection.bootloader_size: an ISP programmer writes all of the "
                                           "target's flash: there is no bootloader region"):
        load_product(bad)
