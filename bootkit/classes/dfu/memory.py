"""A DfuSe device as a memory back-end: our own DFU host client behind the MemoryIO
contract, so any personality can front an STM32's DfuSe ROM (issue 23).

Registered as the ``usb.dfu`` adapter of the ``bootkit.memories`` group; a
``--target usb:VID:PID`` or ``usbip://HOST:PORT`` that selects a DfuSe device gets one.

How each MemoryIO operation maps onto DfuSe (ST AN3156):

- ``layout``: the device's own DfuSe layout string (its alternate setting's name), not
  our chip database; the front chip's bootloader ranges are added as protected, and
  the device refuses its own (system memory is ROM).
- ``erase``: the Erase command on the sector holding the address, sent by the writer
  thread in order with the writes (below): its failure is the error of the next call.
- ``program``: gathered, then sent as one Set Address and its run of wTransferSize
  blocks (AN3156: block N lands at (N - 2) x wTransferSize + the pointer), several
  blocks per round trip where the backend can, as a direct flash sends them
  (DfuClient.download_session).  A writer thread sends one batch of ``hold`` bytes
  (what one round trip carries ahead: 32 KiB at wTransferSize 2048) while the next is
  gathered, so both USB/IP links work side by side; at most three batches are held
  whatever the image's size, and a front whose host runs ahead waits (flow control).
  Everything is sent before any other operation, so the order the front asked for is
  the order on the bus.  The front answers its host's block before the back-end has
  it (as a device's write buffer does): a failure is the error of a later block, and
  the update's outcome (manifest) waits for all of it.
- ``read``: Set Address + UPLOAD; READ_AHEAD transfers read at once and kept until the
  next change (a UF2 drive reads CURRENT.UF2 256 bytes at a time), the next ones read
  ahead by the writer thread while the front serves these.  On a device that finishes
  commands busy for no time (DfuClient.ahead_polls), Set Address, ABORT, the UPLOADs and
  ABORT go in one round trip, and so do the leave's requests.
- ``manifest``: the DfuSe leave (zero-length DNLOAD and the GETSTATUS that runs it).
  ``app_valid`` is set only when the device answered that GETSTATUS with OK; the
  device then resets, and the next operation finds it again (detaching its run-time
  self, as dfu-util does).

An Atmel FLIP device (LUFA's DFU bootloader, dfu-programmer's protocol) is a
:class:`FlipMemory`: the layout is the chip its product id names (FLIP has no layout
string), the first erase of an update is FLIP's chip erase (the only erase it has, and
what dfu-programmer does first), flash goes a whole page per program command (LUFA
erases each page it writes: BootloaderDFU.c ProcessMemProgCommand), reads by Display
Data + UPLOAD, manifest by FLIP's start-application command.

Every failure of the device or the exchange becomes a :class:`BackendFault` (write,
erase or plain), which the front maps to its own protocol's error.
"""

from __future__ import annotations

import queue
import struct
import threading
import time
from typing import TYPE_CHECKING, Any

import usb.core
import usb.util

from ...memory.backends import BackendEraseFault, BackendFault, BackendWriteFault, UsbSelection
from ...memory.core import AddressFault, FirmwareFault, Layout, ProtectedFault, Region, Timing, WriteFault
from ..common import HostError
from .client import DfuError
from .dialects import DfuSe, Flip
from .download import IN_CLASS_INTF, OUT_CLASS_INTF, busy_for_no_time, finished_at_once
from .protocol import (
    ABORT,
    DFUSE_ERASE,
    DFUSE_SET_ADDRESS_POINTER,
    DNLOAD,
    GETSTATUS,
    UPLOAD,
    State,
    Status,
    StatusReply,
)

if TYPE_CHECKING:
    from ...memory.chips import Chip

#: seconds to wait for the device to come back after its leave (ST's ROM resets into the
#: application, our emulator re-enumerates at once); generous: it is a deadline, not a delay
REOPEN_WAIT = 10.0


