"""The chip database, DfuSe layout strings and user chip files."""

from __future__ import annotations

import pytest

from bootkit.memory import (
    CHIPS,
    ChipFileError,
    Region,
    SimulatedFlash,
    dfuse_layout,
    get_chip,
    load_chip_file,
    parse_dfuse_layout,
)
from bootkit.memory.chips import EEPROM_BASE, SIGNATURE_BASE

KiB = 1024

# ---------------------------------------------------------------------------
# Datasheet figures


# name: (signature, flash bytes, SPM page bytes, EEPROM bytes, EEPROM page bytes, max boot section)
AVR_FIGURES = {
    # ATmega16U4/32U4 datasheet 7766: 32 KiB, 64-word pages, 1 KiB EEPROM (4-byte pages), BOOTSZ 2048 words
    "atmega32u4": ("1E9587", 32 * KiB, 128, 1024, 4, 4 * KiB),
    # AT90USB646/647/1286/1287 datasheet 7593: 128 KiB, 128-word pages, 4 KiB EEPROM (8-byte pages)
    "at90usb1286": ("1E9782", 128 * KiB, 256, 4096, 8, 8 * KiB),
    # ATmega328P datasheet: 32 KiB, 64-word pages, 1 KiB EEPROM (4-byte pages)
    "atmega328p": ("1E950F", 32 * KiB, 128, 1024, 4, 4 * KiB),
    # ATmega640/1280/2560 datasheet: 256 KiB, 128-word pages, 4 KiB EEPROM (8-byte pages)
    "atmega2560": ("1E9801", 256 * KiB, 256, 4096, 8, 8 * KiB),
    # ATtiny25/45/85 datasheet: 8 KiB, 32-word pages, 512 B EEPROM (4-byte pages)
    "attiny85": ("1E930B", 8 * KiB, 64, 512, 4, 2 * KiB),
}


