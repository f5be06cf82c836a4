"""xusbboot's own code (PyPI xusbboot 0.0.2: its library and its xusbboot-cli script)
against our xusb device on the in-process bus.

easyhid, the tool's hidapi binding, is replaced by a small adapter that carries
each report over our virtual bus (interrupt OUT / IN, as hidraw would); the
tool's logic runs unchanged: its boot info parsing, its erase-write-CRC
sequence, its own xmega_nvm_crc and its exit codes.  The VM test
(tests/vm/test_xusb_interop.py) runs the same tool through the guest kernel's
hidraw.  Skipped when xusbboot is not installed (it is in the test extra).
"""

from __future__ import annotations

import random
import runpy
import shutil
import sys
from pathlib import Path

import pytest
import usb.core

from bootkit.classes.hid.protocol import nvm_crc
from bootkit.emulator import Emulator
from bootkit.formats import Image, save
from bootkit.transports.virtual import VirtualBus, get_backend

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the script's "\\R"
xusbboot = pytest.importorskip("xusbboot")
easyhid = pytest.importorskip("easyhid")


class HidrawLike:
    """What xusbboot uses of easyhid.HIDDevice, over pyusb on the virtual bus."""

    def __init__(self, dev: usb.core.Device):
        self.dev = dev
        self.vendor_id, self.product_id = dev.idVendor, dev.idProduct
        self.path = b"virtual"

    def open(self):
        self.dev.set_configuration()

    def close(self):
        pass

    def write(self, data, report_id=0):
        assert report_id == 0
        self.dev.write(0x01, bytes(data), 1000)

    def read(self, size=64, timeout=None):
        return bytearray(self.dev.read(0x81, size, 1000))

    def get_manufacture_string(self):
        return self.dev.manufacturer

    def get_product_string(self):
        return self.dev.product

    def get_serial_number(self):
        return self.dev.serial_number


def board(chip="atxmega32a4u", initial: bytes | None = None):
    bus = VirtualBus()
    em = Emulator(chip, "hid", options={"dialect": "xusb"})
    if initial is not None:
        em.memory.poke(0, initial)
    em.attach(bus)
    dev = HidrawLike(usb.core.find(backend=get_backend(bus)))
    dev.open()
    return em, dev


def on_ff(size, image):
    out = bytearray(b"\xff" * size)
    for start, data in image.segments:
        out[start:start + len(data)] = data
    return bytes(out)


def test_the_tools_crc_is_ours():
    rng = random.Random("xusbboot-crc")
    for n in (0, 2, 64, 1000, 32 * 1024):
        data = bytes(rng.getrandbits(8) for _ in range(n))
        assert xusbboot.crc.xmega_nvm_crc(data) == nvm_crc(data)


def test_library_boot_info_and_write_hexfile(tmp_path):
    em, dev = board("atxmega128a3u")
    info = xusbboot.get_boot_info(dev)
    assert (info.version_major, info.version_minor, info.mcu_string, info.flash_size, info.page_size) == \
        (1, 0, "atxmega128a3u", 128 * 1024, 512)
    rng = random.Random("xusbboot-write")
    image = Image([(0, b"\x0c\x94" + bytes(rng.getrandbits(8) for _ in range(3000))),
                   (0x10003, bytes(rng.getrandbits(8) for _ in range(777)))])
    path = tmp_path / "fw.hex"
    save(image, path)
    xusbboot.write_hexfile(dev, str(path))  # erase, one WRITE from 0, pages, CRC compared, reset
    assert em.memory.flash_bytes() == on_ff(em.chip.flash_size, image)


def _script() -> str | None:
    """The xusbboot-cli script pip installed with the package: found through the distribution's
    own file list (beside this interpreter, or beside the base one under a venv with system site
    packages; a pyenv shim on PATH is a shell script, not the script)."""
    from importlib import metadata

    dist = metadata.distribution("xusbboot")
    for f in dist.files or ():
        if f.name == "xusbboot-cli":
            path = Path(str(dist.locate_file(f))).resolve()
            if path.is_file():
                return str(path)
    beside = Path(sys.executable).parent / "xusbboot-cli"
    return str(beside) if beside.is_file() else shutil.which("xusbboot-cli")


def run_cli(monkeypatch, capsys, devices, *argv):
    monkeypatch.setattr(easyhid, "Enumeration", lambda: type("E", (), {"find": lambda self, **kw: devices})())
    script = _script()
    if script is None:
        pytest.skip("xusbboot-cli not on PATH")
    monkeypatch.setattr(sys, "argv", ["xusbboot-cli", *argv])
    code = 0  # the script ends without exit() after -e
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_list(monkeypatch, capsys):
    _em, dev = board("atxmega64a4u")
    rc, out, _err = run_cli(monkeypatch, capsys, [dev], "-l")
    assert rc == 0
    assert "Found device 1209:bb01  Xusb - Xusb-boot" in out
    assert "Bootloader Version: 1.0" in out and "MCU:  atxmega64a4u" in out
    assert "flash size:  65536" in out and "page size:  256" in out


def test_cli_flash_erase_and_too_large(monkeypatch, capsys, tmp_path):
    em, dev = board("atxmega32a4u", initial=b"\x0c\x94" + b"\x11" * 5000)
    rng = random.Random("xusbboot-cli")
    image = Image([(0, b"\x0c\x94" + bytes(rng.getrandbits(8) for _ in range(20 * 1024 + 1)))])
    path = tmp_path / "fw.hex"
    save(image, path)
    rc, out, err = run_cli(monkeypatch, capsys, [dev], "-f", str(path))
    assert rc == 0, (out, err)
    assert "Write successful, CRC: 0x" in out
    assert em.memory.flash_bytes() == on_ff(em.chip.flash_size, image)

    em, dev = board("atxmega32a4u", initial=b"\x0c\x94" + b"\x22" * 100)
    rc, out, err = run_cli(monkeypatch, capsys, [dev], "-e", "-d", "1209:bb01")
    assert rc == 0, (out, err)
    assert "Done." in out
    assert em.memory.flash_bytes()[:32 * 1024] == b"\xff" * (32 * 1024)

    em, dev = board("atxmega32a4u", initial=b"\x0c\x94" + b"\x33" * 100)
    before = em.memory.flash_bytes()
    big = tmp_path / "big.hex"
    save(Image([(0, b"\x0c\x94" + b"\x00" * (32 * 1024 + 300))]), big)
    with pytest.raises(xusbboot.XUSBBootloaderException, match="Hex file to large"):
        run_cli(monkeypatch, capsys, [dev], "-f", str(big))
    assert em.memory.flash_bytes() == before


def test_cli_crc_mismatch_is_exit_5(monkeypatch, capsys, tmp_path):
    """A corrupting device: the tool's own CRC check catches it (EXIT_CRC_ERROR)."""
    from bootkit.classes.hid.device import XusbEngine
    from bootkit.classes.hid.protocol import XusbCommand

    command = XusbEngine._command

    def wrong(self, report):
        command(self, report)
        if report[0] == XusbCommand.CRC:
            answer = bytearray(self.queue.pop())
            answer[2] ^= 0x40
            self.queue.append(bytes(answer))

    monkeypatch.setattr(XusbEngine, "_command", wrong)
    _em, dev = board("atxmega32a4u")
    path = tmp_path / "fw.hex"
    save(Image([(0, b"\x0c\x94" + b"\x5a" * 999)]), path)
    rc, out, err = run_cli(monkeypatch, capsys, [dev], "-f", str(path))
    assert rc == 5, (out, err)
    assert "CRC mismatch" in err
