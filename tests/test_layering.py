"""Issue 18, "must show": nothing outside a personality's own package names it.

A case-sensitive word search (as ``grep -wE 'dfu|hid|cdc|printer|msc|midi'``) for the six
built-in personality names over bootkit/*.py, bootkit/cli/ and bootkit/transports/
(comments and docstrings included) finds nothing: the command line, products, chooser,
demo and transports reach personalities through bootkit.registry.
"""

from __future__ import annotations

import re
from pathlib import Path

BOOTKIT = Path(__file__).resolve().parents[1] / "bootkit"
NAMES = ("dfu", "hid", "cdc", "printer", "msc", "midi", "isp")
# grep -w: a word is letters, digits and underscores
WORD = re.compile(r"(?<![A-Za-z0-9_])(" + "|".join(NAMES) + r")(?![A-Za-z0-9_])")


def _files():
    yield from sorted(BOOTKIT.glob("*.py"))
    for folder in ("cli", "transports"):
        yield from sorted((BOOTKIT / folder).rglob("*.py"))


def test_the_search_covers_the_layers():
    files = [f.relative_to(BOOTKIT).as_posix() for f in _files()]
    assert "cli/__init__.py" in files and "product.py" in files and "transports/base.py" in files


def test_the_search_finds_what_it_looks_for():
    assert WORD.findall('via = "dfu"  # a midi port, .dfu file') == ["dfu", "midi", "dfu"]
    assert not WORD.findall("DFU, DfuSe, dfuse, hidden, midifile, cdc_acm, msc_")


def test_no_personality_is_named_outside_its_package():
    found = [f"{f.relative_to(BOOTKIT.parent)}:{n}: {line.strip()}"
             for f in _files() for n, line in enumerate(f.read_text().splitlines(), 1) if WORD.search(line)]
    assert not found, "\n".join(found)
