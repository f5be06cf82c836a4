"""FunctionFS: a control request never overtakes OUT data the host already sent (issue 22).

FunctionFS hands ep0 events and each OUT endpoint's data to different threads of our gadget.
When the host closes /dev/ttyACM0, cdc_acm first waits for its bulk OUT transfers to complete,
then drops DTR (SET_CONTROL_LINE_STATE).  Our CDC function abandons a half-received command
when DTR drops (LUFA does the same), so if the request reaches it before the last packet's
data, the tail of the stream is lost, and the rest of that packet is parsed as new commands.

Here a stream of four AVR109 block writes (4 x 132 bytes: one 512-byte packet and a 16-byte
one, the fourth block spanning both) goes through `cat FILE > /dev/ttyACM0` and the port is
closed.  The gadget runs through tests/vm/slow_out.py, which pauses after every endpoint
read(): the race window, made certain.  The four blocks must be in the flash image.  Before
the fix (ep0's thread drains the OUT threads first, bootkit/transports/functionfs/endpoints.py)
the fourth block was missing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .harness import GuestVM
from .served import GADGET_DIR, Served, fresh_image, rand, run_tool, wait_path, wait_until
from .test_cdc_interop import LUFA_CDC_BOOT, acm_ports, cdc_guest  # noqa: F401 (fixture)

pytestmark = pytest.mark.vm

SLOW_OUT = Path(__file__).with_name("slow_out.py")
PAUSE = 0.5  # seconds after each endpoint read: far longer than the host takes to drop DTR
BLOCK = 128


def avr109_blocks(firmware: bytes) -> bytes:
    """'B' size 'F' data per block from address 0 (LUFA BootloaderCDC.c ReadWriteMemoryBlock)."""
    return b"".join(b"B" + BLOCK.to_bytes(2, "big") + b"F" + firmware[i:i + BLOCK]
                    for i in range(0, len(firmware), BLOCK))


def test_dtr_drop_after_the_last_bulk_packet_keeps_the_tail(cdc_guest: GuestVM):
    guest = cdc_guest
    firmware = rand(4 * BLOCK, 22)
    stream = avr109_blocks(firmware)
    assert len(stream) == 528  # a 512-byte packet, then 16 bytes: the 4th block spans both
    (guest.xfer_dir / "tail.avr109").write_bytes(stream)
    image = "ordering.bin"
    host_img = fresh_image(guest, image)
    cmd = (f"exec python3 {SLOW_OUT} {PAUSE} serve cdc --chip atmega32u4 --image {guest.guest_path(image)} "
           f"--transport functionfs")
    served = Served(guest, guest.run_bg(cmd, cwd=guest.guest_xfer_dir), host_img, guest.guest_path(image))
    try:
        wait_until(guest, lambda: acm_ports(guest) or served.daemon.poll() is not None,
                   f"{LUFA_CDC_BOOT} as /dev/ttyACM*", daemon=served.daemon)
        assert served.daemon.poll() is None, "serve exited early:\n" + served.daemon.output().describe()
        port = acm_ports(guest)[0]
        wait_path(guest, port, daemon=served.daemon)
        run_tool(guest, f"stty -F {port} raw -echo -echoe -echok -icanon min 1 time 0")
        # one write, then close: the close drops DTR once the bulk OUT transfer completed
        run_tool(guest, f"cat tail.avr109 > {port}", timeout=60)
    finally:
        res = served.stop()
    assert res.rc == 0 and not res.timed_out, res.describe()
    assert guest.run(f"test ! -e {GADGET_DIR}").ok, "gadget left behind:\n" + res.describe()
    assert "did not settle" not in res.stdout, res.describe()
    got = host_img.read_bytes()[:len(firmware)]
    lost = [i for i in range(4) if got[i * BLOCK:(i + 1) * BLOCK] != firmware[i * BLOCK:(i + 1) * BLOCK]]
    assert not lost, f"blocks {lost} of 4 not in the flash (the DTR drop overtook the OUT data)\n" + res.describe()
