"""Signature and fuses through a DFU bootloader (:class:`bootkit.contracts.FuseAccess`).

Only Atmel FLIP has a command that reads the chip's signature: dfu-programmer's
``atmel_read_config`` sends the "read" command ``05 <data0> <data1>`` (Atmel's "AT90usb128x/
AT90usb64x USB DFU Bootloader Datasheet", Appendix A), checks the GETSTATUS that follows and
UPLOADs one byte; rows ``01 30`` (manufacturer code), ``01 31`` (family code: signature byte 1),
``01 60`` (product name: byte 2) and ``01 61`` (product revision: byte 3).  LUFA's
BootloaderDFU.c answers the same rows from the part's SIGNATURE_0..2, and so does our device
engine (``DfuFunction._read_command``).

No DFU dialect reads or writes AVR fuses: dfu-programmer refuses fuse operations on every
8-bit target ("target does not support fuse operation"), LUFA's bootloader has no such
command, and DFU 1.1 / DfuSe have no signature command at all (a DfuSe part's option bytes
are a memory region: ``bootkit read`` reads them).
"""

from __future__ import annotations

from ...memory import Chip
from .client import DfuClient, DfuError
from .finder import detach_to_dfu, find_interfaces
from .protocol import FLIP_READ_COMMAND, Status

# dfu-programmer atmel.c, atmel_read_config (DM_AVR rows): data0 0x01, data1 per byte
SIGNATURE_ROWS = (0x31, 0x60, 0x61)
MANUFACTURER_ROW = 0x30

ISP_HINT = "use an ISP programmer (bootkit serve isp) or avrdude"


def _cannot(dialect: str | None, what: str) -> DfuError:
    names = {"dfu": "DFU 1.1", "dfuse": "DfuSe", "flip": "FLIP"}
    if dialect in (None, "flip") and what.endswith("fuses"):
        # dfu-programmer: "target does not support fuse operation" on every 8-bit AVR
        return DfuError(f"FLIP cannot {what}: its bootloader has no fuse command; {ISP_HINT}")
    if dialect in ("dfu", "dfuse"):
        extra = " (option bytes are memory: bootkit read reads them)" if dialect == "dfuse" else ""
        return DfuError(f"{names[dialect]} cannot {what}: it has no such command{extra}")
    return DfuError(f"dfu/{dialect} cannot {what}")


def read_command(client: DfuClient, data0: int, data1: int) -> int:
    """One FLIP read ("get") command as dfu-programmer's ``atmel_read_command`` sends it: DNLOAD
    ``05 data0 data1``, GETSTATUS (must be OK), UPLOAD of one byte."""
    st = client.dnload_status(0, bytes((FLIP_READ_COMMAND, data0, data1)))
    if st.bStatus != Status.OK:
        raise DfuError(f"FLIP read {data0:02X} {data1:02X}: device reports {st.describe()}")
    answer = client.upload(0, 1)
    if len(answer) != 1:
        raise DfuError(f"FLIP read {data0:02X} {data1:02X}: the device returned {len(answer)} bytes, not 1")
    return answer[0]


def signature(backend=None, *, vid=None, pid=None, serial=None, dialect: str | None = None, alt=None,
              chip: Chip | None = None, transfer_size: int | None = None) -> bytes:
    """The 3 signature bytes a FLIP bootloader reports.

    The device is found (and a run-time one detached) as :func:`host.open_dialect` does, but no
    dialect object is built: FLIP's needs a chip, and reading the signature is how an unknown
    chip is found out (``--chip auto``).  DFU 1.1 and DfuSe devices have no signature command:
    :class:`DfuError` saying so (nothing is sent to a device whose dialect is given as one).
    """
    if dialect is not None and dialect != "flip":
        raise _cannot(dialect, "read a signature")
    items = find_interfaces(backend, vid=vid, pid=pid, serial=serial)
    if not items:
        raise DfuError("no DFU device found")
    dfu_mode = [i for i in items if not i.runtime]
    item = dfu_mode[0] if dfu_mode else detach_to_dfu(items[0], backend)
    guessed = dialect or item.guess_dialect()
    if guessed != "flip":
        raise _cannot(guessed, "read a signature")
    client = DfuClient(item, alt=alt, transfer_size=transfer_size)
    client.make_idle()
    return bytes(read_command(client, 0x01, row) for row in SIGNATURE_ROWS)


def read_fuses(dialect: str | None = None) -> dict[str, int]:
    """No DFU dialect reads fuses: :class:`DfuError` saying so, without touching the device."""
    raise _cannot(dialect, "read fuses")


def write_fuses(values: dict[str, int], dialect: str | None = None) -> dict[str, int]:
    """No DFU dialect writes fuses: :class:`DfuError` saying so; nothing is sent."""
    raise _cannot(dialect, "write fuses")
