"""The ``bootkit`` command: ``bootkit.cli.main(argv)`` returns the exit status
(0 success, 1 the device or tool failed, 2 bad input)."""

from __future__ import annotations

import argparse
import json
import random

import pytest

from bootkit.cli import main
from bootkit.cli.parser import build_parser as _parser
from bootkit.formats import Image, load, save
from bootkit.memory import get_chip


def payload(n: int, seed) -> bytes:
    rng = random.Random(f"cli:{seed}")
    data = bytes(rng.getrandbits(8) for _ in range(n))
    return b"\x0c\x94" + data[2:]


def reference(chip, image: Image) -> bytes:
    ref = bytearray(b"\xff" * chip.flash_size)
    for start, data in image.segments:
        ref[start - chip.flash_start:start - chip.flash_start + len(data)] = data
    return bytes(ref)


# --------------------------------------------------------------------------
# chips, convert


def test_chips_lists_the_database(capsys):
    assert main(["chips"]) == 0
    out = capsys.readouterr().out
    assert "atmega32u4" in out
    assert "stm32f411" in out
    assert "0x7000-0x7FFF" in out  # atmega32u4's 4 KiB bootloader region


def test_convert_hex_uf2_hex_round_trip(tmp_path, capsys):
    # UF2 carries 256-byte payloads: whole blocks round-trip exactly; gaps between blocks stay gaps
    image = Image([(0x08000000, payload(1024, 1)), (0x08004000, payload(512, 2)), (0x08020000, payload(256, 3))])
    src, uf2, back = tmp_path / "fw.hex", tmp_path / "fw.uf2", tmp_path / "back.hex"
    save(image, src)
    assert main(["convert", str(src), str(uf2), "--family", "stm32f4"]) == 0
    raw = uf2.read_bytes()
    assert len(raw) == 512 * (1024 + 512 + 256) // 256
    assert raw[:8] == b"UF2\n\x57\x51\x5d\x9e"
    assert main(["convert", str(uf2), str(back)]) == 0
    assert load(back) == image
    out = capsys.readouterr().out
    assert "fw.hex -> " in out and "3 segment(s)" in out


def test_convert_uf2_needs_a_family(tmp_path, capsys):
    src = tmp_path / "fw.hex"
    save(Image([(0, b"\x01\x02")]), src)
    assert main(["convert", str(src), str(tmp_path / "fw.uf2")]) == 2
    assert "--family" in capsys.readouterr().err
    assert not (tmp_path / "fw.uf2").exists()


