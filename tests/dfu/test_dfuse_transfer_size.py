"""A DfuSe host told a wTransferSize other than the device's (dfu-util -t) still writes and
reads every byte where it belongs: the device places block N at (N - 2) x its OWN
wTransferSize + the address pointer (AN3156; ST's usbd_dfu.c), so sequential blocks from
one pointer are only right at the device's size, and the host sets the pointer per chunk
otherwise.  Before, a 1024-byte host against a 2048-byte device wrote data at the wrong
addresses and its read-back verify failed."""

from __future__ import annotations

import random

import pytest

from bootkit.classes.dfu import host
from bootkit.emulator import Emulator
from bootkit.formats.image import Image
from bootkit.transports.virtual import VirtualBus, get_backend


@pytest.mark.parametrize("host_size", [1024, 512, 1000])
def test_a_host_transfer_size_other_than_the_devices_lands_every_byte(host_size):
    rng = random.Random(host_size)
    # two segments, the second off any block boundary, in the 16 KiB sectors and across into the 64 KiB one
    first = bytes(rng.randrange(256) for _ in range(5000))
    second = bytes(rng.randrange(256) for _ in range(70001))
    image = Image([(0x08008000, first), (0x0800C123, second)])
    bus = VirtualBus()
    with Emulator("stm32f411", "dfu", options={"dialect": "dfuse"}) as em:
        em.attach(bus)
        assert em.target.device.functions[0].engine.functional.wTransferSize == 2048
        result = host.flash(image, get_backend(bus), dialect="dfuse", chip=em.chip, transfer_size=host_size,
                            progress=False, leave=False)
        assert result.verified
        for start, data in image.segments:
            assert em.memory.read(start, len(data)) == data
        back = host.read(get_backend(bus), dialect="dfuse", chip=em.chip, transfer_size=host_size,
                         start=0x0800C123, length=len(second), progress=False)
        assert back.segments == [(0x0800C123, second)]


def test_a_transfer_size_above_the_devices_is_refused_before_anything_is_erased():
    from bootkit.classes.common import ImageRejected

    bus = VirtualBus()
    with Emulator("stm32f411", "dfu", options={"dialect": "dfuse"}) as em:
        em.attach(bus)
        em.memory.program(0x08008000, b"keep")
        with pytest.raises(ImageRejected, match=r"4096 bytes is more than the device takes \(its wTransferSize is 2048\)"):
            host.flash(Image([(0x08008000, b"\x00" * 100)]), get_backend(bus), dialect="dfuse", chip=em.chip,
                       transfer_size=4096, progress=False)
        assert em.memory.read(0x08008000, 4) == b"keep"


def test_the_cli_refuses_a_transfer_size_above_the_devices_as_bad_input(tmp_path, capsys):
    from bootkit.cli import main
    from bootkit.formats import save

    fw = tmp_path / "fw.hex"
    save(Image([(0x08008000, b"\x00" * 5000)]), fw)
    code = main(["flash", str(fw), "--via", "dfu", "--dialect", "dfuse", "--transfer-size", "4096",
                 "--emulate", "stm32f411", "--image", str(tmp_path / "flash.bin")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "its wTransferSize is 2048" in err, err
