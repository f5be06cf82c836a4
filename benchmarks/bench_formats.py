"""Converter speed and memory: bootkit's HEX writer, HEX parser and UF2 writer side by side
with bincopy, intelhex and a plain struct.pack_into UF2 writer (issue 22 item 2).

One image of --size random bytes at 0x0800_0000 (so the HEX file has 04 records), in one
process, one run: every measured pair is timed alternately, round after round (the order
flips every round, so drift on a shared machine hits both alike), --runs rounds (at least
5).  Printed per pair: each side's median and spread (IQR, min-max) and the ratio of the
medians, with the spread of the per-round ratios, against its target:

  hex write  bootkit iter_hex to a file  / bincopy BinFile.as_ihex(16)     target <= 0.5
  hex parse  bootkit parse_hex           / bincopy BinFile.add_ihex        target <= 0.2
  uf2 write  bootkit write_uf2           / plain struct.pack_into writer   target <= 1.2

and, for reference, against intelhex (write_hex_file, IntelHex(file)) on --peer-size bytes
(intelhex keeps a dict entry per byte: 16 MiB takes it tens of seconds a run), bootkit
re-measured on the same size.  All HEX is written with 16 data bytes a record, as bootkit
writes it.  The peak RSS of a whole `bootkit convert IN.bin OUT.hex` of --size bytes is
measured in a child process (resource.getrusage(RUSAGE_CHILDREN).ru_maxrss of a process
whose only child is the convert), --rss-runs times, against the image size: target < 3x.

Nothing is asserted: this is a measurement, not a test.  --markdown prints the table for
docs/performance.md.

bincopy is a benchmark-only dependency (pip install bincopy; the `bench` extra).

Example:
    python benchmarks/bench_formats.py
    python benchmarks/bench_formats.py --size 4M --runs 7 --markdown
"""

from __future__ import annotations

import argparse
import io
import os
import random
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bincopy
import intelhex

from bootkit.formats import Image, iter_hex, parse_hex, write_uf2
from bootkit.formats.uf2 import UF2_FLAG_FAMILY_ID_PRESENT, UF2_MAGIC_END, UF2_MAGIC_START0, UF2_MAGIC_START1

BASE = 0x0800_0000
RECORD = 16
FAMILY = 0xE48BFF56  # rp2040
TARGETS = {"hex write": 0.5, "hex parse": 0.2, "uf2 write": 1.2, "rss": 3.0}


def parse_size(text: str) -> int:
    """"1048576", "1M", "512K" -> bytes."""
    units = {"K": 1 << 10, "M": 1 << 20}
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text, 0)


def spread(values: list[float]) -> tuple[float, float, float, float, float]:
    """median, first and third quartile, min, max."""
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else (values[0],) * 3
    return statistics.median(values), q1, q3, min(values), max(values)


def timed(func) -> float:
    t0 = time.perf_counter()
    func()
    return time.perf_counter() - t0


def side_by_side(runs: int, ours, peer) -> tuple[list[float], list[float]]:
    """Alternate the two, flipping the order every round."""
    mine: list[float] = []
    theirs: list[float] = []
    for i in range(runs):
        if i % 2:
            theirs.append(timed(peer))
            mine.append(timed(ours))
        else:
            mine.append(timed(ours))
            theirs.append(timed(peer))
    return mine, theirs


