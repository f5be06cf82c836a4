"""Optiboot and the wiring bootloader as memory back-ends (issue 23): `--target serial:PTY,optiboot`
and `serial:PTY,wiring` in front of `serve cdc --dialect optiboot|wiring --transport pty`
(a child process)."""

from __future__ import annotations

import time

import pytest

from bootkit.api import load_image
from bootkit.classes.cdc.memory import UART_REST, UartMemory
from bootkit.cli import main
from bootkit.emulator import Emulator
from bootkit.memory import get_chip
from bootkit.memory.backends import BackendFault, open_target

U328 = get_chip("atmega328p")
M2560 = get_chip("atmega2560")
OLD = bytes(range(256))


def _expected(image, size: int) -> bytes:
    out = bytearray(b"\xff" * size)
    for a, d in image.segments:
        out[a:a + len(d)] = d
    return bytes(out)


def _back(served, tmp_path, dialect: str, chip, old: bool = True):
    image = tmp_path / f"{dialect}.bin"
    if old:  # old contents: the update must erase what it does not write
        image.write_bytes(OLD * (chip.flash_size // 256))
    back = served("cdc", "--dialect", dialect, "--chip", chip.name, "--image", str(image), "--transport", "pty")
    assert back.where.startswith("/dev/")
    return back, image


@pytest.mark.parametrize("dialect,chip,front", [("optiboot", U328, "printer"), ("optiboot", U328, "midi"),
                                                ("wiring", M2560, "printer"), ("wiring", M2560, "midi"),
                                                ("wiring", M2560, "msc")])
def test_a_front_in_front_of_a_uart_bootloader(usbip_servers, served, tmp_path, capsys, dialect, chip, front):
    fw = tmp_path / "fw.hex"
    assert main(["sample", chip.name, "-o", str(fw)]) == 0
    image = load_image(fw)
    back, back_file = _back(served, tmp_path, dialect, chip)
    memory = open_target(f"serial:{back.where},{dialect}", chip)
    assert isinstance(memory, UartMemory)
    boot = 512 if dialect == "optiboot" else 8192  # Optiboot's 512 B; the chip database's boot section
    assert memory.layout.protected == ((chip.flash_size - boot, chip.flash_size),)  # from the signature
    erased: set[int] = set()  # the pages the front asked to erase
    erase, erase_all = memory.erase, memory.erase_all
    memory.erase = lambda a: erased.add(a - a % memory.page_size) or erase(a)  # type: ignore[method-assign]
    memory.erase_all = lambda: erased.update(range(0, chip.flash_size - boot, memory.page_size)) \
        or erase_all()  # type: ignore[method-assign]
    engine = Emulator(memory.chip, front, backend=memory)
    s = usbip_servers([engine.target])
    try:
        assert main(["flash", str(fw), "--via", front, "--usbip", f"127.0.0.1:{s.port}", "--no-progress"]) == 0
        out = capsys.readouterr().out
        assert "verified" in out
        assert memory.app_valid  # the leave acknowledged, the bootloader gone
    finally:
        engine.close()
    assert "flash written back (application valid)" in back.stop()
    flash = back_file.read_bytes()
    # neither bootloader has a chip erase (Optiboot ignores it, wiring's fails): the pages the front
    # erased hold the image and 0xFF, the others what they held, the bootloader's untouched
    page, old, new = memory.page_size, OLD * (chip.flash_size // 256), _expected(image, chip.flash_size)
    touched = {a - a % page for s0, d in image.segments for a in range(s0, s0 + len(d))}
    assert touched <= erased and max(erased) < chip.flash_size - boot
    for at in range(0, chip.flash_size, page):
        assert flash[at:at + page] == (new if at in erased else old)[at:at + page], hex(at)


@pytest.mark.parametrize("dialect,chip", [("optiboot", U328), ("wiring", M2560)])
def test_pages_in_any_order_and_an_idle_bootloader(served, tmp_path, dialect, chip):
    """wiring's bootloader erases the page at its own pointer: pages out of order still land
    where they belong; after an idle longer than the watchdog the port is opened again."""
    back, back_file = _back(served, tmp_path, dialect, chip)
    memory = open_target(f"serial:{back.where},{dialect}", chip)
    assert isinstance(memory, UartMemory)
    page = memory.page_size
    try:
        for at in (5 * page, page, 3 * page):
            memory.erase(at)
            memory.program(at, bytes([at // page]) * page)
        memory.erase(0)
        memory.program(0, b"\x0c\x94" + b"\x00" * 14)  # half a page: the rest reads erased
        assert memory.read(0, 16) == b"\x0c\x94" + b"\x00" * 14
        assert memory.read(page - 2, 4) == b"\xff\xff\x01\x01"
        time.sleep(UART_REST + 0.8)  # past the bootloader's 1 s watchdog: the application runs there now
        before = memory.reconnects
        assert memory.read(3 * page, 2) == b"\x03\x03"
        assert memory.reconnects == before + 1
        memory.manifest()
        assert memory.app_valid
    finally:
        memory.close()
    back.stop()
    flash = back_file.read_bytes()
    old = OLD * (chip.flash_size // 256)
    assert flash[:16] == b"\x0c\x94" + b"\x00" * 14 and set(flash[16:page]) == {0xFF}
    for n in (1, 3, 5):
        assert flash[n * page:(n + 1) * page] == bytes([n]) * page
    for n in (2, 4, 6):  # neither erased nor written: as they were (wiring wrote them again as they were)
        assert flash[n * page:(n + 1) * page] == old[n * page:(n + 1) * page]


@pytest.mark.parametrize("dialect,chip", [("optiboot", U328), ("wiring", M2560)])
def test_a_vanished_port_is_a_backend_fault_never_a_success(served, tmp_path, dialect, chip):
    back, _ = _back(served, tmp_path, dialect, chip, old=False)
    memory = open_target(f"serial:{back.where},{dialect}", chip)
    assert isinstance(memory, UartMemory)
    try:
        memory.erase_all()
        memory.program(0, b"\x0c\x94" * 64)
        back.kill()
        with pytest.raises(BackendFault, match=rf"^{dialect} target"):
            memory.manifest()
        assert not memory.app_valid
        with pytest.raises(BackendFault):
            memory.read(0, 2)
    finally:
        memory.close()


def test_uart_spec_errors():
    with pytest.raises(OSError, match=r"cannot open /nonexistent"):
        open_target("serial:/nonexistent,optiboot", U328)
    with pytest.raises(OSError, match=r"cannot open /nonexistent"):
        open_target("serial:/nonexistent,wiring", M2560)


def test_serve_printer_target_optiboot_from_the_command_line(served, tmp_path, capsys):
    """`bootkit serve printer --chip atmega328p --target serial:PTY,optiboot` (the entry point from
    the installed metadata), in front of `serve cdc --dialect optiboot` on a pty: a flash through it."""
    fw = tmp_path / "fw.hex"
    assert main(["sample", "atmega328p", "-o", str(fw)]) == 0
    image = load_image(fw)
    back, back_file = _back(served, tmp_path, "optiboot", U328, old=False)
    front = served("printer", "--chip", "atmega328p", "--target", f"serial:{back.where},optiboot",
                   "--listen", "127.0.0.1:0")
    assert main(["flash", str(fw), "--via", "printer", "--usbip", f"127.0.0.1:{front.port}", "--no-progress"]) == 0
    assert "verified" in capsys.readouterr().out
    front.stop()
    assert "flash written back (application valid)" in back.stop()
    flash = back_file.read_bytes()
    assert flash[:U328.flash_size - 512] == _expected(image, U328.flash_size)[:U328.flash_size - 512]
