"""HID throughput on the in-process bus, as a ratio to the full-speed wire limit.

For each dialect (HalfKay, LUFA, native, xusb) our host client flashes an image
into an emulated board (fast mode).  The limit is what a full-speed HID
interface can move: one 64-byte report per 1 ms frame, 64 KB/s.  The
ratio is our wall-clock time over that, ``time / (bytes / 64 * 1 ms)``;
target 0.1 or less (lower is better), so an emulated HID bootloader is
never the slow part of a test suite.  Prints only.

example:
  python benchmarks/bench_hid.py --size 24K --repeat 3
"""

import argparse

from bootkit.classes import hid
from bootkit.classes.hid import host
from bootkit.emulator import Emulator
from bootkit.samples import sample_image
from bootkit.transports.virtual import VirtualBus, get_backend

CHIPS = {"atmega32u4": "atmega32u4", "at90usb1286": "at90usb1286", "atxmega32a4u": "atxmega32a4u",
         "atxmega128a3u": "atxmega128a3u"}
# xusb-boot runs on the xmega only: its row uses the xmega with the same flash as --chip's AVR
XUSB_CHIP = {"atmega32u4": "atxmega32a4u", "at90usb1286": "atxmega128a3u"}


def parse_size(text: str) -> int:
    text = text.strip().upper()
    mult = 1024 if text.endswith("K") else 1
    return int(text.rstrip("K")) * mult


def run(dialect: str, chip_name: str, size: int, repeat: int, verify: bool) -> tuple[float, int]:
    chip = hid.chip_for(chip_name, dialect)
    app_start, app_end = chip.layout().application_ranges("flash")[0]
    size = min(size, app_end - app_start)
    image = sample_image(chip, size, 0, 0)
    image = image.crop(app_start, app_start + size)
    best = None
    for _ in range(repeat):
        bus = VirtualBus()
        em = Emulator(chip, "hid", options={"dialect": dialect})
        em.attach(bus)
        # FlashResult.seconds runs up to the boot command: not the host's watch of the bus after it
        elapsed = host.flash(image, get_backend(bus), dialect=dialect, chip=chip, verify=verify,
                             progress=False).seconds
        assert em.memory.read(app_start, size) == image.tobytes()
        em.close()
        best = elapsed if best is None else min(best, elapsed)
    return best, size


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="24K", help="image size, clipped to the application (default 24K)")
    ap.add_argument("--chip", default="atmega32u4", choices=sorted(CHIPS), help="emulated chip")
    ap.add_argument("--repeat", type=int, default=3, help="runs per dialect; the best is kept")
    ap.add_argument("--verify", action="store_true",
                    help="include the native read-back and the xusb CRC in the time")
    args = ap.parse_args()
    size = parse_size(args.size)
    print(f"{'dialect':8} {'bytes':>8} {'seconds':>9} {'wire s':>8} {'ratio':>7}  (target <= 0.1)")
    for dialect in hid.DIALECTS:
        chip = XUSB_CHIP.get(args.chip, args.chip) if dialect == "xusb" else args.chip
        if dialect != "xusb" and chip.startswith("atxmega"):
            continue  # HalfKay and LUFA have no xmega build; native runs on its AVR rows
        seconds, n = run(dialect, chip, size, args.repeat, args.verify)
        wire = n / 64 * 0.001  # one 64-byte report per 1 ms frame
        print(f"{dialect:8} {n:8d} {seconds:9.4f} {wire:8.3f} {seconds / wire:7.3f}")


if __name__ == "__main__":
    main()
