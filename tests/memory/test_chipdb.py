"""The chip database as a whole: lookup by signature, figures checked against avrdude.conf
and Microsoft's uf2families.json, the ``bootkit chips`` listing."""

from __future__ import annotations

from bootkit.memory import get_chip
from bootkit.memory.chips import chips_by_signature


def test_chips_by_signature_finds_the_part():
    assert chips_by_signature(bytes.fromhex("1E9587")) == [get_chip("atmega32u4")]
    assert chips_by_signature(bytes.fromhex("1E950F")) == [get_chip("atmega328p")]
    assert chips_by_signature(bytes.fromhex("1E9541")) == [get_chip("atxmega32a4u")]


def test_chips_by_signature_unknown_or_empty_is_empty():
    assert chips_by_signature(bytes.fromhex("1E0000")) == []
    # chips without a signature (STM32, RP2040) are never matched by an empty one
    assert chips_by_signature(b"") == []
