"""A userspace USB/IP client: a pyusb backend for devices a USB/IP server exports.

``usb.core.find(backend=bootkit.transports.usbip_client.get_backend("host"))``
lists what the server exports (OP_REQ_DEVLIST) and talks to a device over
its own TCP connection (OP_REQ_IMPORT, then USBIP_CMD_SUBMIT per
transfer), without vhci-hcd or root.  Descriptors are read with
GET_DESCRIPTOR requests, as a host does when it enumerates.

Errors surface as pyusb's libusb1 backend raises them for a real device,
like :mod:`bootkit.transports.virtual`: a STALL (-EPIPE) is
``USBError(errno=EPIPE)`` "Pipe error", a closed connection (the device was
unplugged or re-enumerated) ``errno=ENODEV``, a timeout
``USBTimeoutError`` (after a USBIP_CMD_UNLINK of the waiting URB).

A server lets one client import a device at a time; this backend imports a
device for as long as pyusb holds it open and shares that connection
between handles to the same device.  Listing a device imports it to read
its descriptors; that import is kept while pyusb holds the listed Device
(so opening it does not import it again) and closed when the Device goes.

Beyond pyusb's backend interface, :meth:`UsbipBackend.ctrl_transfers` sends
several control transfers in one round trip (the DFU host's DNLOAD and the
GETSTATUS after it, and, to a device that finishes blocks at once, the
next blocks too); see docs/usbip.md.
"""

from __future__ import annotations

import collections
import errno
import socket
import struct
import threading
import time
import weakref
from dataclasses import dataclass

import usb.core

from ..usb import descriptors as D
from .pyusbbase import BlobBackend, Desc
from .usbip import (
    BUSID_SIZE,
    CMD_SUBMIT,
    CMD_UNLINK,
    EPIPE,
    HEADER_SIZE,
    OP_COMMON,
    OP_REP_DEVLIST,
    OP_REP_IMPORT,
    OP_REQ_DEVLIST,
    OP_REQ_IMPORT,
    IMPORTED_BY,
    ST_DEV_BUSY,
    USB_DEVICE,
    USB_INTERFACE,
    USB_PORT_FEAT_RESET,
    USB_RT_PORT,
    USB_SPEED_HIGH,
    USBIP_CMD_SUBMIT,
    USBIP_CMD_UNLINK,
    USBIP_DIR_IN,
    USBIP_DIR_OUT,
    USBIP_PORT,
    USBIP_RET_SUBMIT,
    USBIP_RET_UNLINK,
    USBIP_VERSION,
    UsbDevice,
    format_address,
)

# libusb error codes, as pyusb's libusb1 backend reports them
_PIPE = ("Pipe error", -9, errno.EPIPE)
_NODEV = ("No such device (it may have been disconnected)", -4, errno.ENODEV)
_TIMEOUT = ("Operation timed out", -7, errno.ETIMEDOUT)
_IO = ("Input/Output Error", -1, errno.EIO)
_NOTFOUND = ("Entity not found", -5, errno.ENOENT)

# libusb_speed
SPEED_FULL, SPEED_HIGH = 2, 3
CONNECT_TIMEOUT = 5.0
MAX_REPLY = 1 << 20  # the server's own per-URB limit
MAX_DEVICES = 1024
_RECV_SIZE = 1 << 16
_RET_HEAD = struct.Struct(">IIIIIiI")  # command, seqnum, devid, direction, ep, status, actual_length
_SETUP = struct.Struct("<BBHHH")  # the 8-byte setup packet (USB 2.0 9.3), as SetupPacket.pack() makes it
_NO_SETUP = bytes(8)


class UsbipError(OSError):
    """The server refused or broke the exchange (not a USB-level error)."""


class UsbipBusy(UsbipError):
    """OP_REP_IMPORT said ST_DEV_BUSY: another client has imported the device.

    ``holder`` is that client's "HOST:PORT" as the server names it (bootkit's server
    appends it to the devlist record's path), or None from a server that does not say.
    Not a ``usb.core.USBError``: callers that retry on USB errors let it through, so
    the command line prints it as it is.
    """

    def __init__(self, busid: str, holder: str | None):
        self.busid, self.holder = busid, holder
        super().__init__(errno.EBUSY, f"device busy: imported by {holder}" if holder else
                         f"device busy: {busid} is imported by another client")

    def __str__(self) -> str:
        return str(self.strerror)


