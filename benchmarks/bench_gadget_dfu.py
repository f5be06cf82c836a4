"""dfu-util against our own DFU host client, into the same gadget, in one VM boot.

Boots the Debian kernel in QEMU (TCG) with the VM test harness, serves an
emulated STM32F411 (DfuSe) and an STM32F103C8 (plain DFU 1.1, app at
0x08002000) through bootkit's FunctionFS gadget on dummy_hcd, and downloads
the same 256 KiB (DfuSe) / 54 KiB (DFU 1.1) image with `dfu-util -D` and
with `bootkit flash --via dfu --no-verify`, alternating, best of N, both
inside the guest where the Linux kernel is the USB host.

bootkit runs as a user installs it: `pip install` of this working tree into
a clean venv (build/bench-venv), not the editable development install, whose
import hook (and any .pth file the machine adds) would be timed too.

Two comparisons, ours/dfu-util, lower is better:

* download (target 1.0 or less): from opening the device to the end of the
  download.  Ours is the time `bootkit flash` reports for it; dfu-util's is
  its whole command minus its process start-up (`dfu-util -V` in the same
  boot), so dfu-util's libusb_init and device search still count against it.
* whole command: what a user waits for, process start-up included.  Under
  TCG CPython itself starts in about 0.4 s and every Python instruction is
  emulated, so this ratio overstates what a real board shows; the start-up
  line says how much of ours is interpreter and imports.

The 256 KiB DfuSe case is the one the target is about.  In the plain DFU
case dfu-util 0.11 sleeps a fixed second once the device reports
dfuMANIFEST(-SYNC) ("some devices need some time", dfu_load.c), which
dominates its time for 54 KiB.

example:
  python benchmarks/bench_gadget_dfu.py --repeat 3
"""

import argparse
import random
import re
import subprocess
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


def bench_venv() -> Path:
    """build/bench-venv with this working tree installed (not editable); its bin directory."""
    venv = ROOT / "build" / "bench-venv"
    if not (venv / "bin" / "python3").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python3"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run(pip + [str(ROOT)], check=True)  # dependencies, once
    subprocess.run(pip + ["--no-deps", "--force-reinstall", str(ROOT)], check=True)  # this tree, every run
    return venv / "bin"


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

    compileall.compile_dir(str(ROOT / "bootkit"), quiet=1)  # the gadget side runs from this tree
    venv_bin = bench_venv()
    rows = []
    with GuestVM(timeout=180) as vm:
        vm.run("modprobe -a dummy_hcd libcomposite usb_f_fs", check=True)

        def timed(cmd: str) -> float:
            r = vm.run(["bash", "-c", f"TIMEFORMAT=%R; {{ time {cmd} >/dev/null 2>&1 ; }} 2>&1"], timeout=120)
            return float(r.stdout.split()[-1])

        # process start-up in this guest: CPython alone, and with what `bootkit flash --via dfu` imports
        bare = min(timed(f"{venv_bin}/python3 -c pass") for _ in range(args.repeat))
        imports = min(timed(f"{venv_bin}/python3 -c 'import bootkit.cli, bootkit.classes.dfu.host, "
                            "usb.backend.libusb1'") for _ in range(args.repeat))
        dfu_util_start = min(timed("dfu-util -V") for _ in range(args.repeat))
        (vm.xfer_dir / "serve.py").write_text(SERVE)
        for chip, dialect, usb_id, base, size, dfu_args, transfer in CASES:
            fw = random.Random(chip).randbytes(size)
            (vm.xfer_dir / "fw.bin").write_bytes(fw)
            times = {"dfu-util": [], "bootkit": []}
            phases = []  # bootkit's own "in X s": device open to end of download
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
                        cmd = (f"{venv_bin}/bootkit flash fw.bin --via dfu --dialect {dialect} --device {usb_id} "
                               f"--chip {chip} --address 0x{base:X} --no-verify --no-leave --no-progress "
                               + (f"--transfer-size {transfer}" if t_flag else ""))
                    # bash's time keyword: wall-clock seconds of the whole command
                    r = vm.run(["bash", "-c", f"TIMEFORMAT=%R; {{ time {cmd} >out.txt 2>&1; echo $? >&2; }} 2>&1"],
                               timeout=300, cwd=vm.guest_xfer_dir)
                    seconds, rc = r.stdout.split()[-2:]  # time reports before the echo
                    out = (vm.xfer_dir / "out.txt").read_text()
                    if rc != "0":
                        raise RuntimeError(f"{tool} failed ({rc}) on {chip}: {cmd}\n{out}")
                    times[tool].append(float(seconds))
                    if tool == "bootkit":
                        phases.append(float(re.search(r" in ([0-9.]+) s ", out).group(1)))
                finally:
                    daemon.stop()
                image = (vm.xfer_dir / (chip + ".bin")).read_bytes()
                off = base - 0x08000000
                if image[off:off + size] != fw:
                    raise RuntimeError(f"{tool} left a wrong image on {chip}")
            rows.append((chip, dialect, size, min(times["dfu-util"]), min(times["bootkit"]), min(phases)))
    print(f"DFU download into bootkit's FunctionFS gadget inside one VM boot (guest kernel {vm.kver}; "
          f"best of {args.repeat}; bootkit from a clean venv)")
    print(f"{'':26}{'--------- download ---------':>30}   {'------- whole command -------':>31}")
    print(f"{'chip':>12} {'dialect':>7} {'KiB':>4} {'dfu-util s':>10} {'bootkit s':>9} {'ratio':>6} {'target':>6}"
          f"   {'dfu-util s':>10} {'bootkit s':>9} {'ratio':>6}")
    for chip, dialect, size, theirs, ours, phase in rows:
        theirs_phase = theirs - dfu_util_start
        print(f"{chip:>12} {dialect:>7} {size // 1024:>4} {theirs_phase:>10.2f} {phase:>9.2f} "
              f"{phase / theirs_phase:>6.2f} {'<= 1.0':>6}   {theirs:>10.2f} {ours:>9.2f} {ours / theirs:>6.2f}")
    print(f"start-up in this guest: dfu-util -V {dfu_util_start:.2f} s; CPython {bare:.2f} s, "
          f"and with bootkit's imports for flash --via dfu {imports:.2f} s")


if __name__ == "__main__":
    main()
