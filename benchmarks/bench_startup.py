"""Start-up time of `bootkit` commands against `python -c pass` (issue 22 item 3), and
optionally against an earlier revision.

Every command is a whole `python -m bootkit ...` process, timed with time.perf_counter, in
one run: each round runs `python -c pass` and every command once, in an order that is
reversed every other round (drift on a shared machine hits all alike), --runs rounds after
one unmeasured warm-up.  The warm-up writes the bytecode caches: PYTHONDONTWRITEBYTECODE is
dropped from the children's environment, or every run would compile the modules changed
since the caches were last written and measure the compiler.  Printed per command: median,
IQR and min-max, and its ratio to `python -c pass` (ratio of the medians, and the spread of
the per-round ratios), against the target of issue 22 (under 2x for chips and
flash --via dfu --help; the others are shown for reference).

The commands:
  version     `bootkit --version`
  chips       `bootkit chips` (stdout discarded)
  flash-help  `bootkit flash --via dfu --help`
  flash       `bootkit flash SAMPLE.hex --via dfu --device 0000:0000`: loads the DFU host and
              pyusb's libusb backend, finds no device and exits 1 (checked, so a broken tree
              is not mistaken for a fast one)
  drop        `bootkit drop SAMPLE-stm32f411.hex --emulate stm32f411`: a whole drop through
              FAT on SCSI commands onto the emulated drive (pyfatfs), exit 0

--importtime N runs each command once under `python -X importtime` and prints the N modules
with the largest self time, the module count, and whether pkg_resources was imported.
--before REV also runs every command in REV (a temporary git worktree), side by side.
--markdown prints the table for docs/performance.md.  Nothing is asserted: this is a
measurement, not a test (tests/formats/test_formats_startup.py checks WHAT is imported).

Example:
    python benchmarks/bench_startup.py
    python benchmarks/bench_startup.py --runs 31 --importtime 12 --markdown
    python benchmarks/bench_startup.py --before HEAD~5 --only chips
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent      # this checkout
SAMPLE = Path("examples") / "firmware" / "sample-atmega32u4.hex"
SAMPLE_STM32 = Path("examples") / "firmware" / "sample-stm32f411.hex"
TARGET = 2.0  # times `python -c pass`
TARGETED = ("chips", "flash-help")


def commands(tree: Path) -> dict[str, tuple[list[str], int | None, str | None]]:
    """name -> (arguments after `python -m bootkit`, expected exit status, expected text in stderr)."""
    return {
        "version": (["--version"], 0, None),
        "chips": (["chips"], 0, None),
        "flash-help": (["flash", "--via", "dfu", "--help"], 0, None),
        "flash": (["flash", str(tree / SAMPLE), "--via", "dfu", "--device", "0000:0000"], 1, "no DFU device found"),
        "drop": (["drop", str(tree / SAMPLE_STM32), "--emulate", "stm32f411"], 0, None),
    }


def tree_env(tree: Path) -> dict[str, str]:
    env = dict(os.environ)
    # PYTHONPATH comes before site-packages (and before the editable install's own path or finder),
    # so `-m bootkit` runs this tree's code; checked once by check_tree()
    env["PYTHONPATH"] = os.pathsep.join([str(tree)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    for name in ("PYTHONSTARTUP", "PYTHONPROFILEIMPORTTIME", "PYTHONDONTWRITEBYTECODE"):
        env.pop(name, None)
    env["COLUMNS"] = "100"
    return env


def check_tree(tree: Path, cwd: Path) -> None:
    r = subprocess.run([sys.executable, "-c", "import bootkit; print(bootkit.__file__)"],
                       env=tree_env(tree), cwd=cwd, capture_output=True, text=True)
    where = Path(r.stdout.strip()).resolve() if r.returncode == 0 else None
    if where is None or tree.resolve() not in where.parents:
        raise SystemExit(f"bench_startup: {tree}: `import bootkit` loads {where or r.stderr.strip()!r}, "
                         "not this tree: benchmark invalid")


def run_once(tree: Path, argv: list[str], cwd: Path) -> tuple[float, int, str]:
    """One process: `python -c pass` when argv is empty, else `python -m bootkit ARGV`."""
    cmd = [sys.executable, "-c", "pass"] if not argv else [sys.executable, "-m", "bootkit", *argv]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=tree_env(tree), cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True)
    return time.perf_counter() - t0, r.returncode, r.stderr


def spread(values: list[float]) -> tuple[float, float, float, float, float]:
    """median, first and third quartile, min, max."""
    if len(values) >= 2:
        q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    else:
        q1 = q3 = values[0]
    return statistics.median(values), q1, q3, min(values), max(values)


def importtime(tree: Path, argv: list[str], cwd: Path) -> list[tuple[str, int, int]]:
    """(module, self us, cumulative us) for every import, from `python -X importtime`."""
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "bootkit", *argv], env=tree_env(tree),
                       cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       text=True)
    rows = []
    for line in r.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cumulative_us, name = line[len("import time:"):].split("|", 2)
        rows.append((name.strip(), int(self_us), int(cumulative_us)))
    return rows


def print_importtime(label: str, tree: Path, argv: list[str], cwd: Path, top: int, baseline: set[str]) -> None:
    rows = importtime(tree, argv, cwd)
    new = [r for r in rows if r[0] not in baseline]
    total = sum(s for _, s, _ in new)
    heavy = sorted({m.split(".")[0] for m, _, _ in rows} & {"pkg_resources", "setuptools"})
    print(f"  -X importtime (one run), {label}: {len(new)} modules beyond `python -c pass`'s, "
          f"{total / 1000:.1f} ms self time in all; pkg_resources {'IMPORTED' if heavy else 'not imported'}; "
          f"top {top} by self time:")
    for module, self_us, cumulative_us in sorted(new, key=lambda r: -r[1])[:top]:
        print(f"    {self_us / 1000:7.1f} ms self {cumulative_us / 1000:7.1f} ms cumulative  {module}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="example: python benchmarks/bench_startup.py --runs 21 --importtime 10",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=21, help="rounds, at least 5 (default 21)")
    ap.add_argument("--only", choices=tuple(commands(HERE)), action="append",
                    help="measure only this command (repeatable; default all)")
    ap.add_argument("--importtime", type=int, metavar="N", default=0,
                    help="also print the N slowest imports (-X importtime) of each command")
    ap.add_argument("--before", metavar="REV", help="also run every command in this revision, side by side")
    ap.add_argument("--markdown", action="store_true", help="also print the table for docs/performance.md")
    args = ap.parse_args(argv)
    if args.runs < 5:
        ap.error("--runs must be at least 5 (median and spread)")

    names = [n for n in commands(HERE) if not args.only or n in args.only]
    rows: list[tuple[str, float, tuple, float | None]] = []
    with tempfile.TemporaryDirectory(prefix="bootkit-startup-") as tmp:
        cwd = Path(tmp)  # sys.path[0] of -m/-c is the cwd: not a tree
        trees = {"this": HERE}
        if args.before:
            trees["before"] = cwd / "before"
            r = subprocess.run(["git", "-C", str(HERE), "worktree", "add", "--detach", str(trees["before"]),
                                args.before], capture_output=True, text=True)
            if r.returncode:
                lines = r.stderr.strip().splitlines()
                print(f"bench_startup: git worktree add {args.before}: {lines[-1] if lines else 'failed'}",
                      file=sys.stderr)
                return 2
        try:
            for tree in trees.values():
                check_tree(tree, cwd)
            print(f"python {sys.version.split()[0]} ({sys.executable}); {args.runs} rounds; {os.cpu_count()} cores, "
                  f"load average {os.getloadavg()[0]:.2f}")
            for label, tree in trees.items():
                rev = subprocess.run(["git", "-C", str(tree), "log", "-1", "--format=%h %s"],
                                     capture_output=True, text=True).stdout.strip()
                dirty = " (+ uncommitted changes)" if tree == HERE and subprocess.run(
                    ["git", "-C", str(tree), "status", "--porcelain", "--untracked-files=no", "--", "bootkit"],
                    capture_output=True, text=True).stdout.strip() else ""
                print(f"  {label + ':':7s} {rev[:76]}{dirty}")
            # what to run: (label, tree, argv); "pass" is `python -c pass`
            jobs = [("pass", HERE, [])] + [(f"{name}" + ("" if label == "this" else f" ({label})"), tree,
                                            commands(tree)[name][0]) for name in names
                                           for label, tree in trees.items()]
            expect = {job[0]: commands(job[1])[job[0].split(" ")[0]][1:] for job in jobs[1:]}
            for job, tree, cmd in jobs:  # warm-up: bytecode caches written, outcome checked
                _, rc, err = run_once(tree, cmd, cwd)
                if job == "pass":
                    continue
                want_rc, want_text = expect[job]
                last = err.strip().splitlines()[-1] if err.strip() else ""
                if rc != want_rc or (want_text and want_text not in err):
                    raise SystemExit(f"bench_startup: {job} exited {rc} ({last!r}), expected {want_rc}"
                                     + (f" with {want_text!r}" if want_text else "") + ": benchmark invalid")
            times: dict[str, list[float]] = {job: [] for job, _, _ in jobs}
            for i in range(args.runs):
                for job, tree, cmd in (jobs if i % 2 == 0 else jobs[::-1]):
                    times[job].append(run_once(tree, cmd, cwd)[0])
            base = times["pass"]
            med, q1, q3, lo, hi = spread(base)
            print(f"python -c pass\n  median {med * 1000:7.1f} ms   IQR {q1 * 1000:7.1f}-{q3 * 1000:7.1f} ms   "
                  f"min-max {lo * 1000:7.1f}-{hi * 1000:7.1f} ms")
            baseline = {m for m, _, _ in importtime_pass(cwd)} if args.importtime else set()
            for job, tree, cmd in jobs[1:]:
                med, q1, q3, lo, hi = spread(times[job])
                ratio = med / statistics.median(base)
                rounds = spread([a / b for a, b in zip(times[job], base)])
                name = job.split(" ")[0]
                target = TARGET if name in TARGETED else None
                verdict = "" if target is None else f"; target < {target}: {'met' if ratio < target else 'NOT met'}"
                print(f"bootkit {' '.join(cmd)}" + ("" if tree == HERE else f"   [{job}]"))
                print(f"  median {med * 1000:7.1f} ms   IQR {q1 * 1000:7.1f}-{q3 * 1000:7.1f} ms   "
                      f"min-max {lo * 1000:7.1f}-{hi * 1000:7.1f} ms")
                print(f"  ratio to python -c pass: {ratio:.2f}  (per-round IQR {rounds[1]:.2f}-{rounds[2]:.2f}, "
                      f"min-max {rounds[3]:.2f}-{rounds[4]:.2f}{verdict})")
                if args.importtime:
                    print_importtime(job, tree, cmd, cwd, args.importtime, baseline)
                if tree == HERE:
                    rows.append((name, ratio, rounds, target))
        finally:
            if args.before:
                subprocess.run(["git", "-C", str(HERE), "worktree", "remove", "--force", str(trees["before"])],
                               capture_output=True)
    if args.markdown:
        print()
        print(f"Measured with `python benchmarks/bench_startup.py --runs {args.runs}` (whole processes, "
              f"{args.runs} rounds, alternating; ratio = the command's median time / `python -c pass`'s).")
        print()
        print("| command | ratio to `python -c pass` (median) | per-round IQR | min-max | target | met |")
        print("|---|---|---|---|---|---|")
        for name, ratio, rounds, target in rows:
            print(f"| `bootkit {' '.join(commands(Path('.'))[name][0]).replace('examples/firmware/', '')}` | "
                  f"{ratio:.2f} | {rounds[1]:.2f}-{rounds[2]:.2f} | {rounds[3]:.2f}-{rounds[4]:.2f} | "
                  f"{'-' if target is None else f'< {target}'} | "
                  f"{'-' if target is None else ('yes' if ratio < target else 'no')} |")
    return 0


def importtime_pass(cwd: Path) -> list[tuple[str, int, int]]:
    """The imports of `python -c pass` itself (site, .pth files): left out of the lists."""
    r = subprocess.run([sys.executable, "-X", "importtime", "-c", "pass"], env=tree_env(HERE), cwd=cwd,
                       capture_output=True, text=True)
    return [(line.rsplit("|", 1)[1].strip(), 0, 0) for line in r.stderr.splitlines()
            if line.startswith("import time:") and "self [us]" not in line]


if __name__ == "__main__":
    sys.exit(main())
