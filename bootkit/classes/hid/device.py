"""HID device side: the HalfKay, LUFA and native raw-HID engines, and the
USB Function that carries them.

The engines are pure state machines: events in (an output report by
SET_REPORT or on the interrupt OUT endpoint, an IN token, a bus reset),
results out (nothing, a refusal, an input report, a ``leave`` signal).
HalfKay and LUFA refuse bad reports the only way they can, with a STALL
of the SET_REPORT; the native dialect answers every report with a status.
A refused report writes nothing: every check runs before the memory is
touched.
"""

from __future__ import annotations

from collections import deque
from typing import Callable

from ...memory import Chip, MemoryFault
from ...usb.descriptors import Endpoint, Interface
from ...usb.device import (
    GET_DESCRIPTOR,
    RECIP_INTERFACE,
    TYPE_CLASS,
    TYPE_STANDARD,
    Function,
    SetupPacket,
    SignalKind,
    Stall,
)
from ..native import NativeCommands, NativeFault, Op, refusal_for
from .protocol import (
    CRC_APPLICATION,
    CRC_BOOTLOADER,
    COMMAND_HEADER,
    GET_IDLE,
    GET_PROTOCOL,
    GET_REPORT,
    HALFKAY_USAGE_PAGE,
    HID_CLASS,
    HID_DESCRIPTOR,
    HID_PROTOCOL_NONE,
    HID_SUBCLASS_NONE,
    LUFA_START_APPLICATION,
    LUFA_USAGE,
    LUFA_USAGE_PAGE,
    NATIVE_USAGE,
    NATIVE_USAGE_PAGE,
    NATIVE_VERSION,
    REPORT_DESCRIPTOR,
    REPORT_INPUT,
    REPORT_OUTPUT,
    REPORT_SIZE,
    SET_IDLE,
    SET_PROTOCOL,
    SET_REPORT,
    OPS,
    Command,
    HalfKayMcu,
    NativeStatus,
    halfkay_decode,
    hid_descriptor,
    lufa_page_addressing,
    native_reply,
    pack_info,
    status_for,
    vendor_report_descriptor,
    XUSB_REPORT_SIZE,
    XUSB_VERSION,
    XusbBootInfo,
    XusbCommand,
    XusbPacket,
    XusbStatus,
    nvm_crc,
    pack_boot_info,
    xusb_report_descriptor,
)


class HidFault(Exception):
    """A report the engine refuses (HalfKay, LUFA: STALL; native: ``status``)."""

    def __init__(self, why: str, status: NativeStatus = NativeStatus.ERROR):
        super().__init__(why)
        self.status = status


class HidEngine:
    """What every dialect's engine offers its Function."""

    dialect = "hid"
    uses_out_endpoint = False
    report_descriptor: bytes = b""

    def __init__(self, memory, chip: Chip, *, signal: Callable[..., None] | None = None):
        self.memory = memory
        self.chip = chip
        self.signal = signal or (lambda kind, reason="", delay=0.0: None)
        # how long the memory is busy after an operation (HidFunction: Function.busy)
        self.busy: Callable[[float], object] = lambda seconds: None
        # the native command set's checks, which HalfKay and LUFA writes pass through too
        self.native = NativeCommands(memory, chip, busy=lambda seconds: self.busy(seconds))
        self.refusals: list[str] = []  # why reports were refused (for tests and logs)

    @property
    def app_start(self) -> int:
        return self.native.app_start

    @property
    def app_end(self) -> int:
        return self.native.app_end

    def _check_span(self, address: int, length: int, what: str) -> None:
        """Refuse a write outside the application region before anything is touched."""
        try:
            self.native.check_span(address, length, what)
        except NativeFault as fault:
            raise HidFault(str(fault), status_for(fault.refusal)) from None

    def _leave(self, reason: str, delay: float = 0.0) -> None:
        """Start the application: mark it valid when it is complete, then reset."""
        try:
            self.busy(self.memory.manifest())
        except MemoryFault:
            pass  # blank flash: the board's entry policy brings the bootloader back
        self.signal(SignalKind.LEAVE, reason, delay)

    # events
    def set_report(self, data: bytes) -> None:
        raise HidFault("SET_REPORT not supported")

    def get_report(self) -> bytes:
        raise HidFault("GET_REPORT not supported")

    def out_report(self, data: bytes) -> None:
        raise HidFault("no interrupt OUT endpoint")

    def in_report(self, max_length: int) -> bytes | None:
        return None  # NAK: HalfKay and LUFA never send input reports

    def bus_reset(self) -> None:
        pass

    def host_activity(self) -> None:
        """A request from a host (the SOFs that come with it): only xusb's watchdog cares."""

    def tick(self, now: float) -> None:
        """Timers (xusb's watchdog); the transport calls it between transactions."""


