"""USB-MIDI packet codec, the MIDI stream parser, 7-bit packing, frames and descriptors."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bootkit.classes.midi import bootloader_device
from bootkit.classes.midi import protocol as P
from bootkit.classes.midi.notes import NotesDecoder, body_to_notes
from bootkit.classes.midi.packets import decode_packets, message_packets
from bootkit.classes.midi.stream import StreamParser
from bootkit.classes.midi.sysex import FrameError, frame, frame_body, pack7, packed_length, parse_frame, u7, unpack7
from bootkit.classes.native import Refusal
from bootkit.memory import SimulatedFlash, get_chip
from bootkit.usb.descriptors import parse_configuration


def test_sysex_packets_use_cin_4_then_5_6_7():
    # USB-MIDI 1.0 section 4, Table 4-1
    assert message_packets(bytes([0xF0, 0x7D, 0xF7])) == bytes([0x07, 0xF0, 0x7D, 0xF7])
    assert message_packets(bytes([0xF0, 0xF7])) == bytes([0x06, 0xF0, 0xF7, 0])
    assert message_packets(bytes([0xF0, 1, 2, 0xF7])) == bytes([0x04, 0xF0, 1, 2, 0x05, 0xF7, 0, 0])
    assert message_packets(bytes([0xF0, 1, 2, 3, 0xF7])) == bytes([0x04, 0xF0, 1, 2, 0x06, 3, 0xF7, 0])
    assert message_packets(bytes([0xF0, 1, 2, 3, 4, 0xF7])) == bytes([0x04, 0xF0, 1, 2, 0x07, 3, 4, 0xF7])


def test_channel_realtime_and_common_packets():
    assert message_packets(bytes([0x9F, 60, 100])) == bytes([0x09, 0x9F, 60, 100])
    assert message_packets(bytes([0x83, 60, 0])) == bytes([0x08, 0x83, 60, 0])
    assert message_packets(bytes([0xC1, 5])) == bytes([0x0C, 0xC1, 5, 0])
    assert message_packets(bytes([0xD1, 5])) == bytes([0x0D, 0xD1, 5, 0])
    assert message_packets(bytes([0xE0, 0, 64])) == bytes([0x0E, 0xE0, 0, 64])
    assert message_packets(bytes([0xF8])) == bytes([0x0F, 0xF8, 0, 0])
    assert message_packets(bytes([0xF2, 1, 2])) == bytes([0x03, 0xF2, 1, 2])
    assert message_packets(bytes([0xF3, 1])) == bytes([0x02, 0xF3, 1, 0])
    assert message_packets(bytes([0xF6])) == bytes([0x05, 0xF6, 0, 0])
    assert message_packets(bytes([0x90, 1, 2]), cable=3)[0] == 0x39


def test_decode_drops_other_cables_reserved_cins_and_partial_packets():
    data = bytes([0x09, 0x90, 1, 2, 0x19, 0x91, 3, 4, 0x00, 0xF8, 0, 0, 0x0F, 0xFE, 0, 0, 0x09])
    assert decode_packets(data) == bytes([0x90, 1, 2, 0xFE])
    assert decode_packets(data, cable=None) == bytes([0x90, 1, 2, 0x91, 3, 4, 0xFE])


midi_message = st.one_of(
    st.binary(max_size=200).map(lambda b: b"\xf0" + bytes(x & 0x7F for x in b) + b"\xf7"),
    st.tuples(st.integers(0x80, 0xEF), st.integers(0, 127), st.integers(0, 127)).map(
        lambda t: bytes(t[:2]) if t[0] & 0xF0 in (0xC0, 0xD0) else bytes(t)),
    st.integers(0xF8, 0xFF).filter(lambda b: b not in (0xF9, 0xFD)).map(lambda b: bytes([b])),
)


@given(st.lists(midi_message, max_size=20))
def test_packets_round_trip_through_the_stream_parser(messages):
    packets = b"".join(message_packets(m) for m in messages)
    assert len(packets) % 4 == 0
    parsed = StreamParser().feed(decode_packets(packets))
    assert [m.data for m in parsed] == messages


def test_realtime_inside_sysex_does_not_break_it_and_a_status_byte_ends_it():
    p = StreamParser()
    out = p.feed(bytes([0xF0, 1, 0xF8, 2, 0xFE, 0xF7]))
    assert [m.data for m in out] == [b"\xf8", b"\xfe", bytes([0xF0, 1, 2, 0xF7])]
    out = p.feed(bytes([0xF0, 1, 2, 0x90, 60, 1, 61, 2]))  # unfinished SysEx, then running status
    assert [(m.kind, m.data) for m in out] == [("cut", bytes([0xF0, 1, 2])), ("channel", bytes([0x90, 60, 1])),
                                               ("channel", bytes([0x90, 61, 2]))]
    assert p.dropped == 1


@given(st.binary(max_size=300))
def test_pack7_round_trip(data):
    packed = pack7(data)
    assert all(b < 0x80 for b in packed)
    assert len(packed) == packed_length(len(data))
    assert unpack7(packed) == data


def test_pack7_takes_8_bytes_for_7():
    assert pack7(bytes([0x80, 1, 2, 3, 4, 5, 0xFF])) == bytes([0x41, 0, 1, 2, 3, 4, 5, 0x7F])


def test_frame_check_and_bad_checksum():
    body = frame_body(P.Cmd.READ, 5, u7(0x1234, 5) + u7(128, 5))
    assert parse_frame(body) == (P.Cmd.READ, 5, u7(0x1234, 5) + u7(128, 5))
    bad = bytearray(body)
    bad[8] ^= 1
    with pytest.raises(FrameError) as exc:
        parse_frame(bytes(bad))
    assert exc.value.refusal == Refusal.BAD_CHECKSUM and exc.value.tag == 5


def test_notes_encoding_never_uses_velocity_zero_and_round_trips():
    body = frame_body(P.Cmd.PAGE, 0, P.page(0, 0, bytes(range(128)))[1])
    notes = body_to_notes(body)
    assert all(n[0] == 0x9F and 0 < n[2] < 0x80 and n[1] < 0x80 for n in notes)
    d = NotesDecoder()
    outs = [d.feed(n) for n in notes]
    assert outs[-1] == body and not any(outs[:-1])


def _config(chip="atmega32u4"):
    c = get_chip(chip)
    dev = bootloader_device(SimulatedFlash(c), c)
    return dev, parse_configuration(dev.configuration_descriptor())


def test_descriptors_are_usb_midi_1_0():
    dev, cfg = _config()
    ac, ms = cfg["interfaces"]
    assert (ac["bInterfaceClass"], ac["bInterfaceSubClass"], ac["bNumEndpoints"]) == (1, 1, 0)
    header = ac["extra"][0]
    # bLength 9, CS_INTERFACE, HEADER, bcdADC 0x0100, wTotalLength 9, bInCollection 1, baInterfaceNr 1
    assert header == bytes([9, 0x24, 0x01, 0x00, 0x01, 9, 0, 1, ms["bInterfaceNumber"]])
    assert (ms["bInterfaceClass"], ms["bInterfaceSubClass"]) == (1, 3)
    ms_head, *jacks = ms["extra"]
    assert ms_head[:5] == bytes([7, 0x24, 0x01, 0x00, 0x01])
    total = int.from_bytes(ms_head[5:7], "little")
    assert total == 7 + sum(len(j) for j in jacks) + sum(len(e["raw"]) + sum(map(len, e["extra"]))
                                                         for e in ms["endpoints"])
    kinds = sorted((j[2], j[3]) for j in jacks)  # (subtype, jack type)
    assert kinds == [(2, 1), (2, 2), (3, 1), (3, 2)]  # embedded + external IN and OUT jacks
    ids = {j[4]: j for j in jacks}
    for ep in ms["endpoints"]:
        assert ep["bLength"] == 9 and ep["bmAttributes"] == 2  # 9-byte audio form, bulk
        (cs,) = ep["extra"]
        assert cs[1:3] == bytes([0x25, 0x01]) and cs[3] == 1  # CS_ENDPOINT MS_GENERAL, one jack
        jack = ids[cs[4]]
        assert jack[3] == 1  # associated with an embedded jack
        # OUT endpoint -> embedded IN jack, IN endpoint -> embedded OUT jack
        assert jack[2] == (3 if ep["bEndpointAddress"] & 0x80 else 2)
    assert dev.functions[0].iad == (1, 1, 0)


def test_the_function_is_a_byte_stream_for_a_transport_without_usb():
    """An ALSA port or a UART carries the engine through Function.byte_stream(): MIDI bytes in,
    in any split, whole replies out; a port closed mid-message drops the half it had."""
    chip = get_chip("atmega32u4")
    (fn,) = bootloader_device(SimulatedFlash(chip), chip).functions
    stream = fn.byte_stream()
    request = frame(P.Cmd.IDENTIFY, 7)
    assert stream.feed(request[:5]) == b""
    reply = stream.feed(request[5:])
    cmd, tag, payload = parse_frame(reply[1:-1])
    assert (cmd, tag, reply[-1]) == (P.Cmd.ACK, 7, 0xF7)
    assert P.unpack_info(payload[1:]).chip == "atmega32u4"
    # half a request, the port closed, then the other half: nothing is answered
    assert stream.feed(request[:5]) == b""
    stream.disconnect()
    assert stream.feed(request[5:]) == b""
    assert parse_frame(stream.feed(request)[1:-1])[0] == P.Cmd.ACK
