"""A USB/IP server: emulated devices on TCP port 3240 for any USB/IP host.

A Linux host with ``vhci-hcd`` (``usbip attach -r HOST -b 1-1``), usbip-win2
on Windows, or this package's userspace client backend
(:mod:`bootkit.transports.usbip_client`) imports a device and sees it as a
real USB device.  The wire format follows the kernel's
Documentation/usb/usbip_protocol.rst (version 0x0111, big-endian):
OP_REQ_DEVLIST / OP_REP_DEVLIST and OP_REQ_IMPORT / OP_REP_IMPORT, then
USBIP_CMD_SUBMIT / USBIP_RET_SUBMIT and USBIP_CMD_UNLINK / USBIP_RET_UNLINK
with 48-byte headers.

One asyncio loop serves every connection, each an asyncio buffered
Protocol that parses URBs in place as they arrive; URBs go straight into
the sans-I/O :class:`~bootkit.usb.device.Device` (no thread per URB, no
coroutine per request), and the replies to one batch go out in one write.  An IN URB
the device NAKs (``ep_in`` returns None) waits in the connection's queue
and is retried until data comes or the host unlinks it.  A device whose
memory is busy in real-time mode (``Target.busy_left()``) holds its
connection's next URB until it is over: that connection stops reading, the
server and the other devices carry on.  When the Target
re-enumerates (DFU detach, leave) the importing connection is closed, which
a vhci host sees as an unplug; the new device is importable under the same
bus id with a new device number, as after a real re-enumeration.

Safe defaults: loopback only, one importing client per device (a second one
gets ST_DEV_BUSY and the devlist names the holder), an optional allow-list
of client addresses, a connection limit and time limits for silent or
stalled clients (MAX_CONNECTIONS, HEADER_TIMEOUT, URB_TIMEOUT), accept()
failures at the file-descriptor limit met with a backoff, and any malformed
input closes only that connection while the devices and other clients carry
on.  Events that can come in storms are logged once, then summed up.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import ipaddress
import re
import signal
import socket
import struct
import sys
import threading
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

from ..usb import descriptors as D
from ..usb.device import Device, SetupPacket, Stall, Target
from .base import DeviceTransport, target_of

USBIP_PORT = 3240
USBIP_VERSION = 0x0111  # v1.1.1, tools/usb/usbip/configure.ac

# operation codes (usbip_protocol.rst, "Message Format")
OP_REQ_DEVLIST = 0x8005
OP_REP_DEVLIST = 0x0005
OP_REQ_IMPORT = 0x8003
OP_REP_IMPORT = 0x0003
# op_common status (tools/usb/usbip/libsrc/usbip_common.h): ST_NA "device requested for
# import is not available", ST_DEV_BUSY the device is in use (usbipd: SDEV_ST_USED),
# ST_NODEV no device under that bus id.  `usbip attach` prints each one's name.
ST_OK, ST_NA, ST_DEV_BUSY, ST_DEV_ERR, ST_NODEV, ST_ERROR = 0, 1, 2, 3, 4, 5
# The devlist record of an imported device ends its path with this and the importer's
# address, which our client reads back after ST_DEV_BUSY to name the holder.  usbipd puts
# the sysfs path there, which `usbip list -r` only prints (usbip_list.c); nothing parses it.
IMPORTED_BY = " imported by "

# URB commands (usbip_header_basic.command)
USBIP_CMD_SUBMIT = 0x00000001
USBIP_CMD_UNLINK = 0x00000002
USBIP_RET_SUBMIT = 0x00000003
USBIP_RET_UNLINK = 0x00000004
USBIP_DIR_OUT, USBIP_DIR_IN = 0, 1

# Linux errno values carried in status fields (negated)
EPIPE = 32  # the endpoint stalled
ECONNRESET = 104  # the URB was unlinked
EPROTO = 71  # the device failed in a way USB cannot describe

# enum usb_device_speed (include/uapi/linux/usb/ch9.h)
USB_SPEED_LOW, USB_SPEED_FULL, USB_SPEED_HIGH, USB_SPEED_SUPER = 1, 2, 3, 5
SPEEDS = {"low": USB_SPEED_LOW, "full": USB_SPEED_FULL, "high": USB_SPEED_HIGH, "super": USB_SPEED_SUPER}

# USB_RT_PORT SET_FEATURE(PORT_RESET): vhci forwards a device reset as this
# control URB; the kernel's stub_rx.c (is_reset_device_cmd) resets the device.
USB_RT_PORT = 0x23
USB_PORT_FEAT_RESET = 4

OP_COMMON = struct.Struct(">HHI")  # version, code, status
# struct usbip_usb_device: path[256], busid[32], busnum, devnum, speed,
# idVendor, idProduct, bcdDevice, bDeviceClass, bDeviceSubClass,
# bDeviceProtocol, bConfigurationValue, bNumConfigurations, bNumInterfaces
USB_DEVICE = struct.Struct(">256s32sIIIHHHBBBBBB")
USB_INTERFACE = struct.Struct(">BBBx")  # class, subclass, protocol, padding
BUSID_SIZE = 32
HEADER_SIZE = 48
# command, seqnum, devid, direction, ep, transfer_flags, transfer_buffer_length,
# start_frame, number_of_packets, interval, setup[8]
CMD_SUBMIT = struct.Struct(">IIIIIIIIII8s")
# command, seqnum, devid, direction, ep, status, actual_length, start_frame,
# number_of_packets, error_count, padding[8]
RET_SUBMIT = struct.Struct(">IIIIIiIIII8x")
CMD_UNLINK = struct.Struct(">IIIIII24x")  # ..., unlink_seqnum, padding
RET_UNLINK = struct.Struct(">IIIIIi24x")  # ..., status, padding
assert USB_DEVICE.size == 312 and CMD_SUBMIT.size == RET_SUBMIT.size == CMD_UNLINK.size == HEADER_SIZE

# Limits on what a client may ask for.  A control transfer carries at most
# wLength (16 bits); bulk and interrupt URBs are capped well above anything
# a bootloader moves in one go.
MAX_CONTROL_LENGTH = 0xFFFF
MAX_TRANSFER_LENGTH = 1 << 20
MAX_PENDING_URBS = 64  # queued IN URBs per connection (vhci keeps a few per endpoint)

# Limits on connections (UsbipServer keywords; defaults a real client never reaches).
# A connection counts from accept() until the socket is closed.  At the limit a new
# connection takes the place of the oldest one that has not sent a complete request
# (a real client sends OP_REQ_DEVLIST or OP_REQ_IMPORT + bus id as soon as it is
# connected: usbip_attach.c query_import_device, usbip_list.c), like sshd's
# MaxStartups drops unauthenticated ones, so a flood of silent connections cannot
# lock a real client out; only when every slot holds an import is the newcomer refused.
MAX_CONNECTIONS = 64
# From connect to a complete OP_REQ: both parts go out in the same instant (above), so
# 10 s is thousands of round trips even on a slow network.
HEADER_TIMEOUT = 10.0
# An imported connection may be quiet for ever: vhci keeps a device attached between
# flashes with no URB at all, so there is no idle timeout.  It is cut only when it
# stalls: part of a URB received and nothing more, or our replies left unread (the
# transport paused), for URB_TIMEOUT.  vhci sends a URB's header and its OUT data in one
# kernel_sendmsg (vhci_tx.c), so a half-received URB waits for TCP retransmissions at
# worst; 30 s covers several of them.
URB_TIMEOUT = 30.0
# A quiet import whose peer died (unplugged cable, crashed host) is found by TCP
# keepalive: probes after 30 s of silence, every 10 s, 3 unanswered -> the socket fails
# (about 60 s; Linux's default is 2 hours, and usbipd only turns SO_KEEPALIVE on,
# usbip_network.c usbip_net_set_keepalive).  TCP_USER_TIMEOUT (tcp(7)) bounds unacked
# data to a dead peer the same way.
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 30, 10, 3
USER_TIMEOUT_MS = (KEEPALIVE_IDLE + KEEPALIVE_INTERVAL * KEEPALIVE_COUNT) * 1000
LISTEN_BACKLOG = 128
# accept() failing for want of a file descriptor (EMFILE, ENFILE) or kernel memory:
# wait, from 50 ms doubling to 1 s, or until one of our connections closes.
ACCEPT_RETRY_FIRST, ACCEPT_RETRY_MAX = 0.05, 1.0
LOG_WINDOW = 10.0  # repeated events of one kind: one line, then one summary per window
NO_ISO_PACKETS = (0, 0xFFFFFFFF)  # the doc says 0xffffffff, vhci sends 0


class ProtocolError(Exception):
    """The peer broke the protocol: its connection is closed."""


class ListenError(OSError):
    """The server cannot listen where it was asked (address in use, not ours, unknown
    name): one line naming the address, without the "[Errno N]" prefix."""

    def __str__(self) -> str:
        return str(self.strerror)


class _LogLimiter:
    """One line per kind of event, then at most one summary per window while it repeats.

    A storm of the same event (connections refused over the limit, accept() failing
    with EMFILE, hundreds of silent connections timing out) would otherwise print a line
    each.  The first event of a kind prints its own line; later ones within
    ``window`` seconds are counted and summed up in one line when the window ends
    ("refused 37 more connections over the limit of 64 in the last 10 s"); a window
    with none ends the storm.
    """

    def __init__(self, log: Callable[[str], None], loop: asyncio.AbstractEventLoop, window: float = LOG_WINDOW):
        self.log, self.loop, self.window = log, loop, window
        self._open: dict[str, list] = {}  # kind -> [count since the last line, summary, timer]

    def note(self, kind: str, line: str, summary: str) -> None:
        """``summary`` is formatted with n (events not yet printed) and seconds."""
        entry = self._open.get(kind)
        if entry is not None:
            entry[0] += 1
            entry[1] = summary
            return
        self.log(line)
        self._open[kind] = [0, summary, self.loop.call_later(self.window, self._end_window, kind)]

    def _end_window(self, kind: str) -> None:
        entry = self._open[kind]
        if not entry[0]:
            del self._open[kind]
            return
        self.log(entry[1].format(n=entry[0], seconds=self.window))
        entry[0] = 0
        entry[2] = self.loop.call_later(self.window, self._end_window, kind)

    def flush(self) -> None:
        """Print what is counted and not yet said (the server stops)."""
        for entry in self._open.values():
            entry[2].cancel()
            if entry[0]:
                self.log(entry[1].format(n=entry[0], seconds=self.window))
        self._open.clear()


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("ascii", "replace")


# --------------------------------------------------------------------------
# codecs shared with the client backend


@dataclass(frozen=True)
class UsbDevice:
    """``struct usbip_usb_device`` plus its interfaces, as OP_REP_DEVLIST carries them."""

    path: str
    busid: str
    busnum: int
    devnum: int
    speed: int
    idVendor: int
    idProduct: int
    bcdDevice: int
    bDeviceClass: int
    bDeviceSubClass: int
    bDeviceProtocol: int
    bConfigurationValue: int
    bNumConfigurations: int
    interfaces: tuple[tuple[int, int, int], ...] = ()  # (class, subclass, protocol)

    @property
    def bNumInterfaces(self) -> int:
        return len(self.interfaces)

    @property
    def devid(self) -> int:
        return (self.busnum << 16) | self.devnum

    def pack(self, with_interfaces: bool = True) -> bytes:
        out = USB_DEVICE.pack(
            self.path.encode()[:255], self.busid.encode()[:BUSID_SIZE - 1], self.busnum, self.devnum, self.speed,
            self.idVendor, self.idProduct, self.bcdDevice, self.bDeviceClass, self.bDeviceSubClass,
            self.bDeviceProtocol, self.bConfigurationValue, self.bNumConfigurations, self.bNumInterfaces)
        if with_interfaces:
            out += b"".join(USB_INTERFACE.pack(*i) for i in self.interfaces)
        return out

    @classmethod
    def unpack(cls, raw: bytes, interfaces: bytes = b"") -> "UsbDevice":
        f = USB_DEVICE.unpack(raw[:USB_DEVICE.size])
        intfs = tuple(USB_INTERFACE.unpack_from(interfaces, i * 4) for i in range(len(interfaces) // 4))
        return cls(_cstr(f[0]), _cstr(f[1]), f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9], f[10], f[11], f[12],
                   interfaces=intfs)


def pack_devlist(devices: Iterable[UsbDevice]) -> bytes:
    devices = list(devices)
    return OP_COMMON.pack(USBIP_VERSION, OP_REP_DEVLIST, ST_OK) + struct.pack(">I", len(devices)) + b"".join(
        d.pack() for d in devices)


def describe(busid: str, busnum: int, devnum: int, device: Device) -> UsbDevice:
    """The usbip_usb_device record of a sans-I/O Device (what sysfs gives usbipd)."""
    dd = D.parse_descriptor(device.device_descriptor())
    cfg = D.parse_configuration(device.configuration_descriptor())
    seen, intfs = set(), []
    for i in cfg["interfaces"]:  # alternate 0 of each interface, as sysfs lists them
        if i["bInterfaceNumber"] not in seen:
            seen.add(i["bInterfaceNumber"])
            intfs.append((i["bInterfaceClass"], i["bInterfaceSubClass"], i["bInterfaceProtocol"]))
    return UsbDevice(f"/sys/devices/platform/bootkit/usb{busnum}/{busid}", busid, busnum, devnum,
                     SPEEDS.get(device.speed, USB_SPEED_FULL), dd["idVendor"], dd["idProduct"], dd["bcdDevice"],
                     dd["bDeviceClass"], dd["bDeviceSubClass"], dd["bDeviceProtocol"], device.configuration,
                     dd["bNumConfigurations"], tuple(intfs))


# --------------------------------------------------------------------------
# the server


@dataclass(eq=False)
class Export:
    """One exported Target under its bus id."""

    busid: str
    target: Target
    busnum: int = 1
    devnum: int = 0
    generation: int = -1
    attached: "_Connection | None" = None

    @property
    def device(self) -> Device | None:
        return self.target.device


@dataclass(eq=False)
class _Urb:
    seqnum: int
    address: int
    length: int


# what a connection waits for next
_WANT_OP, _WANT_BUSID, _WANT_URB = 0, 1, 2
_COMMAND = struct.Struct(">I")
_SETUP = struct.Struct("<BBHHH")  # the 8-byte setup packet (USB 2.0 section 9.3)
_RETRY_FIRST, _RETRY_MAX = 0.0005, 0.01  # NAKed IN URBs: retry backoff (s) while nothing else happens


_READ_SIZE = 1 << 16  # receive window offered to the transport (grown for a larger OUT URB)


class _Connection(asyncio.BufferedProtocol):
    """One client connection, parsed in place as data arrives.

    A buffered Protocol rather than streams: a URB costs one callback, no
    coroutine switches, no per-read futures, and the socket reads into one
    buffer per connection (asyncio's plain Protocol allocates 256 KiB per
    read).  Replies produced by one batch of received data go out in one
    write.
    """

    def __init__(self, server: "UsbipServer", peer: str = "?"):
        self.server = server
        self.peer = peer
        self.transport: asyncio.Transport | None = None
        self._now = server.loop.time
        self.opened = self.stamp = self._now()  # accepted; last bytes received
        self.paused_at: float | None = None  # replies not drained since
        self.closed_at = 0.0
        self.export: Export | None = None
        self.generation = -1
        self.pending: list[_Urb] = []
        self.closed = False
        self._state = _WANT_OP
        self._rbuf = bytearray(_READ_SIZE)
        self._start = self._end = 0  # unparsed bytes: _rbuf[_start:_end]
        self._out: list[bytes] = []
        self._retry: asyncio.TimerHandle | None = None
        self._delay = _RETRY_FIRST
        self._held: asyncio.TimerHandle | None = None  # the device is busy: URBs wait until this fires
        self.done = asyncio.get_running_loop().create_future()

    @property
    def _io(self) -> asyncio.Transport:
        assert self.transport is not None, "no transport before connection_made()"
        return self.transport

    # transport callbacks ------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        if self.closed:  # made room for a newer one before its transport existed
            transport.abort()

    def pause_writing(self) -> None:
        # the client does not read its replies: stop reading its requests
        if not self.closed:
            self.paused_at = self._now()
            self._io.pause_reading()

    def resume_writing(self) -> None:
        self.paused_at = None
        if not self.closed and self._held is None:
            self._io.resume_reading()

    def hold(self, seconds: float) -> None:
        """The device is busy for ``seconds``: read and parse nothing more until then
        (the URBs already received wait in the buffer, in order)."""
        if self._held is None and not self.closed:
            self._io.pause_reading()
            self._held = self.server.loop.call_later(seconds, self._unhold)

    def _unhold(self) -> None:
        self._held = None
        if self.closed:
            return
        if self.paused_at is None:
            self._io.resume_reading()
        self.buffer_updated(0)  # parse what waited

    def eof_received(self):
        return False  # close

    def connection_lost(self, exc) -> None:
        server = self.server
        if not self.closed:
            self.closed = True
            if self.export is None:  # gone before a complete request: one line per storm of them
                why = f"{exc.__class__.__name__}: {exc}" if exc is not None else \
                    f"truncated message ({self._end - self._start} of {self._expected()} bytes)"
                server._note("lost-early", f"usbip: {self.peer}: {why}; connection closed",
                             "usbip: {n} more connections closed before a complete request in the last {seconds:g} s")
            elif exc is not None:
                server.log(f"usbip: {self.peer}: {exc.__class__.__name__}: {exc}; connection closed")
            elif self._end > self._start:
                server.log(f"usbip: {self.peer}: truncated message ({self._end - self._start} of "
                           f"{self._expected()} bytes); connection closed")
            else:
                server.log(f"usbip: {self.peer} detached {self.export.busid}")
        self._release()
        server._connections.pop(self, None)
        if server._freed is not None:
            server._freed.set()
        if not self.done.done():
            self.done.set_result(None)

    def get_buffer(self, sizehint: int) -> memoryview:
        buf, start, end = self._rbuf, self._start, self._end
        if len(buf) - end < _READ_SIZE // 4:
            # make room: move the unparsed tail to the front, in a bigger
            # buffer when a large OUT URB does not fit (never resized in
            # place: the transport may still hold a view of the old one)
            want = max(_READ_SIZE, min(self._expected(), HEADER_SIZE + MAX_TRANSFER_LENGTH) + _READ_SIZE // 4)
            if want > len(buf):
                new = bytearray(want)
                new[:end - start] = buf[start:end]
                self._rbuf = buf = new
            else:
                buf[:end - start] = buf[start:end]
            self._start, self._end = 0, end - start
        return memoryview(buf)[self._end:]

    def buffer_updated(self, nbytes: int) -> None:
        if self.closed or (self._held is not None and nbytes == 0):
            return
        self._end += nbytes
        self.stamp = self._now()
        try:
            with memoryview(self._rbuf) as view:
                self._start = self.server._parse(self, self._rbuf, view, self._start, self._end)
        except ProtocolError as exc:
            # one line per kind of error (numbers aside) and storm
            self.server._note("protocol " + re.sub(r"0x[0-9A-Fa-f]+|\d+", "N", str(exc)),
                              f"usbip: {self.peer}: {exc}; connection closed",
                              f"usbip: {{n}} more connections closed for the same error in the last {{seconds:g}} s: "
                              f"{exc}")
            self.close()
            return
        except Exception as exc:  # never let one connection take the server down
            self.server.log(f"usbip: {self.peer}: internal error {exc!r}; connection closed")
            self.close()
            return
        finally:
            self.flush()
        if self._start == self._end:
            self._start = self._end = 0
        if self.pending and not self.closed:
            self.server._retry_pending(self)

    # helpers --------------------------------------------------------------
    def _expected(self) -> int:
        if self._state == _WANT_OP:
            return OP_COMMON.size
        if self._state == _WANT_BUSID:
            return BUSID_SIZE
        if self._end - self._start >= HEADER_SIZE and \
                _COMMAND.unpack_from(self._rbuf, self._start)[0] == USBIP_CMD_SUBMIT:
            f = CMD_SUBMIT.unpack_from(self._rbuf, self._start)
            return HEADER_SIZE + (f[6] if f[3] == USBIP_DIR_OUT else 0)
        return HEADER_SIZE

    def send(self, data: bytes) -> None:
        if not self.closed:
            self._out.append(data)

    def flush(self) -> None:
        if self._out:
            out, self._out = self._out, []
            if not self.closed:
                self._io.write(out[0] if len(out) == 1 else b"".join(out))

    def close(self) -> None:
        """Close after what is queued has been sent (the peer sees an unplug)."""
        if not self.closed:
            self.flush()
            self.closed = True
            self.closed_at = self._now()
            self._io.close()
            self._release()

    def abort(self) -> None:
        """Close at once, dropping what is unsent (a stalled or evicted connection)."""
        if not self.closed:
            self.closed = True
            self.closed_at = self._now()
            self._release()
        if self.transport is not None:
            self.transport.abort()

    def overdue(self, now: float) -> tuple[str, str, str] | None:
        """(kind, line, summary) when this connection broke a time limit, else None."""
        server = self.server
        if self.closed:
            if self.transport is not None and now - self.closed_at > server.urb_timeout:
                self.transport.abort()  # closing, but the peer never takes its last bytes
            return None
        if self._state != _WANT_URB:
            if now - self.opened > server.header_timeout:
                return ("header timeout", f"usbip: {self.peer}: no complete request within "
                        f"{server.header_timeout:g} s of connecting; connection closed",
                        f"usbip: closed {{n}} more connections that sent no complete request within "
                        f"{server.header_timeout:g} s, in the last {{seconds:g}} s")
            return None
        busid = self.export.busid if self.export is not None else "?"
        if self._held is not None:
            return None  # waiting for its busy device, not for the client
        if self.paused_at is not None:
            if now - self.paused_at > server.urb_timeout:
                return ("unread", f"usbip: {self.peer}: left its replies unread for {server.urb_timeout:g} s; "
                        f"connection closed, {busid} released",
                        "usbip: closed {n} more importers that left their replies unread, in the last {seconds:g} s")
        elif self._end > self._start and now - self.stamp > server.urb_timeout:
            return ("urb stall", f"usbip: {self.peer}: sent part of a URB ({self._end - self._start} of "
                    f"{self._expected()} bytes) and nothing more for {server.urb_timeout:g} s; "
                    f"connection closed, {busid} released",
                    "usbip: closed {n} more importers stalled in the middle of a URB, in the last {seconds:g} s")
        return None

    def _release(self) -> None:
        e = self.export
        if e is not None and e.attached is self:
            e.attached = None
        self.pending.clear()
        self._start = self._end = 0
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self._held is not None:
            self._held.cancel()
            self._held = None


def _addr(peer) -> str:
    return peer[0] if isinstance(peer, tuple) else str(peer)


def format_address(peer) -> str:
    """A socket address as "HOST:PORT" ("[v6]:PORT"): how the server names a client, and
    what our client compares with its own socket's name."""
    if not isinstance(peer, tuple):
        return str(peer)
    host = str(peer[0])
    return f"[{host}]:{peer[1]}" if ":" in host else f"{host}:{peer[1]}"


