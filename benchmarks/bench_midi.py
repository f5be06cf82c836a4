"""MIDI personality: one-way file pacing against the chip's page times, and two-way
throughput on the in-process bus against the wire time.

1. One-way file: the .mid for an image is played (``host.flash(dialect="file")``, real-time
   pacing as ``bootkit midi play`` does) into an emulated chip in real-time mode, whose flash
   is busy for the datasheet times while it programs and erases.  Measured: from the moment
   the device receives the first USB-MIDI packet to the moment it receives the last (its
   Device.ep_out, timestamped), and the flash is checked afterwards (the device must have
   taken every page and left).  The denominator is computed here, independently of the
   schedule midifile builds: for every page of the image's span the chip database's program
   time, the erase time of every sector the span touches, and the manifest time.  The ratio
   received-time / page-times is then a measurement: a schedule with too much margin or
   slack, or a device that makes the sender wait, shows in it.  Target: 1.5 or less.
2. Two-way SysEx: the wall-clock time of ``host.flash`` (identify, erase, write, read back,
   CRC) on the in-process bus in fast mode, as a ratio to the full-speed wire time of the
   USB-MIDI bulk transfers it moved in both directions (counted, priced by usbwire.py).
   Target: 0.1 or less.  The wire bound of those transfers is the sysex dialect's throughput
   figure for ``bootkit choose``; the one-way file's is the image over the measured
   receive time (run_all.py).

Median and spread of --runs runs each (at least 5).  Prints only; asserts nothing about time.

example:
  python benchmarks/bench_midi.py --chips atmega32u4,stm32f103c8 --runs 5
"""

import argparse
import gc
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run_all import emit, record, throughput  # noqa: E402
from usbwire import WireLog, endpoints_of  # noqa: E402

from bootkit.classes.midi import host, midifile  # noqa: E402
from bootkit.emulator import Emulator  # noqa: E402
from bootkit.memory import get_chip  # noqa: E402
from bootkit.samples import sample_image  # noqa: E402
from bootkit.transports.virtual import VirtualBus, get_backend  # noqa: E402


def image_for(chip, size):
    start, end = chip.layout().application_ranges("flash")[0]
    size = min(size, end - start)
    return sample_image(chip, size, 0, 0).crop(start, start + size)


def page_times(chip, image) -> float:
    """Seconds the chip's datasheet figures give the update: every page of the image's span
    programmed, every sector it touches erased once, then the manifest.  Built from the chip
    database alone (not from midifile's schedule)."""
    ps = chip.page_size
    first = image.start - (image.start - chip.flash_start) % ps
    pages = range(first, image.end, ps)
    region = chip.layout().flash
    smallest = min(size for _, size in region.sectors)
    sectors = {region.sector_at(a) for a in pages}
    t = chip.timing
    ms = len(pages) * t.program_ms + sum(t.erase_time(size, smallest) for _, size in sectors) + t.manifest_ms
    return ms / 1000


def one_way(chip, image, encoding) -> float:
    """Seconds from the device receiving the first packet of the played file to the last."""
    bus = VirtualBus()
    em = Emulator(chip, "midi", realtime=True)
    em.attach(bus)
    device = em.target.device
    seen: list[float] = []
    real = device.ep_out

    def received(address, data):
        real(address, data)
        seen.append(time.perf_counter())  # the device has taken the packet

    device.ep_out = received
    try:
        host.flash(image, get_backend(bus), dialect="file", chip=chip, encoding=encoding, progress=False,
                   leave_wait=0.5)
    finally:
        del device.ep_out
    assert em.memory.read(image.start, image.size) == image.tobytes(), "the played file did not flash the image"
    em.close()
    return seen[-1] - seen[0]


