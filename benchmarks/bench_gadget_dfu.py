"""dfu-util against bootkit, into the same FunctionFS gadget, in one VM boot.

Boots the Debian kernel in QEMU (TCG) with the VM test harness, serves an
emulated STM32F411 (DfuSe, 256 KiB) and an STM32F103C8 (plain DFU 1.1, 54 KiB
at 0x08002000) through bootkit's FunctionFS gadget on dummy_hcd, and has the
guest kernel's USB host download the same image with `dfu-util -D` and with
bootkit, side by side.  Both sides download without verifying and without
leaving (`dfu-util -D` does neither; bootkit gets --no-verify --no-leave).

bootkit runs as a user installs it: `pip install` into a clean venv
(build/bench-venv), not the editable development install, and without the
harness's PYTHONPATH, so it imports what the venv holds.  What is installed,
and what the gadget side runs, is a commit (--tree, default HEAD, exported
with `git archive` to build/bench-src), not the shared working tree with
whatever others have not committed; each record names it.

Three comparisons per chip, ours/dfu-util, lower is better, each a median
with its spread (min-max) over --runs runs (at least 5), the tools
alternating within a run:

* download (target <= 1.0): from opening the device to the end of the
  download.  Ours is the time `bootkit flash` reports for it; dfu-util's is
  its whole command minus its process start-up (the median `dfu-util -V` in
  the same boot), so its libusb_init and device search still count.
* whole command, cold (target <= 1.0): `bootkit flash` against `dfu-util -D`,
  each a new process against a freshly served board, what a user waits for at
  a prompt.  Under TCG every Python instruction is emulated and CPython's own
  start-up and bootkit's imports are a large part of ours (the start-up rows
  say how much); a native board pays far less of it.
* per flash in a persistent process (target <= 1.0): the answer to the
  start-up cost.  We chose a production script over a waiting CLI mode: a
  line that flashes board after board is scripted anyway (serial numbers,
  logging, a pass/fail light), and the public API (bootkit.open_target /
  Target.flash, docs/api.md) already does it with nothing new to learn,
  where a `--wait` mode would be one more CLI option for the same loop.  The
  script (PRODUCTION below, run as is in the guest) imports bootkit once,
  loads both images once, opens the target by VID:PID, and for each flash
  waits for the board to be on the bus and flashes it.  It is timed per
  Target.flash call; dfu-util's side is its whole command (`dfu-util -D`,
  bash's `time`, as in the cold row), run by the same script between its
  own flashes, tools alternating, images alternating (A, B, A, ...), so
  every flash changes the whole image.  After every flash, of either tool,
  the script reads the board back through bootkit (not timed) and compares;
  after the loop the board's image file must hold the last image written.
  Both sides here leave the board in its bootloader (no leave, as `dfu-util
  -D`): a leave would add two different things (bootkit watches the bus for
  what enumerates next; dfu-util does not) and, on the next flash, the
  detach of the application, where dfu-util 0.11 sleeps its --detach-delay.

In the plain DFU case dfu-util 0.11 sleeps a fixed second once the device
reports dfuMANIFEST(-SYNC) ("some devices need some time", dfu_load.c); that
second is in its whole command and in its download.

    python benchmarks/bench_gadget_dfu.py --runs 5 --markdown
    python benchmarks/bench_gadget_dfu.py --json    # last line: run_all records
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from run_all import emit, record  # noqa: E402
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

# The production script: one process, bootkit imported once, board after board.  The
# dfu-util lines are the benchmark's (its rival's whole command between our flashes).
PRODUCTION = r'''
import json
import subprocess
import sys
import time

import usb.core

import bootkit

job = json.loads(sys.argv[1])
vid, pid = (int(x, 16) for x in job["device"].split(":"))
images = [bootkit.load_image(p, chip=job["chip"], address=job["base"]) for p in job["images"]]
raw = [open(p, "rb").read() for p in job["images"]]
target = bootkit.open_target("dfu", device=job["device"], chip=job["chip"], dialect=job["dialect"])
options = {"transfer_size": job["transfer"]} if job["transfer"] else {}


def wait_for_board(timeout=30.0):
    """A line waits for the next board: poll the bus for its VID:PID."""
    deadline = time.monotonic() + timeout
    while usb.core.find(idVendor=vid, idProduct=pid, backend=target.backend) is None:
        if time.monotonic() > deadline:
            sys.exit(f"no {job['device']} on the bus within {timeout:g} s")
        time.sleep(0.05)


def dfu_util(path):
    """dfu-util's whole command, timed by bash as in the cold rows."""
    cmd = f"{job['dfu_util']} -D {path}"
    r = subprocess.run(["bash", "-c", f"TIMEFORMAT=%R; {{ time {cmd} >dfu-util.log 2>&1; echo $? >&2; }} 2>&1"],
                       capture_output=True, text=True)
    seconds, rc = r.stdout.split()[-2:]
    if rc != "0":
        sys.exit(f"dfu-util failed ({rc}): {cmd}\n{open('dfu-util.log').read()}")
    return float(seconds)


