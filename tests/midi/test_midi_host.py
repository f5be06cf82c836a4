"""The two-way client on the in-process bus: flash, read back, refusals, retries."""

import pytest

from bootkit.classes.common import ImageRejected
from bootkit.classes.midi import host
from bootkit.classes.midi import protocol as P
from bootkit.emulator import Emulator
from bootkit.formats.image import Image
from bootkit.samples import sample_image
from bootkit.transports.virtual import VirtualBus, get_backend


@pytest.fixture
def board():
    def make(chip="atmega32u4"):
        bus = VirtualBus()
        em = Emulator(chip, "midi")
        em.attach(bus)
        return em, get_backend(bus)
    return make


@pytest.mark.parametrize("chip", ["atmega32u4", "stm32f103c8", "rp2040"])
def test_flash_then_read_back(board, chip):
    em, backend = board(chip)
    image = sample_image(em.chip, 5 * 1024 + 3, 0x2000, 100)
    result = host.flash(image, backend, chip=em.chip, progress=False, leave=False)
    assert result.verified and result.dialect == "sysex"
    back = host.read(backend, start=image.start, length=image.end - image.start, progress=False)
    assert back.tobytes(image.start, image.end) == image.tobytes()
    # BOOT manifests and leaves
    host.flash(image, backend, chip=em.chip, progress=False)
    em.target.poll()
    assert em.memory.app_valid


def test_endpoints_come_from_the_descriptors(board):
    em, backend = board()
    (target,) = host.find_devices(backend)
    eps = {ep.address for ep in em.target.device.functions[0].endpoints()}
    assert {target.ep_out, target.ep_in} == eps


def test_another_chips_image_is_refused_before_anything_is_erased(board):
    em, backend = board()
    em.memory.poke(0, b"\x12\x34")
    before = em.memory.flash_bytes()
    with pytest.raises(ImageRejected, match="atmega32u4"):
        host.flash(Image([(0, b"\x00" * 64)]), backend, chip="stm32f103c8", progress=False)
    with pytest.raises(ImageRejected, match="bootloader"):
        host.flash(Image([(em.chip.boot_start, b"\x00" * 64)]), backend, chip=em.chip, progress=False)
    assert em.memory.flash_bytes() == before


class FlakyLink:
    """Corrupts every third frame on its way to the device, and drops the second reply."""

    def __init__(self, inner):
        self.inner = inner
        self.sent = 0
        self.received = 0

    def send_many(self, messages):
        for m in messages:
            self.send(m)

    def send(self, message):
        self.sent += 1
        if self.sent % 3 == 0:
            message = bytearray(message)
            message[7] ^= 0x01
            message = bytes(message)
        self.inner.send(message)

    def receive(self, timeout):
        data = self.inner.receive(timeout)
        if data:
            self.received += 1
            if self.received == 2:
                return b""
        return data

    def close(self):
        self.inner.close()


def test_retries_on_nak_and_lost_replies(board, monkeypatch):
    em, backend = board()
    real = host.open_link
    links = []

    def flaky(*a, **kw):
        links.append(FlakyLink(real(*a, **kw)))
        return links[0]

    monkeypatch.setattr(host, "open_link", flaky)
    monkeypatch.setattr(host.SysexClient, "__init__",
                        lambda self, link, timeout=0.2, retries=3, window=None: _init(self, link, timeout, retries))
    image = sample_image(em.chip, 2048, 0, 0)
    result = host.flash(image, backend, chip=em.chip, progress=False, leave=False)
    assert result.verified
    assert any("retried" in s for s in result.steps)
    assert em.memory.read(0, 2048) == image.tobytes()


def _init(self, link, timeout, retries):
    self.link, self.timeout, self.retries, self.window = link, timeout, retries, 16
    self.parser = P.StreamParser()
    self.tag = 0
    self.retried = 0


def test_permanent_nak_is_an_error_with_its_reason(board):
    em, backend = board()
    link = host.open_link(backend)
    c = host.SysexClient(link, timeout=0.5)
    with pytest.raises(host.Nak, match="PROTECTED"):
        c.write(em.chip.boot_start, b"\x00" * 128)
    with pytest.raises(host.Nak, match="NO_APPLICATION"):
        c.boot()
    with pytest.raises(host.Nak, match="OUT_OF_RANGE|PROTECTED"):
        c.read(em.chip.flash_end, 16)


def test_the_file_dialect_plays_into_the_emulator(board):
    em, backend = board()
    image = sample_image(em.chip, 4000, 0, 0)
    result = host.flash(image, backend, dialect="file", chip=em.chip, realtime=False, progress=False)
    assert not result.verified and em.memory.app_valid
    assert em.memory.read(0, 4000) == image.tobytes()


def test_identify_reports_what_a_file_left_missing(board):
    from bootkit.classes.midi import midifile

    em, backend = board()
    image = sample_image(em.chip, 2048, 0, 0)
    events = midifile.file_events(image, em.chip)
    sink = host.usb_sink(backend)
    for ev in events:
        if ev.what in ("PAGE 3 0x180", "END"):
            continue  # lost on the way
        sink(ev.data)
    info = host.identify(backend)
    assert info.pages_missing == 1 and not info.app_valid and info.flags & P.FLAG_SESSION
    # playing the file again fills the gap and completes the update
    for ev in events:
        sink(ev.data)
    em.target.poll()
    assert em.memory.app_valid and em.memory.read(0, 2048) == image.tobytes()


def test_port_link_fails_with_one_line_when_there_is_no_such_port():
    with pytest.raises(host.MidiError, match="cannot open MIDI port"):
        host.PortLink("no such port anywhere")
