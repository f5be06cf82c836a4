"""USB-MIDI class descriptors: the USB Audio 1.0 / USB-MIDI 1.0 codes and the class-specific
descriptors a MIDIStreaming function declares (USB-MIDI 1.0 section 6)."""

from __future__ import annotations

import struct

# USB Audio 1.0 / USB-MIDI 1.0 class codes
AUDIO_CLASS = 0x01
AUDIOCONTROL = 0x01  # bInterfaceSubClass (Audio 1.0 appendix A.2)
MIDISTREAMING = 0x03
CS_INTERFACE = 0x24
CS_ENDPOINT = 0x25
# AudioControl class-specific interface descriptor subtype (Audio 1.0 A.5)
AC_HEADER = 0x01
# MIDIStreaming descriptor subtypes (USB-MIDI 1.0 appendix A.1, A.2)
MS_HEADER = 0x01
MIDI_IN_JACK = 0x02
MIDI_OUT_JACK = 0x03
MS_GENERAL = 0x01  # class-specific endpoint descriptor subtype
JACK_EMBEDDED = 0x01  # bJackType (A.3)
JACK_EXTERNAL = 0x02
BCD_ADC = 0x0100
BCD_MSC = 0x0100  # MIDIStreaming revision 1.0


def ac_header(ms_interface: int) -> bytes:
    """AudioControl class-specific header (Audio 1.0 section 4.3.2) naming one MIDIStreaming interface.

    ``baInterfaceNr`` is a device interface number; :class:`MidiFunction`
    gives its function-local number, which the Device renumbers for a
    composite device only through the IAD (see MidiFunction).
    """
    return struct.pack("<BBBHHBB", 9, CS_INTERFACE, AC_HEADER, BCD_ADC, 9, 1, ms_interface)


def ms_header(total_length: int) -> bytes:
    """MS interface header (USB-MIDI 1.0 section 6.1.2.1); wTotalLength covers the jacks that follow."""
    return struct.pack("<BBBHH", 7, CS_INTERFACE, MS_HEADER, BCD_MSC, total_length)


def in_jack(jack_type: int, jack_id: int, istring: int = 0) -> bytes:
    """MIDI IN jack descriptor (section 6.1.2.2)."""
    return struct.pack("<BBBBBB", 6, CS_INTERFACE, MIDI_IN_JACK, jack_type, jack_id, istring)


def out_jack(jack_type: int, jack_id: int, source_id: int, source_pin: int = 1, istring: int = 0) -> bytes:
    """MIDI OUT jack descriptor (section 6.1.2.3) with one input pin."""
    return struct.pack("<BBBBBBBBB", 9, CS_INTERFACE, MIDI_OUT_JACK, jack_type, jack_id, 1, source_id,
                       source_pin, istring)


def ms_endpoint(jack_ids: tuple[int, ...]) -> bytes:
    """Class-specific MS bulk data endpoint descriptor (section 6.2.2): the embedded jacks it carries."""
    return struct.pack("<BBBB", 4 + len(jack_ids), CS_ENDPOINT, MS_GENERAL, len(jack_ids)) + bytes(jack_ids)
