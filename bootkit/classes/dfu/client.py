"""The DFU client: class requests on one DFU interface, and the GETSTATUS polling
dfu-util does (DFU 1.1 section 6; bwPollTimeout honoured)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable

import usb.core

from ...progress import progress_bar
from ..common import HostError, ImageRejected
from ..usbhost import STAYED, gone, stalled, take_interfaces
from . import download
from .download import IN_CLASS_INTF, OUT_CLASS_INTF
from .protocol import (
    ABORT,
    CLRSTATUS,
    DETACH,
    DNLOAD,
    GETSTATE,
    GETSTATUS,
    UPLOAD,
    State,
    Status,
    StatusReply,
)

if TYPE_CHECKING:
    from .finder import DfuInterface


class DfuError(HostError):
    """The device or the exchange failed: one line saying what and where."""


class DfuClient:
    """Class requests on one DFU interface, and the polling dfu-util does."""

    def __init__(self, target: DfuInterface, *, timeout: int = 5000, alt: int | None = None,
                 transfer_size: int | None = None):
        self.target = target
        self.dev = target.device
        self.intf = target.interface
        self.timeout = timeout
        self.functional = target.functional
        # dfu-util -t: the user knows better (a device whose descriptor is missing)
        self.transfer_size = transfer_size or target.functional.wTransferSize or 1024
        # DfuSe places block N at (N - 2) x the DEVICE's wTransferSize + the address pointer
        # (AN3156; ST's usbd_dfu.c multiplies by its own USBD_DFU_XFER_SIZE, not wLength), so a
        # run of sequential blocks from one pointer is right only when our chunk is that size:
        # a described device's own, or the size the user gives for an undescribed one.
        # Otherwise the pointer is set again for every chunk, as dfu-util always does.
        if target.described:
            self.check_transfer_size()
            self.sequential_blocks = self.transfer_size == target.functional.wTransferSize
        else:
            self.sequential_blocks = bool(transfer_size)
        take_interfaces(self.dev)
        if alt is not None and len(target.alts) > 1:
            self.dev.set_interface_altsetting(interface=self.intf, alternate_setting=alt)
        self.alt = alt or 0
        # a backend that can send several control transfers in one round trip
        # (bootkit's USB/IP client): DNLOAD and its GETSTATUS then go together
        self.pipelined = getattr(self.dev.backend, "ctrl_transfers", None)
        #: what a download session learned (download.download_session): the GETSTATUS requests
        #: a block needs when sent ahead, 1 (the device finishes it within its GETSTATUS) or 2
        #: (dfuDNBUSY with bwPollTimeout 0 first, as DfuSe answers); None: not known, or the
        #: device asked for a wait since
        self.ahead_polls: int | None = None

    def check_transfer_size(self) -> None:
        """DFU 1.1 (4.1.3, 6.1.1): wTransferSize is the most a device takes in one request;
        a larger size asked for (``transfer_size``) is refused before anything is erased."""
        if self.transfer_size > self.target.functional.wTransferSize:
            raise ImageRejected(f"a transfer size of {self.transfer_size} bytes is more than the device "
                                f"takes (its wTransferSize is {self.target.functional.wTransferSize})")

    # --- requests
    def _out(self, request, value=0, data=None):
        return self.dev.ctrl_transfer(OUT_CLASS_INTF, request, value, self.intf, data, self.timeout)

    def _in(self, request, value, length):
        return bytes(self.dev.ctrl_transfer(IN_CLASS_INTF, request, value, self.intf, length, self.timeout))

    def detach(self, timeout_ms: int = 1000):
        return self._out(DETACH, timeout_ms)

    def dnload(self, block: int, data: bytes):
        try:
            return self._out(DNLOAD, block & 0xFFFF, data if data else None)
        except usb.core.USBError as exc:
            raise self.failure(f"DNLOAD block {block}", exc) from None

    def dnload_status(self, block: int, data: bytes) -> StatusReply:
        """DNLOAD and its GETSTATUS (in one round trip where the backend can): see :func:`download.dnload_status`."""
        return download.dnload_status(self, block, data)

    def dnload_and_wait(self, block: int, data: bytes, what: str) -> StatusReply:
        """DNLOAD, then GETSTATUS until the device is done with the block."""
        return self.wait_while_busy(what, self.dnload_status(block, data))

    # DNLOADs sent ahead of their replies in one round trip (download_session)
    AHEAD_BLOCKS = 16
    AHEAD_BYTES = 64 * 1024

    def download_session(self, blocks: download.Blocks, done: Callable[[int], object] = lambda n: None) -> None:
        """DNLOAD every block of a download that starts in dfuIDLE; several per round trip where the
        backend can: see :func:`download.download_session`."""
        download.download_session(self, blocks, done)

    def upload(self, block: int, length: int) -> bytes:
        try:
            return self._in(UPLOAD, block & 0xFFFF, length)
        except usb.core.USBError as exc:
            raise self.failure(f"UPLOAD block {block}", exc) from None

    def upload_all(self, first_block: int, limit: int, progress=None, total: int | None = -1) -> bytes:
        """UPLOAD wTransferSize blocks until ``limit`` bytes or a short frame (DFU 1.1 section 6.2)."""
        out = bytearray()
        block = first_block
        with progress_bar("upload", limit if total == -1 else total, progress) as bar:
            while len(out) < limit:
                want = min(self.transfer_size, limit - len(out))
                chunk = self.upload(block, want)
                out += chunk
                bar(len(chunk))
                block += 1
                if len(chunk) < want:
                    break
        return bytes(out)

    def get_status(self) -> StatusReply:
        return StatusReply.unpack(self._in(GETSTATUS, 0, 6))

    def get_state(self) -> int:
        return self._in(GETSTATE, 0, 1)[0]

    def clear_status(self):
        return self._out(CLRSTATUS)

    def abort(self):
        return self._out(ABORT)

    def failure(self, what: str, exc: usb.core.USBError, status: bytes | None = None) -> DfuError:
        if gone(exc):
            return DfuError(f"{what}: device disconnected ({exc})")
        try:
            st = self.get_status() if status is None else StatusReply.unpack(bytes(status))
            return DfuError(f"{what}: device reports {st.describe()}")
        except usb.core.USBError:
            return DfuError(f"{what}: {exc}")

    def refused(self, what: str, exc: usb.core.USBError) -> DfuError:
        """The device turned down the request that was to leave its bootloader: with its status when it has one."""
        if stalled(exc):
            try:
                return DfuError(f"{STAYED}: {what} refused, device reports {self.get_status().describe()}")
            except usb.core.USBError:
                pass
        return self.failure(what, exc)

    def make_idle(self) -> None:
        """Bring the interface to dfuIDLE, as dfu-util and dfu-programmer do first."""
        for _ in range(4):
            st = self.get_status()
            if st.bState == State.dfuIDLE:
                return
            if st.bState == State.dfuERROR:
                self.clear_status()
            elif st.bState in (State.dfuDNLOAD_IDLE, State.dfuUPLOAD_IDLE, State.dfuDNLOAD_SYNC,
                               State.dfuMANIFEST_SYNC):
                self.abort()
            else:
                time.sleep(st.bwPollTimeout / 1000.0)
        raise DfuError(f"cannot bring the device to dfuIDLE (it reports {self.get_status().describe()})")

    def wait_while_busy(self, what: str, first: StatusReply | None = None) -> StatusReply:
        """GETSTATUS until the device is no longer busy, sleeping bwPollTimeout between polls.

        ``first``: the reply of a GETSTATUS already made (:meth:`dnload_status`).
        """
        st = first
        while True:
            if st is None:
                st = self.get_status()
            if st.bStatus != Status.OK or st.bState == State.dfuERROR:
                raise DfuError(f"{what}: device reports {st.describe()}")
            if st.bState not in (State.dfuDNBUSY, State.dfuDNLOAD_SYNC, State.dfuMANIFEST):
                return st
            if st.bState == State.dfuMANIFEST and not self.functional.manifestation_tolerant:
                return st
            time.sleep(st.bwPollTimeout / 1000.0)
            st = None
