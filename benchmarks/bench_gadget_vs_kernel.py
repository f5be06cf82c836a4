"""Our FunctionFS gadgets against the Linux kernel's own gadget functions, in one VM boot.

Boots the Debian kernel in QEMU (TCG) with the VM test harness (tests/vm/harness.py).
Per USB class, the same payload goes through the same host-side command into

* ours: `bootkit serve CLASS --transport functionfs` on dummy_hcd (an emulated chip
  programs the payload into its flash), and
* the kernel's: a configfs gadget with the kernel's own function on the same UDC,
  whose gadget-side reader only sinks the bytes:

  =========  ===================================  ==================================
  class      host command (the guest kernel)      kernel function, gadget side
  =========  ===================================  ==================================
  msc        cp FILE.uf2 /mnt && sync (vfat)      mass_storage, a vfat backing file
  printer    cat FILE.hex > /dev/usb/lp0 (usblp)  printer, cat /dev/g_printer0
  cdc        cat FILE > /dev/ttyACM0 (raw)        acm, cat /dev/ttyGS0 (raw)
  hid        dd of=/dev/hidraw0 bs=65 (a report   hid (same report descriptor and
             per write, interrupt OUT)            size), cat /dev/hidg0
  =========  ===================================  ==================================

The payload is byte for byte the same on both sides: ours is a real update (a UF2 for an
RP2040 drive, Intel HEX for the LUFA printer bootloader, AVR109 block writes for the LUFA
CDC bootloader, bootkit's native raw-HID WRITE), the kernel's function receives the same
file.  Each run checks it arrived: our emulator's flash image written back holds the
firmware, the kernel's reader got every byte (or the file on the vfat volume compares).

MIDI has no row: FunctionFS refuses the USB-MIDI class-specific descriptors (f_fs.c
ffs_do_single_desc accepts class descriptors after HID, CCID and, from 6.12, DFU
interfaces only; CS_INTERFACE 0x24 is "unknown descriptor"), so snd-usb-audio cannot
bind our FunctionFS MIDI function ("cannot find UAC_HEADER"); tests/vm/test_midi_interop.py
serves MIDI over USB/IP for that reason.  Comparing that transport with the kernel's
f_midi would not be the same stack.

Timing: the host command's wall clock in the guest (bash's $EPOCHREALTIME around it;
serve start-up, enumeration and mounting are outside it).  Throughput is payload bytes
over that time; the ratio ours/kernel throughput is taken per pair of runs (the sides
alternate which goes first), and reported as the median with its min-max spread.
Target: ours/kernel >= 0.5 for every class.

--profile CLASS runs our gadget once more under cProfile in every thread
(benchmarks/gadget_profile.py) and prints the functions taking the most time.

--baseline DIR adds a third side: our gadget served from another bootkit tree (an
older commit, e.g. `git archive OLD | tar -x -C DIR`), in the same boot, the three
sides rotating their order per run; the table then also gives baseline/kernel and
ours/baseline.  A before/after comparison on a loaded machine needs this: the
kernel side's own times differ between two boots as the load changes, so ratios
from separate boots do not compare.  DIR must be visible in the guest (not under
/tmp, which the guest mounts over).

examples:
  python benchmarks/bench_gadget_vs_kernel.py --runs 5
  python benchmarks/bench_gadget_vs_kernel.py --runs 5 --json build/gadget_vs_kernel.json --markdown
  python benchmarks/bench_gadget_vs_kernel.py --runs 1 --classes printer --profile printer
  python benchmarks/bench_gadget_vs_kernel.py --runs 5 --baseline /tmp/bootkit-old
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import shlex
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bootkit.classes.hid.protocol import (  # noqa: E402
    NATIVE_USAGE,
    NATIVE_USAGE_PAGE,
    REPORT_SIZE,
    Command,
    native_command,
    vendor_report_descriptor,
)
from bootkit.formats import dump  # noqa: E402
from bootkit.formats.image import Image  # noqa: E402

from tests.vm.harness import GuestVM, vm_available  # noqa: E402

TARGET = 0.5  # ours/kernel throughput, at least
KERNEL_GADGET = "/sys/kernel/config/usb_gadget/kernfn"
OUR_GADGET = "/sys/kernel/config/usb_gadget/bootkit"
MNT = "/tmp/bench-mnt"
MODULES = ("dummy_hcd libcomposite usb_f_fs usb_f_mass_storage usb_f_printer usb_f_acm usb_f_hid "
           "usb-storage sd_mod vfat nls_cp437 nls_iso8859-1 usblp cdc_acm usbhid hid_generic")
# cdc_acm's acm_ids[]: { USB_DEVICE(0x0572, 0x1321), .driver_info = NO_UNION_NORMAL }: our ACM function
# comes without its CDC functional descriptors (f_fs refuses them), see tests/vm/test_cdc_interop.py
NO_UNION_REFERENCE = "0572 1321"


def rand(n: int, seed: int) -> bytes:
    import random
    return random.Random(seed).randbytes(n)


# --------------------------------------------------------------------------
# the classes

@dataclass
class Case:
    name: str
    firmware: bytes  # what our emulated chip must hold from its first address afterwards
    payload: bytes  # the file both sides receive
    file: str  # its name in the xfer share
    serve: str  # bootkit serve arguments (without --image/--transport)
    usb_id: str
    node: str  # shell: prints the host-side node once it exists
    host_cmd: str  # shell, timed; {node} and {file}
    kernel_function: str  # configfs function directory name
    kernel_setup: str  # shell run in the function directory before linking it
    kernel_reader: str | None = None  # shell, the gadget-side reader (background), None for mass_storage
    kernel_node: str | None = None  # gadget-side device the reader opens
    host_prep: str = ""  # shell, untimed, before the host command ({node})
    host_done: str = ""  # shell, untimed, after it ({node})
    leaves: bool = False  # our device leaves for its application after the update (serve exits)
    extra_files: dict = field(default_factory=dict)
    received: bytes | None = None  # what the kernel function's reader gets, when not the payload itself
    # shell, background, started after host_prep ({node}, {out}): keeps the host's port open across the
    # timed command and collects what the device answers into {out}; our device's update is complete
    # once `replies` bytes came back
    holder: str | None = None
    replies: int = 0


def msc_case(kib: int = 64) -> Case:
    base = 0x10000000
    fw = rand(kib * 1024, 1)
    uf2 = dump(Image([(base, fw)]), "uf2", family="rp2040")
    find = ("for v in /sys/block/sd*/device/vendor; do [ -e \"$v\" ] && grep -q '^{vendor}' \"$v\" && "
            "b=${{v#/sys/block/}} && d=/dev/${{b%%/*}} && test -b $d && blockdev --getsize64 $d >/dev/null "
            "&& echo $d; done; true")
    return Case(
        "msc", fw, uf2, "fw.uf2", "msc --chip rp2040", "1209:b010",
        node=find, host_cmd=f"cp {{file}} {MNT}/ && sync",
        host_prep=f"mkdir -p {MNT} && mount -t vfat {{node}} {MNT} && rm -f {MNT}/{{file}} && sync",
        host_done=f"umount {MNT} 2>/dev/null || umount -l {MNT}; true",
        kernel_function="mass_storage.0",
        kernel_setup="echo 1 > lun.0/removable && echo /tmp/kernel-msc.img > lun.0/file",
        leaves=True,
    )


def printer_case(kib: int = 16) -> Case:
    fw = rand(kib * 1024, 2)
    hex_text = dump(Image([(0, fw)]), "hex")
    return Case(
        "printer", fw, hex_text if isinstance(hex_text, bytes) else hex_text.encode(), "fw.hex",
        "printer --chip atmega32u4", "03eb:206b",
        node="ls /dev/usb/lp* 2>/dev/null | head -1; true", host_cmd="cat {file} > {node}",
        kernel_function="printer.0",
        kernel_setup="echo 'MFG:Linux;MDL:g_printer;CLS:PRINTER;' > pnp_string",
        kernel_node="/dev/g_printer0", kernel_reader="exec cat /dev/g_printer0 > {out}",
        leaves=True,
    )


def cdc_case(kib: int = 16) -> Case:
    fw = rand(kib * 1024, 3)
    # AVR109 block writes ('B' size_hi size_lo 'F' data) from address 0: LUFA's CDC bootloader
    # (BootloaderCDC.c ReadWriteMemoryBlock) programs each block, answers '\r'
    block = 128
    stream = b"".join(b"B" + block.to_bytes(2, "big") + b"F" + fw[i:i + block] for i in range(0, len(fw), block))
    raw = "stty -F {node} raw -echo -echoe -echok -icanon min 1 time 0"
    # A holder keeps the port open, reads the '\r' answers, and our run ends when all of them
    # came back: the update is programmed then (the kernel's acm only passes bytes on).  It also
    # kept the tail before 686a882: closing the port drops DTR, our CDC function abandons a
    # half-received command then (LUFA does the same), and the FunctionFS transport could take
    # that control request before the last bulk packet the host had sent (ep0 and the OUT
    # endpoint are read by different threads; tests/vm/test_ffs_ordering.py).
    return Case(
        "cdc", fw, stream, "fw.avr109", "cdc --chip atmega32u4", "03eb:204a",
        # {node} is open once {out} exists: bash opens the redirections in order
        holder="exec cat < {node} > {out}", replies=len(fw) // block,
        node="ls /dev/ttyACM* 2>/dev/null | head -1; true", host_cmd="cat {file} > {node}",
        host_prep=raw,
        kernel_function="acm.GS0", kernel_setup="true",
        kernel_node="/dev/ttyGS0",
        kernel_reader="stty -F /dev/ttyGS0 raw -echo -echoe -echok -icanon min 1 time 0 && "
                      "exec cat /dev/ttyGS0 > {out}",
    )


def hid_case(kib: int = 16) -> Case:
    fw = rand(kib * 1024, 4)
    reports = [native_command(Command.WRITE, 0, len(fw))]
    reports += [fw[i:i + REPORT_SIZE] for i in range(0, len(fw), REPORT_SIZE)]
    # hidraw's write: the first byte is the report number, 0 for a device without report ids
    stream = b"".join(b"\0" + r for r in reports)
    desc = vendor_report_descriptor(NATIVE_USAGE_PAGE, NATIVE_USAGE, REPORT_SIZE, REPORT_SIZE)
    return Case(
        "hid", fw, stream, "fw.hidraw", "hid --chip atmega32u4 --dialect native", "1209:b00f",
        node="ls /dev/hidraw* 2>/dev/null | head -1; true",
        # dd writes one block per write(2): one output report each, as hidraw requires
        host_cmd=f"dd if={{file}} of={{node}} bs={REPORT_SIZE + 1} status=none",
        kernel_function="hid.usb0",
        kernel_setup=(f"echo 0 > protocol && echo 0 > subclass && echo {REPORT_SIZE} > report_length && "
                      "cat {xfer}/hid-desc.bin > report_desc"),
        kernel_node="/dev/hidg0", kernel_reader="exec cat /dev/hidg0 > {out}",
        extra_files={"hid-desc.bin": desc, "fw.hidg": b"".join(reports)},
        received=b"".join(reports),  # f_hid hands over the reports, without hidraw's report number
    )


CASES: dict[str, Callable[..., Case]] = {"msc": msc_case, "printer": printer_case, "cdc": cdc_case,
                                        "hid": hid_case}


# --------------------------------------------------------------------------
# the guest

class Bench:
    def __init__(self, vm: GuestVM, log=print):
        self.vm, self.log = vm, log
        self.cpu: list[tuple[str, float, float]] = []  # (class, CPU seconds of our serve, wall seconds) per run
        self.persist_after: float | None = None  # SimulatedFlash.PERSIST_AFTER for our serve (an experiment)
        self.baseline: str | None = None  # another bootkit tree, for the "baseline" side

    def sh(self, cmd: str, timeout: float = 120.0, check: bool = True):
        r = self.vm.run(["bash", "-c", cmd], timeout=timeout, cwd=self.vm.guest_xfer_dir)
        if check and r.rc != 0:
            raise RuntimeError(r.describe())
        return r

    def wait(self, what: str, probe: Callable[[], str], timeout: float = 60.0, daemon=None) -> str:
        """Poll until probe() gives a non-empty string; `timeout` is for a quiet machine, scaled by
        the guest's measured slowness (GuestVM.slowness)."""
        limit = timeout * self.vm.slowness()
        t0 = time.monotonic()
        while True:
            value = probe().strip()
            if value:
                return value
            if daemon is not None and daemon.poll() is not None:
                raise RuntimeError(f"{what}: serve exited early\n" + daemon.output().describe())
            if time.monotonic() - t0 > limit:
                extra = daemon.output().describe() if daemon is not None else ""
                dmesg = self.sh("dmesg | tail -20", check=False).stdout
                raise RuntimeError(f"{what} not within {limit:.0f} s\n--- dmesg ---\n{dmesg}\n{extra}")
            time.sleep(0.25)

    def start_holder(self, case: Case, node: str, side: str):
        if case.holder is None:
            return None
        out = f"/tmp/holder-{case.name}-{side}.out"
        self.sh(f"rm -f {out}")
        holder = self.vm.run_bg(["bash", "-c", case.holder.format(node=node, out=out)])
        self.wait(f"{case.name}: {node} held open", lambda: self.sh(f"test -e {out} && echo y", check=False).stdout)
        return holder

    def node(self, case: Case, vendor: str) -> str:
        return self.wait(f"{case.name}: the host-side node", lambda: self.sh(
            case.node.format(vendor=vendor), check=False).stdout.split("\n")[0])

    def timed(self, case: Case, node: str, pid: int | None = None) -> tuple[float, float]:
        """Seconds of the host command, and the CPU seconds process `pid` (our serve, all its threads)
        used meanwhile (proc(5) stat fields 14 and 15, utime and stime in clock ticks; nan without pid)."""
        cmd = case.host_cmd.format(file=case.file, node=node)
        cpu = (f"cpu() {{ local f; read -r f < /proc/{pid}/stat; f=${{f##*) }}; set -- $f; echo $(( ${{12}} + ${{13}} )); }}; "
               if pid is not None else "cpu() { echo 0; }; ")
        r = self.sh(f"{cpu}c0=$(cpu); s=$EPOCHREALTIME; {cmd}; rc=$?; e=$EPOCHREALTIME; c1=$(cpu); "
                    f"echo \"$rc $s $e $((c1 - c0)) $(getconf CLK_TCK)\"", timeout=600)
        rc, start, end, ticks, hz = r.stdout.split()[-5:]
        if rc != "0":
            raise RuntimeError(f"{case.name}: {cmd} failed ({rc})\n{r.describe()}")
        return float(end) - float(start), (int(ticks) / int(hz) if pid is not None else float("nan"))

    # our gadget ------------------------------------------------------------
    def ours(self, case: Case, profile: str | None = None, tree: str | None = None) -> float:
        """One update through our gadget; the host command's seconds.  `profile`: a guest path for
        the pstats of a profiled run (gadget_profile.py); self.persist_after: an experiment."""
        image = f"ours-{case.name}.bin"
        host_img = self.vm.xfer_dir / image
        for p in (host_img, host_img.with_name(image + ".state.json")):
            if p.exists():
                p.unlink()
        serve = f"serve {case.serve} --image {self.vm.guest_path(image)} --transport functionfs"
        wrapper = (f" --profile {profile}" if profile else "") + \
            (f" --persist-after {self.persist_after}" if self.persist_after is not None else "")
        if tree is not None:  # the baseline: bootkit from that tree (the guest's PYTHONPATH names ours)
            cmd = f"exec env PYTHONPATH={shlex.quote(tree)} python3 -m bootkit {serve}"
        elif wrapper:
            cmd = f"exec python3 {ROOT / 'benchmarks' / 'gadget_profile.py'}{wrapper} {serve}"
        else:
            cmd = f"exec bootkit {serve}"
        daemon = self.vm.run_bg(cmd, cwd=self.vm.guest_xfer_dir)
        holder = None
        try:
            node = self.wait(f"{case.name}: our {case.usb_id}", lambda: self.sh(
                case.node.format(vendor="bootkit"), check=False).stdout.split("\n")[0], daemon=daemon)
            if case.host_prep:
                self.sh(case.host_prep.format(file=case.file, node=node))
            holder = self.start_holder(case, node, "ours")
            seconds, cpu = self.timed(case, node, daemon.pid)
            self.cpu.append((case.name, cpu, seconds))
            if holder is not None:
                out = f"/tmp/holder-{case.name}-ours.out"
                self.wait(f"{case.name}: our device's {case.replies} answers", lambda: self.sh(
                    f"[ $(stat -c %s {out}) -ge {case.replies} ] && echo y", check=False).stdout, timeout=30)
            if case.host_done:
                self.sh(case.host_done.format(file=case.file, node=node), check=False)
            if case.leaves:
                # a complete update: the device leaves for its application, serve exits by itself
                self.wait(f"{case.name}: serve exiting after the update",
                          lambda: "" if daemon.poll() is None else "exited", timeout=60)
        finally:
            if holder is not None:
                holder.stop()
            res = daemon.stop()
        if res.rc != 0:
            raise RuntimeError(f"{case.name}: serve failed\n{res.describe()}")
        got = host_img.read_bytes()[:len(case.firmware)]  # the image file starts at the flash's first address
        if got != case.firmware:
            raise RuntimeError(f"{case.name}: our device's flash does not hold the firmware\n{res.describe()}")
        return seconds

    # the kernel's function --------------------------------------------------
    def kernel_build(self, case: Case) -> None:
        g = KERNEL_GADGET
        fn = f"{g}/functions/{case.kernel_function}"
        setup = case.kernel_setup.format(xfer=self.vm.guest_xfer_dir)
        self.sh(f"set -e; mkdir {g}; cd {g}; echo 0x1d6b > idVendor; echo 0x0104 > idProduct; "
                f"mkdir strings/0x409; echo Linux > strings/0x409/manufacturer; "
                f"echo 'kernel {case.kernel_function}' > strings/0x409/product; echo 0001 > strings/0x409/serialnumber; "
                f"mkdir configs/c.1; mkdir {fn}; cd {fn}; {setup}; ln -s {fn} {g}/configs/c.1/")

    def kernel_remove(self) -> None:
        g = KERNEL_GADGET
        self.sh(f"[ -d {g} ] || exit 0; echo '' > {g}/UDC 2>/dev/null; rm -f {g}/configs/c.1/*.*; "
                f"rmdir {g}/configs/c.1 {g}/functions/* {g}/strings/0x409 {g}", check=False)

    def kernel(self, case: Case) -> float:
        out = f"/tmp/kernel-{case.name}.out"
        self.sh(f"ls /sys/class/udc | head -1 > {KERNEL_GADGET}/UDC")
        reader = holder = None
        try:
            node = self.node(case, vendor="Linux")
            if case.kernel_reader is not None:
                self.wait(f"{case.kernel_node}", lambda: self.sh(f"test -e {case.kernel_node} && echo y",
                                                                 check=False).stdout)
                self.sh(f"rm -f {out}")
                reader = self.vm.run_bg(["bash", "-c", case.kernel_reader.format(out=out)])
            if case.host_prep:
                self.sh(case.host_prep.format(file=case.file, node=node))
            holder = self.start_holder(case, node, "kernel")
            seconds, _ = self.timed(case, node)
            expected = case.file if case.received is None else case.file.rsplit(".", 1)[0] + ".hidg"
            size = len(case.payload if case.received is None else case.received)
            if reader is not None:
                # the host command returns once its last transfer completed; the reader may still be
                # writing the last bytes to its file
                self.wait(f"{case.name}: the kernel function's reader getting {size} bytes",
                          lambda: self.sh(f"[ $(stat -c %s {out}) -ge {size} ] && echo y", check=False).stdout,
                          timeout=30)
                self.sh(f"cmp {out} {expected}")
            else:
                self.sh(f"cmp {case.file} {MNT}/{case.file}")
            if case.host_done:
                self.sh(case.host_done.format(file=case.file, node=node), check=False)
        finally:
            if holder is not None:
                holder.stop()
            if reader is not None:
                reader.stop()
            self.sh(f"echo '' > {KERNEL_GADGET}/UDC", check=False)
        return seconds


