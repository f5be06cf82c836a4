"""DFU host side: find, detach, erase, download, upload, verify and leave.

Works through pyusb, so the same code drives real hardware (libusb) and
the emulator (the virtual backend).  Behaviour follows dfu-util (DFU 1.1,
DfuSe) and dfu-programmer (FLIP): GETSTATUS polling honours bwPollTimeout;
a device that resets during the final step counts as success.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass

import usb.core
import usb.util

from ...formats.image import Image
from ...memory import Chip, parse_dfuse_layout
from ...memory.chips import EEPROM_BASE, get_chip
from ...progress import phase, progress_bar
from ..common import FlashResult, HostError, ImageRejected, app_first_address, check_ranges, preflight
from ..usbhost import (
    CAME_BACK,
    STAYED,
    FoundDevice,
    LeaveWatch,
    UsbLook,
    bus_snapshot,
    gone,
    matching_devices,
    stalled,
    take_interfaces,
)
from .protocol import (
    ABORT,
    ATMEL_VID,
    CLRSTATUS,
    DETACH,
    DFU_CLASS,
    DFU_FUNCTIONAL,
    DFU_SUBCLASS,
    DFUSE_ERASE,
    DFUSE_SET_ADDRESS_POINTER,
    DFUSE_PID,
    DFUSE_VERSION,
    DNLOAD,
    FLIP_CONTROL_SIZE,
    FLIP_DISPLAY_DATA,
    FLIP_HEADER_SIZE,
    FLIP_PIDS,
    FLIP_PROG_START,
    FLIP_READ_COMMAND,
    FLIP_SUFFIX_SIZE,
    FLIP_WRITE_COMMAND,
    FLIP_CHANGE_BASE_ADDR,
    GETSTATE,
    GETSTATUS,
    PROTOCOL_RUNTIME,
    ST_VID,
    UPLOAD,
    FunctionalDescriptor,
    State,
    Status,
    StatusReply,
)

OUT_CLASS_INTF = 0x21
IN_CLASS_INTF = 0xA1
LEAVE_WAIT = 5.0  # seconds to wait for what enumerates after leaving


class DfuError(HostError):
    """The device or the exchange failed: one line saying what and where."""


@dataclass
class DfuInterface(FoundDevice):
    """A DFU interface found on a device (run-time or DFU mode)."""

    device: object  # usb.core.Device
    interface: int
    alts: list[tuple[int, str]]
    functional: FunctionalDescriptor
    runtime: bool
    # False when the device carries no functional descriptor (a FunctionFS
    # gadget on Linux before 6.12): wTransferSize is then only a guess.
    described: bool = True

    def guess_dialect(self) -> str:
        if self.functional.bcdDFUVersion == DFUSE_VERSION:
            return "dfuse"
        if not self.described and (any(name.startswith("@") for _, name in self.alts)
                                   or (self.vid, self.pid) == (ST_VID, DFUSE_PID)):
            # no functional descriptor to read bcdDFUVersion 0x011A from (a gadget on
            # an older kernel): DfuSe layout strings in the alternate names, or ST's
            # ROM ids, say DfuSe as surely
            return "dfuse"
        if self.vid == ATMEL_VID and self.pid in FLIP_PIDS.values():
            return "flip"
        return "dfu"

    def describe(self) -> str:
        mode = "runtime" if self.runtime else "dfu"
        alts = "; ".join(f"alt={a} name=\"{n}\"" for a, n in self.alts)
        return (f"[{self.vid:04x}:{self.pid:04x}] ver={self.device.bcdDevice:04x} intf={self.interface} "
                f"mode={mode} serial=\"{self.serial or ''}\" {alts}")


def find_interfaces(backend=None, *, vid=None, pid=None, serial=None) -> list[DfuInterface]:
    found = []
    for dev, cfg in matching_devices(backend, vid=vid, pid=pid, serial=serial):
        groups: dict[int, list] = {}
        for intf in cfg:
            if intf.bInterfaceClass == DFU_CLASS and intf.bInterfaceSubClass == DFU_SUBCLASS:
                groups.setdefault(intf.bInterfaceNumber, []).append(intf)
        for number, alts in groups.items():
            raw = bytes(alts[0].extra_descriptors)
            functional = _functional_from(raw)
            names = []
            for a in alts:
                try:
                    name = usb.util.get_string(dev, a.iInterface) if a.iInterface else ""
                except (usb.core.USBError, ValueError):
                    name = ""
                names.append((a.bAlternateSetting, name or ""))
            found.append(DfuInterface(dev, number, names, functional or FunctionalDescriptor(),
                                      alts[0].bInterfaceProtocol == PROTOCOL_RUNTIME, functional is not None))
    return found


def _functional_from(extra: bytes) -> FunctionalDescriptor | None:
    i = 0
    while i + 2 <= len(extra):
        length = extra[i]
        if length < 2:
            break
        if extra[i + 1] == DFU_FUNCTIONAL:
            return FunctionalDescriptor.unpack(extra[i:i + length])
        i += length
    return None


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
        if transfer_size:
            target.described = True  # the size is known now: sequential blocks are safe
        take_interfaces(self.dev)
        if alt is not None and len(target.alts) > 1:
            self.dev.set_interface_altsetting(interface=self.intf, alternate_setting=alt)
        self.alt = alt or 0
        # a backend that can send several control transfers in one round trip
        # (bootkit's USB/IP client): DNLOAD and its GETSTATUS then go together
        self._pipelined = getattr(self.dev.backend, "ctrl_transfers", None)

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
            raise self._failure(f"DNLOAD block {block}", exc) from None

    def dnload_status(self, block: int, data: bytes) -> StatusReply:
        """DNLOAD, then the GETSTATUS that follows every DNLOAD (DFU 1.1 section 6.1: the
        device leaves dfuDNLOAD-SYNC only on DFU_GETSTATUS).

        On a backend with ``ctrl_transfers`` both go in one round trip: the
        device gets the same two requests in the same order, and a failed
        DNLOAD is reported as DNLOAD's failure, with the status that GETSTATUS
        read (or, if that failed too, a new GETSTATUS), as when the two go one
        by one.
        """
        if self._pipelined is None:
            self.dnload(block, data)
            return self.get_status()
        return self._dnload_reply(block, *self._pipelined(self.dev, self._dnload_pair(block, data)))

    def _dnload_pair(self, block: int, data: bytes) -> list[tuple]:
        return [(OUT_CLASS_INTF, DNLOAD, block & 0xFFFF, self.intf, data, self.timeout),
                (IN_CLASS_INTF, GETSTATUS, 0, self.intf, 6, self.timeout)]

    def _dnload_reply(self, block: int, done, status) -> StatusReply:
        """A DNLOAD's and its GETSTATUS's results from ``ctrl_transfers``, as :meth:`dnload_status` gives them."""
        if isinstance(done, usb.core.USBError):
            raise self._failure(f"DNLOAD block {block}", done,
                                None if isinstance(status, usb.core.USBError) else status) from None
        if isinstance(status, usb.core.USBError):
            raise status
        return StatusReply.unpack(bytes(status))

    def dnload_and_wait(self, block: int, data: bytes, what: str) -> StatusReply:
        """DNLOAD, then GETSTATUS until the device is done with the block."""
        return self.wait_while_busy(what, self.dnload_status(block, data))

    # DNLOADs sent ahead of their replies in one round trip (download_session)
    AHEAD_BLOCKS = 16
    AHEAD_BYTES = 64 * 1024

    def download_session(self, blocks: list[tuple[int, bytes, str]], done=lambda n: None) -> None:
        """DNLOAD every block of a download that starts in dfuIDLE, each to the end of its GETSTATUS polling.

        ``blocks``: (block number, data, what to call the block in an error);
        ``done(n)`` is called as each block's n bytes are finished.  One by
        one this is :meth:`dnload_and_wait` per block, as dfu-util does.

        On a backend with ``ctrl_transfers`` (bootkit's USB/IP client, where
        a round trip is a network's, not a bus's), a device that finished a
        block within its GETSTATUS - OK, dfuDNLOAD-IDLE and bwPollTimeout 0,
        nothing for the host to wait for (DFU 1.1 section 6.1.2) - gets the
        next blocks without waiting for their replies: up to AHEAD_BLOCKS
        DNLOAD + GETSTATUS pairs per round trip.  While it keeps finishing
        blocks at once, it sees exactly the requests, in the order, that
        the one-by-one host sends.  A device that answers so is an emulated
        one or programs RAM; real flash asks for a wait on the first block,
        and then nothing goes ahead.

        The first reply that is anything else is handled as one by one, and
        from then on nothing goes ahead: an error is that block's error (the
        DNLOADs behind it reach a device in dfuERROR, which refuses them and
        writes nothing).  A wait, with DNLOADs already sent behind it, means
        those reached a busy device, which refuses every request but
        GETSTATUS (DFU 1.1 A.2.4); so the host brings the device back to
        dfuIDLE and downloads the whole session again, one block at a time
        (plain DFU has no addresses: a download can only start over).
        """
        ahead = waited = False  # waited: the device asked for a wait once; nothing ahead from then on
        counted = 0  # blocks given to done(): not again after a restart
        i = 0
        while i < len(blocks):
            batch = self._ahead(blocks, i) if ahead else blocks[i:i + 1]
            for k, st in enumerate(self._dnload_batch(batch)):
                _, data, what = batch[k]
                if not _finished_at_once(st):
                    waited = True
                    if k < len(batch) - 1 and st.bStatus == Status.OK and st.bState != State.dfuERROR:
                        self.make_idle()  # the DNLOADs sent behind it reached a busy device: start over
                        i = 0
                        break
                    self.wait_while_busy(what, st)  # its own error, or nothing sent behind it: as one by one
                if i >= counted:
                    done(len(data))
                    counted = i + 1
                i += 1
            ahead = self._pipelined is not None and not waited

    def _dnload_batch(self, batch: list[tuple[int, bytes, str]]):
        """Each block's DNLOAD then GETSTATUS, as :meth:`dnload_status`; several blocks in one round trip."""
        if len(batch) == 1:
            yield self.dnload_status(*batch[0][:2])
            return
        results = self._pipelined(self.dev, [t for block, data, _ in batch for t in self._dnload_pair(block, data)])
        for k, (block, _, _) in enumerate(batch):
            yield self._dnload_reply(block, results[2 * k], results[2 * k + 1])

    def _ahead(self, blocks: list[tuple[int, bytes, str]], i: int) -> list[tuple[int, bytes, str]]:
        """The blocks from i on to send in one round trip: AHEAD_BLOCKS, at most AHEAD_BYTES (one at least)."""
        batch, size = [], 0
        for item in blocks[i:i + self.AHEAD_BLOCKS]:
            size += len(item[1])
            if batch and size > self.AHEAD_BYTES:
                break
            batch.append(item)
        return batch

    def upload(self, block: int, length: int) -> bytes:
        try:
            return self._in(UPLOAD, block & 0xFFFF, length)
        except usb.core.USBError as exc:
            raise self._failure(f"UPLOAD block {block}", exc) from None

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

    def _failure(self, what: str, exc: usb.core.USBError, status: bytes | None = None) -> DfuError:
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
        return self._failure(what, exc)

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


