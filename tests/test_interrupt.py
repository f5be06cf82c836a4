"""Ctrl-C and SIGTERM during a host command (#17 item 6): one line saying what state the
device was left in, exit 130 (SIGINT) or 143 (SIGTERM), and an emulated image written back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bootkit import cli, progress
from bootkit.cli.errors import Terminated
from bootkit.memory.flash import SimulatedFlash

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = str(ROOT / "examples" / "firmware" / "sample-atmega32u4.hex")


def _interrupt_at(monkeypatch, method: str, nth: int, exc=KeyboardInterrupt, during: str | None = None):
    """Make the emulated memory's ``method`` raise ``exc`` on its ``nth`` call (counting only
    calls made while the host's current phase names ``during``)."""
    original = getattr(SimulatedFlash, method)
    calls = {"n": 0}

    def hooked(self, *a, **kw):
        if during is None or (progress.phases and during in progress.phases[-1]):
            calls["n"] += 1
            if calls["n"] == nth:
                raise exc()
        return original(self, *a, **kw)

    monkeypatch.setattr(SimulatedFlash, method, hooked)
    return calls


def _flash(tmp_path, *extra):
    return cli.main(["flash", "--emulate", "atmega32u4", "--image", str(tmp_path / "fw.bin"),
                     "--no-progress", *extra, SAMPLE])


def test_interrupt_while_programming_says_partly_written(tmp_path, monkeypatch, capsys):
    calls = _interrupt_at(monkeypatch, "program", 3)
    assert _flash(tmp_path) == 130
    assert calls["n"] == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("bootkit: interrupted: the flash is partly written (")
    assert "the application is not valid and the device is still in its bootloader" in err[0]
    assert f"{tmp_path / 'fw.bin'} saved with the application not valid" in err[0]


def test_interrupt_while_verifying(tmp_path, monkeypatch, capsys):
    calls = _interrupt_at(monkeypatch, "read", 1, during="verify")
    assert _flash(tmp_path) == 130
    assert calls["n"] == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("bootkit: interrupted: the image was written but not verified"), err
    assert "\n" not in err


def test_interrupt_before_anything_was_written(tmp_path, monkeypatch, capsys):
    calls = _interrupt_at(monkeypatch, "erase_all", 1)
    # FLIP erases the chip before the first program; no bar has started yet
    assert _flash(tmp_path) == 130
    assert calls["n"] == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("bootkit: interrupted: nothing was written: the device is unchanged"), err


def test_interrupt_after_leave(tmp_path, monkeypatch, capsys):
    from bootkit.classes.dfu import host

    def interrupted(*a, **kw):
        progress.phase("leave")
        raise KeyboardInterrupt

    monkeypatch.setattr(host, "observe_leave", interrupted)
    assert _flash(tmp_path) == 130
    err = capsys.readouterr().err.strip()
    assert "already told to leave its bootloader" in err, err
    # the image was complete and manifested before the leave: written back as valid
    assert f"{tmp_path / 'fw.bin'} saved with the application valid" in err


def test_sigterm_is_143_and_names_the_state(tmp_path, monkeypatch, capsys):
    _interrupt_at(monkeypatch, "program", 2, exc=Terminated)
    assert _flash(tmp_path) == 143
    err = capsys.readouterr().err.strip()
    assert err.startswith("bootkit: interrupted: the flash is partly written"), err


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_real_signal_in_a_real_process(tmp_path, sig, code):
    """The signal itself (not a raised exception) arrives while the device is being programmed."""
    image = tmp_path / "fw.bin"
    script = textwrap.dedent(f"""
        import os, sys
        from bootkit import cli
        from bootkit.memory.flash import SimulatedFlash
        original = SimulatedFlash.program
        calls = [0]
        def program(self, *a, **kw):
            calls[0] += 1
            if calls[0] == 4:
                os.kill(os.getpid(), {int(sig)})
            return original(self, *a, **kw)
        SimulatedFlash.program = program
        sys.exit(cli.main(["flash", "--emulate", "atmega32u4", "--image", {str(image)!r},
                           "--no-progress", {SAMPLE!r}]))
    """)
    # Started as from a terminal: a shell's background job (nohup, `&` in a script, some CI
    # runners) inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler.
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                       cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                       preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert p.returncode == code, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bootkit: interrupted: the flash is partly written"), p.stderr
    # the emulated device's flash was written back, with the application marked invalid
    assert image.exists()
    state = json.loads(Path(str(image) + ".state.json").read_text())
    assert state["app_valid"] is False
