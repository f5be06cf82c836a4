"""What a command raises to end with one line and an exit status.

Exit status: 0 success, 1 the device or tool failed, 2 bad input (file, arguments),
130/143 interrupted by SIGINT/SIGTERM (as a shell reports a signal).
"""

from __future__ import annotations

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


class BadInput(Exception):
    """Exit 2 with this one-line message."""


class Failed(Exception):
    """Exit 1 with this one-line message."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Python would raise KeyboardInterrupt for SIGINT."""


class Interrupted(Exception):
    """Exit 130 (SIGINT) or 143 (SIGTERM), as a shell reports a signal, with one line saying
    what state the interrupted operation left the device in."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code