flashes, n = [], 0
for i in range(job["runs"]):
    for tool in (("dfu-util", "bootkit") if i % 2 == 0 else ("bootkit", "dfu-util")):
        k, n = n % 2, n + 1
        wait_for_board()
        if tool == "dfu-util":
            seconds = dfu_util(job["images"][k])
        else:
            t0 = time.perf_counter()
            result = target.flash(images[k], verify=False, leave=False, **options)
            seconds = time.perf_counter() - t0
        print(f"flash {n}: {tool} wrote image {k} in {seconds:.2f} s", file=sys.stderr, flush=True)
        for attempt in range(3):  # the check, not timed; a loaded TCG guest can miss a 5-s USB timeout
            try:
                back = target.read(start=job["base"], length=len(raw[k]))
                break
            except bootkit.HostError as exc:
                print(f"flash {n}: read-back attempt {attempt + 1} failed: {exc}", file=sys.stderr, flush=True)
                if attempt == 2:
                    raise
                time.sleep(1.0)
        same = back.tobytes(job["base"], job["base"] + len(raw[k])) == raw[k]
        if not same:
            sys.exit(f"after {tool}'s flash {n} the board does not hold image {k}")
        flashes.append({"tool": tool, "seconds": seconds, "image": k, "checked": same, "read_attempts": attempt + 1})