def busy_holder(host: str, port: int, busid: str) -> str | None:
    """Who holds ``busid``, from the devlist record's path (see ``usbip.IMPORTED_BY``)."""
    try:
        records = list_devices(host, port)
    except (OSError, ValueError):
        return None
    for d in records:
        if d.busid == busid and IMPORTED_BY in d.path:
            return d.path.rsplit(IMPORTED_BY, 1)[1] or None
    return None


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by the USB/IP server")
        buf += chunk
    return bytes(buf)


def _connect(host: str, port: int) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _op_reply(sock: socket.socket, code: int) -> int:
    version, got, status = OP_COMMON.unpack(_recv_exact(sock, OP_COMMON.size))
    if version != USBIP_VERSION or got != code:
        raise UsbipError(f"unexpected USB/IP reply: version 0x{version:04X} code 0x{got:04X}")
    return status


def list_devices(host: str = "127.0.0.1", port: int = USBIP_PORT) -> list[UsbDevice]:
    """OP_REQ_DEVLIST: the devices a server exports (``usbip list -r HOST``)."""
    with _connect(host, port) as sock:
        sock.sendall(OP_COMMON.pack(USBIP_VERSION, OP_REQ_DEVLIST, 0))
        if _op_reply(sock, OP_REP_DEVLIST) != 0:
            raise UsbipError("the server refused to list its devices")
        (count,) = struct.unpack(">I", _recv_exact(sock, 4))
        if count > MAX_DEVICES:
            raise UsbipError(f"the server claims {count} devices")
        out = []
        for _ in range(count):
            raw = _recv_exact(sock, USB_DEVICE.size)
            n = raw[-1]  # bNumInterfaces
            out.append(UsbDevice.unpack(raw, _recv_exact(sock, n * USB_INTERFACE.size)))
        return out


