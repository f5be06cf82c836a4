"""Run `bootkit ARGS...` (in the guest) with a pause after every FunctionFS endpoint read().

The pause stands for the OUT endpoint's thread being descheduled right after the kernel gave
it the host's packet (a loaded Pi Zero, QEMU TCG, another thread holding the GIL): the host's
transfer is complete, but the Function has not seen its data yet.  test_ffs_ordering.py uses
it to make the window in which ep0's thread could overtake the OUT data wide and certain.

    python3 tests/vm/slow_out.py SECONDS serve cdc --transport functionfs ...
"""

from __future__ import annotations

import os
import sys
import time


def main() -> int:
    pause, argv = float(sys.argv[1]), sys.argv[2:]
    import bootkit.transports.functionfs.endpoints as endpoints

    class SlowOs:
        """The os module, with read() pausing after it returned data (endpoint files only: ep0
        is read in server.py, which keeps the real os)."""

        def __getattr__(self, name):
            return getattr(os, name)

        @staticmethod
        def read(fd, length):
            data = os.read(fd, length)
            if data:
                time.sleep(pause)
            return data

    endpoints.os = SlowOs()
    from bootkit.cli import main as bootkit_main
    return bootkit_main(argv)


if __name__ == "__main__":
    sys.exit(main())
