"""Two processes: an emulated board served over USB/IP, flashed from another process.

The server process runs ``Emulator(...)`` behind ``usbip.serve`` (the CLI's
``bootkit serve dfu --transport usbip`` will do the same); this process
flashes it with the DFU host client through the USB/IP client backend.
SIGTERM stops the server, which closes the emulator: FILE.bin then holds
the chip's whole flash with the image in place.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

from bootkit.classes.dfu import host
from bootkit.memory import get_chip
from bootkit.samples import sample_image
from bootkit.transports import usbip_client

SERVER = textwrap.dedent("""
    import sys
    from bootkit.emulator import Emulator
    from bootkit.transports import usbip

    chip, dialect, image = sys.argv[1:4]
    em = Emulator(chip, "dfu", image=image, options={"dialect": dialect})
    try:
        usbip.serve([em.target], ("127.0.0.1", 0), log=lambda line: print(line, file=sys.stderr, flush=True),
                    ready=lambda address: print(address[1], flush=True))
    finally:
        em.close()  # writes FILE.bin back
    print("stopped", flush=True)
""")


def start_server(tmp_path, chip, dialect):
    script = tmp_path / "serve_usbip.py"
    script.write_text(SERVER)
    proc = subprocess.Popen([sys.executable, str(script), chip, dialect, str(tmp_path / "flash.bin")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    line = proc.stdout.readline()
    if not line.strip().isdigit():
        proc.kill()
        raise AssertionError(f"server did not start: {line!r} {proc.stderr.read()}")
    return proc, int(line)


def reference(chip, image) -> bytes:
    ref = bytearray(b"\xff" * chip.flash_size)
    for start, data in image.segments:
        ref[start - chip.flash_start:start - chip.flash_start + len(data)] = data
    return bytes(ref)


@pytest.mark.parametrize("dialect,chip_name", [("dfuse", "stm32f411"), ("flip", "atmega32u4"),
                                               ("dfu", "stm32f103c8")])
def test_flash_another_process_over_usbip(tmp_path, dialect, chip_name):
    chip = get_chip(chip_name)
    image = sample_image(chip, 6 * 1024 + 3, 0x2000, 301, seed=7)
    proc, port = start_server(tmp_path, chip_name, dialect)
    try:
        backend = usbip_client.UsbipBackend(port=port)
        result = host.flash(image, backend, dialect=dialect, chip=chip_name, progress=False)
        # plain DFU downloads the gap between segments too (erased bytes)
        assert result.bytes == (image.end - image.start if dialect == "dfu" else image.size)
        assert result.verified
        backend.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "stopped" in out
    assert (tmp_path / "flash.bin").read_bytes() == reference(chip, image)
    assert "re-enumerated" in err  # the board left DFU mode: the importer was unplugged
