"""CDC host side: flash and read an AVR109 bootloader over a serial port.

Works through pyserial, so the same code drives a real board
(``/dev/ttyACM0``, ``COM5``) and the emulator on a pty.  The exchange is
avrdude's (src/butterfly.c): ESC then 'S' to sync and identify, 'b' for the
block size, 's' for the signature, 'e', then 'A'/'H' plus 'B' blocks with
auto-increment, 'g' blocks to verify, 'L' and 'E' to leave.  Blocks are
pipelined a few at a time (the device answers each with '\\r'), which is
where this client gains on avrdude.

A board still running its application is asked for the bootloader with the
Arduino 1200-baud touch, then found again by VID:PID (pyserial list_ports).

Optiboot (STK500 v1, avrdude -c arduino) and the Mega's wiring bootloader
(STK500 v2, avrdude -c wiring) have their own clients at the end
(:class:`OptibootClient`, :class:`WiringClient`, :func:`uart_flash`):
:func:`flash` and :func:`read` hand those dialects to them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

from ...formats.image import Image
from ...memory import CHIPS, Chip, get_chip
from ...memory.chips import EEPROM_BASE
from ...progress import phase, progress_bar
from ..common import FlashResult, HostError, ImageRejected, check_ranges, preflight
from ..usbhost import CAME_BACK, LEFT, STARTED, STAYED, STILL_THERE, Arrival, LeaveWatch, Look, Outcome
from .avr109 import AVR109_FLASH_LIMIT, reachable
from .protocol import IDS, SOFTWARE_IDS, TOUCH_BAUD

_UART_DIALECTS = ("optiboot", "wiring")  # the package's UART_DIALECTS: served by uart_flash / uart_read
DEFAULT_BAUD = 57600  # what the Arduino IDE and LUFA's docs pass to avrdude (-b 57600)
PIPELINE = 8  # blocks in flight before waiting for their acknowledgements
LEAVE_WAIT = 5.0  # s a real board gets to come back after 'E' (as its application, or its bootloader)
# s an AVR109 bootloader (answering within a millisecond over USB) gets to answer ESC 'S' on its port after 'E'
PROBE_WAIT = 0.1
# after 'E': LUFA detaches at once; Caterina "leaves the bootloader 500 ms later" (Caterina.c)
LEAVE_DELAY = {"caterina": 0.6}
LEAVE_DELAY_DEFAULT = 0.02



def _read_within(port: SerialPort, n: int, timeout: float | None) -> bytes:
    """``port.read(n)`` within ``timeout`` seconds (None: block).  pyserial reconfigures the tty
    (a tcsetattr) on EVERY assignment to ``timeout``, even of the same value: setting and
    restoring it around each read was ~7700 syscalls for a 120 KiB Optiboot flash (a profile
    found it; the per-KiB cost was 1.7x avrdude's), so it is only set when it changes."""
    if port.timeout != timeout:
        port.timeout = timeout
    return port.read(n)

class Avr109Error(HostError):
    """The bootloader or the exchange failed: one line saying what and where."""


def dialect_for_id(software_id: bytes) -> str:
    for name, sid in SOFTWARE_IDS.items():
        if software_id == sid:
            return name
    return "avr109"


def chip_for_signature(sig: bytes) -> Chip | None:
    for chip in CHIPS:
        if chip.family == "avr" and chip.signature == sig:
            return chip
    return None


# --------------------------------------------------------------------------
# port discovery and the 1200-baud touch


def bootloader_ids(dialect: str | None = None, vid=None, pid=None) -> list[tuple[int, int]]:
    if vid is not None and pid is not None:
        return [(vid, pid)]
    return [IDS[d][0] for d in ([dialect] if dialect in IDS else IDS)]


def application_ids(dialect: str | None = None) -> list[tuple[int, int]]:
    return [IDS[d][1] for d in ([dialect] if dialect in IDS else IDS)]


def list_ports(ids, serial_number=None) -> list[str]:
    from serial.tools import list_ports as lp

    out = []
    for p in lp.comports():
        if p.vid is None or (p.vid, p.pid) not in ids:
            continue
        if serial_number is not None and p.serial_number != serial_number:
            continue
        out.append(p.device)
    return out


def touch_1200(port: str, hold: float = 0.1) -> None:
    """Open at 1200 baud and close with DTR low: the application resets into its bootloader.

    The port stays open ``hold`` seconds so the device (or a pty server
    polling the line settings) sees the 1200-baud line coding before the close.
    """
    import serial

    try:
        s = serial.Serial(port, TOUCH_BAUD)
    except (serial.SerialException, OSError) as exc:
        raise Avr109Error(f"1200-baud touch on {port}: {exc}") from None
    try:
        time.sleep(hold)
        try:
            s.dtr = False  # a pty has no modem lines (ENOTTY): closing drops DTR anyway
        except (serial.SerialException, OSError):
            pass
    finally:
        try:
            s.close()
        except (serial.SerialException, OSError):
            pass


def find_port(*, port=None, vid=None, pid=None, serial=None, dialect=None, touch: bool = True,
              wait: float = 10.0, steps: list | None = None) -> str:
    """The bootloader's port: given, found by VID:PID, or reached with a 1200-baud touch."""
    if port is not None:
        return port
    steps = steps if steps is not None else []
    boot = bootloader_ids(dialect, vid, pid)
    found = list_ports(boot, serial)
    if found:
        return found[0]
    apps = list_ports(application_ids(dialect), serial)
    if not apps or not touch:
        sel = ", ".join(f"{v:04x}:{p:04x}" for v, p in boot)
        raise Avr109Error(f"no AVR109 bootloader port found (looked for {sel}); pass --port")
    before = set(list_ports(boot, serial))
    touch_1200(apps[0])
    steps.append(f"1200-baud touch on {apps[0]}")
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        now = [p for p in list_ports(boot, serial) if p not in before]
        if now:
            steps.append(f"bootloader appeared on {now[0]}")
            return now[0]
        time.sleep(0.1)
    raise Avr109Error(f"no bootloader port appeared within {wait:g} s after the 1200-baud touch on {apps[0]}")


# --------------------------------------------------------------------------
# the protocol


class SerialPort(Protocol):
    """What the client needs of a port: pyserial's Serial, or any object that reads and writes the same way."""

    timeout: float | None

    def read(self, size: int = 1, /) -> bytes: ...

    def write(self, data: bytes, /) -> int | None: ...

    def reset_input_buffer(self) -> None: ...


@dataclass
class Avr109Client:
    """One open AVR109 session on a serial-like object (read/write/timeout)."""

    port: SerialPort
    progress: bool | None = None
    software_id: bytes = b""
    dialect: str = "avr109"
    block_size: int = 0
    signature: bytes = b""
    chip: Chip | None = None
    steps: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._base_timeout = self.port.timeout  # what a read without its own timeout waits

    @property
    def target(self) -> Chip:
        """The chip the bootloader named at :meth:`connect` (its signature, or the chip given)."""
        if self.chip is None:
            raise Avr109Error("no AVR109 session yet: connect() names the chip")
        return self.chip

    # --- bytes
    def _read(self, n: int, what: str, timeout: float | None = None) -> bytes:
        data = _read_within(self.port, n, self._base_timeout if timeout is None else timeout)
        if len(data) != n:
            raise Avr109Error(f"{what}: the bootloader answered {len(data)} of {n} byte(s) ({bytes(data)!r})")
        return bytes(data)

    def command(self, data: bytes, reply: int, what: str, timeout: float | None = None) -> bytes:
        self.port.write(data)
        return self._read(reply, what, timeout)

    def ack(self, data: bytes, what: str, timeout: float | None = None) -> None:
        got = self.command(data, 1, what, timeout)
        if got != b"\r":
            raise Avr109Error(f"{what}: the bootloader answered {got!r}, not '\\r'")

    # --- session
    def connect(self, chip: Chip | str | None = None, attempts: int = 5) -> None:
        # butterfly_initialize: ESC, drain, 'S' until the answer is not '?'
        for _ in range(attempts):
            self.port.write(b"\x1b")
            time.sleep(0.01)
            self.port.reset_input_buffer()
            first = self.command(b"S", 1, "software identifier", timeout=1.0)
            if first != b"?":
                self.software_id = first + self._read(6, "software identifier")
                break
        else:
            raise Avr109Error("no AVR109 bootloader answers on this port")
        self.dialect = dialect_for_id(self.software_id)
        self.version = self.command(b"V", 2, "software version")
        if self.command(b"p", 1, "programmer type") != b"S":
            raise Avr109Error("not a serial AVR109 programmer ('p' did not answer 'S')")
        if self.command(b"a", 1, "auto increment") != b"Y":
            raise Avr109Error("the bootloader does not auto-increment addresses ('a')")
        b = self.command(b"b", 3, "block support")
        if b[0:1] != b"Y":
            raise Avr109Error("the bootloader has no block mode ('b'): an AVR910 device?")
        self.block_size = b[1] << 8 | b[2]
        sig = self.command(b"s", 3, "signature")
        self.signature = bytes((sig[2], sig[1], sig[0]))  # sent reversed (butterfly_read_sig_bytes)
        if isinstance(chip, str):
            chip = get_chip(chip)
        if chip is not None and chip.signature and chip.signature != self.signature:
            raise Avr109Error(f"signature {self.signature.hex()} is not {chip.name}'s ({chip.signature.hex()})")
        self.chip = chip or chip_for_signature(self.signature)
        if self.chip is None:
            raise Avr109Error(f"unknown signature {self.signature.hex()}: pass --chip (or add it with a chip file)")
        if not self.block_size:
            raise Avr109Error("the bootloader reports block size 0")
        self.ack(b"P", "enter programming mode")
        self.steps.append(f"{self.software_id.decode('ascii', 'replace')} v{self.version.decode('ascii', 'replace')}"
                          f" {self.target.name} block {self.block_size}")

    def set_address(self, word_or_byte: int) -> bytes:
        """The 'A' (16-bit) or 'H' (24-bit) command for an address in the device's units
        (avrdude's butterfly_set_addr: 'H' from 0x10000 on)."""
        if word_or_byte < 0x10000:
            return b"A" + word_or_byte.to_bytes(2, "big")
        if word_or_byte < 1 << 24:
            return b"H" + word_or_byte.to_bytes(3, "big")
        # validate()/read() refuse such a chip before anything is sent; this is the last guard
        raise ImageRejected(f"address 0x{word_or_byte:X} (device units) is out of AVR109's reach "
                            f"(24-bit 'H' addresses)")

    def chip_erase(self) -> None:
        # LUFA erases every application page: allow for the datasheet's 4.5 ms each
        pages = max(1, self.target.boot_start // max(self.target.page_size, 1))
        self.ack(b"e", "chip erase", timeout=2.0 + pages * 0.01)
        self.steps.append("application erased")

    def _pipeline(self, frames: list[tuple[bytes, int]], what: str, advance) -> bytes:
        """Send (command, reply length) frames PIPELINE at a time; return the replies."""
        out = bytearray()
        for i in range(0, len(frames), PIPELINE):
            batch = frames[i:i + PIPELINE]
            self.port.write(b"".join(f for f, _ in batch))
            n = sum(r for _, r in batch)
            out += self._read(n, what, timeout=5.0)
            advance(sum(len(f) for f, _ in batch))
        return bytes(out)

    def write_flash(self, image: Image) -> int:
        page = self.block_size
        frames = []
        nxt = None
        count = 0
        for address, data in image.pages(page, 0xFF, align=self.target.flash_start):
            if address != nxt:
                frames.append((self.set_address(address >> 1), 1))
            frames.append((b"B" + len(data).to_bytes(2, "big") + b"F" + data, 1))
            nxt = address + len(data)
            count += len(data)
        with progress_bar("writing flash", count, self.progress) as advance:
            acks = self._pipeline(frames, "write flash", lambda n: advance(max(0, n - 4)))
        if acks != b"\r" * len(frames):
            bad = next(i for i, c in enumerate(acks) if c != 13)
            raise Avr109Error(f"write flash: the bootloader refused command {bad} ({frames[bad][0][:4]!r}...)")
        self.steps.append(f"wrote {count} bytes of flash")
        return count

    def read_range(self, start: int, length: int, memory: str = "flash") -> bytes:
        kind = b"F" if memory == "flash" else b"E"
        unit = 2 if memory == "flash" else 1
        frames = [(self.set_address(start // unit), 1)]
        addr, end = start, start + length
        while addr < end:
            n = min(self.block_size, end - addr)
            frames.append((b"g" + n.to_bytes(2, "big") + kind, n))
            addr += n
        with progress_bar(f"reading {memory}", length, self.progress) as advance:
            raw = self._pipeline(frames, f"read {memory}", lambda n: advance(self.block_size))
        if raw[:1] != b"\r":
            raise Avr109Error(f"read {memory}: setting the address 0x{start:X} failed")
        return raw[1:]

    def verify_flash(self, image: Image) -> None:
        phase("verify")
        for s, data in image.segments:
            lo = s - s % 2
            hi = s + len(data) + (s + len(data)) % 2
            got = self.read_range(lo, hi - lo)[s - lo:s - lo + len(data)]
            if got != data:
                bad = next(i for i in range(len(data)) if got[i:i + 1] != data[i:i + 1])
                raise Avr109Error(f"verify failed at 0x{s + bad:X}: wrote 0x{data[bad]:02X}, read "
                                  f"0x{got[bad]:02X}" if bad < len(got) else f"verify failed at 0x{s + bad:X}")
        self.steps.append("verified")

    def write_eeprom(self, image: Image) -> int:
        frames = []
        count = 0
        for s, data in image.segments:
            frames.append((self.set_address(s), 1))
            for i in range(0, len(data), self.block_size):
                chunk = data[i:i + self.block_size]
                frames.append((b"B" + len(chunk).to_bytes(2, "big") + b"E" + chunk, 1))
            count += len(data)
        with progress_bar("writing EEPROM", count, self.progress) as advance:
            acks = self._pipeline(frames, "write EEPROM", advance)
        if acks != b"\r" * len(frames):
            raise Avr109Error("write EEPROM: the bootloader refused a block")
        self.steps.append(f"wrote {count} bytes of EEPROM")
        return count

    def verify_eeprom(self, image: Image) -> None:
        phase("verify")
        for s, data in image.segments:
            if self.read_range(s, len(data), "eeprom") != bytes(data):
                raise Avr109Error(f"EEPROM verify failed in 0x{s:X}-0x{s + len(data) - 1:X}")
        self.steps.append("verified")

    def fuses(self) -> dict[str, int]:
        out = {}
        for name, cmd in (("lfuse", b"F"), ("hfuse", b"N"), ("efuse", b"Q"), ("lock", b"r")):
            out[name] = self.command(cmd, 1, name)[0]
        return out

    def write_lock(self, value: int) -> None:
        self.ack(b"l" + bytes([value & 0xFF]), "write lock bits")

    def leave(self) -> None:
        """'L' and 'E': the bootloader is asked to leave.  Whether it did is for
        :func:`watch_leave` to see; nothing is claimed here."""
        self.ack(b"L", "leave programming mode")
        # the device may write its image through before it acknowledges 'E' (#17): as long as a block
        self.ack(b"E", "exit bootloader", timeout=5.0)

    def probe(self, timeout: float = PROBE_WAIT) -> bytes | None:
        """ESC then 'S' once: the software identifier when an AVR109 bootloader answers,
        None when nothing that speaks AVR109 does (an application, or silence)."""
        self.port.write(b"\x1bS")
        old = self.port.timeout
        self.port.timeout = timeout
        try:
            got = bytes(self.port.read(1))
            if got and got == self.software_id[:1]:  # else an application echoed or said something else
                got += bytes(self.port.read(6))
        finally:
            self.port.timeout = old
        return got if got == self.software_id else None

    def first_word(self) -> bytes:
        """The application's first word (its reset vector), read back with 'A' and 'g'."""
        start = self.target.layout().application_ranges("flash")[0][0]
        return self.read_range(start, 2)


# --------------------------------------------------------------------------
# the contract (bootkit.classes.common)


def _open_serial(port: str, baudrate: int):
    import serial

    try:
        return serial.Serial(port, baudrate, timeout=2.0, write_timeout=10.0)
    except (serial.SerialException, OSError) as exc:
        raise Avr109Error(f"cannot open {port}: {exc}") from None


class _Session:
    def __init__(self, backend, port, vid, pid, serial, dialect, chip, progress, baudrate, touch):
        self.steps: list[str] = []
        self.path = None
        if backend is not None and hasattr(backend, "write") and hasattr(backend, "read"):
            self.ser, self.own = backend, False  # an already open serial-like object
        else:
            path = find_port(port=port, vid=vid, pid=pid, serial=serial, dialect=dialect, touch=touch,
                             steps=self.steps)
            self.path = path
            self.ser, self.own = _open_serial(path, baudrate), True
        self.client = Avr109Client(self.ser, progress=progress, steps=self.steps)
        try:
            self.client.connect(chip)
        except BaseException:
            self.close()
            raise

    def close(self):
        if self.own:
            try:
                self.ser.close()
            except Exception:  # noqa: BLE001
                pass


def _port_ids(path: str | None) -> tuple[int, int] | None:
    """The USB ids of the device now behind ``path``: pyserial's list_ports for a real
    port; for a pty served in this process, what the pty transport serves (named, not
    imported: classes sit below transports)."""
    import sys

    if path is None:
        return None
    if _served_here(path):
        return sys.modules["bootkit.transports.pty"].usb_ids(path)
    try:
        from serial.tools import list_ports as lp

        for p in lp.comports():
            if p.device == path and p.vid is not None:
                return (p.vid, p.pid)
    except Exception:  # noqa: BLE001 - no port listing on this system
        pass
    return None


def _stayed_reason(c: Avr109Client) -> str:
    try:
        word = c.first_word()
    except (HostError, ImageRejected, OSError):
        word = None
    if word == b"\xff\xff":
        return "first word of flash is erased: the bootloader kept control"
    sid = c.software_id.decode("ascii", "replace")
    return f"it still answers AVR109 ('S': {sid}) after 'E'"


def watch_leave(s: "_Session", wait: float = LEAVE_WAIT, *, application: bool = True, sleep=time.sleep,
                clock=time.monotonic) -> str:
    """After 'E' was acknowledged: what became of the board (issue 16: report only what was seen).

    - the same port answers AVR109 again: :class:`Avr109Error` "the device stayed in its
      bootloader: <why>" (its first word read back erased, or it simply still answers);
    - the port is still there but no bootloader answers, and its USB ids are known (a real
      ttyACM re-used by the application, or the in-process pty's emulated device):
      "application started (came back as VVVV:PPPP)";
    - the port went away (a real board detached): its application's port (the dialect's
      application ids) appearing within ``wait`` s is "application started (came back as
      VVVV:PPPP)"; its bootloader's ids coming back is "stayed in its bootloader";
      nothing is "left the bootloader (not seen again within N s)";
    - no AVR109 answer and no ids to tell what runs: "left the bootloader (not seen again
      within N s)".

    ``application=False`` (an EEPROM-only write, which does not promise a runnable
    application): staying in the bootloader is returned as the step, not raised.
    """
    phase("leave")  # an interrupt from here on: the device was told to leave
    c = s.client

    def stayed(why: str) -> str:
        msg = f"{STAYED}: {why}"
        if application:
            raise Avr109Error(msg)
        return msg

    sleep(LEAVE_DELAY.get(c.dialect, LEAVE_DELAY_DEFAULT))
    try:
        answer = c.probe()
        gone = False
    except OSError:  # serial.SerialException is one: the port vanished with the device
        answer, gone = None, True
    if answer is not None:
        return stayed(_stayed_reason(c))
    apps, boots = application_ids(c.dialect), bootloader_ids(c.dialect)
    if not gone:
        ids = _port_ids(s.path)
        if ids is not None and ids not in boots:
            return Outcome(STARTED, 0.0, Arrival(ids[0], ids[1], False, where=str(s.path))).step
        if s.path is None or _served_here(s.path):
            # an open serial object, or a bare engine on this process's pty: nothing more to look at
            return Outcome(LEFT, PROBE_WAIT).step
        # a real port, silent but maybe still listed as the bootloader: LUFA detaches a moment
        # after 'E' (USB_Detach, then a 250 ms watchdog reset); watch below
    # watch the system's serial ports for what comes back
    old_gone = False  # the old port may linger in the listing a moment after the hang-up

    def look() -> Look:
        nonlocal old_gone
        listed = {found: is_boot for ids_list, is_boot in ((apps, False), (boots, True))
                  for found in list_ports(ids_list)}
        old_gone = old_gone or s.path not in listed
        for found, is_boot in listed.items():
            if is_boot and found == s.path and not old_gone:
                continue
            ids = _port_ids(found)
            if ids is not None:
                return Look(not old_gone, Arrival(ids[0], ids[1], is_boot, where=found))
        return Look(not old_gone)

    # a port listing lags behind the hang-up: what appears counts even while the old port is listed
    out = LeaveWatch(look, wait=wait, arrival_needs_gone=False, sleep=sleep, clock=clock, interval=0.1).run()
    if out.seen == CAME_BACK and out.arrival is not None:
        return stayed(f"it came back as {out.arrival.vid:04X}:{out.arrival.pid:04X} on {out.arrival.where}")
    if out.seen == STILL_THERE:
        if _port_ids(s.path) in boots:
            return stayed(f"it is still there on {s.path} but no longer answers AVR109")
        out = Outcome(LEFT, wait)  # listed, but under no bootloader ids: nothing says it stayed
    return out.step


def _served_here(path: str) -> bool:
    import sys

    pty = sys.modules.get("bootkit.transports.pty")  # named, not imported: classes sit below transports
    return pty is not None and pty.serves(path)


def _normalise(image: Image, memory: str, chip: Chip) -> Image:
    if memory == "eeprom":
        if image and image.start >= EEPROM_BASE:
            image = image.shifted(-EEPROM_BASE)
        check_ranges(image, [(0, chip.eeprom_size)], [], f"{chip.name} EEPROM ({chip.eeprom_size} bytes)")
        return image
    if memory != "flash":
        raise ImageRejected(f"AVR109 writes flash or eeprom, not {memory!r}")
    _check_reachable(chip)
    layout = chip.layout()
    check_ranges(image, layout.application_ranges("flash"), layout.protected, chip.name)
    return image


def _check_reachable(chip: Chip) -> None:
    why = reachable(chip)
    if why is not None:
        raise ImageRejected(f"{chip.name} cannot be flashed over AVR109 (--via cdc): {why}")


def validate(image: Image, chip: Chip | str, memory: str = "flash") -> Image:
    """Refuse an image that does not fit (no device needed)."""
    return _normalise(image, memory, get_chip(chip) if isinstance(chip, str) else chip)


def flash(image: Image, backend=None, *, port: str | None = None, vid: int | None = None, pid: int | None = None,
          serial: str | None = None, dialect: str | None = None, chip: Chip | str | None = None,
          memory: str = "flash", verify: bool = True, leave: bool = True, erase: bool = True, progress=None,
          baudrate: int = DEFAULT_BAUD, touch: bool = True, force: bool = False,
          leave_wait: float = LEAVE_WAIT) -> FlashResult:
    """Validate, erase, write, verify, leave.  Nothing is erased unless the whole image fits.

    ``backend``: an open serial-like object to use instead of opening ``port``.
    ``force`` lifts only common.preflight's UF2-family check.  After 'E' the last
    step says what was observed (:func:`watch_leave`).
    """
    if dialect in _UART_DIALECTS:  # Optiboot, wiring: their own clients (below)
        return uart_flash(image, backend, port=port, dialect=dialect, chip=chip, memory=memory, verify=verify,
                          leave=leave, progress=progress, force=force,
                          baudrate=UART_BAUD if baudrate == DEFAULT_BAUD else baudrate)
    t0 = time.perf_counter()
    if not image:
        raise ImageRejected("the image is empty")
    if chip is not None:  # refuse bad input before touching the device at all
        chip = get_chip(chip) if isinstance(chip, str) else chip
        image = validate(image, chip, memory)
        preflight(image, chip, force=force, memory=memory)
    s = _Session(backend, port, vid, pid, serial, dialect, chip, progress, baudrate, touch)
    try:
        c = s.client
        image = _normalise(image, memory, c.target)
        preflight(image, c.target, force=force, memory=memory)  # the chip the device named: before 'e'
        if memory == "flash":
            if erase:
                c.chip_erase()
            n = c.write_flash(image)
            if verify:
                c.verify_flash(image)
        else:
            n = c.write_eeprom(image)
            if verify:
                c.verify_eeprom(image)
        if leave:
            c.leave()
            c.steps.append(watch_leave(s, leave_wait, application=memory == "flash"))
        return FlashResult(c.dialect, n, time.perf_counter() - t0, verify, c.steps)
    finally:
        s.close()


def read(backend=None, *, port: str | None = None, vid: int | None = None, pid: int | None = None,
         serial: str | None = None, dialect: str | None = None, chip: Chip | str | None = None,
         memory: str = "flash", start: int | None = None, length: int | None = None, trim: bool = True,
         leave: bool = False, progress=None, baudrate: int = DEFAULT_BAUD, touch: bool = True) -> Image:
    """Read the application flash (or EEPROM); trailing 0xFF is dropped unless ``trim=False``.

    EEPROM comes back at avr-gcc's ``.eeprom`` address 0x810000.
    """
    if dialect in _UART_DIALECTS:
        return uart_read(backend, port=port, dialect=dialect, chip=chip, memory=memory, start=start, length=length,
                         trim=trim, progress=progress, baudrate=UART_BAUD if baudrate == DEFAULT_BAUD else baudrate)
    if chip is not None and memory == "flash":  # before anything is sent
        _check_reachable(get_chip(chip) if isinstance(chip, str) else chip)
    s = _Session(backend, port, vid, pid, serial, dialect, chip, progress, baudrate, touch)
    try:
        c = s.client
        if memory == "flash":
            _check_reachable(c.target)
            lo, hi = c.target.layout().application_ranges("flash")[0]
            base = 0
        elif memory == "eeprom":
            lo, hi = 0, c.target.eeprom_size
            base = EEPROM_BASE
        else:
            raise ImageRejected(f"AVR109 reads flash or eeprom, not {memory!r}")
        start = lo if start is None else start
        length = (hi - start) if length is None else length
        if start < lo or start + length > hi:
            raise ImageRejected(f"0x{start:X}+{length} is outside {memory} (0x{lo:X}-0x{hi - 1:X})")
        data = c.read_range(start, length, memory)
        if trim:
            data = data.rstrip(b"\xff")
        if leave:
            c.leave()
        return Image([(base + start, data)] if data else [])
    finally:
        s.close()


def read_fuses(backend=None, *, port: str | None = None, vid=None, pid=None, serial=None, dialect=None,
               chip=None, baudrate: int = DEFAULT_BAUD, touch: bool = True) -> dict[str, int]:
    """{'lfuse', 'hfuse', 'efuse', 'lock'} as the bootloader reads them ('F', 'N', 'Q', 'r')."""
    s = _Session(backend, port, vid, pid, serial, dialect, chip, False, baudrate, touch)
    try:
        return s.client.fuses()
    finally:
        s.close()


def write_lock(value: int, backend=None, *, port: str | None = None, vid=None, pid=None, serial=None,
               dialect=None, chip=None, baudrate: int = DEFAULT_BAUD) -> None:
    s = _Session(backend, port, vid, pid, serial, dialect, chip, False, baudrate, False)
    try:
        s.client.write_lock(value)
    finally:
        s.close()


# --------------------------------------------------------------------------
# the demo: an emulated board on a pty, flashed through this client


def run_demo_row(dialect: str, chip: Chip | str, image: Image) -> dict:
    from ...emulator import Emulator
    from ...transports.pty import pty_server

    chip = get_chip(chip) if isinstance(chip, str) else chip
    with Emulator(chip, "cdc", options={"dialect": dialect}) as em, pty_server(em) as server:
        t0 = time.perf_counter()
        result = flash(image, port=server.slave_path, dialect=dialect, chip=chip, progress=False)
        seconds = time.perf_counter() - t0
        flash_bytes = em.memory.flash_bytes()
        base = chip.flash_start
        identical = all(flash_bytes[s - base:s - base + len(d)] == d for s, d in image.segments)
        return {
            "personality": "cdc", "dialect": dialect, "chip": chip.name, "bytes": image.size,
            "seconds": seconds, "verified": result.verified and identical and em.memory.app_valid,
            "transport": "pty", "port": server.slave_path,
        }


__all__ = [
    "Avr109Client", "Avr109Error", "flash", "read", "read_fuses", "write_lock", "validate", "find_port",
    "touch_1200", "watch_leave", "run_demo_row", "DEFAULT_BAUD", "AVR109_FLASH_LIMIT",
]


# --------------------------------------------------------------------------
# UART bootloaders behind a USB-serial bridge: Optiboot (STK500 v1) and wiring (STK500 v2)
#
# Both are spoken one command at a time, as avrdude does: the bootloader reads its UART
# only between commands (a page write busy-waits on SPM while a 2-byte receive FIFO
# fills), so a second command sent before the answer would be lost on a real board.

UART_BAUD = 115200  # Optiboot on the Uno and the Mega's stk500v2 bootloader (boards.txt upload.speed)
UART_SETTLE = 0.1  # s after the auto-reset pulse before the first byte (avrdude's arduino_open: 50-100 ms)
UART_ANSWER = 2.0  # s a command's answer may take (a page write is 4.5 ms; the UART at 115200 is ~23 us/byte)


class UartBootloaderError(HostError):
    """An Optiboot or wiring bootloader, or the exchange with it, failed: one line."""


def _pulse_reset(ser) -> None:
    """DTR/RTS inactive then active: the board's capacitor pulls RESET low (avrdude's arduino_open and
    wiring_open).  A pty has no modem lines: the open itself is the pulse bootkit's bridge sees."""
    for level in (False, True):
        try:
            ser.dtr = level
            ser.rts = level
        except (OSError, ValueError, AttributeError):
            return
        except Exception:  # noqa: BLE001 - serial.SerialException on a port without modem lines
            return
        time.sleep(0.05)


@dataclass
class _UartClient:
    """What both UART clients share: the port, the chip, progress and the steps said."""

    port: SerialPort
    dialect: str
    progress: bool | None = None
    chip: Chip | None = None
    signature: bytes = b""
    steps: list[str] = field(default_factory=list)

    @property
    def target(self) -> Chip:
        if self.chip is None:
            raise UartBootloaderError(f"no {self.dialect} session yet: connect() names the chip")
        return self.chip

    def _read(self, n: int, what: str, timeout: float = UART_ANSWER) -> bytes:
        data = bytes(_read_within(self.port, n, timeout))
        if len(data) != n:
            raise UartBootloaderError(f"{what}: the {self.dialect} bootloader answered {len(data)} of {n} "
                                      f"byte(s) ({data[:16]!r})")
        return data

    def _name_chip(self, chip: Chip | str | None) -> None:
        from . import chip_for

        if isinstance(chip, str):
            chip = get_chip(chip)
        if chip is not None and chip.signature and chip.signature != self.signature:
            raise UartBootloaderError(f"signature {self.signature.hex()} is not {chip.name}'s "
                                      f"({chip.signature.hex()})")
        found = chip or chip_for_signature(self.signature)
        if found is None:
            raise UartBootloaderError(f"unknown signature {self.signature.hex()}: pass --chip")
        self.chip = chip_for(found, self.dialect)

    def connect(self, chip: Chip | str | None = None, attempts: int = 10) -> None:
        raise NotImplementedError

    def leave(self) -> str:
        raise NotImplementedError

    def write_pages(self, image: Image, memory: str) -> int:
        raise NotImplementedError

    def read_range(self, start: int, length: int, memory: str = "flash") -> bytes:
        raise NotImplementedError

    def verify(self, image: Image, memory: str) -> None:
        phase("verify")
        base = EEPROM_BASE if memory == "eeprom" else 0
        for s, data in image.segments:
            lo, hi = s - s % 2, s + len(data) + (s + len(data)) % 2
            got = self.read_range(lo - base, hi - lo, memory)[s - lo:s - lo + len(data)]
            if got != bytes(data):
                bad = next(i for i in range(len(data)) if got[i:i + 1] != data[i:i + 1])
                raise UartBootloaderError(f"verify failed at 0x{s + bad:X}: wrote 0x{data[bad]:02X}, read "
                                          f"0x{got[bad]:02X}" if bad < len(got) else
                                          f"verify failed at 0x{s + bad:X}")
        self.steps.append("verified")


class OptibootClient(_UartClient):
    """One Optiboot (STK500 v1) session, as avrdude -c arduino runs it (src/stk500.c)."""

    def __init__(self, port: SerialPort, **kw):
        super().__init__(port, "optiboot", **kw)
        self._ext: int | None = None  # the extended address byte the bootloader holds (RAMPZ)

    def command(self, body: bytes, reply: int, what: str, timeout: float = UART_ANSWER) -> bytes:
        from .optiboot import CRC_EOP, STK_INSYNC, STK_OK

        self.port.write(bytes(body) + bytes((CRC_EOP,)))
        got = self._read(1, what, timeout)
        if got[0] != STK_INSYNC:
            raise UartBootloaderError(f"{what}: not in sync (answer 0x{got[0]:02X}, not STK_INSYNC)")
        data = self._read(reply + 1, what, timeout)
        if data[-1] != STK_OK:
            raise UartBootloaderError(f"{what}: the bootloader refused it (answer 0x{data[-1]:02X}, not STK_OK)")
        return data[:-1]

    def connect(self, chip: Chip | str | None = None, attempts: int = 10) -> None:
        from .optiboot import CRC_EOP, STK_GET_SYNC, STK_INSYNC, STK_OK, STK_READ_SIGN, STK_SW_MAJOR, STK_SW_MINOR

        # stk500_getsync: GET_SYNC until INSYNC OK comes back
        for _ in range(attempts):
            self.port.reset_input_buffer()
            self.port.write(bytes((STK_GET_SYNC, CRC_EOP)))
            old = self.port.timeout
            self.port.timeout = 0.3
            try:
                got = bytes(self.port.read(2))
            finally:
                self.port.timeout = old
            if got == bytes((STK_INSYNC, STK_OK)):
                break
        else:
            raise UartBootloaderError("no Optiboot (STK500 v1) bootloader answers on this port")
        # an earlier attempt's late answer may still be on its way: let it come, drop it, sync once more
        time.sleep(0.05)
        self.port.reset_input_buffer()
        self.command(bytes((STK_GET_SYNC,)), 0, "sync")
        major = self.command(bytes((0x41, STK_SW_MAJOR)), 1, "software version")[0]
        minor = self.command(bytes((0x41, STK_SW_MINOR)), 1, "software version")[0]
        self.signature = self.command(bytes((STK_READ_SIGN,)), 3, "signature")
        self._name_chip(chip)
        self.command(b"\x50", 0, "enter programming mode")
        self.steps.append(f"Optiboot {major}.{minor} {self.target.name}")

    def _load(self, address: int, memory: str) -> None:
        """STK_LOAD_ADDRESS (a word address), after the extended byte when the part has RAMPZ
        (avrdude's stk500_loadaddr for bootloaders: universal 0x4D 0x00 ext 0x00)."""
        word = (address - (0 if memory == "eeprom" else self.target.flash_start)) >> 1
        if memory == "flash" and self.target.flash_size > 0x10000 * 2:
            ext = word >> 16
            if ext != self._ext:
                self.command(bytes((0x56, 0x4D, 0x00, ext, 0x00)), 1, "load extended address")
                self._ext = ext
        self.command(bytes((0x55, word & 0xFF, (word >> 8) & 0xFF)), 0, f"load address 0x{address:X}")

    def write_pages(self, image: Image, memory: str) -> int:
        kind = b"E" if memory == "eeprom" else b"F"
        if memory == "eeprom":
            chunks = self._eeprom_chunks(image)
        else:
            chunks = list(image.pages(self.target.page_size, 0xFF, align=self.target.flash_start))
        count = sum(len(d) for _, d in chunks)
        with progress_bar(f"writing {memory}", count, self.progress) as advance:
            for address, data in chunks:
                self._load(address, memory)
                self.command(b"\x64" + len(data).to_bytes(2, "big") + kind + data, 0,
                             f"write {memory} at 0x{address:X}", timeout=UART_ANSWER + 0.01 * len(data))
                advance(len(data))
        self.steps.append(f"wrote {image.size} bytes of {memory}")
        return image.size

    def _eeprom_chunks(self, image: Image) -> list[tuple[int, bytes]]:
        """Optiboot loads EEPROM addresses as words (avrdude's a_div 2): an odd start or end is
        completed with the byte the EEPROM holds, read first."""
        out = []
        for s, data in image.segments:
            lo, hi = s - s % 2, s + len(data) + (s + len(data)) % 2
            block = bytearray(self.read_range(lo, hi - lo, "eeprom")) if (lo, hi) != (s, s + len(data)) \
                else bytearray(hi - lo)
            block[s - lo:s - lo + len(data)] = data
            for i in range(0, len(block), 128):
                out.append((lo + i, bytes(block[i:i + 128])))
        return out

    def read_range(self, start: int, length: int, memory: str = "flash") -> bytes:
        kind = b"E" if memory == "eeprom" else b"F"
        out = bytearray()
        addr, end = start, start + length
        block = 256 if memory == "flash" else 128
        with progress_bar(f"reading {memory}", length, self.progress) as advance:
            while addr < end:
                n = min(block, end - addr)
                self._load(addr, memory)
                out += self.command(b"\x74" + n.to_bytes(2, "big") + kind, n, f"read {memory} at 0x{addr:X}")
                if memory == "flash" and ((addr - self.target.flash_start + n) >> 17) != (addr >> 17):
                    self._ext = None  # ELPM Z+ moved RAMPZ on (avrdude's stk500_loadaddr reloads it)
                addr += n
                advance(n)
        return bytes(out)

    def leave(self) -> str:
        from .optiboot import CRC_EOP, STK_GET_SYNC

        self.command(b"\x51", 0, "leave programming mode")
        # the watchdog (16 ms) resets the chip into the sketch: a bootloader that still answers stayed
        time.sleep(0.05)
        self.port.reset_input_buffer()
        self.port.write(bytes((STK_GET_SYNC, CRC_EOP)))
        old = self.port.timeout
        self.port.timeout = 0.2
        try:
            got = bytes(self.port.read(2))
        finally:
            self.port.timeout = old
        if got == b"\x14\x10":
            return f"{STAYED}: it still answers STK_GET_SYNC after STK_LEAVE_PROGMODE"
        return "application started (the bootloader no longer answers after STK_LEAVE_PROGMODE)"


class WiringClient(_UartClient):
    """One session with the Mega 2560's stk500v2 bootloader, as avrdude -c wiring runs it."""

    def __init__(self, port: SerialPort, **kw):
        super().__init__(port, "wiring", **kw)
        self.seq = 0
        from ...isp.stk500v2 import FrameParser

        self.parser = FrameParser()

    def command(self, body: bytes, what: str, timeout: float = UART_ANSWER, *, check: bool = True) -> bytes:
        from ...isp.stk500v2 import STATUS_CMD_OK, encode_frame

        seq = self.seq
        self.seq = (self.seq + 1) & 0xFF
        self.port.write(encode_frame(seq, body))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            chunk = self._chunk(left) if left > 0 else b""
            if not chunk and left <= 0:
                raise UartBootloaderError(f"{what}: the wiring bootloader did not answer within {timeout:g} s")
            for got_seq, answer in self.parser.feed(chunk):
                if got_seq != seq or not answer or answer[0] != body[0]:
                    continue  # an answer to something else: stale
                if check and (len(answer) < 2 or answer[1] != STATUS_CMD_OK):
                    raise UartBootloaderError(f"{what}: the bootloader answered status 0x{answer[1]:02X}")
                return answer

    def _chunk(self, timeout: float) -> bytes:
        """What has come in: one byte within ``timeout``, then whatever is waiting behind it."""
        data = bytes(_read_within(self.port, 1, min(timeout, 0.2)))
        waiting = getattr(self.port, "in_waiting", 0) if data else 0
        return data + bytes(self.port.read(waiting)) if waiting else data

    def connect(self, chip: Chip | str | None = None, attempts: int = 10) -> None:
        from ...isp.stk500v2 import CMD_SIGN_ON

        for _ in range(attempts):
            self.port.reset_input_buffer()
            self.parser.reset()
            try:
                answer = self.command(bytes((CMD_SIGN_ON,)), "sign-on", timeout=0.3)
                break
            except UartBootloaderError:
                continue
        else:
            raise UartBootloaderError("no STK500 v2 (wiring) bootloader answers on this port")
        name = answer[3:3 + answer[2]].decode("ascii", "replace") if len(answer) > 2 else "?"
        self.signature = self.read_signature()
        self._name_chip(chip)
        from ...isp.stk500v2 import enter_progmode_isp

        self.command(enter_progmode_isp(), "enter programming mode")
        self.steps.append(f"wiring ({name}) {self.target.name}")

    def read_signature(self) -> bytes:
        from ...isp.stk500v2 import CMD_READ_SIGNATURE_ISP

        return bytes(self.command(bytes((CMD_READ_SIGNATURE_ISP, 4, 0x30, 0, i, 0)), "signature")[2]
                     for i in range(3))

    def fuses(self) -> dict[str, int]:
        from ...isp.stk500v2 import CMD_READ_FUSE_ISP, CMD_READ_LOCK_ISP

        out = {}
        names = [f.name for f in self.target.fuses] if self.target.fuses else ["lfuse", "hfuse", "efuse"]
        ops = {"lfuse": (0x50, 0x00), "hfuse": (0x58, 0x08), "efuse": (0x50, 0x08)}
        for name in names:
            if name in ops:
                out[name] = self.command(bytes((CMD_READ_FUSE_ISP, 4, *ops[name], 0, 0)), name)[2]
        out["lock"] = self.command(bytes((CMD_READ_LOCK_ISP, 4, 0x58, 0, 0, 0)), "lock")[2]
        return out

    def _load(self, address: int, memory: str) -> None:
        from ...isp.stk500v2 import load_address

        if memory == "eeprom":
            self.command(load_address(address), f"load address 0x{address:X}")
        else:
            word = (address - self.target.flash_start) >> 1
            self.command(load_address(word, extended=self.target.flash_size > 0x20000),
                         f"load address 0x{address:X}")

    def write_pages(self, image: Image, memory: str) -> int:
        from ...isp.stk500v2 import CMD_CHIP_ERASE_ISP, CMD_PROGRAM_EEPROM_ISP, CMD_PROGRAM_FLASH_ISP

        if memory == "eeprom":
            blocks = [(s + i, bytes(d[i:i + 128])) for s, d in image.segments for i in range(0, len(d), 128)]
            cmd, header = CMD_PROGRAM_EEPROM_ISP, (0xC1, 10, 0xC1, 0xC2, 0xA0, 0, 0)
        else:
            # stk500boot erases the page at its own pointer, which starts at 0 and moves one page per write:
            # every page from the start, in order, is written (CMD_CHIP_ERASE_ISP puts the pointer at 0)
            self.command(bytes((CMD_CHIP_ERASE_ISP, 10, 0, 0xAC, 0x80, 0, 0)), "reset the erase pointer",
                         check=False)
            page, base = self.target.page_size, self.target.flash_start
            end = image.end + (-(image.end - base)) % page
            blocks = [(a, image.tobytes(a, a + page, 0xFF)) for a in range(base, end, page)]
            cmd, header = CMD_PROGRAM_FLASH_ISP, (0xC1, 10, 0x40, 0x4C, 0x20, 0, 0)
        nxt = None
        with progress_bar(f"writing {memory}", sum(len(d) for _, d in blocks), self.progress) as advance:
            for address, data in blocks:
                if address != nxt:
                    self._load(address, memory)
                self.command(bytes((cmd,)) + len(data).to_bytes(2, "big") + bytes(header) + data,
                             f"write {memory} at 0x{address:X}")
                nxt = address + len(data)
                advance(len(data))
        self.steps.append(f"wrote {image.size} bytes of {memory}")
        return image.size

    def read_range(self, start: int, length: int, memory: str = "flash") -> bytes:
        from ...isp.stk500v2 import CMD_READ_EEPROM_ISP, CMD_READ_FLASH_ISP

        cmd, op = (CMD_READ_EEPROM_ISP, 0xA0) if memory == "eeprom" else (CMD_READ_FLASH_ISP, 0x20)
        out = bytearray()
        addr, end = start, start + length
        self._load(addr, memory)
        with progress_bar(f"reading {memory}", length, self.progress) as advance:
            while addr < end:
                n = min(256, end - addr)
                answer = self.command(bytes((cmd,)) + n.to_bytes(2, "big") + bytes((op,)),
                                      f"read {memory} at 0x{addr:X}")
                out += answer[2:2 + n]
                addr += n
                advance(n)
        return bytes(out)

    def leave(self) -> str:
        from ...isp.stk500v2 import CMD_LEAVE_PROGMODE_ISP, CMD_SIGN_ON

        self.command(bytes((CMD_LEAVE_PROGMODE_ISP, 1, 1)), "leave programming mode")
        time.sleep(0.05)
        self.port.reset_input_buffer()
        self.parser.reset()
        try:
            self.command(bytes((CMD_SIGN_ON,)), "sign-on", timeout=0.2)
        except UartBootloaderError:
            return "application started (the bootloader no longer answers after CMD_LEAVE_PROGMODE_ISP)"
        return f"{STAYED}: it still answers CMD_SIGN_ON after CMD_LEAVE_PROGMODE_ISP"


def _uart_session(backend, port: str | None, dialect: str, chip, progress, baudrate: int) -> tuple[_UartClient, bool]:
    """An open client (connected) and whether the port is ours to close."""
    if backend is not None and hasattr(backend, "write") and hasattr(backend, "read"):
        client = _uart_client(backend, dialect, progress)
        client.connect(chip)
        return client, False
    if port is None:
        from . import BRIDGE_IDS

        ids = [BRIDGE_IDS[dialect]]
        found = list_ports(ids)
        if not found:
            raise UartBootloaderError(f"no {dialect} board found ({ids[0][0]:04x}:{ids[0][1]:04x}); pass --port")
        port = found[0]
    # avrdude's stk500_getsync pulses DTR again before each retry; where the port has no modem
    # lines (a pty), closing and opening it again is the reset a host can give: each time a
    # little longer, so a server polling for the hang-up sees it on a loaded machine too
    for pause in (0.0, 0.1, 0.4, 1.0):
        time.sleep(pause)
        ser = _open_uart(port, baudrate)
        _pulse_reset(ser)
        time.sleep(UART_SETTLE)
        client = _uart_client(ser, dialect, progress)
        try:
            client.connect(chip, attempts=3)
            return client, True
        except UartBootloaderError as exc:
            ser.close()
            if "answers on this port" not in str(exc):
                raise
            last = exc
    raise last


def _open_uart(port: str, baudrate: int):
    try:
        import serial

        return serial.Serial(port, baudrate, timeout=UART_ANSWER, write_timeout=10.0)
    except (OSError, ValueError) as exc:
        raise UartBootloaderError(f"cannot open {port}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - serial.SerialException
        raise UartBootloaderError(f"cannot open {port}: {exc}") from None


def _uart_client(ser, dialect: str, progress) -> _UartClient:
    return OptibootClient(ser, progress=progress) if dialect == "optiboot" else WiringClient(ser, progress=progress)


def uart_validate(image: Image, chip: Chip, dialect: str, memory: str = "flash") -> Image:
    """Refuse an image the dialect's bootloader could not take on ``chip`` (no device needed)."""
    from . import chip_for

    chip = chip_for(chip, dialect)
    if memory == "eeprom":
        if image and image.start >= EEPROM_BASE:
            image = image.shifted(-EEPROM_BASE)
        check_ranges(image, [(0, chip.eeprom_size)], [], f"{chip.name} EEPROM ({chip.eeprom_size} bytes)")
        return image
    if memory != "flash":
        raise ImageRejected(f"{dialect} writes flash or eeprom, not {memory!r}")
    layout = chip.layout()
    check_ranges(image, layout.application_ranges("flash"), layout.protected, f"{chip.name} ({dialect})")
    return image


def uart_flash(image: Image, backend=None, *, port: str | None = None, dialect: str = "optiboot",
               chip: Chip | str | None = None, memory: str = "flash", verify: bool = True, leave: bool = True,
               progress=None, baudrate: int = UART_BAUD, force: bool = False) -> FlashResult:
    """Flash through Optiboot or the wiring bootloader: validate (before anything is sent when
    ``chip`` is given, and against the chip the bootloader names), write, verify, leave."""
    t0 = time.perf_counter()
    if not image:
        raise ImageRejected("the image is empty")
    if chip is not None:
        chip = get_chip(chip) if isinstance(chip, str) else chip
        image = uart_validate(image, chip, dialect, memory)
        preflight(image, chip, force=force, memory=memory)
    client, own = _uart_session(backend, port, dialect, chip, progress, baudrate)
    try:
        image = uart_validate(image, client.target, dialect, memory)
        preflight(image, client.target, force=force, memory=memory)
        n = client.write_pages(image, memory)
        if verify:
            client.verify(image if memory == "flash" else image.shifted(EEPROM_BASE), memory)
        if leave:
            step = client.leave()
            if step.startswith(STAYED) and memory == "flash":
                raise UartBootloaderError(step)
            client.steps.append(step)
        return FlashResult(dialect, n, time.perf_counter() - t0, verify, client.steps)
    finally:
        if own:
            client.port.close()  # type: ignore[attr-defined]


def uart_read(backend=None, *, port: str | None = None, dialect: str = "optiboot", chip: Chip | str | None = None,
              memory: str = "flash", start: int | None = None, length: int | None = None, trim: bool = True,
              progress=None, baudrate: int = UART_BAUD) -> Image:
    """Read the application flash (or EEPROM, at 0x810000) through Optiboot or wiring."""
    client, own = _uart_session(backend, port, dialect, chip, progress, baudrate)
    try:
        target = client.target
        if memory == "flash":
            lo, hi = target.layout().application_ranges("flash")[0]
            base = 0
        elif memory == "eeprom":
            lo, hi, base = 0, target.eeprom_size, EEPROM_BASE
        else:
            raise ImageRejected(f"{dialect} reads flash or eeprom, not {memory!r}")
        start = lo if start is None else start
        length = (hi - start) if length is None else length
        if start < lo or start + length > hi:
            raise ImageRejected(f"0x{start:X}+{length} is outside {memory} (0x{lo:X}-0x{hi - 1:X})")
        data = client.read_range(start, length, memory)
        if trim:
            data = data.rstrip(b"\xff")
        return Image([(base + start, data)] if data else [])
    finally:
        if own:
            client.port.close()  # type: ignore[attr-defined]


def uart_identify(backend=None, *, port: str | None = None, dialect: str = "optiboot", chip=None,
                  baudrate: int = UART_BAUD, fuses: bool = False) -> tuple[bytes, dict[str, int]]:
    """The signature the bootloader reads, and (``fuses``, wiring only) its fuses and lock byte."""
    client, own = _uart_session(backend, port, dialect, chip, False, baudrate)
    try:
        values = client.fuses() if fuses and isinstance(client, WiringClient) else {}
        return client.signature, values
    finally:
        if own:
            client.port.close()  # type: ignore[attr-defined]


__all__ += ["OptibootClient", "WiringClient", "UartBootloaderError", "uart_flash", "uart_read", "uart_validate",
            "uart_identify", "UART_BAUD"]
