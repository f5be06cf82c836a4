"""Mass-storage device side: the SCSI block target, the Bulk-Only Transport
engine, and the USB Function that carries them.

Both engines are sans-I/O.  :class:`ScsiTarget` turns a CDB into a
:class:`Command` (which direction, how many bytes the device intends, how
to produce or consume them, the status); :class:`BulkOnlyEngine` runs the
CBW / data / CSW phases over it, with the thirteen host/device cases of
BOT 1.0 section 6.7 and the STALL-until-Reset-Recovery rule of 6.6.1.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from ...memory.backends import BackendFault
from ...usb.descriptors import Endpoint, Interface
from ...usb.device import RECIP_INTERFACE, TYPE_CLASS, Function, SetupPacket, Stall
from .ghostfat import SECTOR, GhostFat
from .protocol import (
    ASC_INVALID_COMMAND_OPERATION_CODE,
    ASC_INVALID_FIELD_IN_CDB,
    ASC_LBA_OUT_OF_RANGE,
    ASC_MEDIUM_NOT_PRESENT,
    ASC_MISCOMPARE_DURING_VERIFY,
    ASC_NONE,
    ASC_WRITE_ERROR,
    BULK_ONLY_RESET,
    CBW,
    CSW,
    CSW_FAILED,
    CSW_GOOD,
    CSW_PHASE_ERROR,
    GET_MAX_LUN,
    ILLEGAL_REQUEST,
    INQUIRY,
    MEDIUM_ERROR,
    MISCOMPARE,
    MODE_SENSE_6,
    MODE_SENSE_10,
    MSC_CLASS,
    MSC_PROTOCOL_BOT,
    MSC_SUBCLASS_SCSI,
    NO_SENSE,
    NOT_READY,
    OPCODE_NAMES,
    PAGE_ALL,
    PAGE_CACHING,
    PREVENT_ALLOW_MEDIUM_REMOVAL,
    READ_10,
    READ_CAPACITY_10,
    READ_FORMAT_CAPACITIES,
    REQUEST_SENSE,
    START_STOP_UNIT,
    SYNCHRONIZE_CACHE_10,
    TEST_UNIT_READY,
    VERIFY_10,
    WRITE_10,
    BotError,
    caching_page,
    format_capacities_data,
    inquiry_data,
    read_capacity_data,
    sense_data,
)

if TYPE_CHECKING:
    from .drop import DropTarget


class Command:
    """One SCSI command as the device intends it (BOT's Dn / Di / Do).

    ``direction`` is "none", "in" or "out"; ``length`` the bytes the device
    intends to move.  Data-in comes from ``read(offset, n)``, data-out goes
    to ``write(chunk)`` in order; ``finish()`` runs after the data phase and
    returns True for GOOD (False: CHECK CONDITION, sense already set).
    """

    direction = "none"
    length = 0

    def __init__(self, target: "ScsiTarget", name: str, good: bool = True):
        self.target = target
        self.name = name
        self.good = good

    def read(self, offset: int, n: int) -> bytes:
        raise NotImplementedError

    def write(self, chunk: bytes) -> None:
        raise NotImplementedError

    def finish(self) -> bool:
        return self.good


class _Reply(Command):
    direction = "in"

    def __init__(self, target, name, data: bytes):
        super().__init__(target, name)
        self.data = data
        self.length = len(data)

    def read(self, offset, n):
        return self.data[offset:offset + n]


class _Read(Command):
    direction = "in"

    def __init__(self, target, lba: int, count: int):
        super().__init__(target, "READ(10)")
        self.lba, self.length = lba, count * SECTOR

    def read(self, offset, n):
        # Generated per sector as the host takes it: never the whole transfer at once.
        first, last = offset // SECTOR, (offset + n - 1) // SECTOR
        vol = self.target.volume
        blob = b"".join(vol.read(self.lba + i) for i in range(first, last + 1))
        skip = offset - first * SECTOR
        return blob[skip:skip + n]


class _Write(Command):
    direction = "out"

    def __init__(self, target, lba: int, count: int, verify: bool = False):
        super().__init__(target, "VERIFY(10)" if verify else "WRITE(10)")
        self.lba, self.length = lba, count * SECTOR
        self.verify = verify
        self._buf = bytearray()
        self._next = lba

    def write(self, chunk):
        self._buf += chunk
        vol = self.target.volume
        while len(self._buf) >= SECTOR:
            sector = bytes(self._buf[:SECTOR])
            del self._buf[:SECTOR]
            if self.verify:
                if self.good and vol.read(self._next) != sector:
                    self.good = False
                    self.target.set_sense(MISCOMPARE, ASC_MISCOMPARE_DURING_VERIFY)
            elif self.good:  # after a write error the rest of the data phase is taken, not written
                try:
                    vol.write(self._next, sector)
                except BackendFault:
                    self._write_error()
            self._next += 1

    def _write_error(self) -> None:
        # The target behind the drive failed (issue 23): the command ends in CHECK CONDITION,
        # MEDIUM ERROR / WRITE ERROR (SBC-3 4.13 and 5.40, SPC-4 table 28: 0x03, ASC 0x0C ASCQ
        # 0x00), as a disk's failed write does; Linux' sd then fails the request with -EIO.
        self.good = False
        self.target.set_sense(MEDIUM_ERROR, ASC_WRITE_ERROR)

    def finish(self):
        if not self.verify:
            try:
                self.target.volume.settle()
            except BackendFault:
                self._write_error()
        return self.good


class ScsiTarget:
    """A removable direct-access block device (SBC-3) serving a :class:`GhostFat`."""

    def __init__(self, volume: GhostFat, *, vendor: str = "bootkit", product: str = "UF2 Bootloader",
                 revision: str = "1.0", on_eject: Callable[[], None] | None = None):
        self.volume = volume
        self.vendor, self.product, self.revision = vendor, product, revision
        self.sense = (NO_SENSE, ASC_NONE)
        self.present = True
        self.prevent_removal = False
        self.on_eject = on_eject or (lambda: None)
        self.log: list[str] = []  # opcode names, for tests

    @property
    def blocks(self) -> int:
        return self.volume.total_sectors

    def set_sense(self, key: int, asc: tuple[int, int]) -> None:
        self.sense = (key, asc)

    def _check(self, key: int, asc: tuple[int, int], name: str) -> Command:
        self.set_sense(key, asc)
        return Command(self, name, good=False)

    def command(self, cdb: bytes) -> Command:
        op = cdb[0]
        name = OPCODE_NAMES.get(op, f"opcode 0x{op:02X}")
        self.log.append(name)
        if op == REQUEST_SENSE:
            data = sense_data(*self.sense)
            self.sense = (NO_SENSE, ASC_NONE)  # reported once (SPC-4 4.5.1)
            return _Reply(self, name, data[:cdb[4]] if len(cdb) > 4 else data)
        # Sense data describes the last command: a new one clears it.
        self.sense = (NO_SENSE, ASC_NONE)
        if op == INQUIRY:
            if len(cdb) < 6 or cdb[1] & 0x01:  # EVPD: no vital product data pages
                return self._check(ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB, name)
            alloc = int.from_bytes(cdb[3:5], "big")
            return _Reply(self, name, inquiry_data(self.vendor, self.product, self.revision)[:alloc])
        if op == TEST_UNIT_READY:
            if not self.present:
                return self._check(NOT_READY, ASC_MEDIUM_NOT_PRESENT, name)
            return Command(self, name)
        if op == PREVENT_ALLOW_MEDIUM_REMOVAL:
            self.prevent_removal = bool(cdb[4] & 0x01) if len(cdb) > 4 else False
            return Command(self, name)
        if op == START_STOP_UNIT:
            if len(cdb) < 5:
                return self._check(ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB, name)
            start, load_eject = cdb[4] & 0x01, cdb[4] & 0x02
            if load_eject:
                self.present = bool(start)
                if not start:
                    self.on_eject()
            return Command(self, name)
        if op == SYNCHRONIZE_CACHE_10:
            # Writes go straight through: nothing is cached on the device.
            return Command(self, name)
        if op in (READ_CAPACITY_10, READ_FORMAT_CAPACITIES, READ_10, WRITE_10, VERIFY_10, MODE_SENSE_6,
                  MODE_SENSE_10) and not self.present:
            return self._check(NOT_READY, ASC_MEDIUM_NOT_PRESENT, name)
        if op == READ_CAPACITY_10:
            return _Reply(self, name, read_capacity_data(self.blocks))
        if op == READ_FORMAT_CAPACITIES:
            alloc = int.from_bytes(cdb[7:9], "big") if len(cdb) >= 9 else 12
            return _Reply(self, name, format_capacities_data(self.blocks)[:alloc])
        if op in (MODE_SENSE_6, MODE_SENSE_10):
            page = cdb[2] & 0x3F if len(cdb) > 2 else 0
            if page not in (PAGE_ALL, PAGE_CACHING):
                # as Linux's f_mass_storage: only the caching page exists
                return self._check(ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB, name)
            body = caching_page()
            if op == MODE_SENSE_6:
                data = bytes([3 + len(body), 0, 0, 0]) + body  # WP (byte 2 bit 7) clear
                alloc = cdb[4] if len(cdb) > 4 else 4
            else:
                data = (6 + len(body)).to_bytes(2, "big") + bytes(6) + body
                alloc = int.from_bytes(cdb[7:9], "big") if len(cdb) >= 9 else 8
            return _Reply(self, name, data[:alloc])
        if op in (READ_10, WRITE_10, VERIFY_10):
            if len(cdb) < 10:
                return self._check(ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB, name)
            lba = int.from_bytes(cdb[2:6], "big")
            count = int.from_bytes(cdb[7:9], "big")
            if lba + count > self.blocks:
                return self._check(ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE, name)
            if op == READ_10:
                return _Read(self, lba, count)
            if op == WRITE_10:
                return _Write(self, lba, count)
            if cdb[1] & 0x02:  # BYTCHK: compare the data-out with the medium
                return _Write(self, lba, count, verify=True)
            return Command(self, name)
        return self._check(ILLEGAL_REQUEST, ASC_INVALID_COMMAND_OPERATION_CODE, name)


class BulkOnlyEngine:
    """Bulk-Only Transport (USB MSC BOT 1.0) over a :class:`ScsiTarget`.

    ``halt(direction)`` sets the halt feature of the bulk IN or OUT
    endpoint.  Events: :meth:`bulk_out`, :meth:`bulk_in`, :meth:`reset`
    (Bulk-Only Mass Storage Reset), :meth:`clear_halt`, :meth:`bus_reset`.
    """

    def __init__(self, target: ScsiTarget, halt: Callable[[str], None] | None = None):
        self.target = target
        self.halt = halt or (lambda direction: None)
        self.events: list[str] = []  # what happened, for tests ("case 4", "invalid CBW", ...)
        self._idle()
        self.reset_needed = False

    def _idle(self) -> None:
        self.state = "command"  # command, data-in, data-out, status
        self.cbw: CBW | None = None
        self.cmd: Command | None = None
        self.to_move = 0  # bytes of the data phase still to go
        self.moved = 0
        self.residue = 0
        self.status = CSW_GOOD
        self.stall_in_after = False

    # ------------------------------------------------------------------
    def bulk_out(self, data: bytes) -> None:
        """Data from the host on bulk OUT; raises Stall when the endpoint halts."""
        if self.reset_needed:
            raise Stall("waiting for Reset Recovery")
        if self.state == "command":
            self._command(bytes(data))
            return
        if self.state == "data-out":
            take = min(len(data), self.to_move)
            assert self.cmd is not None  # the data-out phase belongs to a command
            if take:
                self.cmd.write(bytes(data[:take]))
                self.to_move -= take
                self.moved += take
            if not self.to_move:
                self._after_out()
            if take < len(data):
                # the host sends more than the device intends (case 11): STALL the rest
                self.halt("out")
                raise Stall("data-out beyond what the command takes")
            return
        # A CBW while the device holds data or a CSW: the host lost track.
        self._invalid("bulk OUT data during the " + self.state + " phase")
        raise Stall("out of phase")

    def bulk_in(self, max_length: int) -> bytes | None:
        if self.reset_needed:
            raise Stall("waiting for Reset Recovery")
        if self.state == "data-in":
            n = min(max_length, self.to_move)
            assert self.cmd is not None  # the data-in phase belongs to a command
            chunk = self.cmd.read(self.moved, n)
            self.moved += n
            self.to_move -= n
            if not self.to_move:
                self.state = "status"
                if self.stall_in_after:
                    self.halt("in")  # case 5: fewer bytes than the host asked for
            return chunk
        if self.state == "status":
            assert self.cbw is not None  # a status phase answers a CBW
            csw = CSW(self.cbw.tag, self.residue, self.status).pack()
            self._idle()
            return csw
        return None  # NAK: nothing to send before a CBW

    def reset(self) -> None:
        """Bulk-Only Mass Storage Reset (BOT 3.1): ready for a CBW; halts stay until cleared."""
        self.events.append("mass storage reset")
        self._idle()
        self.reset_needed = False

    def clear_halt(self, direction: str) -> bool:
        """CLEAR_FEATURE(ENDPOINT_HALT): True if the endpoint must stay halted (BOT 6.6.1)."""
        return self.reset_needed

    def bus_reset(self) -> None:
        self._idle()
        self.reset_needed = False

    # ------------------------------------------------------------------
    def _invalid(self, why: str) -> None:
        # BOT 6.6.1: STALL both bulk endpoints until a Reset Recovery
        self.events.append(f"invalid CBW: {why}")
        self._idle()
        self.reset_needed = True
        self.halt("in")
        self.halt("out")

    def _command(self, raw: bytes) -> None:
        try:
            cbw = CBW.unpack(raw)
        except BotError as exc:
            self._invalid(str(exc))
            raise Stall(str(exc)) from None
        self.cbw = cbw
        cmd = self.target.command(cbw.cb)
        self.cmd = cmd
        h_len = cbw.data_length
        h_dir = "none" if h_len == 0 else ("in" if cbw.is_in else "out")
        d_dir = cmd.direction if cmd.good and cmd.length else "none"
        d_len = cmd.length if d_dir != "none" else 0
        if h_dir == "none":
            if d_dir == "none":  # case 1
                self._status(CSW_GOOD if cmd.finish() else CSW_FAILED, 0)
            else:  # cases 2, 3: the device wants a data phase the host does not give
                self._phase_error(2 if d_dir == "in" else 3, 0)
            return
        if h_dir == "in":
            if d_dir == "none":  # case 4: no data; STALL bulk IN, CSW with the whole residue
                self.events.append("case 4")
                self.halt("in")
                self._status(CSW_GOOD if cmd.finish() else CSW_FAILED, h_len)
            elif d_dir == "out":  # case 8
                self.halt("in")
                self._phase_error(8, h_len)
            else:  # cases 5, 6, 7
                self.state = "data-in"
                self.to_move = min(h_len, d_len)
                self.moved = 0
                self.residue = h_len - self.to_move
                self.stall_in_after = d_len < h_len
                if d_len > h_len:
                    self.events.append("case 7")
                    self.status = CSW_PHASE_ERROR
                else:
                    self.events.append("case 5" if d_len < h_len else "case 6")
                    self.status = CSW_GOOD if cmd.finish() else CSW_FAILED
            return
        # host data-out
        if d_dir == "none":  # case 9: STALL bulk OUT, CSW with the whole residue
            self.events.append("case 9")
            self.halt("out")
            self._status(CSW_GOOD if cmd.finish() else CSW_FAILED, h_len)
        elif d_dir == "in":  # case 10
            self.halt("out")
            self._phase_error(10, h_len)
        else:  # cases 11, 12, 13
            self.state = "data-out"
            self.to_move = min(h_len, d_len)
            self.moved = 0
            self.residue = h_len - self.to_move
            self.events.append("case 11" if d_len < h_len else "case 13" if d_len > h_len else "case 12")
            self.status = CSW_PHASE_ERROR if d_len > h_len else CSW_GOOD

    def _after_out(self) -> None:
        assert self.cmd is not None
        good = self.cmd.finish()
        if self.status != CSW_PHASE_ERROR:
            self.status = CSW_GOOD if good else CSW_FAILED
        self.state = "status"
        if self.residue:  # case 11: the host still has data for us; STALL it
            self.halt("out")

    def _status(self, status: int, residue: int) -> None:
        self.state = "status"
        self.status = status
        self.residue = residue

    def _phase_error(self, case: int, residue: int) -> None:
        self.events.append(f"case {case}")
        self._status(CSW_PHASE_ERROR, residue)


class MscFunction(Function):
    """One mass-storage interface: class 0x08, SCSI transparent (0x06), Bulk-Only (0x50)."""

    name = "msc"
    # the drive's parts, set by the package's function builder for tests and logs
    sink: DropTarget
    volume: GhostFat
    target: ScsiTarget

    def __init__(self, engine: BulkOnlyEngine, interface_name: str | None = None):
        super().__init__()
        self.engine = engine
        self.interface_name = interface_name
        engine.halt = self._halt
        self.ep_in_ = Endpoint(1, "in", "bulk", max_packet_size=64, hs_max_packet_size=512)
        self.ep_out_ = Endpoint(1, "out", "bulk", max_packet_size=64, hs_max_packet_size=512)

    def interfaces(self, speed="full"):
        return [Interface(0, MSC_CLASS, MSC_SUBCLASS_SCSI, MSC_PROTOCOL_BOT, name=self.interface_name,
                          endpoints=[self.ep_in_, self.ep_out_])]

    def _halt(self, direction: str) -> None:
        self.halt(self.ep_in_ if direction == "in" else self.ep_out_)

    def setup(self, req: SetupPacket, data: bytes):
        if req.type != TYPE_CLASS or req.recipient != RECIP_INTERFACE:
            raise Stall
        if req.bRequest == GET_MAX_LUN and req.is_in and req.wValue == 0 and req.wLength == 1:
            return b"\x00"  # one logical unit
        if req.bRequest == BULK_ONLY_RESET and not req.is_in and req.wValue == 0 and req.wLength == 0:
            self.engine.reset()
            return None
        raise Stall

    def ep_out(self, ep, data):
        self.engine.bulk_out(bytes(data))

    def ep_in(self, ep, max_length):
        return self.engine.bulk_in(max_length)

    def clear_halt(self, ep):
        if self.engine.clear_halt("in" if ep.is_in else "out"):
            self.halt(ep)  # BOT 6.6.1: still halted until the Bulk-Only Mass Storage Reset

    def bus_reset(self):
        self.engine.bus_reset()

    def configured(self, active):
        self.engine.bus_reset()


__all__ = ["Command", "ScsiTarget", "BulkOnlyEngine", "MscFunction"]
