"""MIDI device side: the bootloader's protocol engine and the USB-MIDI Function that carries it.

The engine is a pure state machine over the memory core: MIDI bytes in
(from USB-MIDI packets, an ALSA port, a UART), SysEx replies out.  It
speaks two forms of one protocol (docs/personalities/midi.md):

- two-way: IDENTIFY, ERASE, WRITE, READ, CRC, BOOT, each answered with an
  ACK or a NAK carrying a reason;
- one-way: BEGIN, PAGE..., END, as a .mid file plays them, never answered.
  Each page erases its sector the first time the session touches it
  (SessionWriter), a page with a bad checksum stays missing, and the
  application is only manifested when every page arrived and the CRC of the
  whole span matches END.  IDENTIFY reports what is missing.

Every check runs before the memory is touched, and every write goes
through the memory core, which refuses the bootloader region by itself.
Unrelated traffic (clock, active sensing, notes, other manufacturers'
SysEx) is ignored.
"""

from __future__ import annotations

from collections import deque
from typing import Callable

from ...memory import Chip, MemoryFault
from ...memory.writer import SessionWriter
from ...usb.descriptors import Endpoint, Interface
from ...usb.device import Function, SetupPacket, SignalKind, Stall
from ..native import FLAG_APP_VALID, NativeCommands, NativeFault, NativeInfo, Op, Refusal, crc32, refusal_for
from .descriptors import (
    AUDIO_CLASS,
    AUDIOCONTROL,
    JACK_EMBEDDED,
    JACK_EXTERNAL,
    MIDISTREAMING,
    ac_header,
    in_jack,
    ms_endpoint,
    ms_header,
    out_jack,
)
from .notes import NotesDecoder
from .packets import PACKET_SIZE, decode_packets, messages_packets
from .protocol import (
    FLAG_REFUSED_FILE,
    FLAG_SESSION,
    FLAG_SESSION_FAILED,
    OPS,
    PROTOCOL_VERSION,
    Cmd,
    ack,
    nak,
    pack_info,
)
from .stream import StreamParser
from .sysex import (
    SIGNATURE,
    FrameError,
    Reader,
    from_u7,
    is_ours,
    pack7,
    packed_length,
    parse_frame,
    u7,
    unpack7,
)


class Session:
    """One one-way (file) update: what BEGIN announced and which pages arrived."""

    def __init__(self, start: int, page_size: int, pages: int, image_crc: int, memory):
        self.start = start
        self.page_size = page_size
        self.pages = pages
        self.image_crc = image_crc
        self.received: set[int] = set()
        self.bad: set[int] = set()  # pages seen with a bad checksum (still missing unless resent)
        self.failed = ""  # why the session cannot complete
        self.writer = SessionWriter(memory)

    @property
    def key(self) -> tuple[int, int, int, int]:
        return self.start, self.page_size, self.pages, self.image_crc

    @property
    def missing(self) -> int:
        return self.pages - len(self.received)


