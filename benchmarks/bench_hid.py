"""HID throughput on the in-process bus, as a ratio to the wire time of the transfers it used.

For each dialect (HalfKay, LUFA, native, xusb) our host client flashes an image
into an emulated board (fast mode).  Every transfer the client issues is
counted in the backend and priced by usbwire.py for its own type: HalfKay and
LUFA's HID bootloader send each block as SET_REPORT on endpoint 0, so they
meet the control-transfer bit-time bound; a dialect writing its reports to an
interrupt OUT endpoint meets the interrupt bound (one report per bInterval
frame), the endpoints' wMaxPacketSize and bInterval read from the emulated
device's descriptors.  The ratio is our wall-clock time over that wire time;
target 0.1 or less (lower is better), so an emulated HID bootloader is never
the slow part of a test suite.  The wire bound of each dialect's counted
transfers is its throughput figure for ``bootkit choose`` (run_all.py).
Median and spread of --runs runs (at least 5).

example:
  python benchmarks/bench_hid.py --size 24K --runs 5
"""

import argparse
import sys
from pathlib import Path

import usb.core

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run_all import emit, record, throughput  # noqa: E402
from usbwire import WireLog, endpoints_of  # noqa: E402

from bootkit.classes import hid  # noqa: E402
from bootkit.classes.hid import host  # noqa: E402
from bootkit.emulator import Emulator  # noqa: E402
from bootkit.samples import sample_image  # noqa: E402
from bootkit.transports.virtual import VirtualBus, get_backend  # noqa: E402

CHIPS = ("atmega32u4", "at90usb1286")
# xusb-boot runs on the xmega only: its row uses the xmega with the same flash as --chip's AVR
XUSB_CHIP = {"atmega32u4": "atxmega32a4u", "at90usb1286": "atxmega128a3u"}


def parse_size(text: str) -> int:
    text = text.strip().upper()
    mult = 1024 if text.endswith("K") else 1
    return int(text.rstrip("K")) * mult


def run(dialect: str, chip_name: str, size: int, verify: bool) -> tuple[float, float, int, dict]:
    """(our seconds, wire seconds, image bytes, transfers by type) of one flash."""
    chip = hid.chip_for(chip_name, dialect)
    app_start, app_end = chip.layout().application_ranges("flash")[0]
    size = min(size, app_end - app_start)
    image = sample_image(chip, size, 0, 0)
    image = image.crop(app_start, app_start + size)
    bus = VirtualBus()
    em = Emulator(chip, "hid", options={"dialect": dialect})
    em.attach(bus)
    backend = get_backend(bus)
    log = WireLog().attach(backend, endpoints_of(usb.core.find(backend=backend)))
    # FlashResult.seconds runs up to the boot command: not the host's watch of the bus after it
    elapsed = host.flash(image, backend, dialect=dialect, chip=chip, verify=verify, progress=False).seconds
    log.detach(backend)
    assert em.memory.read(app_start, size) == image.tobytes()
    em.close()
    return elapsed, log.seconds(), size, log.kinds()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="24K", help="image size, clipped to the application (default 24K)")
    ap.add_argument("--chip", default="atmega32u4", choices=CHIPS, help="emulated chip")
    ap.add_argument("--runs", type=int, default=5, help="runs per dialect, at least 5 (default 5)")
    ap.add_argument("--verify", action="store_true",
                    help="include the native read-back and the xusb CRC in the time")
    ap.add_argument("--json", action="store_true", help="last line: the records, for run_all.py")
    args = ap.parse_args(argv)
    if args.runs < 5:
        ap.error("--runs: at least 5 (a median and a spread of fewer say little)")
    size = parse_size(args.size)
    records = []
    for dialect in hid.DIALECTS:
        chip = XUSB_CHIP[args.chip] if dialect == "xusb" else args.chip
        runs = [run(dialect, chip, size, args.verify) for _ in range(args.runs)]
        n, kinds = runs[0][2], runs[0][3]
        used = ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items()))
        records.append(record(
            f"hid/{dialect} {n // 1024} KiB on {chip}: ours / wire time of its transfers",
            f"host.flash into the emulator vs the full-speed wire bound of the transfers issued ({used})",
            [ours / wire for ours, wire, _, _ in runs], target="<= 0.1",
            throughput=throughput([f"hid/{dialect}"], n, [w for _, w, _, _ in runs],
                                  f"full-speed wire time of the transfers counted in bench_hid.py: {used}")))
    emit(records, args.json)


if __name__ == "__main__":
    main()
