"""AVRprog: Adafruit AVRprog's calls over an ISP link, against the emulated AVR."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bootkit.formats import Image, load, save
from bootkit.isp import AVRprog, EmulatedTarget
from bootkit.isp import protocol as P
from bootkit.isp.errors import IspError, IspInputError
from bootkit.isp.link import EmulatedLink
from bootkit.isp.target import EmulatedAvr
from bootkit.memory.chips import EEPROM_BASE, get_chip
from bootkit.samples import sample_image

ROOT = Path(__file__).resolve().parents[2]
T85 = AVRprog.Boards.ATtiny85


def hexfile(tmp_path: Path, image: Image, name: str = "fw.hex") -> Path:
    path = tmp_path / name
    save(image, path)
    return path


@pytest.fixture
def fw(tmp_path):
    image = sample_image("attiny85", 2 * 1024 + 7, 0x1000, 99)
    return image, hexfile(tmp_path, image)


def flash_of(prog: AVRprog) -> bytes:
    assert isinstance(prog.link, EmulatedLink)
    return prog.link.target.memory.flash_bytes()


# ---------------------------------------------------------------- the verbatim script


def test_the_adafruit_style_example_programs_verifies_and_reads_fuses(tmp_path, fw):
    image, path = fw
    flash = tmp_path / "flash.bin"
    run = subprocess.run([sys.executable, str(ROOT / "examples" / "avrprog_attiny85.py"), str(path), str(flash)],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Found ATtiny85" in run.stdout and "Done!" in run.stdout
    assert "Fuses: ['0xf1', '0xd5', '0x6', '0x3f']" in run.stdout
    assert flash.read_bytes()[:image.end] == image.tobytes(0, image.end)
    state = json.loads((tmp_path / "flash.bin.state.json").read_text())
    assert state["fuses"] == "f1d5fe"  # efuse: the ATtiny85's one bit; the others read as 1


def test_the_script_without_arguments_uses_a_sample():
    run = subprocess.run([sys.executable, str(ROOT / "examples" / "avrprog_attiny85.py")], capture_output=True,
                         text=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert run.returncode == 0 and "Done!" in run.stdout, run.stdout + run.stderr


# ---------------------------------------------------------------- chips three ways


@pytest.mark.parametrize("chip", [T85, get_chip("attiny85"), "attiny85", "t85"])
def test_dicts_chips_and_names(chip, fw):
    image, path = fw
    prog = AVRprog(EmulatedTarget("attiny85"))
    assert prog.verify_sig(chip) is True
    assert prog.program_file(chip, path) is True
    assert prog.verify_file(chip, path) is True
    assert flash_of(prog)[:image.end] == image.tobytes(0, image.end)
    assert prog.read_fuses(chip)[:2] == (0x62, 0xDF)


def test_read_fuses_applies_the_mask_and_verify_fuses_compares_under_it():
    prog = AVRprog(EmulatedTarget("attiny85"))
    assert prog.read_fuses(T85) == (0x62, 0xDF, 0x07, 0x3F)  # Adafruit's masks
    assert prog.read_fuses("attiny85") == (0x62, 0xDF, 0x01, 0x03)  # the datasheet's
    assert prog.verify_fuses("attiny85", ext=0xFF, lock=0xFF) is True  # avrdude's spelling, 1 = unimplemented
    assert prog.verify_fuses("attiny85", low=0x63) is False


def test_a_fuse_value_of_zero_is_written_and_the_lock_goes_last():
    prog = AVRprog(EmulatedTarget("atmega328p"))
    prog.write_fuses("atmega328p", low=0x00, lock=0xFE)  # lock mode 2 would block fuse writes after it
    assert prog.read_fuses("atmega328p") == (0x00, 0xD9, 0x07, 0x3E)
    assert prog.verify_fuses("atmega328p", low=0x00) is True


def test_a_realtime_target_is_polled_until_ready(fw):
    image, path = fw
    prog = AVRprog(EmulatedTarget("attiny85", realtime=True))
    assert prog.program_file("attiny85", path) is True
    assert flash_of(prog)[:image.end] == image.tobytes(0, image.end)


def test_mid_level_calls():
    prog = AVRprog(EmulatedTarget("attiny85"))
    prog.begin()
    assert prog.read_signature() == [0x1E, 0x93, 0x0B]
    buf = bytearray(4)
    prog.read(0, buf)
    assert buf == b"\xff" * 4
    prog.end()
    assert not prog.link.target.programming


# ---------------------------------------------------------------- reading to files, EEPROM


@pytest.mark.parametrize("ext", [".hex", ".bin"])
def test_read_flash_and_eeprom_to_files(tmp_path, fw, ext):
    image, path = fw
    prog = AVRprog(EmulatedTarget("attiny85"))
    assert prog.program_file("attiny85", path)
    data = prog.read_flash("attiny85", tmp_path / f"back{ext}")
    assert len(data) == 8192
    back = load(tmp_path / f"back{ext}", base=0)
    assert back.tobytes(0, image.end) == image.tobytes(0, image.end)
    assert back.end == len(data.rstrip(b"\xff"))  # trailing erased bytes left out, as avrdude does
    eeprom = Image([(3, b"hello")])
    assert prog.program_eeprom("attiny85", hexfile(tmp_path, eeprom, "ee.hex")) is True
    assert prog.read_eeprom("attiny85", tmp_path / f"ee{ext}")[:10] == b"\xff\xff\xffhello\xff\xff"
    assert load(tmp_path / f"ee{ext}", base=0).tobytes(3, 8) == b"hello"


def test_program_eeprom_takes_the_elf_section_address_and_keeps_other_bytes(tmp_path):
    prog = AVRprog(EmulatedTarget("atmega328p"))
    assert prog.program_eeprom("atmega328p", hexfile(tmp_path, Image([(0, b"\x01\x02\x03\x04\x05")]), "a.hex"))
    assert prog.program_eeprom("atmega328p", hexfile(tmp_path, Image([(EEPROM_BASE + 2, b"\xaa")]), "b.hex"))
    assert prog.link.target.memory.peek(EEPROM_BASE, 6) == b"\x01\x02\xaa\x04\x05\xff"


# ---------------------------------------------------------------- bad input: one line, nothing written


def preloaded(chip="attiny85") -> AVRprog:
    prog = AVRprog(EmulatedTarget(chip))
    prog.link.target.memory.poke(0, b"\x12\x34")
    return prog


def test_an_image_bigger_than_the_flash_is_refused_before_erasing(tmp_path):
    prog = preloaded()
    big = hexfile(tmp_path, Image([(0, b"\x00" * 8192), (8192, b"\x01")]), "big.hex")
    with pytest.raises(IspInputError) as err:
        prog.program_file("attiny85", big)
    assert str(err.value) == (f"{big}: the image ends at 0x2001, past the end of attiny85's flash "
                              "(8192 bytes); nothing was written")
    assert flash_of(prog)[:2] == b"\x12\x34"


def test_a_file_that_is_not_firmware_is_refused(tmp_path):
    prog = preloaded()
    notes = tmp_path / "notes.txt"
    notes.write_text("hello\n")
    with pytest.raises(IspInputError, match="notes.txt: not a firmware image"):
        prog.program_file(T85, notes)
    with pytest.raises(IspInputError, match="missing.hex: cannot read"):
        prog.program_file(T85, tmp_path / "missing.hex")
    assert flash_of(prog)[:2] == b"\x12\x34"


def test_a_fuse_value_outside_its_mask_writes_nothing():
    prog = AVRprog(EmulatedTarget("attiny85"))
    before = prog.link.target.fuses()
    with pytest.raises(IspInputError) as err:
        prog.write_fuses("attiny85", low=0xE1, ext=0x06)  # the ATtiny85 has one extended fuse bit
    assert str(err.value) == ("attiny85: efuse value 0x06 sets bits outside its mask 0x01 (use 0x00 or 0xFE); "
                              "nothing was written")
    assert prog.link.target.fuses() == before
    with pytest.raises(IspInputError, match="lock value 256 is not a byte"):
        prog.write_fuses(T85, lock=256)


def test_a_wrong_signature_fails_verify_and_refuses_to_program(fw):
    image, path = fw
    prog = preloaded("atmega328p")
    assert prog.verify_sig(T85) is False
    with pytest.raises(IspError) as err:
        prog.program_file(T85, path)
    assert str(err.value) == ("signature 1E 95 0F is not ATtiny85's 1E 93 0B: wrong chip or wiring; "
                              "nothing was written")
    assert isinstance(err.value, RuntimeError)  # what Adafruit's code raises
    assert flash_of(prog)[:2] == b"\x12\x34"


def test_a_locked_target(tmp_path, fw):
    image, path = fw
    prog = AVRprog(EmulatedTarget("attiny85"))
    assert prog.program_file("attiny85", path)
    prog.write_fuses("attiny85", lock=0xFC)  # lock mode 3
    with pytest.raises(IspError, match=r"attiny85 is locked \(lock byte 0xFC, lock mode 3\): its flash and EEPROM "
                                       r"cannot be read; only erase_chip\(\) unlocks it"):
        prog.read_flash("attiny85", tmp_path / "back.hex")
    with pytest.raises(IspError, match="is locked"):
        prog.verify_file("attiny85", path)
    with pytest.raises(IspError, match=r"its fuses cannot be written; erase_chip\(\) clears the lock bits"):
        prog.write_fuses("attiny85", low=0xE2)
    with pytest.raises(IspError, match="its EEPROM cannot be written"):
        prog.program_eeprom("attiny85", hexfile(tmp_path, Image([(0, b"x")]), "ee.hex"))
    assert not (tmp_path / "back.hex").exists()
    assert prog.program_file("attiny85", path) is True  # chip erase unlocks
    assert prog.read_fuses("attiny85")[3] == 0x03


def test_bad_chips_and_extensions_are_input_errors(tmp_path):
    prog = AVRprog(EmulatedTarget("attiny85"))
    with pytest.raises(IspInputError, match="lacks 'page_size'"):
        prog.verify_sig({"name": "x", "sig": [1, 2, 3], "flash_size": 8192, "fuse_mask": (0, 0, 0, 0)})
    with pytest.raises(IspInputError, match="unknown chip 'atmega9'"):
        prog.verify_sig("atmega9")
    with pytest.raises(IspInputError, match="stm32f103c8 is not a classic AVR"):
        prog.verify_sig("stm32f103c8")
    with pytest.raises(IspInputError, match=r"back.txt: cannot tell the format"):
        prog.read_flash("attiny85", tmp_path / "back.txt")
    with pytest.raises(IspInputError, match="needs an ISP link"):
        AVRprog("attiny85")  # type: ignore[arg-type]


def test_program_file_verifies_page_by_page_and_stops_at_the_first_bad_one(tmp_path):
    class Flaky(EmulatedLink):
        """Drops the first byte of the page at 0x40 (a bad wire during one page)."""

        def write_page(self, memory, address, data, *, page_size):
            if memory == "flash" and address == 0x40:
                data = b"\xff" + bytes(data[1:])
            super().write_page(memory, address, data, page_size=page_size)

    image = Image([(0, bytes(range(256)))])
    prog = AVRprog(Flaky(EmulatedAvr("attiny85")))
    assert prog.program_file("attiny85", hexfile(tmp_path, image)) is False
    flash = flash_of(prog)
    assert flash[:0x40] == bytes(range(0x40)) and flash[0x80:0x100] == b"\xff" * 0x80  # stopped there
    assert prog.program_file("attiny85", hexfile(tmp_path, image), verify=False) is True
    assert prog.verify_file("attiny85", hexfile(tmp_path, image)) is False


def test_the_link_is_left_out_of_programming_mode_after_every_call(fw):
    image, path = fw
    prog = AVRprog(EmulatedTarget("attiny85"))
    for call in (lambda: prog.verify_sig(T85), lambda: prog.program_file(T85, path), lambda: prog.read_fuses(T85),
                 prog.erase_chip, lambda: prog.write_fuses(T85, low=0x62)):
        call()
        assert not prog.link.target.programming
    prog.write_fuses(T85, lock=0xFC)
    with pytest.raises(IspError):
        prog.write_fuses(T85, low=0x62)  # locked: refused after entering programming mode
    assert not prog.link.target.programming


def test_a_flash_reported_done_is_already_in_the_image_file(tmp_path, fw):
    image, path = fw
    flash = tmp_path / "flash.bin"
    prog = AVRprog(EmulatedTarget("attiny85", image=flash))
    assert prog.program_file("attiny85", path) is True
    # before close(): the target was released from reset, its image file holds what was written
    assert flash.read_bytes()[:image.end] == image.tobytes(0, image.end)
    prog.close()


def test_write_fuses_sends_nothing_for_no_values():
    class Counting(EmulatedLink):
        sent = 0

        def transact(self, cmd):
            self.sent += 1
            return super().transact(cmd)

    link = Counting(EmulatedAvr("attiny85"))
    AVRprog(link).write_fuses(T85)
    assert link.sent == 0
    assert P.write_fuse("lfuse", 0)  # the codec the calls use


def test_progress_bar_on_request(fw, capsys):
    from bootkit import progress

    image, path = fw
    progress.reset_phases()
    prog = AVRprog(EmulatedTarget("attiny85"), progress=True)  # a rich bar, even off a terminal
    assert prog.program_file("attiny85", path) is True
    assert prog.read_flash("attiny85", path.with_name("back.bin"))[:image.end] == image.tobytes(0, image.end)
    # the phases an interrupted command reports (bootkit.progress.interrupted_state)
    assert progress.phases == ["erase chip", "program flash", "read flash"]