class HalfKayEngine(HidEngine):
    """PJRC's HalfKay: one output report per block by SET_REPORT on endpoint 0.

    As teensy_loader_cli drives it: the first block after enumeration erases
    the chip (the host gives it 3 s for that), later blocks only program;
    address bytes 0xFF boot the application.
    """

    dialect = "halfkay"

    def __init__(self, memory, chip: Chip, mcu: HalfKayMcu, **kw):
        super().__init__(memory, chip, **kw)
        self.mcu = mcu
        # code above teensy_loader_cli's code size is HalfKay's own
        self.native.app_end = min(self.native.app_end, self.native.app_start + mcu.code_size)
        self.report_descriptor = vendor_report_descriptor(HALFKAY_USAGE_PAGE, mcu.board_id, mcu.report_size)
        self.erased = False

    def set_report(self, data: bytes) -> None:
        try:
            address, block = halfkay_decode(self.mcu, data)
        except ValueError as exc:
            raise HidFault(str(exc)) from None
        if isinstance(address, str):  # protocol.HALFKAY_BOOT: address bytes 0xFF
            self.erased = False
            self._leave("HalfKay boot command")
            return
        size = self.mcu.block_size
        if len(data) < self.mcu.report_size:
            raise HidFault(f"HalfKay report of {len(data)} bytes, a block needs {self.mcu.report_size}")
        if address % size:
            raise HidFault(f"block address 0x{address:X} is not a multiple of {size}")
        self._check_span(address, size, "block")
        if not self.erased:
            self.busy(self.memory.erase_all())
            self.erased = True
        try:
            self.busy(self.memory.program(address, block))
        except MemoryFault as exc:  # a block written twice without the erase: refuse it
            raise HidFault(str(exc)) from None

    def bus_reset(self) -> None:
        self.erased = False


class LufaEngine(HidEngine):
    """LUFA's HID bootloader (BootloaderHID.c): 2-byte address + one flash page.

    Each page is erased, then written (boot_page_erase, boot_page_fill,
    boot_page_write); pages the host does not send keep what they held.
    Parts over 64 KiB carry the address >> 8.  0xFFFF starts the application.
    """

    dialect = "lufa"

    def __init__(self, memory, chip: Chip, *, interrupt_out: bool = False, **kw):
        super().__init__(memory, chip, **kw)
        self.page_size = chip.page_size
        self.report_length = 2 + self.page_size
        self.paged = lufa_page_addressing(chip.flash_size)
        self.uses_out_endpoint = interrupt_out
        self.report_descriptor = vendor_report_descriptor(LUFA_USAGE_PAGE, LUFA_USAGE, self.report_length)
        self._buffer = bytearray()

    def set_report(self, data: bytes) -> None:
        if len(data) < 2:
            raise HidFault(f"LUFA report of {len(data)} bytes is shorter than its 2-byte address")
        field = data[0] | data[1] << 8
        if field == LUFA_START_APPLICATION:
            self._leave("LUFA start application (0xFFFF)")
            return
        if len(data) < self.report_length:
            raise HidFault(f"LUFA report of {len(data)} bytes, a page needs {self.report_length}")
        address = field << 8 if self.paged else field
        if address % self.page_size:
            raise HidFault(f"page address 0x{address:X} is not a multiple of {self.page_size}")
        self._check_span(address, self.page_size, "page")
        try:
            self.busy(self.memory.erase(address))
            self.busy(self.memory.program(address, bytes(data[2:self.report_length])))
        except MemoryFault as exc:
            raise HidFault(str(exc)) from None

    def out_report(self, data: bytes) -> None:
        # A report longer than wMaxPacketSize arrives in several packets.
        if not self.uses_out_endpoint:
            raise HidFault("no interrupt OUT endpoint")
        self._buffer += data
        if len(self._buffer) >= 2 and (self._buffer[0] | self._buffer[1] << 8) == LUFA_START_APPLICATION:
            self._buffer.clear()
            self._leave("LUFA start application (0xFFFF)")
            return
        while len(self._buffer) >= self.report_length:
            report = bytes(self._buffer[:self.report_length])
            del self._buffer[:self.report_length]
            try:
                self.set_report(report)
            except HidFault:
                self._buffer.clear()
                raise

    def bus_reset(self) -> None:
        self._buffer.clear()


