"""USBasp: Thomas Fischl's USB ISP programmer (www.fischl.de/usbasp), both halves' shared
constants, and :class:`UsbaspLink`, the host side over pyusb.

A USBasp is an ATmega8 running V-USB: one vendor-specific device (16c0:05dc, manufacturer
"www.fischl.de", product "USBasp") with no endpoint besides ep0.  Every function is a
vendor control request, device recipient, whose 4 bytes wValue/wIndex (little-endian) are
the parameters (firmware/usbasp.h; avrdude's usbasp.c ``usbasp_transmit``):

==================  ===  ====================================================================
CONNECT               1  RESET low, SPI on (and back to the addresses in each request)
DISCONNECT            2  pins released: the target runs
TRANSMIT              3  one raw 4-byte ISP instruction, answers the 4 bytes shifted out
READFLASH             4  wLength bytes from the current address, one Read Program Memory each
ENABLEPROG            5  Programming Enable, up to 32 tries with a RESET pulse: answers 0 / 1
WRITEFLASH            6  wLength bytes; wIndex = page size (12 bits) and block flags (FIRST/LAST)
READEEPROM            7  wLength bytes of EEPROM
WRITEEEPROM           8  wLength bytes of EEPROM, a byte write (and ~9.6 ms) each
SETLONGADDRESS        9  the 32-bit address for what follows (firmware 2011+); from then on the
                         address in READ*/WRITE* requests is ignored until the next CONNECT
SETISPSCK            10  SCK option (table below), answers 0
TPI_*             11-16  TPI parts (ATtiny4/5/9/10); not emulated here
GETCAPABILITIES     127  4 bytes, little-endian capability bits (TPI, 3 MHz SCK)
==================  ===  ====================================================================
"""

from __future__ import annotations

import time
from typing import Any, Callable

from ..memory.chips import Chip, get_chip
from .errors import IspError, IspInputError
from .link import IspLink

# --- USB identity (usbasp.h USBASP_SHARED_VID/PID; usbconfig.h vendor and device names)
USBASP_VID = 0x16C0  # VOTI
USBASP_PID = 0x05DC  # obdev's shared PID for vendor-class devices (libusb)
USBASP_MANUFACTURER = "www.fischl.de"
USBASP_PRODUCT = "USBasp"

# --- function call identifiers (bRequest): firmware usbasp.h, avrdude usbasp.h
USBASP_FUNC_CONNECT = 1
USBASP_FUNC_DISCONNECT = 2
USBASP_FUNC_TRANSMIT = 3
USBASP_FUNC_READFLASH = 4
USBASP_FUNC_ENABLEPROG = 5
USBASP_FUNC_WRITEFLASH = 6
USBASP_FUNC_READEEPROM = 7
USBASP_FUNC_WRITEEEPROM = 8
USBASP_FUNC_SETLONGADDRESS = 9
USBASP_FUNC_SETISPSCK = 10
USBASP_FUNC_TPI_CONNECT = 11
USBASP_FUNC_TPI_DISCONNECT = 12
USBASP_FUNC_TPI_RAWREAD = 13
USBASP_FUNC_TPI_RAWWRITE = 14
USBASP_FUNC_TPI_READBLOCK = 15
USBASP_FUNC_TPI_WRITEBLOCK = 16
USBASP_FUNC_GETCAPABILITIES = 127

FUNC_NAMES = {
    USBASP_FUNC_CONNECT: "CONNECT", USBASP_FUNC_DISCONNECT: "DISCONNECT", USBASP_FUNC_TRANSMIT: "TRANSMIT",
    USBASP_FUNC_READFLASH: "READFLASH", USBASP_FUNC_ENABLEPROG: "ENABLEPROG", USBASP_FUNC_WRITEFLASH: "WRITEFLASH",
    USBASP_FUNC_READEEPROM: "READEEPROM", USBASP_FUNC_WRITEEEPROM: "WRITEEEPROM",
    USBASP_FUNC_SETLONGADDRESS: "SETLONGADDRESS", USBASP_FUNC_SETISPSCK: "SETISPSCK",
    USBASP_FUNC_TPI_CONNECT: "TPI_CONNECT", USBASP_FUNC_TPI_DISCONNECT: "TPI_DISCONNECT",
    USBASP_FUNC_TPI_RAWREAD: "TPI_RAWREAD", USBASP_FUNC_TPI_RAWWRITE: "TPI_RAWWRITE",
    USBASP_FUNC_TPI_READBLOCK: "TPI_READBLOCK", USBASP_FUNC_TPI_WRITEBLOCK: "TPI_WRITEBLOCK",
    USBASP_FUNC_GETCAPABILITIES: "GETCAPABILITIES",
}