def _finished_at_once(st: StatusReply) -> bool:
    return st.bStatus == Status.OK and st.bState == State.dfuDNLOAD_IDLE and st.bwPollTimeout == 0


def wait_for(backend, *, vid=None, pid=None, serial=None, runtime: bool | None = False, timeout: float = 5.0):
    """Wait for a DFU interface to (re)appear, as dfu-util does after a detach."""
    deadline = time.monotonic() + timeout
    while True:
        for item in find_interfaces(backend, vid=vid, pid=pid, serial=serial):
            if runtime is None or item.runtime == runtime:
                return item
        if time.monotonic() >= deadline:
            raise DfuError("no DFU device came back after detach" if runtime is False else "no DFU device found")
        time.sleep(0.05)


def detach_to_dfu(item: DfuInterface, backend, timeout: float = 5.0) -> DfuInterface:
    """DETACH a run-time device and wait for its DFU-mode self (DFU 1.1 section 5.1)."""
    client = DfuClient(item)
    serial = item.serial
    client.detach(min(item.functional.wDetachTimeOut or 1000, 1000))
    if not item.functional.will_detach:
        try:
            item.device.reset()
        except usb.core.USBError:
            pass  # the device re-enumerated under us: that is the point
    return wait_for(backend, serial=serial, runtime=False, timeout=timeout)