class MidiBootEngine:
    """The bootloader's protocol over MIDI bytes.  Feed :meth:`receive`; collect :meth:`take_replies`."""

    OUTBOX = 64  # replies held for the host; the oldest go first

    def __init__(self, memory, chip: Chip, *, signal: Callable[..., None] | None = None):
        self.memory = memory
        self.chip = chip
        self.signal = signal or (lambda kind, reason="", delay=0.0: None)
        # how long the memory is busy after an operation (MidiFunction: Function.busy)
        self.busy: Callable[[float], object] = lambda seconds: None
        # what each request does and checks
        self.native = NativeCommands(memory, chip, busy=lambda seconds: self.busy(seconds))
        self.app_start, self.app_end = self.native.app_start, self.native.app_end
        self.page_size = chip.page_size
        # a frame holds at most one page, packed, plus its header fields
        limit = packed_length(self.page_size) + 64
        self.parser = StreamParser(max_sysex=limit)
        self.notes = NotesDecoder(max_length=limit)
        self.outbox: deque[bytes] = deque(maxlen=self.OUTBOX)
        self.session: Session | None = None
        self.refused_file = ""
        self.status = ""  # how the last file ended, for IDENTIFY
        self.damaged = 0  # damaged frames since the last BEGIN (bad check); the notes decoder counts its own
        self._notes_broken = 0  # the notes decoder's count at the last BEGIN
        self.refusals: list[str] = []  # why frames were refused (tests and logs)
        self.ignored = 0  # messages that were not ours
        self.left = False

    # ------------------------------------------------------------------
    # input
    def receive(self, data: bytes) -> None:
        """MIDI bytes, in any split: a USB-MIDI packet's worth, a port callback's message, a UART byte."""
        data = bytes(data)
        frames = self.parser.split_sysex(data)
        if frames is not None:
            # the flash path: a transfer of whole SysEx messages (each F0 + body, F7 stripped)
            for piece in frames:
                if piece[1:4] == SIGNATURE:
                    self.frame(piece[1:])
                else:
                    self.ignored += 1  # another manufacturer's SysEx
            return
        for message in self.parser.feed(data):
            if message.kind == "sysex":
                body = message.data[1:-1]
                if is_ours(body):
                    self.frame(body)
                else:
                    self.ignored += 1  # another manufacturer's SysEx
            elif message.kind == "cut":
                if message.data[1:4] == SIGNATURE:
                    self.damaged += 1  # one of our frames lost its end (its F7 and maybe more)
                else:
                    self.ignored += 1
            elif message.kind == "channel":
                carried = self.notes.feed(message.data)
                if carried is not None and is_ours(carried):
                    self.frame(carried)
                elif carried is None:
                    self.ignored += 1
            else:
                self.ignored += 1  # clock, active sensing, song position...

    def take_replies(self) -> list[bytes]:
        out = list(self.outbox)
        self.outbox.clear()
        return out

    def _refuse(self, why: str) -> None:
        if len(self.refusals) >= 1000:
            del self.refusals[:500]
        self.refusals.append(why)

    # ------------------------------------------------------------------
    # frames
    def frame(self, body: bytes) -> None:
        try:
            cmd, tag, payload = parse_frame(body)
        except FrameError as exc:
            self._refuse(str(exc))
            if exc.cmd is not None and exc.cmd < Cmd.BEGIN:
                self.outbox.append(nak(exc.cmd, exc.tag, exc.refusal, str(exc)))
                return
            self.damaged += 1  # a one-way frame (or one whose command byte is itself damaged)
            if exc.cmd == Cmd.PAGE and self.session is not None:
                self._mark_bad(self.session, body)
            return
        if cmd == Cmd.WRITE or cmd == Cmd.READ:
            # the two commands of every page: decoded without a Reader
            try:
                reply = self._write(payload) if cmd == Cmd.WRITE else self._read(payload)
            except (NativeFault, ValueError, MemoryFault) as exc:
                self._nak(cmd, tag, exc)
                return
            self.outbox.append(ack(cmd, tag, reply))
            return
        if cmd in (Cmd.BEGIN, Cmd.PAGE, Cmd.END):
            try:
                self._one_way(cmd, Reader(payload))
            except (NativeFault, ValueError) as exc:
                self._refuse(f"{Cmd(cmd).name}: {exc}")
            return
        if cmd in (Cmd.ACK, Cmd.NAK):
            return  # our own replies looped back (a MIDI thru): not for us
        try:
            reply = self._command(cmd, Reader(payload))
        except (NativeFault, ValueError, MemoryFault) as exc:
            self._nak(cmd, tag, exc)
            return
        self.outbox.append(ack(cmd, tag, reply))
        if cmd == Cmd.BOOT:
            # the ACK goes out before the reset, as the HID native dialect's RESET does
            self.left = True
            self.signal(SignalKind.LEAVE, "MIDI BOOT", 0.05)

    def _nak(self, cmd: int, tag: int, exc: Exception) -> None:
        if isinstance(exc, NativeFault):
            reason = exc.refusal
        elif isinstance(exc, MemoryFault):
            reason = refusal_for(exc)
        else:  # ValueError: a short or badly packed payload
            reason = Refusal.MALFORMED
        self._refuse(str(exc))
        self.outbox.append(nak(cmd, tag, reason, str(exc)))

    @staticmethod
    def _mark_bad(session: Session, body: bytes) -> None:
        """A PAGE whose checksum failed: note its sequence number if it can be read (it stays missing)."""
        inner = body[len(SIGNATURE) + 2:]  # after cmd and tag: the 3-byte sequence number
        if len(inner) >= 3:
            seq = from_u7(inner[:3])
            if seq < session.pages and seq not in session.received:
                session.bad.add(seq)

    # ------------------------------------------------------------------
    # two-way
    def info(self) -> NativeInfo:
        flash = self.memory.layout.flash
        timing = self.chip.timing  # the datasheet's, whatever mode the simulation runs in
        flags = FLAG_APP_VALID if getattr(self.memory, "app_valid", False) else 0
        missing = 0
        status = self.status
        if self.session is not None:
            flags |= FLAG_SESSION
            missing = self.session.missing
            if self.session.failed:
                flags |= FLAG_SESSION_FAILED
                status = self.session.failed
        if self.refused_file:
            flags |= FLAG_REFUSED_FILE
            status = status or f"refused {self.refused_file}, this is {self.chip.name}"
        erase_ms = timing.erase_time(flash.page_size, min(s for _, s in flash.sectors))
        return self.native.info((PROTOCOL_VERSION, 0), program_us=int(timing.program_ms * 1000),
                                erase_us=int(erase_ms * 1000), flags=flags, pages_missing=missing,
                                damaged=self.damaged_frames, status=status)

    @property
    def damaged_frames(self) -> int:
        """Frames of the file that arrived damaged since the last BEGIN: a bad check, a SysEx cut
        off by the next status byte (its F7 lost), or Note Ons lost or out of place."""
        return self.damaged + self.notes.broken - self._notes_broken

    def _write(self, payload: bytes) -> bytes:
        """WRITE: u5 address, packed data; answers the address."""
        if len(payload) < 5:
            raise ValueError("frame too short")
        address = from_u7(payload[:5])
        data = unpack7(payload[5:])
        length = len(data)
        if length <= 0 or address < self.app_start or address + length > self.app_end:
            self.native.check_span(address, length, "WRITE")
        if address % self.page_size or length > self.page_size:
            raise NativeFault(f"WRITE 0x{address:X}+{length} is not within one {self.page_size}-byte page",
                            Refusal.MISALIGNED)
        self.session = None
        current = self.memory.read(address, length)
        if current != data:  # a retry of a written page is acknowledged
            # NOR programming only clears bits: a page that is not erased is refused, not merged into
            if current.count(0xFF) != length:
                raise NativeFault(f"WRITE 0x{address:X}: the page is not erased", Refusal.NOT_ERASED)
            self.busy(self.memory.program(address, data))
        return payload[:5]  # the address, as sent (5 7-bit groups)

    def _read(self, payload: bytes) -> bytes:
        """READ: u5 address, u5 length; answers the address and the packed data."""
        if len(payload) < 10:
            raise ValueError("frame too short")
        address, length = from_u7(payload[:5]), from_u7(payload[5:10])
        if length <= 0 or address < self.app_start or address + length > self.app_end:
            self.native.check_span(address, length, "READ")
        if length > self.page_size:
            raise NativeFault(f"READ of {length} bytes, at most {self.page_size}", Refusal.MALFORMED)
        return payload[:5] + pack7(self.memory.read(address, length))

    def _command(self, cmd: int, r: Reader) -> bytes:
        op = OPS.get(cmd)
        if op is Op.IDENTIFY:
            return pack_info(self.info())
        if op is Op.ERASE:
            start, length = self.native.application(r.u(5), r.u(5))  # length 0: the whole application
            self.native.check_span(start, length, "ERASE")
            self.session = None
            return u7(self.native.erase(start, length), 3)
        if op is Op.WRITE:
            return self._write(r.rest())
        if op is Op.READ:
            return self._read(r.rest())
        if op is Op.CRC:
            crc, start, length = self.native.crc(r.u(5), r.u(5))  # length 0: the application
            return u7(crc, 5) + u7(start, 5) + u7(length, 5)
        if op is Op.BOOT:
            s = self.session
            if s is not None:
                # a file was played and did not complete: flash holds part of an image
                why = s.failed or f"the file played last is incomplete ({s.missing} of {s.pages} page(s) missing)"
                raise NativeFault(f"BOOT: {why}", Refusal.NO_APPLICATION)
            self.native.boot()
            return b""
        raise NativeFault(f"unknown command 0x{cmd:02X}", Refusal.UNKNOWN_COMMAND)

    # ------------------------------------------------------------------
    # one-way
    def _one_way(self, cmd: int, r: Reader) -> None:
        if cmd == Cmd.BEGIN:
            version = r.take(1)[0]
            chip = r.text()
            start, page_size, pages, image_crc = r.u(5), r.u(5), r.u(3), r.u(5)
            if version != PROTOCOL_VERSION:
                raise NativeFault(f"protocol version {version}, this bootloader speaks {PROTOCOL_VERSION}",
                                Refusal.MALFORMED)
            if chip.lower() != self.chip.name.lower() or page_size != self.page_size:
                self.refused_file = f"a file for {chip} ({page_size}-byte pages)"
                self.session = None
                raise NativeFault(f"{self.refused_file}, this is {self.chip.name} ({self.page_size}-byte pages)",
                                Refusal.WRONG_CHIP)
            if pages == 0 or (start - self.memory.layout.flash.start) % page_size:
                raise NativeFault(f"span 0x{start:X}, {pages} pages is not page aligned", Refusal.MISALIGNED)
            self.native.check_span(start, pages * page_size, "BEGIN")
            self.refused_file = ""
            if self.session is not None and self.session.key == (start, page_size, pages, image_crc):
                return  # the same file again (a sequencer replays its first event): keep what arrived
            self.session = Session(start, page_size, pages, image_crc, self.memory)
            self.status = ""
            self.damaged = 0
            self._notes_broken = self.notes.broken
            return
        s = self.session
        if s is None:
            raise NativeFault("no BEGIN for this file (another chip's, or not received)", Refusal.MALFORMED)
        if cmd == Cmd.PAGE:
            seq, address = r.u(3), r.u(5)
            data = unpack7(r.rest())
            if seq >= s.pages or address != s.start + seq * s.page_size or len(data) != s.page_size:
                raise NativeFault(f"page {seq} at 0x{address:X}+{len(data)} does not belong to the file",
                                Refusal.OUT_OF_RANGE)
            if seq in s.received:
                if self.memory.read(address, len(data)) != data:
                    # refused, flash untouched: END's CRC decides whether what is there is the image
                    raise NativeFault(f"page {seq} repeated with other data", Refusal.NOT_ERASED)
                return  # a repeat: already there
            try:
                self.busy(s.writer.write(address, data))
            except MemoryFault as exc:
                s.failed = f"page {seq}: {exc}"
                raise NativeFault(s.failed, refusal_for(exc)) from None
            s.received.add(seq)
            s.bad.discard(seq)
            return
        if cmd == Cmd.END:
            pages, image_crc = r.u(3), r.u(5)
            if (pages, image_crc) != (s.pages, s.image_crc):
                s.failed = "END does not match BEGIN"
                raise NativeFault(s.failed, Refusal.MALFORMED)
            if s.missing:
                self.status = (f"the file ended with {s.missing} of {s.pages} page(s) missing "
                               f"({self.damaged_frames} damaged frame(s)): the application stays invalid; "
                               f"play the file again")
                raise NativeFault(self.status, Refusal.MALFORMED)
            got = crc32(self.memory.read(s.start, s.pages * s.page_size))
            if got != s.image_crc:
                s.failed = f"image CRC 0x{got:08X}, the file says 0x{s.image_crc:08X}"
                raise NativeFault(s.failed, Refusal.MEMORY)
            try:
                self.busy(self.memory.manifest())
            except MemoryFault as exc:
                s.failed = str(exc)
                raise NativeFault(s.failed, Refusal.NO_APPLICATION) from None
            self.session = None
            self.status = f"file complete: {s.pages} page(s), CRC-32 0x{got:08X}: application valid"
            self.left = True
            self.signal(SignalKind.LEAVE, "MIDI file complete", 0.0)

    def bus_reset(self) -> None:
        self.parser.reset()
        self.outbox.clear()


