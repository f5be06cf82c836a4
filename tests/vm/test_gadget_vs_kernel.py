"""benchmarks/bench_gadget_vs_kernel.py's machinery, once per class, in the shared guest.

The benchmark puts the same payload through our FunctionFS gadget and through the kernel's
own configfs function (mass_storage, printer, acm, hid) on dummy_hcd, driven by the same
host-side command.  Here each class runs one pair with a small payload: both sides must
move it (our emulated chip's flash holds the firmware afterwards, the kernel function's
reader got every byte or the file on the vfat volume compares; Bench raises otherwise),
and the summary written for benchmarks/run_all.py has its fields.  No time is asserted:
the figures are the benchmark's to print.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from .harness import GuestVM
from .served import require_tools

pytestmark = pytest.mark.vm

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_gadget_vs_kernel",
                                                  ROOT / "benchmarks" / "bench_gadget_vs_kernel.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench_module():
    return _bench()


@pytest.fixture
def bench(guest: GuestVM, bench_module):
    require_tools("mkfs.vfat", package="dosfstools")
    guest.run(f"modprobe -a {bench_module.MODULES}", check=True)
    return bench_module.Bench(guest, log=print)


@pytest.mark.parametrize("name", ["msc", "printer", "cdc", "hid"])
def test_both_sides_move_the_payload(bench, bench_module, guest, name):
    case = bench_module.CASES[name](kib=4)
    result = bench_module.run_class(bench, case, runs=1, log=print)
    assert len(result["ours"]) == len(result["kernel"]) == len(result["ratios"]) == 1
    assert all(t > 0 for t in result["ours"] + result["kernel"])
    entry = bench_module.summary([result], 1)[f"gadget_vs_kernel.{name}"]
    assert set(entry) >= {"median", "spread", "runs", "target", "met"}
    assert entry["runs"] == 1 and entry["spread"][0] <= entry["median"] <= entry["spread"][1]
    # nothing left behind: no gadget of ours, none of the kernel's
    assert guest.run(f"test ! -e {bench_module.OUR_GADGET} && test ! -e {bench_module.KERNEL_GADGET}").ok