class NativeEngine(HidEngine):
    """bootkit's raw-HID dialect: 64-byte reports, each answered with a status.

    Layout in docs/personalities/hid.md.  WRITE checks the whole span
    (inside the application, page-aligned, erased) before it accepts data;
    each data report is then programmed and acknowledged.
    """

    dialect = "native"
    uses_out_endpoint = True
    QUEUE = 32  # input reports held for the host; the oldest go first

    def __init__(self, memory, chip: Chip, **kw):
        super().__init__(memory, chip, **kw)
        self.page_size = chip.page_size
        self.report_descriptor = vendor_report_descriptor(NATIVE_USAGE_PAGE, NATIVE_USAGE, REPORT_SIZE,
                                                          REPORT_SIZE)
        self.queue: deque[bytes] = deque(maxlen=self.QUEUE)
        self._reset_state()

    def _reset_state(self) -> None:
        self.write_address = 0
        self.write_remaining = 0
        self.read_address = 0
        self.read_remaining = 0

    def _reply(self, cmd: int, status: NativeStatus, payload: bytes = b"") -> None:
        self.queue.append(native_reply(cmd, status, payload))

    def set_report(self, data: bytes) -> None:
        # hidraw without an OUT endpoint writes by SET_REPORT: same report
        self.out_report(data)

    def out_report(self, data: bytes) -> None:
        data = bytes(data)
        if self.write_remaining:
            self._data(data)
            return
        self.read_remaining = 0  # a new command ends a read
        cmd = data[0] if data else 0
        if len(data) < COMMAND_HEADER:
            self.refusals.append(f"report of {len(data)} bytes is shorter than the {COMMAND_HEADER}-byte header")
            self._reply(cmd, NativeStatus.ERROR)
            return
        arg0 = int.from_bytes(data[4:8], "little")
        arg1 = int.from_bytes(data[8:12], "little")
        try:
            payload = self._command(cmd, arg0, arg1)
        except HidFault as fault:
            self.refusals.append(str(fault))
            self._reply(cmd, fault.status)
            return
        except NativeFault as fault:
            self.refusals.append(str(fault))
            self._reply(cmd, status_for(fault.refusal))
            return
        except MemoryFault as exc:
            self.refusals.append(str(exc))
            self._reply(cmd, status_for(refusal_for(exc)))
            return
        self._reply(cmd, NativeStatus.OK, payload)
        if cmd == Command.RESET:
            # the reply goes out before the reset, as the xmega bootloader's does
            self._leave("native RESET", 0.05)

    def _command(self, cmd: int, arg0: int, arg1: int) -> bytes:
        op = OPS.get(cmd)
        if op is Op.IDENTIFY:
            return pack_info(self.native.info(NATIVE_VERSION))
        if op is Op.ERASE:
            self.native.erase_application()
            return b""
        if op is Op.WRITE:
            # the whole span is checked before the first data report is accepted
            self._check_span(arg0, arg1, "WRITE")
            if arg0 % self.page_size:
                raise HidFault(f"WRITE at 0x{arg0:X} is not page aligned ({self.page_size})",
                               NativeStatus.MISALIGNED)
            self.native.check_erased(arg0, arg1)
            self.write_address, self.write_remaining = arg0, arg1
            return arg1.to_bytes(4, "little")
        if op is Op.CRC:
            if arg0 == CRC_APPLICATION:
                start, end = self.app_start, self.app_end
            elif arg0 == CRC_BOOTLOADER:
                start, end = self.chip.boot_start, self.chip.boot_end
            else:
                raise HidFault(f"CRC of unknown region {arg0}")
            return (self.native.crc_of(start, end).to_bytes(4, "little") + start.to_bytes(4, "little")
                    + (end - start).to_bytes(4, "little"))
        if op is Op.READ:
            self._check_span(arg0, arg1, "READ")
            self.read_address, self.read_remaining = arg0, arg1
            return arg1.to_bytes(4, "little")
        if op is Op.BOOT:
            return b""  # RESET: the reply first, then the device leaves (out_report)
        raise HidFault(f"unknown command 0x{cmd:02X}")

    def _data(self, data: bytes) -> None:
        n = min(REPORT_SIZE, self.write_remaining)
        if len(data) < n:
            self.write_remaining = 0
            self.refusals.append(f"data report of {len(data)} bytes, expected {n}")
            self._reply(Command.WRITE, NativeStatus.ERROR)
            return
        try:
            self.busy(self.memory.program(self.write_address, data[:n]))
        except MemoryFault as exc:
            self.write_remaining = 0
            self.refusals.append(str(exc))
            self._reply(Command.WRITE, status_for(refusal_for(exc)))
            return
        self.write_address += n
        self.write_remaining -= n
        self._reply(Command.WRITE, NativeStatus.OK, self.write_remaining.to_bytes(4, "little"))

    def in_report(self, max_length: int) -> bytes | None:
        if self.queue:
            return self.queue.popleft()
        if self.read_remaining:
            n = min(REPORT_SIZE, self.read_remaining)
            chunk = self.memory.read(self.read_address, n).ljust(REPORT_SIZE, b"\xff")
            self.read_address += n
            self.read_remaining -= n
            return chunk
        return None

    def get_report(self) -> bytes:
        report = self.in_report(REPORT_SIZE)
        if report is None:
            raise HidFault("no input report queued")
        return report

    def bus_reset(self) -> None:
        self.queue.clear()
        self._reset_state()