# --------------------------------------------------------------------------
class _Dialect:
    name = "dfu"

    def __init__(self, client: DfuClient, chip: Chip | None, progress: bool | None = None):
        self.client = client
        self.chip = chip
        self.progress = progress
        self.steps: list[str] = []
        self.backend = None
        self.runtime_ids: tuple[int, int] | None = None

    def validate(self, image: Image, memory: str = "flash") -> None:
        raise NotImplementedError


class Dfu11(_Dialect):
    """Plain DFU 1.1: the image goes, in order, from the first application address."""

    name = "dfu"
    origin = 0

    def app_range(self, image: Image) -> tuple[int, int]:
        if self.chip is not None:
            return self.chip.layout().application_ranges("flash")[0]
        # no chip given: the image says where the application starts
        return image.start, image.start + (1 << 32)

    def validate(self, image: Image, memory: str = "flash") -> None:
        if memory != "flash":
            raise ImageRejected("plain DFU carries flash only")
        start, end = self.app_range(image)
        protected = self.chip.layout().protected if self.chip else ()
        check_ranges(image, [(start, end)], protected, self.chip.name if self.chip else "the device")

    def write(self, image: Image, memory: str = "flash") -> int:
        start, _ = self.app_range(image)
        self.origin = start  # where an UPLOAD of this device starts (plain DFU has no addresses)
        data = image.tobytes(start, image.end)
        c = self.client
        c.make_idle()
        size = c.transfer_size
        blocks = [(block, data[off:off + size], f"block {block} at 0x{start + off:X}")
                  for block, off in enumerate(range(0, len(data), size))]
        with progress_bar("download", len(data), self.progress) as bar:
            c.download_session(blocks, bar)
        self.steps.append(f"downloaded {len(data)} bytes from 0x{start:X}")
        return len(data)

    def read(self, start: int | None = None, length: int | None = None, memory: str = "flash") -> Image:
        c = self.client
        c.make_idle()
        app_start = self.app_range(Image())[0] if self.chip else self.origin
        limit = length if length is not None else 1 << 32
        out = c.upload_all(0, limit, self.progress, length)
        if len(out) >= limit and len(out) % c.transfer_size == 0:
            try:
                c.abort()
            except usb.core.USBError:
                pass
        return Image([(app_start, bytes(out))])

    def manifest(self) -> None:
        """Zero-length DNLOAD, then GETSTATUS through manifestation (DFU 1.1 section 7)."""
        c = self.client
        try:
            st = c.dnload_status(0, b"")
            while st.bState == State.dfuMANIFEST and c.functional.manifestation_tolerant:
                time.sleep(st.bwPollTimeout / 1000.0)
                st = c.get_status()
        except usb.core.USBError as exc:
            if gone(exc) or stalled(exc):
                self.steps.append("manifested (device reset)")
                self.gone = True
                return
            raise DfuError(f"manifestation: {exc}") from None
        if st.bStatus != Status.OK or st.bState == State.dfuERROR:
            raise DfuError(f"{STAYED}: manifestation failed, device reports {st.describe()}")
        self.steps.append("manifested")

    def leave(self) -> None:
        # Tolerant devices wait in dfuIDLE for the reset that starts the
        # application (dfu-util -R); others in dfuMANIFEST-WAIT-RESET.
        if getattr(self, "gone", False):
            return
        try:
            self.client.dev.reset()
        except usb.core.USBError as exc:
            if not (gone(exc) or stalled(exc)):
                raise DfuError(f"leaving DFU mode: {exc}") from None


