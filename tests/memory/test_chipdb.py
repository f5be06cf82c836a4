"""The chip database as a whole: lookup by signature, figures checked against avrdude.conf
and Microsoft's uf2families.json, DfuSe layouts, the ``bootkit chips`` listing."""

from __future__ import annotations

import os
import shutil

import pytest

from bootkit.memory import CHIPS, get_chip, parse_dfuse_layout
from bootkit.memory.chips import BUILTIN, chips_by_signature

from . import avrdude_conf

KiB = 1024


# ---------------------------------------------------------------------------
# Lookup by signature (issue 20's --chip auto)


def test_chips_by_signature_finds_the_part():
    assert chips_by_signature(bytes.fromhex("1E9587")) == [get_chip("atmega32u4")]
    assert chips_by_signature(bytes.fromhex("1E950F")) == [get_chip("atmega328p")]
    assert chips_by_signature(bytes.fromhex("1E9541")) == [get_chip("atxmega32a4u")]


def test_chips_by_signature_unknown_or_empty_is_empty():
    assert chips_by_signature(bytes.fromhex("1E0000")) == []
    # chips without a signature (STM32, RP2040) are never matched by an empty one
    assert chips_by_signature(b"") == []


def test_parts_that_share_a_signature_are_all_returned_in_database_order():
    # avrdude.conf gives the AT90USB1286/1287 and AT90USB646/647 one signature each
    assert [c.name for c in chips_by_signature(bytes.fromhex("1E9782"))] == ["at90usb1286", "at90usb1287"]
    assert [c.name for c in chips_by_signature(bytes.fromhex("1E9682"))] == ["at90usb646", "at90usb647"]


# ---------------------------------------------------------------------------
# What the database covers (issue 21 item 8)

# dfu-programmer's target table (src/arguments.c, target_map[], AVR and XMEGA rows):
# https://github.com/dfu-programmer/dfu-programmer/blob/master/src/arguments.c
# Its atmega32u6 is left out: avrdude.conf does not know it, so none of its figures
# could be checked.
DFU_PROGRAMMER_AVR = (
    "at90usb1287", "at90usb1286", "at90usb647", "at90usb646", "at90usb162", "at90usb82",
    "atmega32u4", "atmega32u2", "atmega16u4", "atmega16u2", "atmega8u2",
    "atxmega64a1u", "atxmega128a1u", "atxmega64a3u", "atxmega128a3u", "atxmega192a3u", "atxmega256a3u",
    "atxmega16a4u", "atxmega32a4u", "atxmega64a4u", "atxmega128a4u", "atxmega256a3bu",
    "atxmega64b1", "atxmega128b1", "atxmega64b3", "atxmega128b3",
    "atxmega64c3", "atxmega128c3", "atxmega256c3", "atxmega384c3", "atxmega16c4",
)

# The rest the issue names: AVRprog users' parts, the STM32 series with a DfuSe ROM
# bootloader, SAMD, ESP32-S2/S3, nRF52, RP2040/RP2350
WANTED = (
    "atmega8", "atmega88", "atmega168", "atmega168p", "atmega328", "atmega328p", "atmega644p",
    "atmega1284p", "atmega2560", "atmega1280",
    "attiny13a", "attiny25", "attiny45", "attiny85", "attiny44", "attiny84", "attiny2313", "attiny4313",
    "samd21g18a", "samd51j19a", "esp32s2", "esp32s3", "nrf52833", "nrf52840", "rp2040", "rp2350",
)
STM32_SERIES = ("stm32f0", "stm32f1", "stm32f3", "stm32f4", "stm32f7", "stm32g0", "stm32g4", "stm32h7", "stm32l4")


def test_the_database_has_at_least_60_chips_and_every_one_asked_for():
    names = [c.name for c in CHIPS]
    assert len(BUILTIN) >= 60
    assert len(set(names)) == len(names)
    missing = [n for n in DFU_PROGRAMMER_AVR + WANTED if n not in names]
    assert missing == []
    assert "stm32f411" in names  # kept
    assert [s for s in STM32_SERIES if not any(n.startswith(s) for n in names)] == []


