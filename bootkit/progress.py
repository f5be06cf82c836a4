"""Progress: a rich bar on a terminal, plain lines when stderr is not one, nothing when quiet.

Every bar counts its own unit: an erase counts sectors or pages (``unit="sectors"``),
program and verify count bytes.  A bar that reads the device back while the host is
verifying (after :func:`phase` ``("verify")``) is the "verify" bar, whatever its reader
calls it: the host reading back is the check, not an upload of its own.

When stderr is a file or a pipe (a CI log, ``2>log``) a bar is a plain line every :data:`PLAIN_INTERVAL`
seconds while it runs and one when its phase ends, instead of nothing; ``enabled=False``
(``--no-progress``) and quiet (:func:`set_quiet`, or ``BOOTKIT_QUIET=1`` in the
environment) print nothing.

Every bar also records the phase of the running host operation (``phases``),
so an interrupted command can say what state it left the device in (#17):
nothing written yet, flash partly written, written but not verified, or
already told to leave its bootloader.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

T = TypeVar("T")


def interactive() -> bool:
    return sys.stderr.isatty()


def logging_to_file() -> bool:
    """stderr is a file or a pipe (a log, ``2>log``, CI), not a terminal.  A stream without a
    file descriptor (a caller's io.StringIO in place of sys.stderr) is neither: it gets nothing."""
    try:
        sys.stderr.fileno()
    except (AttributeError, ValueError, OSError):  # io.UnsupportedOperation is both of the last two
        return False
    return not sys.stderr.isatty()


#: The phases of this process's host operation so far, oldest first (reset by :func:`reset_phases`).
phases: list[str] = []

# Words of a bar's description or a phase that mean the device's memory is being changed,
# and those that only read it back.  Anything else (e.g. "leave") is a phase of its own.
_WRITING = ("erase", "download", "program", "writing", "copying", "print", "send", "job")
_READING = ("upload", "read", "verify")

#: Seconds between two plain progress lines of one bar (off a terminal).
PLAIN_INTERVAL = 3.0

_quiet = False


def set_quiet(quiet: bool = True) -> None:
    """Silence the bars of this process (the command line's -q): no rich bar, no plain line."""
    global _quiet
    _quiet = quiet


def quiet() -> bool:
    return _quiet or os.environ.get("BOOTKIT_QUIET", "") not in ("", "0")


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


def _label(description: str) -> str:
    """The bar's name: a read-back while the host is verifying is "verify"."""
    if phases and phases[-1] == "verify" and description.split(" ", 1)[0] in ("upload", "read", "reading"):
        return "verify"
    return description


@contextmanager
def progress_bar(description: str, total: int | None, enabled: bool | None = None,
                 unit: str = "bytes") -> Iterator[Callable[..., None]]:
    """Yield a callable advance(n), n counted in ``unit`` ("bytes", or "sectors", "pages" for an erase).

    ``enabled``: True draws a rich bar even off a terminal, False draws nothing; None (the
    default) means a rich bar on a terminal, plain lines (:class:`PlainBar`) when stderr is a
    file or a pipe, and nothing when :func:`quiet`."""
    description = _label(description)
    phase(description)
    if enabled is False or (enabled is None and quiet()):
        yield lambda n=1: None
        return
    if enabled is None and not interactive():
        if not logging_to_file():
            yield lambda n=1: None
            return
        bar = PlainBar(description, total, unit)
        yield bar.advance
        bar.finish()
        return
    from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeRemainingColumn, TransferSpeedColumn)

    if unit == "bytes":
        columns = [DownloadColumn(), TransferSpeedColumn()]
    else:  # a count of sectors or pages: "3/12 sectors", no byte sizes, no speed
        columns = [MofNCompleteColumn(), TextColumn(unit)]
    with Progress("[progress.description]{task.description}", BarColumn(), *columns, TimeRemainingColumn(),
                  transient=True, console=_console()) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n=1: progress.advance(task, n)


def ticking(look: Callable[[], T], tick: Callable[[int], None],
            clock: Callable[[], float] = time.monotonic) -> Callable[[], T]:
    """``look`` (a LeaveWatch's look at the device) that also advances a bar counted in
    seconds (``unit="s"``) by the whole seconds gone since the first look."""
    started = clock()
    shown = 0

    def look_and_tick() -> T:
        nonlocal shown
        elapsed = int(clock() - started)
        if elapsed > shown:
            tick(elapsed - shown)
            shown = elapsed
        return look()

    return look_and_tick


class PlainBar:
    """A bar as plain lines on stderr: ``program: 4096 of 12288 bytes (33%)`` every
    :data:`PLAIN_INTERVAL` s while it runs, and ``program: 12288 bytes in 0.4 s`` when the phase
    ends (not when it fails: the error line says what happened)."""

    def __init__(self, description: str, total: int | None, unit: str = "bytes",
                 clock: Callable[[], float] = time.monotonic, out=None):
        self.description, self.total, self.unit = description, total, unit
        self.clock = clock
        self.out = out
        self.done = 0
        self.started = self.last = clock()

    def _print(self, text: str) -> None:
        out = self.out if self.out is not None else sys.stderr
        print(f"{self.description}: {text}", file=out, flush=True)

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = self.clock()
        if now - self.last >= PLAIN_INTERVAL:
            self.last = now
            if self.total:
                self._print(f"{self.done} of {self.total} {self.unit} ({100 * self.done // self.total}%)")
            else:
                self._print(f"{self.done} {self.unit}")

    def finish(self) -> None:
        seconds = self.clock() - self.started
        if self.unit == "s":  # a wait: how long it lasted is the news, not the ticks
            count = "done"
        elif self.total and self.done != self.total:
            count = f"{self.done} of {self.total} {self.unit}"
        else:
            count = f"{self.done} {self.unit}" if self.total is not None or self.done else "done"
        self._print(f"{count} in {seconds:.1f} s")


def _console():
    from rich.console import Console

    return Console(stderr=True)