class DfuSe(_Dialect):
    """ST DfuSe: erase the sectors the image touches, download at addresses, leave."""

    name = "dfuse"

    def __init__(self, client, chip, progress=None):
        super().__init__(client, chip, progress)
        name = client.target.alts[client.alt][1] if client.target.alts else ""
        try:
            self.mem_name, self.regions = parse_dfuse_layout(name)
        except ValueError:
            raise DfuError(f"alt {client.alt} has no DfuSe layout string (interface name {name!r})") from None

    def validate(self, image: Image, memory: str = "flash") -> None:
        writable = [(r.start, r.end) for r in self.regions if r.writable]
        protected = self.chip.layout().protected if self.chip else ()
        check_ranges(image, writable, protected, f"\"{self.mem_name}\"")

    def _command(self, payload: bytes, what: str) -> None:
        self.client.dnload_and_wait(0, payload, what)

    def set_address(self, address: int) -> None:
        self._command(struct.pack("<BI", DFUSE_SET_ADDRESS_POINTER, address), f"set address 0x{address:X}")

    def sectors_for(self, image: Image) -> list[int]:
        sectors = []
        for region in self.regions:
            for start, size in region.sector_bounds():
                if any(s < start + size and start < s + len(d) for s, d in image.segments):
                    sectors.append(start)
        return sectors

    def erase(self, image: Image) -> None:
        c = self.client
        c.make_idle()
        sectors = self.sectors_for(image)
        with progress_bar("erase", len(sectors), self.progress) as bar:
            for start in sectors:
                self._command(struct.pack("<BI", DFUSE_ERASE, start), f"erase sector 0x{start:X}")
                bar(1)
        self.steps.append(f"erased {len(sectors)} sectors")

    def write(self, image: Image, memory: str = "flash") -> int:
        c = self.client
        size = c.transfer_size
        total = 0
        with progress_bar("download", image.size, self.progress) as bar:
            for seg_start, data in image.segments:
                off = 0
                block = None
                while off < len(data):
                    # AN3156: data lands at (wBlockNum - 2) x wTransferSize + pointer,
                    # so one pointer serves a run of sequential blocks (dfu-util
                    # resets the pointer for every chunk: twice the transfers).
                    address = seg_start + off
                    if block is None or block > 0xFFFF or not c.target.described:
                        # without a functional descriptor wTransferSize is a guess:
                        # block 2 from a fresh pointer is right whatever the device uses
                        self.set_address(address)
                        block = 2
                    chunk = data[off:off + size]
                    c.dnload_and_wait(block, chunk, f"write at 0x{address:X}")
                    block += 1
                    off += len(chunk)
                    total += len(chunk)
                    bar(len(chunk))
        self.steps.append(f"downloaded {total} bytes")
        return total

    def read(self, start: int | None = None, length: int | None = None, memory: str = "flash") -> Image:
        c = self.client
        c.make_idle()
        region = self.regions[0]
        start = region.start if start is None else start
        length = (region.end - start) if length is None else length
        if c.target.described:
            self.set_address(start)
            c.abort()  # dfu-util: ABORT to dfuIDLE, then UPLOAD from block 2
            out = c.upload_all(2, length, self.progress)
        else:
            # wTransferSize unknown: block 2 from a fresh pointer for every chunk
            out = bytearray()
            with progress_bar("upload", length, self.progress) as bar:
                while len(out) < length:
                    c.abort()  # dfuUPLOAD-IDLE takes no DNLOAD: back to dfuIDLE first
                    self.set_address(start + len(out))
                    c.abort()
                    chunk = c.upload(2, min(c.transfer_size, length - len(out)))
                    if not chunk:
                        break
                    out += chunk
                    bar(len(chunk))
            out = bytes(out)
        try:
            c.abort()
        except usb.core.USBError:
            pass
        return Image([(start, bytes(out))])

    def leave(self, address: int | None = None) -> None:
        """Set the jump address, then a zero-length DNLOAD and the GETSTATUS that runs it
        (AN3156 6.3.3; dfu-util dfuse_dnload_done).  The device answers that GETSTATUS
        with dfuMANIFEST and resets, or with its error: the latter is the flash's failure
        (e.g. errFIRMWARE: no application to start) and is reported as such."""
        c = self.client
        c.make_idle()
        self.set_address(address if address is not None else self.regions[0].start)
        try:
            c._out(DNLOAD, 2)  # dfu-util: zero-length DNLOAD with wBlockNum 2
            st = c.get_status()  # dfuMANIFEST: the device leaves now
        except usb.core.USBError as exc:
            if gone(exc):
                return  # it reset under the request: what came back is observed next
            raise c.refused("leaving DFU mode", exc) from None
        if st.bStatus != Status.OK or st.bState == State.dfuERROR:
            raise DfuError(f"{STAYED}: device reports {st.describe()}")