def test_convert_corrupt_hex_names_the_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.hex"
    good_line = ":10000000000102030405060708090A0B0C0D0E0F78"
    bad.write_text(":020000040000FA\n" + good_line + "\n" + good_line[:-2] + "79\n:00000001FF\n")
    out = tmp_path / "out.uf2"
    assert main(["convert", str(bad), str(out), "--family", "rp2040"]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "bad.hex" in lines[0]
    assert "line 3" in lines[0]
    assert "checksum" in lines[0]
    assert not out.exists()


def test_convert_missing_file_is_bad_input(tmp_path, capsys):
    assert main(["convert", str(tmp_path / "nope.hex"), str(tmp_path / "x.bin")]) == 2
    assert "nope.hex" in capsys.readouterr().err


# --------------------------------------------------------------------------
# flash / read with --emulate


FLASHED = [
    ("stm32f411", None, [(0x08000000, 3000), (0x08020001, 1001)]),
    ("stm32f411", "dfuse", [(0x08000000, 5), (0x08010000, 77)]),
    ("atmega32u4", None, [(0x0000, 2000), (0x5000, 33)]),  # LUFA FLIP by default
    ("stm32f103c8", "dfu", [(0x08002000, 4000), (0x08008001, 9)]),
    ("at90usb1286", "flip", [(0x0000, 100), (0x10000, 0x80), (0x1D000, 4095)]),
]


@pytest.mark.parametrize("chip_name,dialect,segments", FLASHED, ids=[f"{c}-{d}" for c, d, _ in FLASHED])
def test_flash_emulated_writes_the_image_file(tmp_path, capsys, chip_name, dialect, segments):
    chip = get_chip(chip_name)
    image = Image([(a, payload(n, a)) for a, n in segments])
    fw, flash_bin = tmp_path / "fw.hex", tmp_path / "flash.bin"
    save(image, fw)
    argv = ["flash", str(fw), "--via", "dfu", "--emulate", chip_name, "--image", str(flash_bin)]
    if dialect:
        argv += ["--dialect", dialect]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "fw.hex" in out
    assert flash_bin.read_bytes() == reference(chip, image)
    state = json.loads((tmp_path / "flash.bin.state.json").read_text())
    assert state["app_valid"] is True


@pytest.mark.parametrize("segments,why", [
    ([(0x08000000, 100), (0x08080000 - 0x10, 0x20)], "does not fit"),
    ([(0x07FFFF00, 0x200)], "does not fit"),
], ids=["past-the-end", "below-flash"])
def test_flash_that_does_not_fit_is_bad_input_and_changes_nothing(tmp_path, capsys, segments, why):
    flash_bin = tmp_path / "flash.bin"
    old = Image([(0x08000000, payload(20000, "old"))])
    save(old, tmp_path / "old.hex")
    assert main(["flash", str(tmp_path / "old.hex"), "--emulate", "stm32f411", "--image", str(flash_bin)]) == 0
    before = flash_bin.read_bytes()
    state_before = json.loads((tmp_path / "flash.bin.state.json").read_text())
    capsys.readouterr()

    fw = tmp_path / "big.hex"
    save(Image([(a, payload(n, a)) for a, n in segments]), fw)
    assert main(["flash", str(fw), "--emulate", "stm32f411", "--image", str(flash_bin)]) == 2
    err = capsys.readouterr().err
    assert "big.hex" in err and why in err
    assert len(err.strip().splitlines()) == 1
    assert flash_bin.read_bytes() == before
    state = json.loads((tmp_path / "flash.bin.state.json").read_text())
    assert state["app_valid"] is True
    assert state["erase_counts"] == state_before["erase_counts"]


def test_flash_into_the_bootloader_is_bad_input(tmp_path, capsys):
    flash_bin = tmp_path / "flash.bin"
    fw = tmp_path / "fw.hex"
    save(Image([(0x6F80, payload(0x100, 1))]), fw)
    assert main(["flash", str(fw), "--emulate", "atmega32u4", "--image", str(flash_bin)]) == 2
    assert "bootloader" in capsys.readouterr().err
    assert not flash_bin.exists() or flash_bin.read_bytes() == b"\xff" * 32 * 1024


@pytest.mark.parametrize("chip_name,dialect,start", [("stm32f411", "dfuse", 0x08000000),
                                                    ("atmega32u4", "flip", 0x0000),
                                                    ("stm32f103c8", "dfu", 0x08002000)])
def test_read_back_to_hex_equals_the_input(tmp_path, capsys, chip_name, dialect, start):
    chip = get_chip(chip_name)
    image = Image([(start, payload(5001, chip_name))])
    fw, flash_bin, back = tmp_path / "fw.hex", tmp_path / "flash.bin", tmp_path / "back.hex"
    save(image, fw)
    common = ["--emulate", chip_name, "--image", str(flash_bin), "--dialect", dialect]
    assert main(["flash", str(fw), *common]) == 0
    assert main(["read", str(back), *common, "--start", hex(start), "--length", "5001"]) == 0
    assert load(back) == image

    # the whole application, default range: the image, 0xFF elsewhere
    whole = tmp_path / "whole.hex"
    assert main(["read", str(whole), *common]) == 0
    got = load(whole)
    lo, hi = chip.layout().application_ranges("flash")[0]
    ref = reference(chip, image)
    assert got.start <= lo and got.end >= hi
    assert got.tobytes(lo, hi) == ref[lo - chip.flash_start:hi - chip.flash_start]
    assert "back.hex" in capsys.readouterr().out


def test_unknown_chip_is_bad_input(tmp_path, capsys):
    fw = tmp_path / "fw.hex"
    save(Image([(0, b"\x01\x02")]), fw)
    assert main(["flash", str(fw), "--emulate", "nosuchchip", "--image", str(tmp_path / "f.bin")]) == 2
    err = capsys.readouterr().err
    assert "nosuchchip" in err
    assert not (tmp_path / "f.bin").exists()
    assert main(["read", str(tmp_path / "x.hex"), "--emulate", "atmega32u4", "--chip", "nosuchchip"]) == 2
    assert "nosuchchip" in capsys.readouterr().err


def test_image_without_emulate_is_bad_input(tmp_path, capsys):
    fw = tmp_path / "fw.hex"
    save(Image([(0, b"\x01\x02")]), fw)
    assert main(["flash", str(fw), "--image", str(tmp_path / "f.bin")]) == 2
    assert "--emulate" in capsys.readouterr().err


# --------------------------------------------------------------------------
# demo and help


def test_demo_prints_a_row_per_dfu_dialect(capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.count("│") >= 7]
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in rows]
    dfu_rows = {c[1]: c for c in cells if c[0] == "dfu"}
    assert set(dfu_rows) >= {"flip", "dfuse", "dfu"}
    assert dfu_rows["flip"][2] == "atmega32u4"
    assert dfu_rows["dfuse"][2] == "stm32f411"
    for row in dfu_rows.values():
        assert row[-1] == "yes"


