"""Bridged over direct flash time to the same kind of back-end (issue 23 item 5; target <= 1.5).

The back-end is `bootkit serve dfu --dialect dfuse` of a simulated stm32f411 on USB/IP, in
a child process.  Direct: this process flashes it with the DFU host client (DfuSe: erase
the sectors, download, upload to verify, leave).  Bridged: a second child runs
`bootkit serve dfu --dialect dfuse --target usbip://127.0.0.1:PORT`, a DfuSe front whose
memory is such a back-end, reached through the same DFU host client
(bootkit.classes.dfu.memory.DfuseMemory); this process flashes the front the same way.
The front is the same personality as the back-end, so the ratio is the bridge's own
cost: every block crosses two USB/IP links, and the front answers its host only after
the back-end has answered it.  --front msc adds the UF2 drive in front (a drop: FAT on
SCSI, CURRENT.UF2 read back; its own 1-s leave delay is part of a drop, shown apart).

A USB/IP server lets one client import a device at a time, and the front holds its
back-end for as long as it runs: direct and bridged flashes go to two back-end
processes started alike.  Rounds alternate direct and bridged (their order reversed
every other round) so load from other processes hits both; printed: the medians, IQR,
and the median and min-max of the per-round ratios.  Each flashed image is checked
against the back-end's image file once the back-ends stop (outside the timing).
Nothing is asserted: a measurement, not a test.

With ``--json`` the last line is the records (run_all.record: name, compares, median,
spread, runs, target, met) that benchmarks/run_all.py reads.

Example:
    python benchmarks/bench_bridge.py --runs 7 --size 262144
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from run_all import emit, record  # noqa: E402

SERVING = re.compile(r"^serving .* on 127\.0\.0\.1:(\d+)\. Ctrl-C to stop\.$")
TARGET = 1.5


def serve(*args: str) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-m", "bootkit", "serve", *args, "--transport", "usbip",
                             "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        m = SERVING.match(line.strip())
        if m:
            return proc, int(m[1])
    raise SystemExit(f"serve {' '.join(args)} did not start")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.communicate(timeout=60)


def quartiles(xs: list[float]) -> tuple[float, float]:
    if len(xs) < 4:
        return min(xs), max(xs)
    q = statistics.quantiles(xs, n=4)
    return q[0], q[2]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7, help="rounds (at least 5)")
    ap.add_argument("--size", type=int, default=256 * 1024, help="image bytes (default 256 KiB)")
    ap.add_argument("--front", choices=("dfu", "msc"), default="dfu")
    ap.add_argument("--json", action="store_true", help="last line: the records, for run_all.py")
    args = ap.parse_args(argv)
    args.runs = max(5, args.runs)

    from bootkit.classes.dfu import host as dfu_host
    from bootkit.formats.image import Image
    from bootkit.memory import get_chip
    from bootkit.transports import usbip_client

    chip = get_chip("stm32f411")
    rng = random.Random(23)
    data = bytes(rng.getrandbits(8) for _ in range(args.size))
    image = Image([(chip.flash_start, data)])
    tmp = Path(tempfile.mkdtemp(prefix="bench_bridge_"))
    direct_back, direct_port = serve("dfu", "--chip", "stm32f411", "--dialect", "dfuse", "--image",
                                     str(tmp / "direct.bin"))
    bridged_back, bridged_back_port = serve("dfu", "--chip", "stm32f411", "--dialect", "dfuse", "--image",
                                            str(tmp / "bridged.bin"))
    front_args = ("dfu", "--dialect", "dfuse") if args.front == "dfu" else ("msc",)
    front, front_port = serve(*front_args, "--chip", "stm32f411", "--target",
                              f"usbip://127.0.0.1:{bridged_back_port}")

    def flash_direct() -> float:
        t = time.perf_counter()
        dfu_host.flash(image, usbip_client.UsbipBackend("127.0.0.1", direct_port), dialect="dfuse", progress=False)
        return time.perf_counter() - t

    def drive_back() -> None:
        """After a drop the drive left as the application: serve's SIGUSR2 (the "magic" entry
        event) brings the bootloader back; wait, outside the timing, until the drive is listed."""
        import usb.core

        front.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            devices = usb.core.find(find_all=True, backend=usbip_client.UsbipBackend("127.0.0.1", front_port))
            if any(i.bInterfaceClass == 8 for d in devices for c in d for i in c):
                return
            time.sleep(0.05)
        raise SystemExit("the UF2 drive did not come back after SIGUSR2")

    def flash_bridged() -> float:
        if args.front == "msc":
            drive_back()
        backend = usbip_client.UsbipBackend("127.0.0.1", front_port)
        t = time.perf_counter()
        if args.front == "dfu":
            dfu_host.flash(image, backend, dialect="dfuse", progress=False)
        else:
            from bootkit.classes.msc import host as msc_host

            msc_host.flash(image, backend, chip=chip, progress=False, again=0.0)
        return time.perf_counter() - t

    directs: list[float] = []
    bridgeds: list[float] = []
    try:
        flash_direct(), flash_bridged()  # warm-up: imports, first connections (not measured)
        for i in range(args.runs):
            order = (flash_direct, flash_bridged) if i % 2 == 0 else (flash_bridged, flash_direct)
            times = {f: f() for f in order}
            directs.append(times[flash_direct])
            bridgeds.append(times[flash_bridged])
    finally:
        stop(front)
        stop(bridged_back)
        stop(direct_back)
    for name in ("direct.bin", "bridged.bin"):
        flash = (tmp / name).read_bytes()
        if flash[:len(data)] != data:
            raise SystemExit(f"{name}: the back-end's image does not hold the flashed data")
    ratios = [b / d for b, d in zip(bridgeds, directs)]
    print(f"bridge: {args.front} front -> DfuSe stm32f411 over USB/IP, {args.size} bytes, {args.runs} rounds")
    for name, xs in (("direct", directs), ("bridged", bridgeds)):
        lo, hi = quartiles(xs)
        print(f"  {name:8} median {statistics.median(xs):7.3f} s  IQR {lo:.3f}-{hi:.3f}  "
              f"({args.size / statistics.median(xs) / 1024:.0f} KiB/s)")
    print(f"  bridged/direct: median {statistics.median(ratios):.2f}x, min-max {min(ratios):.2f}-{max(ratios):.2f}x "
          f"(target <= {TARGET}x{'' if args.front == 'dfu' else '; a drop includes the drive leave delay'})")
    front_name = "DfuSe front" if args.front == "dfu" else "UF2 drive front (a drop, its leave delay included)"
    emit([record(f"bridge {args.size // 1024} KiB: {front_name} -> DfuSe over USB/IP, bridged / direct",
                 "the same DFU host flash of a DfuSe stm32f411 on USB/IP, through a front serving it "
                 "with --target usbip:// vs straight to it, per alternating round",
                 ratios, target=f"<= {TARGET}" if args.front == "dfu" else None)], args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