def run_class(bench: Bench, case: Case, runs: int, log=print) -> dict:
    vm = bench.vm
    (vm.xfer_dir / case.file).write_bytes(case.payload)
    for name, data in case.extra_files.items():
        (vm.xfer_dir / name).write_bytes(data)
    if case.name == "msc":
        bench.sh("rm -f /tmp/kernel-msc.img && truncate -s 8M /tmp/kernel-msc.img && "
                 "mkfs.vfat /tmp/kernel-msc.img >/dev/null")
    if case.name == "cdc":
        vid, pid = case.usb_id.split(":")
        bench.sh(f"echo '{vid} {pid} 2 {NO_UNION_REFERENCE}' > /sys/bus/usb/drivers/cdc_acm/new_id", check=False)
    bench.kernel_remove()
    bench.kernel_build(case)
    ours, kernel, busy, base = [], [], [], []
    try:
        for i in range(runs):
            if bench.baseline is None:
                order = ("ours", "kernel") if i % 2 == 0 else ("kernel", "ours")
            else:  # each side first, second and third in turn
                sides = ("ours", "kernel", "baseline")
                order = sides[i % 3:] + sides[:i % 3]
            for side in order:
                if side == "kernel":
                    t = bench.kernel(case)
                else:
                    t = bench.ours(case, tree=bench.baseline if side == "baseline" else None)
                {"ours": ours, "kernel": kernel, "baseline": base}[side].append(t)
                cpu = ""
                if side == "ours":
                    busy.append(bench.cpu[-1][1] / t)
                if side != "kernel":
                    cpu = f", serve's CPU {bench.cpu[-1][1]:.2f} s"
                log(f"  {case.name} run {i + 1}/{runs} {side}: {t:.3f} s "
                    f"({len(case.payload) / t / 1024:.1f} KiB/s{cpu})")
    finally:
        bench.kernel_remove()
    ratios = [k / o for o, k in zip(ours, kernel)]  # throughput ratio = time ratio inverted
    return {"case": case, "ours": ours, "kernel": kernel, "ratios": ratios, "busy": busy, "baseline": base,
            "base_ratios": [k / b for b, k in zip(base, kernel)], "vs_base": [b / o for o, b in zip(ours, base)]}


