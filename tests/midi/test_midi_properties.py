"""Property tests: random MIDI bytes, packets and frames never crash the engine and never
write outside the application region (the bootloader is prefilled and compared)."""

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bootkit.classes.midi import bootloader_device, midifile
from bootkit.classes.midi import protocol as P
from bootkit.classes.midi.sysex import frame, parse_frame
from bootkit.classes.midi.device import MidiBootEngine
from bootkit.memory import SimulatedFlash, get_chip
from bootkit.samples import sample_image

CHIP = get_chip("atmega32u4")
BOOT = bytes(random.Random(5).getrandbits(8) for _ in range(CHIP.boot_size))


def _fresh():
    mem = SimulatedFlash(CHIP)
    mem.poke(CHIP.boot_start, BOOT)
    return mem


def _bootloader_intact(mem):
    return mem.read(CHIP.boot_start, CHIP.boot_size) == BOOT


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=30))
def test_random_byte_streams(chunks):
    mem = _fresh()
    engine = MidiBootEngine(mem, CHIP)
    for c in chunks:
        engine.receive(c)
    assert _bootloader_intact(mem)
    assert len(engine.outbox) <= engine.OUTBOX


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=20))
def test_random_usb_packets(transfers):
    mem = _fresh()
    dev = bootloader_device(mem, CHIP)
    dev.set_configuration(1)
    fn = dev.functions[0]
    for t in transfers:
        fn.ep_out(fn.ep_out_, t)
        fn.ep_in(fn.ep_in_, 64)
    assert _bootloader_intact(mem)


address = st.one_of(st.integers(0, CHIP.flash_end + 256), st.sampled_from(
    [CHIP.boot_start, CHIP.boot_start - 128, CHIP.boot_start - 1, 0, CHIP.flash_end - 128, 2 ** 35 - 1]))
command = st.one_of(
    st.builds(P.erase, address, st.integers(0, CHIP.flash_size + 512)),
    st.builds(P.write, address, st.binary(max_size=260)),
    st.builds(P.read, address, st.integers(0, 300)),
    st.builds(P.crc, address, st.integers(0, CHIP.flash_size)),
    st.builds(P.begin, st.sampled_from([CHIP.name, "rp2040"]), address, st.sampled_from([128, 256]),
              st.integers(0, 300), st.integers(0, 2 ** 32 - 1)),
    st.builds(P.page, st.integers(0, 300), address, st.binary(max_size=260)),
    st.builds(P.end, st.integers(0, 300), st.integers(0, 2 ** 32 - 1)),
    st.builds(lambda c, p: (c, p), st.integers(0, 127), st.binary(max_size=40).map(lambda b: bytes(x & 0x7F for x in b))),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(command, st.booleans(), st.integers(0, 200)), max_size=25))
def test_random_well_formed_frames(frames):
    mem = _fresh()
    engine = MidiBootEngine(mem, CHIP)
    for (cmd, payload), damage, where in frames:
        msg = bytearray(frame(cmd, 3, payload))
        if damage:
            i = 1 + where % (len(msg) - 2)
            msg[i] = (msg[i] + 1) & 0x7F
        engine.receive(bytes(msg))
    assert _bootloader_intact(mem)
    for r in engine.take_replies():  # every reply is a well-formed frame
        cmd, tag, payload = parse_frame(r[1:-1])
        assert cmd in (P.Cmd.ACK, P.Cmd.NAK)  # (a damaged frame may carry another tag)


IMAGE = sample_image(CHIP, 1500, 0, 0)
EVENTS = midifile.file_events(IMAGE, CHIP)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(range(len(EVENTS))), max_size=40), st.lists(st.binary(max_size=8), max_size=10))
def test_file_fragments_in_any_order_with_noise(order, noise):
    mem = _fresh()
    engine = MidiBootEngine(mem, CHIP)
    for i, idx in enumerate(order):
        engine.receive(EVENTS[idx].data)
        if i < len(noise):
            engine.receive(noise[i])
    assert _bootloader_intact(mem)
    first, count = midifile.span_pages(IMAGE, CHIP)
    if mem.app_valid:  # it only manifests with the whole image in place
        assert mem.read(first, count * CHIP.page_size) == IMAGE.tobytes(first, first + count * CHIP.page_size)
