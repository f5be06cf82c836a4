"""HID native and xusb-boot as memory back-ends (issue 23): `--target usbip://` to a HID
bootloader served over USB/IP goes through the ``usb.hid`` adapter."""

from __future__ import annotations

import pytest

from bootkit.api import load_image
from bootkit.classes.hid.memory import HidMemory
from bootkit.cli import main
from bootkit.emulator import Emulator
from bootkit.memory import EraseFault, get_chip
from bootkit.memory.backends import BackendFault, open_target

U4 = get_chip("atmega32u4")
OLD = bytes(range(256))


def _expected(image, size: int) -> bytes:
    out = bytearray(b"\xff" * size)
    for a, d in image.segments:
        out[a:a + len(d)] = d
    return bytes(out)


@pytest.mark.parametrize("front", ["printer", "msc"])
def test_a_front_in_front_of_hid_native(usbip_servers, tmp_path, capsys, front):
    fw = tmp_path / "fw.hex"
    assert main(["sample", "atmega32u4", "-o", str(fw)]) == 0
    image = load_image(fw)
    back = Emulator(U4, "hid", options={"dialect": "native"})
    back.memory.poke(0, OLD * 16)  # old contents: the ERASE must clear them
    s1 = usbip_servers([back.target])
    memory = open_target(f"usbip://127.0.0.1:{s1.port}", U4)
    assert isinstance(memory, HidMemory) and memory.dialect == "native"
    app_start, app_end = memory.layout.application_ranges()[0]
    assert memory.layout.protected == ((app_end, U4.flash_size),)  # from GET_INFO: the bootloader's
    engine = Emulator(U4, front, backend=memory)
    s2 = usbip_servers([engine.target])
    try:
        assert main(["flash", str(fw), "--via", front, "--usbip", f"127.0.0.1:{s2.port}", "--no-progress"]) == 0
        assert "verified" in capsys.readouterr().out  # read back through the native READ
        assert memory.app_valid
        flash = back.memory.flash_bytes()
        assert flash[:app_end] == _expected(image, U4.flash_size)[:app_end]
    finally:
        engine.close()
        back.close()


def test_xusb_is_a_write_only_back_end(usbip_servers):
    chip = get_chip("atxmega128a4u")
    back = Emulator(chip, "hid", options={"dialect": "xusb"})
    s = usbip_servers([back.target])
    memory = open_target(f"usbip://127.0.0.1:{s.port}", chip)
    try:
        assert isinstance(memory, HidMemory) and memory.dialect == "xusb"
        # GET_BOOT_INFO: the application section; above it the boot section, protected
        assert memory.layout.application_ranges() == [(0, 128 * 1024)]
        assert memory.layout.protected == ((128 * 1024, chip.flash_size),) == back.memory.layout.protected
        page = memory.page_size
        memory.erase(0)  # ERASE: the whole application section
        memory.program(0, b"\x0c\x94" * (page // 2))
        memory.program(3 * page, b"\x55" * page)
        with pytest.raises(BackendFault, match="xusb-boot has no read command"):
            memory.read(0, 2)
        with pytest.raises(EraseFault, match="page 0x0 was written in this update"):
            memory.erase(0)
        memory.manifest()
        assert memory.app_valid
        flash = back.memory.flash_bytes()
        assert flash[:page] == b"\x0c\x94" * (page // 2) and flash[3 * page:4 * page] == b"\x55" * page
        assert set(flash[page:3 * page]) == {0xFF}
    finally:
        memory.close()
        back.close()


def test_a_vanished_hid_target_is_a_backend_fault(usbip_servers):
    back = Emulator(U4, "hid", options={"dialect": "native"})
    s = usbip_servers([back.target])
    memory = open_target(f"usbip://127.0.0.1:{s.port}", U4)
    assert isinstance(memory, HidMemory)
    memory.erase(0)
    memory.program(0, b"\x0c\x94" * 64)
    s.close()
    with pytest.raises(BackendFault, match="^HID native target"):
        memory.manifest()
    assert not memory.app_valid
    memory.close()
    back.close()
