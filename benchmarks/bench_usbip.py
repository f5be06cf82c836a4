"""DFU throughput over USB/IP on loopback, as a ratio to the in-process bus.

The same plain DFU 1.1 download (emulated STM32F411, fast mode) twice: once
through the in-process virtual backend, once through a USB/IP server on
127.0.0.1 (in a second process, as `bootkit serve --transport usbip` runs;
--thread runs it on a thread of this process, sharing the GIL) and the
userspace USB/IP client backend.  Target: USB/IP time / in-process time of
3 or less at wTransferSize 1024 and 4096 (lower is better).  Every control
transfer becomes one CMD_SUBMIT / RET_SUBMIT round trip over TCP, so small
transfer sizes are dominated by round trips.  Prints only.

Runs alternate between the two (virtual, usbip, virtual, ...) and the best
of --repeat is kept for each, so load from other processes on the machine
hits both sides alike.  The last line is the floor: a bare TCP round trip
between two Python processes on this machine (48-byte reply), which every
USB/IP transfer pays on top of the device's own work.

example:
  python benchmarks/bench_usbip.py --size 256K --repeat 3
"""

import argparse
import socket
import subprocess
import sys
import time

from bootkit.classes.dfu import host
from bootkit.emulator import Emulator
from bootkit.samples import sample_image
from bootkit.transports import usbip_client
from bootkit.transports.usbip import UsbipServer
from bootkit.transports.virtual import VirtualBus, get_backend


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
em = Emulator("stm32f411", "dfu", options={"dialect": "dfu", "transfer_size": int(sys.argv[1])})
usbip.serve([em.target], ("127.0.0.1", 0), log=None, ready=lambda address: print(address[1], flush=True))
"""


def flash_over(port: int, image) -> tuple[float, int]:
    backend = usbip_client.UsbipBackend(port=port)
    count = [0]
    real = backend.ctrl_transfer

    def counting(*args):
        count[0] += 1
        return real(*args)

    backend.ctrl_transfer = counting
    t0 = time.perf_counter()
    host.flash(image, backend, dialect="dfu", chip="stm32f411", verify=False, progress=False)
    elapsed = time.perf_counter() - t0
    backend.close()
    return elapsed, count[0]


def run_usbip_process(image, transfer: int) -> tuple[float, int]:
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(transfer)], stdout=subprocess.PIPE, text=True)
    try:
        return flash_over(int(proc.stdout.readline()), image)
    finally:
        proc.terminate()
        proc.wait(10)


def run_usbip_thread(image, transfer: int) -> tuple[float, int]:
    em = Emulator("stm32f411", "dfu", options={"dialect": "dfu", "transfer_size": transfer})
    with UsbipServer([em.target], ("127.0.0.1", 0), log=None) as server:
        result = flash_over(server.port, image)
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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="256K", help="image size (default 256K)")
    ap.add_argument("--repeat", type=int, default=5, help="runs per setting; the best is kept")
    ap.add_argument("--thread", action="store_true", help="run the server on a thread of this process")
    args = ap.parse_args()
    run_usbip = run_usbip_thread if args.thread else run_usbip_process
    size = int(args.size.rstrip("Kk")) * 1024 if args.size[-1] in "Kk" else int(args.size)
    image = image_of(size)
    print(f"DFU 1.1 download of {size // 1024} KiB into an emulated stm32f411: USB/IP on loopback vs in-process "
          f"(best of {args.repeat}, server in {'a thread' if args.thread else 'another process'})")
    print(f"{'wTransferSize':>13} {'transfers':>9} {'virtual s':>9} {'usbip s':>8} {'MB/s':>6} {'ratio':>6}  target")
    for transfer in (64, 1024, 4096):
        virtuals, runs = [], []
        for _ in range(args.repeat):  # interleaved: a burst of load hits both
            virtuals.append(run_virtual(image, transfer))
            runs.append(run_usbip(image, transfer))
        virtual = min(virtuals)
        usbip, count = min(runs)
        target = "<= 3" if transfer >= 1024 else "-"
        print(f"{transfer:>13} {count:>9} {virtual:>9.4f} {usbip:>8.4f} {size / usbip / 1e6:>6.2f} "
              f"{usbip / virtual:>6.2f}  {target}")
    rt = tcp_round_trip(48 + 1024)
    print(f"floor: a bare TCP round trip between two Python processes here takes {rt * 1e6:.1f} us "
          f"(1072 bytes out, 48 back); the in-process bus needs none")


if __name__ == "__main__":
    main()
