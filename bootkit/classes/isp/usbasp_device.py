"""The USBasp programmer's device side: its vendor control requests in front of an
emulated AVR on its ISP header.

:class:`UsbaspFunction` is what the USBasp firmware (Thomas Fischl, main.c and isp.c of
usbasp.2011-05-28) does between V-USB and the ISP wires, kept to its semantics: the
programmer keeps the address (16 bits from each request, or 32 bits set once by
SETLONGADDRESS), loads the target's page buffer byte by byte, writes each page when its
own page counter (restarted by the FIRST block flag) runs out and the partly loaded last
page on the LAST flag, sends Load Extended Address only when the address's bits 17 and up
change, and retries Programming Enable 32 times with a RESET pulse.  Where the firmware
waits for the target (data polling after a page write, a fixed 9.6 ms after an EEPROM
byte), this one polls RDY/BSY ($F0), which is instant unless the target runs in real-time
mode.

:func:`usbasp_device` is the whole USB device as the real one enumerates: 16c0:05dc,
"www.fischl.de" / "USBasp", vendor-specific device class, one interface without endpoints
(V-USB's usbconfig.h for USBasp: USB_CFG_DEVICE_CLASS 0xff, no interrupt endpoint).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable

from ...isp import protocol as P
from ...isp.usbasp import (
    USBASP_BLOCKFLAG_FIRST,
    USBASP_BLOCKFLAG_LAST,
    USBASP_FUNC_CONNECT,
    USBASP_FUNC_DISCONNECT,
    USBASP_FUNC_ENABLEPROG,
    USBASP_FUNC_GETCAPABILITIES,
    USBASP_FUNC_READEEPROM,
    USBASP_FUNC_READFLASH,
    USBASP_FUNC_SETISPSCK,
    USBASP_FUNC_SETLONGADDRESS,
    USBASP_FUNC_TRANSMIT,
    USBASP_FUNC_WRITEEEPROM,
    USBASP_FUNC_WRITEFLASH,
    USBASP_ISP_SCK_AUTO,
    USBASP_MANUFACTURER,
    USBASP_PID,
    USBASP_PRODUCT,
    USBASP_VID,
    parse_write_index,
)
from ...usb.descriptors import DeviceInfo, Interface
from ...usb.device import TYPE_STANDARD, Device, Function, SetupPacket, Stall

if TYPE_CHECKING:
    from ...isp.target import EmulatedAvr

# isp.c ispEnterProgrammingMode: "uchar count = 32"
ENABLE_TRIES = 32
# isp.c: a page write is polled 30 x 320 us at most (CLOCK_T_320us), an EEPROM byte waited
# for 30 x 320 us (clockWait(30), "wait 9,6 ms"); beyond that the firmware goes on regardless
PAGE_POLL_LIMIT = 30 * 320e-6
EEPROM_WAIT = 30 * 320e-6

_READS = (USBASP_FUNC_READFLASH, USBASP_FUNC_READEEPROM)
_WRITES = (USBASP_FUNC_WRITEFLASH, USBASP_FUNC_WRITEEEPROM)


class UsbaspFunction(Function):
    """A USBasp's vendor requests (device recipient) driving ``target``'s ISP pins.

    ``clock`` and ``sleep`` are for the waits the firmware spends polling a busy target
    (real-time mode only; a fast-mode target is never busy): a control transfer's data
    is handled here as a whole, while the real programmer NAKs the next packet meanwhile.
    """

    name = "usbasp"

    def __init__(self, target: "EmulatedAvr", *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        super().__init__()
        self.target = target
        self.clock = clock
        self.sleep = sleep
        self.sck_option = USBASP_ISP_SCK_AUTO
        self.connected = False  # RESET held low, SPI driven (CONNECT .. DISCONNECT)
        self.address = 0
        self.address_newmode = False
        self.page_size = 0
        self.block_flags = 0
        self.page_counter = 0
        self.hiaddr: int | None = None  # the extended address byte last loaded (None: unknown)
        self.gave_up_waiting = 0  # page/EEPROM writes after which the target was still busy

    # ------------------------------------------------------------------
    # declarations
    def interfaces(self, speed: str = "full") -> list[Interface]:
        # V-USB's one interface, class 0, no endpoints: everything goes through ep0
        return [Interface(0, cls=0, subclass=0, protocol=0)]

    # ------------------------------------------------------------------
    # the wires
    def _spi(self, frame: bytes) -> bytes:
        if not self.connected:
            # before CONNECT (after DISCONNECT) the ISP pins are inputs: nothing reaches the
            # target, and MISO reads high
            return b"\xff\xff\xff\xff"
        return self.target.spi(frame)

    def _update_extended(self, address: int) -> None:
        """isp.c ispUpdateExtended: Load Extended Address when the byte address's bits 17 and
        up (the word address's bits 16 and up) differ from what was last loaded."""
        hi = (address >> 17) & 0xFF
        if hi != self.hiaddr:
            self.hiaddr = hi
            self._spi(P.load_extended_address(hi))

    def _read_flash(self, address: int) -> int:
        self._update_extended(address)
        return self._spi(P.read_program((address >> 1) & 0xFFFF, bool(address & 1)))[P.DATA_INDEX]

    def _read_eeprom(self, address: int) -> int:
        return self._spi(P.read_eeprom(address & 0xFFFF))[P.DATA_INDEX]

    def _load_flash(self, address: int, value: int) -> None:
        self._update_extended(address)
        frame = bytearray(P.load_program_page((address >> 1) & 0xFFFF, bool(address & 1), value))
        # isp.c sends the word address's high byte where the datasheets have $00 (ignored by
        # the silicon): the same bytes a real USBasp puts on the wire
        frame[1] = (address >> 9) & 0xFF
        self._spi(bytes(frame))

    def _flush_page(self, address: int) -> None:
        """isp.c ispFlushPage: Write Program Memory Page for the page holding ``address``,
        then wait for the target (RDY/BSY here; the firmware polls the data)."""
        self._update_extended(address)
        self._spi(P.write_program_page((address >> 1) & 0xFFFF))
        self._wait_ready(PAGE_POLL_LIMIT)

    def _write_eeprom(self, address: int, value: int) -> None:
        self._spi(P.write_eeprom(address & 0xFFFF, value))
        self._wait_ready(EEPROM_WAIT)

    def _wait_ready(self, limit: float) -> None:
        """Poll RDY/BSY until the target is ready, at most ``limit`` seconds (or, when the
        target says how long it stays busy, until then): then the firmware goes on anyway."""
        deadline = self.clock() + max(limit, self.target.busy_until - self.clock())
        while self._spi(P.poll_rdy())[P.DATA_INDEX] & P.BUSY_BIT:
            left = min(deadline, self.target.busy_until) - self.clock()
            if self.clock() >= deadline:
                self.gave_up_waiting += 1  # the firmware goes on regardless
                return
            self.sleep(max(left, 0.0001))

    def _enter_programming_mode(self) -> int:
        """isp.c ispEnterProgrammingMode: 0 when the target echoes $53, else pulse RESET and
        try again, 32 times; 1 when it never does."""
        for _ in range(ENABLE_TRIES):
            if self._spi(P.programming_enable())[P.ECHO_INDEX] == P.ECHO:
                return 0
            if self.connected:  # RST is an input before CONNECT: the pulse goes nowhere
                self.target.reset(False)
                self.target.reset(True)
        return 1

    # ------------------------------------------------------------------
    # requests
    def setup(self, req: SetupPacket, data: bytes) -> bytes | None:
        # V-USB hands every non-standard request to usbFunctionSetup, which looks at bRequest
        # only (main.c); standard ones never get here
        if req.type == TYPE_STANDARD:
            raise Stall
        func = req.bRequest
        if func in _READS and not req.is_in or func in _WRITES and req.is_in:
            # usbFunctionRead/usbFunctionWrite outside their state answer 0xff: V-USB stalls
            raise Stall
        params = req.pack()  # the firmware's data[8]: data[2..5] = wValue, wIndex little-endian
        if func == USBASP_FUNC_CONNECT:
            # ispConnect: RESET low, SPI on; the extended address is unknown again (isp_hiaddr = 0xff)
            self.address_newmode = False
            self.hiaddr = None
            self.connected = True
            self.target.reset(True)
            return b""
        if func == USBASP_FUNC_DISCONNECT:
            self.connected = False
            self.target.reset(False)
            return b""
        if func == USBASP_FUNC_TRANSMIT:
            return self._spi(params[2:6])
        if func == USBASP_FUNC_ENABLEPROG:
            return bytes([self._enter_programming_mode()])
        if func == USBASP_FUNC_SETLONGADDRESS:
            self.address_newmode = True
            self.address = int.from_bytes(params[2:6], "little")
            return b""
        if func == USBASP_FUNC_SETISPSCK:
            self.sck_option = params[2]
            return b"\x00"
        if func == USBASP_FUNC_GETCAPABILITIES:
            # no TPI, no 3 MHz SCK: avrdude then programs every part through ISP
            return bytes(4)
        if func in _READS:
            return self._read(func, req)
        if func in _WRITES:
            self._write(func, req, data)
            return None
        # anything else (the TPI functions among them): usbFunctionSetup's len = 0
        return b"" if req.is_in else None

    def _read(self, func: int, req: SetupPacket) -> bytes:
        if not self.address_newmode:
            self.address = req.wValue
        out = bytearray()
        for _ in range(req.wLength):
            if func == USBASP_FUNC_READFLASH:
                out.append(self._read_flash(self.address))
            else:
                out.append(self._read_eeprom(self.address))
            self.address += 1
        return bytes(out)

    def _write(self, func: int, req: SetupPacket, data: bytes) -> None:
        if not self.address_newmode:
            self.address = req.wValue
        if func == USBASP_FUNC_WRITEFLASH:
            self.page_size, self.block_flags = parse_write_index(req.wIndex)
            if self.block_flags & USBASP_BLOCKFLAG_FIRST:
                # the firmware's counter is a uchar: a 256-byte page counts from 0 and wraps,
                # which ends the same, but then sees a pending page at LAST and writes the full
                # page a second time (no change on silicon); an int counter writes it once
                self.page_counter = self.page_size
        else:
            self.page_size, self.block_flags = 0, 0
        remaining = len(data)
        for value in data:
            if func == USBASP_FUNC_WRITEFLASH:
                self._load_flash(self.address, value)
                if self.page_size:
                    self.page_counter -= 1
                    if self.page_counter == 0:
                        self._flush_page(self.address)
                        self.page_counter = self.page_size
                else:
                    # not paged (pagesize 0): ispWriteFlash with polling, for parts that
                    # write each byte as it comes
                    self._wait_ready(PAGE_POLL_LIMIT)
            else:
                self._write_eeprom(self.address, value)
            remaining -= 1
            if remaining == 0 and func == USBASP_FUNC_WRITEFLASH and (
                    self.block_flags & USBASP_BLOCKFLAG_LAST) and self.page_counter != self.page_size:
                self._flush_page(self.address)  # the last block and a page pending: write it now
            self.address += 1


def usbasp_device(target: "EmulatedAvr", *, vid: int = USBASP_VID, pid: int = USBASP_PID,
                  serial: str | None = None) -> Device:
    """A whole USBasp with ``target`` on its ISP header, as it enumerates (see module doc)."""
    info = DeviceInfo(
        idVendor=vid, idProduct=pid, bcdDevice=0x0104, manufacturer=USBASP_MANUFACTURER,
        product=USBASP_PRODUCT, serial=serial, bcdUSB=0x0110, bDeviceClass=0xFF, bMaxPacketSize0=8,
        bMaxPower=25,  # usbconfig.h USB_CFG_MAX_BUS_POWER 50 (mA)
    )
    return Device(info, [UsbaspFunction(target)])
