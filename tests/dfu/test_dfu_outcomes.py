"""Issue 16 for DFU: every reported success is observed.

Each dialect reads the device's final status, reports only what enumerated
after it left, refuses a file made for another device and an image the
chip's bootloader would not start before anything is erased, and fails
(not "verified") when the read-back differs.  Through the host client and
through ``bootkit flash`` (``bootkit.cli.main``, exit 0/1/2).
"""

from __future__ import annotations

import json
import random

import pytest

from bootkit.classes.dfu import host
from bootkit.classes.dfu.device import DfuEngine, DfuSeEngine, FlipEngine
from bootkit.cli import main
from bootkit.emulator import Emulator
from bootkit.formats import Image, load, save
from bootkit.formats.dfu import add_suffix
from bootkit.memory import get_chip
from bootkit.transports.virtual import VirtualBus, get_backend

APP_IDS = "1209:B00E"  # the emulated application (DFU run-time interface)


def code(n: int, seed) -> bytes:
    """Bytes that never start with an erased word."""
    rng = random.Random(f"dfu-outcomes:{seed}")
    return b"\x0c\x94" + bytes(rng.getrandbits(8) for _ in range(max(0, n - 2)))


class Board:
    def __init__(self, tmp_path, chip, dialect, name="flash.bin"):
        self.chip = get_chip(chip)
        self.dialect = dialect
        self.path = tmp_path / name
        self.bus = VirtualBus()
        self.em = Emulator(self.chip, "dfu", options={"dialect": dialect}, image=self.path)
        self.em.attach(self.bus)
        self.backend = get_backend(self.bus)

    @property
    def memory(self):
        return self.em.memory

    def flash(self, image, **kw):
        kw.setdefault("dialect", self.dialect)
        kw.setdefault("chip", self.chip)
        return host.flash(image, self.backend, progress=False, **kw)


@pytest.fixture
def board(tmp_path):
    made = []

    def make(chip, dialect, **kw):
        b = Board(tmp_path, chip, dialect, **kw)
        made.append(b)
        return b

    yield make
    for b in made:
        b.em.close()


def app_start(chip):
    return chip.layout().application_ranges("flash")[0][0]


