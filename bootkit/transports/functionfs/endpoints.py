"""One FunctionFS instance: its ep0 (descriptors and strings written at open) and one
thread per endpoint file moving data between the kernel and the sans-I/O Function.

While the memory behind the device is busy (real-time mode, ``Target.busy_left``) an
endpoint thread takes no more data from the host and offers none: the UDC NAKs, as a
real device's controller does while its CPU waits for the flash.

An IN endpoint thread sleeps on a condition until the Function may have something to
send: IN data only ever appears after an event this transport delivered itself (OUT data,
a control request, a timer tick in Target.poll, a lifecycle event), and each of those
wakes it (:meth:`FunctionPort.wake_in`).  It no longer asks the Function every 2 ms.

Ordering of ep0 and OUT data: FunctionFS gives control requests (ep0) and OUT data (one
file per endpoint) to different threads, but the host orders them: cdc_acm drops DTR
(SET_CONTROL_LINE_STATE) only after its last bulk OUT transfer completed, that is after
the UDC handed its last packet to our OUT thread's read().  If ep0's thread handled the
request first, the Function would see the port closed before the tail of the stream
(the CDC engine abandons a half-received command, and the tail is then parsed as new
commands).  So before ep0 hands a request to the Function it waits
(:meth:`FunctionPort.drain_out`) until every OUT thread of the function has handed what
its read() returned to the Function and sits in a read() the kernel has not completed.
"Sits in a read() not completed" is read from /proc: the thread is sleeping (state S) in
f_fs's ffs_epfile_io (its wchan).  The request's completion (f_fs.c
ffs_epfile_io_complete -> complete()) makes the reader runnable before the UDC gives the
host its transfer back, so a thread the host's transfer already completed for is never
seen asleep there.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from typing import Callable

from ...usb.device import Function, Stall
from .layout import _FunctionLayout, function_layout


#: the longest an idle IN thread sleeps without a wake-up (a safety net, not a poll)
IN_IDLE_WAIT = 0.25


def _asleep_in_ffs_read(tid: int) -> bool:
    """Thread ``tid`` of this process sleeps in an f_fs endpoint read() that has not completed:
    state S (TASK_INTERRUPTIBLE: f_fs waits with wait_for_completion_interruptible) and its
    wchan in ffs_epfile_io.  A thread woken by the completion is R (runnable) until it returns,
    then waits for the GIL in a futex: neither is "asleep in the read".  Without a readable
    wchan (a kernel without kallsyms says 0) only the state is known: S in the read is then
    told apart from S waiting for the GIL by the system call being read(2)."""
    try:
        with open(f"/proc/self/task/{tid}/stat", "rb") as f:
            stat = f.read()
        if stat[stat.rindex(b")") + 2:][:1] != b"S":
            return False
        with open(f"/proc/self/task/{tid}/wchan", "rb") as f:
            wchan = f.read().strip()
        if wchan and wchan != b"0":
            return wchan.startswith(b"ffs_epfile")
        with open(f"/proc/self/task/{tid}/syscall", "rb") as f:
            return f.read().split(b" ", 1)[0] == _READ_SYSCALL
    except (OSError, ValueError):
        return False


# read(2)'s number in /proc/PID/syscall (x86-64: 0, arm64: 63, arm: 3); the fallback above only
_READ_SYSCALL = {"x86_64": b"0", "aarch64": b"63", "armv6l": b"3", "armv7l": b"3"}.get(os.uname().machine, b"")


class FunctionPort:
    def __init__(self, fn: Function, mountpoint: str, log):
        self.fn, self.mountpoint, self.log = fn, mountpoint, log
        self.ep0: int | None = None
        self.layout: _FunctionLayout | None = None
        self.ep_fds: list[int] = []
        self.threads: list[threading.Thread] = []
        self.enabled = threading.Event()
        self.stopping = threading.Event()
        self.configured = False
        self.lock = threading.RLock()  # the server's, set by start_io
        self.busy_left: Callable[[], float] = lambda: 0.0  # the Target's, set by the server
        self.speed = "high"  # the enumerated speed, read from the UDC on ENABLE
        #: wakes the IN threads (a condition on ``lock``, made by start_io)
        self.in_ready = threading.Condition(self.lock)
        #: per OUT thread: [native thread id, a read() of it returned data not yet given to the Function]
        self._out_threads: list[list] = []

    def open(self) -> None:
        ep0 = os.path.join(self.mountpoint, "ep0")
        self.ep0 = os.open(ep0, os.O_RDWR)
        layout = function_layout(self.fn)
        try:
            os.write(self.ep0, layout.descriptors)
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
            stripped = function_layout(self.fn, drop_class=True)
            if not stripped.dropped:
                raise
            # f_fs.c ffs_do_single_desc (before 6.12) accepts a class
            # descriptor 0x21 only after a HID or CCID interface.
            hint = ("tell the DFU host tool the transfer size (-t SIZE, and -s ADDRESS for DfuSe)"
                    if 0x21 in stripped.dropped else
                    "hosts that need the class descriptors (CDC functional, USB-MIDI) may refuse the "
                    "interface: see docs/gadget.md")
            self.log("functionfs: this kernel's FunctionFS refused class-specific descriptor(s) "
                     f"{', '.join(f'0x{t:02X}' for t in stripped.dropped)} (f_fs takes the DFU functional "
                     f"descriptor only from Linux 6.12); serving without them: {hint}")
            os.close(self.ep0)
            self.ep0 = os.open(ep0, os.O_RDWR)
            layout = stripped
            os.write(self.ep0, layout.descriptors)
        os.write(self.ep0, layout.strings)
        self.layout = layout
        for i, (ep, address) in enumerate(layout.endpoints):
            fd = os.open(os.path.join(self.mountpoint, f"ep{i + 1}"), os.O_RDWR | os.O_NONBLOCK)
            self.ep_fds.append(fd)

    def start_io(self, lock: threading.RLock, busy_left: Callable[[], float] = lambda: 0.0) -> None:
        self.lock = lock
        self.in_ready = threading.Condition(lock)
        self.busy_left = busy_left
        assert self.layout is not None, "open() first"
        seen = set()
        for fd, (ep, address) in zip(self.ep_fds, self.layout.endpoints):
            if (ep.number, ep.direction) in seen:
                continue  # the same endpoint in another alternate setting
            seen.add((ep.number, ep.direction))
            name = f"ffs-{self.fn.name}-ep{address:02x}"
            if ep.is_in:
                t = threading.Thread(target=self._in_loop, args=(fd, ep), daemon=True, name=name)
            else:
                t = threading.Thread(target=self._out_loop, args=(fd, ep, self._new_out_state()), daemon=True,
                                     name=name)
            t.start()
            self.threads.append(t)

    def packet_size(self, ep) -> int:
        """wMaxPacketSize at the enumerated speed.

        An OUT read must ask for exactly one packet: a longer request only
        completes on a short packet, so a full 64-byte report would sit in
        the UDC; a shorter one overflows (f_fs does not round it up)."""
        if self.speed == "high":
            return ep.hs_max_packet_size or (512 if ep.transfer == "bulk" else ep.max_packet_size)
        return ep.max_packet_size

    def _wait_while_busy(self) -> None:
        while (left := self.busy_left()) > 0 and not self.stopping.is_set():
            self.stopping.wait(left)

    def _new_out_state(self) -> list:
        state: list = [None, False]  # native thread id, reading (see _out_loop)
        self._out_threads.append(state)
        return state

    def _out_loop(self, fd, ep, state: list) -> None:
        # state[1] "reading": from just before read() until what it returned is with the Function
        state[0] = threading.get_native_id()
        while not self.stopping.is_set():
            if not self.enabled.wait(0.05):
                continue
            self._wait_while_busy()  # the host's next packet stays in the UDC (NAK) meanwhile
            state[1] = True
            try:
                data = os.read(fd, self.packet_size(ep))
            except BlockingIOError:
                state[1] = False
                time.sleep(0.005)
                continue
            except OSError as e:  # ESHUTDOWN on disable / disconnect
                state[1] = False
                if not self.stopping.is_set() and self.enabled.is_set():
                    self.log(f"functionfs: OUT endpoint {ep.number}: {e.strerror}")
                time.sleep(0.02)
                continue
            with self.lock:
                try:
                    try:
                        self.fn.ep_out(ep, data)
                    except Stall:
                        self._clear_or_halt(fd, ep)
                finally:
                    state[1] = False
                    self.in_ready.notify_all()  # the Function may have an answer to send

    def drain_out(self, limit: float = 2.0) -> bool:
        """Wait (not holding the lock) until no OUT thread of this function holds data its
        read() returned and the Function has not had yet: each is parked, or asleep in a
        read() the kernel has not completed (see the module doc).  Called by ep0's thread
        before it hands a control request to the Function, so the Function sees the host's
        transfers in the order the host made them.  False when ``limit`` seconds were not
        enough (logged by the caller; the request is then handled anyway)."""
        deadline = time.monotonic() + limit
        for state in self._out_threads:
            while state[1] and not self.stopping.is_set():
                if state[0] is not None and _asleep_in_ffs_read(state[0]):
                    break
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.0005)
        return True

    def wake_in(self) -> None:
        """Something happened that may have given the Function IN data to send: wake the IN threads."""
        with self.in_ready:
            self.in_ready.notify_all()

    def _in_loop(self, fd, ep) -> None:
        size = max(ep.hs_max_packet_size or 0, ep.max_packet_size)
        while not self.stopping.is_set():
            if not self.enabled.wait(0.05):
                continue
            self._wait_while_busy()
            with self.in_ready:
                try:
                    data = self.fn.ep_in(ep, size)
                except Stall:
                    data = None
                if data is None:
                    # nothing queued: sleep until an event that may queue something (wake_in);
                    # the timeout only bounds a missed wake-up
                    self.in_ready.wait(IN_IDLE_WAIT)
                    continue
            try:
                os.write(fd, data)
            except BlockingIOError:
                time.sleep(0.005)
            except OSError as e:
                if not self.stopping.is_set():
                    self.log(f"functionfs: IN endpoint {ep.number}: {e.strerror} (data dropped)")

    def _clear_or_halt(self, fd, ep) -> None:
        # Halting a FunctionFS endpoint from user space means doing I/O in the
        # wrong direction (f_fs.c ffs_epfile_io: "halt" path).
        try:
            if ep.is_in:
                os.read(fd, 0)
            else:
                os.write(fd, b"")
        except OSError:
            pass

    def close(self) -> None:
        self.stopping.set()
        self.enabled.clear()
        self.wake_in()
        for t in self.threads:
            t.join(1.0)
        for fd in self.ep_fds:
            os.close(fd)
        self.ep_fds = []
        if self.ep0 is not None:
            os.close(self.ep0)
            self.ep0 = None
