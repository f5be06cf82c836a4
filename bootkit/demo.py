"""``bootkit demo``: every personality flashing a sample image into an emulated device.

Each row runs on its own in-process bus: the device side emulates the chip,
the host client flashes the sample from examples/firmware, reads it back
and compares.  Rows appear as personalities land.
"""

from __future__ import annotations

from .emulator import Emulator
from .transports.virtual import VirtualBus, get_backend


def _rows():
    """(personality, dialect, sample, module) for every personality that has landed."""
    from .emulator import available_personalities, personality_module

    for name in available_personalities():
        module = personality_module(name)
        for dialect, sample in getattr(module, "DEMO", ()):
            yield name, dialect, sample, module


def _run_row(personality, dialect, sample, module):
    """Flash the sample through the personality's own host client on a fresh in-process bus."""
    import importlib

    from .samples import load_sample

    chip, image = load_sample(sample)
    custom = getattr(module, "run_demo_row", None)
    if custom is not None:  # serial personalities bring their own wiring (a pty, not the bus)
        return custom(dialect, chip, image)
    host = importlib.import_module(f"{module.__name__}.host")
    bus = VirtualBus()
    options = {"dialect": dialect, **getattr(module, "DEMO_OPTIONS", {})}
    with Emulator(chip, personality, options=options) as em:
        chip = em.chip  # the personality may size the bootloader region its own way (HalfKay)
        em.attach(bus)
        # the host's own figure: the flash and its verification, not the watch after leaving
        seconds = host.flash(image, get_backend(bus), dialect=dialect, chip=chip, progress=False).seconds
        flash = em.memory.flash_bytes()
        base = chip.flash_start
        identical = all(flash[s - base:s - base + len(d)] == d for s, d in image.segments)
        # "verified" is the demo's own check: the emulated flash holds the image and the
        # application was manifested (dialects without read-back cannot verify themselves)
        return {
            "personality": personality, "dialect": dialect, "chip": chip.name, "bytes": image.size,
            "seconds": seconds, "verified": identical and em.memory.app_valid,
        }


def run_demo() -> int:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    rows = []
    for personality, dialect, sample, module in _rows():
        rows.append(_run_row(personality, dialect, sample, module))
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
