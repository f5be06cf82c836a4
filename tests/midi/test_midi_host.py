"""The two-way client on the in-process bus: flash, read back, refusals, retries."""

import pytest

from bootkit.classes.common import ImageRejected
from bootkit.classes.midi import host
from bootkit.classes.midi import protocol as P
from bootkit.classes.midi.stream import StreamParser
from bootkit.classes.midi.sysex import from_u7, pack7, unpack7
from bootkit.emulator import Emulator
from bootkit.formats.image import Image
from bootkit.memory import get_chip
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
    self.parser = StreamParser()
    self.tag = 0
    self.retried = 0


def test_permanent_nak_is_an_error_with_its_reason(board):
    em, backend = board()
    link = host.open_link(backend)
    c = host.SysexClient(link, timeout=0.5)
    with pytest.raises(host.Nak, match="PROTECTED"):
        c.write(em.chip.boot_start, b"\x00" * 128)
    with pytest.raises(host.MidiError, match="^the device stayed in its bootloader: no application: the first "
                                             "word of flash is erased \\(BOOT answered NAK NO_APPLICATION\\)$"):
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


# --------------------------------------------------------------------------
# issue 16: every reported success is observed

def test_boot_reports_that_the_device_left_not_that_it_booted(board):
    em, backend = board()
    image = sample_image(em.chip, 1024, 0x800, 16)
    result = host.flash(image, backend, chip=em.chip, progress=False)
    assert result.steps[-1] == "left the bootloader (not seen again within 0.5 s)"
    assert "booted" not in result.steps
    assert em.memory.app_valid and em.target.device is None


def test_an_application_that_comes_back_is_named_by_its_ids(board, monkeypatch):
    from bootkit.registry import personality
    from bootkit.usb.descriptors import DeviceInfo
    from bootkit.usb.device import Device

    monkeypatch.setattr(type(personality("midi")), "application_device",
                        lambda self, memory, chip, dialect, options: Device(DeviceInfo(0x16C0, 0x0485, 0x0100), []))
    em, backend = board()
    result = host.flash(sample_image(em.chip, 1024, 0x800, 16), backend, chip=em.chip, progress=False)
    assert result.steps[-1] == "application started (came back as 16C0:0485)"


def test_a_device_that_comes_back_as_its_bootloader_fails(board, monkeypatch):
    em, backend = board()
    monkeypatch.setattr(em.board, "leave", em.board.hold_boot_button)  # the boot button is held down
    with pytest.raises(host.MidiError, match="^the device stayed in its bootloader: it came back as its "
                                             "bootloader"):
        host.flash(sample_image(em.chip, 1024, 0x800, 16), backend, chip=em.chip, progress=False)


def test_boot_after_an_incomplete_file_is_refused(board):
    """A file that stopped partway (item 9) leaves part of an image in flash with its first word
    written: BOOT must not manifest that."""
    from bootkit.classes.midi import midifile

    em, backend = board()
    image = sample_image(em.chip, 2048, 0, 0)
    sink = host.usb_sink(backend)
    for ev in midifile.file_events(image, em.chip):
        if ev.what not in ("PAGE 9 0x480", "END"):
            sink(ev.data)
    c = host.SysexClient(host.open_link(backend), timeout=0.5)
    with pytest.raises(host.MidiError, match=r"^the device stayed in its bootloader: the file played last is "
                                             r"incomplete \(1 of 16 page\(s\) missing\) \(BOOT answered NAK "
                                             r"NO_APPLICATION\)$"):
        c.boot()
    assert not em.memory.app_valid


def test_the_file_dialect_reports_the_device_leaving(board):
    em, backend = board()
    image = sample_image(em.chip, 1500, 0x900, 40)
    result = host.flash(image, backend, dialect="file", chip=em.chip, realtime=False, progress=False)
    assert result.steps[-1] == "left the bootloader (not seen again within 0.5 s)"
    assert em.memory.app_valid


def test_the_file_dialect_fails_when_the_device_stays(board, monkeypatch):
    """Events lost on the way (as aplaymidi's overrun lost them): the device keeps its bootloader
    and the host says why, from IDENTIFY, instead of reporting success."""
    em, backend = board()
    real = host.usb_sink

    def lossy(*a, **kw):
        send = real(*a, **kw)
        count = [0]

        def sink(message):
            count[0] += 1
            if count[0] not in (5, 6):
                send(message)
        return sink

    monkeypatch.setattr(host, "usb_sink", lossy)
    image = sample_image(em.chip, 2048, 0, 0)
    with pytest.raises(host.MidiError, match=r"^the device stayed in its bootloader: the file ended with 2 of "
                                             r"16 page\(s\) missing \(0 damaged frame\(s\)\): the application "
                                             r"stays invalid; play the file again$"):
        host.flash(image, backend, dialect="file", chip=em.chip, realtime=False, progress=False)
    assert not em.memory.app_valid