class Session:
    """One imported device: a TCP connection carrying URBs (synchronous, thread-safe)."""

    def __init__(self, host: str, port: int, busid: str):
        self.busid = busid
        self._lock = threading.Lock()
        self._seqnum = 0
        self.sock = _connect(host, port)
        self.local = format_address(self.sock.getsockname())  # how the server names this import
        try:
            self.sock.sendall(OP_COMMON.pack(USBIP_VERSION, OP_REQ_IMPORT, 0)
                              + busid.encode().ljust(BUSID_SIZE, b"\0"))
            status = _op_reply(self.sock, OP_REP_IMPORT)
            if status == ST_DEV_BUSY:
                raise UsbipBusy(busid, busy_holder(host, port, busid))
            if status != 0:  # ST_NODEV, ST_NA: gone, or between two enumerations
                raise usb.core.USBError(*_NODEV)
            self.device = UsbDevice.unpack(_recv_exact(self.sock, USB_DEVICE.size))
        except BaseException:
            self.sock.close()
            raise
        self.devid = self.device.devid
        self.sock.settimeout(None)  # blocking; receive timeouts come from SO_RCVTIMEO
        self._timeout_ms: int | None = None
        # replies are received into one buffer: _rbuf[_rstart:_rend] is what arrived and is not used yet
        self._rbuf = bytearray(_RECV_SIZE)
        self._rview = memoryview(self._rbuf)
        self._rstart = self._rend = 0
        self.closed = False
        self.refs = 0

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self.sock.close()
            except OSError:
                pass

    def _set_timeout(self, timeout_ms: int | None) -> None:
        # SO_RCVTIMEO on a blocking socket: no poll() before every recv, and no
        # system call at all while the timeout stays the same (DFU uses one value).
        if timeout_ms != self._timeout_ms:
            seconds, ms = divmod(int(timeout_ms or 0), 1000)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", seconds, ms * 1000))
            self._timeout_ms = timeout_ms

    def _fill(self, n: int) -> int:
        """At least n unused bytes in the receive buffer; returns where they start.

        One recv_into per reply, mostly (no allocation): a reply's header and
        data arrive together.
        """
        while self._rend - self._rstart < n:
            have = self._rend - self._rstart
            if len(self._rbuf) - self._rstart < max(n, _RECV_SIZE // 4):
                if len(self._rbuf) < n + _RECV_SIZE // 4:  # a large IN reply: a bigger buffer
                    new = bytearray(n + _RECV_SIZE)
                    new[:have] = self._rview[self._rstart:self._rend]
                    self._rbuf, self._rview = new, memoryview(new)
                else:  # same size: no resize, so allowed while the view exists
                    self._rbuf[:have] = self._rbuf[self._rstart:self._rend]
                self._rstart, self._rend = 0, have
            got = self.sock.recv_into(self._rview[self._rend:])
            if not got:
                raise ConnectionError("connection closed by the USB/IP server")
            self._rend += got
        return self._rstart

    def _recv(self, n: int) -> bytes:
        """The next n bytes from the server."""
        at = self._fill(n)
        out = bytes(self._rview[at:at + n])
        self._consume(n)
        return out

    def _consume(self, n: int) -> None:
        self._rstart += n
        if self._rstart == self._rend:
            self._rstart = self._rend = 0

    def submit(self, ep: int, direction: int, data: bytes = b"", length: int = 0, setup: bytes = _NO_SETUP,
               timeout_ms: int | None = None) -> bytes | int:
        """One URB.  Returns the IN data, or the OUT actual length; raises pyusb's errors."""
        result = self.submit_many([(ep, direction, data, length, setup)], timeout_ms)[0]
        if isinstance(result, usb.core.USBError):
            raise result
        return result

    def submit_many(self, urbs, timeout_ms: int | None = None) -> list:
        """Several URBs in one write, then their replies: [(ep, direction, data, length, setup), ...].

        Returns each URB's result in order (IN data, or the OUT actual
        length), or the ``usb.core.USBError`` that URB failed with: one
        failing URB does not hide the others' results.  A host may keep
        several URBs outstanding on one connection (vhci-hcd does); the
        server completes each endpoint's URBs in the order it got them
        (usbip_protocol.rst: RET_SUBMIT carries the seqnum of its CMD_SUBMIT).
        """
        with self._lock:
            if self.closed:
                return [usb.core.USBError(*_NODEV) for _ in urbs]
            results: list = [None] * len(urbs)
            waiting: dict[int, tuple[int, int]] = {}  # seqnum -> (index, IN length or -1 for OUT)
            out = []
            seqnum = self._seqnum
            for i, (ep, direction, data, length, setup) in enumerate(urbs):
                seqnum = seqnum % 0xFFFFFFFF + 1
                if direction == USBIP_DIR_IN:
                    out.append(CMD_SUBMIT.pack(USBIP_CMD_SUBMIT, seqnum, self.devid, direction, ep,
                                               0x200, length, 0, 0, 0, setup))  # URB_DIR_IN, as vhci sets it
                    waiting[seqnum] = (i, length)
                else:
                    out.append(CMD_SUBMIT.pack(USBIP_CMD_SUBMIT, seqnum, self.devid, direction, ep,
                                               0, len(data), 0, 0, 0, setup))
                    if data:
                        out.append(data)
                    waiting[seqnum] = (i, -1)
            self._seqnum = seqnum
            try:
                if timeout_ms != self._timeout_ms:
                    self._set_timeout(timeout_ms)
                self.sock.sendall(out[0] if len(out) == 1 else b"".join(out))
                while waiting:
                    at = self._fill(HEADER_SIZE)
                    command, got, _, _, _, status, actual = _RET_HEAD.unpack_from(self._rbuf, at)
                    entry = waiting.pop(got, None) if command == USBIP_RET_SUBMIT else None
                    if entry is None:
                        self._consume(HEADER_SIZE)
                        continue  # a late RET_UNLINK
                    i, length = entry
                    if actual > MAX_REPLY:
                        raise ConnectionError(f"reply of {actual} bytes")
                    if length >= 0 and actual:  # IN data follows the header
                        at = self._fill(HEADER_SIZE + actual) + HEADER_SIZE
                        result = bytes(self._rview[at:at + min(actual, length)])
                        self._consume(HEADER_SIZE + actual)
                    else:
                        result = b"" if length >= 0 else actual
                        self._consume(HEADER_SIZE)
                    if status:
                        result = usb.core.USBError(*(_PIPE if status == -EPIPE else _IO))
                    results[i] = result
            except (socket.timeout, BlockingIOError):
                error = _TIMEOUT
                try:
                    self._unlink(waiting)
                except (ConnectionError, OSError):
                    self.close()
                    error = _NODEV
            except (ConnectionError, OSError):
                self.close()  # the device was unplugged or re-enumerated
                error = _NODEV
            for i, _ in waiting.values():
                results[i] = (usb.core.USBTimeoutError if error is _TIMEOUT else usb.core.USBError)(*error)
            return results

    def _unlink(self, waiting: dict[int, tuple[int, int]]) -> None:
        """Timed out: USBIP_CMD_UNLINK each waiting URB and wait for the answers, as vhci does.

        A URB that completed meanwhile (its RET_SUBMIT comes before the
        RET_UNLINK) is dropped: the caller reports a timeout either way.
        """
        unlinks, out = set(), []
        for victim in waiting:
            self._seqnum = seqnum = self._seqnum % 0xFFFFFFFF + 1
            unlinks.add(seqnum)
            out.append(CMD_UNLINK.pack(USBIP_CMD_UNLINK, seqnum, self.devid, 0, 0, victim))
        self._set_timeout(int(CONNECT_TIMEOUT * 1000))
        self.sock.sendall(b"".join(out))
        while unlinks:
            head = self._recv(HEADER_SIZE)
            command, got = struct.unpack_from(">II", head)
            if command == USBIP_RET_UNLINK:
                unlinks.discard(got)
            elif command == USBIP_RET_SUBMIT:
                actual = struct.unpack_from(">I", head, 24)[0]
                if waiting.get(got, (0, -1))[1] >= 0 and actual:  # IN data follows
                    self._recv(min(actual, MAX_REPLY))

    def control(self, bmRequestType, bRequest, wValue, wIndex, data_or_length, timeout_ms=None):
        return self.submit(*_control_urb(bmRequestType, bRequest, wValue, wIndex, data_or_length), timeout_ms)


def _control_urb(bmRequestType, bRequest, wValue, wIndex, data_or_length) -> tuple[int, int, bytes, int, bytes]:
    """A control transfer as :meth:`Session.submit_many` takes it: (ep, direction, data, length, setup)."""
    if bmRequestType & 0x80:
        return (0, USBIP_DIR_IN, b"", data_or_length,
                _SETUP.pack(bmRequestType, bRequest, wValue, wIndex, data_or_length))
    data = bytes(data_or_length or b"")
    return 0, USBIP_DIR_OUT, data, 0, _SETUP.pack(bmRequestType, bRequest, wValue, wIndex, len(data))


@dataclass(frozen=True)
class _RemoteId:
    """A device as listed: the bus id plus its device number (new after each re-enumeration)."""

    busid: str
    busnum: int
    devnum: int
    speed: int


class _Handle:
    def __init__(self, devid: _RemoteId, session: Session):
        self.devid = devid
        self.session = session
        self.claimed: set[int] = set()
        self.open = True


class UsbipBackend(BlobBackend):
    """pyusb's IBackend over USB/IP.

    ``pipeline=False`` withdraws :meth:`ctrl_transfers`, so callers that use
    it when present (the DFU host) send one control transfer per round trip
    and nothing ahead.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = USBIP_PORT, *, timeout: float = CONNECT_TIMEOUT,
                 pipeline: bool = True):
        super().__init__()
        self.host, self.port = host, port
        if not pipeline:
            # withdraw the method: callers look for it with getattr(backend, "ctrl_transfers", None)
            self.ctrl_transfers = None  # type: ignore[method-assign, assignment]
        self._lock = threading.RLock()
        self._sessions: dict[str, Session] = {}  # busid -> live import
        self._parked: dict[str, Session] = {}  # busid -> import that read the descriptors, not opened yet
        self._descriptors: dict[tuple, tuple[bytes, list[bytes]]] = {}  # (busid, busnum, devnum, speed) ->
        self._mine: collections.deque[str] = collections.deque(maxlen=64)  # our imports' local addresses

    # ------------------------------------------------------------------
    # enumeration
    def enumerate_devices(self):
        """The devices we can import.  One imported by another client is left out; when
        that leaves nothing, its UsbipBusy is raised ("device busy: imported by
        HOST:PORT"), so that the caller learns why instead of "no device found"."""
        out, busy = [], None
        for d in list_devices(self.host, self.port):
            rid = _RemoteId(d.busid, d.busnum, d.devnum, d.speed)
            try:
                self._fetch(rid)
            except UsbipBusy as exc:
                busy = busy or exc
                continue
            except usb.core.USBError:
                continue  # gone meanwhile: not visible to us
            out.append(rid)
        if not out and busy is not None:
            raise busy
        return out

    def get_parent(self, dev):
        return None

    def _session(self, rid: _RemoteId, *, keep: bool) -> Session:
        with self._lock:
            s = self._sessions.get(rid.busid)
            if s is not None and (s.closed or s.device.devnum != rid.devnum):
                s.close()
                del self._sessions[rid.busid]
                s = None
            if s is not None:
                return s
            s = self._parked.pop(rid.busid, None)
            if s is not None and (s.closed or s.device.devnum != rid.devnum):
                s.close()
                s = None
            if s is None:
                s = self._import(rid.busid)
                if s.device.devnum != rid.devnum:  # re-enumerated between the list and the import
                    s.close()
                    raise usb.core.USBError(*_NODEV)
            if keep:
                self._sessions[rid.busid] = s
            return s

    def _import(self, busid: str) -> Session:
        """A new import of ``busid``.  Busy because of an import of ours just closed (the
        server has not read its end yet): tried again for a while; busy for anyone else:
        UsbipBusy at once."""
        deadline = time.monotonic() + CONNECT_TIMEOUT
        delay = 0.005
        while True:
            try:
                s = Session(self.host, self.port, busid)
            except UsbipBusy as exc:
                if exc.holder not in self._mine or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.1)
                continue
            except usb.core.USBError:
                raise
            except (ConnectionError, OSError):
                raise usb.core.USBError(*_NODEV) from None
            self._mine.append(s.local)
            return s

    def _unpark(self, busid: str, s: Session) -> None:
        with self._lock:
            if self._parked.get(busid) is s:
                del self._parked[busid]
                s.close()

    def _fetch(self, rid: _RemoteId) -> tuple[bytes, list[bytes]]:
        """Device and configuration descriptors, read once per device number.

        The import that reads them stays open for the open that usually
        follows (pyusb lists, then opens), as long as pyusb holds a Device
        for ``rid`` (a finalizer on it closes the import when it goes), so
        listing then opening imports once.
        """
        key = (rid.busid, rid.busnum, rid.devnum, rid.speed)  # not rid itself: its lifetime is pyusb's
        with self._lock:
            if key in self._descriptors:
                return self._descriptors[key]
            shared = rid.busid in self._sessions and not self._sessions[rid.busid].closed
            s = self._session(rid, keep=False)
            try:
                # the device descriptor and the first 255 bytes of the first configuration in
                # one round trip (255 as Windows asks first: every device answers it); the
                # rest only for a configuration longer than that, or a second configuration
                got = s.submit_many([_control_urb(0x80, 6, D.DEVICE << 8, 0, 18),
                                     _control_urb(0x80, 6, D.CONFIGURATION << 8, 0, 255)], 1000)
                dev, first = got
                if isinstance(dev, usb.core.USBError):
                    raise dev
                if len(dev) >= 18 and dev[17] and isinstance(first, usb.core.USBError):
                    raise first
                configs = []
                for index in range(dev[17] if len(dev) >= 18 else 0):
                    head = first if index == 0 else s.control(0x80, 6, (D.CONFIGURATION << 8) | index, 0, 9, 1000)
                    total = struct.unpack_from("<H", head, 2)[0] if len(head) >= 4 else 0
                    configs.append(head[:total] if total <= len(head) else
                                   s.control(0x80, 6, (D.CONFIGURATION << 8) | index, 0, total, 1000))
                if len(dev) < 18:
                    raise usb.core.USBError(*_IO)
            except BaseException:
                if not shared:
                    s.close()
                raise
            if not shared:
                self._parked[rid.busid] = s
                weakref.finalize(rid, self._unpark, rid.busid, s)
            self._descriptors[key] = (dev, configs)
            return dev, configs

    def get_device_descriptor(self, dev):
        raw, _ = self._fetch(dev)
        speed = SPEED_HIGH if dev.speed == USB_SPEED_HIGH else SPEED_FULL
        port = int(dev.busid.rsplit("-", 1)[-1].split(".")[-1]) if dev.busid[-1:].isdigit() else 0
        return Desc(D.parse_descriptor(raw), bus=dev.busnum, address=dev.devnum, port_number=port,
                     port_numbers=(port,), speed=speed)

    def _config_tree(self, dev, config: int) -> dict:
        _, configs = self._fetch(dev)
        if config >= len(configs):
            raise IndexError("no such configuration")
        return D.parse_configuration(configs[config])

    # ------------------------------------------------------------------
    # handles
    def open_device(self, dev):
        with self._lock:
            s = self._session(dev, keep=True)
            s.refs += 1
            return _Handle(dev, s)

    def close_device(self, dev_handle):
        with self._lock:
            if not dev_handle.open:
                return
            dev_handle.open = False
            s = dev_handle.session
            s.refs -= 1
            if s.refs <= 0:
                s.close()
                if self._sessions.get(dev_handle.devid.busid) is s:
                    del self._sessions[dev_handle.devid.busid]

    def close(self) -> None:
        """Drop every import (pyusb closes handles when its Device objects go)."""
        with self._lock:
            for s in list(self._sessions.values()) + list(self._parked.values()):
                s.close()
            self._sessions.clear()
            self._parked.clear()

    def _control(self, h: _Handle, bmRequestType, bRequest, wValue, wIndex, data_or_length, timeout=None):
        return h.session.control(bmRequestType, bRequest, wValue, wIndex, data_or_length, timeout)

    def get_configuration(self, dev_handle):
        return self._control(dev_handle, 0x80, 8, 0, 0, 1)[0]

    def ctrl_transfers(self, device, transfers) -> list:
        """Several control transfers on one device in one round trip (an optional extension).

        ``device`` is a ``usb.core.Device`` of this backend; each transfer is
        ``(bmRequestType, bRequest, wValue, wIndex, data_or_wLength, timeout)``
        as for ``Device.ctrl_transfer``.  They reach the device in order, each
        after the previous one completed (one queue per endpoint, as on a real
        host controller); a failing transfer does not stop the ones after it,
        as with libusb's asynchronous transfers.  Returns, in order, the data
        read (bytes) or the count written, or the ``usb.core.USBError`` that
        transfer failed with: errors stay with the transfer that caused them.
        A caller uses it where it would issue the same requests anyway (a DFU
        DNLOAD and the GETSTATUS that follows it; the next blocks to a device
        that said it needs no wait, see ``DfuClient.download_session``).  Unlike
        ``Device.ctrl_transfer`` it does not claim the recipient interface:
        claim it first.
        """
        handle = device._ctx.managed_open()  # what Device.ctrl_transfer does first
        urbs = [_control_urb(*transfer[:5]) for transfer in transfers]
        timeouts = [device.default_timeout if transfer[5] is None else transfer[5] for transfer in transfers]
        # each reply is waited for at most the longest timeout (0: for ever, as in libusb)
        return handle.session.submit_many(urbs, 0 if 0 in timeouts else max(timeouts))

    # ------------------------------------------------------------------
    # transfers: the primitives BlobBackend builds everything else on
    def _write_bytes(self, dev_handle, ep, payload, timeout):
        return dev_handle.session.submit(ep & 0x0F, USBIP_DIR_OUT, payload, timeout_ms=timeout)

    def _read_bytes(self, dev_handle, ep, size, timeout):
        return dev_handle.session.submit(ep & 0x0F, USBIP_DIR_IN, b"", size, timeout_ms=timeout)

    def reset_device(self, dev_handle):
        # vhci forwards a port reset as USB_RT_PORT SET_FEATURE(PORT_RESET); the
        # server resets the device.  A re-enumerating device then closes the
        # connection: libusb_reset_device reports NOT_FOUND, pyusb callers ignore it.
        s = dev_handle.session
        self._control(dev_handle, USB_RT_PORT, 3, USB_PORT_FEAT_RESET, 0, b"")
        with s._lock:
            try:
                s._set_timeout(50)
                if s._rend == s._rstart and s.sock.recv(1, socket.MSG_PEEK) == b"":
                    s.close()
                    raise usb.core.USBError(*_NOTFOUND)
            except (socket.timeout, BlockingIOError):
                pass
            except OSError:
                s.close()
                raise usb.core.USBError(*_NOTFOUND) from None


_backends: dict[tuple[str, int], UsbipBackend] = {}
_backends_lock = threading.Lock()


def get_backend(host: str = "127.0.0.1", port: int = USBIP_PORT) -> UsbipBackend:
    """The pyusb backend for the USB/IP server at host:port (one per address)."""
    with _backends_lock:
        key = (host, int(port))
        if key not in _backends:
            _backends[key] = UsbipBackend(host, int(port))
        return _backends[key]


def parse_address(text: str, default_port: int = USBIP_PORT) -> tuple[str, int]:
    """"HOST[:PORT]" (or "[v6]:PORT") -> (host, port), for ``--usbip``."""
    from .usbip import parse_listen

    return parse_listen(text, default_port)
