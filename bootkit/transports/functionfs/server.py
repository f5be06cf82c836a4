"""The event loop of a gadget: ep0 events (FunctionFS BIND/ENABLE/DISABLE/SETUP), the
Target's timers, and rebuilding the gadget when the Target re-enumerates."""

from __future__ import annotations

import errno
import os
import select
import signal
import threading
import time
from typing import Callable

from ...usb.device import RECIP_ENDPOINT, Device, Function, SetupPacket, Stall, Target
from .configfs import _Gadget, remove_stale_gadget
from .endpoints import FunctionPort
from .prerequisites import DEFAULT_GADGET, _udc_speed, check_prerequisites

# enum usb_functionfs_event_type
FUNCTIONFS_BIND, FUNCTIONFS_UNBIND, FUNCTIONFS_ENABLE, FUNCTIONFS_DISABLE, \
    FUNCTIONFS_SETUP, FUNCTIONFS_SUSPEND, FUNCTIONFS_RESUME = range(7)
EVENT_NAMES = {FUNCTIONFS_BIND: "BIND", FUNCTIONFS_UNBIND: "UNBIND", FUNCTIONFS_ENABLE: "ENABLE",
               FUNCTIONFS_DISABLE: "DISABLE", FUNCTIONFS_SETUP: "SETUP", FUNCTIONFS_SUSPEND: "SUSPEND",
               FUNCTIONFS_RESUME: "RESUME"}
# struct usb_functionfs_event: struct usb_ctrlrequest (8 bytes), u8 type, u8 _pad[3]
EVENT_SIZE = 12

POLL_INTERVAL = 0.02  # seconds between Target.poll() calls when idle
# A real host notices a device that detached itself only at its next hub
# status poll (USB 2.0 11.12.3/11.24.2.7: the hub reports C_PORT_CONNECTION
# through its interrupt endpoint), some milliseconds after the device's last
# status stage; tools rely on that (FLIP's `start` in DFU-programmer releases the
# interface after LUFA's final DNLOAD, and LUFA detaches 1 ms later).
# Unbinding at once would make dummy_hcd report the disconnect before the
# tool's next call, so the old gadget stays bound (still answering) this long.
DETACH_GRACE = 0.25


class _StopWaiting(Exception):
    """Raised by serve()'s signal handler out of a wait on the host that may never end."""


