"""Issue 21 item 7: packaging/60-bootkit.rules is generated from the personalities' default ids and
kept current; a permission error names it."""

from __future__ import annotations

import errno
import re
from pathlib import Path

import pytest

from bootkit import udev

RULES = Path(__file__).resolve().parents[1] / "packaging" / udev.FILE_NAME


@pytest.fixture(scope="module")
def ids():
    return udev.default_ids()


def test_the_shipped_file_is_what_the_generator_writes(ids):
    assert RULES.read_text() == udev.rules_text(ids), (
        f"{RULES} is stale: regenerate it with `python -m bootkit.udev > packaging/{udev.FILE_NAME}`")


def test_every_default_id_has_a_rule(ids):
    rules = {(int(v, 16), int(p, 16)) for v, p in
             re.findall(r'ATTRS\{idVendor\}=="([0-9a-f]{4})", ATTRS\{idProduct\}=="([0-9a-f]{4})"', RULES.read_text())}
    assert {(u.vid, u.pid) for u in ids} <= rules
    # the ids every anchor tool's users plug in (dfu-programmer's atmega32u4, DfuSe ROM, HalfKay,
    # Caterina's bootloader and sketch, USBasp) are among them: the generator found the personalities
    for known in [(0x03EB, 0x2FF4), (0x0483, 0xDF11), (0x16C0, 0x0478), (0x2341, 0x0036), (0x2341, 0x8036),
                  (0x16C0, 0x05DC), (0x1209, 0xBB01)]:
        assert known in rules, f"{known[0]:04x}:{known[1]:04x}"


def test_serial_bootloaders_are_hidden_from_modemmanager(ids):
    text = RULES.read_text()
    for u in ids:
        line = next(line for line in text.splitlines() if f'"{u.pid:04x}"' in line and f'"{u.vid:04x}"' in line)
        assert ("ID_MM_DEVICE_IGNORE" in line) == u.serial_port, line
    assert any(u.serial_port for u in ids) and not all(u.serial_port for u in ids)


def test_a_permission_error_names_the_rules_file(capsys):
    import argparse

    from bootkit import cli

    def denied(args):  # what pyusb's USBError (errno 13) and a serial port's open look like
        raise OSError(errno.EACCES, "Access denied (insufficient permissions)")

    args = argparse.Namespace(chip_file=[], func=denied)
    assert cli._run(args) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "Access denied" in err and udev.FILE_NAME in err and "docs/install.md" in err
