"""One writer per image: an flock on FILE.bin.lock (issue 17 item 3).

The holders run in child processes (flock locks belong to an open file
description, so a lock in this process would conflict with itself too); a
child says "ready" once it holds the image and keeps it until its stdin closes.
"""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bootkit.cli import main
from bootkit.emulator import Emulator
from bootkit.formats import Image, save
from bootkit.memory import SimulatedFlash, get_chip
from bootkit.memory.store import ImageBusy

CHIP = get_chip("stm32f411")

HOLDER = textwrap.dedent("""
    import sys
    from bootkit.memory import SimulatedFlash, get_chip
    flash = SimulatedFlash(get_chip("stm32f411"), sys.argv[1], readonly=sys.argv[2] == "ro")
    print("ready", flush=True)
    sys.stdin.read()
    flash.close()
""")


class Holder:
    """A child process that opens the image (writer or reader) and holds it."""

    def __init__(self, tmp_path: Path, image: Path, mode: str = "rw"):
        script = tmp_path / "holder.py"     # argv[0] is what the lock file names
        script.write_text(HOLDER)
        self.proc = subprocess.Popen([sys.executable, str(script), str(image), mode], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # no timer: readline returns when the child holds the image, or at its exit
        line = self.proc.stdout.readline().strip()
        assert line == "ready", (line, self.proc.stderr.read() if self.proc.poll() is not None else "")
        self.pid = self.proc.pid

    def release(self) -> None:
        self.proc.stdin.close()
        assert self.proc.wait(timeout=120) == 0, self.proc.stderr.read()   # generous: a loaded 2-core box

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.release()


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "app.bin"
    SimulatedFlash(CHIP, path).close()
    return path


def test_a_second_writer_is_refused_with_one_line_naming_the_file_and_the_holder(tmp_path, image):
    with Holder(tmp_path, image) as holder:
        with pytest.raises(ImageBusy) as exc:
            SimulatedFlash(CHIP, image)
        message = str(exc.value)
        assert message == f"{image} is in use by PID {holder.pid} (holder.py {image} rw): one writer per image"
        assert "\n" not in message
        assert not isinstance(exc.value, ValueError)   # not "bad input": the environment is busy
        # the holder's image is untouched and it still works
        before = image.read_bytes()
    assert image.read_bytes() == before
    SimulatedFlash(CHIP, image).close()          # released at the holder's close


def test_readers_share_and_a_writer_is_refused_while_one_reads(tmp_path, image):
    with Holder(tmp_path, image, "ro") as reader:
        with SimulatedFlash(CHIP, image, readonly=True) as flash:      # a second reader
            assert flash.app_valid is False
        with pytest.raises(ImageBusy) as exc:
            SimulatedFlash(CHIP, image)
        # the lock file still names an earlier writer: who holds it now comes from /proc/locks
        assert f"PID {reader.pid} (" in str(exc.value)
        assert str(image) in str(exc.value)
    SimulatedFlash(CHIP, image).close()


def test_a_reader_is_refused_while_a_writer_holds_it(tmp_path, image):
    with Holder(tmp_path, image) as writer:
        with pytest.raises(ImageBusy) as exc:
            SimulatedFlash(CHIP, image, readonly=True)
        assert f"PID {writer.pid}" in str(exc.value)


def test_one_process_opening_twice_conflicts_and_closing_releases(image):
    first = SimulatedFlash(CHIP, image)
    with pytest.raises(ImageBusy):
        SimulatedFlash(CHIP, image)
    first.close()
    SimulatedFlash(CHIP, image).close()
    first.close()                                # a second close is harmless


def test_a_dropped_flash_releases_its_lock_as_a_killed_process_does(image):
    flash = SimulatedFlash(CHIP, image)
    flash.program(0x08010000, b"\x00" * 16)
    with pytest.raises(ImageBusy):
        SimulatedFlash(CHIP, image)
    del flash
    gc.collect()
    with SimulatedFlash(CHIP, image) as again:
        assert again.read(0x08010000, 16) == b"\xff" * 16    # dropped: its unsaved changes are lost


def test_an_image_refused_at_load_releases_the_lock(tmp_path):
    path = tmp_path / "short.bin"
    path.write_bytes(b"\xff" * 100)
    with pytest.raises(ValueError):
        SimulatedFlash(CHIP, path)
    path.write_bytes(b"\xff" * CHIP.flash_size)
    with SimulatedFlash(CHIP, path):             # the refused open left no lock behind
        with pytest.raises(ImageBusy):           # (and this one holds it)
            SimulatedFlash(CHIP, path)


def test_emulator_holds_the_lock_until_closed_and_passes_readonly(tmp_path, image):
    em = Emulator(CHIP, "dfu", image=image, options={"dialect": "dfuse"})
    with pytest.raises(ImageBusy):
        Emulator(CHIP, "dfu", image=image, options={"dialect": "dfuse"})
    with pytest.raises(ImageBusy):
        Emulator(CHIP, "dfu", image=image, options={"dialect": "dfuse"}, readonly=True)
    em.close()
    a = Emulator(CHIP, "dfu", image=image, options={"dialect": "dfuse"}, readonly=True)
    b = Emulator(CHIP, "dfu", image=image, options={"dialect": "dfuse"}, readonly=True)
    assert a.memory.readonly and b.memory.readonly
    a.close()
    b.close()


def test_an_emulator_that_fails_to_build_releases_the_lock(image):
    with pytest.raises(ValueError):
        Emulator(CHIP, "dfu", image=image, options={"dialect": "no-such-dialect"})
    with Emulator(CHIP, "dfu", image=image, options={"dialect": "dfuse"}):
        with pytest.raises(ImageBusy):
            SimulatedFlash(CHIP, image)


def test_flash_onto_an_image_in_use_exits_1_naming_the_holder(tmp_path, image, capsys):
    fw = tmp_path / "fw.bin"
    save(Image([(0x08000000 + 0x4000, bytes(range(256)) * 8)]), fw)
    before = image.read_bytes()
    with Holder(tmp_path, image) as holder:
        code = main(["flash", str(fw), "--emulate", "stm32f411", "--image", str(image)])
        err = capsys.readouterr().err
    assert code == 1
    assert err.strip().splitlines() == [
        f"bootkit: failed: {image} is in use by PID {holder.pid} (holder.py {image} rw): one writer per image"]
    assert image.read_bytes() == before


def test_the_holder_is_named_bootkit_when_run_as_python_m_bootkit():
    from bootkit.memory.store import _program

    assert _program("/srv/checkout/bootkit/__main__.py") == "bootkit"
    assert _program("/usr/local/bin/bootkit") == "bootkit"
