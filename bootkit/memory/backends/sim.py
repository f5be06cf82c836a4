"""``sim:CHIP``: the simulated flash (the default back-end; ``serve --chip CHIP`` means this)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import TargetSpec

if TYPE_CHECKING:
    from ..chips import Chip
    from ..flash import SimulatedFlash


def open_sim(spec: TargetSpec, chip: Chip | None = None) -> SimulatedFlash:
    """A fresh simulated flash of the spec's chip (in RAM: ``serve --image`` gives it a file)."""
    from ..chips import get_chip
    from ..flash import SimulatedFlash

    assert spec.chip is not None
    try:
        named = get_chip(spec.chip)
    except KeyError as exc:
        raise ValueError(f"--target {spec.text}: {exc.args[0] if exc.args else exc}") from None
    if chip is not None and chip.name != named.name:
        raise ValueError(f"--target {spec.text} disagrees with --chip {chip.name}")
    return SimulatedFlash(named)
