"""Printer-path throughput on the in-process bus, as a ratio to the full-speed wire time.

A whole application image printed as Intel HEX into an emulated printer
bootloader (fast mode): the host client's bulk writes, the device's
streaming HEX parse and page programming, then SOFT_RESET, GET_PORT_STATUS
and the status line.  "ours" is the wall-clock time of that print path
(the HEX text prepared beforehand); "wire" is the USB full-speed time of
the bulk OUT transactions carrying that HEX text (64-byte packets, per
transaction: token 35 bits + data 8+8+8n+16+3 + handshake 19).  Target:
ours/wire 0.1 or less.  Throughput is in binary (image) bytes per second.
The last column adds the image-to-HEX conversion (intelhex) for reference.

example:
  python benchmarks/bench_printer.py --repeat 5
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from usbwire import bulk_bits, seconds  # noqa: E402

from bootkit.classes.printer import host  # noqa: E402
from bootkit.emulator import Emulator  # noqa: E402
from bootkit.formats import write_hex  # noqa: E402
from bootkit.memory import get_chip  # noqa: E402
from bootkit.samples import sample_image  # noqa: E402
from bootkit.transports.virtual import VirtualBus, get_backend  # noqa: E402


def run(chip_name: str, record_size: int, repeat: int):
    chip = get_chip(chip_name)
    start, end = chip.layout().application_ranges("flash")[0]
    size = end - start
    image = sample_image(chip, size, 0, 0).crop(start, end)
    job = write_hex(image, record_size=record_size).encode()
    best = None
    for _ in range(repeat):
        bus = VirtualBus()
        em = Emulator(chip, "printer")
        em.attach(bus)
        backend = get_backend(bus)
        sent = []
        real = backend.bulk_write

        def counting(h, ep, intf, data, timeout):
            n = real(h, ep, intf, data, timeout)
            sent.append(n)
            return n

        backend.bulk_write = counting
        t0 = time.perf_counter()
        result = host.send_job(job, backend, expect=image, progress=False)
        ours = time.perf_counter() - t0
        del backend.bulk_write
        assert result.verified and em.memory.read(start, size) == image.tobytes(start, end)
        assert sum(sent) == len(job)
        # the same, including image -> HEX conversion, on a fresh device
        bus2 = VirtualBus()
        em2 = Emulator(chip, "printer")
        em2.attach(bus2)
        t0 = time.perf_counter()
        host.flash(image, get_backend(bus2), chip=chip, record_size=record_size, progress=False)
        total = time.perf_counter() - t0
        wire = seconds(sum(bulk_bits(n) for n in sent))
        if best is None or ours < best[0]:
            best = (ours, wire, total, len(job), size)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3, help="runs per setting; the best is kept")
    ap.add_argument("--chips", default="atmega32u4,at90usb1286", help="comma-separated chips (whole application)")
    args = ap.parse_args()
    print(f"Printing the whole application flash as Intel HEX, in-process bus (best of {args.repeat})")
    print(f"{'chip':>12} {'rec':>3} {'image B':>8} {'HEX B':>8} {'ours s':>8} {'wire s':>8} {'ours/wire':>9} "
          f"{'KiB/s':>7} {'+convert s':>10}  target")
    for chip in args.chips.split(","):
        for record_size in (16, 32):
            ours, wire, total, hex_bytes, size = run(chip, record_size, args.repeat)
            print(f"{chip:>12} {record_size:>3} {size:>8} {hex_bytes:>8} {ours:>8.4f} {wire:>8.4f} {ours / wire:>9.3f} "
                  f"{size / ours / 1024:>7.0f} {total:>10.4f}  <= 0.1")


if __name__ == "__main__":
    main()
