"""Run `bootkit ARGS...` in this process, optionally profiled or with the flash saved less often.

    python3 benchmarks/gadget_profile.py [--profile OUT.pstats] [--persist-after S] serve printer ...

--profile: cProfile in every thread, the merged statistics written to OUT at exit.  cProfile
alone sees only the thread that enabled it (Modules/_lsprof.c installs its hook per thread),
and a FunctionFS gadget moves its data in one thread per endpoint
(bootkit/transports/functionfs/endpoints.py): every Thread.run is wrapped here so those
threads are profiled too.  The timer is each thread's own CPU time (time.thread_time), not
the wall clock: under QEMU TCG with one CPU and several threads a wall-clock profile charges
a function for the time its thread waited for the GIL or the CPU, and blocking calls (read,
select) for the time nothing happened.

--persist-after S: SimulatedFlash.PERSIST_AFTER for this run (an experiment: how much of
the gadget's time is the emulator saving its image file while the host writes).

bench_gadget_vs_kernel.py runs the gadget through this in the guest.
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import threading
import time

_profiles: list[cProfile.Profile] = []
_lock = threading.Lock()


def _profiled_run(original):
    def run(self):
        profile = cProfile.Profile(time.thread_time)
        with _lock:
            _profiles.append(profile)
        profile.enable()
        try:
            original(self)
        finally:
            profile.disable()
    return run


def main() -> int:
    argv = sys.argv[1:]
    out = persist_after = None
    while argv and argv[0] in ("--profile", "--persist-after"):
        if argv[0] == "--profile":
            out = argv[1]
        else:
            persist_after = float(argv[1])
        argv = argv[2:]
    if persist_after is not None:
        from bootkit.memory.flash import SimulatedFlash
        SimulatedFlash.PERSIST_AFTER = persist_after
    from bootkit.cli import main as bootkit_main

    if out is None:
        return bootkit_main(argv)
    threading.Thread.run = _profiled_run(threading.Thread.run)  # type: ignore[method-assign]
    profile = cProfile.Profile(time.thread_time)
    _profiles.append(profile)
    profile.enable()
    try:
        rc = bootkit_main(argv)
    finally:
        profile.disable()
        with _lock:
            stats = pstats.Stats(_profiles[0])
            for other in _profiles[1:]:
                try:
                    stats.add(other)
                except TypeError:  # a thread that never ran anything
                    pass
        stats.dump_stats(out)
    return rc


if __name__ == "__main__":
    sys.exit(main())