class FunctionFsServer:
    """Serves a Target on a UDC until stop() (or SIGINT/SIGTERM in serve())."""

    # True while ep0 waits for the host to finish a control transfer's data or status
    # stage.  A host that gave up on the request (a DFU tool killed between a GETSTATUS
    # and its reply, or mid-DNLOAD) never does, and f_fs's wait ends only on a signal
    # with EINTR, which Python retries (PEP 475): serve()'s handler raises _StopWaiting
    # out of that wait instead, or SIGTERM would never stop the server.
    waiting_on_host = False

    def __init__(self, target: Target, *, udc: str | None = None, gadget_name: str | None = None, log=print):
        self.target = target
        self.gadget_name = gadget_name or DEFAULT_GADGET
        self.udc = check_prerequisites(udc, self.gadget_name)
        self.log = log
        self.lock = threading.RLock()
        self.gadget: _Gadget | None = None
        self._stop = threading.Event()
        #: called once, when the first gadget is bound (a host can see the device)
        self.on_bound: Callable[[], None] | None = None

    def stop(self) -> None:
        self._stop.set()

    # -- gadget lifecycle
    def _up(self, device: Device) -> None:
        self.gadget = _Gadget(device, self.gadget_name, self.udc, self.log)
        try:
            self.gadget.build()
            for port in self.gadget.ports:
                port.start_io(self.lock, self.target.busy_left)
            self.gadget.bind()
            bound = self.on_bound
            if bound is not None:
                self.on_bound = None
                bound()
        except BaseException:
            self._down()
            raise

    def _down(self) -> None:
        if self.gadget is not None:
            self.gadget.destroy()
            self.gadget = None

    def run(self) -> None:
        remove_stale_gadget(self.gadget_name, self.log)
        try:
            while not self._stop.is_set():
                with self.lock:
                    device, generation = self.target.device, self.target.generation
                if device is None:
                    self.log("functionfs: the target has no device any more (disconnected); stopping")
                    return
                self._up(device)
                try:
                    self._serve_generation(generation)
                finally:
                    self._down()
                if not self._stop.is_set():
                    with self.lock:
                        history = self.target.history[-1:] if self.target.history else []
                    self.log(f"functionfs: re-enumerating ({'; '.join(history) or 'new device'})")
        finally:
            self._down()

    def _serve_generation(self, generation: int) -> None:
        assert self.gadget is not None
        ports = {p.ep0: p for p in self.gadget.ports if p.ep0 is not None}
        last_poll = 0.0
        while not self._stop.is_set():
            try:
                readable, _, _ = select.select(list(ports), [], [], POLL_INTERVAL)
            except InterruptedError:
                readable = []
            for fd in readable:
                self._ep0_events(ports[fd])
            now = time.monotonic()
            if readable or now - last_poll >= POLL_INTERVAL:
                last_poll = now
                with self.lock:
                    self.target.poll()
                    changed = self.target.generation != generation
                for port in ports.values():
                    port.wake_in()  # a timer may have queued IN data
                if changed:
                    self._linger(ports, DETACH_GRACE)
                    return

    def _linger(self, ports, seconds: float) -> None:
        """Keep answering ep0 on the outgoing gadget for a moment (see DETACH_GRACE)."""
        end = time.monotonic() + seconds
        while not self._stop.is_set() and (left := end - time.monotonic()) > 0:
            try:
                readable, _, _ = select.select(list(ports), [], [], min(left, POLL_INTERVAL))
            except InterruptedError:
                readable = []
            for fd in readable:
                self._ep0_events(ports[fd])

    def _ep0_events(self, port: FunctionPort) -> None:
        if port.ep0 is None:
            return
        try:
            raw = os.read(port.ep0, EVENT_SIZE * 8)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self.log(f"functionfs: reading ep0 events failed: {e.strerror}")
            time.sleep(0.05)
            return
        for off in range(0, len(raw) - EVENT_SIZE + 1, EVENT_SIZE):
            setup, etype = raw[off:off + 8], raw[off + 8]
            if etype == FUNCTIONFS_SETUP:
                self._setup(port, SetupPacket.unpack(setup))
                continue
            self._lifecycle(port, etype)

    def _lifecycle(self, port: FunctionPort, etype: int) -> None:
        name = EVENT_NAMES.get(etype, f"event {etype}")
        fn = port.fn
        with self.lock:
            if etype == FUNCTIONFS_ENABLE:
                port.speed = _udc_speed(self.udc)
                if port.configured:
                    # A second ENABLE without DISABLE is SET_INTERFACE: f_fs
                    # does not say which alternate; assume 0 (see module doc).
                    for number in sorted({i.number for i in fn.interfaces()}):
                        fn.set_alternate(number, 0)
                else:
                    port.configured = True
                    fn.configured(True)
                port.enabled.set()
            elif etype == FUNCTIONFS_DISABLE:
                # Bus reset, disconnect or SET_CONFIGURATION: composite.c
                # reset_config() disables every function.
                port.enabled.clear()
                if port.configured:
                    port.configured = False
                    fn.bus_reset()
                    fn.configured(False)
            elif etype == FUNCTIONFS_UNBIND:
                port.enabled.clear()
                port.configured = False
        port.wake_in()
        self.log(f"functionfs: {fn.name}: {name}")

    def _setup(self, port: FunctionPort, req: SetupPacket) -> None:
        fd, fn = port.ep0, port.fn
        if fd is None:
            return  # the port is closed
        # the memory is busy (real-time mode): this device's next request waits until it is
        # over (the host's control transfer NAKs meanwhile); the one device is served here
        while (left := self.target.busy_left()) > 0 and not self._stop.is_set():
            self._stop.wait(left)
        # What the host sent on the OUT endpoints before this request reaches the Function first
        # (see endpoints.py: ep0 and OUT data come through different threads).
        drain = getattr(port, "drain_out", None)  # (a test's stand-in port has none)
        if drain is not None and not drain():
            self.log(f"functionfs: {fn.name}: the OUT endpoint did not settle before request "
                     f"0x{req.bmRequestType:02x}/0x{req.bRequest:02x}; handling it anyway")
        if req.recipient == RECIP_ENDPOINT and port.layout is not None:
            # f_fs gives the endpoint's file index (ffs_func_revmap_ep);
            # the function expects the address from its descriptors.
            idx = req.wIndex & 0x7F
            if 1 <= idx <= len(port.layout.endpoints):
                req = req.with_index(port.layout.endpoints[idx - 1][1])
        try:
            if req.is_in:
                try:
                    with self.lock:
                        reply = self._call_setup(fn, req, b"")
                except Stall:
                    self._stall(fd, req)
                    return
                self._from_host(os.write, fd, bytes(reply or b"")[:req.wLength])
            elif req.wLength == 0:
                try:
                    with self.lock:
                        self._call_setup(fn, req, b"")
                except Stall:
                    self._stall(fd, req)
                    return
                self._from_host(os.read, fd, 0)  # status stage: ACK
            else:
                data = self._from_host(os.read, fd, req.wLength)  # data stage; f_fs ACKs the status stage
                try:
                    with self.lock:
                        self._call_setup(fn, req, data)
                except Stall as e:
                    self.log(f"functionfs: {fn.name}: request 0x{req.bRequest:02x} refused after its data "
                             f"stage ({e or 'stall'}); FunctionFS cannot STALL it any more")
        except _StopWaiting:
            self.log(f"functionfs: {fn.name}: stopped while the host had not finished request "
                     f"0x{req.bmRequestType:02x}/0x{req.bRequest:02x}")
        except OSError as e:
            # EIDRM: the host reset or disconnected while the request was
            # pending (f_fs cancels it); EL2HLT/EBADMSG: already stalled.
            self.log(f"functionfs: {fn.name}: control request 0x{req.bmRequestType:02x}/0x{req.bRequest:02x} "
                     f"aborted: {e.strerror}")

    def _from_host(self, io, fd: int, arg):
        """A control transfer's data or status stage on ep0, which waits for the host
        (see waiting_on_host): only here may serve()'s signal handler raise _StopWaiting."""
        self.waiting_on_host = True
        try:
            if self._stop.is_set():  # a request read after the signal: its wait could be endless too
                raise _StopWaiting
            return io(fd, arg)
        finally:
            self.waiting_on_host = False

    def _call_setup(self, fn: Function, req: SetupPacket, data: bytes):
        """fn.setup() then Target.poll(); a personality's bug stalls the request
        (logged) instead of taking the whole gadget down."""
        try:
            reply = fn.setup(req, data)
        except Stall:
            raise
        except Exception as e:  # noqa: BLE001 - keep serving, as a real device would
            self.log(f"functionfs: {fn.name}: request 0x{req.bmRequestType:02x}/0x{req.bRequest:02x} "
                     f"raised {type(e).__name__}: {e}; stalling it")
            raise Stall(str(e)) from e
        self.target.poll()
        gadget = getattr(self, "gadget", None)  # (a test's stand-in server has none)
        if gadget is not None:  # the request may have queued IN data (the lock is held here)
            for port in gadget.ports:
                port.in_ready.notify_all()
        return reply

    def _stall(self, fd: int, req: SetupPacket) -> None:
        # Documentation/usb/functionfs.rst / f_fs.c ffs_ep0_read/ffs_ep0_write:
        # I/O in the direction opposite to the data stage halts ep0 (EL2HLT).
        try:
            if req.is_in:
                os.read(fd, 0)
            else:
                os.write(fd, b"")
        except OSError as e:
            if e.errno not in (errno.EL2HLT, errno.EBADMSG):
                self.log(f"functionfs: stalling ep0 failed: {e.strerror}")


def stop_on_signal(server: FunctionFsServer, log):
    """The SIGINT/SIGTERM handler serve() installs: stop the server, and leave a wait on
    the host that may never end (FunctionFsServer.waiting_on_host)."""
    def on_signal(signum, frame):
        log(f"functionfs: {signal.Signals(signum).name}, stopping")
        server.stop()
        if server.waiting_on_host:
            raise _StopWaiting
    return on_signal
