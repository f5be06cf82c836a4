"""The CDC host client over a pty: flash, read back, EEPROM, fuses, refusal before erase."""

import pytest

from bootkit.classes import cdc
from bootkit.classes.cdc import host
from bootkit.classes.common import ImageRejected
from bootkit.emulator import Emulator
from bootkit.formats.image import Image
from bootkit.memory import SimulatedFlash, get_chip
from bootkit.memory.chips import EEPROM_BASE
from bootkit.samples import named_sample, sample_image
from bootkit.transports.pty import pty_server

CHIP = get_chip("atmega32u4")


@pytest.fixture
def served():
    mem = SimulatedFlash(CHIP)
    eng = cdc.Avr109Engine(mem)
    with pty_server(eng) as srv:
        yield mem, eng, srv.slave_path


def test_flash_and_read_back(served):
    mem, eng, port = served
    _, image = named_sample("sample-atmega32u4")
    result = host.flash(image, port=port, progress=False)
    assert result.verified and result.dialect == "lufa" and result.bytes >= image.size
    assert mem.app_valid
    assert result.steps[-1] == f"left the bootloader (not seen again within {host.PROBE_WAIT:g} s)"
    for s, d in image.segments:
        assert mem.read(s, len(d)) == d
    eng.reset()  # the application runs: reset into the bootloader to read it back
    back = host.read(port=port, progress=False)
    assert back.tobytes(0, image.end) == image.tobytes(0, image.end)


def test_eeprom_and_fuses(served):
    mem, eng, port = served
    data = bytes(range(50))
    result = host.flash(Image([(EEPROM_BASE + 0x100, data)]), port=port, memory="eeprom", progress=False)
    # blank flash: the board stays in its bootloader, said as a step (an EEPROM write promises no application)
    assert result.steps[-1] == ("the device stayed in its bootloader: first word of flash is erased: "
                                "the bootloader kept control")
    assert mem.read(EEPROM_BASE + 0x100, 50) == data
    back = host.read(port=port, memory="eeprom", progress=False)
    assert back.tobytes(EEPROM_BASE + 0x100, EEPROM_BASE + 0x132) == data
    assert host.read_fuses(port=port) == {"lfuse": 0x5E, "hfuse": 0x99, "efuse": 0xF3, "lock": 0xFF}


def test_image_in_the_bootloader_is_refused_before_anything_is_erased(served):
    mem, eng, port = served
    _, good = named_sample("sample-atmega32u4")
    host.flash(good, port=port, progress=False)
    eng.reset()
    before = mem.flash_bytes()
    bad = Image([(0, b"\x00" * 64), (CHIP.boot_start - 16, b"\x00" * 64)])
    with pytest.raises(ImageRejected):
        host.flash(bad, port=port, progress=False)  # chip from the signature
    with pytest.raises(ImageRejected):
        host.flash(Image([(0, b"\x00" * 64), (CHIP.flash_size + 10, b"\x00")]), port=port, chip=CHIP,
                   progress=False)
    with pytest.raises(ImageRejected):
        host.flash(Image([(1020, b"\x00" * 10)]), port=port, memory="eeprom", progress=False)
    assert mem.flash_bytes() == before and mem.app_valid


def test_wrong_chip_is_refused(served):
    mem, eng, port = served
    with pytest.raises(host.Avr109Error, match="signature"):
        host.flash(sample_image(get_chip("at90usb1286"), 1000), port=port, chip="at90usb1286", progress=False)


def test_demo_row_runs_the_emulator_on_a_pty():
    chip, image = named_sample("sample-atmega32u4")
    row = cdc.run_demo_row("lufa", chip, image)
    assert row["verified"] and row["personality"] == "cdc" and row["bytes"] == image.size


def test_a_touch_that_comes_and_goes_between_two_polls_still_resets_into_the_bootloader():
    """On a loaded machine the server may not run while the port is open at 1200 baud:
    the touch is done before it serves at all, and must still be seen."""
    import threading
    import time

    from bootkit.transports.pty import PtyServer

    with Emulator(CHIP, "cdc", options={"dialect": "caterina"}) as em:
        em.memory.program(0, b"\x0c\x94" * 64)
        em.memory.manifest()
        em.run_application()
        assert em.mode == "application"
        srv = PtyServer(em, log=None)
        host.touch_1200(srv.slave_path, hold=0)
        stop = threading.Event()
        thread = threading.Thread(target=srv.serve, args=(stop,), daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 5
            while em.mode != "bootloader" and time.monotonic() < deadline:
                time.sleep(0.02)
            assert em.mode == "bootloader"
            assert srv.sessions == 1
        finally:
            stop.set()
            thread.join(5)


def test_host_touches_an_application_on_the_pty_into_the_bootloader():
    """The pty transport turns open-at-1200-then-close into SET_LINE_CODING + DTR drop."""
    with Emulator(CHIP, "cdc", options={"dialect": "caterina"}) as em:
        em.memory.program(0, b"\x0c\x94" * 64)
        em.memory.manifest()
        em.run_application()
        assert em.mode == "application"
        with pty_server(em) as srv:
            host.touch_1200(srv.slave_path, hold=0.1)
            import time

            deadline = time.monotonic() + 3
            while em.mode != "bootloader" and time.monotonic() < deadline:
                time.sleep(0.02)
            assert em.mode == "bootloader"
            _, image = named_sample("sample-atmega32u4")
            result = host.flash(image, port=srv.slave_path, progress=False)
            assert result.verified
            assert result.steps[-1] == "application started (came back as 2341:8036)"
        assert em.memory.app_valid
