"""Progress bars: rich on a terminal, silent when output is piped."""

from __future__ import annotations

import sys
from contextlib import contextmanager


def interactive() -> bool:
    return sys.stderr.isatty()


@contextmanager
def progress_bar(description: str, total: int | None, enabled: bool | None = None):
    """Yield a callable advance(n).  ``enabled=None`` means: only on a terminal."""
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
