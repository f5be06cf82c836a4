"""``bootkit demo``: every personality flashing a sample image into an emulated device.

Each row runs on its own in-process bus: the device side emulates the chip,
the host client flashes the sample from examples/firmware, reads it back
and compares.  Rows appear as personalities land.
"""

from __future__ import annotations

import time

from .emulator import Emulator
from .transports.virtual import VirtualBus, get_backend


def _dfu_rows():
    from .classes.dfu import host

    for dialect, sample in (("flip", "sample-atmega32u4"), ("dfuse", "sample-stm32f411"),
                            ("dfu", "sample-stm32f103c8")):
        yield "dfu", dialect, sample, host


def _run_row(personality, dialect, sample, host):
    from .samples import load_sample

    chip, image = load_sample(sample)
    bus = VirtualBus()
    with Emulator(chip, personality, options={"dialect": dialect}) as em:
        em.attach(bus)
        t0 = time.perf_counter()
        result = host.flash(image, get_backend(bus), dialect=dialect, chip=chip, progress=False)
        seconds = time.perf_counter() - t0
        flash = em.memory.flash_bytes()
        base = chip.flash_start
        identical = all(flash[s - base:s - base + len(d)] == d for s, d in image.segments)
        return {
            "personality": personality, "dialect": dialect, "chip": chip.name, "bytes": image.size,
            "seconds": seconds, "verified": result.verified and identical and em.memory.app_valid,
        }


def run_demo() -> int:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    rows = []
    for personality, dialect, sample, host in _dfu_rows():
        rows.append(_run_row(personality, dialect, sample, host))
    table = Table(title="bootkit demo: sample images flashed into emulated devices (in-process bus)")
    for col in ("personality", "dialect", "chip", "bytes", "seconds", "KiB/s", "verified"):
        table.add_column(col, justify="right" if col in ("bytes", "seconds", "KiB/s") else "left")
    for r in rows:
        rate = r["bytes"] / 1024 / r["seconds"] if r["seconds"] else 0.0
        table.add_row(r["personality"], r["dialect"], r["chip"], str(r["bytes"]), f"{r['seconds']:.3f}",
                      f"{rate:.0f}", "yes" if r["verified"] else "NO")
    console.print(table)
    ok = all(r["verified"] for r in rows)
    if not ok:
        console.print("[red]some personalities did not verify[/red]")
    return 0 if ok else 1