def _subcommands():
    for action in _parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return sorted(action.choices)
    raise AssertionError("no subcommands")


def test_subcommands_include_the_documented_core():
    assert {"demo", "chips", "convert", "list", "flash", "read", "serve"} <= set(_subcommands())


@pytest.mark.parametrize("command", _subcommands())
def test_every_subcommand_help_has_an_example(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "example" in out.lower()
    assert f"bootkit {command}" in out


def test_top_level_help_and_no_command(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    assert "example" in capsys.readouterr().out
    assert main([]) == 2


def test_commands_list_every_subcommand():
    from bootkit.cli.parser import COMMANDS

    # the core's commands, and those the personalities add (Personality.add_commands)
    assert sorted([*COMMANDS, "drop", "print", "midi"]) == _subcommands()


@pytest.mark.parametrize("argv", [
    ["flash", "fw.hex", "--via", "dfu", "--device", "0483:df11", "--no-verify", "--transfer-size", "2048"],
    ["--chip-file", "c.toml", "read", "back.bin", "--via", "hid", "--start", "0x100"],
    ["midi", "encode", "fw.hex", "-o", "fw.mid", "--chip", "atmega32u4"],
    ["serve", "dfu", "--chip", "stm32f411"],
])
def test_building_only_the_named_command_parses_alike(argv):
    from bootkit.cli.parser import command_in as _command_in

    full = _parser().parse_args(argv)
    only = _parser(_command_in(argv)).parse_args(argv)
    assert _command_in(argv) == full.command
    assert vars(only) == vars(full)
    assert len(only._get_kwargs()) > 3


def test_an_unknown_command_still_lists_them_all(capsys):
    with pytest.raises(SystemExit) as info:
        main(["flsh", "fw.hex"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'flsh'" in err and "'serve'" in err


# --------------------------------------------------------------------------
# inputs that used to end in a traceback: one line, exit 2


def _bad_toml(tmp_path, kind: str):
    path = tmp_path / f"{kind}.toml"
    if kind == "not-utf8":
        path.write_bytes(b'[product]\nname = "caf\xe9"\n')
    else:  # 5000 nested arrays: tomllib recurses once per level
        path.write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
    return path


@pytest.mark.parametrize("kind", ["not-utf8", "deep"])
@pytest.mark.parametrize("command", ["product check {p}", "flash fw.hex --product {p}", "--chip-file {p} chips",
                                     "serve --product {p}"])
def test_a_bad_toml_file_is_one_line_and_exit_2(tmp_path, capsys, kind, command):
    path = _bad_toml(tmp_path, kind)
    assert main(command.format(p=path).split()) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bootkit: error: ") and str(path) in err[0], err
    assert ("not UTF-8" if kind == "not-utf8" else "nested too deeply") in err[0]
    if kind == "not-utf8":
        assert "line 2" in err[0]


@pytest.mark.parametrize("option,value,says", [
    ("--allow", "foo", "'foo' is not an IP address"),
    ("--allow", "127.0.0.1/40", "'127.0.0.1/40' is not an IP address"),
    ("--allow", "10.0.0.1,,", "'' is not an IP address"),
    ("--listen", "127.0.0.1:99999", "port '99999'"),
    ("--listen", ":-1", "port '-1'"),
    ("--listen", "[::1]:x", "port 'x'"),
])
def test_serve_usbip_bad_listen_or_allow_is_one_line_and_exit_2(tmp_path, capsys, option, value, says):
    image = tmp_path / "flash.bin"
    assert main(["serve", "dfu", "--chip", "stm32f411", "--transport", "usbip", "--image", str(image),
                 f"{option}={value}"]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"bootkit: error: {option}: ") and says in err[0], err
    assert not image.exists() and captured.out == ""  # refused before the emulator opened its image


# --------------------------------------------------------------------------
# FILE: format from content and extension together, binary load address, UF2 family, --force


def _one_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bootkit: error: "), err
    return err[0]


def test_a_binary_goes_to_the_application_start_of_the_chip(tmp_path, capsys):
    data = payload(3000, "bin")
    for chip_name, via in (("stm32f411", "dfu"), ("stm32f103c8", "dfu"), ("rp2040", "msc")):
        chip = get_chip(chip_name)
        start = chip.application_ranges[0][0]
        (tmp_path / "fw.bin").write_bytes(data)
        flash_bin = tmp_path / f"{chip_name}.bin"
        command = ["drop"] if via == "msc" else ["flash", "--via", via]
        assert main([*command, str(tmp_path / "fw.bin"), "--emulate", chip_name, "--image", str(flash_bin)]) == 0
        assert flash_bin.read_bytes() == reference(chip, Image([(start, data)])), chip_name


def test_a_binary_for_an_unknown_chip_needs_an_address(tmp_path, capsys):
    (tmp_path / "fw.bin").write_bytes(payload(100, "x"))
    assert main(["flash", str(tmp_path / "fw.bin"), "--via", "dfu", "--device", "0483:df11"]) == 2
    line = _one_error(capsys)
    assert "fw.bin" in line and "--address" in line


def _uf2(image, family) -> bytes:
    from bootkit.formats import dump

    return dump(image, "uf2", family=family)


def test_a_multi_family_uf2_flashes_only_the_chips_blocks(tmp_path, capsys):
    mine, other = payload(1024, "stm"), payload(512, "rp")
    (tmp_path / "both.uf2").write_bytes(_uf2(Image([(0x10000000, other)]), "rp2040")
                                        + _uf2(Image([(0x08000000, mine)]), "stm32f4"))
    flash_bin = tmp_path / "flash.bin"
    assert main(["flash", str(tmp_path / "both.uf2"), "--emulate", "stm32f411", "--image", str(flash_bin)]) == 0
    assert flash_bin.read_bytes() == reference(get_chip("stm32f411"), Image([(0x08000000, mine)]))


@pytest.mark.parametrize("command", [["flash", "--via", "dfu"], ["flash", "--via", "hid"], ["drop"], ["print"],
                                     ["midi", "encode", "-o", "{out}.mid", "--chip", "stm32f103c8"]])
def test_a_uf2_of_another_family_is_refused_naming_both(tmp_path, capsys, command):
    (tmp_path / "fw.uf2").write_bytes(_uf2(Image([(0x08002000, payload(1024, "f4"))]), "stm32f4"))
    flash_bin = tmp_path / "flash.bin"
    argv = [a.format(out=tmp_path / "out") for a in command] + [str(tmp_path / "fw.uf2")]
    if command[0] != "midi":
        argv += ["--emulate", "stm32f103c8", "--image", str(flash_bin)]
    assert main(argv) == 2
    line = _one_error(capsys)
    assert "fw.uf2" in line and "stm32f4" in line and "stm32f103c8" in line and "--force" in line
    assert not (tmp_path / "out.mid").exists()
    assert not flash_bin.exists() or set(flash_bin.read_bytes()) == {0xFF}  # nothing was written


def test_force_flashes_a_uf2_of_another_family(tmp_path, capsys):
    data = payload(1024, "f4")
    (tmp_path / "fw.uf2").write_bytes(_uf2(Image([(0x08002000, data)]), "stm32f4"))
    flash_bin = tmp_path / "flash.bin"
    assert main(["flash", str(tmp_path / "fw.uf2"), "--emulate", "stm32f103c8", "--image", str(flash_bin),
                 "--force"]) == 0
    assert flash_bin.read_bytes() == reference(get_chip("stm32f103c8"), Image([(0x08002000, data)]))
    # --force never lifts the reset-vector check on AVR
    (tmp_path / "avr.uf2").write_bytes(_uf2(Image([(0x100, data)]), "stm32f4"))
    assert main(["flash", str(tmp_path / "avr.uf2"), "--emulate", "atmega32u4", "--image",
                 str(tmp_path / "avr.bin"), "--force"]) == 2
    assert "reset vector" in _one_error(capsys)


def _not_firmware(tmp_path):
    from bootkit.formats import write_hex

    hex_text = write_hex(Image([(0x08000000, payload(64, "h"))]))
    return {
        "song.mid": b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x00\x60MTrk\x00\x00\x00\x04\x00\xff\x2f\x00",
        "dump.syx": b"\xf0\x7d\x01\x02\x03\xf7",
        "notes.txt": b"flash me\n",
        "profile.json": b'{"a": 1}\n',
        "readme.bin": b"this is not a binary image, it is text\n",
        "song.bin": b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x00\x60",
        "hex.bin": hex_text.encode(),
        "srec.hex": b"S00600004844521B\nS9030000FC\n",
        "junk.uf2": payload(512, "u"),
        "firmware": payload(100, "f"),
    }


@pytest.mark.parametrize("name", list(_not_firmware(None)))
def test_a_file_that_is_not_firmware_or_disagrees_with_its_name_is_refused(tmp_path, capsys, name):
    path = tmp_path / name
    path.write_bytes(_not_firmware(tmp_path)[name])
    flash_bin = tmp_path / "flash.bin"
    assert main(["flash", str(path), "--emulate", "stm32f411", "--image", str(flash_bin)]) == 2
    line = _one_error(capsys)
    assert name in line and "--format" in line
    assert not flash_bin.exists()


def test_format_overrides_content_and_extension(tmp_path, capsys):
    path = tmp_path / "hex.bin"
    path.write_bytes(_not_firmware(tmp_path)["hex.bin"])
    flash_bin = tmp_path / "flash.bin"
    assert main(["flash", str(path), "--format", "hex", "--emulate", "stm32f411", "--image", str(flash_bin)]) == 0
    assert flash_bin.read_bytes() == reference(get_chip("stm32f411"), load(path, fmt="hex"))


# --------------------------------------------------------------------------
# convert: empty input, addresses kept in .dfu, --from


@pytest.mark.parametrize("name,content", [("empty.hex", b""), ("empty.bin", b""), ("eof.hex", b":00000001FF\n"),
                                          ("empty.srec", b"S00600004844521B\nS9030000FC\n")])
def test_convert_of_nothing_is_refused(tmp_path, capsys, name, content):
    (tmp_path / name).write_bytes(content)
    out = tmp_path / "out.bin"
    assert main(["convert", str(tmp_path / name), str(out)]) == 2
    line = _one_error(capsys)
    assert name in line and ("empty" in line or "no data" in line)
    assert not out.exists()


def test_convert_to_dfu_keeps_addresses_as_dfuse(tmp_path, capsys):
    image = Image([(0x08000000, payload(1000, 1)), (0x08004000, payload(100, 2))])
    save(image, tmp_path / "fw.hex")
    assert main(["convert", str(tmp_path / "fw.hex"), str(tmp_path / "fw.dfu")]) == 0
    assert "DfuSe" in capsys.readouterr().out
    back = load(tmp_path / "fw.dfu")
    assert back == image and back.origin.format == "dfuse"
    # --format dfu: a plain suffix file, and the output line says the address is gone
    assert main(["convert", str(tmp_path / "fw.hex"), str(tmp_path / "plain.dfu"), "--format", "dfu"]) == 0
    assert "address is dropped" in capsys.readouterr().out
    assert load(tmp_path / "plain.dfu", base=0x08000000).tobytes() == image.tobytes()
    # an image at 0 in one piece stays a plain DFU suffix file
    save(Image([(0, payload(10, 3))]), tmp_path / "zero.hex")
    assert main(["convert", str(tmp_path / "zero.hex"), str(tmp_path / "zero.dfu")]) == 0
    assert load(tmp_path / "zero.dfu").origin.format == "dfu"


def test_convert_from_names_the_input_format(tmp_path, capsys):
    from bootkit.formats import write_hex

    image = Image([(0x100, payload(40, 4))])
    (tmp_path / "fw.img").write_text(write_hex(image))
    (tmp_path / "raw.img").write_bytes(payload(40, 5))
    assert main(["convert", str(tmp_path / "raw.img"), str(tmp_path / "o.hex")]) == 2
    assert "--from" in _one_error(capsys)
    assert main(["convert", str(tmp_path / "raw.img"), str(tmp_path / "o.hex"), "--from", "bin",
                 "--base", "0x200"]) == 0
    assert load(tmp_path / "o.hex") == Image([(0x200, payload(40, 5))])
    assert main(["convert", str(tmp_path / "fw.img"), str(tmp_path / "o2.hex")]) == 0  # HEX content: no doubt
    assert load(tmp_path / "o2.hex") == image


def test_an_avr_elf_flashes_its_flash_then_its_eeprom(tmp_path, capsys):
    import struct

    code, eeprom = b"\x0c\x94" + payload(300, "elf")[2:], b"settings"
    phdrs = [(0, 0, code), (0x810000, 0x810000, eeprom)]  # avr-gcc's .text and .eeprom (EM_AVR 83)
    offset, table, blobs = 52 + 32 * len(phdrs), b"", b""
    for vaddr, paddr, blob in phdrs:
        table += struct.pack("<8I", 1, offset + len(blobs), vaddr, paddr, len(blob), len(blob), 5, 1)
        blobs += blob
    ident = b"\x7fELF" + bytes([1, 1, 1]) + bytes(9)
    header = struct.pack("<16sHHIIIIIHHHHHH", ident, 2, 83, 1, 0, 52, 0, 0, 52, 32, len(phdrs), 40, 0, 0)
    (tmp_path / "fw.elf").write_bytes(header + table + blobs)
    flash_bin = tmp_path / "flash.bin"
    common = ["--via", "cdc", "--emulate", "atmega32u4", "--image", str(flash_bin)]
    assert main(["flash", str(tmp_path / "fw.elf"), *common]) == 0
    assert "8 EEPROM bytes" in capsys.readouterr().out
    assert flash_bin.read_bytes() == reference(get_chip("atmega32u4"), Image([(0, code)]))
    assert main(["flash", str(tmp_path / "fw.elf"), *common, "--memory", "eeprom"]) == 0
    assert main(["read", str(tmp_path / "ee.bin"), *common, "--memory", "eeprom", "--length", "8"]) == 0
    assert (tmp_path / "ee.bin").read_bytes() == eeprom


@pytest.mark.parametrize("command,options", [
    (["flash"], ("--format", "--force", "application start")), (["drop"], ("--format", "--force", "--as")),
    (["print"], ("--format", "--force")), (["midi", "encode"], ("--format", "--force")),
    (["convert"], ("--from", "--format")),
])
def test_help_describes_the_input_options_with_an_example(capsys, command, options):
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    out = capsys.readouterr().out
    for option in options:
        assert option in out, option
    examples = out.split("example")[-1]
    assert any(o in examples for o in options if o.startswith("--"))


def test_a_plain_dfu_suffix_file_goes_to_the_application_start(tmp_path, capsys):
    from bootkit.formats import add_suffix

    data = payload(4000, "suffix")
    (tmp_path / "fw.dfu").write_bytes(add_suffix(data))  # DFU 1.1 appendix B: no address in the file
    flash_bin = tmp_path / "flash.bin"
    assert main(["flash", str(tmp_path / "fw.dfu"), "--emulate", "stm32f103c8", "--image", str(flash_bin)]) == 0
    assert flash_bin.read_bytes() == reference(get_chip("stm32f103c8"), Image([(0x08002000, data)]))


# --------------------------------------------------------------------------
# personalities from the registry: their flags, their examples, their transports (#18 item 3)


def _flash_sample(*extra):
    from pathlib import Path

    sample = Path(__file__).resolve().parents[1] / "examples" / "firmware" / "sample-atmega32u4.hex"
    return main(["flash", str(sample), "--emulate", "atmega32u4", "--no-progress", *extra])


def test_a_flag_of_another_personality_is_one_line_naming_what_applies(capsys):
    assert _flash_sample("--via", "dfu", "--mcu", "atmega32u4") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["bootkit: error: --mcu does not apply to --via dfu (its options: --transfer-size, --alt)"], err


def test_a_flag_of_another_dialect_is_one_line(capsys):
    assert _flash_sample("--via", "hid", "--dialect", "native", "--mcu", "atmega32u4") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bootkit: error: --mcu: option 'mcu' does not apply to hid/native"), err


def test_a_device_flag_needs_an_emulated_device(capsys):
    from pathlib import Path

    sample = Path(__file__).resolve().parents[1] / "examples" / "firmware" / "sample-atmega32u4.hex"
    assert main(["flash", str(sample), "--via", "msc", "--accept", "uf2,hex"]) == 2
    assert capsys.readouterr().err.strip() == "bootkit: error: --accept configures an emulated device: it needs --emulate"


def test_a_personality_flag_reaches_its_host_side(capsys):
    assert _flash_sample("--via", "dfu", "--transfer-size", "256") == 0
    assert "via dfu/flip" in capsys.readouterr().out


def test_unknown_via_names_the_registered_personalities(capsys):
    from bootkit import registry

    assert _flash_sample("--via", "bluetooth") == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"bootkit: error: --via: unknown personality 'bluetooth' (choose from "
                   f"{', '.join(registry.personality_names())})"), err


def test_help_examples_come_from_every_personality(capsys):
    from bootkit import registry

    with pytest.raises(SystemExit):
        main(["flash", "--help"])
    out = capsys.readouterr().out
    for p in registry.personalities():
        for line in p.cli_examples.get("flash", ()):
            assert line in out


def test_serve_refuses_a_setting_its_transport_does_not_take(tmp_path, capsys):
    image = tmp_path / "flash.bin"
    assert main(["serve", "dfu", "--chip", "stm32f411", "--transport", "pty", "--listen", ":3240",
                 "--image", str(image)]) == 2
    assert capsys.readouterr().err.strip() == "bootkit: error: --listen does not apply to --transport pty"
    assert not image.exists()


def test_serve_unknown_transport_names_the_registered_ones(capsys):
    from bootkit import registry

    assert main(["serve", "dfu", "--chip", "stm32f411", "--transport", "carrier-pigeon"]) == 2
    assert capsys.readouterr().err.strip() == (
        "bootkit: error: --transport: unknown transport 'carrier-pigeon' (choose from "
        f"{', '.join(registry.transport_names())})")
