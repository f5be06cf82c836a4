"""avrdude's write time next to bootkit's CDC host client, same image, same pty.

Both write and verify a 28 KiB image (the whole ATmega32U4 application
section under a 4 KiB bootloader) into the AVR109 engine served on a
pseudo-terminal; the ratio bootkit/avrdude is printed (target: 1.0 or less).
Nothing is asserted about time.

Example:
    python benchmarks/bench_cdc.py --runs 3
    python benchmarks/bench_cdc.py --kib 16 --chip atmega32u4
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

from bootkit.classes.cdc import host
from bootkit.classes.cdc.avr109 import Avr109Engine
from bootkit.formats import save
from bootkit.memory import SimulatedFlash, get_chip
from bootkit.samples import sample_image
from bootkit.transports.pty import pty_server


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="example: python benchmarks/bench_cdc.py --runs 3",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kib", type=int, default=28, help="image size in KiB (default 28)")
    ap.add_argument("--chip", default="atmega32u4", help="chip (default atmega32u4; avrdude part m32u4)")
    ap.add_argument("--part", default=None, help="avrdude -p part (default from the chip alias)")
    ap.add_argument("--runs", type=int, default=3, help="runs of each, the median is reported (default 3)")
    args = ap.parse_args(argv)

    chip = get_chip(args.chip)
    part = args.part or (chip.aliases[0] if chip.aliases else chip.name)
    image = sample_image(chip, code_size=args.kib * 1024, data_size=0, data_offset=0)
    image = image.crop(image.start, image.start + args.kib * 1024)
    avrdude = shutil.which("avrdude")
    times = {"bootkit": [], "avrdude": []}
    with tempfile.TemporaryDirectory() as tmp:
        fw = Path(tmp) / "fw.hex"
        save(image, fw)
        for _ in range(args.runs):
            mem = SimulatedFlash(chip)
            with pty_server(Avr109Engine(mem)) as srv:
                t0 = time.perf_counter()
                host.flash(image, port=srv.slave_path, chip=chip, progress=False)
                times["bootkit"].append(time.perf_counter() - t0)
                if avrdude:
                    t0 = time.perf_counter()
                    r = subprocess.run([avrdude, "-c", "avr109", "-p", part, "-P", srv.slave_path, "-b", "57600",
                                        "-q", "-q", "-U", f"flash:w:{fw}:i"], capture_output=True, text=True)
                    times["avrdude"].append(time.perf_counter() - t0)
                    if r.returncode:
                        print(r.stderr, file=sys.stderr)
                        return 1
    b = statistics.median(times["bootkit"])
    print(f"image: {image.size} bytes ({args.kib} KiB) for {chip.name}, write + verify over a pty, "
          f"median of {args.runs}")
    print(f"  bootkit host client: {b:.3f} s  ({image.size / 1024 / b:.0f} KiB/s)")
    if times["avrdude"]:
        a = statistics.median(times["avrdude"])
        print(f"  avrdude -c avr109:   {a:.3f} s  ({image.size / 1024 / a:.0f} KiB/s, process start included)")
        print(f"  ratio bootkit/avrdude: {b / a:.2f} (target 1.0 or less)")
    else:
        print("  avrdude not installed: no comparison (apt-get install avrdude)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