class Flip(_Dialect):
    """Atmel FLIP (dfu-programmer's protocol against LUFA's DFU bootloader)."""

    name = "flip"
    BLOCK = 1024  # dfu-programmer's ATMEL_MAX_TRANSFER_SIZE

    def __init__(self, client, chip, progress=None):
        if chip is None:
            names = [n for n, p in FLIP_PIDS.items() if p == client.target.pid]
            for n in names:
                try:
                    chip = get_chip(n)
                    break
                except KeyError:
                    continue
        if chip is None:
            raise DfuError(f"unknown FLIP product id 0x{client.target.pid:04X}: give the chip with --chip")
        super().__init__(client, chip, progress)

    def _cmd(self, payload: bytes, what: str) -> None:
        st = self.client.dnload_status(0, payload)
        if st.bStatus != Status.OK:
            raise DfuError(f"{what}: device reports {st.describe()}")

    def validate(self, image: Image, memory: str = "flash") -> None:
        layout = self.chip.layout()
        if memory == "eeprom":
            check_ranges(image, [(0, self.chip.eeprom_size)], (), f"{self.chip.name} EEPROM")
        else:
            check_ranges(image, layout.application_ranges("flash"), layout.protected, self.chip.name)

    def signature(self) -> bytes:
        out = []
        for index in (0x31, 0x60, 0x61):
            self._cmd(bytes((FLIP_READ_COMMAND, 0x01, index)), "read signature")
            out.append(self.client.upload(0, 1)[0])
        return bytes(out)

    def erase(self, image: Image | None = None) -> None:
        self.client.make_idle()
        self._cmd(bytes((FLIP_WRITE_COMMAND, 0x00, 0xFF)), "chip erase")
        self.steps.append("chip erased")

    def _select_page(self, page: int) -> None:
        self._cmd(bytes((FLIP_CHANGE_BASE_ADDR, 0x03, 0x00, page)), f"select 64 KiB page {page}")

    def _blocks(self, image: Image, memory: str = "flash"):
        """The (address, data) program blocks: at most BLOCK bytes, none across a 64 KiB page.

        Flash goes in whole flash pages, as dfu-programmer sends it from 0.7.0 on: LUFA's
        bootloader erases the page a block starts in and each further page it reaches
        (BootloaderDFU.c ProcessMemProgCommand / BootloaderAPI_ErasePage) and writes words,
        so a block that started mid-page would wipe what an earlier block put in that page,
        and an odd address or length would shift or drop a byte.  Gaps inside a page go
        as 0xFF: the chip was erased first, and 0xFF programs nothing.  EEPROM is written
        byte by byte (eeprom_update_byte) and goes as it is.
        """
        segments = image.segments
        if memory == "flash":
            page = max(self.chip.layout().flash.write_size, 2)
            runs: list[list[int]] = []
            for s, d in image.segments:
                lo, hi = s - s % page, -(-(s + len(d)) // page) * page
                if runs and lo <= runs[-1][1]:
                    runs[-1][1] = max(runs[-1][1], hi)
                else:
                    runs.append([lo, hi])
            segments = [(lo, image.tobytes(lo, hi)) for lo, hi in runs]
        for seg_start, data in segments:
            off = 0
            while off < len(data):
                address = seg_start + off
                room = min(self.BLOCK, 0x10000 - (address & 0xFFFF), len(data) - off)
                yield address, data[off:off + room]
                off += room

    def write(self, image: Image, memory: str = "flash") -> int:
        mem = 0x00 if memory == "flash" else 0x01
        page = None
        total = 0
        with progress_bar("download", image.size, self.progress) as bar:
            for address, chunk in self._blocks(image, memory):
                if mem == 0 and address >> 16 != page:
                    page = address >> 16
                    self._select_page(page)
                start = address & 0xFFFF
                end = start + len(chunk) - 1
                header = bytes((FLIP_PROG_START, mem, start >> 8, start & 0xFF, end >> 8, end & 0xFF))
                payload = (header + bytes(FLIP_HEADER_SIZE - len(header)) + bytes(start % FLIP_CONTROL_SIZE)
                           + chunk + bytes(FLIP_SUFFIX_SIZE))
                self._cmd(payload, f"program 0x{address:X}")
                done = image.crop(address, address + len(chunk)).size  # the image's bytes, not the 0xFF filling
                total += done
                bar(done)
        self.steps.append(f"programmed {total} bytes of {memory}")
        return total

    def read_range(self, address: int, length: int, memory: str = "flash") -> bytes:
        c = self.client
        out = bytearray()
        page = None
        code = 0x00 if memory == "flash" else 0x02
        while len(out) < length:
            a = address + len(out)
            if code == 0 and a >> 16 != page:
                page = a >> 16
                self._select_page(page)
            n = min(self.BLOCK, length - len(out), 0x10000 - (a & 0xFFFF))
            s, e = a & 0xFFFF, (a & 0xFFFF) + n - 1
            self._cmd(bytes((FLIP_DISPLAY_DATA, code, s >> 8, s & 0xFF, e >> 8, e & 0xFF)), f"read 0x{a:X}")
            chunk = c.upload(0, n)
            if not chunk:
                raise DfuError(f"read 0x{a:X}: the device returned no data")
            out += chunk
        return bytes(out)

    def read(self, start: int | None = None, length: int | None = None, memory: str = "flash") -> Image:
        self.client.make_idle()
        if memory == "eeprom":
            start, length = start or 0, length or self.chip.eeprom_size
        else:
            app = self.chip.layout().application_ranges("flash")[0]
            start = app[0] if start is None else start
            length = (app[1] - start) if length is None else length
        with progress_bar("upload", length, self.progress) as bar:
            data = self.read_range(start, length, memory)
            bar(len(data))
        return Image([(start, data)])

    def verify(self, image: Image, memory: str = "flash") -> None:
        phase("verify")
        for seg_start, data in image.segments:
            back = self.read_range(seg_start, len(data), memory)
            if back != data:
                bad = next(i for i in range(len(data)) if back[i] != data[i])
                raise DfuError(f"verify failed at 0x{seg_start + bad:X}: wrote 0x{data[bad]:02X}, "
                               f"read 0x{back[bad]:02X}")

    def leave(self) -> None:
        """dfu-programmer's launch: 04 03 00 (start via watchdog), its status, then the
        zero-length DNLOAD on which LUFA leaves (BootloaderDFU.c: WaitForExit).  LUFA starts
        nothing when the first word of flash is erased: the device comes back as itself,
        which :func:`observe_leave` sees."""
        c = self.client
        c.make_idle()
        try:
            c._out(DNLOAD, 0, bytes((FLIP_WRITE_COMMAND, 0x03, 0x00)))
            st = c.get_status()
        except usb.core.USBError as exc:
            if gone(exc):
                return
            raise c.refused("starting the application", exc) from None
        if st.bStatus != Status.OK or st.bState == State.dfuERROR:
            raise DfuError(f"{STAYED}: device reports {st.describe()}")
        try:
            c._out(DNLOAD, 0)
        except usb.core.USBError as exc:
            if not (gone(exc) or stalled(exc)):
                raise c._failure("starting the application", exc) from None


DIALECT_CLASSES = {"dfu": Dfu11, "dfuse": DfuSe, "flip": Flip}


def open_dialect(backend=None, *, vid=None, pid=None, serial=None, dialect=None, alt=None, chip=None,
                 progress=None, detach_timeout: float = 5.0, transfer_size: int | None = None):
    """Find the device (detaching a run-time one first) and return a dialect client."""
    items = find_interfaces(backend, vid=vid, pid=pid, serial=serial)
    if not items:
        sel = " ".join(x for x in (f"{vid:04x}:{pid:04x}" if vid is not None and pid is not None else "",
                                  f"serial {serial}" if serial else "") if x)
        raise DfuError(f"no DFU device found{(' matching ' + sel) if sel else ''}")
    dfu_mode = [i for i in items if not i.runtime]
    runtime_ids = None
    if dfu_mode:
        item = dfu_mode[0]
    else:
        runtime_ids = (items[0].vid, items[0].pid)
        item = detach_to_dfu(items[0], backend, detach_timeout)
    dialect = dialect or item.guess_dialect()
    if dialect not in DIALECT_CLASSES:
        raise DfuError(f"unknown DFU dialect {dialect!r}")
    client = DfuClient(item, alt=alt, transfer_size=transfer_size)
    if isinstance(chip, str):
        chip = get_chip(chip)
    d = DIALECT_CLASSES[dialect](client, chip, progress)
    d.backend = backend
    d.runtime_ids = runtime_ids  # the application's ids when it was detached here (dfu-util accepts either)
    return d


def check_suffix_ids(image: Image, d: _Dialect, force: bool = False) -> None:
    """Refuse a file whose DFU suffix names another device, as dfu-util does ("Error: File ID
    %04x:%04x does not match device"; 0xFFFF matches any, and either the run-time or the
    DFU-mode ids will do: dfu-util main.c).  ``force`` flashes it anyway."""
    origin = getattr(image, "origin", None)
    ids = getattr(origin, "dfu_ids", None)
    if ids is None or force:
        return
    fv, fp = ids
    device = [(d.client.target.vid, d.client.target.pid)]
    if d.runtime_ids is not None:
        device.append(d.runtime_ids)
    if any(fv in (0xFFFF, v) and fp in (0xFFFF, p) for v, p in device):
        return
    names = " or ".join(f"{v:04x}:{p:04x}" for v, p in device)
    raise ImageRejected(f"DFU suffix ID {fv:04x}:{fp:04x} does not match the device ({names}); "
                        f"--force flashes it anyway")


def _in_dfu_mode(dev) -> bool:
    try:
        return any(intf.bInterfaceClass == DFU_CLASS and intf.bInterfaceSubClass == DFU_SUBCLASS
                   and intf.bInterfaceProtocol != PROTOCOL_RUNTIME for cfg in dev for intf in cfg)
    except (usb.core.USBError, ValueError):
        return False


def observe_leave(d: _Dialect, before: dict | None, image: Image, timeout: float = LEAVE_WAIT,
                  memory: str = "flash") -> str:
    """After the leave request: watch the bus and say what happened (issue 16 item 3).

    ``before`` is what was on the bus while the bootloader was there.  The bootloader
    going and a device that was not there before appearing is the application
    ("application started (came back as VVVV:PPPP)"), unless that device is in DFU
    mode with the bootloader's ids: then the bootloader kept control (HostError).
    Nothing new within ``timeout`` s: "left the bootloader (not seen again ...)".
    The bootloader still there after ``timeout`` s: it did not leave (HostError).
    """
    out = LeaveWatch(UsbLook(d.backend, d.client.dev, before, bootloader=_in_dfu_mode), wait=timeout).run()
    if out.seen == CAME_BACK and out.arrival is not None:
        raise DfuError(f"{STAYED}: {_why_bootloader(d, image if memory == 'flash' else None, out.arrival.device)}")
    if out.stayed:
        raise DfuError(f"{STAYED}: it is still there {timeout:g} s after the leave request")
    d.steps.append(out.step)
    return out.step


def _why_bootloader(d: _Dialect, image: Image | None, dev) -> str:
    """Why a bootloader that was told to leave came back: what the host knows of it."""
    if d.chip is not None and image is not None:
        first = app_first_address(d.chip)
        word = image.crop(first, first + 2)
        if word.size == 2 and word.tobytes(first, first + 2) == b"\xff\xff":
            # LUFA and Caterina start the application only when pgm_read_word(0) != 0xFFFF
            return "first word of flash is erased: the bootloader kept control"
    return f"it came back in DFU mode as {dev.idVendor:04X}:{dev.idProduct:04X}"


def flash(image: Image, backend=None, *, vid=None, pid=None, serial=None, dialect=None, alt=None, chip=None,
          memory: str = "flash", verify: bool = True, leave: bool = True, address: int | None = None,
          progress=None, transfer_size: int | None = None, force: bool = False,
          leave_timeout: float = LEAVE_WAIT) -> FlashResult:
    """Validate, erase, download, verify, leave, and watch what the device does.

    Nothing is erased unless the image fits, is for this device (DFU suffix ids,
    :func:`bootkit.classes.common.preflight`) and the chip is known where needed.
    ``force`` flashes a file made for another device (suffix ids, UF2 family);
    it never lifts the bootloader region or AVR's first-word check.
    """
    t0 = time.perf_counter()
    d = open_dialect(backend, vid=vid, pid=pid, serial=serial, dialect=dialect, alt=alt, chip=chip,
                     progress=progress, transfer_size=transfer_size)
    if memory == "eeprom" and isinstance(d, Flip):
        image = image.shifted(-EEPROM_BASE) if image.start >= EEPROM_BASE else image
    d.validate(image, memory)
    check_suffix_ids(image, d, force)
    preflight(image, d.chip, force=force, memory=memory)
    before = bus_snapshot(backend)
    if isinstance(d, (DfuSe, Flip)) and memory == "flash":
        d.erase(image)
    n = d.write(image, memory)
    if isinstance(d, Dfu11):
        d.manifest()  # plain DFU: an upload is only possible after the download ended
    verified = False
    can_verify = d.client.functional.can_upload and not getattr(d, "gone", False) and (
        not isinstance(d, Dfu11) or d.client.functional.manifestation_tolerant)
    if verify and can_verify:
        if isinstance(d, Flip):
            d.verify(image, memory)
        else:
            if isinstance(d, DfuSe):
                back = d.read(image.start, image.end - image.start)
            else:
                back = d.read(length=image.end - d.app_range(image)[0])
            for seg_start, data in image.segments:
                got = back.crop(seg_start, seg_start + len(data))
                if got.size != len(data):
                    # a short read-back: what was not read is not verified (no 0xFF filling in)
                    raise DfuError(f"verify failed in 0x{seg_start:X}-0x{seg_start + len(data) - 1:X}: "
                                   f"the device returned {got.size} of its {len(data)} bytes")
                if got.tobytes(seg_start, seg_start + len(data)) != data:
                    raise DfuError(f"verify failed in 0x{seg_start:X}-0x{seg_start + len(data) - 1:X}")
        verified = True
        d.steps.append("verified")
    if leave:
        if isinstance(d, DfuSe):
            d.leave(address)
        else:
            d.leave()
        observe_leave(d, before, image, leave_timeout, memory)
    return FlashResult(d.name, n, time.perf_counter() - t0, verified, d.steps)


def read(backend=None, *, vid=None, pid=None, serial=None, dialect=None, alt=None, chip=None,
         memory: str = "flash", start: int | None = None, length: int | None = None, progress=None,
         transfer_size: int | None = None) -> Image:
    d = open_dialect(backend, vid=vid, pid=pid, serial=serial, dialect=dialect, alt=alt, chip=chip,
                     progress=progress, transfer_size=transfer_size)
    return d.read(start, length, memory)