def usb_memory(backend, sel: UsbSelection, chip: Chip | None = None) -> DfuseMemory | FlipMemory | None:
    """The ``usb.dfu`` adapter: a FlipMemory for a FLIP device, else a DfuseMemory (in DFU mode,
    or a run-time interface that detaches into it; a plain DFU 1.1 device has no layout string
    and is refused there), None when the device has no DFU interface."""
    from .finder import find_interfaces

    try:
        items = find_interfaces(backend, vid=sel.vid, pid=sel.pid, serial=sel.serial)
    except usb.core.USBError as exc:
        raise OSError(f"cannot list the devices: {exc}") from None
    if not items:
        return None
    if items[0].guess_dialect() == "flip":
        return FlipMemory(backend, sel, chip)
    return DfuseMemory(backend, sel, chip)


class DfuseMemory:
    """MemoryIO over a DfuSe device reached through ``backend`` (pyusb)."""

    #: transfers read at once and kept until the next change (a UF2 drive reads 256 bytes a block)
    READ_AHEAD = 16

    def __init__(self, backend, sel: UsbSelection, chip: Chip | None = None):
        self.backend = backend
        self.sel = sel
        self.chip = chip
        self.timing = Timing()  # the device waits itself: every call returns when it is done
        self.read_protected = False
        #: the application is valid only once this memory's own manifest was confirmed
        self.app_valid = False
        self._d: DfuSe | None = None
        self._leaving = False  # the device was told to leave: it will be back
        self._d = self._open()
        regions = []
        for i, r in enumerate(self._d.regions):
            # the first region is the flash; others (option bytes) keep their flags
            regions.append(Region(r.name, r.start, r.sectors, kind="flash" if i == 0 else "option",
                                  readable=r.readable, erasable=r.erasable, writable=r.writable))
        protected = chip.layout().protected if chip is not None else ()
        self.layout = Layout(tuple(regions), protected)
        if chip is not None:
            flash = self.layout.flash
            if not (flash.start <= chip.flash_start and chip.flash_end <= flash.end):
                raise ValueError(f"{chip.name}'s flash 0x{chip.flash_start:X}-0x{chip.flash_end - 1:X} is not "
                                 f"within the device's \"{flash.name}\" 0x{flash.start:X}-0x{flash.end - 1:X}")
        self.transfer_size = self._d.client.transfer_size
        #: the most bytes held before they are sent: what one round trip carries ahead in a
        #: direct flash (DfuClient.AHEAD_BLOCKS blocks, AHEAD_BYTES at most); whatever the
        #: image's size, never more (bounded memory)
        self.hold = max(self.transfer_size, min(self._d.client.AHEAD_BLOCKS * self.transfer_size,
                                                self._d.client.AHEAD_BYTES) // self.transfer_size * self.transfer_size)
        self._pending = bytearray()  # programmed, not yet sent: at most ``hold`` bytes
        self._pending_at = 0
        self._last: tuple[int, bytes] = (0, b"")  # the last block the device accepted
        self._cache: tuple[int, bytes] = (0, b"")  # read ahead, until the next change
        # jobs of the writer thread: ("write", address, data), ("read", generation, address, n)
        self._queue: queue.Queue[tuple[Any, ...] | None] = queue.Queue(maxsize=1)
        self._writer: threading.Thread | None = None
        self._lock = threading.Lock()
        self._writes_out = 0  # write jobs given to the writer and not done
        self._generation = 0  # bumped by every change: a read ahead of an older one is dropped
        self._ahead: tuple[int, bytes] | None = None  # what the writer read ahead
        self._ahead_at: int | None = None
        self._failed: BackendFault | None = None  # the writer's failure, raised at the next call
        #: (address, block): where the run of blocks from the device's address pointer goes on
        #: (AN3156: the pointer is set once per contiguous run); None: set it again
        self._run: tuple[int, int] | None = None

    # ------------------------------------------------------------------
    def _open(self) -> DfuSe:
        from .host import open_dialect

        try:
            d = open_dialect(self.backend, vid=self.sel.vid, pid=self.sel.pid, serial=self.sel.serial,
                             dialect="dfuse", chip=None, progress=False)
        except (HostError, usb.core.USBError, OSError) as exc:
            # OSError: a usbip:// target whose server is gone refuses the connection (ECONNREFUSED)
            raise BackendFault(f"DfuSe target: {exc}") from None
        assert isinstance(d, DfuSe)
        return d

    def _device(self) -> DfuSe:
        if self._d is None:
            # after the leave the device resets (into its application, or its ROM again):
            # wait for it; after a failure, one attempt (a dead target must not hold the front)
            deadline = time.monotonic() + (REOPEN_WAIT if self._leaving else 0.0)
            while True:
                try:
                    self._d = self._open()
                    self._leaving = False
                    break
                except BackendFault:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        return self._d

    def _lost(self, exc: Exception, what: str, fault: type[BackendFault] = BackendFault) -> BackendFault:
        """The device failed: forget it (the next operation finds it again) and say what."""
        self._forget()
        self.app_valid = False
        return fault(f"DfuSe target: {what}: {exc}")

    def _forget(self) -> None:
        self._run = None
        d, self._d = self._d, None
        if d is not None:
            try:
                usb.util.dispose_resources(d.client.dev)
            except (usb.core.USBError, OSError, ValueError):
                pass

    # ------------------------------------------------------------------
    # MemoryIO
    def is_blank(self) -> bool:
        if self.app_valid:
            # checked before the confirmed manifest, and nothing changed since: asking again
            # would bring a target that now runs its application back to its bootloader
            return False
        start = self.layout.application_ranges()[0][0]
        # one transfer, nothing read ahead: the leave that usually follows would wait for it
        return self._read(start, 2, ahead=False) == b"\xff\xff"

    def read(self, address: int, length: int) -> bytes:
        return self._read(address, length, ahead=True)

    def _read(self, address: int, length: int, ahead: bool) -> bytes:
        if length == 0:
            return b""
        region = self._region(address, length)
        if not region.readable:
            raise WriteFault(f"{region.name} is not readable", address)
        if self._pending or self._writes_out:
            self.flush()  # what was programmed is on the device before it is read
        for looked in (False, True):
            for at, cached in (self._cache, self._ahead or (0, b"")):
                if at <= address and address + length <= at + len(cached):
                    self._cache = (at, cached)
                    if ahead:  # the next ones while the front serves these (two held: bounded)
                        self._read_ahead(region, at + len(cached))
                    return cached[address - at:address - at + length]
            if not looked:
                # a read ahead still under way: the device is this thread's again after it, and
                # what it read may be what is asked for (the front overtook it)
                self.flush()
        want = min(max(length, (self.READ_AHEAD if ahead else 1) * self.transfer_size), region.end - address)
        d = self._device()
        try:
            data = self._upload(d, address, want)
        except (HostError, usb.core.USBError) as exc:
            raise self._lost(exc, f"read at 0x{address:X}") from None
        if len(data) < length:
            raise BackendFault(f"DfuSe target: read at 0x{address:X}: {len(data)} of {want} bytes came back",
                               address)
        self._cache = (address, data)
        if ahead:
            self._read_ahead(region, address + len(data))
        return data[:length]

    def _read_ahead(self, region: Region, address: int) -> None:
        """Have the writer thread read the next READ_AHEAD transfers while the front serves
        these (a host reading CURRENT.UF2 or uploading reads on in order): started as soon as
        the front serves from the ones before, so the next ones are there when it gets to them."""
        if address >= region.end or self._ahead_at == address:
            return
        self._ahead_at = address
        self._ensure_writer()
        try:
            self._queue.put_nowait(("read", self._generation, address,
                                    min(self.READ_AHEAD * self.transfer_size, region.end - address)))
        except queue.Full:
            self._ahead_at = None

    def _upload(self, d: DfuSe, address: int, want: int) -> bytes:
        """``want`` bytes from ``address``: Set Address, ABORT to dfuIDLE, UPLOAD from block 2
        (dfu-util's DfuSe upload); on a backend that can, AHEAD_BLOCKS UPLOADs per round trip
        (the device answers them in order, as one by one), and on a device known to finish
        commands busy for no time the Set Address and ABORTs in the same round trip."""
        c = d.client
        self._run = None  # the pointer moves to what is read
        if not c.sequential_blocks or c.pipelined is None:
            got = d.read(address, want)
            return got.tobytes(address, address + want) if got.size == want else b""
        if c.ahead_polls:
            ahead = self._upload_ahead(c, address, want)
            if ahead is not None:
                return ahead
        c.make_idle()
        d.set_address(address)
        c.abort()
        out = bytearray()
        block = 2
        size = self.transfer_size
        while len(out) < want:
            lengths: list[int] = []
            left = want - len(out)
            while left > 0 and len(lengths) < c.AHEAD_BLOCKS:
                lengths.append(min(size, left))
                left -= lengths[-1]
            replies = c.pipelined(c.dev, [(IN_CLASS_INTF, UPLOAD, (block + k) & 0xFFFF, c.intf, n, c.timeout)
                                          for k, n in enumerate(lengths)])
            for n, reply in zip(lengths, replies):
                if isinstance(reply, usb.core.USBError):
                    raise reply
                out += bytes(reply)
                if len(reply) < n:  # a short frame ends the upload (DFU 1.1 section 6.2)
                    c.abort()
                    return bytes(out)
            block += len(lengths)
        c.abort()
        return bytes(out)

    def _set_address_requests(self, c, address: int) -> list[tuple]:
        """Set Address and the GETSTATUS requests it takes (``ahead_polls``: the device finishes
        commands busy for no time), for one round trip with what follows."""
        assert c.ahead_polls
        return ([(OUT_CLASS_INTF, DNLOAD, 0, c.intf, struct.pack("<BI", DFUSE_SET_ADDRESS_POINTER, address),
                  c.timeout)] + [(IN_CLASS_INTF, GETSTATUS, 0, c.intf, 6, c.timeout)] * c.ahead_polls)

    @staticmethod
    def _address_set(replies: list) -> bool:
        """The Set Address requests' replies say the pointer was set, as one by one they would:
        accepted, then dfuDNBUSY for no time (when two GETSTATUS) and OK in dfuDNLOAD-IDLE."""
        if any(isinstance(r, usb.core.USBError) for r in replies):
            return False
        states = [StatusReply.unpack(bytes(r)) for r in replies[1:]]
        return finished_at_once(states[-1]) and all(busy_for_no_time(st) for st in states[:-1])

    def _upload_ahead(self, c, address: int, want: int) -> bytes | None:
        """:meth:`_upload` in one round trip per AHEAD_BLOCKS transfers, Set Address and the
        ABORTs included, on a device known to finish commands busy for no time (the requests
        the one-by-one host sends, in order).  None when the Set Address did not go as it
        does one by one: the device is brought to dfuIDLE and the caller reads one by one."""
        abort = (OUT_CLASS_INTF, ABORT, 0, c.intf, None, c.timeout)
        first = self._set_address_requests(c, address) + [abort]
        size = self.transfer_size
        lengths = [min(size, want - off) for off in range(0, want, size)]
        out = bytearray()
        i = 0
        while i < len(lengths):
            batch = lengths[i:i + c.AHEAD_BLOCKS]
            last = i + len(batch) == len(lengths)
            requests = first + [(IN_CLASS_INTF, UPLOAD, (2 + i + k) & 0xFFFF, c.intf, n, c.timeout)
                                for k, n in enumerate(batch)] + ([abort] if last else [])
            replies = c.pipelined(c.dev, requests)
            if first:
                if not self._address_set(replies[:len(first) - 1]) or isinstance(replies[len(first) - 1],
                                                                                  usb.core.USBError):
                    c.make_idle()
                    return None
                replies, first = replies[len(first):], []
            for n, reply in zip(batch, replies):
                if isinstance(reply, usb.core.USBError):
                    raise reply
                out += bytes(reply)
                if len(reply) < n:  # a short frame ends the upload (DFU 1.1 section 6.2)
                    c.make_idle()  # what was sent behind it may have started another
                    return bytes(out)
            if last and isinstance(replies[-1], usb.core.USBError):
                raise replies[-1]
            i += len(batch)
        return bytes(out)

    def peek(self, address: int, length: int) -> bytes:
        """What the device was last given at ``address`` when that is still at hand (the
        pending transfer, or the last one it accepted with status OK), else a read.  A UF2
        drive checks every block it programmed: an UPLOAD per 256 bytes would double the
        traffic for nothing the host sees."""
        last = self._last
        for at, data in ((self._pending_at, bytes(self._pending)), last):
            if at <= address and address + length <= at + len(data):
                return data[address - at:address - at + length]
        return self.read(address, length)

    def erase(self, address: int) -> float:
        region = self._region(address, 1)
        start, size = region.sector_at(address)
        if self.layout.is_protected(start, start + size):
            raise ProtectedFault(f"sector 0x{start:X} holds the bootloader", address)
        self._changed()
        self._raise_failed()
        self._hand_off()  # what was programmed before goes first: the order the front asked for
        self._give(("erase", start))
        return 0.0

    def _erase_sector(self, start: int) -> None:
        """The Erase command, in one round trip with its GETSTATUS where the device finishes
        commands busy for no time (DfuClient.download_session), as one by one otherwise."""
        d = self._device()
        self._run = None  # ST's usbd_dfu.c sets its data pointer from an Erase command's address too
        try:
            d.client.download_session([(0, struct.pack("<BI", DFUSE_ERASE, start), f"erase sector 0x{start:X}")])
        except (HostError, usb.core.USBError) as exc:
            raise self._lost(exc, f"erase 0x{start:X}", BackendEraseFault) from None

    def erase_all(self) -> float:
        """Every sector of the flash outside the protected ranges, one Erase each (never
        DfuSe's mass erase: it would not spare a bootloader kept in flash)."""
        region = self.layout.flash
        for start, end in self.layout.application_ranges():
            for s, size in region.sector_bounds():
                if start <= s and s + size <= end:
                    self.erase(s)
        self.read_protected = False
        return 0.0

    def program(self, address: int, data: bytes) -> float:
        if not data:
            return 0.0
        region = self._region(address, len(data))
        if not region.writable:
            raise WriteFault(f"{region.name} is read-only", address)
        if self.layout.is_protected(address, address + len(data)):
            raise ProtectedFault(f"0x{address:X}+{len(data)} reaches into the bootloader region", address)
        self._changed()
        self._raise_failed()
        if self._pending and (address != self._pending_at + len(self._pending)
                              or len(self._pending) + len(data) > self.hold):
            self._hand_off()
        if not self._pending:
            self._pending_at = address
        for off in range(0, len(data), self.hold):  # more than we hold: a bounded piece at a time
            piece = data[off:off + self.hold]
            if off:
                self._hand_off()
                self._pending_at = address + off
            self._pending += piece
        if len(self._pending) >= self.hold:
            self._hand_off()
        return 0.0

    def _hand_off(self) -> None:
        """Give what is pending to the writer thread, which sends it while the front takes
        the next blocks from its host (the two USB/IP links work side by side).  One batch
        waits while one is being sent: at most 3 x ``hold`` bytes held in all."""
        if not self._pending:
            return
        batch = (self._pending_at, bytes(self._pending))
        self._pending.clear()
        self._give(("write", *batch))
        self._last = batch

    def _give(self, job: tuple) -> None:
        """A write or erase job to the writer thread; blocks while the writer is behind (flow
        control toward the front's host: one job waits while one runs)."""
        self._ensure_writer()
        with self._lock:
            self._writes_out += 1
        self._queue.put(job)

    def _ensure_writer(self) -> None:
        if self._writer is None:
            self._writer = threading.Thread(target=self._write_loop, name="dfuse-back-end writer", daemon=True)
            self._writer.start()

    def _write_loop(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is None:
                    return
                if job[0] in ("write", "erase"):
                    try:
                        if self._failed is None:  # after a failure nothing more goes (the host hears of it first)
                            if job[0] == "write":
                                self._write_batch(job[1], job[2])
                            else:
                                self._erase_sector(job[1])
                    finally:
                        with self._lock:
                            self._writes_out -= 1
                elif job[1] == self._generation and self._failed is None:  # a read ahead, still wanted
                    try:
                        data = self._upload(self._device(), job[2], job[3])
                        with self._lock:  # kept only if nothing changed while it was read
                            if job[1] == self._generation:
                                self._ahead = (job[2], data)
                    except (HostError, usb.core.USBError, BackendFault):
                        self._forget()  # dropped: the read that needs it tries again and reports
            except BackendFault as exc:
                self._failed = exc
            finally:
                self._queue.task_done()

    def _raise_failed(self) -> None:
        """The writer's failure, once.  The jobs queued behind it are dropped first (the writer
        skips them while it stands): sent later they would meet the dead target again, and
        that stale failure would be the error of the next update's first call."""
        if self._failed is None:
            return
        self._queue.join()
        failed, self._failed = self._failed, None
        self._pending.clear()
        raise failed

    def flush(self) -> None:
        """Everything programmed or erased is on the device (or the BackendWriteFault /
        BackendEraseFault that stopped it)."""
        self._hand_off()
        self._queue.join()
        self._raise_failed()

    def _write_batch(self, at: int, data: bytes) -> None:
        """The batch's wTransferSize blocks from the device's address pointer, several per round
        trip where the backend can (DfuClient.download_session, as a direct flash sends them);
        a Set Address first unless the batch goes on from where the last one ended."""
        d = self._device()
        c = d.client
        size = self.transfer_size
        run, self._run = self._run, None
        try:
            if c.sequential_blocks:
                # AN3156: block N lands at (N - 2) x wTransferSize + the pointer, so the pointer
                # is set once per contiguous run (as DfuSe.write does).  A batch that starts one
                # opens with the Set Address command (block 0): a session that starts over sets
                # it again, and its replies say whether the device is busy for no time
                first = run[1] if run is not None and run[0] == at else 2
                blocks = [] if first > 2 else [
                    (0, struct.pack("<BI", DFUSE_SET_ADDRESS_POINTER, at), f"set address 0x{at:X}")]
                blocks += [(first + k, data[off:off + size], f"write at 0x{at + off:X}")
                           for k, off in enumerate(range(0, len(data), size))]
                c.download_session(blocks)
                last = blocks[-1][0]
                if len(blocks[-1][1]) == size and last < 0xFFFF:
                    self._run = (at + len(data), last + 1)
            else:  # wTransferSize not ours: a fresh pointer and block 2 for every chunk (dfu-util)
                for off in range(0, len(data), size):
                    d.set_address(at + off)
                    c.dnload_and_wait(2, data[off:off + size], f"write at 0x{at + off:X}")
        except (HostError, usb.core.USBError) as exc:
            raise self._lost(exc, f"write at 0x{at:X}", BackendWriteFault) from None

    def manifest(self) -> float:
        """The DfuSe leave; the application is valid only when the device confirmed it."""
        self.flush()
        if self.is_blank():
            raise FirmwareFault("no application: the first word of flash is erased")
        self.flush()  # the read ahead is_blank() may have started ends before the leave
        d = self._device()
        c = d.client
        start = self.layout.application_ranges()[0][0]
        try:
            st = self._leave_ahead(c, start) if c.ahead_polls else None
            if st is None:
                c.make_idle()
                d.set_address(start)
                c._out(DNLOAD, 2)  # zero-length DNLOAD, block 2 (dfu-util dfuse_dnload_done)
                st = c.get_status()  # the device answers dfuMANIFEST, then resets
        except (HostError, usb.core.USBError) as exc:
            raise self._lost(exc, "leave (manifest)", BackendFault) from None
        if st.bStatus != Status.OK or st.bState == State.dfuERROR:
            self._forget()
            raise FirmwareFault(f"DfuSe target refused to leave: {st.describe()}")
        self._forget()  # it resets now; the next operation finds it again
        self._leaving = True
        self._changed()
        self.app_valid = True
        return 0.0

    def _leave_ahead(self, c, start: int) -> StatusReply | None:
        """Set Address, the zero-length DNLOAD and its GETSTATUS in one round trip, on a device
        known to finish commands busy for no time: the status that GETSTATUS read (raised: the
        USBError it or the DNLOAD failed with).  None when the Set Address did not go as one by
        one (the DNLOAD behind it then met a device in dfuERROR or busy, which refuses it):
        the device is brought to dfuIDLE and the caller leaves one by one."""
        first = self._set_address_requests(c, start)
        replies = c.pipelined(c.dev, first + [(OUT_CLASS_INTF, DNLOAD, 2, c.intf, None, c.timeout),
                                              (IN_CLASS_INTF, GETSTATUS, 0, c.intf, 6, c.timeout)])
        if not self._address_set(replies[:len(first)]):
            c.make_idle()
            return None
        for reply in replies[len(first):]:
            if isinstance(reply, usb.core.USBError):
                raise reply
        return StatusReply.unpack(bytes(replies[-1]))

    # ------------------------------------------------------------------
    def _region(self, address: int, length: int) -> Region:
        region = self.layout.find(address)
        if address + length > region.end:
            raise AddressFault(f"0x{address:X}+{length} runs past the end of {region.name} (0x{region.end:X})",
                               address)
        return region

    def _changed(self) -> None:
        with self._lock:  # a read ahead under way is dropped when it ends (_write_loop)
            self._generation += 1
            self._ahead = None
        self._cache = (0, b"")
        self._ahead_at = None
        self.app_valid = False

    def persist(self) -> None:
        """What the front's host was told is on the device: send what is pending."""
        self.flush()

    def close(self) -> None:
        try:
            self.flush()
        except BackendFault:
            pass  # the host was never told these bytes were written (no manifest): nothing lost
        finally:
            if self._writer is not None:
                self._queue.put(None)
                self._writer.join()
                self._writer = None
            self._forget()


class FlipMemory:
    """MemoryIO over an Atmel FLIP device reached through ``backend`` (pyusb)."""

    def __init__(self, backend, sel: UsbSelection, chip: Chip | None = None):
        self.backend = backend
        self.sel = sel
        self.timing = Timing()
        self.read_protected = False
        self.app_valid = False
        self._leaving = False
        self._d: Flip | None = None
        self._given = chip
        self._d = self._open()
        self.chip = self._d.chip  # FLIP names its chip by product id (or the one given)
        base = self.chip.layout()
        # flash only: EEPROM, fuses and signature are not what a front programs
        self.layout = Layout((base.flash,), base.protected)
        self.page_size = max(base.flash.write_size, 2)
        self._erased_once = False  # this update began with FLIP's chip erase
        self._written: set[int] = set()  # pages sent since that erase
        self._page = bytearray()
        self._page_at = -1

    def _open(self) -> Flip:
        from .host import open_dialect

        try:
            d = open_dialect(self.backend, vid=self.sel.vid, pid=self.sel.pid, serial=self.sel.serial,
                             dialect="flip", chip=self._given, progress=False)
        except (HostError, usb.core.USBError, OSError) as exc:
            # OSError: a usbip:// target whose server is gone refuses the connection (ECONNREFUSED)
            raise BackendFault(f"FLIP target: {exc}") from None
        assert isinstance(d, Flip)
        return d

    def _device(self) -> Flip:
        if self._d is None:
            deadline = time.monotonic() + (REOPEN_WAIT if self._leaving else 0.0)
            while True:
                try:
                    self._d = self._open()
                    self._leaving = False
                    break
                except BackendFault:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        return self._d

    def _lost(self, exc: Exception, what: str, fault: type[BackendFault] = BackendFault) -> BackendFault:
        self._forget()
        self.app_valid = False
        return fault(f"FLIP target: {what}: {exc}")

    def _forget(self) -> None:
        d, self._d = self._d, None
        if d is not None:
            try:
                usb.util.dispose_resources(d.client.dev)
            except (usb.core.USBError, OSError, ValueError):
                pass

    def _region(self, address: int, length: int) -> Region:
        region = self.layout.find(address)
        if address + length > region.end:
            raise AddressFault(f"0x{address:X}+{length} runs past the end of {region.name} (0x{region.end:X})",
                               address)
        return region

    # ------------------------------------------------------------------
    def read(self, address: int, length: int) -> bytes:
        if length == 0:
            return b""
        self._region(address, length)
        self.flush()
        d = self._device()
        try:
            d.client.make_idle()
            return d.read_range(address, length)
        except (HostError, usb.core.USBError) as exc:
            raise self._lost(exc, f"read at 0x{address:X}") from None

    def is_blank(self) -> bool:
        if self.app_valid:
            # checked before the confirmed manifest, and nothing changed since: asking again
            # would bring a target that now runs its application back to its bootloader
            return False
        start = self.layout.application_ranges()[0][0]
        return self.read(start, 2) == b"\xff\xff"

    def erase(self, address: int) -> float:
        region = self._region(address, 1)
        start, size = region.sector_at(address)
        if self.layout.is_protected(start, start + size):
            raise ProtectedFault(f"page 0x{start:X} holds the bootloader", address)
        if not self._erased_once:
            return self.erase_all()
        if start in self._written:
            # LUFA erases every page it writes: an erased page is a page of 0xFF written
            self.flush()
            self._send(start, b"\xff" * size, BackendEraseFault)
        return 0.0

    def erase_all(self) -> float:
        """FLIP's chip erase (04 00 FF): the application flash; LUFA keeps itself."""
        self._page.clear()
        self.app_valid = False
        d = self._device()
        try:
            d.erase()
        except (HostError, usb.core.USBError) as exc:
            raise self._lost(exc, "chip erase", BackendEraseFault) from None
        self._erased_once = True
        self._written.clear()
        self.read_protected = False
        return 0.0

    def program(self, address: int, data: bytes) -> float:
        if not data:
            return 0.0
        region = self._region(address, len(data))
        if not region.writable:
            raise WriteFault(f"{region.name} is read-only", address)
        if self.layout.is_protected(address, address + len(data)):
            raise ProtectedFault(f"0x{address:X}+{len(data)} reaches into the bootloader region", address)
        self.app_valid = False
        pos = 0
        while pos < len(data):
            at = address + pos
            page = at - at % self.page_size
            if self._page and page != self._page_at:
                self.flush()
            if not self._page:
                self._page_at = page
                # LUFA erases the page before writing it: what it held stays only if sent again
                self._page[:] = self.read(page, self.page_size) if page in self._written else \
                    b"\xff" * self.page_size
            take = min(len(data) - pos, page + self.page_size - at)
            self._page[at - page:at - page + take] = data[pos:pos + take]
            pos += take
        return 0.0

    def flush(self) -> None:
        if not self._page:
            return
        at, data = self._page_at, bytes(self._page)
        self._page.clear()
        self._send(at, data, BackendWriteFault)

    def _send(self, at: int, data: bytes, fault: type[BackendFault]) -> None:
        from ...formats.image import Image

        d = self._device()
        try:
            d.client.make_idle()
            d.write(Image([(at, data)]))
            d.steps.clear()  # the dialect's record of a whole flash: not one line per page here
        except (HostError, usb.core.USBError) as exc:
            raise self._lost(exc, f"write at 0x{at:X}", fault) from None
        self._written.add(at)

    def manifest(self) -> float:
        """FLIP's start application (04 03 00) and the zero-length DNLOAD LUFA leaves on:
        valid only when the device answered the first with status OK."""
        self.flush()
        if self.is_blank():
            raise FirmwareFault("no application: the first word of flash is erased")
        d = self._device()
        try:
            d.leave()
        except (HostError, usb.core.USBError) as exc:
            raise self._lost(exc, "start application (manifest)") from None
        self._forget()
        self._leaving = True
        self._erased_once = False
        self._written.clear()
        self.app_valid = True
        return 0.0

    def persist(self) -> None:
        self.flush()

    def close(self) -> None:
        try:
            self.flush()
        except BackendFault:
            pass  # never reported to the host as written (no manifest): nothing lost
        finally:
            self._forget()
