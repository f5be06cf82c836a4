"""dfu-util against our own DFU host client, into the same gadget, in one VM boot.

Boots the Debian kernel in QEMU (TCG) with the VM test harness, serves an
emulated STM32F103C8 (plain DFU 1.1, app at 0x08002000) and an STM32F411
(DfuSe) through bootkit's FunctionFS gadget on dummy_hcd, and downloads the
same 256 KiB (DfuSe) / 54 KiB (DFU 1.1) image with `dfu-util -D` and with
`bootkit flash --via dfu --no-verify`, each best of N, both inside the guest
where the Linux kernel is the USB host.  Prints both times and the ratio
ours/dfu-util (target 1.0 or less; lower is better).  Both sides include
process start-up, as a user running either command sees it; the guest runs
under TCG, where CPython starts in about a second and every Python
instruction is emulated, so the ratio overstates what a real board shows.

example:
  python benchmarks/bench_gadget_dfu.py --repeat 3
"""

import argparse
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.vm.harness import GuestVM, vm_available  # noqa: E402

SERVE = r'''
import sys
from bootkit.emulator import Emulator
from bootkit.transports.functionfs import serve
em = Emulator(sys.argv[1], "dfu", image=sys.argv[2], options={"dialect": sys.argv[3]})
try:
    serve(em, log=lambda m: print(m, flush=True))
finally:
    em.close()
'''

CASES = (
    # chip, dialect, usb id, base address, size, dfu-util arguments, transfer size
    ("stm32f411", "dfuse", "0483:df11", 0x08000000, 256 * 1024, "-a 0 -s 0x08000000", 2048),
    ("stm32f103c8", "dfu", "1209:b00d", 0x08002000, 54 * 1024, "-a 0", 1024),
)


def wait_usb(vm, usb_id, timeout=30.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        r = vm.run("cat /sys/bus/usb/devices/*/idVendor /sys/bus/usb/devices/*/idProduct 2>/dev/null | paste -sd' '")
        vid, pid = usb_id.split(":")
        if vid in r.stdout.split() and pid in r.stdout.split():
            return
        time.sleep(0.2)
    raise RuntimeError(f"{usb_id} did not enumerate in the guest")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3, help="downloads per tool and case; the best is kept")
    args = ap.parse_args()
    ok, why = vm_available()
    if not ok:
        sys.exit(f"cannot boot the VM: {why}")
    # The guest's root is read-only: without byte code on disk every bootkit
    # run in it would compile the package first (a second under TCG).
    import compileall

    compileall.compile_dir(str(ROOT / "bootkit"), quiet=1)
    rows = []
    with GuestVM(timeout=180) as vm:
        vm.run("modprobe -a dummy_hcd libcomposite usb_f_fs", check=True)
        # what CPython itself costs in this guest before the first transfer
        startup = []
        for _ in range(args.repeat):
            r = vm.run(["bash", "-c", "TIMEFORMAT=%R; { time python3 -c 'import bootkit.cli, "
                        "bootkit.classes.dfu.host' ; } 2>&1"], timeout=120)
            startup.append(float(r.stdout.split()[-1]))
        (vm.xfer_dir / "serve.py").write_text(SERVE)
        for chip, dialect, usb_id, base, size, dfu_args, transfer in CASES:
            fw = random.Random(chip).randbytes(size)
            (vm.xfer_dir / "fw.bin").write_bytes(fw)
            times = {"dfu-util": [], "bootkit": []}
            for tool in ("dfu-util", "bootkit") * args.repeat:
                daemon = vm.run_bg(f"exec python3 {vm.guest_path('serve.py')} {chip} "
                                   f"{vm.guest_path(chip + '.bin')} {dialect}")
                try:
                    wait_usb(vm, usb_id)
                    time.sleep(0.3)
                    log = daemon.output().stdout
                    t_flag = f"-t {transfer}" if "refused class-specific" in log else ""
                    if tool == "dfu-util":
                        cmd = f"dfu-util -d {usb_id} {dfu_args} {t_flag} -D fw.bin"
                    else:
                        cmd = (f"bootkit flash fw.bin --via dfu --dialect {dialect} --device {usb_id} "
                               f"--chip {chip} --address 0x{base:X} --no-verify --no-leave --no-progress "
                               + (f"--transfer-size {transfer}" if t_flag else ""))
                    # bash's time keyword: wall-clock seconds of the whole command
                    r = vm.run(["bash", "-c", f"TIMEFORMAT=%R; {{ time {cmd} >/dev/null 2>&1; echo $? >&2; }} 2>&1"],
                               timeout=300, cwd=vm.guest_xfer_dir)
                    seconds, rc = r.stdout.split()[-2:]  # time reports before the echo
                    if rc != "0":
                        raise RuntimeError(f"{tool} failed ({rc}) on {chip}: {cmd}")
                    times[tool].append(float(seconds))
                finally:
                    daemon.stop()
                image = (vm.xfer_dir / (chip + ".bin")).read_bytes()
                off = base - 0x08000000
                if image[off:off + size] != fw:
                    raise RuntimeError(f"{tool} left a wrong image on {chip}")
            rows.append((chip, dialect, size, min(times["dfu-util"]), min(times["bootkit"])))
    print(f"DFU download into bootkit's FunctionFS gadget inside one VM boot (best of {args.repeat}; "
          "process start-up included)")
    start = min(startup)
    print(f"{'chip':>12} {'dialect':>7} {'KiB':>5} {'dfu-util s':>10} {'bootkit s':>9} {'ours/dfu-util':>13}"
          f" {'without start-up':>16}  target")
    for chip, dialect, size, theirs, ours in rows:
        print(f"{chip:>12} {dialect:>7} {size // 1024:>5} {theirs:>10.2f} {ours:>9.2f} {ours / theirs:>13.2f}"
              f" {(ours - start) / theirs:>16.2f}  <= 1.0")
    print(f"(CPython start-up + imports in this guest: {start:.2f} s, measured in the same boot)")


if __name__ == "__main__":
    main()