class XusbEngine(HidEngine):
    """xusb-boot 1.0, the xmega raw-HID bootloader (ahtn/xusb-boot src/boot_protocol.c).

    Two states, as bootloader_task() has them.  STATE_WAIT: an output report
    is a command (GET_BOOT_INFO, ERASE, WRITE, CRC, RESET; any other byte is
    ignored, no answer).  STATE_WRITE, after an accepted WRITE: every output
    report, whatever its first byte, is 64 bytes of data for the page buffer,
    answered OKAY; a full buffer programs a page, and the last page of the
    span returns to STATE_WAIT.  WRITE and CRC need an ERASE since the
    bootloader started (ERROR_NOT_ERASED); WRITE needs start and size to be
    page multiples (ERROR_MISALIGNED).  RESET answers nothing: the device
    detaches and resets 50 ms later.

    Where bootkit is stricter than the C (which checks no range, relying on
    the NVM controller's application-section commands): a WRITE whose span
    leaves the application section, and a page the memory refuses (written
    twice without an erase), are answered ERROR and written nowhere; a WRITE
    of size 0 is OKAY and expects no data (the C would wait for data and
    count the size down through zero).  CMD_TEST (0x05, a RAM dump
    xusbboot never sends) is not modelled: ignored like an unknown command.

    The C keeps one input report buffer and copies only the answer's length
    into it (send_response: 2 bytes, the CRC: 9), so the rest of a 64-byte
    report repeats the previous answer's bytes; so does this engine.  A
    data report shorter than 64 bytes likewise leaves the previous report's
    tail in the output buffer, which is what the page buffer receives.
    """

    dialect = "xusb"
    uses_out_endpoint = True
    QUEUE = 2  # the armed IN endpoint buffer and g_vendor_report_in: a third answer replaces the second

    def __init__(self, memory, chip: Chip, *, mcu: str | None = None, watchdog: float | None = 2.0,
                 **kw):
        super().__init__(memory, chip, **kw)
        self.page_size = chip.page_size
        self.report_descriptor = xusb_report_descriptor()
        # MCU_STRING: the avr-gcc -mmcu name the bootloader was built for (lower case)
        self.boot_info = XusbBootInfo(XUSB_VERSION, mcu or chip.name.lower(),
                                      self.app_end - self.app_start, self.page_size)
        self.queue: deque[bytes] = deque()
        self._in_data = bytearray(XUSB_REPORT_SIZE)  # g_vendor_report_in.data
        self._out_data = bytearray(XUSB_REPORT_SIZE)  # g_vendor_report_out.data
        # wdt_init(): without an SOF from a host within the period, the watchdog resets the chip.
        # Its period starts at the transport's first poll (the device is then on a bus), not
        # when the engine is built: serving over FunctionFS takes a while to bind the gadget.
        self.watchdog = watchdog
        self.started: float | None = None
        self.host_seen = False
        self.flash_has_been_erased = False  # s_flash_has_been_erased: since this bootloader started
        self.flash_empty = False  # s_flash_empty: ERASE skips the erase when nothing was written since
        self._wait()

    def _wait(self) -> None:
        self.writing = False  # STATE_WRITE
        self.current = self.remaining = self.page_position = 0
        self.page_buffer = bytearray(self.page_size)

    # --- answers
    def _answer(self, data: bytes) -> None:
        self._in_data[:len(data)] = data
        if len(self.queue) >= self.QUEUE:
            self.queue.pop()  # g_vendor_report_in is overwritten before it was sent
        self.queue.append(bytes(self._in_data))

    def _status(self, status: XusbStatus) -> None:
        self._answer(bytes((XusbPacket.ERROR_STATUS, status)))

    def _refuse(self, why: str, status: XusbStatus) -> None:
        self.refusals.append(why)
        self._status(status)

    # --- events
    def set_report(self, data: bytes) -> None:
        # descriptors.c usb_cb_control_setup: SET_REPORT is stalled; reports come on interrupt OUT
        raise HidFault("xusb-boot takes output reports on its interrupt OUT endpoint only")

    def out_report(self, data: bytes) -> None:
        self.host_seen = True
        if not data:
            return  # read_vendor_report() returned 0: nothing to do
        self._out_data[:len(data)] = data[:XUSB_REPORT_SIZE]
        if self.writing:
            self._data(bytes(self._out_data))
        else:
            self._command(bytes(self._out_data))

    def _command(self, report: bytes) -> None:
        cmd = report[0]
        if cmd == XusbCommand.GET_BOOT_INFO:
            self._answer(pack_boot_info(self.boot_info))
        elif cmd == XusbCommand.ERASE:
            if not self.flash_empty:
                try:
                    self.native.erase_application()
                except MemoryFault as exc:
                    self._refuse(str(exc), XusbStatus.ERROR)
                    return
                self.flash_empty = True
                self.flash_has_been_erased = True
            self._status(XusbStatus.OKAY)
        elif cmd == XusbCommand.WRITE:
            start = int.from_bytes(report[1:5], "little")
            size = int.from_bytes(report[5:9], "little")
            if not self.flash_has_been_erased:
                self._refuse("WRITE before an ERASE since the bootloader started", XusbStatus.ERROR_NOT_ERASED)
            elif start % self.page_size or size % self.page_size:
                self._refuse(f"WRITE of {size} bytes at 0x{start:X}: not multiples of the {self.page_size}-byte "
                             "page", XusbStatus.ERROR_MISALIGNED)
            elif start < self.app_start or start + size > self.app_end:
                self._refuse(f"WRITE of {size} bytes at 0x{start:X} leaves the application section "
                             f"0x{self.app_start:X}..0x{self.app_end:X}", XusbStatus.ERROR)
            else:
                self._wait()
                self.current, self.remaining = start, size
                self.writing = size > 0
                self.flash_empty = False
                self._status(XusbStatus.OKAY)
        elif cmd == XusbCommand.CRC:
            if not self.flash_has_been_erased:
                self._refuse("CRC before an ERASE since the bootloader started", XusbStatus.ERROR_NOT_ERASED)
                return
            app = nvm_crc(self.memory.read(self.app_start, self.app_end - self.app_start))
            boot = nvm_crc(self.memory.read(self.chip.boot_start, self.chip.boot_size)) if self.chip.boot_size else 0
            self._answer(bytes((XusbPacket.CRC,)) + app.to_bytes(4, "little") + boot.to_bytes(4, "little"))
        elif cmd == XusbCommand.RESET:
            # usb_detach(); _delay_ms(50); software_reset(): no answer
            self._leave("xusb RESET", 0.05)
        else:
            self.refusals.append(f"command 0x{cmd:02X} ignored (no answer), as boot_protocol.c's switch does")

    def _data(self, report: bytes) -> None:
        at = self.page_position
        self.page_buffer[at:at + XUSB_REPORT_SIZE] = report
        self.page_position += XUSB_REPORT_SIZE
        if self.page_position == self.page_size:
            try:
                self.busy(self.memory.program(self.current, bytes(self.page_buffer)))
            except MemoryFault as exc:
                self._wait()
                self._refuse(str(exc), XusbStatus.ERROR)
                return
            self.page_position = 0
            self.page_buffer = bytearray(self.page_size)
            self.current += self.page_size
            self.remaining -= self.page_size
            if self.remaining == 0:
                self._wait()
        self._status(XusbStatus.OKAY)

    def in_report(self, max_length: int) -> bytes | None:
        self.host_seen = True
        return self.queue.popleft() if self.queue else None

    def get_report(self) -> bytes:
        # usb_cb_control_setup: GET_REPORT copies the IN endpoint's buffer, whatever it holds
        return bytes(self._in_data)

    def host_activity(self) -> None:
        """An SOF: a host drives the bus (the bootloader's main loop kicks the watchdog)."""
        self.host_seen = True

    def tick(self, now: float) -> None:
        """The watchdog: no SOF within its period resets the chip (the entry policy decides)."""
        if self.started is None:
            self.started = now
        if self.watchdog is not None and not self.host_seen and now - self.started >= self.watchdog:
            self.host_seen = True  # one reset; the next bootloader (if any) starts its own watchdog
            self.signal(SignalKind.WATCHDOG, f"no SOF within {self.watchdog:g} s")

    def bus_reset(self) -> None:
        # a bus reset comes from a host: the SOFs follow
        self.host_seen = True
        self.queue.clear()