def plain_uf2(data: bytes, base: int, family: int) -> bytes:
    """The reference a UF2 writer is measured against: one pre-sized buffer, one
    struct.pack_into of the header, one slice copy and one pack_into of magicEnd a block."""
    count = -(-len(data) // 256)
    out = bytearray(count * 512)
    pack_into = struct.pack_into
    for k in range(count):
        o = k * 512
        pack_into("<8I", out, o, UF2_MAGIC_START0, UF2_MAGIC_START1, UF2_FLAG_FAMILY_ID_PRESENT, base + k * 256,
                  256, k, count, family)
        chunk = data[k * 256:(k + 1) * 256]
        out[o + 32:o + 32 + len(chunk)] = chunk
        if len(chunk) < 256:
            out[o + 32 + len(chunk):o + 288] = b"\xff" * (256 - len(chunk))
        pack_into("<I", out, o + 508, UF2_MAGIC_END)
    return bytes(out)


def write_ours(image: Image, path: Path) -> None:
    with open(path, "wb") as f:
        for piece in iter_hex(image, record_size=RECORD):
            f.write(piece)


def convert_rss(size: int, tmp: Path) -> tuple[float, int]:
    """(seconds, peak RSS in bytes) of one `bootkit convert` of a ``size``-byte binary to HEX,
    in a child process of a fresh process (so RUSAGE_CHILDREN is that child's alone)."""
    src, dst = tmp / "rss.bin", tmp / "rss.hex"
    if not src.exists() or src.stat().st_size != size:
        src.write_bytes(random.Random(7).randbytes(size))
    code = ("import resource, subprocess, sys, time\n"
            "t0 = time.perf_counter()\n"
            "r = subprocess.run([sys.executable, '-m', 'bootkit', 'convert', sys.argv[1], sys.argv[2], '--base', "
            f"'{BASE:#x}'], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)\n"
            "t = time.perf_counter() - t0\n"
            "if r.returncode:\n"
            "    sys.exit(r.stderr.strip() or 'bootkit convert failed')\n"
            "print(t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")
    r = subprocess.run([sys.executable, "-c", code, str(src), str(dst)], capture_output=True, text=True, cwd=tmp)
    if r.returncode:
        raise SystemExit(f"bench_formats: {r.stderr.strip() or 'the convert child failed'}")
    seconds, kib = r.stdout.split()
    return float(seconds), int(kib) * 1024  # Linux reports ru_maxrss in KiB


class Report:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, float, tuple, float | None]] = []

    def pair(self, name: str, ours_label: str, peer_label: str, mine: list[float], theirs: list[float],
             target: float | None) -> None:
        m, t = spread(mine), spread(theirs)
        ratio = m[0] / t[0]
        rounds = spread([a / b for a, b in zip(mine, theirs)])
        met = "" if target is None else f"; target <= {target}: {'met' if ratio <= target else 'NOT met'}"
        print(f"{name}")
        for label, s in ((ours_label, m), (peer_label, t)):
            print(f"  {label:34s} median {s[0] * 1000:9.1f} ms   IQR {s[1] * 1000:9.1f}-{s[2] * 1000:9.1f}   "
                  f"min-max {s[3] * 1000:9.1f}-{s[4] * 1000:9.1f} ms")
        print(f"  ratio {ratio:.3f}  (per-round IQR {rounds[1]:.3f}-{rounds[2]:.3f}, min-max "
              f"{rounds[3]:.3f}-{rounds[4]:.3f}{met})")
        self.rows.append((name, f"{ours_label} / {peer_label}", ratio, rounds, target))

    def markdown(self, header: str) -> str:
        lines = [header, "",
                 "| measurement | ratio (median) | per-round IQR | min-max | target | met |",
                 "|---|---|---|---|---|---|"]
        for name, what, ratio, rounds, target in self.rows:
            lines.append(f"| {name}: {what} | {ratio:.3f} | {rounds[1]:.3f}-{rounds[2]:.3f} | "
                         f"{rounds[3]:.3f}-{rounds[4]:.3f} | {'-' if target is None else f'<= {target}'} | "
                         f"{'-' if target is None else ('yes' if ratio <= target else 'no')} |")
        return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="example: python benchmarks/bench_formats.py --size 16M --runs 5 --markdown",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=parse_size, default=16 << 20, help="image size, K/M suffixes (default 16M)")
    ap.add_argument("--peer-size", type=parse_size, default=1 << 20,
                    help="image size for the intelhex comparisons (default 1M)")
    ap.add_argument("--runs", type=int, default=5, help="rounds per pair, at least 5 (default 5)")
    ap.add_argument("--rss-runs", type=int, default=3, help="bootkit convert processes for the peak RSS (default 3)")
    ap.add_argument("--markdown", action="store_true", help="also print the table for docs/performance.md")
    args = ap.parse_args(argv)
    if args.runs < 5:
        ap.error("--runs must be at least 5 (median and spread)")

    data = random.Random(1).randbytes(args.size)
    image = Image([(BASE, data)])
    small = Image([(BASE, data[:args.peer_size])])
    report = Report()
    print(f"python {sys.version.split()[0]}; bincopy {bincopy.__version__}; {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.2f}; image {args.size} bytes at 0x{BASE:08X}; {args.runs} rounds a pair, alternating")
    with tempfile.TemporaryDirectory(prefix="bench-formats-") as tmpname:
        tmp = Path(tmpname)
        ours_path, peer_path = tmp / "ours.hex", tmp / "peer.hex"

        # -- HEX write against bincopy, the whole size
        peer = bincopy.BinFile()
        peer.add_binary(data, address=BASE)
        mine, theirs = side_by_side(args.runs, lambda: write_ours(image, ours_path),
                                    lambda: peer_path.write_text(peer.as_ihex(RECORD)))
        report.pair(f"hex write {args.size >> 20} MiB", "bootkit iter_hex -> file", "bincopy as_ihex -> file",
                    mine, theirs, TARGETS["hex write"])
        text = ours_path.read_bytes()
        if parse_hex(text) != image:
            raise SystemExit("bench_formats: bootkit's HEX does not read back as the image: benchmark invalid")

        # -- HEX parse against bincopy
        def bincopy_parse():
            bincopy.BinFile().add_ihex(text.decode("ascii"))

        mine, theirs = side_by_side(args.runs, lambda: parse_hex(text), bincopy_parse)
        report.pair(f"hex parse {args.size >> 20} MiB", "bootkit parse_hex", "bincopy add_ihex", mine, theirs,
                    TARGETS["hex parse"])

        # -- UF2 write against a plain struct.pack_into writer
        if write_uf2(image, family=FAMILY) != plain_uf2(data, BASE, FAMILY):
            raise SystemExit("bench_formats: the two UF2 writers disagree: benchmark invalid")
        mine, theirs = side_by_side(args.runs, lambda: write_uf2(image, family=FAMILY),
                                    lambda: plain_uf2(data, BASE, FAMILY))
        report.pair(f"uf2 write {args.size >> 20} MiB", "bootkit write_uf2", "plain struct.pack_into", mine, theirs,
                    TARGETS["uf2 write"])

        # -- against intelhex, on --peer-size
        ih = intelhex.IntelHex()
        ih.puts(BASE, data[:args.peer_size])

        def intelhex_write():
            out = io.StringIO()
            ih.write_hex_file(out, byte_count=RECORD)

        mine, theirs = side_by_side(args.runs, lambda: write_ours(small, ours_path), intelhex_write)
        report.pair(f"hex write {args.peer_size >> 10} KiB", "bootkit iter_hex -> file", "intelhex write_hex_file",
                    mine, theirs, None)
        small_text = ours_path.read_bytes()
        small_str = small_text.decode("ascii")
        mine, theirs = side_by_side(args.runs, lambda: parse_hex(small_text),
                                    lambda: intelhex.IntelHex(io.StringIO(small_str)))
        report.pair(f"hex parse {args.peer_size >> 10} KiB", "bootkit parse_hex", "intelhex IntelHex", mine, theirs,
                    None)

        # -- peak RSS of a whole bootkit convert bin -> hex
        found = [convert_rss(args.size, tmp) for _ in range(args.rss_runs)]
        peaks = [rss for _, rss in found]
        peak = statistics.median(peaks)
        ratio = peak / args.size
        print(f"bootkit convert {args.size >> 20} MiB bin -> hex, {args.rss_runs} processes: peak RSS median "
              f"{peak / 2**20:.1f} MiB (min-max {min(peaks) / 2**20:.1f}-{max(peaks) / 2**20:.1f}) = {ratio:.2f}x "
              f"the image (target < {TARGETS['rss']}: {'met' if ratio < TARGETS['rss'] else 'NOT met'}); "
              f"wall time median {statistics.median(t for t, _ in found):.2f} s")
    if args.markdown:
        print()
        print(report.markdown(f"Measured with `python benchmarks/bench_formats.py --size {args.size >> 20}M "
                              f"--runs {args.runs}` ({args.runs} rounds a pair, alternating; ratio = bootkit / peer, "
                              f"lower is better; intelhex rows on {args.peer_size >> 10} KiB, no target)."))
        print(f"| bootkit convert {args.size >> 20} MiB bin -> hex: peak RSS / image size | {ratio:.2f} | - | "
              f"{min(peaks) / args.size:.2f}-{max(peaks) / args.size:.2f} | < {TARGETS['rss']} | "
              f"{'yes' if ratio < TARGETS['rss'] else 'no'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
