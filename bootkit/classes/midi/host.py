"""MIDI host side: the two-way SysEx client, and the player for the one-way file.

Two links carry the same SysEx frames:

- USB: pyusb bulk transfers of USB-MIDI event packets to the MIDIStreaming
  interface's endpoints, found from the descriptors (real hardware through
  libusb with snd-usb-audio detached, or the emulator's virtual backend);
- a MIDI port by name, through mido with python-rtmidi (ALSA, CoreMIDI,
  WinMM): what every OS offers a class-compliant MIDI device.

``flash`` identifies the device (refusing an image for another chip, or
one common.preflight refuses, before anything is erased), erases the
image's span, writes page by page with retries on a NAK for a damaged
frame or a lost reply, reads every page back, compares the CRC of the
span, and boots; then it watches what the device does and reports only
that (see :func:`watch_leave`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import usb.core
import usb.util

from ...formats.image import Image
from ...memory import Chip
from ...progress import progress_bar
from ..common import FlashResult, HostError, ImageRejected, check_ranges, preflight
from ..native import TRANSIENT, NativeInfo, Refusal, crc32, first_difference
from ..usbhost import (
    CAME_BACK,
    STAYED,
    Arrival,
    FoundDevice,
    LeaveWatch,
    Look,
    UsbLook,
    bus_snapshot,
    endpoint_pair,
    gone,
    in_process,
    matching_devices,
    take_interfaces,
)
from . import protocol as P
from .descriptors import AUDIO_CLASS, MIDISTREAMING
from .packets import decode_packets, message_packets, messages_packets
from .stream import StreamParser
from .sysex import SIGNATURE, FrameError, Reader, frame, from_u7, pack7_many, parse_frame, u7, unpack7, unpack7_many
from .midifile import TICK_SECONDS, file_events

BOOTKIT_VID = 0x1209  # pid.codes, as bootkit's DFU and HID devices
MIDI_PID = 0xB00C
KNOWN_IDS = {(BOOTKIT_VID, MIDI_PID)}


class MidiError(HostError):
    """The device or the exchange failed: one line saying what and where."""


class Gone(MidiError):
    """The device disconnected in the middle of an exchange."""


class Nak(MidiError):
    def __init__(self, what: str, reason: int, text: str):
        try:
            name = Refusal(reason).name
        except ValueError:
            name = f"reason 0x{reason:02X}"
        super().__init__(f"{what}: device answered NAK {name}" + (f" ({text})" if text else ""))
        self.reason = reason
        self.reason_name = name
        self.text = text


# --------------------------------------------------------------------------
# links: send whole MIDI messages, receive MIDI bytes

@dataclass
class MidiTarget(FoundDevice):
    """A MIDIStreaming interface found on the bus."""

    device: usb.core.Device
    interface: int
    ep_out: int  # bEndpointAddress, from the descriptors
    ep_in: int | None

    def describe(self) -> str:
        return (f"[{self.vid:04x}:{self.pid:04x}] USB-MIDI intf={self.interface} out=0x{self.ep_out:02x}"
                + (f" in=0x{self.ep_in:02x}" if self.ep_in is not None else ""))


def find_devices(backend=None, *, vid=None, pid=None, serial=None) -> list[MidiTarget]:
    """MIDIStreaming interfaces (class 0x01, subclass 0x03) with bulk endpoints: bootkit's
    VID:PID, or any device ``vid``/``pid`` select."""
    found = []
    dev: usb.core.Device  # matching_devices yields pyusb's device and configuration
    cfg: usb.core.Configuration
    for dev, cfg in matching_devices(backend, vid=vid, pid=pid, serial=serial):
        if vid is None and pid is None and (dev.idVendor, dev.idProduct) not in KNOWN_IDS:
            continue
        for intf in cfg:
            if (intf.bInterfaceClass, intf.bInterfaceSubClass) != (AUDIO_CLASS, MIDISTREAMING):
                continue
            ep_in, ep_out = endpoint_pair(intf, usb.util.ENDPOINT_TYPE_BULK)
            if ep_out is not None:
                found.append(MidiTarget(dev, intf.bInterfaceNumber, ep_out, ep_in))
                break
    return found


def list_devices(backend=None) -> list[str]:
    return [t.describe() for t in find_devices(backend)]


class UsbLink:
    """USB-MIDI event packets over the MIDIStreaming bulk endpoints."""

    # bytes asked for per IN transfer: a window of READ replies (16 x 1 KiB pages, packed and in
    # packets) in one transfer; the host controller ends it early on the device's short packet
    READ_SIZE = 1 << 16

    def __init__(self, target: MidiTarget, *, timeout: int = 2000):
        self.target = target
        self.dev = target.device
        self.timeout = timeout
        # snd-usb-audio holds both interfaces (AudioControl and MIDIStreaming)
        take_interfaces(self.dev, target.interface - 1, target.interface)

    def send(self, message: bytes) -> None:
        try:
            self.dev.write(self.target.ep_out, message_packets(message), self.timeout)
        except usb.core.USBError as exc:
            raise _usb_error("send", exc) from None

    def send_many(self, messages: list[bytes]) -> None:
        """Several messages in one bulk transfer (the host controller splits it into packets)."""
        try:
            self.dev.write(self.target.ep_out, messages_packets(messages), self.timeout)
        except usb.core.USBError as exc:
            raise _usb_error("send", exc) from None

    def receive(self, timeout: float) -> bytes:
        """MIDI bytes the device sent within ``timeout`` s (b"" when none)."""
        if self.target.ep_in is None:
            raise MidiError("the MIDIStreaming interface has no IN endpoint: one-way only")
        try:
            raw = bytes(self.dev.read(self.target.ep_in, self.READ_SIZE, max(1, int(timeout * 1000))))
        except usb.core.USBTimeoutError:
            return b""
        except usb.core.USBError as exc:
            raise _usb_error("receive", exc) from None
        return decode_packets(raw, cable=0)

    def close(self) -> None:
        try:
            usb.util.dispose_resources(self.dev)
        except Exception:  # noqa: BLE001 - closing is best effort
            pass


def _usb_error(what: str, exc: usb.core.USBError) -> MidiError:
    if gone(exc):
        return Gone(f"{what}: device disconnected ({exc})")
    return MidiError(f"{what}: {exc}")


# pip's name for the optional dependencies of MIDI ports (pyproject.toml [project.optional-dependencies])
PORTS_EXTRA = "pip install 'bootkit[midi]'"


def port_backend():
    """mido, once its port backend is importable; MidiError (one line: what to install) if not.

    mido itself is pure Python and always installed (``.mid`` files need only it); its default port
    backend, python-rtmidi, is a compiled extension without wheels on every platform (musl, 32-bit
    ARM, the newest Pythons), so it is the ``[midi]`` extra.  A user who picked another mido backend
    with MIDO_BACKEND gets that backend's own import error instead.
    """
    import os

    import mido

    backend = os.environ.get("MIDO_BACKEND", "mido.backends.rtmidi")
    if backend.split("/")[0] == "mido.backends.rtmidi":
        try:
            import rtmidi  # noqa: F401
        except ImportError:
            raise MidiError(f"MIDI ports need python-rtmidi, which is not installed ({PORTS_EXTRA})") from None
    return mido


class PortLink:
    """A MIDI port by name through mido + python-rtmidi (ALSA sequencer, CoreMIDI, WinMM)."""

    def __init__(self, name: str | None, *, output_only: bool = False):
        mido = port_backend()
        self._mido = mido
        try:
            self.out = mido.open_output(name)
            self.inp = None if output_only else mido.open_input(_input_name(mido, name))
        except (OSError, IOError, SystemError, ValueError) as exc:
            raise MidiError(f"cannot open MIDI port {name or '(default)'}: {exc}") from None

    def send(self, message: bytes) -> None:
        self.out.send(self._mido.Message.from_bytes(list(message)))

    def send_many(self, messages: list[bytes]) -> None:
        for m in messages:
            self.send(m)

    def receive(self, timeout: float) -> bytes:
        if self.inp is None:
            raise MidiError("the MIDI port was opened for output only: one-way only")
        deadline = time.monotonic() + timeout
        out = bytearray()
        while True:
            for msg in self.inp.iter_pending():
                out += bytes(msg.bytes())
            if out or time.monotonic() >= deadline:
                return bytes(out)
            time.sleep(0.001)

    def close(self) -> None:
        for p in (self.out, self.inp):
            if p is not None:
                p.close()


def _input_name(mido, name: str | None) -> str | None:
    """The input of the same device: ALSA names both sides alike; pick the input with the longest common prefix."""
    if name is None:
        return None
    inputs = mido.get_input_names()
    if name in inputs:
        return name
    best = max(inputs, key=lambda n: len(_common(n, name)), default=None)
    if best is None or len(_common(best, name)) < 3:
        raise MidiError(f"no MIDI input matches output {name!r} (inputs: {', '.join(inputs) or 'none'})")
    return best


def _common(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


def open_link(backend=None, *, port=None, vid=None, pid=None, serial=None):
    if port is not None:
        return PortLink(port)
    items = find_devices(backend, vid=vid, pid=pid, serial=serial)
    if not items:
        sel = f" matching {vid:04x}:{pid:04x}" if vid is not None and pid is not None else ""
        raise MidiError(f"no USB-MIDI bootloader found{sel}")
    return UsbLink(items[0])


# --------------------------------------------------------------------------
# the two-way client

class SysexClient:
    """Requests with a 7-bit tag; replies are matched by tag, stale ones skipped."""

    WINDOW = 16  # requests in flight at once (the device holds 64 replies)

    def __init__(self, link, *, timeout: float = 2.0, retries: int = 3, window: int | None = None):
        self.link = link
        self.timeout = timeout
        self.retries = retries
        self.window = window or self.WINDOW
        self.parser = StreamParser()
        self.tag = 0
        self.retried = 0

    def batch(self, requests: list[tuple[int, bytes, str]]) -> list[bytes]:
        """Many independent requests, ``window`` at a time in one transfer; each reply is matched
        by its tag.  A request whose reply is lost or a transient NAK goes again on its own
        (:meth:`request`, with its retries); any other NAK raises."""
        results: list[bytes | None] = [None] * len(requests)
        for off in range(0, len(requests), self.window):
            group = requests[off:off + self.window]
            pending: dict[int, int] = {}
            frames = []
            tag = self.tag
            for i, (cmd, payload, _what) in enumerate(group):
                tag = (tag + 1) & 0x7F
                pending[tag] = off + i
                frames.append(frame(cmd, tag, payload))
            self.tag = tag
            self.link.send_many(frames)
            again = []
            deadline = time.monotonic() + self.timeout
            while pending and time.monotonic() < deadline:
                data = self.link.receive(min(0.5, max(0.001, deadline - time.monotonic())))
                for reply in self._replies(data):
                    rcmd, rtag, payload = reply
                    if rtag not in pending:
                        continue
                    index = pending[rtag]
                    cmd, _, what = requests[index]
                    if not payload or payload[0] != cmd:
                        continue
                    del pending[rtag]
                    if rcmd == P.Cmd.ACK:
                        results[index] = payload[1:]
                        continue
                    reason, text = self._nak_fields(payload)
                    if reason not in TRANSIENT:
                        raise Nak(what, reason, text)
                    again.append(index)
            for index in sorted(again + list(pending.values())):
                cmd, payload, what = requests[index]
                self.retried += 1
                results[index] = self.request(cmd, payload, what=what)
        # every slot is filled by now: an ACK above, or request(), which raises when it gets none
        return results  # type: ignore[return-value]

    def _replies(self, data: bytes) -> list[tuple[int, int, bytes]]:
        """(cmd, tag, payload) of our intact frames in ``data``; others and damaged ones are skipped."""
        pieces = self.parser.split_sysex(data)
        if pieces is None:
            bodies = [m.data[1:-1] for m in self.parser.feed(data) if m.kind == "sysex"]
        else:
            bodies = [p[1:] for p in pieces]
        out = []
        for body in bodies:
            if body[:3] == SIGNATURE:
                try:
                    out.append(parse_frame(body))
                except FrameError:
                    pass  # a damaged reply: its request goes again
        return out

    @staticmethod
    def _nak_fields(payload: bytes) -> tuple[int, str]:
        r = Reader(payload[1:])
        try:
            return r.take(1)[0], r.text()
        except ValueError:
            return Refusal.MALFORMED, ""

    def request(self, cmd: int, payload: bytes = b"", *, what: str | None = None,
                timeout: float | None = None) -> bytes:
        what = what or P.Cmd(cmd).name
        last: MidiError | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                self.retried += 1
            self.tag = (self.tag + 1) & 0x7F
            self.link.send(frame(cmd, self.tag, payload))
            try:
                return self._reply(cmd, self.tag, what, timeout or self.timeout)
            except Nak as exc:
                if exc.reason not in TRANSIENT:
                    raise
                last = exc
            except TimeoutError as exc:
                last = MidiError(f"{what}: {exc}")
        raise MidiError(f"{last} (after {self.retries} retries)")

    def _reply(self, cmd: int, tag: int, what: str, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no reply within {timeout:g} s")
            for rcmd, rtag, payload in self._replies(self.link.receive(min(left, 0.5))):
                if rtag != tag or not payload or payload[0] != cmd:
                    continue  # a reply to an earlier request
                if rcmd == P.Cmd.ACK:
                    return payload[1:]
                if rcmd == P.Cmd.NAK:
                    raise Nak(what, *self._nak_fields(payload))

    # --- commands
    def identify(self) -> NativeInfo:
        try:
            return P.unpack_info(self.request(*P.identify()))
        except ValueError as exc:
            raise MidiError(f"IDENTIFY: unreadable answer ({exc})") from None

    def erase(self, start: int, length: int, timeout: float) -> int:
        return from_u7(self.request(*P.erase(start, length), timeout=timeout))

    def write(self, address: int, data: bytes) -> None:
        self.request(*P.write(address, data), what=f"WRITE 0x{address:X}")

    def write_pages(self, pages: list[tuple[int, bytes]]) -> None:
        packed = pack7_many([d for _, d in pages])  # one pack7 for the window
        self.batch([(P.Cmd.WRITE, u7(a, 5) + p, f"WRITE 0x{a:X}") for (a, _), p in zip(pages, packed)])

    def read_pages(self, spans: list[tuple[int, int]]) -> list[bytes]:
        replies = self.batch([(*P.read(a, n), f"READ 0x{a:X}") for a, n in spans])
        try:
            datas = unpack7_many([r[5:] for r in replies])  # one unpack7 for the window
        except ValueError:
            datas = None
        if datas is None or any(from_u7(r[:5]) != a or len(d) != n
                                for r, d, (a, n) in zip(replies, datas, spans)):
            return [self._read_reply(r, a, n) for r, (a, n) in zip(replies, spans)]  # names the bad one
        return datas

    def read(self, address: int, length: int) -> bytes:
        reply = self.request(*P.read(address, length), what=f"READ 0x{address:X}")
        return self._read_reply(reply, address, length)

    @staticmethod
    def _read_reply(reply: bytes, address: int, length: int) -> bytes:
        try:
            data = unpack7(reply[5:])
        except ValueError as exc:
            raise MidiError(f"READ 0x{address:X}: {exc}") from None
        if from_u7(reply[:5]) != address or len(data) != length:
            raise MidiError(f"READ 0x{address:X}: the answer is for another span")
        return data

    def crc(self, start: int, length: int) -> int:
        return from_u7(self.request(*P.crc(start, length))[:5])

    def boot(self) -> None:
        """BOOT; a NAK (NO_APPLICATION: nothing valid to start) means the device stays in its bootloader."""
        try:
            self.request(*P.boot())
        except Nak as exc:
            why = exc.text.removeprefix("BOOT: ") or "it refused to start the application"
            raise MidiError(f"{STAYED}: {why} (BOOT answered NAK {exc.reason_name})"
                            ) from None


def _chip_name(chip) -> str | None:
    if chip is None:
        return None
    return chip if isinstance(chip, str) else chip.name


def _check_chip(info: NativeInfo, chip) -> None:
    want = _chip_name(chip)
    if want is not None and want.lower() != info.chip.lower():
        if not (isinstance(chip, Chip) and info.chip.lower() in (a.lower() for a in chip.aliases)):
            raise ImageRejected(f"the device is {info.chip}, the image is for {want}")


def _target_chip(info: NativeInfo, chip) -> Chip | None:
    """The chip to preflight against: the one given, else the one the device names (None when
    the chip database does not know it: then only the device's own regions are checked)."""
    if isinstance(chip, Chip):
        return chip
    from ...memory import get_chip

    try:
        return get_chip(chip if isinstance(chip, str) else info.chip)
    except KeyError:
        return None


# --------------------------------------------------------------------------
# what the device does after it was told to leave (issue 16 item 3: report only what was seen)

LEAVE_WAIT = 5.0  # s a real device gets to come back (as its application, or as the bootloader again)
LEAVE_WAIT_IN_PROCESS = 0.5  # the in-process bus re-enumerates within its signal's delay (0.05 s)


def _default_wait(backend) -> float:
    if in_process(backend):
        return LEAVE_WAIT_IN_PROCESS
    return LEAVE_WAIT


def _stayed(info: NativeInfo | None) -> str:
    if info is None:
        return f"{STAYED}: it came back as its bootloader"
    if info.app_valid:
        return (f"{STAYED}: it came back as its bootloader with its application "
                "marked valid (a boot button or the application sent it back)")
    if info.status and not info.app_valid:
        return f"{STAYED}: {info.status}"
    if info.flags & P.FLAG_SESSION:
        return (f"{STAYED}: the file is incomplete ({info.pages_missing} page(s) "
                f"missing, {info.damaged} damaged frame(s))")
    return f"{STAYED}: its application is not valid"


def _identify_quietly(link) -> NativeInfo | None:
    try:
        return SysexClient(link, timeout=0.5, retries=1).identify()
    except (MidiError, ValueError):
        return None


def watch_leave(backend, target: MidiTarget, wait: float, *, before: dict | None = None, sleep=time.sleep,
                clock=time.monotonic) -> str:
    """After the device was told to leave (BOOT acknowledged, or a file's END played): watch the
    bus for ``wait`` s (usbhost.LeaveWatch; ``before``: usbhost.bus_snapshot taken before it was
    told).  Returns the step to report; raises MidiError when the device stayed.

    - it left and another device appeared on its bus: "application started (came back as VVVV:PPPP)";
    - it left and its bootloader came back: asks it why (IDENTIFY) and raises
      "the device stayed in its bootloader: ...";
    - it left and nothing came back: "left the bootloader (not seen again within N s)";
    - it is still there: asks it (IDENTIFY) and raises "the device stayed in its bootloader: ...".
    """
    dev = target.device
    if before is None:
        before = bus_snapshot(backend)
    look = UsbLook(backend, dev, before, same_bus=True)
    outcome = LeaveWatch(look, wait=wait, sleep=sleep, clock=clock).run()
    if not outcome.stayed:
        return outcome.step
    if outcome.seen == CAME_BACK:
        again = find_devices(backend, vid=dev.idVendor, pid=dev.idProduct)
        info = None
        if again:
            link = UsbLink(again[0])
            try:
                info = _identify_quietly(link)
            finally:
                link.close()
        raise MidiError(_stayed(info))
    link = UsbLink(target)
    try:
        info = _identify_quietly(link)
    finally:
        link.close()
    if info is None or info.app_valid:
        raise MidiError(f"{STAYED}: still there {wait:g} s after it was told to leave")
    raise MidiError(_stayed(info))


def watch_port_leave(name: str, wait: float, *, sleep=time.sleep, clock=time.monotonic) -> str:
    """:func:`watch_leave` for a MIDI port: a port cannot tell what replaced it, so the outcomes are
    "left the bootloader (not seen again within N s)" or MidiError (it stayed, or came back)."""
    mido = port_backend()

    def look() -> Look:
        # the port gone, then a port of the same name back: the bootloader again
        present = name in mido.get_output_names()
        return Look(present, Arrival(0, 0, True, where=name) if present else None)

    outcome = LeaveWatch(look, wait=wait, sleep=sleep, clock=clock).run()
    if not outcome.stayed:
        return outcome.step
    try:
        link = PortLink(name)
    except MidiError:
        return f"left the bootloader (not seen again within {wait:g} s)"
    try:
        info = _identify_quietly(link)
    finally:
        link.close()
    if info is None and outcome.seen == CAME_BACK:
        raise MidiError(_stayed(None))
    if info is None or info.app_valid:
        raise MidiError(f"{STAYED}: its port is still there {wait:g} s after it was told to leave")
    raise MidiError(_stayed(info))


def flash(image: Image, backend=None, *, port=None, vid=None, pid=None, serial=None, dialect=None, chip=None,
          progress=None, verify: bool = True, leave: bool = True, memory: str = "flash",
          realtime: bool = True, retries: int = 3, force: bool = False,
          leave_wait: float | None = None, encoding: str | None = None, margin: float | None = None,
          slack_ms: float | None = None) -> FlashResult:
    """Flash ``image``: two-way SysEx (``dialect`` None or "sysex"), or play the one-way file ("file").

    ``force`` lifts what common.preflight lets it lift (a UF2 of another family); ``leave_wait``:
    how long to watch for the device after it leaves (default 5 s, 0.5 s on the in-process bus).
    ``encoding``, ``margin`` and ``slack_ms`` pace the one-way file (midifile.file_events; None:
    its defaults); the two-way dialect has no pacing, so giving them there is refused."""
    if memory != "flash":
        raise ImageRejected("the MIDI bootloader carries flash only")
    if not image:
        raise ImageRejected("the image is empty")
    wait = _default_wait(backend) if leave_wait is None else leave_wait
    pacing = {k: v for k, v in (("encoding", encoding), ("margin", margin), ("slack_ms", slack_ms))
              if v is not None}
    if dialect == "file":
        return _flash_file(image, backend, port=port, vid=vid, pid=pid, serial=serial, chip=chip,
                           realtime=realtime, force=force, wait=wait, pacing=pacing)
    if dialect not in (None, "sysex"):
        raise ImageRejected(f"unknown MIDI dialect {dialect!r} (choose from sysex, file)")
    if pacing:
        raise ImageRejected(f"{', '.join(pacing)} pace the one-way file: the sysex dialect takes no pacing")
    t0 = time.perf_counter()
    link = open_link(backend, port=port, vid=vid, pid=pid, serial=serial)
    steps = []
    try:
        c = SysexClient(link, retries=retries)
        info = c.identify()
        _check_chip(info, chip)
        check_ranges(image, [(info.app_start, info.app_end)], info.protected, info.chip)
        preflight(image, _target_chip(info, chip), force=force, memory=memory)
        ps = info.page_size
        pages = [(a, d) for a, d in image.pages(ps, align=info.flash_start) if d.count(0xFF) != len(d)]
        first = image.start - (image.start - info.flash_start) % ps
        last = image.end + (-(image.end - info.flash_start)) % ps
        last = min(last, info.app_end)
        steps.append(f"identified {info.chip} ({ps}-byte pages)")
        sectors_guess = max(1, (last - first) // max(ps, 1))
        erase_timeout = 2.0 + sectors_guess * info.erase_us / 1e6 * 2
        n = c.erase(first, last - first, erase_timeout)
        steps.append(f"erased {n} sector(s)")
        total = 0
        step = c.window
        with progress_bar("program", len(pages) * ps, progress) as bar:
            for i in range(0, len(pages), step):
                chunk = pages[i:i + step]
                c.write_pages(chunk)
                n = sum(len(d) for _, d in chunk)
                total += n
                bar(n)
        steps.append(f"wrote {len(pages)} pages")
        verified = False
        if verify:
            with progress_bar("verify", len(pages) * ps, progress) as bar:
                for i in range(0, len(pages), step):
                    chunk = pages[i:i + step]
                    for (address, data), got in zip(chunk, c.read_pages([(a, len(d)) for a, d in chunk])):
                        differs = first_difference(address, data, got)
                        if differs:
                            raise MidiError(differs)
                        bar(len(data))
            if c.crc(first, last - first) != crc32(image.tobytes(first, last)):
                raise MidiError("verify failed: the CRC of the span differs from the image placed on erased flash")
            verified = True
            steps.append("read back and CRC verified")
        if c.retried:
            steps.append(f"{c.retried} request(s) retried")
        seconds = time.perf_counter() - t0  # the flash, not the watch after it
        if leave:
            before = bus_snapshot(backend) if isinstance(link, UsbLink) else None
            try:
                c.boot()  # a NAK: MidiError "the device stayed in its bootloader: ..."
            except Gone:
                pass  # it reset before its ACK reached us: what comes back (or not) says what happened
            link.close()
            if isinstance(link, UsbLink):
                steps.append(watch_leave(backend, link.target, wait, before=before))
            else:
                steps.append(watch_port_leave(port, wait))
        return FlashResult("sysex", image.size, seconds, verified, steps)
    finally:
        link.close()


def read(backend=None, *, port=None, vid=None, pid=None, serial=None, dialect=None, chip=None, memory="flash",
         start: int | None = None, length: int | None = None, progress=None, retries: int = 3) -> Image:
    """Read the application region (or ``start``/``length`` inside it) page by page."""
    if memory != "flash":
        raise ImageRejected("the MIDI bootloader carries flash only")
    link = open_link(backend, port=port, vid=vid, pid=pid, serial=serial)
    try:
        c = SysexClient(link, retries=retries)
        info = c.identify()
        start, length = info.span(start, length)
        spans = []
        address = start
        while address < start + length:
            n = min(info.page_size - (address - info.flash_start) % info.page_size, start + length - address)
            spans.append((address, n))
            address += n
        out = bytearray()
        with progress_bar("read", length, progress) as bar:
            for i in range(0, len(spans), c.window):
                for data in c.read_pages(spans[i:i + c.window]):
                    out += data
                    bar(len(data))
        return Image([(start, bytes(out))])
    finally:
        link.close()


def identify(backend=None, *, port=None, vid=None, pid=None, serial=None) -> NativeInfo:
    """What the device says about itself (chip, sizes, app valid, pages missing from a file)."""
    link = open_link(backend, port=port, vid=vid, pid=pid, serial=serial)
    try:
        return SysexClient(link).identify()
    finally:
        link.close()


# --------------------------------------------------------------------------
# the one-way file

def usb_sink(backend=None, *, vid=None, pid=None, serial=None) -> Callable[[bytes], None]:
    """A callable that sends one MIDI message to a USB-MIDI device (for :func:`play`)."""
    items = find_devices(backend, vid=vid, pid=pid, serial=serial)
    if not items:
        raise MidiError("no USB-MIDI device found to play into")
    link = UsbLink(items[0])

    def send(message: bytes) -> None:
        try:
            link.send(message)
        except MidiError as exc:
            if "disconnected" not in str(exc):
                raise
    return send


@dataclass
class PlayResult:
    messages: int
    seconds: float  # the file's own duration (what a player takes)
    wall: float  # how long this play took


def play(midifile, port=None, *, realtime: bool = True, sleep=time.sleep, clock=time.monotonic) -> PlayResult:
    """Send a .mid file's MIDI messages to ``port`` (a name, None for the default output, or a
    callable taking message bytes), honouring the file's timing unless ``realtime`` is false."""
    import mido

    mid = midifile if isinstance(midifile, mido.MidiFile) else _load_midi(midifile)
    link = None
    if callable(port):
        sink = port
    else:
        link = PortLink(port, output_only=True)
        sink = link.send
    t0 = clock()
    position = 0.0
    count = 0
    try:
        for msg in mid:  # merged tracks; msg.time is seconds since the previous message
            position += msg.time
            if msg.is_meta:
                continue
            if realtime:
                delay = t0 + position - clock()
                if delay > 0:
                    sleep(delay)
            sink(bytes(msg.bytes()))
            count += 1
    finally:
        if link is not None:
            link.close()
    return PlayResult(count, position, clock() - t0)


def _load_midi(path):
    import mido

    try:
        return mido.MidiFile(str(path))
    except (OSError, EOFError, ValueError, KeyError) as exc:
        raise ImageRejected(f"{path}: not a MIDI file ({exc})") from None


def _flash_file(image, backend, *, port, vid, pid, serial, chip, realtime, force=False, wait=LEAVE_WAIT,
                pacing: dict | None = None) -> FlashResult:
    """Play the one-way file's messages into the device, then watch what it does: nothing is
    verified by read-back, but the device's own END check (every page, CRC-32 of the span) is
    observed when the link lets us see it (it leaves, or it stays and IDENTIFY says why)."""
    if chip is None:
        raise ImageRejected("the one-way file is built for one chip: give --chip")
    if isinstance(chip, str):
        from ...memory import get_chip

        chip = get_chip(chip)
    try:  # validates the image against the chip first
        events = file_events(image, chip, force=force, **(pacing or {}))
    except ValueError as exc:  # an unknown encoding (ImageRejected is a ValueError too)
        raise ImageRejected(str(exc)) from None
    t0 = time.perf_counter()
    target = None
    sink: Callable[[bytes], None]
    close: Callable[[], None]
    if port is not None:
        link = PortLink(port, output_only=True)
        sink, close = link.send, link.close
    else:
        items = find_devices(backend, vid=vid, pid=pid, serial=serial)
        if not items:
            raise MidiError("no USB-MIDI device found to play into")
        target = items[0]
        before = bus_snapshot(backend)
        sink, close = usb_sink(backend, vid=vid, pid=pid, serial=serial), (lambda: None)
    try:
        start = time.monotonic()
        for ev in events:
            if realtime:
                delay = start + ev.tick * TICK_SECONDS - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            sink(ev.data)
    finally:
        close()
    pages = sum(1 for ev in events if ev.what.startswith("PAGE") and ev.data[0] == 0xF0)
    steps = [f"played {len(events)} messages ({pages} pages) " + ("in real time" if realtime else "at full speed")]
    # the device manifests only when every page arrived and the span's CRC-32 matched END:
    # leaving is that check passing; staying, IDENTIFY says what is missing
    seconds = time.perf_counter() - t0  # the playing, not the watch after it
    if target is not None:
        steps.append(watch_leave(backend, target, wait, before=before))
    else:
        steps.append(watch_port_leave(port, wait))
    return FlashResult("file", image.size, seconds, False, steps)


__all__ = ["MidiError", "Gone", "Nak", "MidiTarget", "find_devices", "list_devices", "UsbLink", "PortLink", "open_link",
           "SysexClient", "flash", "read", "identify", "usb_sink", "play", "PlayResult", "watch_leave",
           "watch_port_leave", "LEAVE_WAIT", "BOOTKIT_VID",
           "MIDI_PID"]