# --- GETCAPABILITIES bits (the 4 answer bytes little-endian, as avrdude reads them)
USBASP_CAP_TPI = 0x01
USBASP_CAP_3MHZ = 1 << 24  # UsbAsp-flash firmware's 3 MHz SCK (avrdude 7.x)

# --- WRITEFLASH block flags, in the low nibble of wIndex's high byte
USBASP_BLOCKFLAG_FIRST = 1  # the block starts a page: the page counter restarts
USBASP_BLOCKFLAG_LAST = 2  # the block ends the write: a partly loaded page is written too

# --- avrdude's transfer sizes (usbasp.h): a block per control transfer
USBASP_READBLOCKSIZE = 200
USBASP_WRITEBLOCKSIZE = 200

# --- ISP SCK options (SETISPSCK's wValue low byte)
USBASP_ISP_SCK_AUTO = 0
USBASP_ISP_SCK_0_5 = 1  # 500 Hz
USBASP_ISP_SCK_1 = 2
USBASP_ISP_SCK_2 = 3
USBASP_ISP_SCK_4 = 4
USBASP_ISP_SCK_8 = 5
USBASP_ISP_SCK_16 = 6
USBASP_ISP_SCK_32 = 7
USBASP_ISP_SCK_93_75 = 8
USBASP_ISP_SCK_187_5 = 9
USBASP_ISP_SCK_375 = 10
USBASP_ISP_SCK_750 = 11
USBASP_ISP_SCK_1500 = 12
USBASP_ISP_SCK_3000 = 13  # UsbAsp-flash only (USBASP_CAP_3MHZ)

# (option, Hz), fastest first: avrdude's usbaspSCKoptions
SCK_OPTIONS: tuple[tuple[int, int], ...] = (
    (USBASP_ISP_SCK_3000, 3_000_000), (USBASP_ISP_SCK_1500, 1_500_000), (USBASP_ISP_SCK_750, 750_000),
    (USBASP_ISP_SCK_375, 375_000), (USBASP_ISP_SCK_187_5, 187_500), (USBASP_ISP_SCK_93_75, 93_750),
    (USBASP_ISP_SCK_32, 32_000), (USBASP_ISP_SCK_16, 16_000), (USBASP_ISP_SCK_8, 8_000),
    (USBASP_ISP_SCK_4, 4_000), (USBASP_ISP_SCK_2, 2_000), (USBASP_ISP_SCK_1, 1_000), (USBASP_ISP_SCK_0_5, 500),
)

# bmRequestType: vendor, device recipient; IN adds bit 7
REQUEST_OUT = 0x40
REQUEST_IN = 0xC0

_MEMORY_FUNCS = {
    "flash": (USBASP_FUNC_READFLASH, USBASP_FUNC_WRITEFLASH),
    "eeprom": (USBASP_FUNC_READEEPROM, USBASP_FUNC_WRITEEEPROM),
}


def sck_option(sck_hz: int | None, *, three_mhz: bool = False) -> tuple[int, int]:
    """(SETISPSCK option, Hz it gives) for a wanted SCK frequency, as avrdude picks it: the
    fastest option not above ``sck_hz`` (1 Hz of slack for rounding), the slowest if all are;
    None (or 0): AUTO, (0, 0).  3 MHz only when the programmer says it can."""
    if not sck_hz:
        return USBASP_ISP_SCK_AUTO, 0
    if sck_hz < 0:
        raise IspInputError(f"SCK frequency {sck_hz} Hz is negative")
    options = SCK_OPTIONS if three_mhz else SCK_OPTIONS[1:]
    for option, hz in options:
        if sck_hz >= hz - 1:
            return option, hz
    return options[-1]


