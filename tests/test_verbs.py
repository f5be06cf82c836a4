"""The verbs of issue 21 item 4 (erase, verify, reset, info), -v/-q, --json on flash/read/info,
and the help's examples narrowed to --via's personality (#22 item 3)."""

from __future__ import annotations

import subprocess
import sys

from bootkit.cli import main


def test_flash_help_with_via_shows_only_that_personalitys_examples(capsys):
    # #22 item 3: `flash --via dfu --help` gathers dfu's examples only (loading one personality)
    try:
        main(["flash", "--via", "dfu", "--help"])
    except SystemExit as exc:
        assert exc.code == 0
    out = capsys.readouterr().out
    examples = out.split("examples:", 1)[1]
    assert "--via dfu" in examples
    assert "--via hid" not in examples and "--via isp" not in examples


def test_flash_help_with_via_loads_no_other_personality():
    code = ("import sys; from bootkit.cli import main\n"
            "try:\n    main(['flash', '--via', 'dfu', '--help'])\nexcept SystemExit: pass\n"
            "print(sorted(m for m in sys.modules if m.startswith('bootkit.classes.') and m.endswith('.personality')),"
            " file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stderr.strip() == "['bootkit.classes.dfu.personality']", out.stderr


# --------------------------------------------------------------------------
# erase, verify, reset on emulated devices (the image file keeps the flash between commands)

import json  # noqa: E402
import zlib  # noqa: E402

import pytest  # noqa: E402

from bootkit.formats import Image, load, save  # noqa: E402

SAMPLE = "examples/firmware/sample-atmega32u4.hex"
SAMPLE_STM32 = "examples/firmware/sample-stm32f411.hex"


def _emulated(via, chip, image, *extra):
    return ["--via", via, "--emulate", chip, "--image", str(image), *extra]


@pytest.mark.parametrize("via,chip,sample,extra,left", [
    # FLIP: read-back, chip erase; the emulated application enumerates (DFU run-time)
    ("dfu", "atmega32u4", SAMPLE, (), "application started (came back as 1209:B00E)"),
    ("dfu", "stm32f411", SAMPLE_STM32, (), "application started (came back as "),  # DfuSe: sector erase
    # native: read-back + CRC, ERASE; its application shows nothing on the bus, and that is what is said
    ("hid", "atmega32u4", SAMPLE, ("--dialect", "native"), "left the bootloader (not seen again within"),
    # two-way SysEx: READ page by page, ERASE of the application span, BOOT
    ("midi", "atmega32u4", SAMPLE, (), "left the bootloader (not seen again within"),
])
def test_verify_erase_reset(tmp_path, capsys, via, chip, sample, extra, left):
    flash = tmp_path / "flash.bin"
    dev = _emulated(via, chip, flash, *extra)
    assert main(["flash", sample, *dev, "--no-leave"]) == 0
    capsys.readouterr()
    assert main(["verify", sample, *dev]) == 0
    assert "verified" in capsys.readouterr().out
    # one byte changed in the file: exit 1 naming that address
    image = load(sample)
    start, data = image.segments[-1]
    wrong = Image([(start, data[:5] + bytes([data[5] ^ 0x01]) + data[6:])])
    bad = tmp_path / "bad.hex"
    save(wrong, bad)
    assert main(["verify", str(bad), *dev]) == 1
    assert f"verify failed at 0x{start + 5:X}" in capsys.readouterr().err
    assert main(["reset", *dev]) == 0
    assert left in capsys.readouterr().out
    from bootkit.memory import get_chip

    c = get_chip(chip)
    boot = [(ps - c.flash_start, pe - c.flash_start) for ps, pe in c.layout().protected]
    before = [flash.read_bytes()[a:b] for a, b in boot]
    assert main(["erase", *dev]) == 0
    assert "erased" in capsys.readouterr().out
    assert main(["verify", sample, *dev]) == 1  # erased: the compare fails at the first byte of the file
    assert f"verify failed at 0x{image.start:X}" in capsys.readouterr().err
    assert [flash.read_bytes()[a:b] for a, b in boot] == before  # the bootloader region is never erased


def test_xusb_verifies_by_its_crc(tmp_path, capsys):
    # xusb-boot cannot be read back: its NVM CRC is the comparison, and it gives one only after
    # an ERASE in the same bootloader run (boot_protocol.c), so one emulator serves both calls
    from bootkit import registry
    from bootkit.contracts import Link
    from bootkit.emulator import Emulator
    from bootkit.memory import get_chip
    from bootkit.transports.virtual import VirtualBus, get_backend

    chip = get_chip("atxmega128a4u")
    em = Emulator(chip, "hid", options={"dialect": "xusb"})
    bus = VirtualBus()
    em.attach(bus)
    link = Link(backend=get_backend(bus))
    host = registry.personality("hid").host()
    image = Image([(0, b"\x0c\x94" + bytes(range(254)))])
    try:
        host.flash(image, link, chip=chip, leave=False)
        assert "CRC" in host.verify(image, link, chip=chip)
        with pytest.raises(Exception, match="differs from the image's"):
            host.verify(Image([(0, b"\x0c\x94" + bytes(range(253)) + b"\x00")]), link, chip=chip)
    finally:
        em.close()
    # a new bootloader run (the image file reopened): no CRC before an ERASE, said in one line, exit 1
    fw = tmp_path / "fw.hex"
    save(image, fw)
    dev = _emulated("hid", chip.name, tmp_path / "flash.bin", "--dialect", "xusb")
    assert main(["flash", str(fw), *dev, "--no-leave"]) == 0
    capsys.readouterr()
    assert main(["verify", str(fw), *dev]) == 1
    assert "only after an ERASE" in capsys.readouterr().err


@pytest.mark.parametrize("argv,says", [
    (["erase", "--via", "hid", "--dialect", "lufa"], "the lufa bootloader has no erase command"),
    (["erase", "--via", "dfu", "--dialect", "dfu"], "plain DFU 1.1 has no erase command"),
    (["verify", SAMPLE, "--via", "hid", "--dialect", "halfkay", "--mcu", "atmega32u4"], "has no read or CRC"),
    (["erase", "--via", "midi", "--dialect", "file"], "the MIDI file dialect is one-way"),
    (["erase", "--via", "msc"], "a UF2 drive has no erase command"),
    (["reset", "--via", "msc"], "a UF2 drive has no leave request"),
    (["verify", SAMPLE, "--via", "printer"], "a printer only receives jobs: it cannot be read back"),
    (["reset", "--via", "printer"], "the printer bootloader has no leave request"),
])
def test_a_dialect_that_cannot_says_so(capsys, argv, says):
    assert main([*argv, "--emulate", "atmega32u4"]) == 2
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1


def test_isp_verbs(tmp_path, capsys):
    # an ISP programmer: Chip Erase (flash, EEPROM unless EESAVE, lock bits), verify by reading back
    # through the programmer, reset = RESET released (nothing on the bus can confirm it: it says so)
    sample = tmp_path / "t85.hex"
    assert main(["sample", "attiny85", "-o", str(sample)]) == 0
    dev = _emulated("isp", "attiny85", tmp_path / "flash.bin")
    assert main(["flash", str(sample), *dev]) == 0
    capsys.readouterr()
    assert main(["verify", str(sample), *dev]) == 0
    assert "equal to a read-back" in capsys.readouterr().out
    assert main(["reset", *dev]) == 0
    out = capsys.readouterr().out
    assert "RESET released" in out and "application started" not in out
    assert main(["erase", *dev]) == 0
    assert "chip erased" in capsys.readouterr().out
    assert main(["verify", str(sample), *dev]) == 1
    assert "verify failed: flash 0x0 reads 0xFF" in capsys.readouterr().err


def test_verify_without_verbs_reads_back(tmp_path, capsys, monkeypatch):
    # a host side without Verbs (a plug-in's, here the isp host reduced to HostSide): verify compares
    # a read-back through HostSide.read, erase and reset say they cannot, in one line, exit 2
    from bootkit import registry

    isp = registry.personality("isp")
    real = isp.host()

    class OnlyHostSide:
        flash, read = real.flash, real.read

    monkeypatch.setattr(type(isp), "host", lambda self: OnlyHostSide())
    sample = tmp_path / "t85.hex"
    assert main(["sample", "attiny85", "-o", str(sample)]) == 0
    dev = _emulated("isp", "attiny85", tmp_path / "flash.bin")
    assert main(["flash", str(sample), *dev]) == 0
    capsys.readouterr()
    assert main(["verify", str(sample), *dev]) == 0
    assert "equal to a read-back" in capsys.readouterr().out
    assert main(["erase", *dev]) == 2
    assert "cannot erase alone" in capsys.readouterr().err


def test_cdc_verbs(tmp_path, capsys):
    # AVR109 (LUFA's CDC bootloader): erase 'e', verify by reading back, reset 'L' 'E'
    dev = _emulated("cdc", "atmega32u4", tmp_path / "flash.bin")
    assert main(["flash", SAMPLE, *dev, "--no-leave"]) == 0
    capsys.readouterr()
    assert main(["verify", SAMPLE, *dev]) == 0
    assert "equal to a read-back" in capsys.readouterr().out
    assert main(["reset", *dev]) == 0
    assert "application started (came back as 03EB:2044)" in capsys.readouterr().out
    assert main(["erase", *dev]) == 0
    assert "AVR109 'e'" in capsys.readouterr().out
    assert main(["verify", SAMPLE, *dev]) == 1
    assert "verify failed at 0x0" in capsys.readouterr().err
    # Optiboot erases page by page as it writes: it says it cannot erase alone
    assert main(["erase", "--via", "cdc", "--emulate", "atmega328p"]) == 2
    assert "the optiboot bootloader has no chip erase" in capsys.readouterr().err


def test_info_text_and_json(tmp_path, capsys):
    image = load(SAMPLE_STM32)
    uf2 = tmp_path / "fw.uf2"
    assert main(["convert", SAMPLE_STM32, str(uf2), "--family", "stm32f4"]) == 0
    capsys.readouterr()
    assert main(["info", str(uf2), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "uf2" and info["uf2_families"] == ["stm32f4 (0x57755A57)"]
    back = load(uf2)
    crc = 0
    for _s, d in back.segments:
        crc = zlib.crc32(d, crc)
    assert info["crc32"] == f"0x{crc:08X}"
    assert info["segments"][0]["start"] == f"0x{image.start:X}"
    assert "stm32f411" in info["fits"] and "atmega32u4" not in info["fits"]
    dfu = tmp_path / "fw.dfu"
    assert main(["convert", SAMPLE_STM32, str(dfu)]) == 0
    capsys.readouterr()
    assert main(["info", str(dfu)]) == 0
    out = capsys.readouterr().out
    assert "DFU suffix: 0483:df11" in out and "DfuSe target alt 0" in out and "fits: stm32f411" in out
    assert main(["info", str(tmp_path / "none.hex")]) == 2


def test_flash_and_read_json(tmp_path, capsys):
    flash = tmp_path / "flash.bin"
    dev = _emulated("dfu", "atmega32u4", flash)
    assert main(["flash", SAMPLE, *dev, "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["ok"] and facts["verified"] and facts["bytes"] == load(SAMPLE).size
    assert facts["personality"] == "dfu" and facts["dialect"] == "flip"
    back = tmp_path / "back.hex"
    assert main(["read", str(back), *dev, "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["file"] == str(back) and facts["format"] == "hex" and facts["start"] == "0x0"


# --------------------------------------------------------------------------
# -v (one line per transfer / serial read or write on stderr) and -q (only errors)


def test_verbose_traces_usb_transfers_and_then_stops(tmp_path, capsys):
    import sys as _sys

    flash = tmp_path / "flash.bin"
    assert main(["-v", "flash", SAMPLE, *_emulated("dfu", "atmega32u4", flash), "--no-leave"]) == 0
    err = capsys.readouterr().err.splitlines()
    # FLIP's DFU_DNLOAD (class request 0x21 0x01) and DFU_GETSTATUS (0xa1 0x03), one line each
    assert any(line.startswith("usb ctrl 21 01 ") for line in err)
    assert any(line.startswith("usb ctrl a1 03 ") and "-> 6 bytes:" in line for line in err)
    assert _sys.modules["bootkit.trace"]._undo == []  # the session put the backend back
    assert main(["flash", SAMPLE, *_emulated("dfu", "atmega32u4", flash), "--no-leave"]) == 0
    assert "usb ctrl" not in capsys.readouterr().err  # no -v: no trace


def test_verbose_after_the_command_traces_the_serial_port(tmp_path, capsys):
    dev = _emulated("cdc", "atmega32u4", tmp_path / "flash.bin")
    assert main(["flash", SAMPLE, *dev, "--no-leave", "-v"]) == 0
    err = capsys.readouterr().err
    assert "write 1 bytes: 53" in err  # AVR109 'S' (return software identifier)


def test_quiet_prints_only_errors(tmp_path, capsys):
    flash = tmp_path / "flash.bin"
    assert main(["-q", "flash", SAMPLE, *_emulated("dfu", "atmega32u4", flash)]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    assert main(["erase", "-q", *_emulated("dfu", "atmega32u4", flash)]) == 0
    assert capsys.readouterr().out == ""
    assert main(["-q", "verify", SAMPLE, *_emulated("dfu", "atmega32u4", flash)]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "verify failed at 0x0" in captured.err
    assert main(["-q", "-v", "erase", *_emulated("dfu", "atmega32u4", flash)]) == 2


def test_no_trace_module_without_verbose(tmp_path):
    code = ("import sys; from bootkit.cli import main\n"
            f"main(['flash', {SAMPLE!r}, '--via', 'dfu', '--emulate', 'atmega32u4', '--no-leave'])\n"
            "print('bootkit.trace' in sys.modules, file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stderr.strip().endswith("False"), out.stderr


def test_msc_verifies_by_current_uf2(tmp_path, capsys):
    flash = tmp_path / "flash.bin"
    dev = _emulated("msc", "stm32f411", flash)
    assert main(["flash", SAMPLE_STM32, *dev]) == 0
    capsys.readouterr()
    assert main(["verify", SAMPLE_STM32, *dev]) == 0
    assert "equal to a read-back" in capsys.readouterr().out
    image = load(SAMPLE_STM32)
    start, data = image.segments[0]
    bad = tmp_path / "bad.hex"
    save(Image([(start, data[:9] + bytes([data[9] ^ 0x80]) + data[10:])]), bad)
    assert main(["verify", str(bad), *dev]) == 1
    assert f"verify failed at 0x{start + 9:X}" in capsys.readouterr().err
