"""Mass-storage throughput on the in-process bus, as a ratio to the full-speed wire time.

Flash: a 1 MiB image dropped as UF2 (2 MiB of blocks) on an emulated
rp2040 UF2 drive through the host client (pyfatfs over SCSI over pyusb,
fast mode), until the device has left.  "wire" is the USB full-speed time
of the bulk transactions that carry the same SCSI traffic: every CBW (31
bytes), data phase and CSW (13 bytes) of the WRITE(10)s of the file's
sectors, in 64-byte packets (token 35 bits + data 8+8+8n+16+3 + handshake
19 per transaction).  The mount, FAT and directory traffic counts on our
side only, so ours/wire is a strict ratio.

Read: CURRENT.UF2 of the same 2 MiB chip (4 MiB of UF2) read back through
the host client, seconds per MiB of UF2; and the growth of resident
memory (tracemalloc peak and ru_maxrss) while reading it: the ghost volume
is generated per sector, so it stays far below the 4 MiB file.

example:
  python benchmarks/bench_msc.py --repeat 3
"""

import argparse
import resource
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from usbwire import bulk_bits, seconds  # noqa: E402

from bootkit.classes.msc import host  # noqa: E402
from bootkit.classes.msc.scsi import MAX_SECTORS  # noqa: E402
from bootkit.emulator import Emulator  # noqa: E402
from bootkit.formats import write_uf2  # noqa: E402
from bootkit.memory import get_chip  # noqa: E402
from bootkit.samples import sample_image  # noqa: E402
from bootkit.transports.virtual import VirtualBus, get_backend  # noqa: E402

MiB = 1024 * 1024


def wire_seconds(file_bytes: int) -> float:
    sectors = -(-file_bytes // 512)
    bits = 0
    while sectors:
        n = min(MAX_SECTORS, sectors)
        bits += bulk_bits(31) + bulk_bits(n * 512) + bulk_bits(13)
        sectors -= n
    return seconds(bits)


def bench_flash(chip, image, repeat):
    best = None
    for _ in range(repeat):
        bus = VirtualBus()
        with Emulator(chip, "msc", options={"leave_delay": 0.0}) as em:
            em.attach(bus)
            t0 = time.perf_counter()
            host.flash(image, get_backend(bus), chip=chip, progress=False, again=0.0)  # no wait for a comeback
            dt = time.perf_counter() - t0
            assert all(em.memory.read(s, len(d)) == d for s, d in image.segments)
        best = dt if best is None else min(best, dt)
    return best


def bench_read(chip, repeat):
    """Best time of ``repeat`` reads; then one more read under tracemalloc (which slows it) for memory."""
    best = None
    for i in range(repeat + 1):
        bus = VirtualBus()
        with Emulator(chip, "msc") as em:
            em.attach(bus)
            measure = i == repeat
            rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            if measure:
                tracemalloc.start()
            t0 = time.perf_counter()
            image = host.read(get_backend(bus), chip=chip, progress=False)
            dt = time.perf_counter() - t0
            if measure:
                _, peak = tracemalloc.get_traced_memory()
                tracemalloc.stop()
                rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0
            else:
                best = dt if best is None else min(best, dt)
            current = em.target.device.functions[0].volume.current.size
        del image
    return best, current, peak, rss


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="example: python benchmarks/bench_msc.py --repeat 3",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chip", default="rp2040", help="a chip with at least 1 MiB of application flash")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    chip = get_chip(args.chip)
    start, end = chip.layout().application_ranges("flash")[0]
    size = min(MiB, end - start)
    image = sample_image(chip, size, 0, 0).crop(start, start + size)
    uf2 = len(write_uf2(image, family=chip.uf2_family))
    ours = bench_flash(chip, image, args.repeat)
    wire = wire_seconds(uf2)
    print(f"flash {size // 1024} KiB as {uf2 // 1024} KiB of UF2 on {chip.name}: ours {ours:.3f} s, "
          f"full-speed wire {wire:.3f} s, ours/wire {ours / wire:.3f}, {size / 1024 / ours:.0f} KiB/s")
    dt, current, peak, rss = bench_read(chip, args.repeat)
    print(f"read CURRENT.UF2 ({current // 1024} KiB, {(end - start) // 1024} KiB of flash): {dt:.3f} s, "
          f"{dt / (current / MiB):.3f} s per MiB of UF2")
    print(f"memory while reading: tracemalloc peak {peak / MiB:.1f} MiB, ru_maxrss growth {rss / 1024:.1f} MiB "
          f"(target under 10 MiB)")


if __name__ == "__main__":
    main()
