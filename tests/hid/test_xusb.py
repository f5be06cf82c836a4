"""Issue 19: the xusb dialect (xusb-boot 1.0, the xmega raw-HID bootloader).

The 24-bit NVM CRC against two implementations written here from the
algorithm's description (a shift register, as scripts/xusbboot/crc.py and the
XMEGA manual describe it, and polynomial arithmetic over GF(2)); the engine's
states and statuses report by report, as boot_protocol.c has them; our host
against our device on the in-process bus (flash compared byte for byte with
the image on erased flash); a corrupting device makes the flash fail naming
the CRC (exit 1); the entry policy's events.
"""

from __future__ import annotations

import random
import struct

import pytest

from bootkit.classes.hid import host
from bootkit.classes.hid.device import XusbEngine
from bootkit.classes.hid.protocol import (
    XusbCommand,
    nvm_crc,
    pack_boot_info,
    unpack_boot_info,
    xusb_command,
)
from bootkit.cli import main
from bootkit.emulator import Emulator
from bootkit.formats import Image, save
from bootkit.memory import Board, EntryPolicy, SimulatedFlash, get_chip
from bootkit.memory.entry import XUSB_TRIGGERS
from bootkit.transports.virtual import VirtualBus, get_backend

OKAY, NOT_ERASED, MISALIGNED, ERROR = (bytes((0, s)) for s in (0, 3, 2, 1))


# --------------------------------------------------------------------------
# the NVM CRC, two ways written here

def crc_shift_register(data: bytes) -> int:
    """The NVM CRC as a 24-bit shift register: shift left, the bit shifted out of bit 23
    feeds back through 0x80001B, then the next little-endian word is XORed in."""
    crc = 0
    for i in range(0, len(data), 2):
        carry = crc >> 23 & 1
        crc = (crc << 1) & 0xFFFFFF
        if carry:
            crc ^= 0x80001B & 0xFFFFFF
        crc ^= data[i] | data[i + 1] << 8
    return crc


def crc_polynomial(data: bytes) -> int:
    """The same as polynomial arithmetic: sum of word_i * x^(n-1-i), reduced modulo
    P(x) = x^24 + x^23 + x^4 + x^3 + x + 1 (0x80001B with the x^24 term)."""
    words = [data[i] | data[i + 1] << 8 for i in range(0, len(data), 2)]
    n = len(words)
    acc = 0
    for i, w in enumerate(words):
        acc ^= w << (n - 1 - i)  # carry-less: XOR, not +
    p = 0x1000000 | 0x80001B
    while acc.bit_length() > 24:
        acc ^= p << (acc.bit_length() - 25)
    return acc


@pytest.mark.parametrize("seed", range(12))
def test_nvm_crc_equals_two_independent_implementations(seed):
    rng = random.Random(f"nvm-crc:{seed}")
    data = bytes(rng.getrandbits(8) for _ in range(2 * rng.randrange(0, 700)))
    assert nvm_crc(data) == crc_shift_register(data) == crc_polynomial(data)


def test_nvm_crc_fixed_values():
    assert nvm_crc(b"") == 0
    assert nvm_crc(b"\x01\x00") == 1  # one word: shifted-in as it is
    assert nvm_crc(b"\x01\x00\x00\x00") == 2  # then shifted once
    assert nvm_crc(b"\x00\x80" + b"\x00\x00" * 8) == 0x800000  # bit 15 reaches bit 23, no feedback yet
    assert nvm_crc(b"\x00\x80" + b"\x00\x00" * 9) == 0x80001B  # it falls out: the polynomial
    blank = b"\xff" * (32 * 1024)  # an erased application section
    assert nvm_crc(blank) == crc_shift_register(blank)
    with pytest.raises(ValueError):
        nvm_crc(b"\x01")


# --------------------------------------------------------------------------
# the engine, report by report

def engine(chip="atxmega32a4u", **kw):
    c = get_chip(chip)
    e = XusbEngine(SimulatedFlash(c), c, watchdog=None, **kw)
    return e


