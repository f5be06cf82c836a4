"""Peak resident memory of serving a 2 MiB chip, for the whole process.

A child process emulates an RP2040 (2 MiB of flash) with the DFU
personality on the in-process bus, flashes a full 2 MiB image into it
through the host client, reads it back and writes the image file; the
parent prints the child's peak resident set (ru_maxrss), next to the same
process doing nothing but importing bootkit.  Target: under 60 MiB.
Median and spread of --runs child processes of each (at least 5).

example:
  python benchmarks/bench_memory.py --runs 5
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from run_all import emit, record  # noqa: E402

CHILD = r"""
import json, resource, sys, tempfile, os
mode = sys.argv[1]
import bootkit.cli  # the whole command line is loaded, as `bootkit serve` would
if mode == "serve":
    from bootkit.classes.dfu import host
    from bootkit.emulator import Emulator
    from bootkit.samples import sample_image
    from bootkit.transports.virtual import VirtualBus, get_backend
    size = 2 * 1024 * 1024
    image = sample_image("rp2040", size, 0, 0).crop(0x10000000, 0x10000000 + size)
    bus = VirtualBus()
    with tempfile.TemporaryDirectory() as d:
        em = Emulator("rp2040", "dfu", image=os.path.join(d, "flash.bin"), options={"dialect": "dfu", "transfer_size": 4096})
        em.attach(bus)
        host.flash(image, get_backend(bus), dialect="dfu", chip="rp2040", progress=False)
        assert em.memory.read(0x10000000, size) == image.tobytes()
        em.close()
print(json.dumps({"maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def peak(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["maxrss_kib"] / 1024


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5, help="child processes of each, at least 5 (default 5)")
    ap.add_argument("--json", action="store_true", help="last line: the records, for run_all.py")
    args = ap.parse_args(argv)
    if args.runs < 5:
        ap.error("--runs: at least 5 (a median and a spread of fewer say little)")
    base, served = [], []
    for _ in range(args.runs):
        base.append(peak("import"))
        served.append(peak("serve"))
    print("peak resident memory (whole process, ru_maxrss)")
    print(f"  python + bootkit imported:               {statistics.median(base):6.1f} MiB")
    print(f"  serving a 2 MiB RP2040, flashed + read:  {statistics.median(served):6.1f} MiB   target < 60 MiB")
    emit([record("peak RSS serving a 2 MiB RP2040 (DFU, flashed + read, image file written)",
                 "ru_maxrss of the whole child process", served, unit="MiB", target="< 60"),
          record("growth of the peak RSS for the 2 MiB chip over bootkit imported alone",
                 "ru_maxrss of the serving child minus that of an importing one, per run",
                 [s - b for s, b in zip(served, base)], unit="MiB")], args.json)


if __name__ == "__main__":
    main()