class MidiByteStream:
    """The engine as a plain byte stream (usb.device.ByteStream), for a transport without USB:
    MIDI bytes in, in any split; the replies out, whole SysEx messages one after another."""

    def __init__(self, engine: MidiBootEngine):
        self.engine = engine

    def feed(self, data: bytes) -> bytes:
        self.engine.receive(data)
        return b"".join(self.engine.take_replies())

    def disconnect(self) -> None:
        """The port was closed: a half-received message is dropped (as a status byte would)."""
        self.engine.parser.reset()


# --------------------------------------------------------------------------
# USB MIDI 1.0 Function

# Jack ids (USB-MIDI 1.0 appendix B's example numbering): the host's OUT
# endpoint feeds embedded IN jack 1, wired to external OUT jack 4 (the
# device's "MIDI OUT" connector); external IN jack 2 feeds embedded OUT
# jack 3, which the IN endpoint carries back to the host.
EMB_IN, EXT_IN, EMB_OUT, EXT_OUT = 1, 2, 3, 4


class MidiFunction(Function):
    """AudioControl interface + MIDIStreaming interface with two bulk endpoints (USB-MIDI 1.0 appendix B).

    Full-speed bulk, 64 bytes; the standard endpoint descriptors take the
    9-byte audio form and carry their MS_GENERAL descriptor, as
    snd-usb-audio, macOS, Windows' usbaudio.sys and iPadOS expect.
    """

    name = "midi"
    iad = (AUDIO_CLASS, AUDIOCONTROL, 0x00)
    MAX_IN_PACKETS = 16384  # USB-MIDI packets queued for the host before the oldest are dropped

    def __init__(self, engine: MidiBootEngine, interface_name: str | None = None):
        super().__init__()
        self.engine = engine
        self.interface_name = interface_name
        engine.signal = self.signal
        engine.busy = self.busy
        self.ep_out_ = Endpoint(1, "out", "bulk", max_packet_size=64, audio_style=True,
                                extra=ms_endpoint((EMB_IN,)))
        self.ep_in_ = Endpoint(1, "in", "bulk", max_packet_size=64, audio_style=True,
                               extra=ms_endpoint((EMB_OUT,)))
        self._in = bytearray()
        self._stream = MidiByteStream(engine)

    def _first_interface(self) -> int:
        """The device interface number the AudioControl interface will get.

        The AC header's baInterfaceNr names the MIDIStreaming interface by
        its device-wide number, so it depends on the functions before us.
        """
        dev = self.device
        if dev is None:
            return 0
        count = 0
        for b in getattr(dev, "_bindings", []):
            count += len({i.number for i in b.interfaces})
        return count

    def interfaces(self, speed="full"):
        jacks = (in_jack(JACK_EMBEDDED, EMB_IN) + in_jack(JACK_EXTERNAL, EXT_IN)
                 + out_jack(JACK_EMBEDDED, EMB_OUT, EXT_IN) + out_jack(JACK_EXTERNAL, EXT_OUT, EMB_IN))
        ac = Interface(0, AUDIO_CLASS, AUDIOCONTROL, 0, extra=ac_header(self._first_interface() + 1))
        # wTotalLength counts the header, the jacks and the endpoints with their
        # MS_GENERAL descriptors, as USB-MIDI 1.0 appendix B.4.2's example (0x0041) does.
        eps = [self.ep_out_, self.ep_in_]
        total = 7 + len(jacks) + sum(9 + len(ep.extra) for ep in eps)
        ms = Interface(1, AUDIO_CLASS, MIDISTREAMING, 0, name=self.interface_name, endpoints=eps,
                       extra=ms_header(total) + jacks)
        return [ac, ms]

    # --- for a transport without USB (classes/midi/alsaport.py)
    def byte_stream(self) -> MidiByteStream:
        """MIDI is a byte stream: an ALSA port or a UART carries the engine without USB."""
        return self._stream

    # --- USB
    def setup(self, req: SetupPacket, data: bytes):
        raise Stall  # USB-MIDI 1.0 defines no class requests a bulk-only MIDI function must answer

    def ep_out(self, ep, data):
        # USB-MIDI packets for cable 0 (our one embedded IN jack); others are dropped
        self.engine.receive(decode_packets(bytes(data), cable=0))

    def ep_in(self, ep, max_length):
        replies = self.engine.take_replies()
        if replies:
            self._in += messages_packets(replies, 0)
        if len(self._in) > self.MAX_IN_PACKETS * PACKET_SIZE:
            del self._in[:len(self._in) - self.MAX_IN_PACKETS * PACKET_SIZE]
        if not self._in:
            return None
        n = max(PACKET_SIZE, max_length - max_length % PACKET_SIZE)
        chunk = bytes(self._in[:n])
        del self._in[:n]
        return chunk

    def bus_reset(self):
        self.engine.bus_reset()
        self._in.clear()

    def configured(self, active):
        if not active:
            self._in.clear()


__all__ = ["MidiBootEngine", "MidiByteStream", "MidiFunction", "Session"]