def profile_class(bench: Bench, case: Case, top: int = 25) -> str:
    (bench.vm.xfer_dir / case.file).write_bytes(case.payload)
    if case.name == "cdc":
        vid, pid = case.usb_id.split(":")
        bench.sh(f"echo '{vid} {pid} 2 {NO_UNION_REFERENCE}' > /sys/bus/usb/drivers/cdc_acm/new_id", check=False)
    out = bench.vm.guest_path(f"profile-{case.name}.pstats")
    seconds = bench.ours(case, profile=out)
    import io
    buf = io.StringIO()
    saved = ROOT / "build" / f"profile-{case.name}.pstats"
    saved.parent.mkdir(exist_ok=True)
    saved.write_bytes((bench.vm.xfer_dir / f"profile-{case.name}.pstats").read_bytes())
    stats = pstats.Stats(str(saved), stream=buf)
    stats.sort_stats("tottime").print_stats(top)
    return (f"{case.name}: {len(case.payload)} bytes in {seconds:.2f} s under the profiler (CPU time per thread; "
            f"all of it in {saved})\n{buf.getvalue()}")


# --------------------------------------------------------------------------
# reporting

def summary(results: list[dict], runs: int) -> dict:
    out = {}
    for r in results:
        case, ratios = r["case"], r["ratios"]
        med = statistics.median(ratios)
        out[f"gadget_vs_kernel.{case.name}"] = {
            "median": round(med, 3), "spread": [round(min(ratios), 3), round(max(ratios), 3)],
            "runs": len(ratios), "target": TARGET, "met": med >= TARGET,
            "unit": "ours/kernel throughput (higher is better)",
            "ours_kib_s": round(len(case.payload) / statistics.median(r["ours"]) / 1024, 1),
            "kernel_kib_s": round(len(case.payload) / statistics.median(r["kernel"]) / 1024, 1),
            "payload_bytes": len(case.payload),
            "ours_cpu_share": round(statistics.median(r["busy"]), 2),
        }
        if r["baseline"]:
            out[f"gadget_vs_kernel.{case.name}"].update(
                baseline_median=round(statistics.median(r["base_ratios"]), 3),
                baseline_spread=[round(min(r["base_ratios"]), 3), round(max(r["base_ratios"]), 3)],
                ours_over_baseline=round(statistics.median(r["vs_base"]), 3),
                ours_over_baseline_spread=[round(min(r["vs_base"]), 3), round(max(r["vs_base"]), 3)])
    return out


