"""The two errors of the ISP layer, split as the command line's exit codes are.

:class:`IspError` is the exchange or the target failing (no answer to
Programming Enable, a target that stays busy, a locked chip that cannot be
read): exit 1.  It is a RuntimeError, as Adafruit AVRprog raises
``RuntimeError("Signature read failure")``, so scripts written for it still
catch it.  :class:`IspInputError` is bad input (a fuse value outside its mask,
an image larger than the target): exit 2, raised before anything is written.
Messages are one line and name what to check.
"""

from __future__ import annotations


class IspError(RuntimeError):
    """The programmer, the wires or the target failed (the command line's exit 1)."""


class IspInputError(ValueError):
    """Bad input, found before anything was written (the command line's exit 2)."""