def ask(e, report: bytes) -> bytes | None:
    e.out_report(report.ljust(64, b"\x00"))
    return e.in_report(64)


def test_boot_info_is_boot_info_t():
    e = engine("atxmega128a3u")
    reply = ask(e, xusb_command(XusbCommand.GET_BOOT_INFO))
    assert len(reply) == 64
    # boot_info_t: u8 major, u8 minor, char[32], u32 flash_size, u16 page_size, 24 reserved
    major, minor, mcu, flash_size, page = struct.unpack_from("<BB32sIH", reply)
    assert (major, minor, mcu.rstrip(b"\x00"), flash_size, page) == (1, 0, b"atxmega128a3u", 128 * 1024, 512)
    assert unpack_boot_info(reply) == e.boot_info
    assert pack_boot_info(e.boot_info) == reply


def test_write_and_crc_before_erase_are_not_erased():
    e = engine()
    assert ask(e, xusb_command(XusbCommand.WRITE, 0, 256))[:2] == NOT_ERASED
    assert ask(e, xusb_command(XusbCommand.CRC))[:2] == NOT_ERASED
    assert ask(e, xusb_command(XusbCommand.ERASE))[:2] == OKAY
    assert ask(e, xusb_command(XusbCommand.CRC))[0] == 0x01  # PACKET_CRC


@pytest.mark.parametrize("start,size", [(0x10, 256), (0, 100), (256, 64), (0x100, 0x1FF)])
def test_misaligned_write(start, size):
    e = engine()
    ask(e, xusb_command(XusbCommand.ERASE))
    assert ask(e, xusb_command(XusbCommand.WRITE, start, size))[:2] == MISALIGNED
    assert not e.writing
    # the next report is a command again, not data
    assert ask(e, xusb_command(XusbCommand.GET_BOOT_INFO))[:2] == b"\x01\x00"


def test_write_outside_the_application_section_is_refused():
    e = engine()
    ask(e, xusb_command(XusbCommand.ERASE))
    boot = e.chip.boot_start
    before = e.memory.flash_bytes()
    assert ask(e, xusb_command(XusbCommand.WRITE, boot - 256, 512))[:2] == ERROR
    assert ask(e, xusb_command(XusbCommand.WRITE, boot, 256))[:2] == ERROR
    assert ask(e, xusb_command(XusbCommand.WRITE, 0xFFFFFF00, 256))[:2] == ERROR
    assert e.memory.flash_bytes() == before


def test_reports_during_a_write_are_data_whatever_they_start_with():
    """boot_protocol.c STATE_WRITE: a report that looks like RESET is 64 bytes of data."""
    e = engine()
    ask(e, xusb_command(XusbCommand.ERASE))
    assert ask(e, xusb_command(XusbCommand.WRITE, 256, 256))[:2] == OKAY
    chunks = [bytes([XusbCommand.RESET]) + bytes(range(63)), bytes([0x00] * 64), bytes([0x04] * 64),
              bytes([0x02]) + b"\x55" * 63]
    for i, chunk in enumerate(chunks):
        assert ask(e, chunk)[:2] == OKAY
        if i < 3:
            assert e.memory.read(256, 256) == b"\xff" * 256  # nothing until the page buffer is full
    assert e.memory.read(256, 256) == b"".join(chunks)
    assert not e.writing and not e.refusals
    assert e.memory.read(0, 256) == b"\xff" * 256


def test_answers_keep_the_previous_answers_tail():
    """send_response copies 2 bytes into the one IN buffer: the rest is the boot info's."""
    e = engine()
    info = ask(e, xusb_command(XusbCommand.GET_BOOT_INFO))
    status = ask(e, xusb_command(XusbCommand.ERASE))
    assert status[:2] == OKAY and status[2:] == info[2:]


