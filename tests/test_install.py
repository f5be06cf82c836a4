"""Issue 21 item 2: bootkit installs everywhere.

- Every package ``pip install bootkit`` pulls in (the base dependencies, followed to the bottom) is
  pure Python, so it installs from a ``py3-none-any`` wheel on musl, 32-bit Raspberry Pi OS and the
  newest Pythons, with no compiler and no ALSA headers.  python-rtmidi (a C++ extension) is only in
  the ``[midi]`` extra.
- A fresh virtual environment with ``pip install .`` (no extra) runs ``bootkit demo`` with every row
  verified, and the commands that need a MIDI port say which extra to install.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from packaging.markers import Marker, default_environment

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _requirements(reqs: list[str] | None) -> list[str]:
    """The names of the requirements that apply here without any extra."""
    env = default_environment()
    env["extra"] = ""
    names = []
    for req in reqs or ():
        head, _, marker = req.partition(";")
        if marker.strip() and not Marker(marker).evaluate(env):
            continue
        m = NAME.match(head)
        assert m, req
        names.append(m.group(1))
    return names


def _closure(names: list[str]) -> dict[str, metadata.Distribution]:
    seen: dict[str, metadata.Distribution] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        dist = metadata.distribution(name)
        seen[key] = dist
        todo.extend(_requirements(dist.requires))
    return seen


def test_python_rtmidi_is_only_an_extra():
    base = [n.lower() for n in _requirements(PYPROJECT["project"]["dependencies"])]
    assert "python-rtmidi" not in base
    assert "mido" in base  # .mid files need only mido, which is pure Python
    assert any(r.startswith("python-rtmidi") for r in PYPROJECT["project"]["optional-dependencies"]["midi"])


def test_every_base_dependency_is_pure_python():
    """WHEEL's Root-Is-Purelib (PEP 427) of each installed distribution: true means no compiled code,
    so pip finds or builds a py3-none-any wheel anywhere."""
    dists = _closure(_requirements(PYPROJECT["project"]["dependencies"]))
    assert {"pyusb", "intelhex", "pyserial", "rich", "mido", "pyfatfs"} <= set(dists)
    compiled = []
    for key, dist in sorted(dists.items()):
        wheel = dist.read_text("WHEEL")
        if wheel is None:  # installed some other way (a Debian package, an egg): look at its files
            if any(str(f).endswith((".so", ".pyd")) for f in dist.files or ()):
                compiled.append(key)
            continue
        if not re.search(r"^Root-Is-Purelib:\s*true\s*$", wheel, re.M | re.I):
            compiled.append(key)
    assert not compiled, f"compiled packages among the base dependencies: {compiled}"


def test_the_metadata_says_where_it_runs():
    project = PYPROJECT["project"]
    classifiers = project["classifiers"]
    assert project["requires-python"] == ">=3.10"
    for minor in range(10, 15):
        assert f"Programming Language :: Python :: 3.{minor}" in classifiers
    assert "Operating System :: POSIX :: Linux" in classifiers


def _source_copy(dest: Path) -> Path:
    """The committed tree plus the working changes, without build leftovers (pip builds in place)."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           check=True, capture_output=True).stdout.split(b"\0")
    for f in filter(None, files):
        src = ROOT / os.fsdecode(f)
        if src.is_file():
            target = dest / os.fsdecode(f)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
    return dest


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory):
    """pip install . without the [midi] extra, in a virtual environment that does not see this one's
    packages (so python-rtmidi, installed here for the MIDI tests, is absent there)."""
    if shutil.which("git") is None:
        pytest.skip("git is needed to copy the source tree")
    base = tmp_path_factory.mktemp("install")
    src = _source_copy(base / "src")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(src)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    return venv


@pytest.mark.xdist_group("fresh-venv")  # one fresh_venv (pip install .) for both under xdist
def test_install_without_the_midi_extra_runs_the_demo(fresh_venv, tmp_path):
    py = fresh_venv / "bin" / "python"
    probe = subprocess.run([str(py), "-c", "import rtmidi"], capture_output=True, text=True)
    assert probe.returncode != 0, "python-rtmidi came in without the [midi] extra"
    r = subprocess.run([str(fresh_venv / "bin" / "bootkit"), "demo"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=600, env={**os.environ, "COLUMNS": "200"})
    assert r.returncode == 0, r.stdout + r.stderr
    rows = [line for line in r.stdout.splitlines() if re.match(r"^\W*(dfu|hid|cdc|printer|msc|midi|isp)\b", line)]
    assert len(rows) >= 14, r.stdout
    assert {row.strip("│ ").split()[0] for row in rows} >= {"dfu", "hid", "cdc", "printer", "msc", "midi", "isp"}
    assert all(re.search(r"\byes\b", row) for row in rows), r.stdout
    assert any(row.strip("│ ").startswith("midi") for row in rows)


@pytest.mark.xdist_group("fresh-venv")  # one fresh_venv (pip install .) for both under xdist
def test_without_the_extra_a_midi_port_names_the_extra(fresh_venv, tmp_path):
    bootkit = str(fresh_venv / "bin" / "bootkit")
    (tmp_path / "fw.hex").write_text(":0400000001020304F2\n:00000001FF\n")
    enc = subprocess.run([bootkit, "midi", "encode", "fw.hex", "--chip", "atmega32u4", "-o", "fw.mid"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert enc.returncode == 0, enc.stderr  # .mid encoding needs mido only
    play = subprocess.run([bootkit, "midi", "play", "fw.mid", "--port", "nowhere"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert play.returncode == 1, play.stdout + play.stderr
    assert "pip install 'bootkit[midi]'" in play.stderr and "Traceback" not in play.stderr
    assert len(play.stderr.strip().splitlines()) == 1, play.stderr
