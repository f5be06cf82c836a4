"""Finding a USB mass-storage drive and talking to it: the Bulk-Only Transport client
(USB Mass Storage Class Bulk-Only Transport 1.0: CBW, data, CSW, reset recovery)."""

from __future__ import annotations

from dataclasses import dataclass

import usb.core
import usb.util

from ..common import HostError
from ..usbhost import endpoint_pair, matching_devices, stalled, take_interfaces
from .protocol import (
    BULK_ONLY_RESET,
    CBW,
    CBW_FLAG_IN,
    CSW,
    CSW_FAILED,
    CSW_LENGTH,
    GET_MAX_LUN,
    MSC_CLASS,
    MSC_PROTOCOL_BOT,
    MSC_SUBCLASS_SCSI,
    BotError,
)


class MscError(HostError):
    """The drive or the exchange failed."""


# what the sense data a drive reports means, for the one-line error (SPC-4 table 27 and D.1)
SENSE_KEYS = {0x2: "not ready", 0x3: "medium error", 0x4: "hardware error", 0x5: "illegal request",
              0x6: "unit attention", 0x7: "data protect", 0xE: "miscompare"}
ASC_NAMES = {(0x0C, 0x00): "write error", (0x11, 0x00): "unrecovered read error",
             (0x3A, 0x00): "medium not present", (0x20, 0x00): "invalid command operation code",
             (0x21, 0x00): "logical block address out of range", (0x24, 0x00): "invalid field in CDB",
             (0x27, 0x00): "write protected", (0x28, 0x00): "medium may have changed",
             (0x1D, 0x00): "miscompare during verify"}


class CheckCondition(MscError):
    """A SCSI command ended in CHECK CONDITION; ``sense`` is (key, ASC, ASCQ)."""

    def __init__(self, what: str, sense: tuple[int, int, int]):
        meaning = ": ".join(n for n in (SENSE_KEYS.get(sense[0]), ASC_NAMES.get((sense[1], sense[2]))) if n)
        super().__init__(f"{what}: CHECK CONDITION, sense key 0x{sense[0]:X} ASC 0x{sense[1]:02X} "
                         f"ASCQ 0x{sense[2]:02X}" + (f" ({meaning})" if meaning else ""))
        self.sense = sense


@dataclass
class MscTarget:
    device: usb.core.Device
    interface: int
    ep_in: int  # bEndpointAddress, from the descriptors
    ep_out: int

    def describe(self) -> str:
        d = self.device
        return (f"[{d.idVendor:04x}:{d.idProduct:04x}] msc intf={self.interface} "
                f"in=0x{self.ep_in:02x} out=0x{self.ep_out:02x}")


def find_devices(backend=None, *, vid=None, pid=None, serial=None) -> list[MscTarget]:
    """Mass-storage (SCSI, Bulk-Only) interfaces on the bus, endpoints read from the descriptors."""
    found = []
    for dev, cfg in matching_devices(backend, vid=vid, pid=pid, serial=serial):
        for intf in cfg:
            if (intf.bInterfaceClass, intf.bInterfaceSubClass, intf.bInterfaceProtocol) != (
                    MSC_CLASS, MSC_SUBCLASS_SCSI, MSC_PROTOCOL_BOT) or intf.bAlternateSetting:
                continue
            ep_in, ep_out = endpoint_pair(intf, usb.util.ENDPOINT_TYPE_BULK)
            if ep_in is None or ep_out is None:
                continue
            found.append(MscTarget(dev, intf.bInterfaceNumber, ep_in, ep_out))
            break
    return found


class BotClient:
    """CBW, data, CSW over the bulk endpoints (BOT 1.0 section 5 and 6)."""

    def __init__(self, target: MscTarget, *, timeout: int = 5000):
        self.target = target
        self.dev = target.device
        self.timeout = timeout
        self.tag = 0
        take_interfaces(self.dev, target.interface)  # usb-storage holds a real drive
        try:
            # Get Max LUN (BOT 3.2); a device with one LUN may STALL it
            self.max_lun = bytes(self.dev.ctrl_transfer(0xA1, GET_MAX_LUN, 0, target.interface, 1, timeout))[0]
        except (usb.core.USBError, IndexError):
            self.max_lun = 0

    def reset_recovery(self) -> None:
        """BOT 5.3.4: Bulk-Only Mass Storage Reset, then CLEAR_FEATURE(HALT) on both bulk endpoints."""
        self.dev.ctrl_transfer(0x21, BULK_ONLY_RESET, 0, self.target.interface, None, self.timeout)
        self.dev.clear_halt(self.target.ep_in)
        self.dev.clear_halt(self.target.ep_out)

    def transport(self, cb: bytes, *, data_out: bytes | None = None, in_length: int = 0,
                  lun: int = 0) -> tuple[int, bytes, int]:
        """One command: (bCSWStatus, data-in, dCSWDataResidue).  A STALL in the data phase is cleared."""
        self.tag = (self.tag + 1) & 0xFFFFFFFF
        length = len(data_out) if data_out is not None else in_length
        cbw = CBW(self.tag, length, CBW_FLAG_IN if in_length else 0, lun, cb)
        t = self.target
        self.dev.write(t.ep_out, cbw.pack(), self.timeout)
        data = b""
        try:
            if data_out:
                self.dev.write(t.ep_out, data_out, self.timeout)
            elif in_length:
                data = bytes(self.dev.read(t.ep_in, in_length, self.timeout))
        except usb.core.USBError as exc:
            if not stalled(exc):
                raise
            # BOT 6.7.2/6.7.3: the device ended the data phase with a STALL
            self.dev.clear_halt(t.ep_out if data_out else t.ep_in)
        csw = self._read_csw()
        if csw.tag != self.tag:
            self.reset_recovery()
            raise MscError(f"CSW tag 0x{csw.tag:08X} does not match CBW tag 0x{self.tag:08X}")
        if csw.status > CSW_FAILED:
            self.reset_recovery()  # phase error: BOT 5.3.3.1
            raise MscError(f"phase error on SCSI opcode 0x{cb[0]:02X}")
        return csw.status, data, csw.residue

    def _read_csw(self) -> CSW:
        for attempt in range(2):
            try:
                raw = bytes(self.dev.read(self.target.ep_in, CSW_LENGTH, self.timeout))
                break
            except usb.core.USBError as exc:
                if not stalled(exc) or attempt:
                    raise
                self.dev.clear_halt(self.target.ep_in)  # BOT 5.3.3: clear, then read the CSW again
        try:
            return CSW.unpack(raw)
        except BotError as exc:
            self.reset_recovery()
            raise MscError(f"invalid CSW: {exc}") from None