target.close()
print(json.dumps(flashes))
'''

CASES = (
    # chip, dialect, usb id, base address, size, dfu-util arguments, transfer size
    ("stm32f411", "dfuse", "0483:df11", 0x08000000, 256 * 1024, "-a 0 -s 0x08000000", 2048),
    ("stm32f103c8", "dfu", "1209:b00d", 0x08002000, 54 * 1024, "-a 0", 1024),
)
TARGET = "<= 1.0"


def wait_usb(vm, usb_id, timeout=30.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        r = vm.run("cat /sys/bus/usb/devices/*/idVendor /sys/bus/usb/devices/*/idProduct 2>/dev/null | paste -sd' '")
        vid, pid = usb_id.split(":")
        if vid in r.stdout.split() and pid in r.stdout.split():
            return
        time.sleep(0.2)
    raise RuntimeError(f"{usb_id} did not enumerate in the guest")


def source_tree(tree: str) -> tuple[Path, str]:
    """The sources to measure and what they are: ``tree`` a commit (exported with git archive
    to build/bench-src) or "." (the working tree as it is, named COMMIT+dirty when it differs)."""
    git = ["git", "-C", str(ROOT)]
    if tree == ".":
        head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run([*git, "status", "--porcelain", "--", "bootkit", "pyproject.toml"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return ROOT, head + ("+dirty" if dirty else "")
    sha = subprocess.run([*git, "rev-parse", "--short", tree], capture_output=True, text=True,
                         check=True).stdout.strip()
    out = ROOT / "build" / "bench-src"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    archive = subprocess.run([*git, "archive", sha], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out, sha


def bench_venv(src: Path) -> Path:
    """build/bench-venv with ``src`` installed (not editable); its bin directory."""
    venv = ROOT / "build" / "bench-venv"
    if not (venv / "bin" / "python3").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python3"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run(pip + [str(src)], check=True)  # dependencies, once
    subprocess.run(pip + ["--no-deps", "--force-reinstall", str(src)], check=True)  # these sources, every run
    return venv / "bin"


class Bench:
    def __init__(self, vm: GuestVM, venv_bin: Path, src: Path, runs: int, log=print):
        self.vm, self.venv_bin, self.src, self.runs, self.log = vm, venv_bin, src, runs, log

    def timed(self, cmd: str) -> float:
        """bash's time keyword: wall-clock seconds of the whole command (its output dropped)."""
        r = self.vm.run(["bash", "-c", f"unset PYTHONPATH; TIMEFORMAT=%R; {{ time {cmd} >/dev/null 2>&1 ; }} 2>&1"],
                        timeout=120)
        return float(r.stdout.split()[-1])

    def startup(self) -> dict[str, list[float]]:
        """Process start-up in this guest, alternating: dfu-util, CPython, CPython + bootkit's imports."""
        py = self.venv_bin / "python3"
        cmds = {"dfu-util -V": "dfu-util -V", "CPython (python3 -c pass)": f"{py} -c pass",
                "CPython + bootkit's imports for flash --via dfu":
                    f"{py} -c 'import bootkit.cli, bootkit.classes.dfu.host, usb.backend.libusb1'"}
        out: dict[str, list[float]] = {k: [] for k in cmds}
        for _ in range(self.runs):
            for name, cmd in cmds.items():
                out[name].append(self.timed(cmd))
        return out

    def serve(self, chip: str, dialect: str, usb_id: str, image: str):
        """A freshly plugged board: our gadget serving ``chip`` (flash image ``image``, erased when new)."""
        (self.vm.xfer_dir / image).unlink(missing_ok=True)
        daemon = self.vm.run_bg(f"PYTHONPATH={self.src} exec python3 {self.vm.guest_path('serve.py')} {chip} "
                                f"{self.vm.guest_path(image)} {dialect}")
        try:
            wait_usb(self.vm, usb_id)
            time.sleep(0.3)
            refused = "refused class-specific" in daemon.output().stdout
        except BaseException:
            daemon.stop()
            raise
        return daemon, refused

    def cold(self, chip, dialect, usb_id, base, size, dfu_args, transfer) -> dict[str, list[float]]:
        """Each tool a new process against a freshly served board, alternating."""
        fw = random.Random(chip).randbytes(size)
        (self.vm.xfer_dir / "fw.bin").write_bytes(fw)
        times: dict[str, list[float]] = {"dfu-util": [], "bootkit": [], "bootkit download": []}
        for i in range(self.runs):
            for tool in (("dfu-util", "bootkit") if i % 2 == 0 else ("bootkit", "dfu-util")):
                daemon, refused = self.serve(chip, dialect, usb_id, chip + ".bin")
                try:
                    t_flag = f"-t {transfer}" if refused else ""
                    if tool == "dfu-util":
                        cmd = f"dfu-util -d {usb_id} {dfu_args} {t_flag} -D fw.bin"
                    else:
                        cmd = (f"{self.venv_bin}/bootkit flash fw.bin --via dfu --dialect {dialect} "
                               f"--device {usb_id} --chip {chip} --address 0x{base:X} --no-verify --no-leave "
                               "--no-progress " + (f"--transfer-size {transfer}" if refused else ""))
                    r = self.vm.run(["bash", "-c", f"unset PYTHONPATH; TIMEFORMAT=%R; "
                                     f"{{ time {cmd} >out.txt 2>&1; echo $? >&2; }} 2>&1"],
                                    timeout=300, cwd=self.vm.guest_xfer_dir)
                    seconds, rc = r.stdout.split()[-2:]  # time reports before the echo
                    out = (self.vm.xfer_dir / "out.txt").read_text()
                    if rc != "0":
                        raise RuntimeError(f"{tool} failed ({rc}) on {chip}: {cmd}\n{out}")
                    times[tool].append(float(seconds))
                    if tool == "bootkit":  # its own "in X s": device open to the end of the download
                        times["bootkit download"].append(float(re.search(r" in ([0-9.]+) s ", out).group(1)))
                finally:
                    daemon.stop()
                self.check_image(chip + ".bin", base, fw, f"{tool} (cold)")
                self.log(f"  cold {chip} run {i + 1} {tool}: {times[tool][-1]:.2f} s")
        return times

    def persistent(self, chip, dialect, usb_id, base, size, dfu_args, transfer) -> list[dict]:
        """PRODUCTION in one process against one served board, both tools, images alternating."""
        paths = []
        for k in range(2):
            (self.vm.xfer_dir / f"fw{k}.bin").write_bytes(random.Random(f"{chip}/{k}").randbytes(size))
            paths.append(self.vm.guest_path(f"fw{k}.bin"))
        (self.vm.xfer_dir / "production.py").write_text(PRODUCTION)
        daemon, refused = self.serve(chip, dialect, usb_id, chip + "-line.bin")
        try:
            job = {"device": usb_id, "chip": chip, "dialect": dialect, "base": base, "images": paths,
                   "transfer": transfer if refused else None, "runs": self.runs,
                   "dfu_util": f"dfu-util -d {usb_id} {dfu_args} " + (f"-t {transfer}" if refused else "")}
            r = self.vm.run(["bash", "-c", f"unset PYTHONPATH; exec {self.venv_bin}/python3 "
                             f"{self.vm.guest_path('production.py')} \"$0\"", json.dumps(job)],
                            timeout=1800, cwd=self.vm.guest_xfer_dir)
            if not r.ok:
                raise RuntimeError(f"the production script failed on {chip}:\n{r.describe()}")
            flashes = json.loads(r.stdout.strip().splitlines()[-1])
        finally:
            daemon.stop()
        last = flashes[-1]["image"]
        self.check_image(chip + "-line.bin", base, (self.vm.xfer_dir / f"fw{last}.bin").read_bytes(),
                         "the production script's last flash")
        for f in flashes:
            self.log(f"  persistent {chip} {f['tool']} image {f['image']}: {f['seconds']:.2f} s (read back: same"
                     + (f", after {f['read_attempts']} attempts)" if f["read_attempts"] > 1 else ")"))
        return flashes

    def check_image(self, name: str, base: int, fw: bytes, who: str) -> None:
        image = (self.vm.xfer_dir / name).read_bytes()
        off = base - 0x08000000
        if image[off:off + len(fw)] != fw:
            raise RuntimeError(f"{who} left a wrong image in {name}")


def ratios(ours: list[float], theirs: list[float]) -> list[float]:
    """Per run: run i of ours over run i of theirs."""
    return [o / t for o, t in zip(ours, theirs)]


def seconds(ours: list[float], theirs: list[float]) -> dict:
    """The per-run seconds behind a ratio, kept in its record (what the ratio is made of)."""
    return {"bootkit_s": [round(x, 3) for x in ours], "dfu_util_s": [round(x, 3) for x in theirs]}


def records(rows: list[dict], start: dict[str, list[float]], kver: str, commit: str) -> list[dict]:
    where = f"in QEMU/TCG (guest kernel {kver}), FunctionFS gadget on dummy_hcd, bootkit {commit}"
    recs = []
    dfu_util_start = statistics.median(start["dfu-util -V"])
    for row in rows:
        chip, dialect, size = row["chip"], row["dialect"], row["size"]
        head = f"dfu-util vs bootkit, {chip} ({dialect}) {size // 1024} KiB"
        cold, flashes = row["cold"], row["persistent"]
        theirs_download = [t - dfu_util_start for t in cold["dfu-util"]]
        recs.append(record(f"{head}: download, bootkit / dfu-util",
                           f"bootkit's own download time vs dfu-util -D minus its median start-up (dfu-util -V), "
                           f"{where}", ratios(cold["bootkit download"], theirs_download), target=TARGET,
                           **seconds(cold["bootkit download"], theirs_download)))
        recs.append(record(f"{head}: whole command, cold, bootkit flash / dfu-util -D",
                           f"each a new process against a freshly served board, {where}",
                           ratios(cold["bootkit"], cold["dfu-util"]), target=TARGET,
                           **seconds(cold["bootkit"], cold["dfu-util"])))
        ours = [f["seconds"] for f in flashes if f["tool"] == "bootkit"]
        theirs = [f["seconds"] for f in flashes if f["tool"] == "dfu-util"]
        recs.append(record(f"{head}: per flash in one persistent process (Target.flash) / dfu-util -D",
                           f"a production script importing bootkit once vs dfu-util's whole command per flash, "
                           f"images alternating, each flash read back, {where}", ratios(ours, theirs),
                           target=TARGET, **seconds(ours, theirs),
                           read_attempts=[f["read_attempts"] for f in flashes]))
    for name, values in start.items():
        recs.append(record(f"process start-up in the TCG guest: {name}", f"wall-clock seconds, {where}",
                           values, unit="s", seconds_per_run=[round(x, 3) for x in values]))
    return recs


def table(rows: list[dict], start: dict[str, list[float]], markdown: bool) -> str:
    head = ("chip", "KiB", "comparison", "dfu-util s", "bootkit s", "ratio median", "ratio spread", "target", "met")
    out = []
    dfu_util_start = statistics.median(start["dfu-util -V"])
    for row in rows:
        cold, flashes = row["cold"], row["persistent"]
        theirs_dl = [t - dfu_util_start for t in cold["dfu-util"]]
        kinds = (("download", cold["bootkit download"], theirs_dl),
                 ("whole command, cold", cold["bootkit"], cold["dfu-util"]),
                 ("per flash, persistent process", [f["seconds"] for f in flashes if f["tool"] == "bootkit"],
                  [f["seconds"] for f in flashes if f["tool"] == "dfu-util"]))
        for what, ours, theirs in kinds:
            r = ratios(ours, theirs)
            med = statistics.median(r)
            out.append((f"{row['chip']} ({row['dialect']})", str(row["size"] // 1024), what,
                        f"{statistics.median(theirs):.2f}", f"{statistics.median(ours):.2f}", f"{med:.2f}",
                        f"{min(r):.2f}-{max(r):.2f}", TARGET, "yes" if med <= 1.0 else "no"))
    for name, values in start.items():
        out.append(("start-up", "-", name, "-", "-", f"{statistics.median(values):.2f} s",
                    f"{min(values):.2f}-{max(values):.2f} s", "-", "-"))
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in out]
        return "\n".join(lines)
    widths = [max(len(x[i]) for x in [head, *out]) for i in range(len(head))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in [head, *out])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5, help="runs per tool, comparison and chip (at least 5)")
    ap.add_argument("--chips", default=",".join(c[0] for c in CASES), help="comma-separated")
    ap.add_argument("--tree", default="HEAD", help="the commit to measure (default HEAD), or '.': the working tree")
    ap.add_argument("--json", action="store_true", help="last line: the records, for run_all.py")
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = ap.parse_args(argv)
    if args.runs < 5:
        ap.error("--runs: at least 5 (a median and a spread)")
    chips = args.chips.split(",")
    ok, why = vm_available()
    if not ok:
        print(f"cannot boot the VM: {why}", file=sys.stderr)
        return 1
    # The guest's root is read-only: without byte code on disk every run of the gadget
    # side (from this tree) would compile the package first (a second under TCG).
    import compileall

    src, commit = source_tree(args.tree)
    compileall.compile_dir(str(src / "bootkit"), quiet=1)
    venv_bin = bench_venv(src)
    rows = []
    with GuestVM(timeout=180) as vm:
        vm.run("modprobe -a dummy_hcd libcomposite usb_f_fs", check=True)
        (vm.xfer_dir / "serve.py").write_text(SERVE)
        bench = Bench(vm, venv_bin, src, args.runs, log=lambda m: print(m, flush=True))
        start = bench.startup()
        for case in CASES:
            if case[0] not in chips:
                continue
            chip, dialect, _id, _base, size = case[:5]
            rows.append({"chip": chip, "dialect": dialect, "size": size, "cold": bench.cold(*case),
                         "persistent": bench.persistent(*case)})
        kver = vm.kver
    print(f"dfu-util vs bootkit into bootkit's FunctionFS gadget, one VM boot (QEMU/TCG, guest kernel {kver}); "
          f"{args.runs} runs per comparison, tools alternating; bootkit {commit} from a clean venv; ratios bootkit/dfu-util "
          "per run, lower is better; seconds are medians")
    print(table(rows, start, args.markdown))
    emit(records(rows, start, kver, commit), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
