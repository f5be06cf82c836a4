"""The STK500 v2 message framing (AVR068 §2.3): encode_frame and FrameParser."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bootkit.isp.stk500v2 import (
    ANSWER_CKSUM_ERROR, CKSUM_ERROR_BODY, CMD_SIGN_ON, MESSAGE_START, STATUS_CKSUM_ERROR, TOKEN, FrameParser,
    checksum, encode_frame,
)


def test_sign_on_frame_is_the_one_avrdude_sends():
    # avrdude's stk500v2_getsync(): seq 1 on a fresh link, body CMD_SIGN_ON; the checksum
    # 1B^01^00^01^0E^01 = 0x14
    assert encode_frame(1, bytes((CMD_SIGN_ON,))) == bytes.fromhex("1b 01 00 01 0e 01 14")


def test_size_is_big_endian_and_checksum_is_xor_of_all():
    body = bytes(range(256)) + b"\x42"
    frame = encode_frame(0x7F, body)
    assert frame[:5] == bytes((MESSAGE_START, 0x7F, 0x01, 0x01, TOKEN))
    assert frame[5:-1] == body
    assert checksum(frame) == 0


def test_round_trip_and_several_in_one_feed():
    p = FrameParser()
    data = encode_frame(3, b"\x10abc") + encode_frame(4, b"") + encode_frame(5, b"\x1b\x0e")
    assert p.feed(data) == [(3, b"\x10abc"), (4, b""), (5, b"\x1b\x0e")]
    assert p.idle and p.errors == 0


def test_split_feeds_byte_by_byte():
    p = FrameParser()
    frame = encode_frame(9, b"\x14\x00\x80\x20")
    out = []
    for i, b in enumerate(frame):
        got = p.feed(bytes((b,)))
        assert got == [] or i == len(frame) - 1
        out += got
    assert out == [(9, b"\x14\x00\x80\x20")]


def test_bad_checksum_is_an_answer_cksum_error_event():
    p = FrameParser()
    frame = bytearray(encode_frame(7, b"\x03\x90"))
    frame[-1] ^= 0x01
    assert p.feed(bytes(frame)) == [(7, bytes((ANSWER_CKSUM_ERROR, STATUS_CKSUM_ERROR)))]
    assert CKSUM_ERROR_BODY == b"\xb0\xc1" and p.errors == 1
    # the parser is back in step for the next message
    assert p.feed(encode_frame(8, b"\x03\x90")) == [(8, b"\x03\x90")]


def test_noise_before_a_start_and_a_wrong_token_are_skipped():
    p = FrameParser()
    bad_token = bytes((MESSAGE_START, 1, 0, 1, 0x0F, 1, 0))
    assert p.feed(b"\x00\xff junk" + bad_token + encode_frame(2, b"\x01")) == [(2, b"\x01")]


def test_oversized_length_is_not_a_message():
    p = FrameParser(max_body=16)
    assert p.feed(bytes((MESSAGE_START, 1, 0, 17, TOKEN)) + b"x" * 17 + encode_frame(2, b"ok")) == [(2, b"ok")]


@pytest.mark.parametrize("seq", [-1, 256])
def test_sequence_number_is_a_byte(seq):
    with pytest.raises(ValueError, match="sequence number"):
        encode_frame(seq, b"")


@given(st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=275)), max_size=6), st.data())
def test_any_frames_any_split_round_trip(frames, data):
    stream = b"".join(encode_frame(s, b) for s, b in frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    p, out, last = FrameParser(), [], 0
    for c in cuts + [len(stream)]:
        out += p.feed(stream[last:c])
        last = c
    assert out == frames and p.idle


@given(st.binary(max_size=600))
def test_random_bytes_never_crash(noise):
    p = FrameParser()
    for seq, body in p.feed(noise):
        assert 0 <= seq <= 255 and len(body) <= 275