def two_way(chip, image) -> tuple[float, float]:
    """(our seconds, wire seconds) of one two-way flash; the GC held off during it, as timeit does."""
    bus = VirtualBus()
    em = Emulator(chip, "midi")
    em.attach(bus)
    backend = get_backend(bus)
    import usb.core

    log = WireLog().attach(backend, endpoints_of(usb.core.find(backend=backend)))
    gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter()
        result = host.flash(image, backend, chip=chip, progress=False, leave=False)
        ours = time.perf_counter() - t0
    finally:
        gc.enable()
    log.detach(backend)
    assert result.verified and em.memory.read(image.start, image.size) == image.tobytes()
    return ours, log.seconds()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chips", default="atmega32u4,stm32f103c8", help="comma-separated chips")
    ap.add_argument("--one-way-kib", type=int, default=4, help="one-way image size in KiB (real time: default 4)")
    ap.add_argument("--two-way-kib", type=int, default=28, help="two-way image size in KiB (default 28)")
    ap.add_argument("--runs", type=int, default=5, help="runs of each, at least 5 (default 5)")
    ap.add_argument("--json", action="store_true", help="last line: the records, for run_all.py")
    args = ap.parse_args(argv)
    if args.runs < 5:
        ap.error("--runs: at least 5 (a median and a spread of fewer say little)")
    records = []
    for i, name in enumerate(args.chips.split(",")):
        chip = get_chip(name)
        image = image_for(chip, args.one_way_kib * 1024)
        denominator = page_times(chip, image)
        for encoding in midifile.ENCODINGS:
            received = [one_way(chip, image, encoding) for _ in range(args.runs)]
            # the file also plays through a 5-pin DIN cable: MIDI 1.0 is 31250 baud, 10 bits a byte (start,
            # 8 data, stop), so its bytes need this long on that wire whatever the chip does
            din = sum(len(ev.data) for ev in midifile.file_events(image, chip, encoding=encoding)) * 10 / 31250
            extra = {}
            if i == 0 and encoding == "sysex":
                extra["throughput"] = {
                    "dialects": ["midi/file"], "kind": "measured",
                    "kib_s": image.size / 1024 / sorted(received)[len(received) // 2],
                    "how": f"a {image.size // 1024} KiB .mid played in real time into an emulated {chip.name} "
                           f"(datasheet page times), first to last packet received, in bench_midi.py"}
            records.append(record(
                f"midi/file {chip.name} {image.size // 1024} KiB ({encoding}): received time / page times",
                "played .mid, device's first to last packet received, vs the chip's program + erase + "
                "manifest times computed from the chip database", [r / denominator for r in received],
                target="<= 1.5", **extra))
            records.append(record(
                f"midi/file {chip.name} {image.size // 1024} KiB ({encoding}): received time / (page times + "
                f"31250-baud DIN time)", "the same runs vs the page times plus the file's bytes at MIDI 1.0's serial "
                "rate (the schedule waits for both, one after the other)", [r / (denominator + din) for r in received]))
        image = image_for(chip, args.two_way_kib * 1024)
        host.flash(image, get_backend(_warm(chip)), chip=chip, progress=False, leave=False)  # imports, caches
        runs = [two_way(chip, image) for _ in range(args.runs)]
        extra = {}
        if i == 0:
            extra["throughput"] = throughput(
                ["midi/sysex"], image.size, [w for _, w in runs],
                f"full-speed bulk transfers of a two-way {image.size // 1024} KiB flash (write, read back, CRC) on "
                f"{chip.name}, counted in bench_midi.py")
        records.append(record(
            f"midi/sysex {chip.name} {image.size // 1024} KiB: ours / bulk wire time",
            "host.flash (identify, erase, write, read back, CRC) vs the full-speed bit time of its bulk transfers",
            [ours / wire for ours, wire in runs], target="<= 0.1", **extra))
    emit(records, args.json)


def _warm(chip) -> VirtualBus:
    bus = VirtualBus()
    Emulator(chip, "midi").attach(bus)
    return bus


if __name__ == "__main__":
    main()
