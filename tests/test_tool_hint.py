"""`bootkit serve ... --transport pty` prints the avrdude line for the dialect being served
(it printed avr109 / m32u4 for every device, Optiboot and STK500 v2 programmers included)."""

from __future__ import annotations

import pytest

from bootkit import registry
from bootkit.emulator import Emulator
from bootkit.memory import get_chip


@pytest.mark.parametrize("personality,dialect,chip,expected", [
    ("cdc", "lufa", "atmega32u4", "avrdude -c avr109 -p m32u4 -P /dev/pts/7 -b 57600"),
    ("cdc", "optiboot", "atmega328p", "avrdude -c arduino -p m328p -P /dev/pts/7 -b 115200"),
    ("cdc", "wiring", "atmega2560", "avrdude -c wiring -p m2560 -P /dev/pts/7 -b 115200 -D"),
    ("isp", "stk500v2", "attiny85", "avrdude -c stk500v2 -p t85 -P /dev/pts/7"),
])
def test_the_hint_names_the_dialects_programmer_and_part(personality, dialect, chip, expected):
    hint = registry.personality(personality).tool_hint(dialect, get_chip(chip), "/dev/pts/7")
    assert hint is not None and hint.startswith(expected)


def test_no_hint_where_there_is_no_serial_tool():
    assert registry.personality("isp").tool_hint("usbasp", get_chip("attiny85"), "/dev/pts/7") is None
    assert registry.personality("dfu").tool_hint("dfuse", get_chip("stm32f411"), "/dev/pts/7") is None


def test_the_emulator_asks_its_personality():
    emu = Emulator("atmega328p", "cdc", dialect="optiboot")
    try:
        assert "-c arduino -p m328p" in (emu.tool_hint("/dev/pts/3") or "")
    finally:
        emu.memory.close()
