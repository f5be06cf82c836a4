"""DFU throughput on the in-process bus, as a ratio to the full-speed wire time.

For 256 KiB at wTransferSize 64, 1024 and 4096, a plain DFU 1.1 download
into an emulated STM32F411 (fast mode): our wall-clock time over the USB
full-speed wire time of exactly the control transfers the host issued
(counted in the backend, priced by usbwire.py's control-transfer bound).
Target: 0.1 or less at 1024 and 4096 (lower is better), so an emulated
device is never the slow part of a test suite.  Median and spread of
--runs runs (at least 5).  The wire bound of the counted transfers at
wTransferSize 1024 is the DFU dialects' throughput figure for
``bootkit choose`` (run_all.py).

example:
  python benchmarks/bench_dfu.py --size 256K --runs 5
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run_all import emit, record, throughput  # noqa: E402
from usbwire import WireLog  # noqa: E402

from bootkit.classes.dfu import host  # noqa: E402
from bootkit.emulator import Emulator  # noqa: E402
from bootkit.samples import sample_image  # noqa: E402
from bootkit.transports.virtual import VirtualBus, get_backend  # noqa: E402


def run(size: int, transfer: int) -> tuple[float, float, int]:
    """(our seconds, wire seconds, control transfers) of one download."""
    image = sample_image("stm32f411", size, 0, 0)
    image = image.crop(image.start, image.start + size)
    bus = VirtualBus()
    em = Emulator("stm32f411", "dfu", options={"dialect": "dfu", "transfer_size": transfer})
    em.attach(bus)
    backend = get_backend(bus)
    log = WireLog().attach(backend, {})
    t0 = time.perf_counter()
    host.flash(image, backend, dialect="dfu", chip="stm32f411", verify=False, progress=False)
    elapsed = time.perf_counter() - t0
    log.detach(backend)
    assert em.memory.read(image.start, size) == image.tobytes()
    return elapsed, log.seconds(), len(log.transfers)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="256K", help="image size (default 256K)")
    ap.add_argument("--runs", type=int, default=5, help="runs per setting, at least 5 (default 5)")
    ap.add_argument("--json", action="store_true", help="last line: the records, for run_all.py")
    args = ap.parse_args(argv)
    if args.runs < 5:
        ap.error("--runs: at least 5 (a median and a spread of fewer say little)")
    size = int(args.size.rstrip("Kk")) * 1024 if args.size[-1] in "Kk" else int(args.size)
    print(f"DFU 1.1 download of {size // 1024} KiB into an emulated stm32f411, in-process bus, {args.runs} runs")
    records = []
    for transfer in (64, 1024, 4096):
        runs = [run(size, transfer) for _ in range(args.runs)]
        extra = {}
        if transfer == 1024:
            extra["throughput"] = throughput(
                ["dfu/dfu", "dfu/dfuse", "dfu/flip"], size, [w for _, w, _ in runs],
                f"full-speed control transfers of a {size // 1024} KiB download at wTransferSize 1024, counted "
                f"in bench_dfu.py (DfuSe and FLIP issue the same transfers; a chip's programming time comes on top)")
        records.append(record(
            f"dfu {size // 1024} KiB wTransferSize {transfer}: ours / control-transfer wire time",
            f"host.flash into the emulator vs the full-speed bit time of the {runs[0][2]} control transfers issued",
            [ours / wire for ours, wire, _ in runs], target="<= 0.1" if transfer >= 1024 else None, **extra))
    emit(records, args.json)


if __name__ == "__main__":
    main()
