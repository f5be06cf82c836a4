"""The host client on the in-process bus: pyfatfs over SCSI over pyusb, endpoints from the descriptors."""

import pytest

from bootkit.classes.common import ImageRejected
from bootkit.classes.msc import host
from bootkit.emulator import Emulator
from bootkit.formats import Image
from bootkit.memory import get_chip
from bootkit.samples import sample_image
from bootkit.transports.virtual import VirtualBus, get_backend


def emulated(chip, **options):
    # CURRENT.UF2 is read back before the drive leaves: a UF2 file's last block within this,
    # a BIN/HEX file (programmed whole when its last sector arrives) all of it
    options.setdefault("leave_delay", 0.3 if options.get("accept", ("uf2",)) == ("uf2",) else 1.0)
    bus = VirtualBus()
    em = Emulator(chip, "msc", options=options)
    em.attach(bus)
    return em, get_backend(bus)


@pytest.mark.parametrize("chip,dialect,accept", [("stm32f411", "uf2", ("uf2",)), ("rp2040", "uf2", ("uf2",)),
                                                 ("stm32f103c8", "bin", ("uf2", "bin")),
                                                 ("nrf52840", "hex", ("uf2", "hex"))])
def test_flash_gives_the_reference_image(chip, dialect, accept):
    c = get_chip(chip)
    image = sample_image(c, 20 * 1024 + 4, 0x8000, 1024)
    em, backend = emulated(c, accept=accept)
    with em:
        result = host.flash(image, backend, dialect=dialect, chip=c, progress=False)
        assert result.dialect == dialect and result.verified
        assert all(em.memory.read(s, len(d)) == d for s, d in image.segments)
        assert em.memory.app_valid
        assert any(e.startswith("leave") for e in em.events)


def test_bin_requested_but_not_accepted_goes_as_uf2():
    c = get_chip("stm32f411")
    image = sample_image(c, 4096, 0x4000, 64)
    em, backend = emulated(c)
    with em:
        assert host.flash(image, backend, dialect="bin", chip=c, progress=False).dialect == "uf2"
        assert all(em.memory.read(s, len(d)) == d for s, d in image.segments)


def test_without_chip_the_region_comes_from_current_uf2():
    c = get_chip("stm32f103c8")
    em, backend = emulated(c)
    with em:
        inside = sample_image(c, 2048, 0x1000, 16)
        assert host.flash(inside, backend, progress=False).verified
    em, backend = emulated(c)
    with em:
        with pytest.raises(ImageRejected):
            host.flash(Image([(c.flash_start, b"\0" * 64)]), backend, progress=False)  # the bootloader


def test_rejected_image_writes_nothing():
    c = get_chip("stm32f103c8")
    em, backend = emulated(c)
    with em:
        volume = em.target.device.functions[0].volume
        with pytest.raises(ImageRejected):
            host.flash(Image([(c.flash_end - 16, b"\0" * 64)]), backend, chip=c, progress=False)
        assert not volume.meta and not volume.data and not volume.uf2


def test_read_current_uf2_gives_the_flash_back():
    c = get_chip("stm32f411")
    image = sample_image(c, 30000, 0x9000, 77)
    em, backend = emulated(c)
    with em:
        for s, d in image.segments:
            em.memory.program(s, d)
        back = host.read(backend, chip=c, progress=False)
        start, end = c.layout().application_ranges("flash")[0]
        assert (back.start, back.end) == (start, end)
        assert back.tobytes() == em.memory.read(start, end - start)
        part = host.read(backend, start=start + 16, length=32, progress=False)
        assert part.segments == [(start + 16, em.memory.read(start + 16, 32))]


def test_a_drive_of_another_family_is_refused_before_writing_and_forced_stays():
    c = get_chip("stm32f411")
    em, backend = emulated(c, family=0x12345678)  # the product expects another family
    with em:
        volume = em.target.device.functions[0].volume
        with pytest.raises(ImageRejected, match="the drive's Family-ID 0x12345678 does not match stm32f411's "
                                                "UF2 family stm32f4"):
            host.flash(sample_image(c, 1024, 0x1000, 4), backend, chip=c, progress=False)
        assert not volume.meta and not volume.data and not volume.uf2
        with pytest.raises(host.MscError, match="^the device stayed in its bootloader: it ignored the file: its "
                                                "blocks are for UF2 family stm32f4 .*, the drive takes 0x12345678"):
            host.flash(sample_image(c, 1024, 0x1000, 4), backend, chip=c, force=True, progress=False, timeout=0.5)
        assert not em.memory.app_valid


def test_no_device():
    with pytest.raises(host.MscError):
        host.flash(sample_image(get_chip("rp2040"), 256, 0x100, 4), get_backend(VirtualBus()), progress=False)


def test_demo_rows_and_facts():
    from bootkit.classes import msc
    from bootkit.classes.common import OSES
    from bootkit.demo import run_row
    from bootkit.classes.msc.facts import FACTS

    for dialect, sample in msc.DEMO:
        row = run_row("msc", dialect, sample)
        assert row["verified"], row
    assert {f.dialect for f in FACTS} == set(msc.DIALECTS)
    for f in FACTS:
        assert set(f.driver) == set(OSES) and all(v == "none" for v in f.driver.values())
        assert f.host_software == "none" and f.readback and not f.eeprom
