"""Every example profile validates, serves on the virtual bus and flashes through its own host client."""

import importlib
from pathlib import Path

import pytest

from bootkit.api import PERSONALITIES
from bootkit.product import ProductError, check, load_product
from bootkit.samples import sample_image
from bootkit.transports.virtual import VirtualBus, get_backend

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples" / "products").glob("*.toml"))
IMPLEMENTED = [p for p in EXAMPLES if load_product(p).implemented]

# the devices people know, one profile each (the list)
EXPECTED = {
    ("dfu", "flip"), ("hid", "halfkay"), ("cdc", "caterina"), ("dfu", "dfuse"), ("msc", None), ("midi", None),
    ("printer", "lufa"),
}


def test_there_is_an_example_per_personality():
    assert EXAMPLES
    seen = {load_product(p).personality for p in EXAMPLES}
    assert seen >= set(PERSONALITIES)


def test_the_known_devices_are_there():
    have = {(load_product(p).personality, load_product(p).dialect) for p in EXAMPLES}
    for personality, dialect in EXPECTED:
        assert any(p == personality and (dialect is None or d == dialect) for p, d in have), (personality, dialect)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_validates(path):
    product = load_product(path)
    assert product.personality in PERSONALITIES
    lines = check(path)
    assert lines[0] == f"{path}: OK"
    assert any(line.startswith("chip: ") for line in lines)


def test_unlanded_personality_says_not_implemented():
    # a loop, not a parametrization: an empty parameter list would be a skip once everything has landed
    for path in EXAMPLES:
        if path not in IMPLEMENTED:
            with pytest.raises(ProductError, match="not implemented yet"):
                load_product(path).emulator()


def _fitting_image(chip):
    start, end = chip.layout().application_ranges("flash")[0]
    room = end - start
    return sample_image(chip, min(8 * 1024 + 3, room // 2), min(0x3000, room // 2 + 64), 301)


@pytest.mark.parametrize("path", IMPLEMENTED, ids=lambda p: p.stem)
def test_example_serves_and_flashes(path):
    product = load_product(path)
    options = product.host_options()
    chip = options["chip"]
    image = _fitting_image(chip)
    host = importlib.import_module(f"bootkit.classes.{product.personality}.host")
    extra = {"realtime": False} if product.personality == "midi" else {}
    with product.emulator() as em:
        # the board is the profile's: chip, bootloader region, ids
        assert em.chip.boot_size == chip.boot_size and em.chip.boot_start == chip.boot_start
        if product.personality == "cdc":
            from bootkit.transports.pty import pty_server

            with pty_server(em) as server:
                result = host.flash(image, port=server.slave_path, progress=False, **options)
        else:
            bus = VirtualBus()
            em.attach(bus)
            info = em.target.device.info
            if "vid" in product.usb:
                assert info.idVendor == product.usb["vid"]
            if "pid" in product.usb:
                assert info.idProduct == product.usb["pid"]
            result = host.flash(image, get_backend(bus), progress=False, **options, **extra)
        assert result.bytes >= image.size
        flash = em.memory.flash_bytes()
        base = chip.flash_start
        for start, data in image.segments:
            assert flash[start - base:start - base + len(data)] == data
        assert em.memory.app_valid


def test_emulator_honours_the_profile_settings():
    product = load_product(next(p for p in EXAMPLES if p.stem == "lufa-dfu-atmega32u4"))
    with product.emulator() as em:
        dev = em.target.device
        assert (dev.info.idVendor, dev.info.idProduct) == (0x03EB, 0x2FF4)
        assert dev.functions[0].engine.functional.wTransferSize == 3072
        assert dev.functions[0].engine.functional.bmAttributes == 0x03
    leo = load_product(next(p for p in EXAMPLES if p.stem == "arduino-leonardo"))
    assert "baud1200" in leo.policy.triggers and leo.policy.timeout == 8.0
    assert leo.host_options()["dialect"] == "caterina"


def test_uf2_drive_profile_reaches_the_device():
    product = load_product(next(p for p in EXAMPLES if p.stem == "rp2040-uf2"))
    opts = product.options()
    assert opts["uf2_family"] == 0xE48BFF56 and opts["volume_label"] == "RPI-RP2" and opts["accept"] == ("uf2",)
    with product.emulator() as em:  # fails until the msc package has its device side
        function = em.target.device.functions[0]
        assert function.volume.label == "RPI-RP2"
        assert function.volume.family == 0xE48BFF56