def test_unknown_command_and_empty_report_get_no_answer():
    e = engine()
    assert ask(e, b"\x05\x00\x20") is None  # CMD_TEST (a RAM dump) is not modelled
    assert ask(e, b"\x7f") is None
    e.out_report(b"")
    assert e.in_report(64) is None


def test_second_write_to_a_page_is_refused_not_merged():
    e = engine()
    ask(e, xusb_command(XusbCommand.ERASE))
    for fill in (0x00, 0xA5):
        assert ask(e, xusb_command(XusbCommand.WRITE, 0, 256))[:2] == OKAY
        answers = [ask(e, bytes([fill]) * 64) for _ in range(4)]
    # the page holds 0x00 from the first WRITE: flash cannot set bits without an erase
    assert [a[:2] for a in answers] == [OKAY, OKAY, OKAY, ERROR]
    assert e.memory.read(0, 256) == bytes(256)
    assert not e.writing


def test_set_report_is_stalled_as_descriptors_c_does():
    e = engine()
    with pytest.raises(Exception):
        e.set_report(xusb_command(XusbCommand.GET_BOOT_INFO))


# --------------------------------------------------------------------------
# our host against our device, on the in-process bus

def board(chip, **options):
    bus = VirtualBus()
    em = Emulator(chip, "hid", options={"dialect": "xusb", **options})
    em.attach(bus)
    return em, get_backend(bus)


def reference(chip, image):
    flash = bytearray(b"\xff" * chip.flash_size)
    for start, data in image.segments:
        flash[start:start + len(data)] = data
    return bytes(flash)


def code(n, seed):
    rng = random.Random(f"xusb:{seed}")
    return b"\x0c\x94" + bytes(rng.getrandbits(8) for _ in range(n - 2))


IMAGES = {
    # name: chip, segments (start, length)
    "one-odd-run": ("atxmega32a4u", [(0, 1001)]),
    "gaps-odd-lengths": ("atxmega32a4u", [(0, 3), (0x1F1, 17), (0x2000, 255), (0x7F00, 256)]),
    "full-application": ("atxmega64a4u", [(0, 64 * 1024)]),
    "above-64k-256-pages": ("atxmega128a4u", [(0, 300), (0xFFF0, 0x31), (0x1FF00, 0x100)]),
    "above-64k-512-pages": ("atxmega128a3u", [(0, 513), (0x10000, 7), (0x1FE01, 0x1FF)]),
    "256k-top": ("atxmega256a3u", [(0, 2), (0x20000, 1000), (0x3FFFF, 1)]),
}


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_flash_equals_the_image_on_erased_flash(name):
    chip_name, spans = IMAGES[name]
    em, backend = board(chip_name)
    image = Image([(start, code(n, f"{name}:{start}") if start == 0 else
                    bytes(random.Random(f"{name}:{start}").getrandbits(8) for _ in range(n)))
                   for start, n in spans])
    result = host.flash(image, backend, dialect="xusb", progress=False, leave_wait=0.3)
    assert em.memory.flash_bytes() == reference(em.chip, image)
    assert result.verified and "verified" in result.steps
    assert any(s.startswith("application CRC 0x") for s in result.steps)
    assert em.mode == "application"  # RESET: the entry policy found an application
    em.close()


def test_flash_over_an_old_application_erases_it():
    em, backend = board("atxmega32a4u")
    em.memory.poke(0x4000, b"\x00" * 512)
    image = Image([(0, code(100, "over"))])
    host.flash(image, backend, dialect="xusb", progress=False, leave_wait=0.3)
    assert em.memory.flash_bytes() == reference(em.chip, image)


def test_list_shows_the_boot_info():
    em, backend = board("atxmega128a4u")
    lines = host.list_devices(backend)
    assert len(lines) == 1
    assert lines[0].startswith("[1209:bb01] xusb ")
    assert 'mcu="atxmega128a4u" version=1.0 flash=131072 page=256' in lines[0]


