"""The public API (``import bootkit``) and the recipes of docs/api.md, run as they are written."""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import bootkit
from bootkit.formats import Image, load

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "api.md"
SAMPLE = ROOT / "examples" / "firmware" / "sample-atmega32u4.hex"
SAMPLE_STM32 = ROOT / "examples" / "firmware" / "sample-stm32f411.hex"
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout, whatever an editable install points at


def python(args, cwd, timeout=120):
    return subprocess.run([sys.executable, *args], cwd=cwd, env=ENV, capture_output=True, text=True,
                          timeout=timeout)


def blocks(heading: str | None = None) -> list[tuple[str, str]]:
    """(language, text) of the fenced blocks of docs/api.md, only under ``heading`` when given."""
    text = DOCS.read_text()
    if heading is not None:
        section = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
        assert section, f"docs/api.md has no '## {heading}' section"
        text = section.group(1)
    return re.findall(r"^```(\w+)\n(.*?)^```", text, re.S | re.M)


def flash_bytes(path: Path, chip) -> bytes:
    return path.read_bytes()[:chip.flash_size]


def holds(flash: bytes, chip, image: Image) -> bool:
    return all(flash[s - chip.flash_start:s - chip.flash_start + len(d)] == d for s, d in image.segments)


# --------------------------------------------------------------------------
# the 15-line script


