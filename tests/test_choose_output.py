"""`bootkit choose` output (#21 item 6): a short ranking by default (under 40 lines, no line wider
than the terminal or 100 columns), --details for every reason and the table, and --write
writes the profile whatever happens to stdout."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bootkit import chooser
from bootkit.chooser import choose, render_table
from bootkit.cli import main

ALL_NEEDS = ",".join(chooser.NEEDS)
CASES = [
    [],
    ["--os", "ipados"],
    ["--needs", "eeprom"],
    ["--os", "windows,linux", "--needs", "readback,unattended"],
    ["--os", "ipados,windows", "--needs", ALL_NEEDS],
    ["--needs", ALL_NEEDS, "--chip", "stm32f411"],
    ["--chip", "atmega328p"],  # nothing works: every dialect excluded
]


def _choose(capsys, *argv) -> list[str]:
    assert main(["choose", *argv]) == 0
    return capsys.readouterr().out.rstrip("\n").split("\n")


@pytest.mark.parametrize("argv", CASES, ids=lambda a: " ".join(a) or "default")
def test_default_view_is_short_and_narrow(capsys, monkeypatch, argv):
    monkeypatch.setenv("COLUMNS", "200")  # a wide terminal: still at most 100 columns
    lines = _choose(capsys, *argv)
    assert len(lines) < 40, "\n".join(lines)
    assert max(len(line) for line in lines) <= 100, max(lines, key=len)
    # every dialect is ranked, by name, in choose()'s order
    names = [r.name for r in choose(*_words(argv))]
    ranked = [line.split()[1] for line in lines if line.split(".", 1)[0].isdigit()]
    assert ranked == names
    assert not any(line.startswith("|") for line in lines)  # no table unless asked


def _words(argv):
    opts = dict(zip(argv[::2], argv[1::2]))
    return opts.get("--os", ""), opts.get("--needs", ""), opts.get("--chip")


def test_default_view_follows_a_narrow_terminal(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "60")
    lines = _choose(capsys, "--os", "ipados", "--needs", ALL_NEEDS)
    assert max(len(line) for line in lines) <= 60, max(lines, key=len)


def test_default_view_gives_the_top_choice_and_its_reasons(capsys):
    lines = _choose(capsys, "--needs", "eeprom,readback")
    best = next(r for r in choose("", "eeprom,readback") if r.works)
    assert lines[0].split()[1] == best.name
    at = lines.index(f"why {best.name}:")
    assert [line.strip() for line in lines[at + 1:at + 3]] == best.why


def test_details_prints_every_reason_and_the_table(capsys):
    lines = _choose(capsys, "--details", "--os", "ipados", "--needs", "eeprom")
    ranked = choose("ipados", "eeprom")
    text = "\n".join(lines)
    assert chooser.render_ranking(ranked) in text
    assert render_table(ranked) in text
    assert len(lines) > 40  # the long view really is the long one


def test_write_through_a_closed_pipe_still_writes_the_profile(tmp_path):
    """`bootkit choose --write p.toml | head`: the reader may be gone before anything is printed.
    A pipe whose reading end is closed makes the first write fail, every time."""
    out = tmp_path / "p.toml"
    r, w = os.pipe()
    os.close(r)
    try:
        proc = subprocess.run([sys.executable, "-m", "bootkit", "choose", "--needs", "eeprom", "--write", str(out)],
                              stdout=w, stderr=subprocess.PIPE, cwd=tmp_path, timeout=120)
    finally:
        os.close(w)
    assert out.exists(), proc.stderr
    best = next(r for r in choose("", "eeprom") if r.works)
    assert f'personality = "{best.personality}"' in out.read_text()
    assert proc.returncode == 0, proc.stderr


def test_choose_json_is_the_same_ranking_as_the_text(capsys, tmp_path):
    """--json: one array, best first, the same order and verdicts as the text ranking (#21 item 4)."""
    import json

    from bootkit.chooser import choose
    from bootkit.cli import main

    assert main(["choose", "--os", "ipados", "--needs", "no-host-software", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    ranked = choose(["ipados"], ["no-host-software"])
    assert [r["name"] for r in rows] == [r.name for r in ranked]
    assert [r["works"] for r in rows] == [r.works for r in ranked] and rows[0]["works"]
    assert rows[0]["reasons"] and all(isinstance(r["score"], (int, float)) for r in rows)
    out = tmp_path / "p.toml"
    assert main(["choose", "--needs", "eeprom", "--json", "--write", str(out)]) == 0
    assert out.exists() and json.loads(capsys.readouterr().out)
    assert main(["choose", "--os", "plan9", "--json"]) == 2