def test_prototype_ids():
    em, backend = board("atxmega32a4u", prototype_ids=True)
    assert host.list_devices(backend)[0].startswith("[6666:b007] xusb ")
    host.flash(Image([(0, code(300, "proto"))]), backend, progress=False, leave_wait=0.3)
    assert em.mode == "application"


def test_image_into_the_boot_section_is_refused_before_anything_is_erased():
    em, backend = board("atxmega32a4u")
    em.memory.poke(0, b"\x12\x34")
    before = em.memory.flash_bytes()
    with pytest.raises(host.ImageRejected) as info:
        host.flash(Image([(0, code(16, "x")), (0x8000, b"\x00")]), backend, dialect="xusb", progress=False)
    assert "0x8000" in str(info.value)
    assert em.memory.flash_bytes() == before


def test_host_names_not_erased(monkeypatch):
    em, backend = board("atxmega32a4u")
    monkeypatch.setattr(host.XusbHost, "erase", lambda self: None)
    with pytest.raises(host.HidError) as info:
        host.flash(Image([(0, code(300, "ne"))]), backend, dialect="xusb", progress=False)
    assert str(info.value) == "WRITE of 512 bytes at 0x0: device reports ERROR_NOT_ERASED"


# --------------------------------------------------------------------------
# a corrupting device: the flash fails naming the CRC, exit 1

def corrupt_crc(monkeypatch):
    """The device answers CRC with a wrong application CRC."""
    command = XusbEngine._command

    def wrong(self, report):
        command(self, report)
        if report[0] == XusbCommand.CRC:
            answer = bytearray(self.queue.pop())
            answer[1] ^= 0x01
            self.queue.append(bytes(answer))

    monkeypatch.setattr(XusbEngine, "_command", wrong)


def corrupt_data(monkeypatch):
    """The device flips a bit of every page it programs: its CRC is right about a wrong flash."""
    program = SimulatedFlash.program

    def flip(self, address, data):
        return program(self, address, bytes([data[0] & 0xFE]) + data[1:] if data[0] & 1 else data)

    monkeypatch.setattr(SimulatedFlash, "program", flip)


@pytest.mark.parametrize("corrupt", [corrupt_crc, corrupt_data])
def test_corrupting_device_fails_naming_the_crc(corrupt, tmp_path, capsys, monkeypatch):
    corrupt(monkeypatch)
    path = tmp_path / "fw.hex"
    save(Image([(0, b"\x0d\x94" + code(700, "bad")[2:])]), path)
    rc = main(["flash", str(path), "--via", "hid", "--dialect", "xusb", "--emulate", "atxmega32a4u",
               "--no-progress"])
    out, err = capsys.readouterr()
    assert rc == 1, (out, err)
    assert "verified" not in out
    [line] = err.strip().splitlines()
    assert line.startswith("bootkit: failed: verify failed: the application CRC the device computed, 0x")
    assert "(xmega NVM CRC)" in line