@pytest.mark.parametrize("name", sorted(AVR_FIGURES))
def test_avr_datasheet_figures(name):
    sig, flash, page, eeprom, eeprom_page, boot = AVR_FIGURES[name]
    chip = get_chip(name)
    assert chip.name == name
    assert chip.family == "avr"
    assert chip.signature == bytes.fromhex(sig)
    assert chip.flash_start == 0
    assert chip.flash_size == flash
    assert chip.page_size == page
    assert chip.flash_sectors == ((flash // page, page),)
    assert chip.eeprom_size == eeprom
    assert chip.eeprom_page == eeprom_page
    # AVR boot sections sit at the top of flash
    assert chip.boot_size == boot
    assert chip.boot_end == chip.flash_end == flash


@pytest.mark.parametrize("name", sorted(AVR_FIGURES))
def test_avr_layout_places_memories_at_avr_gcc_section_addresses(name):
    chip = get_chip(name)
    layout = chip.layout()
    assert layout.flash.start == 0 and layout.flash.size == chip.flash_size
    assert layout.flash.write_size == chip.page_size
    eeprom = layout.region("eeprom")
    assert eeprom.start == EEPROM_BASE and eeprom.size == chip.eeprom_size
    sig = layout.region("signature")
    assert sig.start == SIGNATURE_BASE and sig.size == 3
    assert layout.protected == ((chip.flash_size - chip.boot_size, chip.flash_size),)
    assert chip.application_ranges == [(0, chip.flash_size - chip.boot_size)]


def test_avr_fuse_defaults_match_datasheets():
    # Factory fuse bytes (lfuse, hfuse, efuse) from each datasheet's fuse tables.
    expected = {
        "atmega32u4": (0x5E, 0x99, 0xF3),
        "at90usb1286": (0x5E, 0x99, 0xF3),
        "atmega328p": (0x62, 0xD9, 0xFF),
        "atmega2560": (0x62, 0x99, 0xFF),
        "attiny85": (0x62, 0xDF, 0xFF),
    }
    for name, defaults in expected.items():
        chip = get_chip(name)
        assert tuple(f.name for f in chip.fuses) == ("lfuse", "hfuse", "efuse"), name
        assert tuple(f.default for f in chip.fuses) == defaults, name
        flash = SimulatedFlash(chip)
        fuse_region = flash.layout.region("fuses")
        assert flash.read(fuse_region.start, 3) == bytes(defaults), name


def test_stm32f103c8_figures():
    chip = get_chip("stm32f103c8")
    assert chip.family == "stm32"
    assert chip.flash_start == 0x08000000
    assert chip.flash_sectors == ((64, 1 * KiB),)
    assert chip.flash_size == 64 * KiB
    assert chip.page_size == 1 * KiB
    assert chip.flash_end == 0x08010000
    layout = chip.layout()
    assert layout.flash.start == 0x08000000
    assert layout.flash.page_size == 1 * KiB
    assert chip.uf2_family == 0x5EE21072  # STM32F1 in uf2families.json


def test_stm32f411_sectors():
    chip = get_chip("stm32f411")
    assert chip.flash_start == 0x08000000
    assert chip.flash_sectors == ((4, 16 * KiB), (1, 64 * KiB), (3, 128 * KiB))
    assert chip.flash_size == 512 * KiB
    # ROM (system memory) DfuSe bootloader: no flash reserved
    assert chip.boot_size == 0
    assert chip.layout().protected == ()
    bounds = list(chip.layout().flash.sector_bounds())
    assert [size // KiB for _, size in bounds] == [16, 16, 16, 16, 64, 128, 128, 128]
    assert [start for start, _ in bounds] == [
        0x08000000, 0x08004000, 0x08008000, 0x0800C000, 0x08010000, 0x08020000, 0x08040000, 0x08060000]
    assert chip.uf2_family == 0x57755A57


def test_uf2_family_ids():
    assert get_chip("rp2040").uf2_family == 0xE48BFF56
    assert get_chip("nrf52840").uf2_family == 0xADA52840
    assert get_chip("atmega32u4").uf2_family == 0x16573617


def test_rp2040_and_nrf52840_flash():
    rp = get_chip("rp2040")
    assert rp.flash_start == 0x10000000 and rp.flash_size == 2 * 1024 * KiB
    assert rp.flash_sectors == ((512, 4 * KiB),)
    nrf = get_chip("nrf52840")
    assert nrf.flash_start == 0 and nrf.flash_size == 1024 * KiB
    # Adafruit bootloader + settings: the top 48 KiB from 0xF4000
    assert (nrf.boot_start, nrf.boot_end) == (0xF4000, 0x100000)


# ---------------------------------------------------------------------------
# Lookup


@pytest.mark.parametrize("alias, name", [
    ("m32u4", "atmega32u4"),
    ("M32U4", "atmega32u4"),
    ("ATmega32U4", "atmega32u4"),
    ("m328p", "atmega328p"),
    ("m2560", "atmega2560"),
    ("t85", "attiny85"),
    ("usb1286", "at90usb1286"),
    ("bluepill", "stm32f103c8"),
    ("blackpill", "stm32f411"),
    ("pico", "rp2040"),
])
def test_aliases(alias, name):
    assert get_chip(alias) is get_chip(name)
    assert get_chip(alias).name == name


def test_unknown_chip_error_names_the_nearest_chips_and_where_the_rest_are():
    # With 80 chips the list no longer fits one line: the nearest names and `bootkit chips`
    with pytest.raises(KeyError) as exc:
        get_chip("atmega16u3")
    message = exc.value.args[0]
    assert message == (f"unknown chip 'atmega16u3' (did you mean atmega16u4, atmega16u2 or atmega16? "
                       f"`bootkit chips` lists all {len(list(CHIPS))}; add one with --chip-file FILE.toml)")
    with pytest.raises(KeyError) as exc:
        get_chip("z80")
    assert exc.value.args[0].startswith("unknown chip 'z80' (`bootkit chips` lists all ")


# ---------------------------------------------------------------------------
# DfuSe layout strings

F411_LAYOUT = "@Internal Flash /0x08000000/04*016Kg,01*064Kg,03*128Kg"


def test_dfuse_layout_of_stm32f411():
    flash = get_chip("stm32f411").layout().flash
    assert dfuse_layout("Internal Flash", [flash]) == F411_LAYOUT


def test_dfuse_layout_of_stm32f103c8():
    flash = get_chip("stm32f103c8").layout().flash
    assert dfuse_layout("Internal Flash", [flash]) == "@Internal Flash /0x08000000/64*001Kg"


def test_parse_dfuse_layout_round_trips_stm32f411():
    name, regions = parse_dfuse_layout(F411_LAYOUT)
    assert name == "Internal Flash"
    assert len(regions) == 1
    region = regions[0]
    flash = get_chip("stm32f411").layout().flash
    assert region.start == flash.start
    assert region.sectors == flash.sectors
    assert region.size == 512 * KiB
    assert (region.readable, region.erasable, region.writable) == (True, True, True)
    assert dfuse_layout(name, regions) == F411_LAYOUT


@pytest.mark.parametrize("text, name, start, sectors, flags", [
    # dfu-util -l on an STM32F4 in ROM DFU mode
    ("@Internal Flash  /0x08000000/04*016Kg,01*064Kg,07*128Kg", "Internal Flash", 0x08000000,
     ((4, 16 * KiB), (1, 64 * KiB), (7, 128 * KiB)), "g"),
    ("@Option Bytes  /0x1FFFC000/01*016 e", "Option Bytes", 0x1FFFC000, ((1, 16),), "e"),
    ("@OTP Memory /0x1FFF7800/01*512 e,01*016 e", "OTP Memory", 0x1FFF7800, ((1, 512), (1, 16)), "e"),
    ("@Device Feature/0xFFFF0000/01*004 e", "Device Feature", 0xFFFF0000, ((1, 4),), "e"),
    # STM32F103 with a DfuSe-style bootloader, and an STM32L4 with 2 KiB pages
    ("@Internal Flash  /0x08000000/064*0001Kg", "Internal Flash", 0x08000000, ((64, 1 * KiB),), "g"),
    ("@Internal Flash  /0x08000000/0256*0002Kg", "Internal Flash", 0x08000000, ((256, 2 * KiB),), "g"),
    ("@Internal Flash  /0x08000000/01*001Ma", "Internal Flash", 0x08000000, ((1, 1024 * KiB),), "a"),
])
def test_parse_dfuse_layout_real_strings(text, name, start, sectors, flags):
    got_name, regions = parse_dfuse_layout(text)
    assert got_name == name
    assert len(regions) == 1
    r = regions[0]
    assert r.start == start
    assert r.sectors == sectors
    bits = ord(flags) - ord("a") + 1  # dfu-util: DFUSE_READABLE 1, ERASABLE 2, WRITEABLE 4
    assert r.readable == bool(bits & 1)
    assert r.erasable == bool(bits & 2)
    assert r.writable == bool(bits & 4)
    # and written back, it parses to the same regions
    again_name, again = parse_dfuse_layout(dfuse_layout(got_name, regions))
    assert again_name == name
    assert [(x.start, x.sectors, x.readable, x.erasable, x.writable) for x in again] == \
        [(x.start, x.sectors, x.readable, x.erasable, x.writable) for x in regions]


def test_parse_dfuse_layout_several_groups():
    name, regions = parse_dfuse_layout("@Flash/0x08000000/02*016Kg/0x08020000/01*128Ka")
    assert name == "Flash"
    assert [(r.start, r.sectors) for r in regions] == [
        (0x08000000, ((2, 16 * KiB),)), (0x08020000, ((1, 128 * KiB),))]
    assert regions[1].writable is False and regions[1].readable is True


@pytest.mark.parametrize("readable, erasable, writable, letter", [
    (True, False, False, "a"), (False, True, False, "b"), (True, True, False, "c"),
    (False, False, True, "d"), (True, False, True, "e"), (False, True, True, "f"), (True, True, True, "g"),
])
def test_dfuse_flag_letters(readable, erasable, writable, letter):
    r = Region("X", 0x1000, ((2, 512),), readable=readable, erasable=erasable, writable=writable)
    assert dfuse_layout("X", [r]) == f"@X /0x00001000/02*512 {letter}"


@pytest.mark.parametrize("bad", ["Internal Flash/0x08000000/04*016Kg", "@Flash/0x08000000", "@Flash/0x0/04x016Kg"])
def test_parse_dfuse_layout_rejects_garbage(bad):
    with pytest.raises(ValueError):
        parse_dfuse_layout(bad)


# ---------------------------------------------------------------------------
# Chip files


@pytest.fixture
def unregister():
    """Remove chips a test registered, so the global database stays as it was."""
    names = []
    yield names
    for name in names:
        CHIPS._chips.pop(name.lower(), None)


GOOD_TOML = """
[chip]
name = "atmega16u2test"
family = "avr"
flash = "16K"
page_size = 128
boot_size = "4K"
eeprom = 512
signature = [0x1E, 0x94, 0x89]
aliases = ["m16u2test"]
uf2_family = 0x16573617
"""


def test_load_chip_file_adds_a_chip(tmp_path, unregister):
    path = tmp_path / "m16u2.toml"
    path.write_text(GOOD_TOML)
    unregister.append("atmega16u2test")
    with pytest.raises(KeyError):
        get_chip("atmega16u2test")
    chip = load_chip_file(path)
    assert get_chip("atmega16u2test") is chip
    assert get_chip("m16u2test") is chip
    assert chip.family == "avr"
    assert chip.flash_size == 16 * KiB
    assert chip.flash_sectors == ((128, 128),)
    assert (chip.boot_start, chip.boot_end) == (12 * KiB, 16 * KiB)  # avr: boot at the top
    assert chip.eeprom_size == 512
    assert chip.signature == bytes.fromhex("1E9489")
    assert chip.uf2_family == 0x16573617
    # a working simulated chip
    flash = SimulatedFlash(chip)
    assert flash.read(SIGNATURE_BASE, 3) == bytes.fromhex("1E9489")
    assert flash.layout.protected == ((12 * KiB, 16 * KiB),)


def test_load_chip_file_sectors_and_bottom_boot(tmp_path, unregister):
    path = tmp_path / "f4.toml"
    path.write_text("""
[chip]
name = "stm32f4test"
family = "stm32"
flash_start = "0x08000000"
flash_sectors = [[4, "16K"], [1, "64K"]]
page_size = "16K"
boot_size = "32K"
""")
    unregister.append("stm32f4test")
    chip = load_chip_file(path)
    assert chip.flash_sectors == ((4, 16 * KiB), (1, 64 * KiB))
    assert chip.flash_start == 0x08000000
    assert (chip.boot_start, chip.boot_size) == (0x08000000, 32 * KiB)
    assert get_chip("stm32f4test") is chip


def test_load_chip_file_without_register(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(GOOD_TOML.replace("atmega16u2test", "unregisteredchip"))
    chip = load_chip_file(path, register=False)
    assert chip.name == "unregisteredchip"
    with pytest.raises(KeyError):
        get_chip("unregisteredchip")


def test_chip_file_alias_lookup_is_case_insensitive(tmp_path, unregister):
    # Built-in names and aliases are matched without regard to case; an alias
    # written in a chip file with capitals must be found too (by any spelling).
    path = tmp_path / "c.toml"
    path.write_text(GOOD_TOML.replace('aliases = ["m16u2test"]', 'aliases = ["M16U2Test"]'))
    unregister.append("atmega16u2test")
    chip = load_chip_file(path)
    assert get_chip("M16U2Test") is chip
    assert get_chip("m16u2test") is chip


BASE = {
    "name": '"badchip"',
    "family": '"avr"',
    "flash": '"16K"',
    "page_size": "128",
    "boot_size": '"4K"',
}


def _toml(**changes):
    table = dict(BASE)
    for key, value in changes.items():
        if value is None:
            table.pop(key)
        else:
            table[key] = value
    return "[chip]\n" + "".join(f"{k} = {v}\n" for k, v in table.items())


BAD_FILES = [
    ({"flash_size": '"16K"'}, "flash_size"),               # unknown key
    ({"colour": '"blue"'}, "colour"),                      # unknown key
    ({"name": None}, "name"),                              # missing key
    ({"family": None}, "family"),                          # missing key
    ({"page_size": None}, "page_size"),                    # missing key
    ({"family": '"pic"'}, "family"),                       # bad family
    ({"flash": '"16Q"'}, "flash"),                         # bad size
    ({"flash": '"lots"'}, "flash"),                        # bad size
    ({"flash": "16.5"}, "flash"),                          # bad size
    ({"flash": '"0xZZ"'}, "flash"),                        # bad size (hex that is not hex)
    ({"boot_size": '"4 parsecs"'}, "boot_size"),           # bad size
    ({"page_size": "0"}, "page_size"),                     # bad size (zero)
    ({"flash": "-16384", "boot_size": None}, "flash"),     # bad size (negative)
    ({"flash": '"17K"', "page_size": "1000"}, "flash"),    # not a multiple of the page
    ({"boot_size": '"32K"'}, "boot_size"),                 # boot larger than flash
    ({"boot_at": '"middle"'}, "boot_at"),
    ({"flash": None}, "flash"),                            # neither flash nor flash_sectors
]


@pytest.mark.parametrize("changes, key", BAD_FILES,
                         ids=["-".join(f"{k}={v}" for k, v in c.items()) for c, _ in BAD_FILES])
def test_bad_chip_files(tmp_path, changes, key):
    path = tmp_path / "bad-chip.toml"
    path.write_text(_toml(**changes))
    with pytest.raises(ChipFileError) as exc:
        load_chip_file(path, register=False)
    message = str(exc.value)
    assert str(path) in message
    assert f"chip.{key}" in message
    with pytest.raises(KeyError):
        get_chip("badchip")


def test_chip_file_not_toml(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[chip\nname = ")
    with pytest.raises(ChipFileError) as exc:
        load_chip_file(path, register=False)
    assert str(path) in str(exc.value)


def test_chip_file_without_chip_table(tmp_path):
    path = tmp_path / "empty.toml"
    path.write_text("[device]\nname = 'x'\n")
    with pytest.raises(ChipFileError) as exc:
        load_chip_file(path, register=False)
    assert str(path) in str(exc.value) and "chip" in str(exc.value)


def test_chip_file_missing(tmp_path):
    path = tmp_path / "nope.toml"
    with pytest.raises(ChipFileError) as exc:
        load_chip_file(path, register=False)
    assert str(path) in str(exc.value)


def test_sizes_accept_the_documented_spellings(tmp_path):
    for spelling in ("16384", '"16K"', '"16 KiB"', '"0x4000"', '"16k"'):
        path = tmp_path / "ok.toml"
        path.write_text(_toml(flash=spelling))
        assert load_chip_file(path, register=False).flash_size == 16 * KiB, spelling
