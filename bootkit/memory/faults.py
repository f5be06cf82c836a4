"""Fault injection: cut the power after the Nth program, erase, write, fsync or rename.

A :class:`FaultPlan` is handed to the memory core (``SimulatedFlash(...,
faults=plan)``) and to the image writer.  Every step that changes what a
real device or its backing file holds calls :meth:`FaultPlan.step` first; at
the chosen step the plan applies the step's torn effect (half a page
programmed, half a file written) and raises :class:`PowerCut`.  After that
every further step raises too: a device without power does nothing.

``PowerCut`` derives from ``BaseException`` so that no protocol engine's
``except Exception`` (which turns memory faults into status codes) can
swallow it: the cut must reach whoever is running the campaign.
"""

from __future__ import annotations

from typing import Callable, Iterable

#: The kinds of step a plan counts: memory-core operations, then image-file operations.
MEMORY_STEPS = ("program", "erase")
FILE_STEPS = ("write", "fsync", "rename", "dirsync", "unlink")


class PowerCut(BaseException):
    """The power was cut at a step of a :class:`FaultPlan`."""

    def __init__(self, step: int, kind: str):
        super().__init__(f"power cut at step {step} ({kind})")
        self.step = step
        self.kind = kind


class FaultPlan:
    """Counts the steps that can be cut and cuts at step ``cut_at`` (1-based; None never cuts).

    ``kinds`` limits the steps counted (default: every kind).  ``log`` keeps
    the kinds of the steps seen, so a campaign can first run uncut to count
    them and then choose cut points over the whole range.
    """

    def __init__(self, cut_at: int | None = None, *, kinds: Iterable[str] | None = None):
        self.cut_at = cut_at
        self.kinds = frozenset(kinds) if kinds is not None else None
        self.count = 0
        self.log: list[str] = []
        self.fired: PowerCut | None = None

    def step(self, kind: str, tear: Callable[[], None] | None = None) -> None:
        """Called before a step happens; ``tear`` applies the part of it that a cut leaves behind."""
        if self.fired is not None:
            raise PowerCut(self.fired.step, kind)
        if self.kinds is not None and kind not in self.kinds:
            return
        self.count += 1
        self.log.append(kind)
        if self.cut_at is not None and self.count == self.cut_at:
            if tear is not None:
                tear()
            self.fired = PowerCut(self.count, kind)
            raise self.fired
