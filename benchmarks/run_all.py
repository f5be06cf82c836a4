"""Run every benchmark, write benchmarks/results.json, and generate what is made from it.

Each of our scripts is run as its own process with ``--json`` (its last stdout line: a list
of records); bench_formats.py and bench_startup.py (issue 22 items 2-3) are run with
``--markdown`` and their table rows read; bench_avr_serial.py's ratio line is read;
the VM scripts (bench_gadget_vs_kernel.py, bench_gadget_dfu.py: QEMU, minutes each, one boot
per script) only with ``--vm`` or when ``--only`` names them.  A run replaces the records of
the scripts it ran and keeps every other record in results.json, each with the time it was
measured (``measured_at``), so ``--only`` reruns one and the docs are regenerated from all.  The
1-minute load average is sampled before and after each script and kept with its records:
the machine is shared, so a figure says under what load it was taken.  Every record holds:
name, what is compared, median, spread (min-max), runs, target (or null), met (or null),
load; a record with ``throughput`` also gives a dialect's throughput figure for
``bootkit choose`` (see ``THROUGHPUT_KEYS``).

    python benchmarks/run_all.py                      # run all, write results.json
    python benchmarks/run_all.py --only hid,dfu       # rerun some, keep the others' records
    python benchmarks/run_all.py --only gadget_dfu    # one VM script, the others' records kept
    python benchmarks/run_all.py --markdown           # print docs/performance.md's table
    python benchmarks/run_all.py --write-docs         # regenerate docs/performance.md, docs/gadget.md's
                                                      # dfu-util rows, the facts' throughput blocks and
                                                      # docs/choosing.md from results.json

Nothing here is typed by hand: a figure is in results.json because a script printed it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results.json"
PERFORMANCE = ROOT / "docs" / "performance.md"

# --------------------------------------------------------------------------
# what every script uses to report


def summary(values: list[float]) -> dict:
    """median, spread (min-max) and the number of runs."""
    return {"median": statistics.median(values), "spread": [min(values), max(values)], "runs": len(values)}


def met(median: float, target: str | None) -> bool | None:
    """``target`` as written in a record: "<= 0.1", "< 60", ">= 0.5"."""
    if not target:
        return None
    m = re.fullmatch(r"\s*(<=|<|>=|>)\s*([0-9.]+)\s*\S*\s*", target)
    if not m:
        return None
    bound = float(m.group(2))
    return {"<=": median <= bound, "<": median < bound, ">=": median >= bound, ">": median > bound}[m.group(1)]


def record(name: str, compares: str, values: list[float], *, unit: str = "ratio", target: str | None = None,
           **extra) -> dict:
    """One result: ``values`` are the per-run figures (at least 5 runs for a median and a spread)."""
    rec = {"name": name, "compares": compares, "unit": unit, **summary(values), "target": target}
    rec["met"] = met(rec["median"], target)
    rec.update(extra)
    return rec


def print_record(rec: dict) -> None:
    lo, hi = rec["spread"]
    verdict = "" if rec["met"] is None else f"  target {rec['target']}: {'met' if rec['met'] else 'NOT met'}"
    print(f"  {rec['name']}: median {rec['median']:.4g} {rec['unit']}, spread {lo:.4g}-{hi:.4g} "
          f"({rec['runs']} runs){verdict}", flush=True)


def emit(records: list[dict], as_json: bool) -> None:
    """Print the records; with ``--json`` the last line is the JSON list run_all.py reads."""
    for rec in records:
        print_record(rec)
    if as_json:
        print(json.dumps(records))


def throughput(dialects: list[str], image_bytes: int, wire_seconds: list[float], how: str) -> dict:
    """A dialect's throughput figure for ``bootkit choose``: the image bytes over the wire time of
    the transfers our host client was seen issuing (counted in each run, priced by usbwire.py).
    It is a bound on a real bus (the chip's own programming time comes on top), and says so."""
    kib_s = [image_bytes / 1024 / s for s in wire_seconds]
    return {"dialects": dialects, "kind": "wire bound", "kib_s": statistics.median(kib_s), "how": how}


# --------------------------------------------------------------------------
# the scripts

OURS = {  # name -> (script, arguments); each prints records with --json
    "dfu": ("bench_dfu.py", []),
    "hid": ("bench_hid.py", []),
    "printer": ("bench_printer.py", []),
    "msc": ("bench_msc.py", []),
    "midi": ("bench_midi.py", []),
    "cdc": ("bench_cdc.py", []),
    "usbip": ("bench_usbip.py", []),
    "memory": ("bench_memory.py", []),
    "hex": ("bench_hex.py", []),
    "bridge": ("bench_bridge.py", []),
    # issue 21's flash --all: 8 devices against one, in fast mode (all CPU) and with the chips' times
    "flash_all": ("bench_flash_all.py", ["--runs", "5"]),
    "flash_all_realtime": ("bench_flash_all.py", ["--runs", "5", "--realtime"]),
}
MARKDOWN = {  # others' scripts: their --markdown table rows
    "formats": ("bench_formats.py", ["--runs", "5"]),
    "startup": ("bench_startup.py", ["--runs", "21"]),
}
AVR_SERIAL = ("bench_avr_serial.py", ["--runs", "5"])
VM = ("bench_gadget_vs_kernel.py", ["--runs", "5"])  # W2e's; --json OUT writes {name: {median, spread, ...}}
VM_OURS = {  # VM scripts that print records with --json, as OURS do
    "gadget_dfu": ("bench_gadget_dfu.py", ["--runs", "5"]),
}
VM_KEYS = ("gadget_vs_kernel", *VM_OURS)


def known() -> list[str]:
    """Every name --only takes."""
    return [*OURS, *MARKDOWN, "avr_serial", *VM_KEYS]


def _load() -> float:
    return os.getloadavg()[0]


def _run(script: str, args: list[str]) -> tuple[str, list[float]]:
    before = _load()
    t0 = time.monotonic()
    print(f"== {script} {' '.join(args)}", flush=True)
    r = subprocess.run([sys.executable, str(HERE / script), *args], capture_output=True, text=True)
    sys.stdout.write("".join(line for line in r.stdout.splitlines(keepends=True) if not line.startswith("[")))
    if r.returncode:
        raise SystemExit(f"{script} failed ({r.returncode}): {(r.stderr or r.stdout).strip()[-2000:]}")
    print(f"   ({time.monotonic() - t0:.0f} s)", flush=True)
    return r.stdout, [round(before, 2), round(_load(), 2)]


def _last_json(out: str, script: str) -> list[dict]:
    for line in reversed(out.splitlines()):
        if line.startswith("["):
            return json.loads(line)
    raise SystemExit(f"{script}: no JSON line in its output")


def _rows(out: str, script: str) -> list[dict]:
    """The rows of a ``--markdown`` table: | measurement | median | IQR | min-max | target | met |."""
    recs = []
    runs = re.search(r"(\d+) rounds", out)
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 6 or not re.fullmatch(r"[0-9.]+", cells[1]):
            continue
        name, median, _iqr, minmax, target, _met = cells
        lo, _, hi = minmax.partition("-")
        name = name.replace("`", "")
        tgt = None if target in ("-", "") else target
        n = runs
        if "RSS" in name:  # bench_formats.py's peak RSS: its own count of convert processes
            n = re.search(r"(\d+) processes: peak RSS", out)
        recs.append({"name": name, "compares": name, "unit": "ratio", "median": float(median),
                     "spread": [float(lo), float(hi)], "runs": int(n.group(1)) if n else None,
                     "target": tgt, "met": met(float(median), tgt), "script": script})
    return recs


def _avr_serial(out: str, script: str) -> list[dict]:
    """bench_avr_serial.py's per-path lines: each tool's per-KiB cost and the ratio."""
    recs = []
    title = None
    runs = int(AVR_SERIAL[1][1])
    number = r"(-?[0-9.]+)"
    for line in out.splitlines():
        if not line.startswith(" ") and ": bootkit flash" in line:
            title = line.split(":")[0]
            continue
        m = re.search(rf"^\s+(bootkit|avrdude)\s+per KiB: median {number}, spread {number}-{number} ms/KiB", line)
        if m and title:
            recs.append({"name": f"{title}: {m.group(1)} per added KiB", "unit": "ms/KiB",
                         "compares": f"{m.group(1)}, a subprocess on a pty: (t_large - t_small) per KiB",
                         "median": float(m.group(2)), "spread": [float(m.group(3)), float(m.group(4))],
                         "runs": runs, "target": None, "met": None, "script": script})
        m = re.search(rf"ratio bootkit/avrdude per KiB: median {number}, spread {number}-{number}", line)
        if m and title:
            rec = {"name": f"{title}: bootkit / avrdude per added KiB", "unit": "ratio", "compares":
                   "bootkit flash vs avrdude on one pty, (t_large - t_small) per KiB, per run",
                   "median": float(m.group(1)), "spread": [float(m.group(2)), float(m.group(3))], "runs": runs,
                   "target": None, "met": None, "script": script}
            if min(r["spread"][0] for r in recs[-2:]) <= 0:  # as bench_cdc.py says it
                rec["note"] = "not resolved: a per-KiB cost at or below 0 in some run (start-up noise larger than it)"
            recs.append(rec)
    return recs


def run(only: set[str] | None, vm: bool) -> tuple[list[dict], dict[str, str]]:
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    # a record kept from an earlier run keeps the time it was measured (older files had one
    # time for all: the file's own)
    old = [{**r, "measured_at": r.get("measured_at", previous.get("measured_at"))}
           for r in previous.get("results", [])]
    tables: dict[str, str] = dict(previous.get("markdown", {}))
    out: list[dict] = []
    ran: set[str] = set()

    def want(key: str) -> bool:
        return only is None or key in only

    def want_vm(key: str) -> bool:  # a VM script: asked for by name, or all of them with --vm
        return key in (only or ()) or (vm and (only is None or key in only))

    for key, (script, args) in OURS.items():
        if want(key):
            text, load = _run(script, [*args, "--json"])
            for rec in _last_json(text, script):
                out.append({**rec, "script": script, "load": load})
            ran.add(script)
    for key, (script, args) in MARKDOWN.items():
        if want(key):
            text, load = _run(script, [*args, "--markdown"])
            out += [{**rec, "load": load} for rec in _rows(text, script)]
            tables[script] = _table_text(text)
            ran.add(script)
    if want("avr_serial"):
        text, load = _run(*AVR_SERIAL)
        out += [{**rec, "load": load} for rec in _avr_serial(text, AVR_SERIAL[0])]
        ran.add(AVR_SERIAL[0])
    if want_vm("gadget_vs_kernel") and (HERE / VM[0]).exists():
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            got = Path(tmp) / "vm.json"
            text, load = _run(VM[0], [*VM[1], "--json", str(got)])
            found = json.loads(got.read_text())
        for name, rec in found.items():
            target = rec.get("target")
            out.append({"compares": "our FunctionFS gadget vs the kernel's own function, same payload, in the VM",
                        **rec, "name": name, "unit": "ratio", "script": VM[0], "load": load,
                        "target": f">= {target}" if isinstance(target, (int, float)) else target})
        ran.add(VM[0])
    for key, (script, args) in VM_OURS.items():
        if want_vm(key):
            text, load = _run(script, [*args, "--json"])
            for rec in _last_json(text, script):
                out.append({**rec, "script": script, "load": load})
            ran.add(script)
    now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    out = [{**r, "measured_at": now} for r in out]
    return [r for r in old if r.get("script") not in ran] + out, tables


# --------------------------------------------------------------------------
# what is generated from results.json


def load_results(path: Path = RESULTS) -> list[dict]:
    return json.loads(path.read_text())["results"]


def _fmt(x: float) -> str:
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:.0f}"


