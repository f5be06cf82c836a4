"""``bootkit demo``: every personality flashing a sample image into an emulated device.

Each row runs on its own in-process bus: the device side emulates the chip,
the host client flashes the sample from examples/firmware, reads it back
and compares.  The rows are every registered personality's ``demo`` rows,
in the registry's display order.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .contracts import Link, Personality
from .emulator import Emulator
from .transports.virtual import VirtualBus, get_backend


def _rows() -> Iterator[tuple[Personality, str, str]]:
    """(personality, dialect, sample) for every registered personality."""
    from .registry import personalities

    for personality in personalities():
        for dialect, sample in personality.demo:
            yield personality, dialect, sample


def run_row(personality: Personality | str, dialect: str, sample: str) -> dict[str, Any]:
    """One row: flash the sample (``bootkit.samples``) through the personality's own host side
    on a fresh in-process bus (or the personality's own wiring); the row's figures."""
    from .registry import personality as registered
    from .samples import load_sample

    if isinstance(personality, str):
        personality = registered(personality)
    chip, image = load_sample(sample)
    custom = personality.run_demo_row(dialect, chip, image)
    if custom is not None:  # serial personalities bring their own wiring (a pty, not the bus)
        return custom
    bus = VirtualBus()
    options = {"dialect": dialect, **personality.demo_options}
    with Emulator(chip, personality.name, options=options) as em:
        chip = em.chip  # the personality may size the bootloader region its own way (HalfKay)
        em.attach(bus)
        # the host's own figure: the flash and its verification, not the watch after leaving
        seconds = personality.host().flash(image, Link(backend=get_backend(bus)), dialect=dialect, chip=chip,
                                           progress=False).seconds
        flash = em.memory.flash_bytes()
        base = chip.flash_start
        identical = all(flash[s - base:s - base + len(d)] == d for s, d in image.segments)
        # "verified" is the demo's own check: the emulated flash holds the image and the
        # application was manifested (dialects without read-back cannot verify themselves)
        return {
            "personality": personality.name, "dialect": dialect, "chip": chip.name, "bytes": image.size,
            "seconds": seconds, "verified": identical and em.memory.app_valid,
        }


def run_demo() -> int:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    rows = []
    for personality, dialect, sample in _rows():
        rows.append(run_row(personality, dialect, sample))
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