class HidFunction(Function):
    """One HID interface: vendor report descriptor, interrupt IN (and OUT)."""

    name = "hid"

    def __init__(self, engine: HidEngine, interface_name: str | None = None):
        super().__init__()
        self.engine = engine
        self.interface_name = interface_name
        engine.signal = self.signal
        engine.busy = self.busy
        self.ep_in_ = Endpoint(1, "in", "interrupt", max_packet_size=64, interval=1)
        self.ep_out_ = Endpoint(1, "out", "interrupt", max_packet_size=64, interval=1)

    def interfaces(self, speed="full"):
        eps = [self.ep_in_] + ([self.ep_out_] if self.engine.uses_out_endpoint else [])
        return [Interface(0, HID_CLASS, HID_SUBCLASS_NONE, HID_PROTOCOL_NONE, name=self.interface_name,
                          endpoints=eps, extra=self.hid_descriptor())]

    def hid_descriptor(self) -> bytes:
        return hid_descriptor(len(self.engine.report_descriptor))

    def setup(self, req: SetupPacket, data: bytes):
        self.engine.host_activity()
        if req.recipient != RECIP_INTERFACE:
            raise Stall
        if req.type == TYPE_STANDARD and req.bRequest == GET_DESCRIPTOR and req.is_in:
            # HID 1.11 section 7.1.1: the class descriptors, by the interface
            dtype = req.wValue >> 8
            if dtype == REPORT_DESCRIPTOR:
                return self.engine.report_descriptor
            if dtype == HID_DESCRIPTOR:
                return self.hid_descriptor()
            raise Stall
        if req.type != TYPE_CLASS:
            raise Stall
        b = req.bRequest
        try:
            if b == SET_REPORT and not req.is_in:
                if req.wValue >> 8 != REPORT_OUTPUT:
                    raise HidFault("only output reports")
                self.engine.set_report(bytes(data))
                return None
            if b == GET_REPORT and req.is_in:
                if req.wValue >> 8 != REPORT_INPUT:
                    raise HidFault("only input reports")
                return self.engine.get_report()
        except HidFault as fault:
            self.engine.refusals.append(str(fault))
            raise Stall(str(fault)) from None
        if b in (SET_IDLE, SET_PROTOCOL) and not req.is_in:
            return None  # the Linux usbhid driver sends SET_IDLE at probe
        if b == GET_IDLE and req.is_in:
            return b"\x00"
        if b == GET_PROTOCOL and req.is_in:
            return b"\x01"  # report protocol
        raise Stall

    def ep_out(self, ep, data):
        try:
            self.engine.out_report(bytes(data))
        except HidFault as fault:
            self.engine.refusals.append(str(fault))
            raise Stall(str(fault)) from None

    def ep_in(self, ep, max_length):
        return self.engine.in_report(max_length)

    def tick(self, now):
        self.engine.tick(now)

    def configured(self, active):
        if active:  # SET_CONFIGURATION: a host enumerated the device and sends SOFs
            self.engine.host_activity()

    def bus_reset(self):
        self.engine.bus_reset()


__all__ = ["HidFault", "HidEngine", "HalfKayEngine", "LufaEngine", "NativeEngine", "XusbEngine", "HidFunction"]