def markdown(results: list[dict]) -> str:
    lines = ["| benchmark | script | median | spread (min-max) | runs | target | met | load (1-min avg) | measured |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lo, hi = r["spread"]
        unit = "" if r.get("unit") == "ratio" else f" {r['unit']}"
        load = r.get("load")
        lines.append("| " + " | ".join([
            r["name"].replace("|", "\\|"), f"`{r.get('script', '')}`", _fmt(r["median"]) + unit,
            f"{_fmt(lo)}-{_fmt(hi)}", str(r.get("runs") or "-"), r.get("target") or "-",
            {True: "yes", False: "**no**", None: "-"}[r.get("met")] + (f" ({r['note']})" if r.get("note") else ""),
            f"{load[0]:.1f} -> {load[1]:.1f}" if load else "-", r.get("measured_at") or "-"]) + " |")
    return "\n".join(lines)


def throughputs(results: list[dict]) -> dict[str, dict]:
    """"personality/dialect" -> the throughput figure of the record that measured it."""
    out = {}
    for r in results:
        t = r.get("throughput")
        if t:
            for d in t["dialects"]:
                out[d] = {"kib_s": t["kib_s"], "kind": t["kind"], "how": t["how"], "script": r["script"]}
    return out


INTRO_OLD = ("How fast bootkit is, measured side by side with its peers by the scripts in\n`benchmarks/`, never typed by "
             "hand: each section below is the `--markdown`\noutput of the script it names, pasted as printed.")
INTRO = ("How fast bootkit is, measured side by side with its peers by the scripts in\n`benchmarks/`, never typed by "
         "hand: `python benchmarks/run_all.py` runs them all and\nwrites `benchmarks/results.json`; `python "
         "benchmarks/run_all.py --write-docs`\nmakes the table below from it (every benchmark, its median, spread, "
         "target\nand whether it was met), and puts each converter and start-up script's own\n`--markdown` table, "
         "as printed in that run, in its section further down.")
BEGIN = "<!-- generated: python benchmarks/run_all.py --write-docs (from benchmarks/results.json) -->"
END = "<!-- end generated by run_all.py -->"


def write_performance(results: list[dict], measured_at: str, tables: dict[str, str]) -> None:
    text = PERFORMANCE.read_text()
    text = text.replace(INTRO_OLD, INTRO)
    block = (f"{BEGIN}\nMeasured by `python benchmarks/run_all.py` (results.json last written {measured_at}; "
             "`--only` reruns some scripts and keeps the other records, so each row says when it was measured); "
             "ratios are ours / the peer's "
             "or the bound's, measured side by side in one run, lower is better unless the target says otherwise.\n\n"
             f"{markdown(results)}\n{END}")
    for script, table in tables.items():  # issue 22 items 2-3's own tables, as their scripts printed them
        text = re.sub(rf"(<!-- generated: python benchmarks/{re.escape(script)}[^>]*-->\n).*?(<!-- end generated -->)",
                      lambda m: m.group(1) + table + m.group(2), text, flags=re.S)
    if BEGIN in text:
        head, _, rest = text.partition(BEGIN)
        _, _, tail = rest.partition(END)
        text = head + block + tail
    else:
        head, sep, tail = text.partition("\n## ")
        text = head.rstrip() + "\n\n## Every benchmark\n\n" + block + "\n\n" + sep.lstrip("\n") + tail
    PERFORMANCE.write_text(text)


GADGET = ROOT / "docs" / "gadget.md"
GADGET_SCRIPT = "bench_gadget_dfu.py"
GADGET_BEGIN = f"<!-- generated: python benchmarks/run_all.py --write-docs ({GADGET_SCRIPT}'s records in benchmarks/results.json) -->"


def gadget_block(results: list[dict]) -> str:
    """docs/gadget.md's "Speed against dfu-util" figures: bench_gadget_dfu.py's records."""
    mine = [r for r in results if r.get("script") == GADGET_SCRIPT]
    if not mine:
        return f"{GADGET_BEGIN}\nNot measured yet: `python benchmarks/run_all.py --only gadget_dfu`.\n{END}"
    return f"{GADGET_BEGIN}\n{markdown(mine)}\n{END}"


def write_gadget(results: list[dict]) -> bool:
    """Replace the generated block of docs/gadget.md; False when it has none."""
    text = GADGET.read_text()
    if GADGET_BEGIN not in text:
        return False
    head, _, rest = text.partition(GADGET_BEGIN)
    _, _, tail = rest.partition(END)
    GADGET.write_text(head + gadget_block(results) + tail)
    return True


FACTS_BEGIN = "# generated by benchmarks/run_all.py --write-docs from benchmarks/results.json: do not edit"
FACTS_END = "# end generated"


def facts_block(personality: str, figures: dict[str, dict]) -> str:
    mine = {d.split("/", 1)[1]: f for d, f in sorted(figures.items()) if d.split("/", 1)[0] == personality}
    lines = [FACTS_BEGIN, "THROUGHPUT: dict[str, str] = {"]
    for dialect, f in mine.items():
        lines.append(f"    {json.dumps(dialect)}: {json.dumps(throughput_text(f))},")
    lines.append("}")
    lines.append(FACTS_END)
    return "\n".join(lines)


def throughput_text(f: dict) -> str:
    """The sentence the chooser reads (bootkit.chooser.throughput parses "wire bound N KiB/s")."""
    kib = f["kib_s"]
    return f"benchmarks/{f['script']}: {f['kind']} {kib:{'.0f' if kib >= 10 else '.2g'}} KiB/s ({f['how']})"


def write_facts(results: list[dict]) -> list[Path]:
    figures = throughputs(results)
    changed = []
    for path in sorted((ROOT / "bootkit" / "classes").glob("*/facts.py")):
        text = path.read_text()
        if FACTS_BEGIN not in text:
            continue
        head, _, rest = text.partition(FACTS_BEGIN)
        _, _, tail = rest.partition(FACTS_END)
        new = head + facts_block(path.parent.name, figures) + tail
        if new != text:
            path.write_text(new)
            changed.append(path)
    return changed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="example: python benchmarks/run_all.py && python benchmarks/run_all.py --write-docs")
    ap.add_argument("--only", help="comma-separated: " + ", ".join(known()))
    ap.add_argument("--vm", action="store_true",
                    help="also run the VM scripts: " + ", ".join(VM_KEYS) + " (QEMU, minutes)")
    ap.add_argument("--markdown", action="store_true", help="print docs/performance.md's table from results.json")
    ap.add_argument("--write-docs", action="store_true",
                    help="regenerate docs/performance.md, docs/gadget.md's dfu-util figures, the facts.py "
                         "throughput blocks and docs/choosing.md")
    args = ap.parse_args(argv)
    if args.markdown or args.write_docs:
        data = json.loads(RESULTS.read_text())
        if args.markdown:
            print(markdown(data["results"]))
        if args.write_docs:
            write_performance(data["results"], data["measured_at"], data.get("markdown", {}))
            write_gadget(data["results"])
            for path in write_facts(data["results"]):
                print(path.relative_to(ROOT))
            subprocess.run([sys.executable, "-m", "bootkit.chooser", "--write-docs", str(ROOT / "docs" / "choosing.md")],
                           check=True, cwd=ROOT)
        return 0
    only = set(args.only.split(",")) if args.only else None
    unknown = sorted((only or set()) - set(known()))
    if unknown:
        ap.error(f"--only: unknown benchmark {unknown[0]!r} (one of {', '.join(known())})")
    results, tables = run(only, args.vm)
    RESULTS.write_text(json.dumps({"measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                   "cpus": os.cpu_count(), "results": results, "markdown": tables}, indent=1) + "\n")
    print(f"{RESULTS.relative_to(ROOT)}: {len(results)} records")
    return 0


if __name__ == "__main__":
    sys.exit(main())
