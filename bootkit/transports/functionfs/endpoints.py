"""One FunctionFS instance: its ep0 (descriptors and strings written at open) and one
thread per endpoint file moving data between the kernel and the sans-I/O Function.

While the memory behind the device is busy (real-time mode, ``Target.busy_left``) an
endpoint thread takes no more data from the host and offers none: the UDC NAKs, as a
real device's controller does while its CPU waits for the flash.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from typing import Callable

from ...usb.device import Function, Stall
from .layout import _FunctionLayout, function_layout


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
        self.busy_left = busy_left
        assert self.layout is not None, "open() first"
        seen = set()
        for fd, (ep, address) in zip(self.ep_fds, self.layout.endpoints):
            if (ep.number, ep.direction) in seen:
                continue  # the same endpoint in another alternate setting
            seen.add((ep.number, ep.direction))
            target = self._in_loop if ep.is_in else self._out_loop
            t = threading.Thread(target=target, args=(fd, ep), daemon=True,
                                 name=f"ffs-{self.fn.name}-ep{address:02x}")
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

    def _out_loop(self, fd, ep) -> None:
        while not self.stopping.is_set():
            if not self.enabled.wait(0.05):
                continue
            self._wait_while_busy()  # the host's next packet stays in the UDC (NAK) meanwhile
            try:
                data = os.read(fd, self.packet_size(ep))
            except BlockingIOError:
                time.sleep(0.005)
                continue
            except OSError as e:  # ESHUTDOWN on disable / disconnect
                if not self.stopping.is_set() and self.enabled.is_set():
                    self.log(f"functionfs: OUT endpoint {ep.number}: {e.strerror}")
                time.sleep(0.02)
                continue
            with self.lock:
                try:
                    self.fn.ep_out(ep, data)
                except Stall:
                    self._clear_or_halt(fd, ep)

    def _in_loop(self, fd, ep) -> None:
        size = max(ep.hs_max_packet_size or 0, ep.max_packet_size)
        while not self.stopping.is_set():
            if not self.enabled.wait(0.05):
                continue
            self._wait_while_busy()
            with self.lock:
                try:
                    data = self.fn.ep_in(ep, size)
                except Stall:
                    data = None
            if data is None:
                time.sleep(0.002)
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
        for t in self.threads:
            t.join(1.0)
        for fd in self.ep_fds:
            os.close(fd)
        self.ep_fds = []
        if self.ep0 is not None:
            os.close(self.ep0)
            self.ep0 = None
