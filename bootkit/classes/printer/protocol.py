"""USB printer class constants and codecs shared by the device and host halves.

Universal Serial Bus Device Class Definition for Printing Devices 1.1
(usb.org usbprint11a021811.pdf): interface class 0x07, subclass 0x01,
protocols 0x01 (unidirectional) and 0x02 (bidirectional), and three class
requests.  The request encodings hosts really send are Linux's
drivers/usb/class/usblp.c ones (see ``USBLP_*`` below).

The bootloader's own status text (what a host reads from the bulk IN
endpoint after a job) is bootkit's: one line per job, ``OK ...`` or
``ERROR ...``.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

# Interface codes (printer class 1.1 section 4.1)
PRINTER_CLASS = 0x07
PRINTER_SUBCLASS = 0x01
PROTOCOL_UNIDIRECTIONAL = 0x01
PROTOCOL_BIDIRECTIONAL = 0x02
PROTOCOL_1284_4 = 0x03  # not offered: IEEE 1284.4 packet protocol

# Class requests (printer class 1.1 section 4.2)
GET_DEVICE_ID = 0x00
GET_PORT_STATUS = 0x01
SOFT_RESET = 0x02
REQUEST_NAMES = {GET_DEVICE_ID: "GET_DEVICE_ID", GET_PORT_STATUS: "GET_PORT_STATUS", SOFT_RESET: "SOFT_RESET"}

# bmRequestType as the spec gives them (section 4.2) ...
REQTYPE_IN_INTERFACE = 0xA1  # class | IN | interface: GET_DEVICE_ID, GET_PORT_STATUS
REQTYPE_OUT_INTERFACE = 0x21  # class | OUT | interface: SOFT_RESET
# ... and as Linux's usblp sends SOFT_RESET: USB_TYPE_CLASS | USB_DIR_OUT |
# USB_RECIP_OTHER (usblp_reset()), so devices must accept recipient "other".
REQTYPE_OUT_OTHER = 0x23

# usblp's GET_DEVICE_ID: wValue = configuration index (0), wIndex =
# (ifnum << 8) | alternate setting (usblp_ctrl_msg: "High byte has the
# interface index. Low byte has the alternate setting."), wLength =
# USBLP_DEVICE_ID_SIZE - 1.  GET_PORT_STATUS and SOFT_RESET use wIndex = ifnum.
USBLP_DEVICE_ID_SIZE = 1024

# GET_PORT_STATUS bits, the Centronics status lines (section 4.2.2; usblp's
# LP_POUTPA / LP_PSELECD / LP_PERRORP).  The other bits are reserved, zero.
PAPER_EMPTY = 0x20
SELECT = 0x10
NOT_ERROR = 0x08
STATUS_OK = SELECT | NOT_ERROR  # 0x18

# Linux ioctls on /dev/usb/lpN (usblp.c, linux/lp.h)
LPGETSTATUS = 0x060B
_IOC_NONE, _IOC_READ = 0, 2


def _ioc(direction: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (ord("P") << 8) | nr


LPIOC_SOFT_RESET = _ioc(_IOC_NONE, 7, 0)  # IOCNR_SOFT_RESET


def LPIOC_GET_DEVICE_ID(length: int) -> int:  # noqa: N802 (the kernel's name)
    return _ioc(_IOC_READ, 1, length)  # IOCNR_GET_DEVICE_ID


# LUFA's printer bootloader (Bootloaders/Printer/Descriptors.c, BootloaderPrinter.c)
LUFA_VID, LUFA_PRINTER_PID = 0x03EB, 0x206B
DEFAULT_DEVICE_ID = "MFG:Generic;MDL:Generic_/_Text_Only;CMD:1284.4;CLS:PRINTER;"


def encode_device_id(text: str) -> bytes:
    """GET_DEVICE_ID data: a 2-byte big-endian length that counts itself, then the string."""
    raw = text.encode("ascii")
    if len(raw) + 2 > 0xFFFF:
        raise ValueError("IEEE 1284 device id too long")
    return struct.pack(">H", len(raw) + 2) + raw


def decode_device_id(raw: bytes) -> str:
    if len(raw) < 2:
        raise ValueError(f"device id reply of {len(raw)} bytes has no length field")
    length = struct.unpack(">H", raw[:2])[0]
    return bytes(raw[2:max(2, length)]).decode("ascii", "replace")


def parse_device_id(text: str) -> dict[str, str]:
    """``MFG:Generic;MDL:...;`` -> {"MFG": "Generic", ...} (IEEE 1284-2000 section 7.6)."""
    out = {}
    for item in text.split(";"):
        key, sep, value = item.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def describe_port_status(status: int) -> str:
    """Port status in usblp's words ("ok", "out of paper", "off-line", "on fire")."""
    if not status & SELECT:
        return "off-line"
    if status & PAPER_EMPTY:
        return "out of paper"
    if not status & NOT_ERROR:
        return "error"
    return "ok"


# --------------------------------------------------------------------------
# The status line on the bulk IN endpoint (bootkit's own format)

_OK_RE = re.compile(r"^OK job (\d+): (\d+) bytes, (\d+) records, crc32 ([0-9a-f]{8})")
_ERR_RE = re.compile(r"^ERROR job (\d+): (.*)$")


@dataclass(frozen=True)
class JobStatus:
    ok: bool
    job: int
    message: str
    size: int | None = None
    records: int | None = None
    crc32: int | None = None


def format_ok(job: int, size: int, records: int, crc32: int) -> str:
    return f"OK job {job}: {size} bytes, {records} records, crc32 {crc32:08x}\n"


def format_error(job: int, message: str) -> str:
    return f"ERROR job {job}: {message}\n"


def parse_status_line(text: str) -> JobStatus | None:
    text = text.strip()
    m = _OK_RE.match(text)
    if m:
        return JobStatus(True, int(m[1]), text, int(m[2]), int(m[3]), int(m[4], 16))
    m = _ERR_RE.match(text)
    if m:
        return JobStatus(False, int(m[1]), m[2])
    return None