def test_the_fifteen_line_script_from_docs_flashes_a_sample(tmp_path):
    lang, script = blocks("Script a flash with progress")[0]
    assert lang == "python"
    assert len(script.splitlines()) <= 15, script
    (tmp_path / "flash.py").write_text(script)
    image_file = tmp_path / "flash.bin"
    r = python(["flash.py", str(SAMPLE), str(image_file)], tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("9520 bytes via flip in "), r.stdout
    assert "verified" in r.stdout and "application started" in r.stdout
    chip = bootkit.get_chip("atmega32u4")
    written = flash_bytes(image_file, chip)
    assert holds(written, chip, load(SAMPLE))
    # the rest of the application region was erased, the bootloader region left alone
    assert written[0x4000 + 301:chip.boot_start] == b"\xff" * (chip.boot_start - 0x4000 - 301)

    # a file that is not firmware is refused before anything is erased
    (tmp_path / "notes.txt").write_text("hello\n")
    r = python(["flash.py", "notes.txt", str(image_file)], tmp_path)
    assert r.returncode == 1
    assert r.stderr.startswith("refused: notes.txt: not a firmware image"), r.stderr
    assert flash_bytes(image_file, chip) == written


def test_every_other_recipe_in_docs_runs(tmp_path):
    """Each python block of docs/api.md that imports bootkit runs as written, in a directory
    holding examples/firmware (and the chip file of 'Add a chip')."""
    shutil.copytree(ROOT / "examples" / "firmware", tmp_path / "examples" / "firmware")
    (tmp_path / "mychip.toml").write_text(blocks("Add a chip")[0][1])
    expected = {  # heading -> what its block prints last
        "Script a flash with progress": "0 28672",  # read(): the whole application region of an erased chip
        "Serve an emulated device": "'application started (came back as 1209:B00E)']",
        "Add a chip": "True\nTrue",
        "Write a personality": "True True",
        "Write a transport": "3 -> 000000000200\n119 -> STALL",
        "Put a real memory behind a personality": "True True",
    }
    ran = 0
    for heading, want in expected.items():
        for n, (lang, code) in enumerate(blocks(heading)):
            if lang != "python" or "import bootkit" not in code or (heading.startswith("Script") and n == 0):
                continue
            path = tmp_path / f"recipe{ran}.py"
            path.write_text(code)
            r = python([path.name], tmp_path)
            assert r.returncode == 0, f"{heading}: {r.stderr}"
            assert r.stdout.rstrip().endswith(want), f"{heading}: {r.stdout}"
            ran += 1
    assert ran == len(expected)


# --------------------------------------------------------------------------
# import bootkit stays light


def test_import_bootkit_loads_nothing_else():
    code = ("import sys, json, bootkit\n"
            "before = sorted(m for m in sys.modules if m.split('.')[0] in ('bootkit', 'usb', 'rich', 'serial', 'mido'))\n"
            "names = [n for n in bootkit.__all__ if n != '__version__']\n"
            "values = {n: type(getattr(bootkit, n)).__name__ for n in names}\n"
            "print(json.dumps([before, bootkit.__version__, values, 'open_target' in dir(bootkit)]))\n")
    r = python(["-c", code], ROOT)
    assert r.returncode == 0, r.stderr
    before, version, values, listed = json.loads(r.stdout)
    assert before == ["bootkit"]
    assert version == "0.1.0"
    assert values["open_target"] == "function" and values["Emulator"] == "type" and listed
    assert set(values) >= {"open_target", "Target", "flash", "read", "erase", "load_image", "get_chip",
                           "Emulator", "serve", "FlashResult", "HostError", "ImageRejected"}
    with pytest.raises(AttributeError):
        bootkit.no_such_name


# --------------------------------------------------------------------------
# the API itself


def test_flash_returns_the_personalitys_own_result(tmp_path):
    chip = bootkit.get_chip("atmega32u4")
    image = bootkit.load_image(SAMPLE, chip=chip)
    with bootkit.open_target("dfu", emulate="atmega32u4", image=tmp_path / "dfu.bin") as target:
        result = bootkit.flash(image, target, leave=False)
        assert isinstance(result, bootkit.FlashResult)
        assert (result.dialect, result.bytes, result.verified) == ("flip", 9520, True)
        assert result.steps == ["chip erased", "programmed 9520 bytes of flash", "verified"]
        back = bootkit.read(target, start=0, length=image.end)
        assert back.tobytes(0, image.end) == image.tobytes(0, image.end)
        assert not target.emulator.memory.app_valid  # not left: nothing manifested the application
    # HalfKay has no read command: the result says so instead of claiming a verification
    with bootkit.open_target("hid", emulate="atmega32u4") as target:
        result = target.flash(SAMPLE)
        assert result.dialect == "halfkay" and not result.verified
        assert "not verified: halfkay has no read command" in result.steps
        assert holds(target.emulator.memory.flash_bytes(), target.chip, image)


def test_bad_input_is_image_rejected_before_anything_is_erased(tmp_path):
    chip = bootkit.get_chip("atmega32u4")
    with bootkit.open_target("dfu", emulate="atmega32u4", image=tmp_path / "f.bin") as target:
        target.flash(SAMPLE)
        before = target.emulator.memory.flash_bytes()
        into_bootloader = Image([(0, b"\x0c\x94" * 8), (chip.boot_start, b"\x00" * 16)])
        with pytest.raises(bootkit.ImageRejected, match="bootloader region"):
            target.flash(into_bootloader)
        with pytest.raises(bootkit.ImageRejected, match="no such file"):
            target.flash(tmp_path / "missing.hex")
        assert target.emulator.memory.flash_bytes() == before
        assert target.emulator.memory.app_valid
    (tmp_path / "fw.bin").write_bytes(b"\x0c\x94" * 64)
    with pytest.raises(bootkit.ImageRejected, match="no load address"):
        bootkit.load_image(tmp_path / "fw.bin")
    assert bootkit.load_image(tmp_path / "fw.bin", chip="stm32f411").start == 0x08000000
    with pytest.raises(ValueError):  # ImageRejected is a ValueError, as the docs say
        bootkit.load_image(tmp_path / "fw.bin")


def test_a_failing_device_is_host_error_and_erase_is_emulated_only(tmp_path):
    target = bootkit.open_target("dfu", emulate="atmega32u4")
    target.emulator.close()  # the device is gone
    with pytest.raises(bootkit.HostError, match="no DFU device found"):
        target.flash(SAMPLE)
    target.close()
    with pytest.raises(ValueError, match="closed"):
        target.read()
    with bootkit.open_target("cdc", emulate="atmega32u4", image=tmp_path / "f.bin") as target:
        assert target.flash(SAMPLE).verified
        assert target.emulator.memory.app_valid
        bootkit.erase(target)
        assert not target.emulator.memory.app_valid
        assert target.emulator.memory.flash_bytes()[:target.chip.boot_start] == b"\xff" * target.chip.boot_start
    with pytest.raises(NotImplementedError):
        bootkit.Target("dfu", backend=object()).erase()
    with pytest.raises(KeyError):
        bootkit.get_chip("no-such-chip")
    with pytest.raises(ValueError, match="unknown personality"):
        bootkit.open_target("floppy", emulate="atmega32u4")
    with pytest.raises(ValueError, match="needs emulate"):
        bootkit.open_target("dfu", image=tmp_path / "x.bin")


@pytest.mark.parametrize("transport, personality", [("usbip", "dfu"), ("pty", "cdc")])
def test_serve_then_open_the_served_device(tmp_path, transport, personality):
    stop, ready = threading.Event(), queue.Queue()
    with bootkit.Emulator("atmega32u4", personality, image=tmp_path / "served.bin") as emulator:
        settings = {"listen": ("127.0.0.1", 0)} if transport == "usbip" else {}
        server = threading.Thread(target=bootkit.serve, args=(emulator, transport), daemon=True,
                                  kwargs={"stop": stop, "ready": ready.put, "log": None, **settings})
        server.start()
        try:
            where = ready.get(timeout=10)  # one line: usbip's HOST:PORT, the pty's path
            selection = {"usbip": where} if transport == "usbip" else {"port": where, "chip": "atmega32u4"}
            with bootkit.open_target(personality, **selection) as target:
                assert target.emulator is None
                result = target.flash(SAMPLE)
            assert result.verified and "application started" in result.steps[-1]
        finally:
            stop.set()
            server.join(10)
        assert not server.is_alive()
        assert emulator.memory.app_valid
        assert holds(emulator.memory.flash_bytes(), emulator.chip, load(SAMPLE))


def test_an_option_or_link_a_personality_does_not_take_is_refused(tmp_path):
    # FLIP's secure mode on a DfuSe device, a serial port for a DFU host: both were dropped
    with pytest.raises(ValueError, match=r"option 'secure' does not apply to dfu/dfuse \(it takes: "):
        bootkit.open_target("dfu", emulate="stm32f411", dialect="dfuse", options={"secure": True})
    with pytest.raises(ValueError, match=r"port= does not apply to dfu"):
        bootkit.open_target("dfu", port="/dev/ttyACM0")
    with bootkit.open_target("dfu", emulate="stm32f411", options={"transfer_size": 2048}) as target:
        with pytest.raises(ValueError, match=r"option 'mcu' does not apply to dfu/dfuse"):
            target.flash(SAMPLE_STM32, mcu="atmega32u4")
        assert target.emulator.memory.is_blank()  # refused before anything was erased
        assert target.flash(SAMPLE_STM32, transfer_size=2048).verified


def test_personalities_and_transports_are_the_registered_names():
    from bootkit import registry

    assert bootkit.PERSONALITIES == tuple(registry.personality_names())
    assert set(bootkit.TRANSPORTS) == set(registry.transport_names())


def test_the_dialect_may_come_with_the_options():
    with bootkit.open_target("hid", emulate="atmega32u4", options={"dialect": "lufa", "interrupt_out": True}) as t:
        assert t.dialect == "lufa" and t.emulator.settings.interrupt_out
        assert t.flash(SAMPLE).dialect == "lufa"
    with pytest.raises(ValueError, match="disagree"):
        bootkit.open_target("hid", emulate="atmega32u4", dialect="native", options={"dialect": "lufa"})
