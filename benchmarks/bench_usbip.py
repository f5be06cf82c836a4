"""DFU throughput over USB/IP on loopback, as a ratio to the in-process bus.

The same plain DFU 1.1 download (emulated STM32F411, fast mode) twice: once
through the in-process virtual backend, once through a USB/IP server on
127.0.0.1 (in a second process, as `bootkit serve --transport usbip` runs;
--thread runs it on a thread of this process, sharing the GIL) and the
userspace USB/IP client backend.  Target: USB/IP time / in-process time of
3 or less at wTransferSize 1024 and 4096 (lower is better).  Prints only.
Each timed run is the whole `host.flash` (find the device, DNLOAD every
block, manifest, reset); the flashed image is then checked in full against
the emulated flash (the server process writes it to a file when it stops),
outside the timing.

Method: a DFU download is DNLOAD, GETSTATUS per block.  In-process, each
control transfer is a function call into the device.  Over USB/IP each
round trip costs a TCP send and receive at both ends plus a wake-up of the
other process, which on a small VM is more than the in-process work for a
whole block: a bare round trip between two Python processes measured 50-80
us here when they sit on two vCPUs (an interrupt to an idle virtual CPU),
~15 us on one, against ~26 us for a whole 1024-byte block in-process.  So
the client waits as few times as DFU allows: the DFU host hands DNLOAD and
the GETSTATUS that must follow it to the backend together
(`ctrl_transfers`, both CMD_SUBMITs in one write), and, once the device
has finished a block within its GETSTATUS (OK, dfuDNLOAD-IDLE,
bwPollTimeout 0: nothing to wait for), sends up to 16 blocks (64 KiB) per
round trip without waiting for each reply (DfuClient.download_session).
The device still gets the requests, in the order, that one-by-one sends;
one that asks for a wait gets nothing ahead
(tests/usbip/test_usbip_pipeline.py).  The "transfers" column counts
control transfers, "trips" the client's waits for the server (round
trips); --no-pipeline sends one control transfer per round trip.

Runs alternate (virtual, usbip just started, usbip running, virtual, ...),
--runs of each (at least 5), so load from other processes on the machine
hits all alike; the table shows medians, and the ratios' median and spread
(min-max) over the per-run ratios follow it.  "just started": the flash begins as soon as
the server listens; "running": --settle seconds later, as when `bootkit
serve` was started before the flash, the way it is used.  The target is
for both.  The last line is the floor: a bare TCP round trip between two
Python processes on this machine (1072 bytes out, 48 back), which every
round trip pays on top of the work at both ends; which case (one vCPU or
two) a run gets is up to the scheduler.

example:
  python benchmarks/bench_usbip.py --size 256K --runs 5
"""

import argparse
import os
import statistics
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from run_all import emit, record  # noqa: E402

from bootkit.classes.dfu import host  # noqa: E402
from bootkit.emulator import Emulator  # noqa: E402
from bootkit.memory import get_chip  # noqa: E402
from bootkit.samples import sample_image  # noqa: E402
from bootkit.transports import usbip_client  # noqa: E402
from bootkit.transports.usbip import UsbipServer  # noqa: E402
from bootkit.transports.virtual import VirtualBus, get_backend  # noqa: E402


def image_of(size: int):
    image = sample_image("stm32f411", size, 0, 0)
    return image.crop(image.start, image.start + size)


def run_virtual(image, transfer: int) -> float:
    bus = VirtualBus()
    em = Emulator("stm32f411", "dfu", options={"dialect": "dfu", "transfer_size": transfer})
    em.attach(bus)
    t0 = time.perf_counter()
    host.flash(image, get_backend(bus), dialect="dfu", chip="stm32f411", verify=False, progress=False)
    elapsed = time.perf_counter() - t0
    assert em.memory.read(image.start, image.size) == image.tobytes()
    return elapsed


SERVER = """
import sys
from bootkit.emulator import Emulator
from bootkit.transports import usbip
em = Emulator("stm32f411", "dfu", image=sys.argv[2], options={"dialect": "dfu", "transfer_size": int(sys.argv[1])})
try:
    usbip.serve([em.target], ("127.0.0.1", 0), log=None, ready=lambda address: print(address[1], flush=True))
finally:
    em.close()  # SIGTERM: the flash goes to the file
"""


def flash_over(port: int, image, pipeline: bool, ahead: bool = True) -> tuple[float, int, int]:
    """Seconds for the flash, control transfers, round trips.  ahead=False: one block per round trip."""
    backend = usbip_client.UsbipBackend(port=port, pipeline=pipeline)
    count = [0, 0]
    one, several = backend.ctrl_transfer, backend.ctrl_transfers

    def counting_one(*args):
        count[0] += 1
        count[1] += 1
        return one(*args)

    def counting_several(device, transfers):
        count[0] += len(transfers)
        count[1] += 1
        return several(device, transfers)

    backend.ctrl_transfer = counting_one
    if several is not None:
        backend.ctrl_transfers = counting_several
    blocks = host.DfuClient.AHEAD_BLOCKS
    host.DfuClient.AHEAD_BLOCKS = blocks if ahead else 1
    try:
        t0 = time.perf_counter()
        host.flash(image, backend, dialect="dfu", chip="stm32f411", verify=False, progress=False)
        elapsed = time.perf_counter() - t0
    finally:
        host.DfuClient.AHEAD_BLOCKS = blocks
    backend.close()
    return elapsed, count[0], count[1]


def check_flash(flash: bytes, image) -> None:
    chip = get_chip("stm32f411")
    at = image.start - chip.flash_start
    assert flash[at:at + image.size] == image.tobytes(), "the flashed image differs"