def test_names_and_aliases_are_unique_case_insensitively():
    seen: dict[str, str] = {}
    for chip in BUILTIN:
        for key in (chip.name, *chip.aliases):
            assert key.lower() not in seen, f"{key} names both {seen.get(key.lower())} and {chip.name}"
            seen[key.lower()] = chip.name


def test_every_chip_has_a_protected_region_inside_its_flash_or_none():
    for chip in BUILTIN:
        assert chip.flash_start <= chip.boot_start <= chip.boot_end <= chip.flash_end, chip.name
        assert chip.boot_size % min(s for _, s in chip.flash_sectors) == 0 or chip.family == "avr", chip.name
        if chip.boot_size:
            assert chip.layout().protected == ((chip.boot_start, chip.boot_end),)
        assert chip.flash_size % chip.page_size == 0, chip.name


# ---------------------------------------------------------------------------
# AVR and ATxmega figures against the avrdude.conf the avrdude package installs


@pytest.fixture(scope="module")
def avrdude_parts():
    path = avrdude_conf.find_conf()
    if path is None:
        if os.environ.get("CI") or shutil.which("avrdude"):
            pytest.fail("avrdude.conf not found (install the avrdude package)")
        pytest.skip("avrdude is not installed (apt-get install avrdude); CI runs this")
    return avrdude_conf.parse(path.read_text(encoding="utf-8", errors="replace"))


AVR_CHIPS = [c.name for c in BUILTIN if c.family in ("avr", "xmega")]


def _part_for(chip, parts):
    """The avrdude part a chip names among its aliases (m32u4, x128a3u, ...)."""
    ids = [a for a in chip.aliases if a in parts]
    assert len(ids) == 1, f"{chip.name}: aliases {chip.aliases} name {len(ids)} avrdude parts"
    part = parts[ids[0]]
    assert part.value("desc")[0].lower() == chip.name, (chip.name, part.value("desc"))
    return part


def test_every_avr_part_is_compared():
    # guard: the parametrised comparison below covers all of them
    assert len(AVR_CHIPS) >= 50
    assert {"atmega32u4", "atmega16u2", "atmega328p", "attiny85", "atxmega128a3u"} <= set(AVR_CHIPS)


