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

Median and spread of --runs runs (at least 5).  The flash's wire bound
(image bytes over the wire time of the WRITE(10) traffic) is the UF2
drive's throughput figure for ``bootkit choose`` (run_all.py).

example:
  python benchmarks/bench_msc.py --runs 5
"""

import argparse
import resource
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run_all import emit, record, throughput  # noqa: E402
from usbwire import bulk_bits, seconds  # noqa: E402

from bootkit.classes.msc import host  # noqa: E402
from bootkit.classes.msc.scsi import MAX_SECTORS  # noqa: E402
from bootkit.emulator import Emulator  # noqa: E402
from bootkit.formats import write_hex, write_uf2  # noqa: E402
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


def bench_flash(chip, image) -> float:
    bus = VirtualBus()
    with Emulator(chip, "msc", options={"leave_delay": 0.0}) as em:
        em.attach(bus)
        t0 = time.perf_counter()
        host.flash(image, get_backend(bus), chip=chip, progress=False, again=0.0)  # no wait for a comeback
        dt = time.perf_counter() - t0
        assert all(em.memory.read(s, len(d)) == d for s, d in image.segments)
    return dt


def bench_read(chip) -> tuple[float, int]:
    bus = VirtualBus()
    with Emulator(chip, "msc") as em:
        em.attach(bus)
        t0 = time.perf_counter()
        host.read(get_backend(bus), chip=chip, progress=False)
        dt = time.perf_counter() - t0
        current = em.target.device.functions[0].volume.current.size
    return dt, current


def read_memory(chip) -> tuple[int, int]:
    """tracemalloc peak and ru_maxrss growth (bytes) of one read (tracemalloc slows it: not timed)."""
    bus = VirtualBus()
    with Emulator(chip, "msc") as em:
        em.attach(bus)
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        tracemalloc.start()
        image = host.read(get_backend(bus), chip=chip, progress=False)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0
        del image
    return peak, rss * 1024


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="example: python benchmarks/bench_msc.py --runs 5",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chip", default="rp2040", help="a chip with at least 1 MiB of application flash")
    ap.add_argument("--runs", type=int, default=5, help="runs, at least 5 (default 5)")
    ap.add_argument("--json", action="store_true", help="last line: the records, for run_all.py")
    args = ap.parse_args(argv)
    if args.runs < 5:
        ap.error("--runs: at least 5 (a median and a spread of fewer say little)")
    chip = get_chip(args.chip)
    start, end = chip.layout().application_ranges("flash")[0]
    size = min(MiB, end - start)
    image = sample_image(chip, size, 0, 0).crop(start, start + size)
    uf2 = len(write_uf2(image, family=chip.uf2_family))
    wire = wire_seconds(uf2)
    flashes = [bench_flash(chip, image) for _ in range(args.runs)]
    reads = [bench_read(chip) for _ in range(args.runs)]
    current = reads[0][1]
    peak, rss = read_memory(chip)
    records = [
        record(f"msc {chip.name}: flash {size // 1024} KiB as {uf2 // 1024} KiB of UF2: ours / bulk wire time",
               "host.flash (mount, copy, FAT) vs the full-speed bit time of the file's WRITE(10) CBW/data/CSW only",
               [t / wire for t in flashes],
               throughput=throughput(["msc/uf2"], size, [wire],
                                     f"full-speed bulk transactions of the WRITE(10)s of a {uf2 // 1024} KiB UF2 "
                                     f"file ({size // 1024} KiB image), from the file's size in bench_msc.py")),
        record(f"msc {chip.name}: read CURRENT.UF2 ({current // 1024} KiB)", "host.read, seconds per MiB of UF2",
               [t / (current / MiB) for t, _ in reads], unit="s/MiB"),
        record(f"msc {chip.name}: memory while reading CURRENT.UF2 (tracemalloc peak)",
               "one read under tracemalloc (ru_maxrss growth beside it)", [peak / MiB], unit="MiB",
               target="< 10", rss_growth_mib=rss / MiB),
    ]
    # the bin and hex drives take the image as a .bin or .hex file: the same WRITE(10) traffic for that
    # file's size (not run here: their figure is the wire bound of the file alone)
    for dialect, file_bytes in (("bin", size), ("hex", len(write_hex(image)))):
        records.append(record(f"msc/{dialect} {size // 1024} KiB as a {file_bytes // 1024} KiB file: wire time",
                              "the full-speed bit time of the file's WRITE(10)s (a bound, nothing run)",
                              [wire_seconds(file_bytes)], unit="s",
                              throughput=throughput([f"msc/{dialect}"], size, [wire_seconds(file_bytes)],
                                                    f"full-speed bulk transactions of the WRITE(10)s of the "
                                                    f"{file_bytes // 1024} KiB .{dialect} file, from its size; the "
                                                    f"drive itself was not run by bench_msc.py")))
    emit(records, args.json)


if __name__ == "__main__":
    main()