def test_flash_refuses_an_avr_image_without_its_first_word_before_erasing(board):
    em, backend = board()
    em.memory.poke(0, b"\x0c\x94")
    before = em.memory.flash_bytes()
    for dialect in ("sysex", "file"):
        with pytest.raises(ImageRejected, match="first word"):
            host.flash(Image([(0x200, b"\x00" * 200)]), backend, dialect=dialect, chip=em.chip, progress=False,
                       realtime=False, force=True)
    # the chip named by the device itself when none is given
    with pytest.raises(ImageRejected, match="first word"):
        host.flash(Image([(0x200, b"\x00" * 200)]), backend, progress=False)
    assert em.memory.flash_bytes() == before


def test_wrong_data_on_read_back_fails_the_cli_with_exit_1(tmp_path, monkeypatch, capsys):
    """Item 4: the device returns other bytes than it was sent on READ: `bootkit flash --via midi`
    exits 1 with one line naming the address, and reports nothing as verified or started."""
    from bootkit.classes.midi.device import MidiBootEngine
    from bootkit.cli import main
    from bootkit.formats import dump

    real = MidiBootEngine._read

    def lying(self, payload):
        reply = bytearray(real(self, payload))
        if from_u7(payload[:5]) == 0x100:
            data = bytearray(unpack7(bytes(reply[5:])))
            data[7] ^= 0x10
            reply[5:] = pack7(bytes(data))
        return bytes(reply)

    monkeypatch.setattr(MidiBootEngine, "_read", lying)
    fw = tmp_path / "fw.hex"
    image = sample_image("atmega32u4", 1024, 0x800, 16)
    fw.write_bytes(dump(image, "hex"))
    rc = main(["flash", str(fw), "--via", "midi", "--emulate", "atmega32u4", "--no-progress"])
    out, err = capsys.readouterr()
    want = image.tobytes(0x107, 0x108)[0]
    assert rc == 1
    assert err == f"bootkit: failed: verify failed at 0x107: wrote 0x{want:02X}, read 0x{want ^ 0x10:02X}\n"
    assert "verified" not in out and "started" not in out


def test_a_bootloader_that_comes_back_at_once_is_still_seen(board, monkeypatch):
    """The device re-enumerates before the host first looks at the bus: what was there is
    noted before BOOT goes out, so the bootloader coming back is not taken for a departure."""
    em, backend = board()
    monkeypatch.setattr(em.board, "leave", em.board.hold_boot_button)
    fn = em.target.device.functions[0]
    fn.engine.signal = lambda kind, reason="", delay=0.0: fn.signal(kind, reason, 0.0)
    with pytest.raises(host.MidiError, match="^the device stayed in its bootloader: it came back as its "
                                             "bootloader"):
        host.flash(sample_image(em.chip, 1024, 0x800, 16), backend, chip=em.chip, progress=False)


def test_an_option_the_host_does_not_take_is_an_error(board):
    """A keyword the MIDI host does not take (another personality's option, a typo) is a
    TypeError before anything is sent, never silently dropped."""
    em, backend = board()
    image = sample_image(em.chip, 256, 0x100, 1)
    before = em.memory.read(em.memory.layout.flash.start, em.memory.layout.flash.size)
    with pytest.raises(TypeError, match="mcu"):
        host.flash(image, backend, chip=em.chip, progress=False, mcu="atmega32u4")
    with pytest.raises(TypeError, match="transfer_size"):
        host.read(backend, progress=False, transfer_size=64)
    assert em.memory.read(em.memory.layout.flash.start, em.memory.layout.flash.size) == before


def test_the_file_dialect_takes_its_pacing(board):
    """encoding, margin and slack_ms pace the one-way file (a product's [midi] settings); the
    two-way dialect has no pacing and refuses them rather than drop them."""
    image = sample_image(get_chip("atmega32u4"), 1024, 0x800, 16)
    played = {}
    for encoding in ("sysex", "notes"):
        em, backend = board()
        result = host.flash(image, backend, dialect="file", chip=em.chip, realtime=False, progress=False,
                            encoding=encoding, margin=0.5, slack_ms=1.0)
        assert em.memory.app_valid
        played[encoding] = int(result.steps[0].split()[1])  # "played N messages (...)"
    assert played["notes"] > 10 * played["sysex"]  # one Note On per 7-bit byte
    em, backend = board()
    with pytest.raises(ImageRejected, match="encoding pace the one-way file"):
        host.flash(image, backend, chip=em.chip, progress=False, encoding="notes")
    with pytest.raises(ImageRejected, match="unknown encoding 'morse'"):
        host.flash(image, backend, dialect="file", chip=em.chip, realtime=False, progress=False, encoding="morse")
