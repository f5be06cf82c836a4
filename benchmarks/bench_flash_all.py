"""`bootkit flash --all` against N emulated DfuSe devices on one USB/IP server, beside the
same flash of ONE device, measured side by side in one run (issue 21 item 4: "all flashed
concurrently, wall time under 3x one device's").

Each round flashes one device (`flash FILE --via dfu --usbip ... --serial S`) and all N
(`flash FILE --all --usbip ...`) through bootkit.cli.main in this process, in an order reversed
every other round; --runs rounds after one unmeasured warm-up.  The USB/IP server and its N
emulators run in a child process (--server-here: on threads of this one, as
tests/test_flash_all.py does): real devices do their work beside the host, and with every
emulator on this process's interpreter the measurement would be of one GIL, not of --all.
--realtime makes the emulated flash take the chip's erase and program times, as real devices
do: then the devices' waits overlap; in fast mode (the default) every millisecond is CPU, and
on a 2-core machine 8 flashes cannot overlap much.  Printed: median, IQR and min-max of
each, and the ratio all/one (ratio of the medians, and the spread of the per-round ratios).
Nothing is asserted: this is a measurement.  With ``--json`` the last line is the
run_all record of the all/one ratio (per-round ratios: median and min-max; target < 3),
which benchmarks/run_all.py reads.

Example:
    python benchmarks/bench_flash_all.py
    python benchmarks/bench_flash_all.py --devices 8 --runs 9 --chip stm32f411
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))

from bootkit.cli import main  # noqa: E402
sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_all import emit, record  # noqa: E402
from bootkit.emulator import Emulator  # noqa: E402
from bootkit.memory import get_chip  # noqa: E402
from bootkit.transports.usbip import UsbipServer  # noqa: E402


def spread(values: list[float]) -> str:
    q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return (f"median {statistics.median(values) * 1000:8.1f} ms   IQR {q[0] * 1000:8.1f}-{q[2] * 1000:8.1f} ms   "
            f"min-max {min(values) * 1000:8.1f}-{max(values) * 1000:8.1f} ms")


def timed(argv: list[str]) -> float:
    out = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = main(argv)
    seconds = time.perf_counter() - t0
    if code != 0:
        raise SystemExit(f"bootkit {' '.join(argv)} exited {code}: {out.getvalue()}")
    return seconds


SERVER = """
import sys, threading
from bootkit.emulator import Emulator
from bootkit.memory import get_chip
from bootkit.transports.usbip import UsbipServer
ems = [Emulator(get_chip(sys.argv[1]), "dfu", options={"serial": f"BENCH{i:02d}"}, realtime=sys.argv[3] == "1")
       for i in range(int(sys.argv[2]))]
server = UsbipServer([em.target for em in ems], ("127.0.0.1", 0), log=None).start()
print(server.port, flush=True)
sys.stdin.read()  # until the benchmark closes our stdin
server.close()
"""


class _Child:
    """The server in a child process: its port from its first line; closing stdin stops it."""

    def __init__(self, chip: str, devices: int, realtime: bool):
        import subprocess

        self.proc = subprocess.Popen([sys.executable, "-c", SERVER, chip, str(devices), "1" if realtime else "0"],
                                     stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, cwd=HERE)
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


class _Here:
    def __init__(self, chip: str, devices: int, realtime: bool):
        self.ems = [Emulator(get_chip(chip), "dfu", options={"serial": f"BENCH{i:02d}"}, realtime=realtime)
                    for i in range(devices)]
        self.server = UsbipServer([em.target for em in self.ems], ("127.0.0.1", 0), log=None).start()
        self.port = self.server.port

    def close(self) -> None:
        self.server.close()
        for em in self.ems:
            em.close()


def run(devices: int, runs: int, chip: str, sample: str, here: bool = False, realtime: bool = False,
        as_json: bool = False) -> None:
    server = (_Here if here else _Child)(chip, devices, realtime)
    address = f"127.0.0.1:{server.port}"
    one = ["flash", sample, "--via", "dfu", "--usbip", address, "--serial", "BENCH00", "--no-leave"]
    every = ["flash", sample, "--all", "--json", "--usbip", address, "--no-leave"]
    try:
        timed(one), timed(every)  # warm-up: imports, first connections
        t_one, t_all, ratios = [], [], []
        for r in range(runs):
            order = [(one, t_one), (every, t_all)]
            for argv, into in (order if r % 2 == 0 else order[::-1]):
                into.append(timed(argv))
            ratios.append(t_all[-1] / t_one[-1])
    finally:
        server.close()
    print(f"python {sys.version.split()[0]}; {runs} rounds; {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.2f}; {chip}, {sample}; server {'in this process' if here else 'in a child process'}, "
          f"{'real-time' if realtime else 'fast'} flash timing")
    print("one device (flash --via dfu --serial BENCH00)")
    print("  " + spread(t_one))
    print(f"all {devices} devices (flash --all)")
    print("  " + spread(t_all))
    q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    print(f"  ratio all/one: {statistics.median(t_all) / statistics.median(t_one):.2f}  (per-round IQR "
          f"{q[0]:.2f}-{q[2]:.2f}, min-max {min(ratios):.2f}-{max(ratios):.2f}; target < 3.0)")
    if as_json:
        timing = "the chips' real erase/program times" if realtime else "fast mode: all CPU"
        emit([record(f"flash --all of {devices} {chip} over USB/IP ({timing}): wall time / one device's",
                     "bootkit flash --all / bootkit flash of one device, per round", ratios, target="< 3")], True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=8)
    ap.add_argument("--runs", type=int, default=7, help="measured rounds (at least 5)")
    ap.add_argument("--chip", default="stm32f411")
    ap.add_argument("--sample", default=str(HERE / "examples" / "firmware" / "sample-stm32f411.hex"))
    ap.add_argument("--server-here", action="store_true", help="the server and emulators on threads of this process")
    ap.add_argument("--realtime", action="store_true",
                    help="the emulated flash takes the chip's program and erase times (as a real device does); "
                         "default: fast mode, where all the time is the host's and the server's CPU")
    ap.add_argument("--json", action="store_true", help="last line: the run_all record (JSON)")
    a = ap.parse_args()
    run(a.devices, max(5, a.runs), a.chip, a.sample, a.server_here, a.realtime, a.json)