def sck_hz_of(option: int) -> int:
    """The SCK frequency (Hz) of a SETISPSCK option; 0 for AUTO or an unknown option."""
    return dict(SCK_OPTIONS).get(option, 0)


def write_index(page_size: int, flags: int) -> int:
    """WRITEFLASH's wIndex: page size low byte, then block flags | page size bits 8-11 << 4
    (avrdude's "Mega128 fix": cmd[2] = page_size & 0xFF, cmd[3] = flags + ((page_size & 0xF00) >> 4))."""
    if not 0 <= page_size <= 0xFFF:
        raise IspInputError(f"page size {page_size} does not fit USBasp's 12 bits")
    return (page_size & 0xFF) | (((flags & 0x0F) | ((page_size & 0xF00) >> 4)) << 8)


def parse_write_index(w_index: int) -> tuple[int, int]:
    """(page size, block flags) from WRITEFLASH's wIndex, as the firmware reads them."""
    high = w_index >> 8
    return (w_index & 0xFF) | ((high & 0xF0) << 4), high & 0x0F


def _usb_error(e: Exception) -> str:
    return getattr(e, "strerror", None) or str(e) or type(e).__name__


class UsbaspLink(IspLink):
    """A USBasp between this host and the AVR, over pyusb.

    ``backend=None`` finds the programmer through libusb; any pyusb backend works (bootkit's
    in-process bus ``transports.virtual.get_backend()``, the USB/IP client backend).  The
    programmer is found as avrdude finds it: 16c0:05dc with manufacturer "www.fischl.de"
    and product "USBasp" (``serial`` narrows it down), or given as a pyusb ``device``.

    ``settle`` is the wait after CONNECT before Programming Enable: avrdude's
    ``usleep(100000)`` in usbasp_initialize, for a real target coming out of reset.
    """

    name = "usbasp"

    def __init__(self, device: Any = None, *, backend: Any = None, vid: int = USBASP_VID, pid: int = USBASP_PID,
                 serial: str | None = None, chip: Chip | str | None = None, timeout_ms: int = 5000,
                 settle: float = 0.1, sleep: Callable[[float], None] = time.sleep):
        self.chip = get_chip(chip) if isinstance(chip, str) else chip
        self.timeout_ms = timeout_ms
        self.settle = settle
        self._sleep = sleep
        self.capabilities = 0
        self.sck_hz = 0  # what SETISPSCK set (0: the programmer's AUTO)
        self.connected = False
        self.dev = device if device is not None else self._find(backend, vid, pid, serial)

    # ------------------------------------------------------------------
    # finding the programmer
    @staticmethod
    def _find(backend: Any, vid: int, pid: int, serial: str | None) -> Any:
        import usb.core
        import usb.util

        try:
            candidates = list(usb.core.find(find_all=True, idVendor=vid, idProduct=pid, backend=backend) or [])
        except usb.core.NoBackendError:
            raise IspError("no USB access: libusb is not installed (a USBasp needs it)") from None
        except usb.core.USBError as e:
            raise IspError(f"listing USB devices failed: {_usb_error(e)}") from None
        names_unread = 0
        for dev in candidates:
            try:
                manufacturer = usb.util.get_string(dev, dev.iManufacturer) if dev.iManufacturer else None
                product = usb.util.get_string(dev, dev.iProduct) if dev.iProduct else None
                found_serial = usb.util.get_string(dev, dev.iSerialNumber) if dev.iSerialNumber else None
            except (usb.core.USBError, ValueError, NotImplementedError):
                names_unread += 1  # avrdude: "cannot query manufacturer for device"
                continue
            # avrdude's usbOpenDevice matches both names when it is looking for the shared VID/PID
            if (vid, pid) == (USBASP_VID, USBASP_PID) and (manufacturer, product) != (USBASP_MANUFACTURER,
                                                                                   USBASP_PRODUCT):
                continue
            if serial is not None and found_serial != serial:
                continue
            return dev
        what = f"{vid:04x}:{pid:04x}" + (f' "{USBASP_MANUFACTURER}" "{USBASP_PRODUCT}"'
                                          if (vid, pid) == (USBASP_VID, USBASP_PID) else "")
        if serial is not None:
            what += f" serial {serial!r}"
        if names_unread:
            raise IspError(f"no USBasp {what} found: {names_unread} device(s) with that ID could not be "
                           "opened to read their names (permissions? a udev rule for 16c0:05dc)")
        raise IspError(f"no USBasp {what} found: check that it is plugged in")

    # ------------------------------------------------------------------
    # one function call
    def _transmit(self, function: int, send: bytes = bytes(4), *, receive: int | None = None,
                  data: bytes | None = None) -> bytes:
        """One vendor request: ``send``'s 4 bytes as wValue and wIndex (little-endian, as
        avrdude's usbasp_transmit); ``receive`` bytes wanted IN, or ``data`` sent OUT.
        Returns what came IN (for OUT: ``data``'s length as that many zero bytes is never
        needed; the count is checked here)."""
        import usb.core

        w_value = send[0] | send[1] << 8
        w_index = send[2] | send[3] << 8
        name = FUNC_NAMES.get(function, str(function))
        try:
            if data is not None:
                n = self.dev.ctrl_transfer(REQUEST_OUT, function, w_value, w_index, data, self.timeout_ms)
                if n != len(data):
                    raise IspError(f"USBasp {name}: {n} of {len(data)} bytes written")
                return b""
            reply = self.dev.ctrl_transfer(REQUEST_IN, function, w_value, w_index, receive or 0, self.timeout_ms)
        except usb.core.USBTimeoutError:
            raise IspError(f"USBasp {name}: no answer within {self.timeout_ms} ms") from None
        except usb.core.USBError as e:
            raise IspError(f"USBasp {name} failed: {_usb_error(e)}") from None
        return bytes(reply)

    @staticmethod
    def _le32(value: int) -> bytes:
        return (value & 0xFFFFFFFF).to_bytes(4, "little")

    # ------------------------------------------------------------------
    # IspLink
    def connect(self, *, sck_hz: int | None = None) -> None:
        """GETCAPABILITIES, SETISPSCK, CONNECT, then ENABLEPROG, as avrdude's usbasp_initialize
        (the firmware itself retries Programming Enable 32 times with a RESET pulse)."""
        caps = self._transmit(USBASP_FUNC_GETCAPABILITIES, receive=4)
        self.capabilities = int.from_bytes(caps, "little") if len(caps) == 4 else 0
        option, hz = sck_option(sck_hz, three_mhz=bool(self.capabilities & USBASP_CAP_3MHZ))
        answer = self._transmit(USBASP_FUNC_SETISPSCK, bytes([option, 0, 0, 0]), receive=4)
        # avrdude only warns ("cannot set sck period; please check for usbasp firmware update"):
        # firmware before 2009 has no SETISPSCK and runs at its jumper's speed
        self.sck_hz = hz if answer[:1] == b"\x00" and len(answer) == 1 else 0
        self._transmit(USBASP_FUNC_CONNECT, receive=4)
        if self.settle > 0:
            self._sleep(self.settle)
        answer = self._transmit(USBASP_FUNC_ENABLEPROG, receive=4)
        if len(answer) != 1 or answer[0] != 0:
            got = answer.hex() or "nothing"
            raise IspError(f"programming enable: the target does not answer (USBasp ENABLEPROG gave {got}): "
                           "check the ISP cable, the target's power and clock, or try a slower SCK")
        self.connected = True

    def disconnect(self) -> None:
        try:
            self._transmit(USBASP_FUNC_DISCONNECT, receive=4)
        finally:
            self.connected = False

    def transact(self, cmd: bytes) -> bytes:
        if len(cmd) != 4:
            raise IspInputError(f"an ISP instruction is 4 bytes, not {len(cmd)}")
        answer = self._transmit(USBASP_FUNC_TRANSMIT, bytes(cmd), receive=4)
        if len(answer) != 4:
            # avrdude's usbasp_spi_cmd: "wrong response size"
            raise IspError(f"USBasp TRANSMIT answered {len(answer)} bytes, not 4")
        return answer

    def read_memory(self, memory: str, address: int, length: int) -> bytes:
        """READFLASH / READEEPROM in 200-byte blocks, each after SETLONGADDRESS (the 16-bit
        address in the request too, for firmware without SETLONGADDRESS), as avrdude's
        usbasp_spi_paged_load.  The programmer loads the extended address byte itself."""
        read_func = self._memory_funcs(memory)[0]
        if address < 0 or length < 0:
            raise IspInputError(f"{memory} read at {address:#x}, {length} bytes: negative")
        out = bytearray()
        block = USBASP_READBLOCKSIZE // 10 if 0 < self.sck_hz < 10_000 else USBASP_READBLOCKSIZE
        while len(out) < length:
            n = min(block, length - len(out))
            at = address + len(out)
            self._transmit(USBASP_FUNC_SETLONGADDRESS, self._le32(at), receive=4)
            got = self._transmit(read_func, bytes([at & 0xFF, (at >> 8) & 0xFF, 0, 0]), receive=n)
            if len(got) != n:
                raise IspError(f"USBasp {FUNC_NAMES[read_func]} at {at:#x}: {len(got)} of {n} bytes")
            out += got
        return bytes(out)

    def write_page(self, memory: str, address: int, data: bytes, *, page_size: int) -> None:
        """WRITEFLASH / WRITEEEPROM in 200-byte blocks, the first flagged FIRST (the
        programmer's page counter restarts) and the last LAST (a partly loaded page is
        written too), the page size in wIndex: avrdude's usbasp_spi_paged_write.  The
        programmer loads the page buffer, writes each full page and polls the target."""
        write_func = self._memory_funcs(memory)[1]
        # the same rule as IspLink.write_page: the programmer's page counter starts at the
        # first byte, so a write crossing a page boundary would flush pages at the wrong place
        if address < 0 or page_size <= 0 or address // page_size != (address + max(len(data), 1) - 1) // page_size:
            raise IspInputError(f"{memory} 0x{address:X}+{len(data)} crosses a {page_size}-byte page boundary")
        if not data:
            return
        size = page_size if memory == "flash" else 0  # the firmware ignores it for EEPROM
        flags = USBASP_BLOCKFLAG_FIRST
        block = USBASP_WRITEBLOCKSIZE // 10 if 0 < self.sck_hz < 10_000 else USBASP_WRITEBLOCKSIZE
        done = 0
        while done < len(data):
            n = min(block, len(data) - done)
            if done + n == len(data):
                flags |= USBASP_BLOCKFLAG_LAST
            at = address + done
            self._transmit(USBASP_FUNC_SETLONGADDRESS, self._le32(at), receive=4)
            index = write_index(size, flags)
            self._transmit(write_func, bytes([at & 0xFF, (at >> 8) & 0xFF, index & 0xFF, index >> 8]),
                           data=bytes(data[done:done + n]))
            flags = 0
            done += n

    @staticmethod
    def _memory_funcs(memory: str) -> tuple[int, int]:
        try:
            return _MEMORY_FUNCS[memory]
        except KeyError:
            raise IspInputError(f"memory {memory!r}: a USBasp reads and writes flash or eeprom") from None

    def close(self) -> None:
        """DISCONNECT (the target runs again) when connected, then release the USB device."""
        import usb.util

        try:
            if self.connected:
                self.disconnect()
        except IspError:
            pass  # the programmer is gone (or failing): nothing left to release on it, and an
            # error raised here would hide the one that ended a `with` block
        finally:
            try:
                usb.util.dispose_resources(self.dev)
            except Exception:  # noqa: BLE001 - releasing a device already gone must not fail
                pass


__all__ = [name for name in dir() if name.startswith(("USBASP_", "SCK_", "REQUEST_"))] + [
    "FUNC_NAMES", "UsbaspLink", "parse_write_index", "sck_hz_of", "sck_option", "write_index",
]
