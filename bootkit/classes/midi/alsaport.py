"""The MIDI personality's byte stream on an ALSA sequencer port (python-rtmidi virtual ports).

:class:`AlsaMidiTransport` (registered as the ``midiport`` transport) opens a
virtual input and output port named after the device; whatever a player or a
DAW sends there (``aplaymidi -p``; ``amidi`` cannot reach sequencer ports but
``aconnect`` can wire them) goes into the device side as MIDI bytes, and its
replies come out of the output port, one MIDI message per event.  The device
is reached through its Function's :meth:`~bootkit.usb.device.Function.byte_stream`
hook, so any function that speaks MIDI bytes can be carried.

Needs /dev/snd/seq (the snd-seq module) and python-rtmidi; without them,
:meth:`AlsaMidiTransport.available` raises
:class:`~bootkit.transports.base.TransportUnavailable` with one line saying so.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Callable

from ...transports.base import DeviceTransport, TransportUnavailable, target_of
from ...usb.device import ByteStream, Device, Function
from .stream import StreamParser

SEQ_DEVICE = "/dev/snd/seq"


def check_available(seq_device: str = SEQ_DEVICE) -> None:
    """Raise TransportUnavailable (one line: what is missing, how to get it)."""
    if not os.path.exists(seq_device):
        raise TransportUnavailable(f"midiport: no ALSA sequencer here ({seq_device} is missing; "
                                   "load snd-seq, or use --transport virtual)")
    try:
        import rtmidi  # noqa: F401
    except ImportError:
        raise TransportUnavailable("midiport: python-rtmidi is not installed (pip install 'bootkit[midi]')") from None


def midi_function(device: Device | None) -> Function | None:
    """The first Function of ``device`` that offers a byte stream (None: no such function)."""
    for fn in device.functions if device is not None else ():
        if fn.byte_stream() is not None:
            return fn
    return None


def _stream(device: Device | None) -> ByteStream | None:
    fn = midi_function(device)
    return fn.byte_stream() if fn is not None else None


class AlsaMidiTransport(DeviceTransport):
    """Serve the device's MIDI byte stream on virtual ALSA sequencer ports until
    :meth:`stop`, or until the device leaves its bootloader.

    Settings: ``name`` (the port name; default the device's product string),
    ``seq_device``, ``log``, ``poll`` (seconds between timer polls).
    """

    name = "midiport"
    summary = "an ALSA sequencer port (aconnect, aplaymidi -p) carrying a MIDI device's byte stream"

    def __init__(self, *, name: str | None = None, seq_device: str = SEQ_DEVICE,
                 log: Callable[[str], None] | None = print, poll: float = 0.01):
        self.port_name = name
        self.seq_device = seq_device
        self.log = log or (lambda line: None)
        self.poll = poll
        self._stop = threading.Event()

    @classmethod
    def available(cls) -> None:
        check_available()

    def stop(self) -> None:
        self._stop.set()

    def serve(self, emulator: Any, *, ready: Callable[[str], None] | None = None) -> None:
        check_available(self.seq_device)
        import rtmidi

        target = target_of(emulator)
        if _stream(target.device) is None:
            raise TransportUnavailable("midiport: the device has no function with a MIDI byte stream "
                                       "(serve a MIDI device)")
        device = target.device
        assert device is not None
        port_name = self.port_name or (device.info.product or "bootkit MIDI")
        lock = threading.Lock()
        replies = StreamParser()  # the stream's answers, cut into whole messages for ALSA events
        try:
            midi_in = rtmidi.MidiIn(rtmidi.API_LINUX_ALSA, name="bootkit")
            midi_out = rtmidi.MidiOut(rtmidi.API_LINUX_ALSA, name="bootkit")
            midi_in.ignore_types(sysex=False, timing=False, active_sense=False)
            midi_in.open_virtual_port(port_name)
            midi_out.open_virtual_port(port_name)
        except (rtmidi.SystemError, rtmidi.RtMidiError) as exc:
            raise TransportUnavailable(f"midiport: cannot open ALSA sequencer ports: {exc}") from None

        def on_message(event, _data=None):
            message, _delta = event
            with lock:
                stream = _stream(target.device)
                if stream is None:
                    return
                for reply in replies.feed(stream.feed(bytes(message))):
                    midi_out.send_message(list(reply.data))

        midi_in.set_callback(on_message)
        self.log(f"serving on ALSA sequencer port {port_name!r} (aconnect -l lists it). Ctrl-C to stop.")
        if ready is not None:
            ready(f"ALSA sequencer port {port_name!r}")
        try:
            while not self._stop.wait(self.poll):
                with lock:
                    target.poll()
                    if target.device is None:
                        self.log("the device left its bootloader (no application device is emulated after it)")
                        return
                    if _stream(target.device) is None:
                        self.log(f"the device re-enumerated without a MIDI byte stream: {target.history[-1:]}")
                        return
        finally:
            midi_in.close_port()
            midi_out.close_port()


def serve(emulator: Any, *, name: str | None = None, log: Callable[[str], None] | None = print,
          stop: threading.Event | None = None, seq_device: str = SEQ_DEVICE, poll: float = 0.01) -> None:
    """Serve ``emulator`` on ALSA ports until ``stop`` is set or it leaves (AlsaMidiTransport)."""
    transport = AlsaMidiTransport(name=name, seq_device=seq_device, log=log, poll=poll)
    if stop is not None:
        transport._stop = stop  # stop() sets the caller's event
    transport.serve(emulator)


__all__ = ["AlsaMidiTransport", "check_available", "midi_function", "serve", "SEQ_DEVICE"]
