"""Benchmarks that cannot flatter (issue 22 item 1): one wire model, figures generated from
benchmarks/results.json and never typed, the chooser's "fast" from those figures only.

Nothing here times anything: the benchmarks measure, these tests check what is done with
their figures and that the denominators are the right ones.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))

import run_all  # noqa: E402
import usbwire  # noqa: E402

from bootkit import chooser  # noqa: E402
from bootkit.classes.common import DialectFacts  # noqa: E402

GENERATED = re.compile(re.escape(run_all.FACTS_BEGIN) + r".*?" + re.escape(run_all.FACTS_END), re.S)
TYPED = (
    re.compile(r"\b\d+(?:\.\d+)?\s*(?:KiB/s|KB/s|kB/s|MiB/s|MB/s|GB/s)"),  # a throughput
    re.compile(r"\b\d+\.\d+\s*x\b"),  # "0.027 x wire time"
    re.compile(r"\b\d+(?:\.\d+)?x\s+(?:the\s+)?(?:wire|bincopy|intelhex|avrdude|python|a plain|faster|slower)"),
    re.compile(r"(?:ratio|ours/wire)\w*\s+(?:of|is|was|about|=|:)\s*(?:about\s*)?\d+\.\d+"),  # "ratio is 0.27"
)
# a line naming a target states a goal, not a result ("at most 0.2 x bincopy's time")
TARGET_LINE = re.compile(r"target|at most|<=|or less|\bunder\b")


def typed_throughputs(text: str) -> list[str]:
    text = GENERATED.sub("", text)
    found = []
    for line in text.splitlines():
        if TARGET_LINE.search(line):
            continue
        found += [m.group(0) for pattern in TYPED for m in pattern.finditer(line)]
    return found


def test_no_typed_throughput_in_benchmarks_or_facts():
    files = sorted(BENCH.glob("*.py")) + sorted((ROOT / "bootkit" / "classes").glob("*/facts.py"))
    typed = {str(f.relative_to(ROOT)): hits for f in files if (hits := typed_throughputs(f.read_text()))}
    assert typed == {}, f"hand-typed throughput figures or ratios (generate them from results.json): {typed}"
    # the grep itself catches what hid/facts.py, dfu/facts.py and bench_hid.py said before issue 22
    assert typed_throughputs('_BENCH = "benchmarks/bench_hid.py: wire limit 62 KiB/s (one report per frame)"')
    assert typed_throughputs('"(emulator: 0.027 x wire time)"')
    assert typed_throughputs("prices the image at one 64-byte report per 1 ms frame (64 KB/s).")
    assert not typed_throughputs('target <= 0.1 (lower is better)')


def _results() -> dict:
    return json.loads(run_all.RESULTS.read_text())


def test_results_json_records_are_whole():
    data = _results()
    assert data["results"], "benchmarks/results.json holds no record: run python benchmarks/run_all.py"
    for rec in data["results"]:
        for key in ("name", "compares", "median", "spread", "runs", "target", "met", "script", "load"):
            assert key in rec, f"{rec.get('name')}: no {key}"
        lo, hi = rec["spread"]
        assert lo <= rec["median"] <= hi, rec["name"]
        # a figure the noise did not resolve gets no verdict, and says why
        assert rec["met"] == (None if rec.get("note") else run_all.met(rec["median"], rec["target"])), rec["name"]


def test_facts_throughput_blocks_are_generated_from_results_json():
    figures = run_all.throughputs(_results()["results"])
    assert figures, "no throughput figure in results.json"
    blocks = {}
    for path in sorted((ROOT / "bootkit" / "classes").glob("*/facts.py")):
        m = GENERATED.search(path.read_text())
        if m:
            blocks[path.parent.name] = m.group(0)
            assert m.group(0) == run_all.facts_block(path.parent.name, figures), (
                f"{path.relative_to(ROOT)}: its THROUGHPUT block is not what results.json gives "
                "(python benchmarks/run_all.py --write-docs)")
    # every figure reaches a facts.py, and the chooser reads it from the dialect's facts
    for dialect, figure in figures.items():
        personality, name = dialect.split("/")
        assert personality in blocks, f"{dialect}: its facts.py has no generated THROUGHPUT block"
        facts = next(f for f in chooser.all_facts() if (f.personality, f.dialect) == (personality, name))
        assert facts.benchmark == run_all.throughput_text(figure)
        assert chooser.throughput(facts) == (figure["kind"], float(re.search(
            r"([0-9.]+) KiB/s", run_all.throughput_text(figure)).group(1)))


def test_docs_are_generated_from_results_json():
    data = _results()
    perf = (ROOT / "docs" / "performance.md").read_text()
    assert run_all.markdown(data["results"]) in perf, "docs/performance.md: python benchmarks/run_all.py --write-docs"
    for script, table in data.get("markdown", {}).items():
        assert table in perf, f"docs/performance.md: {script}'s table is not the one in results.json"
    assert (ROOT / "docs" / "choosing.md").read_text() == chooser.generate_docs(), (
        "docs/choosing.md: python -m bootkit.chooser --write-docs docs/choosing.md")


# --------------------------------------------------------------------------
# the wire model


def test_control_and_interrupt_bounds_differ():
    # a 64-byte report as SET_REPORT on endpoint 0 takes its bit time; on an interrupt endpoint
    # with bInterval 1 it waits for a frame (USB 2.0 5.7.4): 1 ms at full speed
    control = usbwire.control_seconds(64)
    interrupt = usbwire.interrupt_seconds(64, 64, 1)
    assert control == usbwire.FULL.seconds(usbwire.FULL.transaction(8) + usbwire.FULL.transaction(64)
                                           + usbwire.FULL.transaction(0))
    assert interrupt == pytest.approx(0.001)
    assert control < interrupt / 5
    # high speed: 125 us microframes, 2**(bInterval-1) of them
    assert usbwire.interrupt_seconds(64, 64, 4, usbwire.HIGH) == pytest.approx(8 * 0.000125)
    assert usbwire.bulk_seconds(512, 512, usbwire.HIGH) < usbwire.bulk_seconds(512, 64, usbwire.FULL) / 30


def test_hid_dialects_priced_by_the_transfers_they_use():
    """HalfKay and LUFA send every block as SET_REPORT on endpoint 0: their denominator is the
    control-transfer bound, not one 64-byte report per 1 ms frame (bench_hid.py before #22)."""
    import bench_hid

    _, wire, size, kinds = bench_hid.run("halfkay", "atmega32u4", 2048, False)
    assert set(kinds) == {"control"}
    assert wire < size / 64 * 0.001 / 5  # far below the flattering frame-rate denominator
    _, wire, size, kinds = bench_hid.run("native", "atmega32u4", 2048, False)
    assert kinds.get("interrupt", 0) >= size // 64  # one report per frame at best: the interrupt bound
    assert wire >= kinds["interrupt"] * 0.001


def test_midi_denominator_is_independent_of_the_schedule(monkeypatch):
    """The one-way file's denominator is built from the chip database, not from the schedule
    midifile builds (before #22 the ratio divided that schedule by its own page times)."""
    import bench_midi

    from bootkit.classes.midi import midifile
    from bootkit.memory import get_chip

    chip = get_chip("atmega32u4")
    image = bench_midi.image_for(chip, 4096)
    before = bench_midi.page_times(chip, image)
    monkeypatch.setattr(midifile, "page_ms", lambda *a, **k: 0.0)
    monkeypatch.setattr(midifile, "flash_ms", lambda *a, **k: 0.0)
    assert bench_midi.page_times(chip, image) == before > 0
    pages = -(-image.size // chip.page_size)
    assert before >= pages * chip.timing.program_ms / 1000


# --------------------------------------------------------------------------
# the chooser's "fast"


def _facts(dialect: str, benchmark: str) -> DialectFacts:
    return DialectFacts(personality="dfu", dialect=dialect, summary=dialect, driver={}, host_software="none",
                        eeprom=False, readback=True, verify="read-back", feedback="status", unattended=True,
                        bootloader_size="4 KiB", families=(), quirks=(), benchmark=benchmark)


def test_fast_says_not_measured_and_ranks_by_what_is_known():
    facts = [_facts("unmeasured", "benchmarks/bench_x.py: against avrdude on a pty"),
             _facts("bound", "benchmarks/bench_y.py: wire bound 150 KiB/s (transfers counted)"),
             _facts("measured", "benchmarks/bench_z.py: measured 2.5 KiB/s (played in real time)")]
    ranked = {r.dialect: r for r in chooser.choose(needs=("fast",), facts=facts)}
    assert "~ fast: not measured" in ranked["unmeasured"].why[0]
    assert "wire bound" in ranked["bound"].why[0] and "a bound" in ranked["bound"].why[0]
    assert "measured" in ranked["measured"].why[0] and ranked["measured"].score == -1
    # equal score (0): what was measured comes first
    order = [r.dialect for r in chooser.choose(needs=("fast",), facts=facts)]
    assert order.index("bound") < order.index("unmeasured")
