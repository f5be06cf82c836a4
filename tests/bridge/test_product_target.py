"""product.target: a product profile names the memory behind its personality (issue 23 item 1)."""

from __future__ import annotations

import pytest

from bootkit.api import load_image
from bootkit.cli import main
from bootkit.memory.backends.isp import IspMemory
from bootkit.product import ProductError, load_product

PROFILE = """\
[product]
name = "UF2 drive for an ATtiny85 on the ISP header"
chip = "attiny85"
personality = "msc"
target = "{target}"
"""


def profile(tmp_path, target: str):
    path = tmp_path / "bridge.toml"
    path.write_text(PROFILE.format(target=target))
    return path


def test_a_product_target_is_the_memory_behind_the_front(tmp_path):
    product = load_product(profile(tmp_path, f"isp:emulated:attiny85,{tmp_path / 't85.bin'}"))
    assert product.target == f"isp:emulated:attiny85,{tmp_path / 't85.bin'}"
    em = product.emulator()
    try:
        assert isinstance(em.memory, IspMemory)
        assert em.chip.layout().protected == ()  # ISP reaches all of flash: the front says so too
    finally:
        em.close()


def test_serve_product_with_a_target(served, tmp_path, capsys):
    fw = tmp_path / "fw.hex"
    assert main(["sample", "attiny85", "-o", str(fw)]) == 0
    image = load_image(fw)
    back = tmp_path / "t85.bin"
    front = served("--product", str(profile(tmp_path, f"isp:emulated:attiny85,{back}")), "--listen", "127.0.0.1:0")
    assert main(["flash", str(fw), "--via", "msc", "--usbip", f"127.0.0.1:{front.port}", "--no-progress"]) == 0
    front.stop()
    flash = back.read_bytes()
    assert all(flash[a:a + len(d)] == d for a, d in image.segments)


@pytest.mark.parametrize("target,line", [
    ("usb:0483", "bridge.toml: key product.target: expected usb:VID:PID[,SERIAL] (hex ids)"),
    ("sim:rp2040", "bridge.toml: key product.target: sim:rp2040 names another chip than product.chip "
                   "(allowed: sim:<product.chip>)"),
])
def test_a_bad_product_target_is_one_line(tmp_path, capsys, target, line):
    path = profile(tmp_path, target)
    with pytest.raises(ProductError) as exc:
        load_product(path)
    assert str(exc.value).endswith(line) and "\n" not in str(exc.value)
    assert main(["product", "check", str(path)]) == 2
    assert line in capsys.readouterr().err


def test_serve_product_and_target_exclude_each_other(tmp_path, capsys):
    path = profile(tmp_path, "isp:emulated:attiny85")
    assert main(["serve", "--product", str(path), "--target", "isp:emulated:attiny85"]) == 2
    assert "--target and --product exclude each other" in capsys.readouterr().err