def run_cli(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


# --------------------------------------------------------------------------
# item 1: the device's final status decides, in every dialect


def test_dfuse_partial_image_into_blank_flash_fails_with_errFIRMWARE(tmp_path, capsys):
    """The issue's reproduction: 1 KiB at 0x08004000 into a blank stm32f411.  The manifest
    fails (first word of flash erased); the old host printed "verified ... left DFU mode", exit 0."""
    save(Image([(0x08004000, code(1024, "f411"))]), tmp_path / "x.hex")
    rc, out, err = run_cli(capsys, "flash", str(tmp_path / "x.hex"), "--via", "dfu", "--emulate", "stm32f411",
                           "--image", str(tmp_path / "f.bin"))
    assert rc == 1, (out, err)
    assert "verified" not in out
    assert err.strip().splitlines() == [
        "bootkit: failed: the device stayed in its bootloader: device reports errFIRMWARE in dfuERROR "
        "(device's firmware is corrupt; it cannot return to run-time operations)"]
    state = json.loads((tmp_path / "f.bin.state.json").read_text())
    assert state["app_valid"] is False


@pytest.mark.parametrize("dialect,chip", [("dfu", "stm32f103c8"), ("dfuse", "stm32f411")])
def test_manifest_refused_names_the_status(board, dialect, chip):
    b = board(chip, dialect)
    chip = b.chip
    image = Image([(app_start(chip) + 0x4000, code(1000, dialect))])
    with pytest.raises(host.DfuError, match=r"^the device stayed in its bootloader: .*errFIRMWARE in dfuERROR"):
        b.flash(image)
    assert not b.memory.app_valid and b.em.mode == "bootloader"


def test_flip_erased_first_word_keeps_the_bootloader(board, tmp_path, capsys):
    """LUFA starts nothing when pgm_read_word(0) is 0xFFFF: the bootloader comes back."""
    b = board("atmega32u4", "flip")
    image = Image([(0, b"\xff\xff" + code(600, "flip")[2:])])
    with pytest.raises(host.DfuError) as info:
        b.flash(image)
    assert str(info.value) == "the device stayed in its bootloader: first word of flash is erased: the bootloader kept control"
    assert b.em.mode == "bootloader"

    save(image, tmp_path / "ff.hex")
    rc, out, err = run_cli(capsys, "flash", str(tmp_path / "ff.hex"), "--via", "dfu", "--emulate", "atmega32u4")
    assert rc == 1 and "application started" not in out
    assert err.strip() == ("bootkit: failed: the device stayed in its bootloader: first word of flash is erased: "
                           "the bootloader kept control")


# --------------------------------------------------------------------------
# item 2 (issue item 3): report what was observed after leaving

DIALECTS = [("dfu", "stm32f103c8"), ("dfuse", "stm32f411"), ("flip", "atmega32u4")]


@pytest.mark.parametrize("dialect,chip", DIALECTS)
def test_application_started_only_when_it_came_back(board, dialect, chip):
    b = board(chip, dialect)
    result = b.flash(Image([(app_start(b.chip), code(3000, dialect))]))
    assert result.steps[-1] == f"application started (came back as {APP_IDS})"
    assert result.steps.count(result.steps[-1]) == 1
    assert b.em.mode == "application"


@pytest.mark.parametrize("dialect,chip", DIALECTS)
def test_left_but_not_seen_again_is_reported_as_such(board, monkeypatch, dialect, chip):
    """An application without USB: the bootloader goes and nothing comes back (exit 0, honest)."""
    b = board(chip, dialect)
    monkeypatch.setattr(b.em, "definition", _without_application(b.em.definition))
    result = b.flash(Image([(app_start(b.chip), code(2000, dialect))]), leave_timeout=0.3)
    assert result.steps[-1] == "left the bootloader (not seen again within 0.3 s)"
    assert not any(s.startswith("application started") for s in result.steps)
    assert b.em.mode == "application"


def _without_application(definition):
    """The personality with an application that does not enumerate (it has no USB)."""

    class NoUsbApplication(type(definition)):
        def application_device(self, memory, chip, dialect, options):
            return None

    return NoUsbApplication()


def test_no_leave_reports_no_start(board):
    b = board("atmega32u4", "flip")
    result = b.flash(Image([(0, code(500, "noleave"))]), leave=False)
    assert not any("started" in s or "left" in s for s in result.steps)
    assert b.em.mode == "bootloader"


# --------------------------------------------------------------------------
# item 3 (issue item 6): a DFU suffix's ids are compared with the device's


def _dfu_file(tmp_path, vid, pid, data=None):
    path = tmp_path / f"fw-{vid:04x}-{pid:04x}.dfu"
    path.write_bytes(add_suffix(data or code(1024, "suffix"), vid=vid, pid=pid))
    return path


def test_suffix_for_another_device_is_refused_before_erasing(board, tmp_path):
    b = board("atmega32u4", "flip")
    old = code(4096, "old")
    b.memory.poke(0, old)
    image = load(_dfu_file(tmp_path, 0x0483, 0xDF11))
    with pytest.raises(host.ImageRejected) as info:
        b.flash(image)
    assert str(info.value) == ("DFU suffix ID 0483:df11 does not match the device (03eb:2ff4); "
                               "--force flashes it anyway")
    assert b.memory.erase_counters.total == 0
    assert b.memory.flash_bytes()[:4096] == old

    result = b.flash(image, force=True)
    assert result.verified
    assert b.memory.flash_bytes()[:1024] == image.tobytes(0, 1024)


def test_suffix_cli_exit_2_names_both_ids(tmp_path, capsys):
    path = _dfu_file(tmp_path, 0x0483, 0xDF11)
    rc, out, err = run_cli(capsys, "flash", str(path), "--via", "dfu", "--emulate", "atmega32u4",
                           "--image", str(tmp_path / "m.bin"))
    assert rc == 2
    assert err.strip() == (f"bootkit: error: {path}: DFU suffix ID 0483:df11 does not match the device "
                           f"(03eb:2ff4); --force flashes it anyway")
    assert (tmp_path / "m.bin").read_bytes()[:1024] == b"\xff" * 1024


@pytest.mark.parametrize("vid,pid", [(0xFFFF, 0xFFFF), (0x03EB, 0xFFFF), (0x03EB, 0x2FF4), (0x1209, 0xB00E)],
                         ids=["any", "vendor-only", "dfu-mode-ids", "runtime-ids"])
def test_suffix_ids_that_match(board, tmp_path, vid, pid):
    """0xFFFF matches any id; the application's run-time ids match too (dfu-util main.c)."""
    b = board("atmega32u4", "flip")
    b.flash(Image([(0, code(700, "first"))]))  # the application runs: the next flash detaches it
    assert b.em.mode == "application"
    image = load(_dfu_file(tmp_path, vid, pid))
    assert b.flash(image).verified
    assert b.memory.flash_bytes()[:1024] == image.tobytes(0, 1024)


def test_suffix_checked_for_dfuse_too(board, tmp_path):
    b = board("stm32f411", "dfuse")
    image = load(_dfu_file(tmp_path, 0x03EB, 0x2FF4), base=0x08000000)
    with pytest.raises(host.ImageRejected, match=r"03eb:2ff4 does not match the device \(0483:df11\)"):
        b.flash(image)
    assert b.memory.erase_counters.total == 0


# --------------------------------------------------------------------------
# item 4 (issue item 7): common.preflight before erasing, with force


def test_avr_image_without_the_first_word_is_refused_even_with_force(board):
    b = board("atmega32u4", "flip")
    old = code(8192, "old app")
    b.memory.poke(0, old)
    image = Image([(0x1000, code(512, "no vector"))])
    for force in (False, True):
        with pytest.raises(host.ImageRejected, match=r"no data at 0x0, the application's first word"):
            b.flash(image, force=force)
    assert b.memory.erase_counters.total == 0
    assert b.memory.flash_bytes()[:8192] == old


def test_uf2_of_another_family_is_refused_unless_forced(board, tmp_path):
    from bootkit.formats import dump

    b = board("stm32f411", "dfuse")
    image = Image([(0x08000000, code(1024, "uf2"))])
    path = tmp_path / "fw.uf2"
    path.write_bytes(dump(image, "uf2", family="rp2040"))
    loaded = load(path)
    with pytest.raises(host.ImageRejected, match=r"UF2 family .*does not match stm32f411"):
        b.flash(loaded)
    assert b.memory.erase_counters.total == 0
    assert b.flash(loaded, force=True).verified


# --------------------------------------------------------------------------
# item 6: a read-back that differs fails the flash (exit 1, not "verified")


def _corrupt_first_byte(monkeypatch, cls, name):
    real = getattr(cls, name)

    def wrong(self, *args, **kw):
        data = real(self, *args, **kw)
        if data and len(data) > 1:  # leave one-byte FLIP responses alone
            data = bytes([data[0] ^ 0x01]) + bytes(data[1:])
        return data

    monkeypatch.setattr(cls, name, wrong)


CORRUPT = {"dfu": (DfuEngine, "upload"), "dfuse": (DfuSeEngine, "upload"), "flip": (FlipEngine, "_upload_request")}


@pytest.mark.parametrize("dialect,chip", DIALECTS)
def test_wrong_read_back_fails_the_flash(monkeypatch, tmp_path, capsys, dialect, chip):
    chip = get_chip(chip)
    start = app_start(chip)
    save(Image([(start, code(3001, "rb"))]), tmp_path / "fw.hex")
    _corrupt_first_byte(monkeypatch, *CORRUPT[dialect])
    rc, out, err = run_cli(capsys, "flash", str(tmp_path / "fw.hex"), "--via", "dfu", "--dialect", dialect,
                           "--emulate", chip.name, "--image", str(tmp_path / "f.bin"))
    assert rc == 1, (out, err)
    assert "verified" not in out
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("bootkit: failed: verify failed") and f"0x{start:X}" in err, err


@pytest.mark.parametrize("dialect,chip", DIALECTS[:2])
def test_short_read_back_is_not_verified(board, monkeypatch, dialect, chip):
    """A device that returns one byte short: the missing byte was never read, so even an
    image ending in 0xFF (which the old comparison filled in) is not "verified"."""
    b = board(chip, dialect)
    cls, name = CORRUPT[dialect]
    real = getattr(cls, name)
    monkeypatch.setattr(cls, name, lambda self, *a: real(self, *a)[:-1])
    image = Image([(app_start(b.chip), code(1000, "short")[:-8] + b"\xff" * 8)])
    with pytest.raises(host.DfuError, match=r"verify failed in .*: the device returned 999 of its 1000 bytes"):
        b.flash(image)


# --------------------------------------------------------------------------
# item 5: the FLIP program block as LUFA's DFU bootloader reads it


def _prog_block(start: int, data: bytes, filler: int, trailer: bytes = bytes(16)) -> bytes:
    end = start + len(data) - 1
    header = bytes((0x01, 0x00, start >> 8, start & 0xFF, end >> 8, end & 0xFF))
    return header + bytes(32 - len(header)) + b"\xee" * filler + data + trailer


@pytest.mark.parametrize("start", [0x1234, 0x0F38, 0x2001, 0x3FE0], ids=lambda a: f"0x{a:04X}")
def test_flip_program_block_skips_StartAddr_mod_32_of_filler(board, start):
    """LUFA BootloaderDFU.c: after the 32-byte command block, StartAddr % FIXED_CONTROL_ENDPOINT_SIZE
    (32 in its LUFAConfig.h) filler bytes, then the data; whatever follows is ignored."""
    import usb.core

    from bootkit.classes.dfu.protocol import DNLOAD, GETSTATUS, State, Status, StatusReply

    b = board("atmega32u4", "flip")
    dev = next(iter(usb.core.find(find_all=True, backend=b.backend)))
    dev.set_configuration()
    data = code(301, start)
    for trailer in (bytes(16), b"", b"\x99" * 40):  # the suffix, none, or more than it
        b.memory.erase_all()
        dev.ctrl_transfer(0x21, DNLOAD, 0, 0, _prog_block(start, data, start % 32, trailer))
        st = StatusReply.unpack(bytes(dev.ctrl_transfer(0xA1, GETSTATUS, 0, 0, 6)))
        assert (st.bStatus, st.bState) == (Status.OK, State.dfuDNLOAD_IDLE), st.describe()
        flash = b.memory.flash_bytes()
        assert flash[start:start + len(data)] == data
        assert flash[:start] == b"\xff" * start and flash[start + len(data):0x7000] == b"\xff" * (0x7000 - start - len(data))
        dev.ctrl_transfer(0x21, DNLOAD, 0, 0, None)  # back to dfuIDLE


def test_flip_program_block_without_its_filler_is_refused(board):
    """A block too short for header + filler + data: LUFA would wait for bytes that never come;
    the emulator stalls with errNOTDONE and writes nothing."""
    import usb.core

    from bootkit.classes.dfu.protocol import DNLOAD, GETSTATUS, State, Status, StatusReply

    b = board("atmega32u4", "flip")
    dev = next(iter(usb.core.find(find_all=True, backend=b.backend)))
    dev.set_configuration()
    start = 0x1238  # StartAddr % 32 = 24 filler bytes expected
    with pytest.raises(usb.core.USBError):
        dev.ctrl_transfer(0x21, DNLOAD, 0, 0, _prog_block(start, code(531, "nofill"), 0))
    st = StatusReply.unpack(bytes(dev.ctrl_transfer(0xA1, GETSTATUS, 0, 0, 6)))
    assert (st.bStatus, st.bState) == (Status.errNOTDONE, State.dfuERROR)
    assert b.memory.flash_bytes() == b"\xff" * b.chip.flash_size


@pytest.mark.parametrize("chip,segments", [
    ("atmega32u4", [(0, 77), (0x0F38, 301), (0x2001, 1500), (0x6F11, 0xEF)]),
    ("at90usb1286", [(0, 1000), (0xFFE3, 0x21), (0x10007, 3001), (0x1DEE1, 0x11F)]),
], ids=["atmega32u4", "at90usb1286"])
def test_flip_host_flashes_unaligned_odd_segments_byte_for_byte(board, chip, segments):
    """Segments that start off any 32-byte, page or 1 KiB boundary, odd lengths, a block across
    0x10000: bootkit's FLIP host sends them as whole pages, and they land byte for byte."""
    b = board(chip, "flip")
    image = Image([(s, code(n, (chip, s))) for s, n in segments])
    assert b.flash(image).verified
    ref = bytearray(b"\xff" * b.chip.flash_size)
    for s, d in image.segments:
        ref[s:s + len(d)] = d
    assert b.memory.flash_bytes() == bytes(ref)


def test_bootloader_still_there_after_leave_is_a_failure(board, monkeypatch):
    """Plain DFU: manifested, then the USB reset does not start anything (the device stays on
    the bus in dfuIDLE): not "application started", not "left", but a failure."""
    b = board("stm32f103c8", "dfu")
    monkeypatch.setattr(DfuEngine, "bus_reset", lambda self: self._enter_idle())
    with pytest.raises(host.DfuError) as info:
        b.flash(Image([(app_start(b.chip), code(1500, "stays"))]), leave_timeout=0.3)
    assert str(info.value) == "the device stayed in its bootloader: it is still there 0.3 s after the leave request"
    assert b.em.mode == "bootloader"


@pytest.mark.parametrize("dialect,chip", DIALECTS[1:])
def test_leave_refused_names_the_device_status(board, monkeypatch, dialect, chip):
    """The device refuses the leave request itself (a STALL with a status): the status is named."""
    from bootkit.classes.dfu.device import DfuFault
    from bootkit.classes.dfu.protocol import Status

    b = board(chip, dialect)
    if dialect == "flip":
        real = FlipEngine._write_command

        def refuse_start(self, args, data):
            if args[0] == 0x03:
                raise DfuFault(Status.errFIRMWARE, "no application")
            return real(self, args, data)

        monkeypatch.setattr(FlipEngine, "_write_command", refuse_start)
    else:
        def refuse_leave(self):
            from bootkit.classes.dfu.device import DfuFault

            raise DfuFault(Status.errVENDOR, "leave refused")

        monkeypatch.setattr(DfuSeEngine, "_zero_length_dnload", refuse_leave)
    status = "errFIRMWARE" if dialect == "flip" else "errVENDOR"
    with pytest.raises(host.DfuError, match=rf"^the device stayed in its bootloader: .*{status} in dfuERROR"):
        b.flash(Image([(app_start(b.chip), code(1500, "refused"))]))
    assert b.em.mode == "bootloader"


@pytest.mark.parametrize("chip,segments", [
    # 0x25F0 shares the flash page 0x2580 with the end of the segment before it
    ("atmega32u4", [(0, 77), (0x0F37, 3001), (0x2001, 1500), (0x25F0, 0x8), (0x6F11, 0xEF)]),
    ("at90usb1286", [(0, 1000), (0xFFE3, 0x21), (0x10007, 3001), (0x1DEE1, 0x11F)]),
], ids=["atmega32u4", "at90usb1286"])
def test_flip_host_programs_whole_flash_pages(board, monkeypatch, chip, segments):
    """LUFA erases the page a program block starts in (and each further page it reaches) and
    writes words: every block the host sends starts and ends on a flash page boundary, and
    a page is never sent twice, so no block wipes what an earlier one wrote."""
    b = board(chip, "flip")
    page = b.chip.layout().flash.write_size
    seen = []
    real = FlipEngine._prog_start

    def record(self, args, data):
        real(self, args, data)
        if args[0] == 0x00:
            seen.append((self.page64k * 0x10000 + self.start_addr, self.end_addr - self.start_addr + 1))

    monkeypatch.setattr(FlipEngine, "_prog_start", record)
    image = Image([(s, code(n, (chip, s))) for s, n in segments])
    result = b.flash(image)
    assert result.verified and result.bytes == image.size
    assert seen and all(a % page == 0 and n % page == 0 for a, n in seen), [(hex(a), n) for a, n in seen]
    pages = [p for a, n in seen for p in range(a, a + n, page)]
    assert len(pages) == len(set(pages))
    touched = {s - s % page + k for s, d in image.segments for k in range(0, len(d) + s % page, page)}
    assert set(pages) >= {p - p % page for p in touched}


def test_flip_eeprom_block_off_a_32_byte_boundary_carries_its_filler(board):
    """EEPROM goes as it is (LUFA writes it byte by byte), so its blocks start anywhere and
    carry StartAddr % 32 filler bytes; LUFA discards them before either memory's data."""
    b = board("atmega32u4", "flip")
    data = code(45, "ee")
    b.flash(Image([(0x123, data), (0x3F1, b"\x5a")]), memory="eeprom", leave=False)
    eeprom = b.memory.region_bytes("eeprom")
    assert eeprom[0x123:0x123 + 45] == data and eeprom[0x3F1] == 0x5A
    assert eeprom[:0x123] == b"\xff" * 0x123 and eeprom[0x123 + 45:0x3F1] == b"\xff" * (0x3F1 - 0x123 - 45)