def table(results: list[dict], markdown: bool) -> str:
    head = ("class", "payload", "ours KiB/s", "kernel KiB/s", "ours/kernel", "spread", "target", "met",
            "our CPU/wall")
    based = any(r["baseline"] for r in results)
    if based:
        head += ("baseline/kernel", "ours/baseline", "spread")
    rows = []
    for r in results:
        case, ratios = r["case"], r["ratios"]
        o = len(case.payload) / statistics.median(r["ours"]) / 1024
        k = len(case.payload) / statistics.median(r["kernel"]) / 1024
        med = statistics.median(ratios)
        rows.append((case.name, f"{len(case.payload) // 1024} KiB {case.file.split('.')[-1]}", f"{o:.1f}",
                     f"{k:.1f}", f"{med:.2f}", f"{min(ratios):.2f}-{max(ratios):.2f}", f">= {TARGET}",
                     "yes" if med >= TARGET else "no", f"{statistics.median(r['busy']):.2f}"))
        if based:
            b, v = r["base_ratios"], r["vs_base"]
            rows[-1] += (f"{statistics.median(b):.2f}", f"{statistics.median(v):.2f}", f"{min(v):.2f}-{max(v):.2f}")
    rows.append(("midi", "-", "-", "-", "-", "-", f">= {TARGET}", "n/a", "-") + (("-",) * 3 if based else ()))
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(str(x[i])) for x in [head] + rows) for i in range(len(head))]
    return "\n".join("  ".join(str(c).rjust(w) for c, w in zip(row, widths)) for row in [head] + rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5, help="runs per side and class (default 5), sides alternating")
    ap.add_argument("--classes", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    ap.add_argument("--json", metavar="OUT", help="write {name: {median, spread, runs, target, met}} to OUT")
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown (docs/performance.md)")
    ap.add_argument("--profile", metavar="CLASS", help="also run our gadget for CLASS once under cProfile")
    ap.add_argument("--baseline", metavar="DIR",
                    help="also run our gadget from the bootkit tree DIR (an older commit), in the same boot")
    ap.add_argument("--persist-after", type=float, metavar="S",
                    help="an experiment: our emulator saves its image file after S s of changes (default 1)")
    args = ap.parse_args(argv)
    names = [c for c in args.classes.split(",") if c]
    unknown = [c for c in names + ([args.profile] if args.profile else []) if c not in CASES]
    if unknown:
        print(f"bench_gadget_vs_kernel: unknown class {unknown[0]!r} (one of {', '.join(CASES)})", file=sys.stderr)
        return 2
    ok, why = vm_available()
    if not ok:
        print(f"bench_gadget_vs_kernel: cannot boot the VM: {why}", file=sys.stderr)
        return 1
    # The guest's root is read-only: without byte code on disk every bootkit run in it would
    # compile the package first (a second or more under TCG).
    import compileall
    for tree in [ROOT] + ([Path(args.baseline)] if args.baseline else []):
        compileall.compile_dir(str(tree / "bootkit"), quiet=1)
    results = []
    with GuestVM(timeout=180) as vm:
        bench = Bench(vm)
        bench.persist_after = args.persist_after
        bench.baseline = args.baseline
        bench.sh(f"modprobe -a {MODULES}")
        log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
        for name in names:
            results.append(run_class(bench, CASES[name](), args.runs, log))
        profile = profile_class(bench, CASES[args.profile]()) if args.profile else ""
        kver = vm.kver
    print(f"Our FunctionFS gadgets against the kernel's functions on dummy_hcd, one VM boot (guest kernel {kver}, "
          f"TCG; {args.runs} runs per side, alternating; ratio = ours/kernel throughput per pair, median and "
          f"min-max)" + (f"; EXPERIMENT: our flash image saved after {args.persist_after} s of changes, not 1 s"
                         if args.persist_after is not None else "")
          + (f"; baseline: our gadget from {args.baseline}, the three sides rotating" if args.baseline else "")
          + "\n")
    print(table(results, args.markdown))
    print("\nmidi: not comparable on FunctionFS: f_fs refuses the USB-MIDI class-specific descriptors, so "
          "snd-usb-audio cannot bind our MIDI function (see the module docstring).\n"
          "our CPU/wall: CPU seconds of our serve process (all threads) over the host command's seconds, median: "
          "near 1, the gadget is bound by its own Python under TCG, not by waiting for the bus.")
    if profile:
        print("\n" + profile)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(summary(results, args.runs), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
