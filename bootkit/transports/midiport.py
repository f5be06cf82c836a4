"""The MIDI personality's byte stream on an ALSA sequencer port (python-rtmidi virtual ports).

``serve(emulator)`` opens a virtual input and output port named after the
device; whatever a player or a DAW sends there (``aplaymidi -p``, ``amidi``
cannot reach sequencer ports but ``aconnect`` can wire them) goes into the
device side as MIDI bytes, and its replies come out of the output port.
Like every transport it knows no personality: it looks for a Function
with the byte interface ``midi_receive(bytes)`` / ``midi_transmit() ->
list[bytes]``.

Needs /dev/snd/seq (the snd-seq module); without it, :func:`serve` raises
:class:`TransportUnavailable` with one line saying so.
"""

from __future__ import annotations

import os
import threading
import time

SEQ_DEVICE = "/dev/snd/seq"


class TransportUnavailable(RuntimeError):
    """The machine cannot carry an ALSA MIDI port; the message says what to do."""


def check_available(seq_device: str = SEQ_DEVICE) -> None:
    if not os.path.exists(seq_device):
        raise TransportUnavailable(f"midiport: no ALSA sequencer here ({seq_device} is missing; "
                                   "load snd-seq, or use --transport virtual)")
    try:
        import rtmidi  # noqa: F401
    except ImportError:
        raise TransportUnavailable("midiport: python-rtmidi is not installed (pip install python-rtmidi)") from None


def midi_function(device):
    """The first Function of ``device`` that takes MIDI bytes."""
    for fn in getattr(device, "functions", ()):
        if hasattr(fn, "midi_receive") and hasattr(fn, "midi_transmit"):
            return fn
    return None


def serve(emulator, *, name: str | None = None, log=print, stop: threading.Event | None = None,
          seq_device: str = SEQ_DEVICE, poll: float = 0.01) -> None:
    """Serve the emulator's MIDI device on virtual ALSA ports until ``stop`` is set or it leaves."""
    check_available(seq_device)
    import rtmidi

    target = emulator.target
    fn = midi_function(target.device)
    if fn is None:
        raise TransportUnavailable("midiport: the device has no MIDI function (serve the midi personality)")
    port_name = name or (target.device.info.product or "bootkit MIDI")
    lock = threading.Lock()
    try:
        midi_in = rtmidi.MidiIn(rtmidi.API_LINUX_ALSA, name="bootkit")
        midi_out = rtmidi.MidiOut(rtmidi.API_LINUX_ALSA, name="bootkit")
        midi_in.ignore_types(sysex=False, timing=False, active_sense=False)
        midi_in.open_virtual_port(port_name)
        midi_out.open_virtual_port(port_name)
    except (rtmidi.SystemError, rtmidi.RtMidiError) as exc:  # type: ignore[attr-defined]
        raise TransportUnavailable(f"midiport: cannot open ALSA sequencer ports: {exc}") from None

    def on_message(event, _data=None):
        message, _delta = event
        with lock:
            current = midi_function(target.device)
            if current is None:
                return
            current.midi_receive(bytes(message))
            for reply in current.midi_transmit():
                midi_out.send_message(list(reply))

    midi_in.set_callback(on_message)
    log(f"serving on ALSA sequencer port {port_name!r} (aconnect -l lists it). Ctrl-C to stop.")
    stop = stop or threading.Event()
    try:
        while not stop.is_set():
            with lock:
                target.poll()
                if target.device is None:
                    log("the device left its bootloader (no application device is emulated after it)")
                    return
                if midi_function(target.device) is None:
                    log(f"the device re-enumerated without a MIDI function: {target.history[-1:]}")
                    return
            time.sleep(poll)
    finally:
        midi_in.close_port()
        midi_out.close_port()


__all__ = ["TransportUnavailable", "check_available", "midi_function", "serve", "SEQ_DEVICE"]
