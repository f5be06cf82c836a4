"""``--target SPEC``: parsing, one-line errors, exit status, the bootkit.memories group (issue 23 item 1)."""

from __future__ import annotations

import pytest

from bootkit import registry
from bootkit.cli import main
from bootkit.memory.backends import TargetSpec, UsbSelection, open_target, parse_target


@pytest.mark.parametrize("text,expected", [
    ("sim:stm32f411", TargetSpec("sim:stm32f411", "sim", chip="stm32f411")),
    ("usb:0483:df11", TargetSpec("usb:0483:df11", "usb", usb=UsbSelection(0x0483, 0xDF11))),
    ("usb:0483:DF11,3380385C3037", TargetSpec("usb:0483:DF11,3380385C3037", "usb",
                                              usb=UsbSelection(0x0483, 0xDF11, "3380385C3037"))),
    ("usbip://10.0.0.7", TargetSpec("usbip://10.0.0.7", "usbip", usb=UsbSelection(), host="10.0.0.7", port=3240)),
    ("usbip://pi.local:4000/1-2", TargetSpec("usbip://pi.local:4000/1-2", "usbip", usb=UsbSelection(busid="1-2"),
                                             host="pi.local", port=4000)),
    ("usbip://[::1]:4000", TargetSpec("usbip://[::1]:4000", "usbip", usb=UsbSelection(), host="::1", port=4000)),
    ("serial:/dev/ttyACM0,AVR109", TargetSpec("serial:/dev/ttyACM0,AVR109", "serial", device="/dev/ttyACM0",
                                              dialect="avr109")),
    ("isp:usbasp", TargetSpec("isp:usbasp", "isp", link="usbasp")),
])
def test_specs_parse(text, expected):
    assert parse_target(text) == expected


@pytest.mark.parametrize("text,message", [
    ("", "--target: empty"),
    ("stm32f411", "--target stm32f411: expected SCHEME:..."),
    ("sim:", "--target sim:: sim needs a chip (sim:CHIP)"),
    ("usb:0483", "--target usb:0483: expected usb:VID:PID[,SERIAL] (hex ids)"),
    ("usb:0483:xyz", "--target usb:0483:xyz: PID 'xyz' is not a hex number"),
    ("usb:10000:1", "--target usb:10000:1: VID '10000' is not 16 bits"),
    ("usbip://", "--target usbip://: no host"),
    ("usbip://h:0", "--target usbip://h:0: port 0 is outside 1-65535"),
    ("usbip://h:port", "--target usbip://h:port: port 'port' is not a number"),
    ("usbip://h/1-1/x", "--target usbip://h/1-1/x: bus id '1-1/x' is not a USB/IP bus id"),
    ("serial:/dev/ttyACM0", "--target serial:/dev/ttyACM0: expected serial:PORT,DIALECT"),
    ("isp:", "--target isp:: nothing after isp:"),
])
def test_bad_specs_are_one_line(text, message):
    with pytest.raises(ValueError) as exc:
        parse_target(text)
    assert str(exc.value).startswith(message) and "\n" not in str(exc.value)


def test_the_built_in_back_ends_are_entry_points():
    names = registry.memory_names()
    assert {"sim", "usb", "usbip", "usb.dfu"} <= set(names)
    assert callable(registry.memory("usbip")) and callable(registry.memory("usb.dfu"))


def test_an_unregistered_scheme_is_named_with_the_registered_ones():
    with pytest.raises(ValueError, match=r"^--target nosuch:x: no memory back-end 'nosuch' \(registered: .*sim.*usbip"):
        open_target("nosuch:x")


def test_sim_is_the_simulated_flash_of_its_chip():
    memory = open_target("sim:stm32f411")
    assert memory.layout.flash.start == 0x08000000 and memory.layout.flash.size == 512 * 1024
    with pytest.raises(ValueError, match="disagrees with --chip"):
        from bootkit.memory import get_chip

        open_target("sim:stm32f411", get_chip("atmega32u4"))


@pytest.mark.parametrize("argv,code,line", [
    (["serve", "msc", "--chip", "stm32f411", "--target", "usb:zz:1"], 2, "--target usb:zz:1: VID 'zz' is not a hex number"),
    (["serve", "msc", "--target", "usbip://127.0.0.1:9"], 2, "--target usbip://127.0.0.1:9 needs --chip CHIP"),
    (["serve", "msc", "--chip", "rp2040", "--target", "sim:stm32f411"], 2,
     "--target sim:stm32f411 disagrees with --chip rp2040"),
    (["serve", "msc", "--chip", "stm32f411", "--target", "usbip://127.0.0.1:9", "--image", "x.bin"], 2,
     "--image applies to a simulated flash, not to --target usbip://127.0.0.1:9"),
    (["serve", "msc", "--chip", "stm32f411", "--target", "flux:/dev/null"], 2,
     "--target flux:/dev/null: no memory back-end 'flux'"),
    # nothing listens on port 9 (discard) of loopback here: the environment failing, exit 1
    (["serve", "msc", "--chip", "stm32f411", "--target", "usbip://127.0.0.1:9"], 1, "--target usbip://127.0.0.1:9: "),
])
def test_serve_target_errors(argv, code, line, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and line in err, err
    assert not (tmp_path / "x.bin").exists()
