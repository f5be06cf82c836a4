"""DFU throughput on the in-process bus, as a ratio to the full-speed wire time.

For 256 KiB at wTransferSize 64, 1024 and 4096, a plain DFU 1.1 download
into an emulated STM32F411 (fast mode): our wall-clock time over the USB
full-speed wire time of exactly the control transfers the host issued
(counted in the backend).  Target: 0.1 or less at 1024 and 4096 (lower is
better), so an emulated device is never the slow part of a test suite.

example:
  python benchmarks/bench_dfu.py --size 256K
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from usbwire import control_bits, seconds  # noqa: E402

from bootkit.classes.dfu import host  # noqa: E402
from bootkit.emulator import Emulator  # noqa: E402
from bootkit.samples import sample_image  # noqa: E402
from bootkit.transports.virtual import VirtualBus, get_backend  # noqa: E402


def run(size: int, transfer: int, repeat: int) -> tuple[float, float, int]:
    image = sample_image("stm32f411", size, 0, 0)
    image = image.crop(image.start, image.start + size)
    best = None
    for _ in range(repeat):
        bus = VirtualBus()
        em = Emulator("stm32f411", "dfu", options={"dialect": "dfu", "transfer_size": transfer})
        em.attach(bus)
        backend = get_backend(bus)
        log = []
        real = backend.ctrl_transfer

        def counting(h, bm, br, wv, wi, data, timeout):
            n = real(h, bm, br, wv, wi, data, timeout)
            log.append(n)
            return n

        backend.ctrl_transfer = counting
        t0 = time.perf_counter()
        host.flash(image, backend, dialect="dfu", chip="stm32f411", verify=False, progress=False)
        elapsed = time.perf_counter() - t0
        del backend.ctrl_transfer
        assert em.memory.read(image.start, size) == image.tobytes()
        wire = seconds(sum(control_bits(n) for n in log))
        if best is None or elapsed < best[0]:
            best = (elapsed, wire, len(log))
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="256K", help="image size (default 256K)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per setting; the best is kept")
    args = ap.parse_args()
    size = int(args.size.rstrip("Kk")) * 1024 if args.size[-1] in "Kk" else int(args.size)
    print(f"DFU 1.1 download of {size // 1024} KiB into an emulated stm32f411, in-process bus (best of {args.repeat})")
    print(f"{'wTransferSize':>13} {'transfers':>9} {'ours s':>8} {'wire s':>8} {'ours/wire':>9}  target")
    for transfer in (64, 1024, 4096):
        ours, wire, count = run(size, transfer, args.repeat)
        target = "<= 0.1" if transfer >= 1024 else "-"
        print(f"{transfer:>13} {count:>9} {ours:>8.4f} {wire:>8.4f} {ours / wire:>9.3f}  {target}")


if __name__ == "__main__":
    main()
