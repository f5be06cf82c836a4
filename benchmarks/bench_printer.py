"""Printer-path throughput on the in-process bus, as a ratio to the full-speed wire time.

A whole application image printed as Intel HEX into an emulated printer
bootloader (fast mode): the host client's bulk writes, the device's
streaming HEX parse and page programming, then SOFT_RESET, GET_PORT_STATUS
and the status line.  "ours" is the wall-clock time of that print path
(the HEX text prepared beforehand); "wire" is the USB full-speed time of
the bulk OUT transactions carrying that HEX text (64-byte packets, per
transaction: token 35 bits + data 8+8+8n+16+3 + handshake 19).  Target:
ours/wire 0.1 or less.  Median and spread of --runs runs (at least 5).  The
wire bound of the counted bulk OUT transactions (image bytes over their wire
time, 16-byte records) is the printer's throughput figure for ``bootkit
choose`` (run_all.py).

example:
  python benchmarks/bench_printer.py --runs 5
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run_all import emit, record, throughput  # noqa: E402
from usbwire import bulk_bits, seconds  # noqa: E402

from bootkit.classes.printer import host  # noqa: E402
from bootkit.emulator import Emulator  # noqa: E402
from bootkit.formats import write_hex  # noqa: E402
from bootkit.memory import get_chip  # noqa: E402
from bootkit.samples import sample_image  # noqa: E402
from bootkit.transports.virtual import VirtualBus, get_backend  # noqa: E402


def run(chip_name: str, record_size: int):
    """(our seconds, wire seconds, HEX bytes, image bytes) of one print of the whole application."""
    chip = get_chip(chip_name)
    start, end = chip.layout().application_ranges("flash")[0]
    size = end - start
    image = sample_image(chip, size, 0, 0).crop(start, end)
    job = write_hex(image, record_size=record_size).encode()
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
    result = host.send_job(job, backend, expect=image, progress=False)
    ours = result.seconds  # the job and its status line; not the watch for the device leaving after it
    del backend.bulk_write
    assert result.verified and em.memory.read(start, size) == image.tobytes(start, end)
    assert sum(sent) == len(job)
    return ours, seconds(sum(bulk_bits(n) for n in sent)), len(job), size


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5, help="runs per setting, at least 5 (default 5)")
    ap.add_argument("--chips", default="atmega32u4,at90usb1286", help="comma-separated chips (whole application)")
    ap.add_argument("--json", action="store_true", help="last line: the records, for run_all.py")
    args = ap.parse_args(argv)
    if args.runs < 5:
        ap.error("--runs: at least 5 (a median and a spread of fewer say little)")
    records = []
    for i, chip in enumerate(args.chips.split(",")):
        for record_size in (16, 32):
            runs = [run(chip, record_size) for _ in range(args.runs)]
            _, _, hex_bytes, size = runs[0]
            extra = {}
            if i == 0 and record_size == 16:
                extra["throughput"] = throughput(
                    ["printer/lufa"], size, [w for _, w, _, _ in runs],
                    f"full-speed bulk OUT packets of the HEX job ({hex_bytes} bytes of 16-byte records for "
                    f"{size} image bytes), counted in bench_printer.py")
            records.append(record(
                f"printer {chip} {size // 1024} KiB as HEX ({record_size}-byte records): ours / bulk wire time",
                "send_job into the emulator vs the full-speed bit time of its bulk OUT transactions",
                [ours / wire for ours, wire, _, _ in runs], target="<= 0.1", **extra))
    emit(records, args.json)


if __name__ == "__main__":
    main()
