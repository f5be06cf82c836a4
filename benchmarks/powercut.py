"""The power-cut campaign (issue 17 item 4): cut the power at random steps of a flash, reboot, retry.

For every personality and every dialect, in-process (the wiring ``bootkit
demo`` uses: the in-process bus, a pty for CDC) with a file-backed image on
a tmpfs directory:

1. the device holds a complete old image A, manifested (valid), saved;
2. an uncut flash of a new image B through the personality's own host
   client counts the steps a cut can land on (memory program/erase, image
   file write/fsync/rename/dirsync/unlink: :mod:`bootkit.memory.faults`);
3. for each cut point k: a fresh copy of the A files, flash B with
   ``FaultPlan(cut_at=k)``; at the cut the device stops (it is detached from
   the bus, or its pty closes) and the host's error is expected;
4. "reboot": a new SimulatedFlash loaded from what survived on disk, then

   * brick: the bootloader region differs from before, or a retry is
     impossible (the entry policy lets an invalid application run, or the
     retry flash fails or does not read back B);
   * silent corruption: the application is marked valid but its bytes are
     neither A's nor B's (complete images, as flashed over the erased chip);
   * otherwise fine, and B is flashed again uncut: a retry must succeed.

Usage::

    python benchmarks/powercut.py [--cuts N] [--seed S] [--only PERSONALITY[/DIALECT]] [--jobs J] [--markdown]

Exit status 0 when no cut bricked the device or silently corrupted it, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

from bootkit import registry
from bootkit.emulator import Emulator
from bootkit.formats.image import Image
from bootkit.memory import Board, SimulatedFlash
from bootkit.memory.faults import FILE_STEPS, MEMORY_STEPS, FaultPlan, PowerCut
from bootkit.transports.virtual import VirtualBackend, VirtualBus

IMAGE_NAME = "flash.bin"

# (chip, size of image B in bytes) per personality/dialect: a small image, and one above
# 64 KiB where the chip has the room (at90usb1286: 120 KiB of application; stm32f411: 512 KiB).
SMALL, LARGE = 3000, 0x10000 + 2345
CASES: dict[tuple[str, str], tuple[tuple[str, int], ...]] = {
    ("dfu", "dfu"): (("stm32f103c8", SMALL), ("stm32f103c8", 40000)),
    ("dfu", "dfuse"): (("stm32f411", SMALL), ("stm32f411", LARGE)),
    ("dfu", "flip"): (("atmega32u4", SMALL), ("at90usb1286", LARGE)),
    ("hid", "halfkay"): (("atmega32u4", SMALL), ("at90usb1286", LARGE)),
    ("hid", "lufa"): (("atmega32u4", SMALL), ("at90usb1286", LARGE)),
    ("hid", "native"): (("atmega32u4", SMALL), ("at90usb1286", LARGE)),
    ("hid", "xusb"): (("atxmega32a4u", SMALL), ("atxmega128a3u", LARGE)),
    ("cdc", "lufa"): (("atmega32u4", SMALL), ("at90usb1286", LARGE)),
    ("cdc", "caterina"): (("atmega32u4", SMALL), ("at90usb1286", LARGE)),
    ("cdc", "optiboot"): (("atmega328p", SMALL), ("atmega1284p", LARGE)),
    ("cdc", "wiring"): (("atmega2560", SMALL), ("atmega2560", LARGE)),
    ("printer", "lufa"): (("atmega32u4", SMALL), ("at90usb1286", LARGE)),
    ("msc", "uf2"): (("stm32f103c8", SMALL), ("stm32f411", LARGE)),
    ("msc", "bin"): (("stm32f103c8", SMALL), ("stm32f411", LARGE)),
    ("msc", "hex"): (("stm32f103c8", SMALL), ("stm32f411", LARGE)),
    ("midi", "sysex"): (("atmega32u4", SMALL), ("stm32f411", LARGE)),
    ("midi", "file"): (("atmega32u4", SMALL), ("at90usb1286", LARGE)),
    ("isp", "stk500v2"): (("attiny85", SMALL), ("atmega2560", LARGE)),
    ("isp", "usbasp"): (("attiny85", SMALL), ("atmega2560", LARGE)),
}

# Device options: leave soon after the last block or job (the demo's own choice for MSC) so a
# campaign of thousands of flashes does not spend its time in the watch after leaving.
DEVICE_OPTIONS = {"msc": {"leave_delay": 0.05}, "printer": {"leave_delay": 0.05}}
# Host options: how long each host watches the bus after leaving.  Long enough for the
# device's own leave delay above (native HID: 50 ms; MIDI: 50 ms; Caterina: 0.5 s) on a loaded
# machine: the in-process bus re-enumerates from a timer thread, which a load of 16 on 2 cores
# delayed past 0.3 s (a retry reported as a brick in CI).  A watch ends as soon as the
# application enumerates, so the margin costs nothing when the flash went well.
HOST_OPTIONS = {
    "dfu": {"leave_timeout": 1.0},
    "hid": {"leave_wait": 1.0},
    "cdc": {"leave_wait": 1.0},
    "printer": {"wait": (1.0, 0.1)},
    "msc": {"timeout": 1.0, "again": 0.1},
    "midi": {"leave_wait": 1.0, "realtime": False},
}


@dataclass(frozen=True)
class Case:
    personality: str
    dialect: str
    chip: str
    size: int
    seed: int

    @property
    def name(self) -> str:
        return f"{self.personality}/{self.dialect}"


def all_dialects() -> list[tuple[str, str]]:
    """Every (personality, dialect) the registered personalities declare, in their order."""
    out = []
    for name in registry.personality_names():
        for dialect in registry.personality(name).dialects:
            if (name, dialect) not in CASES:
                raise SystemExit(f"powercut: no campaign case for {name}/{dialect}: add it to CASES")
            out.append((name, dialect))
    return out


def cases_for(personality: str, dialect: str, seed: int) -> list[Case]:
    return [Case(personality, dialect, chip, size, seed) for chip, size in CASES[(personality, dialect)]]


# ----------------------------------------------------------------------------------------------
# images

def _adapted_chip(case: Case):
    """The chip as the device sees it (HalfKay sizes its own bootloader region)."""
    from bootkit.registry import resolve_chip

    chip = resolve_chip(case.chip)
    return registry.personality(case.personality).chip_for(chip, case.dialect)


def make_image(chip, size: int, rng: random.Random) -> Image:
    """Two segments of random bytes: the first at the application start (its first word
    runnable), odd lengths, a gap of more than a page, the second starting off every page
    boundary (an odd address)."""
    layout = chip.layout()
    start, end = layout.application_ranges("flash")[0]
    page = layout.flash.page_size
    size = min(size, (end - start) * 3 // 4)
    first = (size * 2 // 3) | 1
    second = (size - first) | 1
    gap_start = start + first + page + page // 2 + 1  # odd: off every page boundary
    assert gap_start + second <= end, (chip.name, size)
    data1 = bytearray(rng.randbytes(first))
    data1[0:2] = b"\x0c\x94"  # a runnable first word (an AVR jmp; anything but 0xFFFF)
    return Image([(start, bytes(data1)), (gap_start, rng.randbytes(second))])


def images_for(case: Case) -> tuple[Image, Image]:
    """Old image A and new image B: different lengths and places, so A's bytes outlive B's
    flash where B has none."""
    chip = _adapted_chip(case)
    rng = random.Random(f"{case.seed}/{case.name}/{case.chip}/{case.size}")
    a = make_image(chip, max(case.size * 3 // 5, 600), rng)
    b = make_image(chip, case.size, rng)
    return a, b


def over_erased(chip, image: Image) -> bytes:
    """The application region as a complete flash of ``image`` over the erased chip leaves it."""
    start, end = chip.layout().application_ranges("flash")[0]
    buf = bytearray(b"\xff" * (end - start))
    for addr, data in image.segments:
        buf[addr - start:addr - start + len(data)] = data
    return bytes(buf)


# ----------------------------------------------------------------------------------------------
# one flash, possibly cut

class Hang(BaseException):
    """A run did not end within its bounded wait."""


@contextlib.contextmanager
def bounded(seconds: float):
    """Raise Hang in this (main) thread after ``seconds``: no run of the campaign can hang it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def fire(signum, frame):
        raise Hang(f"no end within {seconds:.0f} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


class CampaignPlan(FaultPlan):
    """A FaultPlan that also stops the device the moment the power goes (``on_cut``)."""

    def __init__(self, cut_at: int | None = None):
        super().__init__(cut_at)
        self.on_cut = None
        self._stopped = False

    def step(self, kind, tear=None):
        try:
            super().step(kind, tear)
        except PowerCut:
            if not self._stopped:
                self._stopped = True
                if self.on_cut is not None:
                    self.on_cut()
            raise


@dataclass
class Run:
    fired: str | None = None  # the kind of step the cut landed on
    error: str | None = None  # what the host said (expected after a cut)
    seconds: float = 0.0
    steps: list = field(default_factory=list)
    hang: str | None = None
    chip_view: "Boot | None" = None  # the memory as the cut left it (what a real chip's flash holds)


def _emulator(case: Case, path: str, plan: FaultPlan | None) -> Emulator:
    options = {"dialect": case.dialect, **DEVICE_OPTIONS.get(case.personality, {})}
    return Emulator(case.chip, case.personality, image=path, options=options, faults=plan)


def flash_once(case: Case, image: Image, path: str, plan: FaultPlan | None, limit: float) -> Run:
    """Flash ``image`` into the device whose image file is ``path``, as the personality's own host
    client does it in-process; with ``plan`` cutting the power at its step."""
    return _flash_once(case, image, path, plan, limit, Run(), time.perf_counter())


def _flash_once(case, image, path, plan, limit, run, t0) -> Run:
    host = importlib.import_module(f"bootkit.classes.{case.personality}.host")
    em = None
    stop = threading.Event()
    thread = None
    try:
        with bounded(limit):
            try:
                em = _emulator(case, path, plan)
                chip = em.chip
                kw = dict(HOST_OPTIONS.get(case.personality, {}))
                if case.personality == "cdc":
                    # CDC serves a pty, as its demo row does; the server thread ends at the cut
                    # (serve() closes the master), so the host's next read fails at once.
                    from bootkit.transports.pty import PtyServer

                    server = PtyServer(em, log=None)

                    def serve():
                        with contextlib.suppress(PowerCut):
                            server.serve(stop)

                    thread = threading.Thread(target=serve, name="powercut pty", daemon=True)
                    thread.start()
                    kw["port"] = server.slave_path
                    backend = None
                else:
                    bus = VirtualBus()
                    em.attach(bus)
                    # a cut device drops off the bus at once: the host sees it gone (ENODEV)
                    if plan is not None and hasattr(plan, "on_cut"):
                        plan.on_cut = lambda: _unplug(em, bus)
                    backend = VirtualBackend(bus)
                try:
                    result = host.flash(image, backend, dialect=case.dialect, chip=chip, progress=False, **kw)
                    run.steps = list(result.steps)
                except PowerCut:
                    raise
                except Exception as exc:  # the host's own error: expected after a cut
                    run.error = f"{type(exc).__name__}: {exc}"
                stop.set()
                if thread is not None:
                    thread.join()
                em.close()  # persists (steps a cut can land on too)
            except PowerCut:
                pass
            finally:
                stop.set()
                if thread is not None:
                    thread.join()
    except Hang as exc:
        run.hang = str(exc)
    if plan is not None and plan.fired is not None:
        run.fired = plan.fired.kind
        if em is not None:
            run.chip_view = boot_of(em.memory, em.chip)
    _drop(em)  # after a cut or a hang: release the image's lock, so the reboot can open it
    run.seconds = time.perf_counter() - t0
    return run


def _unplug(em: Emulator, bus: VirtualBus) -> None:
    bus.detach(em.target)
    em.target.device = None


def _drop(em: Emulator | None) -> None:
    """Close a device that may be dead: after a cut its plan refuses every save (nothing more
    reaches its file) and close() still releases the lock; a closed one is left as it is."""
    if em is None:
        return
    with contextlib.suppress(PowerCut, Exception):
        em.close()


# ----------------------------------------------------------------------------------------------
# reboot and classify

@dataclass
class Boot:
    valid: bool
    app: bytes
    outside: bytes  # every flash byte outside the application (the bootloader region)
    mode: str


def reboot(case: Case, path: str) -> Boot:
    """A new memory loaded from what survived on disk, and what the entry policy does with it."""
    chip = _adapted_chip(case)
    memory = SimulatedFlash(chip, path)
    try:
        return boot_of(memory, chip)
    finally:
        memory.close()


def boot_of(memory, chip) -> Boot:
    """What a power-on finds in ``memory``: the application valid or not, its bytes, the rest."""
    flash = memory.flash_bytes()
    base = chip.flash_start
    start, end = chip.layout().application_ranges("flash")[0]
    app = flash[start - base:end - base]
    outside = flash[:start - base] + flash[end - base:]
    return Boot(memory.app_valid, app, outside, Board(memory).power_on())


@dataclass
class Refs:
    """What a reboot may find: A's state, B as an uncut flash leaves it, B over the erased chip."""
    a_app: bytes
    b_apps: tuple[bytes, ...]
    outside: bytes


def classify(boot: Boot, refs: Refs) -> tuple[str, str]:
    """("brick" | "silent" | "A" | "B" | "invalid", why)."""
    if boot.outside != refs.outside:
        return "brick", "the bootloader region changed"
    if not boot.valid:
        if boot.mode != "bootloader":
            return "brick", f"application not valid, but the board runs {boot.mode}"
        return "invalid", "application not valid: stays in the bootloader"
    if boot.app == refs.a_app:
        return "A", "old image, valid"
    if boot.app in refs.b_apps:
        return "B", "new image, valid"
    b = refs.b_apps[0]
    first = next(i for i in range(len(boot.app)) if boot.app[i] != b[i])
    return "silent", f"valid application differs from A and B (from B first at application offset 0x{first:X})"


# ----------------------------------------------------------------------------------------------
# the campaign for one case

@dataclass
class Prepared:
    case: Case
    base: str  # directory holding the A state
    log: list  # the kinds of the uncut flash's steps, in order
    kinds: dict
    refs: Refs
    limit: float
    uncut_seconds: float


def prepare(case: Case, workdir: str) -> Prepared:
    """The A state on disk, and the uncut flash of B that counts the cuttable steps."""
    a, b = images_for(case)
    chip = _adapted_chip(case)
    base = os.path.join(workdir, f"{case.personality}-{case.dialect}-{case.chip}-{case.size}")
    shutil.rmtree(base, ignore_errors=True)
    os.makedirs(os.path.join(base, "A"))
    path = os.path.join(base, "A", IMAGE_NAME)
    # 1. A, complete and manifested, as a finished flash leaves it
    memory = SimulatedFlash(chip, path)
    for addr, data in a.segments:
        memory.poke(addr, data)
    memory.manifest()
    memory.close()
    boot_a = reboot(case, path)
    if not boot_a.valid or boot_a.app != over_erased(chip, a):
        raise RuntimeError(f"{case.name} {case.chip}: the A state did not survive a reboot")
    # 2. B uncut, counting the steps
    trial = os.path.join(base, "uncut")
    shutil.copytree(os.path.join(base, "A"), trial)
    plan = CampaignPlan(None)
    run = flash_once(case, b, os.path.join(trial, IMAGE_NAME), plan, limit=600.0)
    boot_b = reboot(case, os.path.join(trial, IMAGE_NAME))
    b_erased = over_erased(chip, b)
    start = chip.layout().application_ranges("flash")[0][0]
    holds_b = all(boot_b.app[s - start:s - start + len(d)] == d for s, d in b.segments)
    if run.error or run.hang or not boot_b.valid or not holds_b:
        raise RuntimeError(f"{case.name} {case.chip}: the uncut flash of B failed "
                           f"({run.error or run.hang or 'not valid or not B after reboot'})")
    kinds = {k: plan.log.count(k) for k in dict.fromkeys(plan.log)}
    refs = Refs(boot_a.app, (boot_b.app, b_erased), boot_a.outside)
    # the bounded wait of one cut run: generous against the uncut run measured here (a loaded
    # machine may be ten times slower), never below a minute
    limit = max(60.0, 20 * run.seconds)
    return Prepared(case, base, list(plan.log), kinds, refs, limit, run.seconds)


@dataclass
class Outcome:
    k: int
    fired: str | None
    verdict: str
    why: str
    retried: bool = False
    retry_ok: bool = False
    retry_why: str = ""
    host_error: str | None = None
    chip_verdict: str | None = None  # the same judgement of the memory as the cut left it
    chip_why: str = ""


def cut_once(prep: Prepared, k: int, workdir: str) -> Outcome:
    """Steps 3 and 4 for one cut point: cut at step k, reboot, classify, retry."""
    case = prep.case
    _, b = images_for(case)
    run_dir = tempfile.mkdtemp(prefix=f"cut{k}-", dir=workdir)
    try:
        shutil.copytree(os.path.join(prep.base, "A"), run_dir, dirs_exist_ok=True)
        path = os.path.join(run_dir, IMAGE_NAME)
        plan = CampaignPlan(k)
        run = flash_once(case, b, path, plan, prep.limit)
        if run.hang:
            return Outcome(k, run.fired, "brick", f"hang: {run.hang}")
        verdict, why = classify(reboot(case, path), prep.refs)
        out = Outcome(k, run.fired, verdict, why, host_error=run.error)
        if run.chip_view is not None:
            out.chip_verdict, out.chip_why = classify(run.chip_view, prep.refs)
        if verdict in ("brick", "silent"):
            return out
        # a retry: B again, uncut, and what a reboot then holds
        out.retried = True
        retry = flash_once(case, b, path, None, prep.limit)
        again, again_why = classify(reboot(case, path), prep.refs)
        if retry.hang or retry.error or again != "B":
            out.retry_why = f"{retry.hang or retry.error or 'no host error'}; the reboot after it: {again_why}"
            out.verdict, out.why = "brick", f"retry failed: {out.retry_why}"
        else:
            out.retry_ok = True
        return out
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def cut_points(log: list[str], n: int, rng: random.Random) -> list[int]:
    """n cut points (1-based steps of ``log``, the kinds an uncut flash stepped through).

    With n at least the number of steps: every step once per full round, the rest at random.
    Otherwise half of them at random among the file steps (there are far fewer of them than
    memory steps, and they are where a torn save would show) and the rest among the memory steps.
    """
    steps = len(log)
    if n >= steps:
        rounds, rest = divmod(n, steps)
        return list(range(1, steps + 1)) * rounds + sorted(rng.sample(range(1, steps + 1), rest))
    files = [i + 1 for i, kind in enumerate(log) if kind in FILE_STEPS]
    memory = [i + 1 for i, kind in enumerate(log) if kind not in FILE_STEPS]
    in_memory = min(len(memory), n - min(len(files), n // 2))
    return sorted(rng.sample(files, n - in_memory) + rng.sample(memory, in_memory))


# ----------------------------------------------------------------------------------------------
# the whole campaign

@dataclass
class Row:
    personality: str
    dialect: str
    chips: list = field(default_factory=list)
    steps: list = field(default_factory=list)
    cuts: int = 0
    memory_cuts: int = 0
    file_cuts: int = 0
    unfired: int = 0
    bricks: int = 0
    silent: int = 0
    after: dict = field(default_factory=lambda: {"A": 0, "B": 0, "invalid": 0})
    retries_ok: int = 0
    retries: int = 0
    failures: list = field(default_factory=list)
    chip_bricks: int = 0
    chip_silent: int = 0

    def add(self, o: Outcome) -> None:
        self.cuts += 1
        if o.fired in MEMORY_STEPS:
            self.memory_cuts += 1
        elif o.fired in FILE_STEPS:
            self.file_cuts += 1
        else:
            self.unfired += 1
        if o.verdict == "brick":
            self.bricks += 1
        elif o.verdict == "silent":
            self.silent += 1
        else:
            self.after[o.verdict] += 1
        self.retries += o.retried
        self.retries_ok += o.retry_ok
        self.chip_bricks += o.chip_verdict == "brick"
        self.chip_silent += o.chip_verdict == "silent"
        if o.verdict in ("brick", "silent") or o.chip_verdict in ("brick", "silent"):
            self.failures.append(o)

    @property
    def ok(self) -> bool:
        return (self.bricks == 0 and self.silent == 0 and self.retries_ok == self.retries
                and self.chip_bricks == 0 and self.chip_silent == 0)


_WORKDIR = None


def _init_worker(workdir):
    global _WORKDIR
    _WORKDIR = workdir
    sys.unraisablehook = _quiet_after_cut


def _quiet_after_cut(unraisable, _default=sys.unraisablehook):
    """After a cut the host's objects die with the device gone (pyfatfs flushes its FAT in
    __del__): their "Exception ignored" reports are the cut's expected echo, not news."""
    import usb.core

    if isinstance(unraisable.exc_value, (usb.core.USBError, PowerCut)):
        return
    _default(unraisable)


def _prepare_task(case):
    return prepare(case, _WORKDIR)


def _cut_task(args):
    prep, k = args
    return prep.case, cut_once(prep, k, _WORKDIR)


# The share of a dialect's cuts on its large image and on its small one: a large flash costs
# up to ten times the CPU of a small one, and has the same kinds of step, only more of them.
SHARE = {False: 1, True: 9}


def split(n: int, weights: list[int]) -> list[int]:
    """n split in proportion to ``weights``, the remainder to the first ones."""
    total = sum(weights)
    parts = [n * w // total for w in weights]
    for i in range(n - sum(parts)):
        parts[i % len(parts)] += 1
    return parts


def campaign(dialects, cuts: int, seed: int, *, jobs: int = 0, workdir: str | None = None,
             progress=None, small_only: bool = False) -> list[Row]:
    """Run ``cuts`` cut points per personality/dialect (split over its cases); one Row each.
    ``small_only``: only the small image of each dialect (the CI-sized run)."""
    import multiprocessing

    own = workdir is None
    workdir = workdir or tempfile.mkdtemp(prefix="powercut-", dir=_tmpfs())
    cases = [c for p, d in dialects for c in cases_for(p, d, seed) if not small_only or c.size == SMALL]
    rows = {(p, d): Row(p, d) for p, d in dialects}
    # most of a run's time is the host's watch of the bus after leaving (a sleep), not CPU
    jobs = jobs or 4 * (os.cpu_count() or 1)
    ctx = multiprocessing.get_context("fork")
    try:
        with ctx.Pool(jobs, initializer=_init_worker, initargs=(workdir,)) as pool:
            preps = pool.map(_prepare_task, cases)
            tasks = []
            rng = random.Random(seed)
            by_dialect: dict = {}
            for prep in preps:
                by_dialect.setdefault((prep.case.personality, prep.case.dialect), []).append(prep)
            for key, group in by_dialect.items():
                for prep, n in zip(group, split(cuts, [SHARE[p.case.size == SMALL] for p in group])):
                    rows[key].chips.append(prep.case.chip)
                    rows[key].steps.append(len(prep.log))
                    tasks += [(prep, k) for k in cut_points(prep.log, n, rng)]
            random.Random(seed).shuffle(tasks)  # mix slow and fast cases over the workers
            if progress:
                progress.start(len(tasks))
            for case, outcome in pool.imap_unordered(_cut_task, tasks, chunksize=4):
                rows[(case.personality, case.dialect)].add(outcome)
                if progress:
                    progress.advance()
    finally:
        if progress:
            progress.stop()
        if own:
            shutil.rmtree(workdir, ignore_errors=True)
    return list(rows.values())


def _tmpfs() -> str | None:
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


# ----------------------------------------------------------------------------------------------
# output

COLUMNS = ("personality", "dialect", "chip (steps)", "cuts", "in memory", "in file", "not fired",
           "then A", "then B", "then invalid", "bricks", "silent corruption", "retries ok",
           "chip view: bricks", "chip view: silent")


def cells(r: Row) -> list[str]:
    chips = ", ".join(f"{c} ({s})" for c, s in zip(r.chips, r.steps))
    return [r.personality, r.dialect, chips, str(r.cuts), str(r.memory_cuts), str(r.file_cuts), str(r.unfired),
            str(r.after["A"]), str(r.after["B"]), str(r.after["invalid"]), str(r.bricks), str(r.silent),
            f"{r.retries_ok}/{r.retries}", str(r.chip_bricks), str(r.chip_silent)]


def markdown(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(cells(r)) + " |" for r in rows]
    return "\n".join(lines)


def failures_text(rows: list[Row], limit: int = 10) -> list[str]:
    out = []
    for r in rows:
        for o in r.failures[:limit]:
            out.append(f"{r.personality}/{r.dialect}: cut at step {o.k} ({o.fired}): {o.verdict}: {o.why}; "
                       f"chip view: {o.chip_verdict}: {o.chip_why}")
    return out


class _Progress:
    def __init__(self, console):
        from rich.progress import Progress

        self.bar = Progress(console=console, transient=True)
        self.task = None

    def start(self, total):
        self.bar.start()
        self.task = self.bar.add_task("power cuts", total=total)

    def advance(self):
        self.bar.advance(self.task)

    def stop(self):
        self.bar.stop()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cuts", type=int, default=1000, help="cut points per personality/dialect (default 1000)")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--only", action="append", default=[],
                        help="PERSONALITY or PERSONALITY/DIALECT (repeatable)")
    parser.add_argument("--jobs", type=int, default=0,
                        help="worker processes (default: four per core: most of a run is the host's watch after leaving)")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = parser.parse_args(argv)
    if args.cuts < 1:
        print(f"powercut: --cuts {args.cuts}: must be at least 1", file=sys.stderr)
        return 2
    dialects = all_dialects()
    if args.only:
        known = {p for p, _ in dialects} | {f"{p}/{d}" for p, d in dialects}
        bad = [o for o in args.only if o not in known]
        if bad:
            print(f"powercut: --only {bad[0]}: not a personality or personality/dialect "
                  f"(choose from {', '.join(sorted(known))})", file=sys.stderr)
            return 2
        dialects = [(p, d) for p, d in dialects if p in args.only or f"{p}/{d}" in args.only]
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console = Console(width=240)  # piped: the whole table, not squeezed to 80 columns
    t0 = time.perf_counter()
    rows = campaign(dialects, args.cuts, args.seed, jobs=args.jobs,
                    progress=_Progress(console) if console.is_terminal else None)
    seconds = time.perf_counter() - t0
    if args.markdown:
        print(markdown(rows))
        print()
        print(f"seed {args.seed}, {args.cuts} cuts per personality/dialect, {seconds:.0f} s")
    else:
        table = Table(title=f"power cuts (seed {args.seed}, {seconds:.0f} s)")
        for col in COLUMNS:
            table.add_column(col, justify="left" if col in COLUMNS[:3] else "right")
        for r in rows:
            table.add_row(*cells(r))
        console.print(table)
    for line in failures_text(rows):
        print(line)
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
