"""bootkit's CDC (AVR109) host against avrdude on a pty, as a per-KiB slope.

Both tools run as subprocesses (``bootkit flash FILE --via cdc --port PTY`` and
``avrdude -c avr109``), so each pays one process start, and write + verify the
same HEX into the AVR109 engine served on a pseudo-terminal in this process (a
fresh pty and flash for every invocation, so neither tool finds the other's
data).  Each is timed with two image sizes; the per-KiB cost is
(t_large - t_small) / (KiB_large - KiB_small), so what does not depend on the
size (process start-up, imports, sign-on, chip erase) cancels out.  Runs
alternate the order of the tools.  Printed: the median and spread of each
tool's per-KiB cost and of the per-run ratio bootkit/avrdude (target 1.0 or
less).  The flash is checked after every invocation.  Nothing is asserted
about time.  (benchmarks/bench_avr_serial.py does the same for the STK500 v2
and Optiboot paths.)

Example:
    python benchmarks/bench_cdc.py --runs 5
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run_all import emit, record  # noqa: E402

from bootkit.classes.cdc.avr109 import Avr109Engine  # noqa: E402
from bootkit.formats import save  # noqa: E402
from bootkit.memory import SimulatedFlash, get_chip  # noqa: E402
from bootkit.samples import sample_image  # noqa: E402
from bootkit.transports.pty import pty_server  # noqa: E402


def _image(chip, kib: int):
    image = sample_image(chip, code_size=kib * 1024, data_size=0, data_offset=0)
    return image.crop(image.start, image.start + kib * 1024)


def _timed(tool: str, chip, part: str, fw: Path, image) -> float:
    mem = SimulatedFlash(chip)
    with pty_server(Avr109Engine(mem)) as srv:
        if tool == "bootkit":
            # --no-leave: without it the command then watches 5 s for the port to come back as the
            # application (measured here: 5.5 s a run instead of 0.5 s); that cost does not depend on the
            # size, so the slope cancels it, but its noise under load hid the per-KiB cost entirely
            cmd = [sys.executable, "-m", "bootkit", "flash", str(fw), "--via", "cdc", "--dialect", "lufa",
                   "--chip", chip.name, "--port", srv.slave_path, "--no-progress", "--no-leave"]
        else:
            cmd = [shutil.which("avrdude") or "avrdude", "-c", "avr109", "-p", part, "-P", srv.slave_path,
                   "-b", "57600", "-q", "-q", "-U", f"flash:w:{fw}:i"]
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        seconds = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}): {(r.stderr or r.stdout)[-2000:]}")
    if mem.read(image.start, image.size) != image.tobytes():
        raise SystemExit(f"{tool}: the device does not hold the image afterwards")
    return seconds


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="example: python benchmarks/bench_cdc.py --runs 5",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", type=int, default=8, help="small image in KiB (default 8)")
    ap.add_argument("--large", type=int, default=112, help="large image in KiB (default 112)")
    ap.add_argument("--chip", default="at90usb1286", help="chip (default at90usb1286: the size difference, not the noise of a process start, dominates)")
    ap.add_argument("--runs", type=int, default=7, help="runs, at least 5 (default 7)")
    ap.add_argument("--json", action="store_true", help="last line: the records, for run_all.py")
    args = ap.parse_args(argv)
    if args.runs < 5:
        ap.error("--runs: at least 5 (a median and a spread of fewer say little)")
    if not shutil.which("avrdude"):
        print("bench_cdc: avrdude not installed: nothing to compare with (apt-get install avrdude)", file=sys.stderr)
        return 1
    chip = get_chip(args.chip)
    part = chip.aliases[0] if chip.aliases else chip.name
    tools = ["bootkit", "avrdude"]
    per_kib: dict[str, list[float]] = {t: [] for t in tools}
    with tempfile.TemporaryDirectory() as tmp:
        images = {kib: _image(chip, kib) for kib in (args.small, args.large)}
        files = {}
        for kib, image in images.items():
            files[kib] = Path(tmp) / f"fw{kib}.hex"
            save(image, files[kib])
        for run in range(args.runs):
            order = tools if run % 2 == 0 else tools[::-1]
            t = {(tool, kib): _timed(tool, chip, part, files[kib], images[kib])
                 for kib in (args.small, args.large) for tool in order}
            for tool in tools:
                per_kib[tool].append((t[tool, args.large] - t[tool, args.small]) / (args.large - args.small))
    for tool in tools:
        print(f"  {tool} per added KiB: median {statistics.median(per_kib[tool]) * 1000:.1f} ms, "
              f"spread {min(per_kib[tool]) * 1000:.1f}-{max(per_kib[tool]) * 1000:.1f} ms")
    title = f"cdc/lufa (AVR109) {chip.name} {args.small} and {args.large} KiB"
    records = [record(f"{title}: {tool} per added KiB", f"{tool}, a subprocess on a pty: (t_large - t_small) per KiB",
                      [v * 1000 for v in per_kib[tool]], unit="ms/KiB") for tool in tools]
    ratio = record(f"{title}: bootkit / avrdude per added KiB",
                   "bootkit flash vs avrdude -c avr109, both subprocesses on a pty, (t_large - t_small) per KiB, per run",
                   [b / a for b, a in zip(per_kib["bootkit"], per_kib["avrdude"]) if a > 0] or [0.0],
                   target="<= 1.0")
    if min(min(per_kib["bootkit"]), min(per_kib["avrdude"])) <= 0:
        # a run where the large image took less time than the small one: the cost per KiB is below the
        # noise of starting a process at this load, and no verdict can be drawn from it
        ratio["met"] = None
        ratio["note"] = "not resolved: a per-KiB cost at or below 0 in some run (start-up noise larger than it)"
        print(f"  {ratio['note']}")
    emit(records + [ratio], args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
