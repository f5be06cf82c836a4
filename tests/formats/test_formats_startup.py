"""Start-up (issue 22 item 3): what a command imports, read from `python -X importtime`.

Assertions are about WHICH modules a real `bootkit` process imports, never about time
(benchmarks/bench_startup.py measures the time, side by side with `python -c pass`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_STM32 = ROOT / "examples" / "firmware" / "sample-stm32f411.hex"

# never needed to list chips or to show a command's help: the USB, serial, MIDI stacks,
# intelhex (bootkit writes and reads HEX itself), the FAT file system, setuptools
HEAVY = ("usb", "serial", "intelhex", "pyfatfs", "fs", "mido", "rtmidi", "pkg_resources", "setuptools")


def imported(argv: list[str], cwd: Path) -> tuple[set[str], subprocess.CompletedProcess]:
    """The modules a `python -X importtime -m bootkit ARGV` process imports."""
    env = dict(os.environ, COLUMNS="100")
    env.pop("PYTHONPROFILEIMPORTTIME", None)
    # generous: a bootkit process on a loaded 2-core machine, no timing asserted
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "bootkit", *argv], cwd=cwd, env=env,
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    names = set()
    for line in r.stderr.splitlines():
        if line.startswith("import time:") and "self [us]" not in line:
            names.add(line.rsplit("|", 1)[1].strip())
    assert names, f"no -X importtime output: {r.stderr[-500:]}"
    return names, r


def top_level(names: set[str]) -> set[str]:
    return {n.split(".")[0] for n in names}


def test_bootkit_chips_imports_no_heavy_module(tmp_path):
    names, r = imported(["chips"], tmp_path)
    assert r.returncode == 0, r.stderr[-500:]
    # the chips table is plain text (rich cost ~2x python's start-up there)
    found = top_level(names) & (set(HEAVY) | {"rich"})
    assert not found, sorted(found)
    assert "importlib.metadata" not in names  # built-ins are found without the metadata machinery


@pytest.mark.parametrize("argv", [["flash", "--via", "dfu", "--help"], ["drop", "--help"], ["convert", "--help"]])
def test_help_imports_no_heavy_module_nor_rich(tmp_path, argv):
    names, r = imported(argv, tmp_path)
    assert r.returncode == 0, r.stderr[-500:]
    found = top_level(names) & (set(HEAVY) | {"rich"})
    assert not found, sorted(found)


def test_the_msc_drop_path_does_not_import_pkg_resources(tmp_path):
    """A whole `bootkit drop` through FAT on SCSI commands (pyfatfs, whose base, fs 2.4.16,
    declares its namespace through pkg_resources): the drop works and pkg_resources, and
    setuptools with it, is never imported."""
    names, r = imported(["drop", str(SAMPLE_STM32), "--emulate", "stm32f411"], tmp_path)
    assert r.returncode == 0, r.stderr[-800:]
    assert "pyfatfs.PyFatFS" in names and "fs.base" in names  # the FAT path really ran
    assert "pkg_resources" not in names and "setuptools" not in names


def test_fs_still_works_after_the_import_without_pkg_resources(tmp_path):
    """After bootkit's import of fs, fs opens file systems by URL (its openers' entry points
    come from importlib.metadata) and `import pkg_resources` gives setuptools' own module."""
    code = ("import sys\n"
            "from bootkit.classes.msc.fatfs import _import_fs\n"
            "_import_fs()\n"
            "assert 'pkg_resources' not in sys.modules, 'pkg_resources imported'\n"
            "import fs\n"
            "with fs.open_fs('mem://') as m:\n"
            "    m.writetext('a.txt', 'x'); assert m.readtext('a.txt') == 'x'\n"
            "assert isinstance(fs.ResourceType.file.value, int)\n"
            "import importlib.util\n"
            "if importlib.util.find_spec('pkg_resources') is None:  # setuptools >= 82\n"
            "    print('module True')\n"
            "else:\n"
            "    import pkg_resources\n"
            "    print(type(pkg_resources).__name__, hasattr(pkg_resources, 'working_set'))\n")
    r = subprocess.run([sys.executable, "-W", "ignore", "-c", code], cwd=tmp_path, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-800:]
    assert r.stdout.split() == ["module", "True"]


def test_help_loads_no_format_module(tmp_path):
    """The argument parser reads formats.FORMATS: the six format modules load on first use."""
    names, r = imported(["flash", "--via", "dfu", "--help"], tmp_path)
    assert r.returncode == 0, r.stderr[-500:]
    assert "bootkit.formats" in names
    loaded = sorted(n for n in names if n.startswith("bootkit.formats.") and n != "bootkit.formats.image")
    assert loaded == []


def test_convert_loads_no_chip_database(tmp_path):
    """A conversion needs no chip: the memory package (chip database, simulated flash and its
    image store) is loaded only for --chip-file."""
    out = tmp_path / "out.uf2"
    names, r = imported(["convert", str(ROOT / "examples" / "firmware" / "sample-atmega32u4.hex"), str(out),
                         "--family", "atmega32"], tmp_path)
    assert r.returncode == 0, r.stderr[-500:]
    size = out.stat().st_size
    assert size % 512 == 0 and size // 512 * 256 >= 9520  # the sample's 9520 bytes, 256 a block
    assert not {n for n in names if n == "bootkit.memory" or n.startswith("bootkit.memory.")}
    assert not top_level(names) & set(HEAVY)


def test_version_builds_no_command(tmp_path):
    """`bootkit --version` prints what argparse's version action printed, without building
    every command's parser (and the personalities' through the registry's plug-in scan)."""
    import bootkit

    names, r = imported(["--version"], tmp_path)
    assert (r.returncode, r.stdout) == (0, f"bootkit {bootkit.__version__}\n")
    assert "importlib.metadata" not in names and "bootkit.registry" not in names
    assert not {n for n in names if n.startswith("bootkit.cli.") and n not in
                ("bootkit.cli.errors", "bootkit.cli.parser")}
