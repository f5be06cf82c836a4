"""Start-up time of `bootkit chips` and `bootkit flash FILE --via dfu`, before and after a change.

Issue 18 moved personalities and transports behind entry-point registries;
start-up must not grow.  This checks the "before" revision (--before,
default 0b4fe30, the last commit before that work) out into a temporary
git worktree and runs both trees side by side in one run, alternately
(the order flips every round so drift on a shared machine hits both
alike), with the same interpreter: `python -m bootkit ...` with PYTHONPATH
pointing at one tree or the other.  Each command is run --runs times per
tree after one unmeasured warm-up (which writes the bytecode caches); the
wall time of the whole process is taken with time.perf_counter.  Printed
per command: median, IQR and min-max of each tree, and the after/before
ratio of the medians with the spread of the per-round ratios (target: 1.0
or less).  Nothing is asserted: this is a measurement, not a test.

The commands:
  chips   `bootkit chips` (stdout discarded)
  flash   `bootkit flash SAMPLE.hex --via dfu --device 0000:0000`: loads the
          DFU host and pyusb's libusb backend, finds no device and exits 1
          ("no DFU device found matching 0000:0000"); the exit status and
          message of both trees are checked once, so a tree that failed
          earlier (a broken import) is not mistaken for a fast one.

--importtime N also runs each command once per tree under
`python -X importtime` and prints the N modules with the largest self
time, the module count, and which bootkit modules one tree imports and the
other does not.

Example:
    python benchmarks/startup.py
    python benchmarks/startup.py --runs 31 --importtime 12
    python benchmarks/startup.py --before HEAD~5 --only chips
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

HERE = Path(__file__).resolve().parent.parent      # the "after" tree: this checkout
DEFAULT_BEFORE = "0b4fe30"
SAMPLE = Path("examples") / "firmware" / "sample-atmega32u4.hex"


def commands(sample: Path) -> dict[str, tuple[list[str], int | None, str | None]]:
    """name -> (arguments after `python -m bootkit`, expected exit status, expected text in stderr)."""
    return {
        "chips": (["chips"], 0, None),
        "flash": (["flash", str(sample), "--via", "dfu", "--device", "0000:0000"], 1, "no DFU device found"),
    }


def tree_env(tree: Path) -> dict[str, str]:
    env = dict(os.environ)
    # PYTHONPATH comes before site-packages (and before the editable install's own path or finder),
    # so `-m bootkit` runs this tree's code; checked once by check_tree()
    env["PYTHONPATH"] = os.pathsep.join([str(tree)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.pop("PYTHONSTARTUP", None)
    env.pop("PYTHONPROFILEIMPORTTIME", None)
    env["COLUMNS"] = "100"
    return env


def check_tree(tree: Path, cwd: Path) -> None:
    r = subprocess.run([sys.executable, "-c", "import bootkit; print(bootkit.__file__)"],
                       env=tree_env(tree), cwd=cwd, capture_output=True, text=True)
    where = Path(r.stdout.strip()).resolve() if r.returncode == 0 else None
    if where is None or tree.resolve() not in where.parents:
        raise SystemExit(f"startup: {tree}: `import bootkit` loads {where or r.stderr.strip()!r}, "
                         "not this tree: benchmark invalid")


def run_once(tree: Path, argv: list[str], cwd: Path) -> tuple[float, int, str]:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "bootkit", *argv], env=tree_env(tree), cwd=cwd,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
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


def print_importtime(name: str, trees: dict[str, Path], argv: list[str], cwd: Path, top: int) -> None:
    found = {label: importtime(tree, argv, cwd) for label, tree in trees.items()}
    for label, rows in found.items():
        total = sum(s for _, s, _ in rows)
        print(f"  -X importtime (one run), {label}: {len(rows)} modules, {total / 1000:.1f} ms self time in all; "
              f"top {top} by self time:")
        for module, self_us, cumulative_us in sorted(rows, key=lambda r: -r[1])[:top]:
            print(f"    {self_us / 1000:7.1f} ms self {cumulative_us / 1000:7.1f} ms cumulative  {module}")
    ours = {label: {m for m, _, _ in rows if m == "bootkit" or m.startswith("bootkit.")}
            for label, rows in found.items()}
    before, after = ours["before"], ours["after"]
    print(f"  bootkit modules imported: before {len(before)}, after {len(after)}")
    if after - before:
        print(f"    only after:  {', '.join(sorted(after - before))}")
    if before - after:
        print(f"    only before: {', '.join(sorted(before - after))}")


def measure(name: str, argv: list[str], expect_rc: int | None, expect_text: str | None,
            trees: dict[str, Path], runs: int, cwd: Path) -> None:
    for label, tree in trees.items():     # warm-up: bytecode caches written, outcome checked
        _, rc, err = run_once(tree, argv, cwd)
        last = err.strip().splitlines()[-1] if err.strip() else ""
        if (expect_rc is not None and rc != expect_rc) or (expect_text and expect_text not in err):
            raise SystemExit(f"startup: {name} in the {label} tree exited {rc} ({last!r}), expected "
                             f"{expect_rc}" + (f" with {expect_text!r}" if expect_text else "")
                             + ": benchmark invalid")
    times: dict[str, list[float]] = {label: [] for label in trees}
    order = list(trees)
    for i in range(runs):
        for label in (order if i % 2 == 0 else order[::-1]):
            t, _, _ = run_once(trees[label], argv, cwd)
            times[label].append(t)
    print(f"bootkit {' '.join(argv)}")
    for label in order:
        med, q1, q3, lo, hi = spread(times[label])
        print(f"  {label:6s} median {med * 1000:7.1f} ms   IQR {q1 * 1000:7.1f}-{q3 * 1000:7.1f} ms   "
              f"min-max {lo * 1000:7.1f}-{hi * 1000:7.1f} ms")
    ratio = statistics.median(times["after"]) / statistics.median(times["before"])
    rounds = [a / b for a, b in zip(times["after"], times["before"])]
    _, q1, q3, lo, hi = spread(rounds)
    print(f"  ratio after/before: {ratio:.3f}  (per-round ratios IQR {q1:.3f}-{q3:.3f}, min-max {lo:.3f}-{hi:.3f}; "
          f"target 1.0 or less)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="example: python benchmarks/startup.py --runs 15 --importtime 10",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", default=DEFAULT_BEFORE, metavar="REV",
                    help=f"the revision to compare against (default {DEFAULT_BEFORE}, the last before issue 18's "
                         "registry work)")
    ap.add_argument("--after", default=None, metavar="REV",
                    help="a revision to check out as the \"after\" tree (default: this checkout as it is, "
                         "uncommitted changes included)")
    ap.add_argument("--runs", type=int, default=15, help="runs of each command per tree (default 15)")
    ap.add_argument("--only", choices=("chips", "flash"), action="append",
                    help="measure only this command (repeatable; default both)")
    ap.add_argument("--importtime", type=int, metavar="N", default=0,
                    help="also print the N slowest imports (-X importtime) of each command in each tree")
    args = ap.parse_args(argv)
    if args.runs < 1:
        ap.error("--runs must be at least 1")

    sample = HERE / SAMPLE
    chosen = {k: v for k, v in commands(sample).items() if not args.only or k in args.only}
    with tempfile.TemporaryDirectory(prefix="bootkit-startup-") as tmp:
        trees = {"before": Path(tmp) / "before", "after": HERE if args.after is None else Path(tmp) / "after"}
        added = []
        try:
            for label, rev in (("before", args.before), ("after", args.after)):
                if rev is None:
                    continue
                r = subprocess.run(["git", "-C", str(HERE), "worktree", "add", "--detach", str(trees[label]), rev],
                                   capture_output=True, text=True)
                if r.returncode:
                    lines = r.stderr.strip().splitlines()
                    print(f"startup: git worktree add {rev}: {lines[-1] if lines else 'failed'}", file=sys.stderr)
                    return 2
                added.append(trees[label])
            for label, tree in trees.items():
                check_tree(tree, cwd=Path(tmp))   # cwd: sys.path[0] of -m/-c is the cwd
            print(f"python {sys.version.split()[0]} ({sys.executable}); {args.runs} runs per tree, alternating; "
                  f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
            for label, tree in trees.items():
                rev = subprocess.run(["git", "-C", str(tree), "log", "-1", "--format=%h %s"],
                                     capture_output=True, text=True).stdout.strip()
                dirty = " (+ uncommitted changes)" if tree == HERE and subprocess.run(
                    ["git", "-C", str(tree), "status", "--porcelain", "--untracked-files=no", "--", "bootkit"],
                    capture_output=True, text=True).stdout.strip() else ""
                print(f"  {label + ':':7s} {rev[:76]}{dirty}")
            for name, (cmd, rc, text) in chosen.items():
                measure(name, cmd, rc, text, trees, args.runs, cwd=Path(tmp))
                if args.importtime:
                    print_importtime(name, trees, cmd, Path(tmp), args.importtime)
        finally:
            for tree in added:
                subprocess.run(["git", "-C", str(HERE), "worktree", "remove", "--force", str(tree)],
                               capture_output=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