class UsbipServer:
    """Export Targets over USB/IP.

    ``targets`` is a list (bus ids "1-1", "1-2", ... in order) or a mapping
    bus id -> Target (a plain Device is wrapped in a Target).  ``listen`` is
    (host, port); port 0 picks a free one (see :attr:`address`).  ``allow``
    is a list of client addresses or networks ("10.0.0.7", "10.0.0.0/24");
    None allows every client that can reach ``listen``.

    ``max_connections`` caps open connections (at the cap a newcomer replaces
    the oldest connection that has sent no request, or is refused when every
    one holds an import); ``header_timeout`` closes a connection that sends no
    complete OP_REQ within that many seconds; ``urb_timeout`` closes an
    importer stalled that long in the middle of a URB or not reading its
    replies.  A quiet importer is kept (TCP keepalive finds a dead one).  See
    MAX_CONNECTIONS, HEADER_TIMEOUT and URB_TIMEOUT for the defaults and why.

    Run it with ``await server.serve()``, with the blocking :func:`serve`, or
    on a background thread as a context manager::

        with UsbipServer([em.target], ("127.0.0.1", 0)) as server:
            backend = usbip_client.get_backend(port=server.port)
    """

    def __init__(self, targets: Iterable[Target | Device] | Mapping[str, Target | Device],
                 listen: tuple[str, int] = ("127.0.0.1", USBIP_PORT), *, allow: Iterable[str] | None = None,
                 log: Callable[[str], None] | None = print, poll_interval: float = 0.01,
                 max_connections: int = MAX_CONNECTIONS, header_timeout: float = HEADER_TIMEOUT,
                 urb_timeout: float = URB_TIMEOUT):
        if max_connections < 1 or not header_timeout > 0 or not urb_timeout > 0:
            raise ValueError("max_connections must be at least 1 and the timeouts more than 0 s")
        self.max_connections = int(max_connections)
        self.header_timeout, self.urb_timeout = float(header_timeout), float(urb_timeout)
        items = targets.items() if isinstance(targets, Mapping) else (
            (f"1-{n}", t) for n, t in enumerate(targets, 1))
        self.exports: dict[str, Export] = {}
        for busid, t in items:
            if isinstance(t, Device):
                t = Target(t)
            if not 0 < len(busid.encode()) < BUSID_SIZE:
                raise ValueError(f"bus id {busid!r} must be 1 to 31 bytes")
            busnum = int(busid.split("-")[0]) if busid.split("-")[0].isdigit() else 1
            self.exports[busid] = Export(busid, t, busnum)
        self.listen = (listen[0], int(listen[1]))
        self.allow = [ipaddress.ip_network(a, strict=False) for a in parse_allow(allow)] if allow else None
        self.log = log or (lambda line: None)
        self.poll_interval = poll_interval
        self.address: tuple[str, int] | None = None
        self._next_devnum = 1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._connections: dict[_Connection, None] = {}  # oldest first
        self._poller: asyncio.TimerHandle | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._limiter: _LogLimiter | None = None
        self._freed: asyncio.Event | None = None  # set when a connection closes (an fd is free again)
        self._accept_failing = False
        self._making: set[asyncio.Task] = set()
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        for e in self.exports.values():
            self._refresh(e)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop serving (set by :meth:`serve`)."""
        assert self._loop is not None, "not serving"
        return self._loop

    @property
    def port(self) -> int:
        return self.address[1] if self.address else self.listen[1]

    # ------------------------------------------------------------------
    # device numbers and re-enumeration
    def _refresh(self, e: Export) -> None:
        """Poll a Target; a new generation is a new device (unplug the old importer)."""
        e.target.poll()
        if e.target.generation != e.generation:
            e.generation = e.target.generation
            e.devnum = self._next_devnum  # a re-enumerated device gets a new address
            self._next_devnum = self._next_devnum % 127 + 1
            if e.attached is not None:
                self.log(f"usbip: {e.busid} re-enumerated ({e.target.history[-1] if e.target.history else 'gone'}); "
                         f"disconnecting {e.attached.peer}")
                e.attached.close()
                e.attached = None

    def _record(self, e: Export) -> UsbDevice | None:
        if e.device is None:
            return None
        record = describe(e.busid, e.busnum, e.devnum, e.device)
        if e.attached is not None:
            record = dataclasses.replace(record, path=record.path + IMPORTED_BY + e.attached.peer)
        return record

    def devlist(self) -> bytes:
        """The OP_REP_DEVLIST reply as it stands now."""
        records = []
        for e in self.exports.values():
            self._refresh(e)
            r = self._record(e)
            if r is not None:
                records.append(r)
        return pack_devlist(records)

    # ------------------------------------------------------------------
    # serving
    async def serve(self, ready: Callable[[tuple[str, int]], None] | None = None) -> None:
        """Listen and serve until :meth:`stop`.  ``ready(address)`` is called once listening."""
        self._loop = loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._freed = asyncio.Event()
        self._limiter = _LogLimiter(self.log, loop)
        host, port = self.listen
        listeners = _listeners(host, port)
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            self.log(f"usbip: WARNING listening on {host}: any host that can reach this address can import and "
                     f"reflash the devices{'' if self.allow else ' (no --allow list)'}")
        sock = listeners[0].getsockname()
        self.address = (sock[0], sock[1])
        accepting = [loop.create_task(self._accept(listener)) for listener in listeners]
        self._poller = loop.call_later(self.poll_interval, self._poll)
        self._sweeper = loop.call_later(self._sweep_every(), self._sweep)
        self.log(f"usbip: exporting {', '.join(self.exports) or 'nothing'} on {self.address[0]}:{self.address[1]}")
        if ready:
            ready(self.address)
        self._started.set()
        try:
            await self._stop.wait()
        finally:
            self._poller.cancel()
            self._sweeper.cancel()
            for task in accepting:
                task.cancel()
            await asyncio.gather(*accepting, return_exceptions=True)
            for listener in listeners:
                listener.close()
            waiting = [c.done for c in self._connections]
            for c in list(self._connections):
                if c.transport is not None:
                    c.close()  # flushes what is queued, then the peer sees EOF
                else:
                    c.abort()  # accepted, its transport not made yet
            if waiting:
                await asyncio.wait(waiting, timeout=2)
            self._limiter.flush()

    # ------------------------------------------------------------------
    # accepting connections
    async def _accept(self, listener: socket.socket) -> None:
        """Accept connections on one listening socket until cancelled.

        Written here rather than left to ``loop.create_server`` because of how
        asyncio meets EMFILE: its accept loop (CPython 3.11
        Lib/asyncio/selector_events.py, _accept_connection) goes on calling
        accept() up to backlog times after the first failure, hands each one
        to the loop's exception handler (a traceback each) and schedules a
        retry each: hundreds of tracebacks a second at the fd limit.  Here one
        failure is one noted event, the connections already open are served
        meanwhile, and accept() is tried again after a short backoff or as
        soon as one of our connections closes.
        """
        loop = self.loop
        freed = self._freed
        assert freed is not None
        delay = ACCEPT_RETRY_FIRST
        while True:
            try:
                sock, addr = await loop.sock_accept(listener)
            except ConnectionAbortedError:
                continue  # the client gave up while queued
            except OSError as exc:  # EMFILE, ENFILE, ENOBUFS, ENOMEM, ...
                name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
                self._accept_failing = True
                self._note(f"accept {name}", f"usbip: cannot accept connections: {exc.strerror or exc} ({name}); "
                           f"serving the {len(self._connections)} open ones, trying again as they close",
                           f"usbip: accept() failed {{n}} more times with {name} in the last {{seconds:g}} s")
                freed.clear()
                try:
                    await asyncio.wait_for(freed.wait(), delay)
                except asyncio.TimeoutError:
                    pass
                delay = min(delay * 2, ACCEPT_RETRY_MAX)
                continue
            delay = ACCEPT_RETRY_FIRST
            if self._accept_failing:
                self._accept_failing = False
                self._note("accepting again", f"usbip: accepting connections again ({len(self._connections)} open)",
                           "usbip: accepting connections again, {n} more times in the last {seconds:g} s")
            try:
                self._accepted(sock, addr)
            except Exception as exc:  # never let one connection stop the accepting
                sock.close()
                self.log(f"usbip: {format_address(addr)}: internal error {exc!r} at accept; connection closed")

    def _accepted(self, sock: socket.socket, addr) -> None:
        peer = format_address(addr)
        if not self._allowed(_addr(addr)):
            self._note("refused allow", f"usbip: refused {peer}: not in the allow list",
                       "usbip: refused {n} more connections not in the allow list in the last {seconds:g} s")
            sock.close()  # after the line: whoever sees the close finds the reason logged
            return
        if len(self._connections) >= self.max_connections and not self._make_room():
            self._note("refused limit", f"usbip: refused {peer}: {self.max_connections} connections open (the limit), "
                       f"each holding an import",
                       f"usbip: refused {{n}} more connections over the limit of {self.max_connections} in the last "
                       f"{{seconds:g}} s")
            sock.close()
            return
        _tune(sock)
        conn = _Connection(self, peer)
        self._connections[conn] = None
        task = self.loop.create_task(self.loop.connect_accepted_socket(lambda: conn, sock))
        self._making.add(task)

        def made(task: asyncio.Task) -> None:
            self._making.discard(task)
            if task.cancelled() or task.exception() is not None:  # no transport: nothing else will close it
                sock.close()
                conn.closed = True
                self._connections.pop(conn, None)
                if not conn.done.done():
                    conn.done.set_result(None)

        task.add_done_callback(made)

    def _make_room(self) -> bool:
        """At the limit: close the oldest connection that has sent no complete request
        (or one closing already); False when every connection holds an import."""
        victim = next((c for c in self._connections if c.closed), None) or \
            next((c for c in self._connections if c._state != _WANT_URB), None)
        if victim is None:
            return False
        if not victim.closed:
            self._note("evicted", f"usbip: {victim.peer}: closed to make room ({self.max_connections} connections "
                       f"open, the limit), it had sent no request",
                       f"usbip: closed {{n}} more connections that had sent no request, to make room under the limit "
                       f"of {self.max_connections}, in the last {{seconds:g}} s")
        victim.abort()
        self._connections.pop(victim, None)
        return True

    def _note(self, kind: str, line: str, summary: str) -> None:
        if self._limiter is not None:
            self._limiter.note(kind, line, summary)
        else:
            self.log(line)

    def _sweep_every(self) -> float:
        return min(1.0, max(0.02, min(self.header_timeout, self.urb_timeout) / 4))

    def _sweep(self) -> None:
        """Close connections past their time limits (see _Connection.overdue)."""
        now = self.loop.time()
        for c in list(self._connections):
            try:
                late = c.overdue(now)
            except Exception as exc:  # never let one connection stop the sweep
                late = ("internal", f"usbip: {c.peer}: internal error {exc!r}; connection closed", "")
            if late is not None:
                self._note(*late)
                c.abort()
        self._sweeper = self.loop.call_later(self._sweep_every(), self._sweep)

    def stop(self) -> None:
        """Stop serving (thread-safe; again once stopped does nothing)."""
        if self._loop is not None and self._stop is not None:
            try:
                self._loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:  # the loop has closed already: nothing left to stop
                pass

    def _poll(self) -> None:
        # Timers (DFU's delayed leave, the entry policy's timeout) run between URBs too.
        for e in self.exports.values():
            try:
                self._refresh(e)
            except Exception as exc:  # a device bug must not stop the server
                self.log(f"usbip: {e.busid}: poll failed: {exc!r}")
        self._poller = self.loop.call_later(self.poll_interval, self._poll)

    def _allowed(self, addr: str) -> bool:
        if self.allow is None:
            return True
        try:
            ip = ipaddress.ip_address(addr.split("%")[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.allow)

    def _parse(self, conn: _Connection, data: bytearray, view: memoryview, pos: int, n: int) -> int:
        """Act on every complete message in ``data[pos:n]``; returns where the unused rest starts."""
        while not conn.closed:
            if conn._state == _WANT_URB:
                if n - pos < HEADER_SIZE:
                    break
                f = CMD_SUBMIT.unpack_from(data, pos)  # any header: the basic fields come first
                command = f[0]
                if command == USBIP_CMD_SUBMIT:
                    length = self._check_submit(f)
                    end = pos + HEADER_SIZE + (length if f[3] == USBIP_DIR_OUT else 0)
                    if end > n:
                        break  # the OUT data is still on its way
                    if conn._held is not None:
                        break
                    busy = conn.export.target.busy_left() if conn.export is not None else 0.0
                    if busy > 0:
                        conn.hold(busy)  # this URB and the ones after it wait for the device
                        break
                    self._submit(conn, f, bytes(view[pos + HEADER_SIZE:end]) if end > pos + HEADER_SIZE else b"")
                    pos = end
                elif command == USBIP_CMD_UNLINK:
                    _, seqnum, _devid, _dir, _ep, victim = CMD_UNLINK.unpack_from(data, pos)
                    pos += HEADER_SIZE
                    found = next((u for u in conn.pending if u.seqnum == victim), None)
                    if found is not None:
                        conn.pending.remove(found)
                    # -ECONNRESET: unlinked before completion; 0: it had completed (or never existed)
                    conn.send(RET_UNLINK.pack(USBIP_RET_UNLINK, seqnum, 0, 0, 0, -ECONNRESET if found else 0))
                else:
                    raise ProtocolError(f"unknown command 0x{command:08X}")
                if conn.export is not None:
                    self._refresh(conn.export)
            elif conn._state == _WANT_OP:
                if n - pos < OP_COMMON.size:
                    break
                version, code, _status = OP_COMMON.unpack_from(data, pos)
                if version != USBIP_VERSION:
                    raise ProtocolError(f"unsupported USB/IP version 0x{version:04X} (want 0x{USBIP_VERSION:04X})")
                if code == OP_REQ_DEVLIST:
                    conn.send(self.devlist())
                    conn.close()  # OP_REP_DEVLIST ends the connection
                    return n
                if code != OP_REQ_IMPORT:
                    raise ProtocolError(f"unknown operation 0x{code:04X}")
                pos += OP_COMMON.size
                conn._state = _WANT_BUSID
            else:  # _WANT_BUSID
                if n - pos < BUSID_SIZE:
                    break
                busid = _cstr(bytes(view[pos:pos + BUSID_SIZE]))
                pos += BUSID_SIZE
                self._import(conn, busid)
        return pos

    def _import(self, conn: _Connection, busid: str) -> None:
        e = self.exports.get(busid)
        if e is not None:
            self._refresh(e)
        if e is None or e.device is None or e.attached is not None:
            if e is None:
                status, why = ST_NODEV, "no such device"
            elif e.device is None:
                status, why = ST_NA, "no device there now"
            else:
                status, why = ST_DEV_BUSY, f"in use by {e.attached.peer if e.attached is not None else '?'}"
            self.log(f"usbip: {conn.peer}: import of {busid!r} refused ({why})")
            conn.send(OP_COMMON.pack(USBIP_VERSION, OP_REP_IMPORT, status))
            conn.close()
            return
        e.attached, conn.export, conn.generation = conn, e, e.generation
        conn._state = _WANT_URB
        record = self._record(e)
        assert record is not None  # e.device is not None: checked above
        conn.send(OP_COMMON.pack(USBIP_VERSION, OP_REP_IMPORT, ST_OK) + record.pack(with_interfaces=False))
        self.log(f"usbip: {conn.peer} imported {busid}")

    # ------------------------------------------------------------------
    # URB traffic
    def _live(self, conn: _Connection) -> Device | None:
        e = conn.export
        if conn.closed or e is None or e.attached is not conn or e.generation != conn.generation:
            return None
        return e.device

    @staticmethod
    def _check_submit(f) -> int:
        (_, seqnum, _devid, direction, ep, _flags, length, _start, packets, _interval, _setup) = f
        if direction not in (USBIP_DIR_OUT, USBIP_DIR_IN) or ep > 15:
            raise ProtocolError(f"bad endpoint {ep} direction {direction} (seqnum {seqnum})")
        if packets not in NO_ISO_PACKETS:
            raise ProtocolError(f"isochronous URB ({packets} packets) not supported (seqnum {seqnum})")
        limit = MAX_CONTROL_LENGTH if ep == 0 else MAX_TRANSFER_LENGTH
        if length > limit:
            raise ProtocolError(f"transfer_buffer_length {length} over the limit {limit} (seqnum {seqnum})")
        return length

    def _submit(self, conn: _Connection, f, data: bytes) -> None:
        device = self._live(conn)
        if device is None:
            return  # the device went away under this URB: the connection is closing
        (_, seqnum, _devid, direction, ep, _flags, length, _start, _packets, _interval, setup) = f
        if ep == 0:
            self._control(conn, device, seqnum, direction == USBIP_DIR_IN, length, setup, data)
            return
        if direction == USBIP_DIR_OUT:
            status = self._call(conn, device.ep_out, ep, data)[0]
            self._complete(conn, seqnum, status, b"", len(data) if status == 0 else 0)
            return  # an OUT may have queued IN data: buffer_updated retries the waiting INs
        urb = _Urb(seqnum, ep | 0x80, length)
        if any(u.address == urb.address for u in conn.pending):
            conn.pending.append(urb)  # keep endpoint order behind an earlier waiting URB
        elif not self._try_in(conn, device, urb):
            if len(conn.pending) >= MAX_PENDING_URBS:
                raise ProtocolError(f"more than {MAX_PENDING_URBS} IN URBs waiting")
            conn.pending.append(urb)

    def _call(self, conn: _Connection, fn, *args):
        try:
            return 0, fn(*args)
        except Stall:
            return -EPIPE, None
        except Exception as exc:  # a device bug: report it, keep serving
            self.log(f"usbip: {conn.export.busid if conn.export else '?'}: device raised {exc!r}")
            return -EPROTO, None

    def _control(self, conn: _Connection, device: Device, seqnum: int, is_in: bool, length: int, setup: bytes,
                 data: bytes) -> None:
        """A control URB: the setup packet and its data stage go to the Device in one call."""
        req = SetupPacket(*_SETUP.unpack(setup))
        if req.bmRequestType == USB_RT_PORT and req.bRequest == 3 and req.wValue == USB_PORT_FEAT_RESET:
            status, reply = self._call(conn, device.bus_reset)[0], None
        else:
            status, reply = self._call(conn, device.control, req, data)
        if not is_in:
            self._complete(conn, seqnum, status, b"", len(data))
            return
        reply = (reply if type(reply) is bytes else bytes(reply))[:length] if reply else b""
        self._complete(conn, seqnum, status, reply, len(reply))

    def _try_in(self, conn: _Connection, device: Device, urb: _Urb) -> bool:
        status, chunk = self._call(conn, device.ep_in, urb.address, urb.length)
        if status == 0 and chunk is None:
            return False  # NAK: try again later
        chunk = bytes(chunk or b"")[:urb.length]
        self._complete(conn, urb.seqnum, status, chunk, len(chunk))
        return True

    @staticmethod
    def _complete(conn: _Connection, seqnum: int, status: int, data: bytes, actual: int) -> None:
        conn.send(RET_SUBMIT.pack(USBIP_RET_SUBMIT, seqnum, 0, 0, 0, status, actual, 0, 0, 0))
        if data:
            conn.send(data)

    def _retry_pending(self, conn: _Connection, timer: bool = False) -> None:
        """Retry NAKed IN URBs, oldest first per endpoint.

        Called after every batch of requests (an OUT may have queued IN
        data) and, while some still wait, from a timer that backs off from
        0.5 ms to 10 ms (data a device produces on its own, from its timers);
        no timer runs while nothing waits.
        """
        if conn._retry is not None:
            conn._retry.cancel()
            conn._retry = None
        device = self._live(conn)
        if device is None or not conn.pending:
            return
        if conn._held is not None:
            return  # _unhold parses, then retries
        busy = conn.export.target.busy_left() if conn.export is not None else 0.0
        if busy > 0:
            conn._retry = self.loop.call_later(busy, self._retry_pending, conn, True)
            return
        progressed, tried = False, set()
        try:
            for urb in list(conn.pending):
                if urb.address in tried or urb not in conn.pending:
                    continue
                tried.add(urb.address)
                if self._try_in(conn, device, urb):
                    conn.pending.remove(urb)
                    progressed = True
        finally:
            conn.flush()
        if progressed:
            conn._delay = _RETRY_FIRST
            if conn.export is not None:
                self._refresh(conn.export)
        elif timer:
            conn._delay = min(conn._delay * 2, _RETRY_MAX)
        else:
            conn._delay = _RETRY_FIRST
        if conn.pending and not conn.closed:
            conn._retry = self.loop.call_later(conn._delay, self._retry_pending, conn, True)

    # ------------------------------------------------------------------
    # background thread (tests, embedding)
    def start(self) -> "UsbipServer":
        """Serve on a background thread; returns once listening (or raises what failed)."""
        def run():
            try:
                asyncio.run(self.serve())
            except BaseException as exc:  # surfaced by start()
                self._error = exc
            finally:
                self._started.set()

        self._thread = threading.Thread(target=run, name="usbip-server", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            raise self._error
        return self

    def close(self) -> None:
        self.stop()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> "UsbipServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def _listeners(host: str, port: int) -> list[socket.socket]:
    """Listening sockets for every address ``host`` resolves to (as asyncio's
    create_server binds them), all on one port (port 0: the first one's)."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenError(errno.EADDRNOTAVAIL, f"cannot listen on {host}: {exc.strerror}") from None
    out: list[socket.socket] = []
    seen = set()
    try:
        for family, kind, proto, _, sockaddr in infos:
            if family not in (socket.AF_INET, socket.AF_INET6) or (family, sockaddr) in seen:
                continue
            seen.add((family, sockaddr))
            sock = socket.socket(family, kind, proto)
            out.append(sock)
            if hasattr(socket, "SO_REUSEADDR") and sys.platform != "win32":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(out) > 1:
                sockaddr = (sockaddr[0], out[0].getsockname()[1], *sockaddr[2:])
            try:
                sock.bind(sockaddr)
            except OSError as exc:
                raise ListenError(exc.errno, f"cannot listen on {format_address(sockaddr)}: {exc.strerror}") from None
            sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)
        if not out:
            raise ListenError(errno.EADDRNOTAVAIL, f"cannot listen on {host}: no IPv4 or IPv6 address")
    except BaseException:
        for sock in out:
            sock.close()
        raise
    return out


