"""DFU device side: the DFU 1.1 state machine, its DfuSe and FLIP dialects,
the run-time interface, and the USB Functions that carry them.

The engines are pure state machines (events: a class request with its
data, a bus reset, the clock); :class:`DfuFunction` puts one on the bus.
"""

from __future__ import annotations

import math
import struct
import time
from typing import Callable

from ...memory import MemoryFault, Region
from ...memory.core import (
    AddressFault,
    EraseFault,
    FirmwareFault,
    NotErasedFault,
    ProtectedFault,
    VerifyFault,
    WriteFault,
    dfuse_layout,
)
from ...memory.chips import EEPROM_BASE, SIGNATURE_BASE
from ...memory.writer import SessionWriter
from ...usb.descriptors import Interface
from ...usb.device import RECIP_INTERFACE, TYPE_CLASS, Function, SetupPacket, SignalKind, Stall
from .protocol import (
    ABORT,
    CAN_DNLOAD,
    CAN_UPLOAD,
    CLRSTATUS,
    DETACH,
    DFU_CLASS,
    DFU_SUBCLASS,
    DFUSE_ERASE,
    DFUSE_GET_COMMANDS,
    DFUSE_READ_UNPROTECT,
    DFUSE_SET_ADDRESS_POINTER,
    DNLOAD,
    FLIP_BOOTLOADER_INFO,
    FLIP_CHANGE_BASE_ADDR,
    FLIP_CONTROL_SIZE,
    FLIP_DISPLAY_DATA,
    FLIP_HEADER_SIZE,
    FLIP_PROG_START,
    FLIP_READ_COMMAND,
    FLIP_WRITE_COMMAND,
    GETSTATE,
    GETSTATUS,
    PROTOCOL_DFU_MODE,
    PROTOCOL_RUNTIME,
    UPLOAD,
    FunctionalDescriptor,
    State,
    Status,
    StatusReply,
)

FAULT_STATUS = {
    AddressFault: Status.errADDRESS,
    WriteFault: Status.errWRITE,
    EraseFault: Status.errERASE,
    NotErasedFault: Status.errCHECK_ERASED,
    VerifyFault: Status.errVERIFY,
    ProtectedFault: Status.errTARGET,
    FirmwareFault: Status.errFIRMWARE,
}


def fault_status(exc: MemoryFault) -> Status:
    for cls in type(exc).__mro__:
        if cls in FAULT_STATUS:
            return FAULT_STATUS[cls]
    return Status.errUNKNOWN


class DfuFault(Exception):
    """A request the engine refuses: STALL, and dfuERROR with ``status``."""

    def __init__(self, status: Status, why: str = ""):
        super().__init__(why or status.name)
        self.status = status


