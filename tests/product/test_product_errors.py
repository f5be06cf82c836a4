"""Bad profiles give one-line errors naming the file, the key and what is allowed."""

import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bootkit.product import ProductError, cli_check, load_product

GOOD = """
[product]
name = "board"
chip = "atmega32u4"
personality = "dfu"
dialect = "flip"
"""


def write(tmp_path, text, name="p.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def error(tmp_path, text) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ProductError) as info:
        load_product(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: "), msg
    assert "\n" not in msg
    return msg


def test_good_minimal_profile(tmp_path):
    p = load_product(write(tmp_path, GOOD))
    assert (p.personality, p.dialect, p.chip.name) == ("dfu", "flip", "atmega32u4")
    assert "baud1200" not in p.policy.triggers  # only a CDC product gets the touch by default


@pytest.mark.parametrize("text, key, allowed", [
    # unknown keys and tables
    (GOOD + "colour = 'red'\n", "key product.colour: unknown key", "allowed: name, chip, personality"),
    (GOOD + "[usb]\nvendor = 1\n", "key usb.vendor: unknown key", "allowed: vid, pid"),
    (GOOD + "[extras]\nx = 1\n", "key extras: unknown table", "[product]"),
    (GOOD + "[dfu]\nblock = 64\n", "key dfu.block: unknown key", "transfer_size"),
    # wrong types
    (GOOD + "[usb]\nvid = '03eb'\n", "key usb.vid: expected an integer", "0x0001-0xFFFF"),
    (GOOD + "[usb]\nvid = true\n", "key usb.vid: expected an integer", "0x0001-0xFFFF"),
    (GOOD + "[usb]\nserial = 1234\n", "key usb.serial: expected a string", "at most 126"),
    (GOOD + "[dfu]\ntransfer_size = '1K'\n", "key dfu.transfer_size: expected an integer", "1-65535"),
    (GOOD + "[protection]\nread_protected = 'yes'\n", "key protection.read_protected: expected true or false",
     "true, false"),
    (GOOD + "[entry]\ntriggers = 'blank'\n", "key entry.triggers: expected a list", "blank, invalid"),
    ("[product]\nname = 3\nchip = 'atmega32u4'\npersonality = 'dfu'\n", "key product.name: expected a string",
     None),
    # out of range
    (GOOD + "[usb]\nvid = 0x10000\n", "key usb.vid: 0x10000 is out of range", "0x0001-0xFFFF"),
    (GOOD + "[usb]\nvid = 0\n", "key usb.vid: 0x0000 is out of range", "0x0001-0xFFFF"),
    (GOOD + "[usb]\npid = -1\n", "key usb.pid: -1 is out of range", "0x0000-0xFFFF"),
    (GOOD + "[usb]\nbcd_device = 0x12345\n", "key usb.bcd_device", "0x0000-0xFFFF"),
    (GOOD + "[dfu]\ntransfer_size = 70000\n", "key dfu.transfer_size: 70000 is out of range", "1-65535"),
    (GOOD + "[dfu]\nattributes = 0x02\n", "key dfu.attributes: 0x02 lacks bitCanDnload", "bit 0 set"),
    (GOOD + "[entry]\ntriggers = ['blank', 'wink']\n", "key entry.triggers: unknown trigger 'wink'", "magic"),
    # unknown names
    ("[product]\nname = 'x'\nchip = 'atmega32u4'\npersonality = 'bluetooth'\n",
     "key product.personality: unknown personality 'bluetooth'", "dfu, hid, cdc, printer, msc, midi"),
    ("[product]\nname = 'x'\nchip = 'atmega32u4'\npersonality = 'dfu'\ndialect = 'dfuse2'\n",
     "key product.dialect: unknown dfu dialect 'dfuse2'", "dfu, dfuse, flip"),
    ("[product]\nname = 'x'\nchip = 'z80'\npersonality = 'dfu'\n", "key product.chip: unknown chip 'z80'",
     "bootkit chips"),
    ("[product]\nname = 'x'\npersonality = 'dfu'\n", "key product.chip: missing", "[chip] table"),
    ("[product]\nchip = 'atmega32u4'\npersonality = 'dfu'\n", "key product.name: missing", None),
    # a chip that cannot host the personality
    ("[product]\nname = 'x'\nchip = 'atmega328p'\npersonality = 'cdc'\n",
     "key product.chip: atmega328p has no USB device port", "a chip with USB"),
    ("[product]\nname = 'x'\nchip = 'atmega32u4'\npersonality = 'dfu'\ndialect = 'dfuse'\n",
     "key product.chip: atmega32u4 (avr) cannot host dfu/dfuse", "family stm32"),
    ("[product]\nname = 'x'\nchip = 'rp2040'\npersonality = 'cdc'\n",
     "key product.chip: rp2040 (rp2040) cannot host cdc/lufa", "family avr"),
    # flash too small for the bootloader
    (GOOD + "[protection]\nbootloader_size = '32K'\n", "key protection.bootloader_size: 32 KiB leaves no room",
     "below 32 KiB"),
    (GOOD + "[protection]\nbootloader_size = 'lots'\n", "key protection.bootloader_size: expected a size", "4K"),
    (GOOD + "[protection]\nbootloader_size = 100\n", "not a whole number of 128-byte pages", "multiple of 128"),
    ("[product]\nname='x'\npersonality='printer'\n[chip]\nname='tiny'\nfamily='avr'\nflash='8K'\npage_size=64\n"
     "boot_size='2K'\n", "key product.chip: the flash of tiny (8 KiB) is too small for the printer/lufa bootloader",
     "more flash"),
    # conflicting settings
    ("[product]\nname = 'x'\nchip = 'stm32f411'\npersonality = 'dfu'\ndialect = 'dfuse'\n[dfu]\nsecure = true\n",
     "key dfu.secure: conflicts with dialect 'dfuse'", "with dialect flip"),
    (GOOD + "[hid]\nmcu = 'atmega32u4'\n", "key hid: settings for the hid personality conflict with "
     "product.personality = 'dfu'", "a [dfu] table"),
    (GOOD + "[entry]\ntriggers = ['blank', 'baud1200']\n", "key entry.triggers: 'baud1200'", "double-reset"),
    (GOOD + "[entry]\ntriggers = ['blank']\ntimeout = 8\n", "key entry.timeout: set, but the 'timeout' trigger",
     "add \"timeout\""),
    (GOOD + "[chip]\nname='c'\nfamily='avr'\nflash='32K'\npage_size=128\n",
     "key product.chip: conflicts with the [chip] table", "not both"),
    ("[product]\nname='x'\nchip='atmega32u4'\npersonality='hid'\n[protection]\nread_protected = true\n",
     "key protection.read_protected: hid/halfkay has no read-out protection", "dfu/dfuse, dfu/flip"),
    ("[product]\nname='x'\nchip='atmega32u4'\npersonality='hid'\ndialect='halfkay'\n[protection]\n"
     "bootloader_size='4K'\n", "key protection.bootloader_size: conflicts with dialect halfkay", "omit it"),
    ("[product]\nname='x'\nchip='atmega32u4'\npersonality='hid'\ndialect='native'\n[hid]\nmcu='atmega32u4'\n",
     "key hid.mcu: conflicts with dialect 'native'", "with dialect halfkay"),
    ("[product]\nname='x'\nchip='atmega32u4'\npersonality='hid'\ndialect='halfkay'\n[hid]\nmcu='at90usb1286'\n",
     "key hid.mcu: 'at90usb1286' conflicts with product.chip 'atmega32u4'", "atmega32u4"),
    ("[product]\nname='x'\nchip='stm32f411'\npersonality='hid'\ndialect='halfkay'\n",
     "key product.chip: stm32f411 (stm32) cannot host hid/halfkay", "family avr"),
    (GOOD + "[protection]\naccept = ['uf2']\n", "key protection.accept: only a drive", "with personality msc"),
    ("[product]\nname='x'\nchip='rp2040'\npersonality='msc'\n[msc]\nuf2_family='stm32f4'\n",
     "key msc.uf2_family: 0x57755A57 conflicts with the chip's family 0xE48BFF56", "0xE48BFF56"),
    ("[product]\nname='x'\nchip='rp2040'\npersonality='msc'\n[msc]\nvolume_label='my drive'\n",
     "key msc.volume_label: 'my drive' is not valid", "1-11 characters"),
    ("[product]\nname='x'\nchip='atmega32u4'\npersonality='printer'\n[printer]\ndevice_id='hello'\n",
     "key printer.device_id: an IEEE 1284 device id needs MFG: and MDL:", "MFG:Generic"),
    ("[product]\nname='x'\nchip='atmega32u4'\npersonality='printer'\n[printer]\nprotocol=3\n",
     "key printer.protocol: 3 is out of range", "1-2"),
    ("[product]\nname='x'\nchip='atmega32u4'\npersonality='cdc'\n[cdc]\nsoftware_id='LONGER-THAN-7'\n",
     "key cdc.software_id", "7 printable ASCII characters"),
    ("[product]\nname='x'\nchip='atmega32u4'\npersonality='midi'\n[midi]\nencoding='opus'\n",
     "key midi.encoding", "sysex, notes"),
])
def test_bad_profile(tmp_path, text, key, allowed):
    msg = error(tmp_path, text)
    assert key in msg, msg
    if allowed is not None:
        assert "(allowed: " in msg and allowed in msg, msg


def test_not_toml(tmp_path):
    msg = error(tmp_path, "[product\nname = 1\n")
    assert "not valid TOML" in msg


def test_missing_file(tmp_path):
    with pytest.raises(ProductError, match="cannot read"):
        load_product(tmp_path / "nope.toml")


def test_custom_chip_table_serves_and_flashes(tmp_path):
    from bootkit.classes.dfu import host
    from bootkit.samples import sample_image
    from bootkit.transports.virtual import VirtualBus, get_backend

    path = write(tmp_path, """
        [product]
        name = "custom"
        personality = "dfu"
        dialect = "flip"
        [chip]
        name = "atmega16u2x"
        family = "avr"
        flash = "16K"
        page_size = 128
        boot_size = "4K"
        eeprom = 512
        signature = [0x1E, 0x94, 0x89]
        [protection]
        bootloader_size = "2K"
        [usb]
        vid = 0x1209
        pid = 0x0001
        """)
    product = load_product(path)
    assert product.chip.name == "atmega16u2x"
    assert (product.chip.boot_start, product.chip.boot_size) == (14 * 1024, 2 * 1024)
    image = sample_image(product.chip, 4000, 0x2000, 100)
    with product.emulator() as em:
        bus = VirtualBus()
        em.attach(bus)
        result = host.flash(image, get_backend(bus), progress=False, **product.host_options())
        assert result.verified and em.memory.app_valid
    # the profile's chip is not added to the database
    from bootkit.memory import get_chip

    with pytest.raises(KeyError):
        get_chip("atmega16u2x")


def test_bad_custom_chip_table(tmp_path):
    msg = error(tmp_path, "[product]\nname='x'\npersonality='dfu'\n[chip]\nname='c'\nfamily='avr'\npage_size=128\n"
                          "flash='16K'\nwidth=3\n")
    assert "chip.width" in msg and "allowed" in msg


def test_cli_check(tmp_path, capsys):
    good = write(tmp_path, GOOD, "good.toml")
    assert cli_check(good) == 0
    assert capsys.readouterr().out.startswith(f"{good}: OK")
    bad = write(tmp_path, GOOD + "[usb]\nvid = 0x10000\n", "bad.toml")
    assert cli_check(bad) == 2
    err = capsys.readouterr().err
    assert err.startswith("bootkit: error: ") and str(bad) in err and "usb.vid" in err


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=-2**40, max_value=2**40), st.integers(min_value=-2**20, max_value=2**20))
def test_any_vid_pid_is_accepted_or_refused_cleanly(tmp_path_factory, vid, pid):
    path = tmp_path_factory.mktemp("p") / "p.toml"
    path.write_text(GOOD + f"[usb]\nvid = {vid}\npid = {pid}\n")
    try:
        p = load_product(path)
    except ProductError as exc:
        assert "usb.vid" in str(exc) or "usb.pid" in str(exc)
        assert not (1 <= vid <= 0xFFFF and 0 <= pid <= 0xFFFF)
    else:
        assert (p.usb["vid"], p.usb["pid"]) == (vid, pid)
