"""bootkit's command line next to avrdude on the same pty and the same image: the STK500 v2
ISP programmer path and the Optiboot bootloader path, as a ratio of per-KiB cost.

Both tools run as subprocesses (``bootkit flash FILE --port PTY`` and ``avrdude -c stk500v2`` /
``-c arduino``), writing and verifying the same HEX into the same emulated device, served on
a pseudo-terminal in this process (a fresh one for every run).  Each is timed with two image
sizes; the per-KiB cost is (t_large - t_small) / (KiB_large - KiB_small), so what does not
depend on the size (process start-up, imports, sign-on, chip erase) cancels out.  Runs
alternate between the tools so a loaded machine slows both alike; the median and the spread
(min-max) of each tool's per-KiB cost and of the per-run ratio bootkit/avrdude are printed.
Every figure printed is measured here; nothing is asserted about time.

Example:
    python benchmarks/bench_avr_serial.py --runs 5
    python benchmarks/bench_avr_serial.py --path optiboot --small 4 --large 64 --runs 7
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bootkit.emulator import Emulator
from bootkit.formats import save
from bootkit.memory import get_chip
from bootkit.samples import sample_image
from bootkit.transports.pty import pty_server


@dataclass(frozen=True)
class Route:
    """One way of flashing an AVR over a serial line, as both tools name it."""

    name: str
    personality: str
    dialect: str
    avrdude: str  # avrdude -c
    chip: str
    part: str  # avrdude -p


PATHS = {
    # the largest parts each path serves, so the size difference (not the noise of a process
    # start) dominates the per-KiB figure: 8 and 120 KiB fit both (Optiboot keeps 1 KiB at the top)
    "stk500v2": Route("STK500 v2 ISP programmer", "isp", "stk500v2", "stk500v2", "atmega2560", "m2560"),
    "optiboot": Route("Optiboot bootloader", "cdc", "optiboot", "arduino", "atmega1284p", "m1284p"),
}


def _image(chip, kib: int):
    image = sample_image(chip, code_size=kib * 1024, data_size=0, data_offset=0)
    return image.crop(image.start, image.start + kib * 1024)


def _bootkit(path: Route, fw: Path, port: str) -> list[str]:
    return [sys.executable, "-m", "bootkit", "flash", str(fw), "--via", path.personality, "--dialect", path.dialect,
            "--chip", path.chip, "--port", port, "--no-progress"]


def _avrdude(path: Route, fw: Path, port: str) -> list[str]:
    return [shutil.which("avrdude") or "avrdude", "-c", path.avrdude, "-p", path.part, "-P", port, "-b", "115200",
            "-q", "-q", "-U", f"flash:w:{fw}:i"]


def _timed(path: Route, tool: str, fw: Path, image) -> float:
    """One write + verify of ``fw`` by ``tool`` into a fresh emulated device; the seconds the
    subprocess took.  The device's flash is compared with the image afterwards, so a run
    that did not really flash is an error, not a fast figure."""
    chip = get_chip(path.chip)
    em = Emulator(chip, path.personality, options={"dialect": path.dialect})
    try:
        with pty_server(em) as srv:
            cmd = (_bootkit if tool == "bootkit" else _avrdude)(path, fw, srv.slave_path)
            t0 = time.perf_counter()
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            seconds = time.perf_counter() - t0
        if r.returncode:
            raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}):\n{(r.stderr or r.stdout)[-2000:]}")
        got = em.memory.read(image.start, image.size)
        if got != image.tobytes(image.start, image.end):
            raise SystemExit(f"{tool} ({path.name}): the device does not hold the image afterwards")
    finally:
        em.close()
    return seconds


def _spread(values: list[float], fmt: str) -> str:
    return (f"median {format(statistics.median(values), fmt)}, spread {format(min(values), fmt)}"
            f"-{format(max(values), fmt)}")


def bench(path: Route, small: int, large: int, runs: int, tools: list[str]) -> dict[str, list[float]]:
    chip = get_chip(path.chip)
    per_kib: dict[str, list[float]] = {t: [] for t in tools}
    with tempfile.TemporaryDirectory() as tmp:
        images = {kib: _image(chip, kib) for kib in (small, large)}
        files = {}
        for kib, image in images.items():
            files[kib] = Path(tmp) / f"fw{kib}.hex"
            save(image, files[kib])
        for run in range(runs):
            seconds: dict[tuple[str, int], float] = {}
            order = tools if run % 2 == 0 else tools[::-1]  # neither tool always goes first
            for kib in (small, large):
                for tool in order:
                    seconds[tool, kib] = _timed(path, tool, files[kib], images[kib])
            for tool in tools:
                per_kib[tool].append((seconds[tool, large] - seconds[tool, small]) / (large - small))
            print(f"  run {run + 1}: " + ", ".join(
                f"{tool} {seconds[tool, small]:.2f} s / {seconds[tool, large]:.2f} s" for tool in tools),
                flush=True)
    return per_kib


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="example: python benchmarks/bench_avr_serial.py --runs 5",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--path", choices=(*PATHS, "both"), default="both", help="which path (default: both)")
    ap.add_argument("--small", type=int, default=8, help="small image in KiB (default 8)")
    ap.add_argument("--large", type=int, default=120, help="large image in KiB (default 120)")
    ap.add_argument("--runs", type=int, default=5, help="runs of each tool and size (default 5, at least 5)")
    args = ap.parse_args(argv)
    if args.runs < 5:
        ap.error("--runs: at least 5 (a median and a spread of fewer say little)")
    if not 0 < args.small < args.large:
        ap.error("--small must be smaller than --large (and above 0)")
    tools = ["bootkit", "avrdude"] if shutil.which("avrdude") else ["bootkit"]
    for key in (PATHS if args.path == "both" else (args.path,)):
        path = PATHS[key]
        print(f"{path.name}: bootkit flash --via {path.personality} --dialect {path.dialect} vs avrdude -c "
              f"{path.avrdude} -p {path.part}; {args.small} and {args.large} KiB HEX, write + verify over a pty, "
              f"{args.runs} runs", flush=True)
        per_kib = bench(path, args.small, args.large, args.runs, tools)
        for tool in tools:
            print(f"  {tool:8s} per KiB: {_spread([v * 1000 for v in per_kib[tool]], '.1f')} ms/KiB")
        if "avrdude" in per_kib:
            ratios = [b / a for b, a in zip(per_kib["bootkit"], per_kib["avrdude"]) if a > 0]
            if ratios:
                print(f"  ratio bootkit/avrdude per KiB: {_spread(ratios, '.2f')} (per run, same load)")
            else:
                print("  ratio: avrdude's per-KiB cost was not above 0 in any run")
        else:
            print("  avrdude not installed: no comparison (apt-get install avrdude)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
