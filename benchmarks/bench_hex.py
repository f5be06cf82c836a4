"""Intel HEX parse speed of a whole file: bootkit's load() against intelhex and bincopy.

Builds an image of --size bytes in a few segments above 64 KiB (so the
file has 04 extended linear address records and gaps), writes it as HEX to a
temporary file, and times ``bootkit.formats.load(path)``, ``intelhex.IntelHex(path)``
and ``bincopy.BinFile(path)`` (time.perf_counter), alternately, round after
round (the order rotates every round), --repeat rounds (at least 5).  Printed:
each one's median and spread (IQR, min-max), and bootkit's ratio to each peer
(ratio of the medians, spread of the per-round ratios).  The target for
bootkit is at most 0.2 x bincopy's time (issue 22; intelhex, the slowest
peer, is shown for reference).  Nothing is asserted: this is a measurement,
not a test.  benchmarks/bench_formats.py measures the writers too.

bincopy is a benchmark-only dependency (pip install bincopy; the `bench` extra).

Example:
    python benchmarks/bench_hex.py --size 4M
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time

import bincopy
from intelhex import IntelHex

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from run_all import emit, record  # noqa: E402

from bootkit.formats import Image, load, write_hex  # noqa: E402

TARGET = 0.2


def parse_size(text: str) -> int:
    """"1048576", "1M", "512K" -> bytes."""
    units = {"K": 1 << 10, "M": 1 << 20}
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text, 0)


def build_image(size: int, seed: int = 1) -> Image:
    """``size`` random bytes in four segments starting at 0x0801_0000, with gaps."""
    rnd = random.Random(seed)
    image = Image()
    address = 0x0801_0000
    quarter = size // 4
    for i in range(4):
        length = quarter if i < 3 else size - 3 * quarter
        image.add(address, rnd.randbytes(length))
        address += length + 0x1_0000 + 0x123  # a gap, and an unaligned restart
    return image


def spread(values: list[float]) -> tuple[float, float, float, float, float]:
    """median, first and third quartile, min, max."""
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return statistics.median(values), q1, q3, min(values), max(values)


def rounds(repeat: int, funcs: dict) -> dict[str, list[float]]:
    """Each function once a round, the order rotated every round (drift hits all alike)."""
    times: dict[str, list[float]] = {name: [] for name in funcs}
    names = list(funcs)
    for i in range(repeat):
        for name in names[i % len(names):] + names[:i % len(names)]:
            t0 = time.perf_counter()
            funcs[name]()
            times[name].append(time.perf_counter() - t0)
    return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Time bootkit's Intel HEX parser against intelhex and bincopy (target: <= 0.2 x bincopy).",
        epilog="example: python benchmarks/bench_hex.py --size 4M --repeat 7",
    )
    parser.add_argument("--size", type=parse_size, default=1 << 20,
                        help="image size in bytes, K/M suffixes allowed (default 1M)")
    parser.add_argument("--repeat", "--runs", type=int, default=5, help="rounds, at least 5 (default 5)")
    parser.add_argument("--json", action="store_true", help="last line: the records, for run_all.py")
    args = parser.parse_args(argv)
    if args.repeat < 5:
        parser.error("--repeat must be at least 5 (median and spread)")

    image = build_image(args.size)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.hex")
        with open(path, "w") as f:
            f.write(write_hex(image))
        lines = sum(1 for _ in open(path))
        print(f"image: {image.size} bytes in {len(image.segments)} segments, "
              f"0x{image.start:08X}..0x{image.end:08X}; file: {os.path.getsize(path)} bytes, {lines} lines; "
              f"{args.repeat} rounds, load average {os.getloadavg()[0]:.2f}")
        if load(path) != image:
            raise SystemExit("bootkit parsed a different image: benchmark invalid")
        times = rounds(args.repeat, {"bootkit load(path)": lambda: load(path),
                                     "intelhex IntelHex(path)": lambda: IntelHex(path),
                                     "bincopy BinFile(path)": lambda: bincopy.BinFile(path)})
    for name, values in times.items():
        med, q1, q3, lo, hi = spread(values)
        print(f"{name:24s} median {med * 1000:9.1f} ms   IQR {q1 * 1000:9.1f}-{q3 * 1000:9.1f}   "
              f"min-max {lo * 1000:9.1f}-{hi * 1000:9.1f} ms")
    ours = times["bootkit load(path)"]
    records = []
    for peer, target in (("bincopy BinFile(path)", TARGET), ("intelhex IntelHex(path)", None)):
        records.append(record(f"hex parse {image.size // 1024} KiB: bootkit load / {peer.split()[0]}",
                              f"bootkit load(path) vs {peer}, alternating, per-round ratio",
                              [a / b for a, b in zip(ours, times[peer])],
                              target=f"<= {target}" if target else None))
        ratio = statistics.median(ours) / statistics.median(times[peer])
        _, q1, q3, lo, hi = spread([a / b for a, b in zip(ours, times[peer])])
        verdict = f"; target <= {target}: {'met' if ratio <= target else 'NOT met'}" if target else ""
        print(f"ratio bootkit / {peer.split()[0]}: {ratio:.3f}  (per-round IQR {q1:.3f}-{q3:.3f}, "
              f"min-max {lo:.3f}-{hi:.3f}{verdict}; lower is better)")
    if args.json:
        emit(records, True)


if __name__ == "__main__":
    main()
