"""The midiport transport: the ALSA sequencer port, or one clear line saying why not."""

import pytest

from bootkit.emulator import Emulator
from bootkit.classes.midi import alsaport as midiport


def test_without_a_sequencer_it_refuses_in_one_line(tmp_path):
    missing = tmp_path / "seq"
    with pytest.raises(midiport.TransportUnavailable) as exc:
        midiport.serve(Emulator("atmega32u4", "midi"), seq_device=str(missing))
    text = str(exc.value)
    assert "\n" not in text and "sequencer" in text and str(missing) in text
    assert isinstance(exc.value, RuntimeError)


def test_it_finds_the_midi_function_by_its_byte_interface():
    em = Emulator("atmega32u4", "midi")
    fn = midiport.midi_function(em.target.device)
    assert fn is not None
    from bootkit.classes.midi import protocol as P
    from bootkit.classes.midi.sysex import frame, parse_frame

    reply = fn.byte_stream().feed(frame(P.Cmd.IDENTIFY, 1))
    cmd, tag, payload = parse_frame(reply[1:-1])
    assert cmd == P.Cmd.ACK and P.unpack_info(payload[1:]).chip == "atmega32u4"
    assert midiport.midi_function(Emulator("atmega32u4", "hid").target.device) is None
