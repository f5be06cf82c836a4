"""Progress bars: rich on a terminal, silent when output is piped.

Every bar also records the phase of the running host operation (``phases``),
so an interrupted command can say what state it left the device in (#17):
nothing written yet, flash partly written, written but not verified, or
already told to leave its bootloader.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager


def interactive() -> bool:
    return sys.stderr.isatty()


#: The phases of this process's host operation so far, oldest first (reset by :func:`reset_phases`).
phases: list[str] = []

# Words of a bar's description or a phase that mean the device's memory is being changed,
# and those that only read it back.  Anything else (e.g. "leave") is a phase of its own.
_WRITING = ("erase", "download", "program", "writing", "copying", "print", "send", "job")
_READING = ("upload", "read", "verify")


def reset_phases() -> None:
    phases.clear()


def phase(name: str) -> None:
    """Record that the host operation entered phase ``name`` (a bar's description, or "leave")."""
    phases.append(name)


def interrupted_state() -> str:
    """One clause: what an operation interrupted now leaves on the device, from the phases seen."""
    wrote = any(any(w in p for w in _WRITING) for p in phases)
    if "leave" in phases:
        return ("the device was already told to leave its bootloader after the image was written; "
                "its outcome was not observed")
    if not wrote:
        return "nothing was written: the device is unchanged"
    last = phases[-1]
    if any(r in last for r in _READING):
        return ("the image was written but not verified: the device is still in its bootloader; "
                "run the same flash again")
    return (f"the flash is partly written ({last}): the application is not valid and the device is still "
            "in its bootloader; run the same flash again")


@contextmanager
def progress_bar(description: str, total: int | None, enabled: bool | None = None):
    """Yield a callable advance(n).  ``enabled=None`` means: only on a terminal."""
    phase(description)
    if enabled is None:
        enabled = interactive()
    if not enabled:
        yield lambda n=1: None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), TimeRemainingColumn(), transient=True,
                  console=_console()) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n=1: progress.advance(task, n)


def _console():
    from rich.console import Console

    return Console(stderr=True)