def _tune(sock: socket.socket) -> None:
    """TCP_NODELAY (a round trip per control transfer must not wait for Nagle) and the
    keepalive that finds a dead importer (KEEPALIVE_IDLE above)."""
    options = [(socket.IPPROTO_TCP, "TCP_NODELAY", 1), (socket.SOL_SOCKET, "SO_KEEPALIVE", 1),
               (socket.IPPROTO_TCP, "TCP_KEEPIDLE", KEEPALIVE_IDLE),
               (socket.IPPROTO_TCP, "TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
               (socket.IPPROTO_TCP, "TCP_KEEPCNT", KEEPALIVE_COUNT),
               (socket.IPPROTO_TCP, "TCP_USER_TIMEOUT", USER_TIMEOUT_MS)]
    for level, name, value in options:
        option = getattr(socket, name, None)
        if option is not None:
            try:
                sock.setsockopt(level, option, value)
            except OSError:
                pass  # not on this system: the defaults stay


def parse_listen(text: str, default_port: int = USBIP_PORT) -> tuple[str, int]:
    """"ADDR:PORT", "ADDR", ":PORT" or "[v6]:PORT" -> (host, port); ValueError (one line)
    for a port that is not a number in 0..65535 (0: any free port)."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None
    elif text.count(":") == 1:
        host, port = text.split(":")
        host = host or "127.0.0.1"
    else:
        host, port = text or "127.0.0.1", None
    if port is None:
        return host, default_port
    if not port.isdigit() or not 0 <= int(port) <= 0xFFFF:  # "-1", "99999", "x": a TCP port is 16 bits
        raise ValueError(f"{text!r}: port {port!r} is not a number from 0 to 65535")
    return host, int(port)


def parse_allow(text: str | Iterable[str]) -> list[str]:
    """"ADDR,NET/LEN,..." -> the list UsbipServer's ``allow`` takes, each checked:
    ValueError (one line) naming the entry that is not an IPv4/IPv6 address or network."""
    items = text.split(",") if isinstance(text, str) else list(text)
    out = []
    for item in items:
        item = item.strip()
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or network (e.g. 127.0.0.1, 192.168.7.0/24, ::1)") \
                from None
        out.append(item)
    if not out:
        raise ValueError("empty list")
    return out


def serve(targets, listen: tuple[str, int] = ("127.0.0.1", USBIP_PORT), allow: Iterable[str] | None = None,
          log: Callable[[str], None] | None = print,
          ready: Callable[[tuple[str, int]], None] | None = None, *, max_connections: int = MAX_CONNECTIONS,
          header_timeout: float = HEADER_TIMEOUT, urb_timeout: float = URB_TIMEOUT) -> None:
    """Serve until SIGINT or SIGTERM (or KeyboardInterrupt); then return normally.

    The caller owns the Targets: close the Emulator afterwards so its image
    is written back.  The limits are UsbipServer's.
    """
    server = UsbipServer(targets, listen, allow=allow, log=log, max_connections=max_connections,
                         header_timeout=header_timeout, urb_timeout=urb_timeout)
    _run(server, ready)


def _run(server: "UsbipServer", ready) -> None:
    """Run ``server`` in this thread until it stops; in the main thread SIGINT and SIGTERM stop it."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                try:
                    loop.add_signal_handler(sig, server.stop)
                except (NotImplementedError, RuntimeError):  # Windows
                    pass
        await server.serve(ready)

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass


class UsbipTransport(DeviceTransport):
    """The :class:`~.base.DeviceTransport` over USB/IP: a :class:`UsbipServer` exporting
    the device as bus id 1-1, in the calling thread, until :meth:`stop`, SIGINT or SIGTERM.

    Settings: ``listen`` ("HOST:PORT" or (host, port); port 0 picks a free one),
    ``allow`` ("ADDR,NET/LEN" or a list), ``log``, and the server's limits.  A bad
    ``listen`` or ``allow`` is a ValueError (one line) raised here, before anything
    is served.
    """

    name = "usbip"
    summary = "a USB/IP server (loopback by default): `usbip attach` or --usbip HOST:PORT imports the device"

    def __init__(self, *, listen: str | tuple[str, int] = ("127.0.0.1", USBIP_PORT),
                 allow: str | Iterable[str] | None = None, log: Callable[[str], None] | None = print,
                 max_connections: int = MAX_CONNECTIONS, header_timeout: float = HEADER_TIMEOUT,
                 urb_timeout: float = URB_TIMEOUT):
        self.listen = parse_listen(listen) if isinstance(listen, str) else (listen[0], int(listen[1]))
        self.allow = parse_allow(allow) if allow is not None else None
        self.log = log
        self.max_connections, self.header_timeout, self.urb_timeout = max_connections, header_timeout, urb_timeout
        self.server: UsbipServer | None = None
        self._stopped = False

    def serve(self, emulator, *, ready: Callable[[str], None] | None = None) -> None:
        server = self.server = UsbipServer([target_of(emulator)], self.listen, allow=self.allow, log=self.log,
                                           max_connections=self.max_connections,
                                           header_timeout=self.header_timeout, urb_timeout=self.urb_timeout)

        def listening(address: tuple[str, int]) -> None:
            if self._stopped:  # stop() came before the loop could take it
                server.stop()
            if ready is not None:
                ready(format_address(address))

        _run(server, listening)

    def stop(self) -> None:
        self._stopped = True
        if self.server is not None:
            self.server.stop()