def test_cli_flash_and_bad_input(tmp_path, capsys):
    path = tmp_path / "fw.hex"
    save(Image([(0, code(700, "cli"))]), path)
    rc = main(["flash", str(path), "--via", "hid", "--dialect", "xusb", "--emulate", "atxmega32a4u",
               "--no-progress"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "via hid/xusb" in out and "verified" in out and "application CRC 0x" in out
    big = tmp_path / "big.hex"
    save(Image([(0, code(0x8001, "big"))]), big)  # one byte into the boot section
    rc = main(["flash", str(big), "--via", "hid", "--dialect", "xusb", "--emulate", "atxmega32a4u",
               "--no-progress"])
    out, err = capsys.readouterr()
    assert rc == 2
    [line] = err.strip().splitlines()
    assert "0x8000" in line and str(big) in line


# --------------------------------------------------------------------------
# the entry policy as xusb-boot's README documents it

class Mem:
    def __init__(self, blank):
        self.blank = blank
        self.app_valid = True

    def is_blank(self):
        return self.blank


def test_entry_blank_flash_stays_in_the_bootloader():
    b = Board(Mem(blank=True), EntryPolicy(triggers=XUSB_TRIGGERS))
    assert b.power_on() == "bootloader"
    assert b.watchdog() == "bootloader"  # "keeps resetting until it can establish a USB connection"
    assert b.reset_button() == "bootloader"


def test_entry_reset_button_toggles():
    b = Board(Mem(blank=False), EntryPolicy(triggers=XUSB_TRIGGERS))
    assert b.power_on() == "application"
    assert b.reset_button() == "bootloader"  # pressed while the application runs
    assert b.reset_button() == "application"  # pressed while the bootloader runs
    assert b.reset() == "application"  # a plain reset (no double-reset trigger here)


def test_entry_magic_and_watchdog():
    b = Board(Mem(blank=False), EntryPolicy(triggers=XUSB_TRIGGERS))
    b.power_on()
    assert b.application_requests_bootloader() == "bootloader"
    assert b.watchdog() == "application"


def test_reset_button_without_the_trigger_is_a_plain_reset():
    b = Board(Mem(blank=False), EntryPolicy())
    b.power_on()
    assert b.reset_button() == "application"


def test_emulator_watchdog_and_reset_button():
    clock = [0.0]
    em, backend = board("atxmega32a4u")
    em.memory.poke(0, b"\x0c\x94")
    assert em.mode == "bootloader"
    _engine(em).started = 0.0
    em.target.clock = lambda: clock[0]
    clock[0] = 1.9
    em.target.poll()
    assert em.mode == "bootloader"
    clock[0] = 2.0
    em.target.poll()
    assert em.mode == "application"
    assert any(e.startswith("watchdog: no SOF within 2 s") for e in em.events)
    em.press("magic")
    em.target.poll()
    assert em.mode == "bootloader"
    em.press("reset-button")
    em.target.poll()
    assert em.mode == "application"


def test_watchdog_does_not_fire_once_a_host_was_seen():
    em, backend = board("atxmega32a4u")
    em.memory.poke(0, b"\x0c\x94")
    host.list_devices(backend)  # a host: requests, and the SOFs with them
    _engine(em).started = 0.0
    em.target.clock = lambda: 1e9
    em.target.poll()
    assert em.mode == "bootloader"


def _engine(em) -> XusbEngine:
    dev = em.target.device
    for b in dev._bindings:
        if isinstance(b.function.engine, XusbEngine):
            return b.function.engine
    raise AssertionError("no xusb engine")


def test_product_profile_entry_triggers(tmp_path):
    from pathlib import Path

    from bootkit.product import ProductError, load_product

    example = Path(__file__).resolve().parents[2] / "examples" / "products" / "xmega-xusb-boot.toml"
    product = load_product(example)
    assert (product.dialect, product.chip.name) == ("xusb", "atxmega128a4u")
    assert product.policy.triggers == XUSB_TRIGGERS
    # the optional triggers need a personality that declares them, and are never a default
    other = tmp_path / "cdc.toml"
    other.write_text('[product]\nname = "x"\nchip = "atmega32u4"\npersonality = "cdc"\n'
                     '[entry]\ntriggers = ["blank", "watchdog"]\n')
    with pytest.raises(ProductError) as info:
        load_product(other)
    assert "'watchdog' needs personality hid" in str(info.value)
    plain = tmp_path / "native.toml"
    plain.write_text('[product]\nname = "x"\nchip = "atxmega32a4u"\npersonality = "hid"\ndialect = "native"\n')
    assert not {"reset-button", "watchdog"} & load_product(plain).policy.triggers


def test_emulator_without_profile_has_the_dialects_triggers():
    em, _ = board("atxmega32a4u")
    assert em.policy.triggers == XUSB_TRIGGERS
    native = Emulator("atxmega32a4u", "hid", options={"dialect": "native"})
    assert native.policy == EntryPolicy()
