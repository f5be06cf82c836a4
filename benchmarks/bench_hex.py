"""Intel HEX parse speed: bootkit's own parser against the intelhex library.

Builds an image of --size bytes in a few segments above 64 KiB (so the
file has 04 extended linear address records), writes it as HEX to a
temporary file, and times ``intelhex.IntelHex(path)`` and
``bootkit.formats.load(path)`` (time.perf_counter, best of --repeat).
The target for bootkit is at most 0.2 x intelhex's time.  Nothing is
asserted: this is a measurement, not a test.

Example:
    python benchmarks/bench_hex.py --size 4M
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time

from intelhex import IntelHex

from bootkit.formats import Image, load, write_hex

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


def best_of(repeat: int, func) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        func()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Time bootkit's Intel HEX parser against intelhex.IntelHex (target: ratio <= 0.2).",
        epilog="example: python benchmarks/bench_hex.py --size 4M --repeat 3",
    )
    parser.add_argument("--size", type=parse_size, default=1 << 20,
                        help="image size in bytes, K/M suffixes allowed (default 1M)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per parser; the best is reported (default 5)")
    args = parser.parse_args(argv)

    image = build_image(args.size)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.hex")
        with open(path, "w") as f:
            f.write(write_hex(image))
        lines = sum(1 for _ in open(path))
        print(f"image: {image.size} bytes in {len(image.segments)} segments, "
              f"0x{image.start:08X}..0x{image.end:08X}; file: {os.path.getsize(path)} bytes, {lines} lines")
        if load(path) != image:
            raise SystemExit("bootkit parsed a different image: benchmark invalid")
        t_intelhex = best_of(args.repeat, lambda: IntelHex(path))
        t_bootkit = best_of(args.repeat, lambda: load(path))
    ratio = t_bootkit / t_intelhex
    print(f"intelhex IntelHex(path): {t_intelhex * 1000:9.1f} ms")
    print(f"bootkit  load(path):     {t_bootkit * 1000:9.1f} ms")
    print(f"ratio bootkit/intelhex:  {ratio:9.3f}   (target <= {TARGET}, lower is better)")


if __name__ == "__main__":
    main()