@pytest.mark.parametrize("name", AVR_CHIPS)
def test_avr_figures_match_avrdude_conf(name, avrdude_parts):
    chip = get_chip(name)
    part = _part_for(chip, avrdude_parts)
    assert chip.signature == part.signature()
    assert chip.flash_size == part.mem_int("flash", "size")
    assert chip.page_size == part.mem_int("flash", "page_size")
    assert chip.flash_sectors == ((chip.flash_size // chip.page_size, chip.page_size),)
    assert chip.eeprom_size == part.mem_int("eeprom", "size")
    assert chip.eeprom_page == part.mem_int("eeprom", "page_size")


@pytest.mark.parametrize("name", [n for n in AVR_CHIPS if get_chip(n).family == "xmega"])
def test_xmega_sections_match_avrdude_conf(name, avrdude_parts):
    # avrdude.conf maps the ATxmega flash at 0x800000: application, then the boot section
    chip = get_chip(name)
    part = _part_for(chip, avrdude_parts)
    flash_base = part.mem_int("flash", "offset")
    assert chip.boot_start == part.mem_int("boot", "offset") - flash_base
    assert chip.boot_size == part.mem_int("boot", "size")
    assert chip.boot_start == part.mem_int("application", "size")
    assert chip.boot_end == chip.flash_end


@pytest.mark.parametrize("name", [n for n in AVR_CHIPS if get_chip(n).family == "avr"])
def test_avr_fuses_exist_in_avrdude_conf_and_claim_no_bit_it_cannot_write(name, avrdude_parts):
    chip = get_chip(name)
    part = _part_for(chip, avrdude_parts)
    fuse_mems = {m for m in part.memories if m in ("lfuse", "hfuse", "efuse")}
    assert {f.name for f in chip.fuses} == fuse_mems
    for fuse in chip.fuses:
        writable = avrdude_conf.write_mask(part.memories[fuse.name]["write"][0])
        assert fuse.mask & ~writable == 0, (fuse.name, hex(fuse.mask), hex(writable))
        # unimplemented bits read as 1 (datasheets: "unprogrammed")
        assert fuse.default | fuse.mask == 0xFF, (fuse.name, hex(fuse.default))


def test_the_conf_reader_follows_parent_parts():
    # avrdude.conf's m328p is `part parent "m328"` with only its own signature: the rest is inherited
    text = '''
    part
        id = "base"; desc = "Base";
        signature = 0x1e 0x95 0x14;
        memory "flash" size = 32768; page_size = 128; ;
        memory "efuse" size = 1; write = "1010.1100--1010.0100--xxxx.xxxx--xxxx.xiii"; ;
    ;
    part parent "base"  # a comment; with "quotes"
        id = "child"; desc = "Child";
        signature = 0x1e 0x95 0x0f;
        memory "flash" page_size = 64; ;
        memory "efuse" = NULL;
    ;
    '''
    parts = avrdude_conf.parse(text)
    assert parts["child"].signature() == bytes.fromhex("1E950F")
    assert parts["child"].mem_int("flash", "size") == 32768
    assert parts["child"].mem_int("flash", "page_size") == 64
    assert parts["base"].mem_int("flash", "page_size") == 128
    assert "efuse" not in parts["child"].memories
    assert avrdude_conf.write_mask(parts["base"].memories["efuse"]["write"][0]) == 0x07


# ---------------------------------------------------------------------------
# UF2 family IDs against Microsoft's list

# The entries bootkit's chips use, copied from
# https://github.com/microsoft/uf2/blob/90e9741f217f5a40c98ba74d663e408041037578/utils/uf2families.json
UF2_FAMILIES_JSON = [
    {"id": "0x16573617", "short_name": "ATMEGA32", "description": "Microchip (Atmel) ATmega32"},
    {"id": "0x68ed2b88", "short_name": "SAMD21", "description": "Microchip (Atmel) SAMD21"},
    {"id": "0x55114460", "short_name": "SAMD51", "description": "Microchip (Atmel) SAMD51"},
    {"id": "0x621e937a", "short_name": "NRF52833", "description": "Nordic NRF52833"},
    {"id": "0xada52840", "short_name": "NRF52840", "description": "Nordic NRF52840"},
    {"id": "0x647824b6", "short_name": "STM32F0", "description": "ST STM32F0xx"},
    {"id": "0x5ee21072", "short_name": "STM32F1", "description": "ST STM32F103"},
    {"id": "0x6b846188", "short_name": "STM32F3", "description": "ST STM32F3xx"},
    {"id": "0x57755a57", "short_name": "STM32F4", "description": "ST STM32F4xx"},
    {"id": "0x53b80f00", "short_name": "STM32F7", "description": "ST STM32F7xx"},
    {"id": "0x300f5633", "short_name": "STM32G0", "description": "ST STM32G0xx"},
    {"id": "0x4c71240a", "short_name": "STM32G4", "description": "ST STM32G4xx"},
    {"id": "0x6db66082", "short_name": "STM32H7", "description": "ST STM32H7xx"},
    {"id": "0x00ff6919", "short_name": "STM32L4", "description": "ST STM32L4xx"},
    {"id": "0xbfdd4eee", "short_name": "ESP32S2", "description": "ESP32-S2"},
    {"id": "0xc47e5767", "short_name": "ESP32S3", "description": "ESP32-S3"},
    {"id": "0xe48bff56", "short_name": "RP2040", "description": "Raspberry Pi RP2040"},
    {"id": "0xe48bff59", "short_name": "RP2350_ARM_S", "description": "Raspberry Pi RP2350, Secure Arm image"},
]
UF2_BY_NAME = {e["short_name"]: int(e["id"], 16) for e in UF2_FAMILIES_JSON}


def _uf2_short_name(chip) -> str:
    """The uf2families.json entry a chip's UF2 bootloader uses (tinyuf2 / uf2-samdx1 /
    Adafruit_nRF52_Bootloader / the RP2040 and RP2350 boot ROMs / Caterina-UF2 for ATmega32)."""
    if chip.family == "stm32":
        return chip.name[:7].upper()          # stm32f411 -> STM32F4, stm32g0b1re -> STM32G0
    if chip.family == "samd":
        return chip.name[:6].upper()          # samd21g18a -> SAMD21
    if chip.name == "rp2350":
        return "RP2350_ARM_S"
    if chip.name.startswith("atmega32"):
        return "ATMEGA32"
    return chip.name.upper()                  # esp32s2, nrf52840, rp2040


@pytest.mark.parametrize("name", [c.name for c in BUILTIN if c.uf2_family is not None])
def test_uf2_family_ids_are_microsofts(name):
    chip = get_chip(name)
    assert chip.uf2_family == UF2_BY_NAME[_uf2_short_name(chip)]


def test_every_uf2_chip_family_has_an_id():
    # the series that have UF2 bootloaders all carry an id
    for chip in BUILTIN:
        if chip.family in ("stm32", "samd", "esp32", "nrf52", "rp2040", "rp2350"):
            assert chip.uf2_family is not None, chip.name


# ---------------------------------------------------------------------------
# STM32 sector layouts against what the ROM DfuSe bootloader reports

# Layout strings as dfu-util -l prints them for the ROM bootloader (AN2606's USB DFU and
# the reference manuals' "Flash memory organization" tables give the same sectors).
DFUSE_LAYOUTS = {
    "stm32f042k6": "@Internal Flash  /0x08000000/032*0001Kg",
    "stm32f072rb": "@Internal Flash  /0x08000000/064*0002Kg",
    "stm32f303cc": "@Internal Flash  /0x08000000/128*0002Kg",
    "stm32f401cc": "@Internal Flash  /0x08000000/04*016Kg,01*064Kg,01*128Kg",
    "stm32f405rg": "@Internal Flash  /0x08000000/04*016Kg,01*064Kg,07*128Kg",
    "stm32f407vg": "@Internal Flash  /0x08000000/04*016Kg,01*064Kg,07*128Kg",
    "stm32f411": "@Internal Flash  /0x08000000/04*016Kg,01*064Kg,03*128Kg",
    "stm32f446re": "@Internal Flash  /0x08000000/04*016Kg,01*064Kg,03*128Kg",
    "stm32f746ng": "@Internal Flash  /0x08000000/04*032Kg,01*128Kg,03*256Kg",
    "stm32f767zi": "@Internal Flash  /0x08000000/04*032Kg,01*128Kg,07*256Kg",
    "stm32g0b1re": "@Internal Flash  /0x08000000/256*02Kg",
    "stm32g431kb": "@Internal Flash  /0x08000000/64*02Kg",
    "stm32g474re": "@Internal Flash  /0x08000000/256*02Kg",
    "stm32h743zi": "@Internal Flash   /0x08000000/16*128Kg",
    "stm32h723zg": "@Internal Flash   /0x08000000/08*128Kg",
    "stm32l432kc": "@Internal Flash  /0x08000000/0128*0002Kg",
    "stm32l476rg": "@Internal Flash  /0x08000000/0512*0002Kg",
}


@pytest.mark.parametrize("name", sorted(DFUSE_LAYOUTS))
def test_stm32_rom_dfuse_layouts(name):
    chip = get_chip(name)
    _, regions = parse_dfuse_layout(DFUSE_LAYOUTS[name])
    assert (chip.flash_start, chip.flash_sectors) == (regions[0].start, regions[0].sectors)
    # the ROM bootloader lives in system memory: nothing in flash is reserved
    assert chip.boot_size == 0


def test_every_stm32_with_a_rom_dfu_bootloader_has_its_layout_checked():
    rom = {c.name for c in BUILTIN if c.family == "stm32" and c.boot_size == 0}
    assert rom == set(DFUSE_LAYOUTS)


# ---------------------------------------------------------------------------
# bootkit chips --family / --json


def test_chips_family_lists_only_that_family(capsys):
    from bootkit.cli import main

    assert main(["chips", "--family", "stm32"]) == 0
    out = capsys.readouterr().out
    for chip in BUILTIN:
        assert (chip.name in out) == (chip.family == "stm32"), chip.name
    assert "none (ROM)" in out and "4x16K,1x64K,3x128K" in out


def test_chips_json_is_one_object_per_chip(capsys):
    from bootkit.cli import main
    import json

    assert main(["chips", "--json"]) == 0
    out = capsys.readouterr().out
    chips = json.loads(out)
    assert sorted(c["name"] for c in chips) == sorted(c.name for c in CHIPS)
    assert len(out.splitlines()) == len(chips) + 2  # "[", one line per chip, "]"
    m32u4 = next(c for c in chips if c["name"] == "atmega32u4")
    assert m32u4 == {
        "name": "atmega32u4", "family": "avr", "flash_start": 0, "flash": 32768, "page": 128,
        "sectors": [[256, 128]], "eeprom": 1024, "eeprom_page": 4,
        "boot_region": {"start": 0x7000, "size": 4096}, "signature": "1e9587", "uf2_family": "0x16573617",
        "usb": True, "aliases": ["m32u4"], "description": "Arduino Leonardo, Teensy 2.0, many LUFA boards",
    }
    f411 = next(c for c in chips if c["name"] == "stm32f411")
    assert f411["boot_region"] is None and f411["signature"] is None
    assert f411["sectors"] == [[4, 16384], [1, 65536], [3, 131072]]


def test_chips_family_takes_a_list_and_json(capsys):
    from bootkit.cli import main
    import json

    assert main(["chips", "--family", "avr,XMEGA", "--json"]) == 0
    chips = json.loads(capsys.readouterr().out)
    assert {c["family"] for c in chips} == {"avr", "xmega"}
    assert len(chips) == sum(1 for c in CHIPS if c.family in ("avr", "xmega"))
    # grouped by family, numbers in names compared as numbers
    names = [c["name"] for c in chips if c["name"].startswith("atmega") and c["name"][6:].isdigit()]
    assert names == ["atmega8", "atmega16", "atmega32", "atmega88", "atmega128", "atmega168", "atmega328",
                     "atmega1280", "atmega2560"]


@pytest.mark.parametrize("value", ["z80", "avr,z80", ""])
def test_chips_unknown_family_is_one_line_exit_2(value, capsys):
    from bootkit.cli import main

    assert main(["chips", "--family", value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    bad = value.split(",")[-1]
    assert err == [f"bootkit: error: --family {bad!r}: no such chip family "
                   "(known: avr, xmega, stm32, samd, esp32, nrf52, rp2040, rp2350)"]


@pytest.mark.parametrize("family", ["samd", "esp32", "rp2350"])
def test_a_chip_file_may_name_the_new_families(tmp_path, family):
    from bootkit.memory import load_chip_file

    path = tmp_path / "c.toml"
    path.write_text(f'[chip]\nname = "my{family}"\nfamily = "{family}"\nflash = "64K"\npage_size = 256\n')
    chip = load_chip_file(path, register=False)
    assert chip.family == family
    assert (chip.boot_start, chip.boot_size) == (0, 0)


def test_docs_chips_md_names_every_chip_and_the_count():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "chips.md").read_text(encoding="utf-8")
    assert f"bootkit knows {len(BUILTIN)} chips" in text
    rows = {line.split("|")[1].strip().strip("`"): line.split("|")[2] for line in text.splitlines()
            if line.startswith("| `")}
    for chip in BUILTIN:
        assert chip.name in [n.strip() for n in rows[chip.family].split(",")], chip.name
