"""avrdude -c usbasp (avrdude 7.x through libusb-1.0, which nobody here wrote) against
bootkit's USBasp (issue 20): `bootkit serve isp --dialect usbasp --chip TARGET --transport
functionfs` puts a USBasp with an emulated AVR on its ISP header on dummy_hcd, and the
guest kernel is the USB host.

One serve per target chip (ATtiny85, ATmega328P, ATmega2560), and in it the whole set, in
an order that makes each step observable:

1. lock bits programmed (mode 3) and read back;
2. chip erase (-e): the lock byte reads 0xFF again;
3. flash written WITHOUT avrdude's own erase (-D), so a chip erase that did nothing would
   leave the initial contents ANDed in and the verify would fail; verified, and read back
   (the whole flash with -U flash:r on t85/m328p; on the m2560, whose 256 KiB would take
   minutes in TCG, with terminal-mode dumps across 0x10000 and 0x20000, where the
   programmer must load the extended address byte);
4. EEPROM written (with gaps) and read back;
5. lfuse/hfuse/efuse written (avrdude verifies each write through its masks), verified with
   -U x:v and read with -U x:r (masked values as avrdude expects: unimplemented bits 1);
6. the signature on every run ("device signature = 0x1e930b (probably t85)").

At the end the flash image the emulator writes back is the HEX placed on 0xFF over the
whole flash.  On the ATmega2560 bootkit's own UsbaspLink also reads through libusb (the
real kernel, not bootkit's pyusb backends).  The images have gaps, odd lengths and
segments off any page boundary.

Measured here (TCG, 2 cores, one guest Python process per serve): a byte read or written
costs the emulated programmer ~0.35 ms of guest CPU (one ISP instruction to the emulated
AVR each); a whole ATmega328P flash read about 35 s.
"""

from __future__ import annotations

import pytest

from .harness import GuestVM
from .served import cli_serving, ihex, rand, require_tools, run_tool

pytestmark = pytest.mark.vm

USBASP_ID = "16c0:05dc"


class Part:
    def __init__(self, chip, part, flash, page, eeprom, segments, ee_segments, fuses, dumps=()):
        self.chip, self.part, self.flash, self.page, self.eeprom = chip, part, flash, page, eeprom
        self.segments, self.ee_segments, self.fuses, self.dumps = segments, ee_segments, fuses, dumps


# fuses: values with SPIEN (hfuse bit 5) left programmed, as ISP cannot change it; efuse as
# avrdude reads it back (the ATtiny85 has one efuse bit, SELFPRGEN; the megas three, BODLEVEL)
PARTS = {
    "attiny85": Part("attiny85", "t85", 8 * 1024, 64, 512,
                     [(0, 1001), (0x5C3, 77), (0x1000, 64), (0x1F81, 0x7F)],  # up to the last byte
                     [(0, 5), (0x101, 33), (0x1FF, 1)],
                     {"lfuse": 0xE2, "hfuse": 0xDD, "efuse": 0xFE}),
    "atmega328p": Part("atmega328p", "m328p", 32 * 1024, 128, 1024,
                       [(0, 3001), (0x1F37, 301), (0x4000, 128), (0x7F11, 0xEF)],
                       [(0x10, 100), (0x3F0, 16)],
                       {"lfuse": 0xFF, "hfuse": 0xDE, "efuse": 0xFD}),
    "atmega2560": Part("atmega2560", "m2560", 256 * 1024, 256, 4096,
                       [(0, 1001), (0xFF37, 0x1F0), (0x1FF11, 0x1FF), (0x3DF00, 0x101)],
                       [(0, 7), (0x7F0, 33), (0xFFF, 1)],
                       {"lfuse": 0xF7, "hfuse": 0xD8, "efuse": 0xFD},
                       dumps=((0xFFF0, 0x40), (0x1FFE0, 0x60))),
}


def generated(segments, size: int, seed: int) -> tuple[str, bytes]:
    """An Intel HEX of random segments and the memory it must leave (segments on 0xFF),
    built here without bootkit's code."""
    reference = bytearray(b"\xff" * size)
    records = []
    for i, (start, n) in enumerate(segments):
        data = rand(n, seed * 100 + i)
        reference[start:start + n] = data
        records += ihex(data, start).splitlines(keepends=True)[:-1]  # one EOF record at the end
    return "".join(records) + ":00000001FF\n", bytes(reference)


def parse_dump(text: str) -> dict[int, int]:
    """avrdude terminal's `dump` lines ("1fff0  55 b5 ...  |U...|") as address -> byte."""
    out: dict[int, int] = {}
    for line in text.splitlines():
        head, _, rest = line.partition("  ")
        try:
            address = int(head, 16)
        except ValueError:
            continue
        for i, word in enumerate(rest.split("|")[0].split()):
            out[address + i] = int(word, 16)
    return out


@pytest.fixture
def usbasp_guest(guest: GuestVM) -> GuestVM:
    require_tools("avrdude", package="avrdude")
    guest.run("modprobe -a dummy_hcd libcomposite usb_f_fs", check=True)
    return guest


