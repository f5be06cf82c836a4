"""Progress output (#21 item 5): each phase counts its own unit (an erase in sectors, program and
verify in bytes), a read-back while verifying is the "verify" bar, and when stderr is a file or a
pipe, plain lines instead of nothing (none under --no-progress or quiet)."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from bootkit import progress
from bootkit.cli import main

ROOT = Path(__file__).resolve().parents[1]
STM32 = str(ROOT / "examples" / "firmware" / "sample-stm32f411.hex")
AVR = str(ROOT / "examples" / "firmware" / "sample-atmega32u4.hex")
DFUSE = ["flash", "--via", "dfu", "--dialect", "dfuse", "--emulate", "stm32f411", STM32]
# A whole bootkit process on a loaded 2-core machine: start-up plus an emulated flash takes
# about a second here; the limit only stops a hung run, it measures nothing.
RUN_LIMIT = 300
SGR = re.compile(r"\x1b\[[0-9;]*m")  # colours: inside a line
CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")  # cursor moves, erasing: between lines


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("BOOTKIT_QUIET", "NO_COLOR", "CI", "TERM")}
    env.update(extra)
    return env


def _run_on_pty(argv, cwd) -> tuple[int, str]:
    """Run ``bootkit argv`` with a pseudo-terminal as its stderr; what the terminal received."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "bootkit", *argv], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=slave, cwd=cwd,
                            env=_env(TERM="xterm-256color", COLUMNS="160"))
    os.close(slave)
    got = bytearray()
    deadline = time.monotonic() + RUN_LIMIT
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child and everything it started closed the terminal
                    break
                if not chunk:
                    break
                got += chunk
            elif proc.poll() is not None:
                break
        proc.stdout.read()
        code = proc.wait(timeout=RUN_LIMIT)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return code, CONTROL.sub("\n", SGR.sub("", got.decode("utf-8", "replace")))


def test_bars_on_a_terminal_count_their_own_units(tmp_path):
    code, text = _run_on_pty([*DFUSE, "--image", str(tmp_path / "f.bin")], tmp_path)
    assert code == 0, text
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    erase = [line for line in lines if line.startswith("erase")]
    download = [line for line in lines if line.startswith("download")]
    verify = [line for line in lines if line.startswith("verify")]
    assert erase and download and verify, lines
    # the DfuSe erase counts sectors (stm32f411: the sample touches 3 of them), not bytes
    assert all(re.search(r"\b\d/3 sectors\b", line) for line in erase), erase
    assert not any("bytes" in line or "B/s" in line for line in erase), erase
    # program (DFU download) and verify count bytes, with the byte-size column
    assert any(re.search(r"kB\b", line) for line in download), download
    assert any(re.search(r"kB\b", line) for line in verify), verify
    # the read-back that checks the flash is "verify", never an "upload"
    assert not any(line.startswith("upload") for line in lines), lines


def test_plain_lines_in_a_captured_log(tmp_path):
    """stderr a file (a CI log): one line per phase, in its own unit, instead of nothing."""
    log = tmp_path / "log"
    with open(log, "w") as err:
        proc = subprocess.run([sys.executable, "-m", "bootkit", *DFUSE, "--image", str(tmp_path / "f.bin")],
                              stdout=subprocess.PIPE, stderr=err, cwd=tmp_path, env=_env(), timeout=RUN_LIMIT)
    lines = log.read_text().splitlines()
    assert proc.returncode == 0, lines
    assert [line.split(":")[0] for line in lines] == ["erase", "download", "verify"], lines
    assert re.fullmatch(r"erase: 3 sectors in \d+\.\d s", lines[0]), lines
    assert re.fullmatch(r"download: \d+ bytes in \d+\.\d s", lines[1]), lines
    assert re.fullmatch(r"verify: \d+ bytes in \d+\.\d s", lines[2]), lines


@pytest.mark.parametrize("how", ["--no-progress", "BOOTKIT_QUIET"])
def test_no_plain_lines_when_asked_for_none(tmp_path, how):
    log = tmp_path / "log"
    argv = [*DFUSE, "--image", str(tmp_path / "f.bin")] + (["--no-progress"] if how == "--no-progress" else [])
    env = _env(BOOTKIT_QUIET="1") if how == "BOOTKIT_QUIET" else _env()
    with open(log, "w") as err:
        proc = subprocess.run([sys.executable, "-m", "bootkit", *argv], stdout=subprocess.PIPE, stderr=err,
                              cwd=tmp_path, env=env, timeout=RUN_LIMIT)
    assert proc.returncode == 0
    assert log.read_text() == ""
    # and the in-process hook the command line's -q uses
    progress.set_quiet(True)
    try:
        assert progress.quiet()
    finally:
        progress.set_quiet(False)


def test_plain_bar_speaks_every_few_seconds_and_at_the_end():
    import io

    now = [100.0]
    out = io.StringIO()
    bar = progress.PlainBar("program", 12288, "bytes", clock=lambda: now[0], out=out)
    for step in range(12):  # 1 KiB per second of the fake clock
        now[0] += 1.0
        bar.advance(1024)
    bar.finish()
    lines = out.getvalue().splitlines()
    interval = progress.PLAIN_INTERVAL
    expected = [f"program: {n * 1024} of 12288 bytes ({n * 1024 * 100 // 12288}%)"
                for n in range(1, 13) if n % int(interval) == 0]
    assert lines[:-1] == expected
    assert lines[-1] == "program: 12288 bytes in 12.0 s"


def test_plain_bar_says_when_a_phase_ended_short():
    import io

    out = io.StringIO()
    bar = progress.PlainBar("erase", 12, "sectors", clock=lambda: 5.0, out=out)
    bar.advance(3)
    bar.finish()
    assert out.getvalue() == "erase: 3 of 12 sectors in 0.0 s\n"


@pytest.mark.parametrize("argv, wrote", [
    (["flash", "--via", "cdc", "--emulate", "atmega32u4", AVR], "writing flash"),
    (["flash", "--via", "hid", "--dialect", "native", "--emulate", "atmega32u4", AVR], "program"),
    (["flash", "--via", "dfu", "--dialect", "dfu", "--emulate", "stm32f103c8",
      str(ROOT / "examples" / "firmware" / "sample-stm32f103c8.hex")], "download"),
])
def test_read_back_while_verifying_is_the_verify_phase(tmp_path, capsys, argv, wrote):
    assert main([*argv, "--image", str(tmp_path / "f.bin")]) == 0, capsys.readouterr().err
    assert wrote in progress.phases
    at = progress.phases.index("verify")
    assert progress.phases.index(wrote) < at
    # nothing after the verify started is called a read or an upload: it is the check
    assert not [p for p in progress.phases[at:] if p.split(" ")[0] in ("upload", "read", "reading")], \
        progress.phases