def run_usbip_process(image, transfer: int, pipeline: bool, settle: float = 0.0,
                      ahead: bool = True) -> tuple[float, int, int]:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "flash.bin")
        proc = subprocess.Popen([sys.executable, "-c", SERVER, str(transfer), path], stdout=subprocess.PIPE, text=True)
        try:
            port = int(proc.stdout.readline())
            time.sleep(settle)  # --settle: an idle server, as one started a while before the flash
            result = flash_over(port, image, pipeline, ahead)
        finally:
            proc.terminate()
            proc.wait(10)
        with open(path, "rb") as f:
            check_flash(f.read(), image)
    return result


def run_usbip_thread(image, transfer: int, pipeline: bool, settle: float = 0.0,
                     ahead: bool = True) -> tuple[float, int, int]:
    em = Emulator("stm32f411", "dfu", options={"dialect": "dfu", "transfer_size": transfer})
    with UsbipServer([em.target], ("127.0.0.1", 0), log=None) as server:
        time.sleep(settle)
        result = flash_over(server.port, image, pipeline, ahead)
    assert em.memory.read(image.start, image.size) == image.tobytes()
    return result


ECHO = """
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(1)
print(s.getsockname()[1], flush=True)
c, _ = s.accept()
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
while True:
    data = c.recv(65536)
    if not data:
        break
    c.sendall(data[:48])
"""


def tcp_round_trip(size: int, count: int = 2000) -> float:
    """Seconds per bare TCP round trip to another Python process (best of 3 batches)."""
    proc = subprocess.Popen([sys.executable, "-c", ECHO], stdout=subprocess.PIPE, text=True)
    try:
        with socket.create_connection(("127.0.0.1", int(proc.stdout.readline()))) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            msg, best = bytes(size), float("inf")
            for _ in range(3):
                t0 = time.perf_counter()
                for _ in range(count):
                    sock.sendall(msg)
                    sock.recv(65536)
                best = min(best, (time.perf_counter() - t0) / count)
            return best
    finally:
        proc.wait(10)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="256K", help="image size (default 256K)")
    ap.add_argument("--runs", type=int, default=5, help="runs per setting, at least 5 (default 5)")
    ap.add_argument("--json", action="store_true", help="last line: the records, for run_all.py")
    ap.add_argument("--thread", action="store_true", help="run the server on a thread of this process")
    ap.add_argument("--no-pipeline", dest="pipeline", action="store_false",
                    help="one control transfer per round trip (UsbipBackend(pipeline=False))")
    ap.add_argument("--settle", type=float, default=0.3, metavar="SECONDS",
                    help="how long the running server has been up before its flash (default 0.3)")
    args = ap.parse_args(argv)
    if args.runs < 5:
        ap.error("--runs: at least 5 (a median and a spread of fewer say little)")
    run_usbip = run_usbip_thread if args.thread else run_usbip_process
    size = int(args.size.rstrip("Kk")) * 1024 if args.size[-1] in "Kk" else int(args.size)
    image = image_of(size)
    print(f"DFU 1.1 download of {size // 1024} KiB into an emulated stm32f411: USB/IP on loopback vs in-process "
          f"(medians of {args.runs}, server in {'a thread' if args.thread else 'another process'}; "
          f"'just started': flashed as soon as the server listens, 'running': {args.settle:g} s later; "
          f"'one block per round trip': running, nothing sent ahead)")
    print(f"{'':>13} {'':>9} {'':>9} {'------- just started -------':>28}  {'------ running ------':>21}  "
          f"{'one block per round trip':>24}")
    print(f"{'wTransferSize':>13} {'transfers':>9} {'virtual s':>9} {'trips':>6} {'usbip s':>8} {'MB/s':>6} "
          f"{'ratio':>5}  {'usbip s':>8} {'MB/s':>6} {'ratio':>5}  {'trips':>6} {'usbip s':>8} {'ratio':>8}  target")
    records = []
    for transfer in (64, 1024, 4096):
        virtuals, fresh, running, single = [], [], [], []
        for _ in range(args.runs):  # interleaved: a burst of load hits all four
            virtuals.append(run_virtual(image, transfer))
            fresh.append(run_usbip(image, transfer, args.pipeline, 0.0))
            running.append(run_usbip(image, transfer, args.pipeline, args.settle))
            single.append(run_usbip(image, transfer, args.pipeline, args.settle, ahead=False))
        virtual = statistics.median(virtuals)
        cold, count, trips = statistics.median(f[0] for f in fresh), fresh[0][1], fresh[0][2]
        warm = statistics.median(r[0] for r in running)
        one, one_trips = statistics.median(s[0] for s in single), single[0][2]
        target = "<= 3" if transfer >= 1024 else "-"
        print(f"{transfer:>13} {count:>9} {virtual:>9.4f} {trips:>6} {cold:>8.4f} {size / cold / 1e6:>6.2f} "
              f"{cold / virtual:>5.2f}  {warm:>8.4f} {size / warm / 1e6:>6.2f} {warm / virtual:>5.2f}  "
              f"{one_trips:>6} {one:>8.4f} {one / virtual:>8.2f}  {target}")
        for label, runs in (("just started", fresh), ("running", running)):
            records.append(record(
                f"dfu over USB/IP ({label}) {size // 1024} KiB wTransferSize {transfer}: usbip / in-process",
                f"the same host.flash through a USB/IP server on loopback ({'thread' if args.thread else 'process'}) "
                f"vs the in-process bus, per run", [r[0] / v for r, v in zip(runs, virtuals)],
                target="<= 3" if transfer >= 1024 else None))
    rt = tcp_round_trip(48 + 1024)
    print(f"floor: a bare TCP round trip between two Python processes here takes {rt * 1e6:.1f} us "
          f"(1072 bytes out, 48 back); the in-process bus needs none")
    emit(records, args.json)


if __name__ == "__main__":
    main()