LINK_READ = """
import sys
from bootkit.isp.usbasp import UsbaspLink
address, length = int(sys.argv[1], 0), int(sys.argv[2], 0)
with UsbaspLink() as link:  # libusb: the guest kernel's view of the gadget
    link.connect()
    sys.stdout.write(link.read_signature().hex() + " " + link.read_memory("flash", address, length).hex())
"""


@pytest.mark.parametrize("chip", list(PARTS))
def test_avrdude_usbasp(usbasp_guest, chip):
    g = usbasp_guest
    p = PARTS[chip]
    avrdude = f"avrdude -c usbasp -p {p.part}"
    signature = {"t85": "0x1e930b", "m328p": "0x1e950f", "m2560": "0x1e9801"}[p.part]
    fw_hex, flash_ref = generated(p.segments, p.flash, seed=20 + len(p.part))
    ee_hex, ee_ref = generated(p.ee_segments, p.eeprom, seed=30 + len(p.part))
    name = f"usbasp-{p.part}"
    (g.xfer_dir / f"{name}.hex").write_text(fw_hex)
    (g.xfer_dir / f"{name}-ee.hex").write_text(ee_hex)
    # the flash holds something before: an erase that did nothing would show
    initial = rand(p.flash, 40 + len(p.part))
    with cli_serving(g, "isp", chip, f"{name}.bin", USBASP_ID, dialect="usbasp", initial=initial) as s:
        def tool(args: str, timeout: float = 120.0, stdin: bytes | None = None):
            if stdin is None:
                r = run_tool(g, f"{avrdude} {args}", timeout=timeout, served=s)
            else:
                r = g.run(f"{avrdude} {args}", timeout=timeout, cwd=g.guest_xfer_dir, input=stdin)
                assert r.rc == 0, r.describe() + "\n--- serve ---\n" + s.log
            assert f"device signature = {signature} (probably {p.part})" in r.stderr, r.describe()
            return r

        # 1. lock bits: mode 3 (LB1 and LB2 programmed)
        r = tool("-U lock:w:0xFC:m -U lock:r:-:h")
        assert "1 byte of lock verified" in r.stderr and r.stdout.split() == ["0xfc"], r.describe()
        # 2. chip erase clears them (and the flash)
        r = tool("-e -U lock:r:-:h")
        assert "erasing chip" in r.stderr and r.stdout.split() == ["0xff"], r.describe()
        # 3. flash, no erase of avrdude's own (-D): what the chip erase left must be 0xFF
        read = "" if p.dumps else f" -U flash:r:{name}-back.bin:r"
        r = tool(f"-D -U flash:w:{name}.hex:i{read}", timeout=600)
        written = sum(n for _, n in p.segments)
        assert f"{written} bytes of flash verified" in r.stderr, r.describe()
        if read:
            # avrdude 7 leaves the trailing 0xFF bytes out of a raw file
            back = (g.xfer_dir / f"{name}-back.bin").read_bytes()
            assert back == flash_ref.rstrip(b"\xff"), r.describe()
        for start, length in p.dumps:
            r = tool("-t", stdin=f"dump flash 0x{start:x} 0x{length:x}\nquit\n".encode())
            dumped = parse_dump(r.stdout)
            assert len(dumped) == length, r.describe()
            assert bytes(dumped[a] for a in range(start, start + length)) == flash_ref[start:start + length]
        # 4. EEPROM
        r = tool(f"-U eeprom:w:{name}-ee.hex:i -U eeprom:r:{name}-ee-back.bin:r", timeout=300)
        assert f"{sum(n for _, n in p.ee_segments)} bytes of eeprom verified" in r.stderr, r.describe()
        assert (g.xfer_dir / f"{name}-ee-back.bin").read_bytes() == ee_ref.rstrip(b"\xff")
        # 5. fuses written (each verified by avrdude through its mask), then verified and read
        writes = " ".join(f"-U {f}:w:0x{v:02X}:m" for f, v in p.fuses.items())
        r = tool(writes)
        for f in p.fuses:
            assert f"1 byte of {f} verified" in r.stderr, r.describe()
        checks = " ".join(f"-U {f}:v:0x{v:02X}:m" for f, v in p.fuses.items())
        reads = " ".join(f"-U {f}:r:-:h" for f in p.fuses)
        r = tool(f"{checks} {reads}")
        assert r.stdout.split() == [f"0x{v:02x}" for v in p.fuses.values()], r.describe()
        # bootkit's own host side through the guest's libusb, above 128 KiB where it has data
        if p.dumps:
            (g.xfer_dir / "usbasp_link_read.py").write_text(LINK_READ)
            start, length = p.segments[2][0] - 0x11, 0x240
            r = run_tool(g, f"python3 usbasp_link_read.py 0x{start:x} 0x{length:x}", served=s)
            sig, data = r.stdout.split()
            assert sig == signature[2:] and bytes.fromhex(data) == flash_ref[start:start + length], r.describe()
    # what the emulator wrote back: the HEX on 0xFF over the whole flash
    assert s.image() == flash_ref