class DfuEngine:
    """DFU 1.1 in DFU mode (protocol 0x02), DFU 1.1 appendix A.

    Plain DFU carries no addresses: downloads and uploads run sequentially
    from the first application address; each sector is erased the first
    time a download touches it.
    """

    dialect = "dfu"
    # A dialect that always answers the first GETSTATUS after a DNLOAD with
    # dfuDNBUSY (ST's bootloader does, AN3156 section 6.1).
    reports_busy = False

    def __init__(self, memory, *, functional: FunctionalDescriptor | None = None,
                 regions: list[Region] | None = None, clock: Callable[[], float] = time.monotonic,
                 signal: Callable[..., None] | None = None):
        self.memory = memory
        self.functional = functional or FunctionalDescriptor()
        flash = memory.layout.flash
        self.regions = regions or [flash]
        self.clock = clock
        self.signal = signal or (lambda kind, reason="", delay=0.0: None)
        #: busy seconds no DFU status can report (a FLIP command runs inside its DNLOAD):
        #: the Function hands them to the transport, which holds the next request
        self.busy: Callable[[float], None] = lambda seconds: None
        self._busy_s = 0.0  # what the memory reported for the operation a GETSTATUS ran
        self.state = State.dfuIDLE
        self.status = Status.OK
        self.alt = 0
        self.writer = SessionWriter(memory)
        self.busy_until = 0.0
        self._pending: tuple[int, bytes] | None = None
        self._manifest_pending = False
        self._manifested = False
        self._new_session()
        app = memory.layout.application_ranges("flash")
        self.app_start, self.app_end = (app[0] if app else (flash.start, flash.start))

    # ------------------------------------------------------------------
    def _new_session(self) -> None:
        self.offset = 0
        self.next_block: int | None = None
        self.writer.reset()

    def _enter_idle(self) -> None:
        self.state = State.dfuIDLE
        self._pending = None
        self._manifest_pending = False
        self._new_session()

    def _error(self, status: Status) -> None:
        self.state = State.dfuERROR
        self.status = status
        self._pending = None
        self._manifest_pending = False

    def _advance_timers(self) -> None:
        now = self.clock()
        if self.state == State.dfuDNBUSY and now >= self.busy_until:
            self.state = State.dfuDNLOAD_SYNC
        elif self.state == State.dfuMANIFEST and now >= self.busy_until:
            if self.functional.manifestation_tolerant:
                self.state = State.dfuMANIFEST_SYNC
            else:
                self.state = State.dfuMANIFEST_WAIT_RESET

    @staticmethod
    def _ms(seconds: float) -> int:
        """bwPollTimeout for a busy time: whole milliseconds, never less than the time (the
        host waits this long before its next GETSTATUS, DFU 1.1 section 6.1.2)."""
        return max(0, math.ceil(round(seconds * 1000, 6)))

    def poll_timeout_ms(self, kind: str, size: int = 0) -> int:
        """bwPollTimeout after a DNLOAD block of ``kind`` ('program', 'erase', 'command',
        'manifest').  Plain DFU writes through a SessionWriter: the datasheet figures."""
        t = self.memory.timing
        if kind == "manifest":
            return int(t.manifest_ms)
        if kind == "erase":
            return int(t.erase_ms)
        pages = max(1, size // max(self.memory.layout.flash.write_size, 1))
        return int(t.program_ms * pages)

    # ------------------------------------------------------------------
    def request(self, bRequest: int, wValue: int, wLength: int, data: bytes = b"") -> bytes | None:
        """One class request.  Returns IN data or None; raises Stall (state dfuERROR)."""
        self._advance_timers()
        try:
            return self._dispatch(bRequest, wValue, wLength, data)
        except DfuFault as fault:
            self._error(fault.status)
            raise Stall(str(fault)) from None
        except MemoryFault as exc:  # e.g. an UPLOAD or FLIP command naming an address no memory has
            self._error(fault_status(exc))
            raise Stall(str(exc)) from None

    def _dispatch(self, b, wValue, wLength, data):
        s = self.state
        if s in (State.dfuDNBUSY, State.dfuMANIFEST):
            if b == GETSTATUS:
                # DFU 1.1 A.2.4 lets a busy device stall everything; like ST's
                # ROM we answer GETSTATUS with the time still to wait, so a host
                # that polls early (or a new tool after an interrupted one)
                # is told to wait rather than killed by a STALL.
                left = max(0, int((self.busy_until - self.clock()) * 1000))
                return StatusReply(self.status, left, s).pack()
            # DFU 1.1 A.2.4/A.2.7: no other request while the device is busy.
            raise DfuFault(Status.errSTALLEDPKT, "request while busy")
        if b == GETSTATUS:
            return self._getstatus().pack()
        if b == GETSTATE:
            return bytes([self.state])
        if s == State.dfuMANIFEST_WAIT_RESET:
            raise DfuFault(Status.errSTALLEDPKT, "waiting for a USB reset")
        if b == CLRSTATUS:
            if s != State.dfuERROR:
                raise DfuFault(Status.errSTALLEDPKT, "CLRSTATUS outside dfuERROR")
            self.status = Status.OK
            self._enter_idle()
            return None
        if s == State.dfuERROR:
            raise DfuFault(self.status, "only GETSTATUS, GETSTATE and CLRSTATUS in dfuERROR")
        if b == ABORT:
            if s in (State.dfuIDLE, State.dfuDNLOAD_SYNC, State.dfuDNLOAD_IDLE, State.dfuMANIFEST_SYNC,
                     State.dfuUPLOAD_IDLE):
                self._enter_idle()
                return None
            raise DfuFault(Status.errSTALLEDPKT)
        if b == DNLOAD:
            return self._dnload(wValue, wLength, data)
        if b == UPLOAD:
            return self._upload_request(wValue, wLength)
        raise DfuFault(Status.errSTALLEDPKT, f"request {b} not valid in DFU mode")

    def _dnload(self, block: int, wLength: int, data: bytes):
        if not self.functional.can_download:
            raise DfuFault(Status.errSTALLEDPKT, "download not supported")
        if wLength > self.functional.wTransferSize:
            raise DfuFault(Status.errUNKNOWN, f"wLength {wLength} exceeds wTransferSize")
        if len(data) != wLength:
            raise DfuFault(Status.errSTALLEDPKT, f"DNLOAD data stage of {len(data)} bytes, wLength {wLength}")
        if wLength:
            if self.state not in (State.dfuIDLE, State.dfuDNLOAD_IDLE):
                raise DfuFault(Status.errSTALLEDPKT, "DNLOAD not valid now")
            if self.state == State.dfuIDLE:
                self._new_session()
            self._pending = (block, bytes(data))
            self.state = State.dfuDNLOAD_SYNC
            return None
        return self._zero_length_dnload()

    def _zero_length_dnload(self):
        if self.state != State.dfuDNLOAD_IDLE:
            raise DfuFault(Status.errNOTDONE, "zero-length DNLOAD before any data")
        self._manifest_pending = True
        self.state = State.dfuMANIFEST_SYNC
        return None

    def _upload_request(self, block: int, wLength: int) -> bytes:
        if not self.functional.can_upload:
            raise DfuFault(Status.errSTALLEDPKT, "upload not supported")
        if self.state not in (State.dfuIDLE, State.dfuUPLOAD_IDLE):
            raise DfuFault(Status.errSTALLEDPKT, "UPLOAD not valid now")
        if self.state == State.dfuIDLE:
            self._new_session()
        reply = self.upload(block, wLength)  # a MemoryFault: request() stalls with its status
        # A short frame ends the upload (DFU 1.1 section 6.2).
        self.state = State.dfuUPLOAD_IDLE if len(reply) == wLength else State.dfuIDLE
        if self.state == State.dfuIDLE:
            self._new_session()
        return reply

    def _getstatus(self) -> StatusReply:
        poll = 0
        if self.state == State.dfuDNLOAD_SYNC:
            if self._pending is not None:
                block, data = self._pending
                self._pending = None
                try:
                    kind = self.download(block, data)
                except MemoryFault as exc:
                    self._error(fault_status(exc))
                    return StatusReply(self.status, 0, self.state)
                except DfuFault as fault:
                    self._error(fault.status)
                    return StatusReply(self.status, 0, self.state)
                poll = self.poll_timeout_ms(kind, len(data))
                if poll or self.reports_busy:
                    self.state = State.dfuDNBUSY
                    self.busy_until = self.clock() + poll / 1000.0
                    return StatusReply(self.status, poll, State.dfuDNBUSY)
            self.state = State.dfuDNLOAD_IDLE
        elif self.state == State.dfuMANIFEST_SYNC:
            if self._manifest_pending:
                self._manifest_pending = False
                try:
                    busy = self.manifest()
                except MemoryFault as exc:
                    self._error(fault_status(exc))
                    return StatusReply(self.status, 0, self.state)
                self._manifested = True
                poll = self._ms(busy)
                self.state = State.dfuMANIFEST
                self.busy_until = self.clock() + poll / 1000.0
                if not self.functional.manifestation_tolerant and self.functional.will_detach:
                    # The device resets itself after manifestation (ST's DfuSe
                    # bootloader "leave"); the host sees it disconnect.
                    self.signal(SignalKind.LEAVE, "manifested", poll / 1000.0)
                return StatusReply(self.status, poll, State.dfuMANIFEST)
            self._enter_idle()
        return StatusReply(self.status, poll, self.state)

    def bus_reset(self) -> None:
        """USB reset in DFU mode: start the application when one is valid."""
        if self.state == State.dfuMANIFEST_WAIT_RESET or self.memory.app_valid:
            self.signal(SignalKind.LEAVE, "USB reset")
        self.state = State.dfuIDLE
        self.status = Status.OK
        self._enter_idle()

    # ------------------------------------------------------------------
    # dialect hooks: plain DFU 1.1
    def download(self, block: int, data: bytes) -> str:
        """Execute a DNLOAD block; returns the kind of operation ('program', 'erase')."""
        if self.next_block is not None and block != self.next_block:
            # dfu-util numbers DFU 1.1 blocks from 0 and increments by one
            raise DfuFault(Status.errNOTDONE, f"block {block} out of sequence (expected {self.next_block})")
        address = self.app_start + self.offset
        if address + len(data) > self.app_end:
            raise DfuFault(Status.errADDRESS, f"download past the end of the application (0x{self.app_end:X})")
        self.writer.write(address, data)
        self.offset += len(data)
        self.next_block = (block + 1) & 0xFFFF
        return "program"

    def upload(self, block: int, length: int) -> bytes:
        address = self.app_start + self.offset
        n = max(0, min(length, self.app_end - address))
        data = self.memory.read(address, n) if n else b""
        self.offset += n
        return data

    def manifest(self) -> float:
        """Manifest; returns the seconds the memory is busy."""
        return self.memory.manifest()


class DfuSeEngine(DfuEngine):
    """ST's DfuSe extensions (AN3156, UM0424; bcdDFUVersion 0x011A).

    Block 0 carries commands; data blocks land at
    ``(wBlockNum - 2) * wTransferSize + address pointer``; commands and data
    execute on the following GETSTATUS, which answers dfuDNBUSY.
    """

    dialect = "dfuse"
    reports_busy = True
    COMMANDS = bytes((DFUSE_GET_COMMANDS, DFUSE_SET_ADDRESS_POINTER, DFUSE_ERASE, DFUSE_READ_UNPROTECT))

    def __init__(self, memory, **kw):
        super().__init__(memory, **kw)
        self.pointer = self.regions[0].start

    @property
    def region(self) -> Region:
        return self.regions[self.alt]

    def _block_address(self, block: int, length: int) -> int:
        address = (block - 2) * self.functional.wTransferSize + self.pointer
        region = self.region
        if not (region.start <= address and address + length <= region.end):
            raise DfuFault(Status.errADDRESS, f"0x{address:X}+{length} is outside {region.name}")
        return address

    def _dnload(self, block, wLength, data):
        if wLength and self.state == State.dfuIDLE:
            self._new_session()
        return super()._dnload(block, wLength, data)

    def _zero_length_dnload(self):
        # AN3156 6.3.3: a zero-length DNLOAD leaves DFU mode, from dfuIDLE too.
        if self.state not in (State.dfuDNLOAD_IDLE, State.dfuIDLE):
            raise DfuFault(Status.errSTALLEDPKT)
        self._manifest_pending = True
        self.state = State.dfuMANIFEST_SYNC
        return None

    def download(self, block: int, data: bytes) -> str:
        if block == 0:
            return self._command(data)
        if block == 1:
            raise DfuFault(Status.errSTALLEDPKT, "wBlockNum 1 is reserved in DfuSe")
        if self.memory.read_protected:
            raise DfuFault(Status.errTARGET, "read-out protection is active")
        address = self._block_address(block, len(data))
        region = self.region
        if not region.writable:
            raise DfuFault(Status.errWRITE, f"{region.name} is not writable")
        self._busy_s = self.memory.program(address, data)
        return "program"

    def _command(self, data: bytes) -> str:
        cmd = data[0]
        if cmd == DFUSE_SET_ADDRESS_POINTER and len(data) == 5:
            address = struct.unpack_from("<I", data, 1)[0]
            region = self.region
            if address not in region:
                raise DfuFault(Status.errTARGET, f"0x{address:X} is outside {region.name}")
            self.pointer = address
            self._busy_s = 0.0
            return "command"
        # AN3156 section 6.3.4: the Erase command with no address (one byte, 0x41) is a mass
        # erase, with an address the page or sector holding it.  bwPollTimeout reports what
        # the memory says it takes: the chip's full-erase time for a mass erase.
        if cmd == DFUSE_ERASE and len(data) == 1:
            self._busy_s = self.memory.erase_all()
            return "erase"
        if cmd == DFUSE_ERASE and len(data) == 5:
            address = struct.unpack_from("<I", data, 1)[0]
            if address not in self.region:
                raise DfuFault(Status.errTARGET, f"0x{address:X} is outside {self.region.name}")
            self._busy_s = self.memory.erase(address)
            return "erase"
        if cmd == DFUSE_READ_UNPROTECT and len(data) == 1:
            self._busy_s = self.memory.erase_all()  # mass erase, then protection is cleared
            return "erase"
        raise DfuFault(Status.errSTALLEDPKT, f"unknown DfuSe command 0x{cmd:02X}/{len(data)} bytes")

    def upload(self, block: int, length: int) -> bytes:
        if block == 0:
            return self.COMMANDS[:length]
        if block == 1:
            raise DfuFault(Status.errSTALLEDPKT, "wBlockNum 1 is reserved in DfuSe")
        address = (block - 2) * self.functional.wTransferSize + self.pointer
        region = self.region
        if not region.readable or address not in region:
            raise DfuFault(Status.errADDRESS, f"0x{address:X} is outside {region.name}")
        return self.memory.read(address, min(length, region.end - address))

    def poll_timeout_ms(self, kind, size=0):
        if kind == "manifest":
            return super().poll_timeout_ms(kind, size)
        # what the memory reported for the command or block that just ran: a mass erase
        # its full-erase time, a sector erase its sector's, a program its pages'
        return self._ms(self._busy_s)


class FlipEngine(DfuEngine):
    """Atmel FLIP over DFU 1.0, as LUFA's DFU bootloader implements it.

    Commands ride in DNLOAD payloads and run as the request arrives; an
    UPLOAD then returns data or the one-byte response.  Flash addresses are
    16-bit offsets into the 64 KiB page chosen with 0x06 03 00 PP.
    """

    dialect = "flip"

    def __init__(self, memory, *, secure: bool = False, **kw):
        super().__init__(memory, **kw)
        self.page64k = 0
        self.secure = secure or memory.read_protected
        self.start_addr = 0
        self.end_addr = 0
        self.read_memory = 0  # 0 flash, 2 EEPROM
        self.response = 0
        self.wait_for_exit = False
        self.blank_fail: int | None = None
        self.chip = getattr(memory, "chip", None)

    def _dnload(self, block, wLength, data):
        if wLength > max(self.functional.wTransferSize, 4096):
            raise DfuFault(Status.errUNKNOWN, f"wLength {wLength} too long")
        if self.wait_for_exit:
            # LUFA: the DNLOAD after "start application" ends the bootloader.
            self.wait_for_exit = False
            self.signal(SignalKind.LEAVE, "FLIP start application")
            self.state = State.dfuIDLE
            return None
        if not data:
            if self.state == State.dfuDNLOAD_IDLE:
                self.state = State.dfuIDLE
            return None
        if self.state not in (State.dfuIDLE, State.dfuDNLOAD_IDLE):
            raise DfuFault(Status.errSTALLEDPKT, "DNLOAD not valid now")
        self._command(bytes(data))
        return None

    def _command(self, data: bytes) -> None:
        cmd, args = data[0], data[1:6] + bytes(max(0, 6 - len(data)))
        # LUFA ProcessBootloaderCommand: in secure mode only chip erase and
        # id reads run; anything else is stalled with dfuERROR / errWRITE.
        if self.secure and not (cmd == FLIP_READ_COMMAND or (cmd == FLIP_WRITE_COMMAND and args[:2] == b"\x00\xff")):
            raise DfuFault(Status.errWRITE, "secure mode: erase the chip first")
        if cmd == FLIP_PROG_START:
            self._prog_start(args, data)
        elif cmd == FLIP_DISPLAY_DATA:
            self._display(args)
        elif cmd == FLIP_WRITE_COMMAND:
            self._write_command(args, data)
        elif cmd == FLIP_READ_COMMAND:
            self._read_command(args)
        elif cmd == FLIP_CHANGE_BASE_ADDR:
            if args[0] == 0x03 and args[1] == 0x00:
                self.page64k = args[2]
        else:
            raise DfuFault(Status.errSTALLEDPKT, f"unknown FLIP command 0x{cmd:02X}")

    def _addresses(self, args: bytes) -> None:
        self.start_addr = args[1] << 8 | args[2]
        self.end_addr = args[3] << 8 | args[4]
        if self.end_addr < self.start_addr:
            raise DfuFault(Status.errADDRESS, "end address before start address")

    def _absolute(self, memory: int, offset: int) -> int:
        if memory == 0x00:
            return self.page64k * 0x10000 + offset
        return EEPROM_BASE + offset

    def _prog_start(self, args: bytes, data: bytes) -> None:
        if args[0] not in (0x00, 0x01):
            raise DfuFault(Status.errSTALLEDPKT, f"unknown memory 0x{args[0]:02X}")
        self._addresses(args)
        count = self.end_addr - self.start_addr + 1
        # LUFA BootloaderDFU.c: after the 32-byte command block it discards
        # StartAddr % FIXED_CONTROL_ENDPOINT_SIZE (32) alignment filler bytes, takes the
        # data, and ignores what follows (the 16-byte DFU suffix, or nothing).  A data
        # stage too short for that would leave LUFA waiting for data that never comes.
        filler = self.start_addr % FLIP_CONTROL_SIZE
        skip = FLIP_HEADER_SIZE + filler
        payload = data[skip:skip + count]
        if len(payload) < count:
            raise DfuFault(Status.errNOTDONE,
                           f"program block at 0x{self.start_addr:04X} carries {len(payload)} of {count} bytes "
                           f"after the {FLIP_HEADER_SIZE}-byte header and {filler} bytes of alignment filler")
        address = self._absolute(args[0], self.start_addr)
        if args[0] == 0x00 and address + count > self.app_end:
            raise DfuFault(Status.errADDRESS if address + count > self.memory.layout.flash.end else Status.errTARGET,
                           f"0x{address:X}+{count} reaches past the application")
        self.writer.write(address, payload)  # a MemoryFault: request() stalls with its status
        self.state = State.dfuDNLOAD_IDLE

    def _display(self, args: bytes) -> None:
        self._addresses(args)
        if args[0] in (0x00, 0x02):
            self.read_memory = args[0]
            self.state = State.dfuUPLOAD_IDLE
        elif args[0] == 0x01:  # blank check
            start = self._absolute(0, self.start_addr)
            end = min(self._absolute(0, self.end_addr) + 1, self.app_end)
            data = self.memory.read(start, max(0, end - start))
            stripped = data.lstrip(b"\xff")
            if stripped:
                self.blank_fail = start + len(data) - len(stripped)
                self.page64k = self.blank_fail >> 16
                # LUFA accepts the request and reports the result in the status
                # (dfuERROR, errCHECK_ERASED); dfu-programmer then UPLOADs the
                # first non-blank address.  A STALL here would fail its DNLOAD.
                self.state, self.status = State.dfuERROR, Status.errCHECK_ERASED
        else:
            raise DfuFault(Status.errSTALLEDPKT, f"unknown display command 0x{args[0]:02X}")

    def _write_command(self, args: bytes, data: bytes) -> None:
        if args[0] == 0x03:  # start application (0x00 watchdog reset, 0x01 jump)
            try:
                self.busy(self.memory.manifest())
            except MemoryFault:
                pass  # LUFA starts nothing when flash is blank; the board stays in its bootloader
            self.wait_for_exit = True
        elif args[0] == 0x00 and args[1] == 0xFF:  # chip erase
            # LUFA erases inside the DNLOAD request (its status stage waits for the flash):
            # the transport holds the next request for the time
            self.busy(self.memory.erase_all())
            self.secure = False
            self.writer.reset()
        else:
            raise DfuFault(Status.errSTALLEDPKT, f"unknown write command {args[:2].hex()}")

    def _read_command(self, args: bytes) -> None:
        index = args[1]
        if args[0] == 0x00:
            if index >= len(FLIP_BOOTLOADER_INFO):
                raise DfuFault(Status.errADDRESS, "bootloader info index")
            self.response = FLIP_BOOTLOADER_INFO[index]
        elif args[0] == 0x01:
            sig = self.memory.read(SIGNATURE_BASE, 3) if self._has_signature() else b"\x00\x00\x00"
            table = {0x30: 0x58, 0x31: sig[0], 0x60: sig[1], 0x61: sig[2]}
            if index not in table:
                raise DfuFault(Status.errADDRESS, "signature index")
            self.response = table[index]
        else:
            raise DfuFault(Status.errSTALLEDPKT, f"unknown read command {args[:2].hex()}")

    def _has_signature(self) -> bool:
        try:
            self.memory.layout.region("signature")
            return True
        except KeyError:
            return False

    def _upload_request(self, block: int, wLength: int) -> bytes:
        if self.state == State.dfuUPLOAD_IDLE:
            count = self.end_addr - self.start_addr + 1
            address = self._absolute(0 if self.read_memory == 0 else 1, self.start_addr)
            if self.read_memory == 0 and address + count > self.app_end:
                # reading the bootloader section gives 0xFF, as an AVR with
                # its boot lock bits set reads it (SPM lock BLB1)
                inside = max(0, self.app_end - address)
                data = self.memory.read(address, inside) + b"\xff" * (count - inside)
            else:
                data = self.memory.read(address, count)
            self.state = State.dfuIDLE
            return data[:wLength]
        if self.state == State.dfuERROR and self.blank_fail is not None:
            return struct.pack("<H", self.blank_fail & 0xFFFF)[:wLength]
        if self.state == State.dfuIDLE:
            return bytes([self.response])[:wLength]
        raise DfuFault(Status.errSTALLEDPKT, "UPLOAD not valid now")

    def request(self, bRequest, wValue, wLength, data=b""):
        if bRequest == UPLOAD and self.state == State.dfuERROR and self.blank_fail is not None:
            # LUFA answers the host's question "where is the first non-blank byte"
            return self._upload_request(wValue, wLength)
        return super().request(bRequest, wValue, wLength, data)

    def _getstatus(self) -> StatusReply:
        # LUFA reports the state as it is: commands already ran on DNLOAD.
        return StatusReply(self.status, 0, self.state)

    def _enter_idle(self) -> None:
        super()._enter_idle()
        self.blank_fail = None

    def bus_reset(self) -> None:
        self.wait_for_exit = False
        super().bus_reset()


class DfuFunction(Function):
    """The DFU-mode interface: one alternate setting per memory region."""

    name = "dfu"

    def __init__(self, engine: DfuEngine, names: list[str]):
        super().__init__()
        self.engine = engine
        self.names = names
        engine.signal = self.signal
        engine.busy = self.busy

    def interfaces(self, speed="full"):
        extra = self.engine.functional.pack()
        return [Interface(0, DFU_CLASS, DFU_SUBCLASS, PROTOCOL_DFU_MODE, alternate=i, name=name, extra=extra)
                for i, name in enumerate(self.names)]

    def setup(self, req: SetupPacket, data: bytes):
        if req.type != TYPE_CLASS or req.recipient != RECIP_INTERFACE:
            raise Stall
        # DETACH in DFU mode is not valid: the engine stalls it (appendix A.2)
        return self.engine.request(req.bRequest, req.wValue, req.wLength, data)

    def set_alternate(self, interface, alternate):
        self.engine.alt = alternate
        if isinstance(self.engine, DfuSeEngine):
            self.engine.pointer = self.engine.region.start

    def bus_reset(self):
        self.engine.bus_reset()


class DfuRuntimeFunction(Function):
    """The run-time DFU interface an application exposes (protocol 0x01).

    DETACH moves appIDLE to appDETACH; the device re-enumerates in DFU mode
    on the next USB reset within wDetachTimeOut, or at once when
    bitWillDetach is set (DFU 1.1 section 5.1).
    """

    name = "dfu-runtime"

    def __init__(self, functional: FunctionalDescriptor, *, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.functional = functional
        self.state = State.appIDLE
        self.clock = clock
        self.detach_deadline = 0.0

    def interfaces(self, speed="full"):
        return [Interface(0, DFU_CLASS, DFU_SUBCLASS, PROTOCOL_RUNTIME, name="DFU runtime",
                          extra=self.functional.pack())]

    def setup(self, req: SetupPacket, data: bytes):
        if req.type != TYPE_CLASS or req.recipient != RECIP_INTERFACE:
            raise Stall
        self.tick(self.clock())
        if req.bRequest == DETACH:
            if self.state != State.appIDLE:
                raise Stall
            self.state = State.appDETACH
            timeout = min(req.wValue, self.functional.wDetachTimeOut) / 1000.0
            self.detach_deadline = self.clock() + timeout
            if self.functional.will_detach:
                self.signal(SignalKind.ENTER_BOOTLOADER, "DFU_DETACH (bitWillDetach)")
            return None
        if req.bRequest == GETSTATUS:
            return StatusReply(Status.OK, 0, self.state).pack()
        if req.bRequest == GETSTATE:
            return bytes([self.state])
        raise Stall

    def tick(self, now):
        if self.state == State.appDETACH and now > self.detach_deadline and not self.functional.will_detach:
            self.state = State.appIDLE

    def bus_reset(self):
        self.tick(self.clock())
        if self.state == State.appDETACH:
            self.signal(SignalKind.ENTER_BOOTLOADER, "USB reset after DFU_DETACH")
        self.state = State.appIDLE


def engine_for(dialect: str, memory, **kw) -> DfuEngine:
    return {"dfu": DfuEngine, "dfuse": DfuSeEngine, "flip": FlipEngine}[dialect](memory, **kw)


def dfuse_interface_names(memory) -> tuple[list[str], list[Region]]:
    """One alternate setting per region: Internal Flash, then option bytes."""
    flash = memory.layout.flash
    names = [dfuse_layout("Internal Flash", [flash])]
    regions = [flash]
    for r in memory.layout.regions:
        if r.kind == "option":
            names.append(dfuse_layout("Option Bytes", [r]))
            regions.append(r)
    return names, regions


__all__ = [
    "DfuEngine", "DfuSeEngine", "FlipEngine", "DfuFunction", "DfuRuntimeFunction", "engine_for",
    "dfuse_interface_names", "fault_status", "CAN_DNLOAD", "CAN_UPLOAD",
]
