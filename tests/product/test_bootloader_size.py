"""One bootloader-size rule (#18 item 5): a profile's protection.bootloader_size reads like a
chip table's boot_size, and a personality's declared bootloader size (facts) reads the same
in product checks as in the chooser."""

from __future__ import annotations

import dataclasses

import pytest

from bootkit import chooser
from bootkit.memory import ChipFileError, load_chip_file
from bootkit.product import ProductError, load_product, typical_bootloader_bytes

SIZES = ["4K", "4 K", "4KiB", "4 KiB", "4096", "4096 B", "0x1000", "4KB", "4 kb", "4k", "four", "4 KiB (LUFA)"]


def _chip_table(tmp_path, boot):
    path = tmp_path / "chip.toml"
    path.write_text(f"[chip]\nname='c'\nfamily='avr'\nflash='32K'\npage_size=128\nboot_size={boot!r}\nusb=true\n")
    try:
        return load_chip_file(path, register=False).boot_size
    except ChipFileError:
        return None


def _profile(tmp_path, boot):
    path = tmp_path / "p.toml"
    path.write_text("[product]\nname='x'\nchip='atmega32u4'\npersonality='dfu'\ndialect='flip'\n"
                    f"[protection]\nbootloader_size={boot!r}\n")
    try:
        return load_product(path).chip.boot_size
    except ProductError as exc:
        assert "protection.bootloader_size" in str(exc)
        return None


@pytest.mark.parametrize("text", SIZES)
def test_a_profile_reads_a_size_as_a_chip_table_does(tmp_path, text):
    assert _profile(tmp_path, text) == _chip_table(tmp_path, text)


@pytest.mark.parametrize("text", ["ROM", "512 B", "4 KiB", "16 KiB", "4 KiB (LUFA default)",
                                  "2 KiB, 4 KiB with the serial number", "8 KiB; 4 KiB without EEPROM"])
def test_declared_bootloader_sizes_read_alike_in_products_and_the_chooser(text):
    from bootkit.classes.dfu.facts import FACTS

    facts = dataclasses.replace(FACTS[0], bootloader_size=text)
    assert typical_bootloader_bytes(facts) == chooser.bootloader_bytes(facts)
