"""Issue 16 for HID: every reported success is observed.

HalfKay and LUFA answer nothing after their boot command, so the host watches
the bus: it reports "application started (came back as VVVV:PPPP)" or "left
the bootloader (not seen again within N s)" only when it saw that, and fails
("the device stayed in its bootloader: ...") when the bootloader came back or
never left.  An image without the application's first word is refused before
anything is erased (common.preflight); the native dialect fails, never
"verified", when its read-back differs.  Through the host client and through
``bootkit flash`` (``bootkit.cli.main``: exit 0/1/2).
"""

from __future__ import annotations

import random

import pytest

from bootkit.classes import hid
from bootkit.classes.hid import host
from bootkit.classes.hid.device import HalfKayEngine, HidFault, NativeEngine
from bootkit.classes.hid.protocol import Command, NativeStatus
from bootkit.cli import main
from bootkit.emulator import Emulator
from bootkit.formats import Image, load, save
from bootkit.transports.virtual import VirtualBus, get_backend
from bootkit.usb.descriptors import DeviceInfo
from bootkit.usb.device import Device

APP_IDS = (0x16C0, 0x0483)  # a Teensy application (USB serial), as it enumerates after HalfKay
LEFT = "left the bootloader (not seen again within 0.3 s)"
STAYED_ERASED = "the device stayed in its bootloader: first word of flash is erased: the bootloader kept control"


def code(n: int, seed) -> bytes:
    """Bytes that never start with an erased word."""
    rng = random.Random(f"hid-outcomes:{seed}")
    return b"\x0c\x94" + bytes(rng.getrandbits(8) for _ in range(max(0, n - 2)))


class Board:
    def __init__(self, dialect, chip="atmega32u4", path=None):
        self.chip = hid.chip_for(chip, dialect)
        self.dialect = dialect
        self.bus = VirtualBus()
        self.em = Emulator(self.chip, "hid", options={"dialect": dialect}, image=path)
        self.em.attach(self.bus)
        self.backend = get_backend(self.bus)

    @property
    def memory(self):
        return self.em.memory

    def flash(self, image, **kw):
        kw.setdefault("dialect", self.dialect)
        kw.setdefault("chip", self.chip)
        kw.setdefault("leave_wait", 0.3)
        return host.flash(image, self.backend, progress=False, **kw)

    def with_application(self):
        """The application enumerates after leaving (the HID emulator has none of its own)."""
        class WithUsbApplication(type(self.em.definition)):
            def application_device(self, memory, chip, dialect, options):
                return Device(DeviceInfo(*APP_IDS, 0x0100, product="Teensy application"), [])

        self.em.definition = WithUsbApplication()
        return self


@pytest.fixture
def board():
    made = []

    def make(dialect, chip="atmega32u4", **kw):
        b = Board(dialect, chip, **kw)
        made.append(b)
        return b

    yield make
    for b in made:
        b.em.close()


def run_cli(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


# --------------------------------------------------------------------------
# item 1 (issue item 3): report what was observed after the boot command


@pytest.mark.parametrize("dialect", hid.DIALECTS)
def test_left_and_not_seen_again_is_reported_as_such(board, dialect):
    """The emulated board runs its application, which has no USB: the bootloader goes, nothing comes."""
    b = board(dialect)
    result = b.flash(Image([(0, code(3000, dialect))]))
    assert result.steps[-1] == LEFT
    assert not any(s in ("booted", "application started", "reset") for s in result.steps)
    assert b.em.mode == "application"


@pytest.mark.parametrize("dialect", hid.DIALECTS)
def test_application_started_only_when_it_came_back(board, dialect):
    b = board(dialect).with_application()
    result = b.flash(Image([(0, code(3000, dialect))]))
    assert result.steps[-1] == "application started (came back as 16C0:0483)"
    assert sum(s.startswith("application started") for s in result.steps) == 1
    assert b.em.mode == "application"


@pytest.mark.parametrize("dialect", hid.DIALECTS)
def test_erased_first_word_keeps_the_bootloader(board, dialect):
    """An image whose first word is 0xFFFF passes preflight (it covers the word) but starts
    nothing: the bootloader comes back, and the host says so (it used to say "booted")."""
    b = board(dialect).with_application()
    image = Image([(0, b"\xff\xff" + code(700, dialect)[2:])])
    with pytest.raises(host.HidError) as info:
        b.flash(image)
    assert str(info.value) == STAYED_ERASED
    assert b.em.mode == "bootloader"
    assert b.memory.read(2, 698) == image.tobytes(2, 700)  # it was written; only the start failed


def test_erased_first_word_cli_exit_1(tmp_path, capsys):
    path = tmp_path / "ff.hex"
    save(Image([(0, b"\xff\xff" + code(300, "cli")[2:])]), path)
    rc, out, err = run_cli(capsys, "flash", str(path), "--via", "hid", "--dialect", "halfkay", "--emulate",
                           "atmega32u4", "--no-progress")
    assert rc == 1, (out, err)
    assert out == ""
    assert err.strip().splitlines() == [f"bootkit: failed: {STAYED_ERASED}"]


def test_cli_prints_what_it_saw(tmp_path, capsys):
    path = tmp_path / "fw.hex"
    save(Image([(0, code(1000, "ok"))]), path)
    rc, out, err = run_cli(capsys, "flash", str(path), "--via", "hid", "--dialect", "halfkay", "--emulate",
                           "atmega32u4", "--no-progress")
    assert rc == 0, err
    assert out.startswith(f"{path}: 1024 bytes via hid/halfkay in ")
    assert out.rstrip().endswith(", not verified; programmed 8 blocks of 128 bytes (first erased the chip), "
                                 "not verified: halfkay has no read command, "
                                 "left the bootloader (not seen again within 0.5 s)")


def test_still_there_after_the_boot_command(board, monkeypatch):
    """A HalfKay that accepts the boot report and does not reboot: not "booted", a failure."""
    b = board("halfkay")
    monkeypatch.setattr(HalfKayEngine, "_leave", lambda self, reason, delay=0.0: None)
    with pytest.raises(host.HidError) as info:
        b.flash(Image([(0, code(500, "stay"))]))
    assert str(info.value) == ("the device stayed in its bootloader: it was still there 0.3 s after the "
                               "boot command")


def test_halfkay_boot_refused(board, monkeypatch):
    b = board("halfkay")

    def refuse(self, reason, delay=0.0):
        raise HidFault("no")

    monkeypatch.setattr(HalfKayEngine, "_leave", refuse)
    with pytest.raises(host.HidError) as info:
        b.flash(Image([(0, code(500, "stall"))]))
    assert str(info.value) == ("the device stayed in its bootloader: boot command: the device refused the "
                               "report (STALL)")


def test_native_reset_refused_names_the_status(board, monkeypatch):
    b = board("native")
    command = NativeEngine._command

    def refuse_reset(self, cmd, arg0, arg1):
        if cmd == Command.RESET:
            raise HidFault("no application", NativeStatus.ERROR)
        return command(self, cmd, arg0, arg1)

    monkeypatch.setattr(NativeEngine, "_command", refuse_reset)
    with pytest.raises(host.HidError) as info:
        b.flash(Image([(0, code(500, "reset"))]))
    assert str(info.value) == "the device stayed in its bootloader: RESET: device reports ERROR"
    assert b.em.mode == "bootloader"


@pytest.mark.parametrize("dialect", hid.DIALECTS)
def test_boot_returns_what_it_saw(board, dialect):
    b = board(dialect)
    b.flash(Image([(0, code(900, "boot"))]), leave=False)
    assert b.em.mode == "bootloader"
    assert host.boot(b.backend, chip=b.chip, dialect=dialect, leave_wait=0.3) == LEFT
    b.memory.poke(0, b"\xff\xff")  # hand-erased first word: the next boot keeps the bootloader
    b.em.run_application()  # it left; power it up again with the boot button
    b.em.board.hold_boot_button()
    b.em.target.device = b.em._device_for_mode()
    b.em.target.generation += 1
    with pytest.raises(host.HidError, match=r"^the device stayed in its bootloader: it came back as its "
                                            r"bootloader \(\w{4}:\w{4}\)$"):
        host.boot(b.backend, chip=b.chip, dialect=dialect, leave_wait=0.3)


# --------------------------------------------------------------------------
# item 2 (issue item 7): refused before anything is erased


@pytest.mark.parametrize("dialect", hid.DIALECTS)
@pytest.mark.parametrize("force", [False, True])
def test_image_without_first_word_refused_before_erasing(board, dialect, force):
    b = board(dialect)
    old = code(4096, "old")
    b.memory.poke(0, old)
    with pytest.raises(host.ImageRejected, match=r"^image has no data at 0x0, the application's first word"):
        b.flash(Image([(0x400, code(1000, "partial"))]), force=force)
    assert b.memory.erase_counters.total == 0
    assert b.memory.flash_bytes()[:4096] == old
    assert b.em.mode == "bootloader"


def test_native_chip_from_get_info(board):
    """No --chip: the native device names its chip (GET_INFO), and preflight checks against it."""
    b = board("native")
    b.memory.poke(0, b"\x01\x02")
    with pytest.raises(host.ImageRejected, match="application's first word"):
        host.flash(Image([(0x200, code(300, "info"))]), b.backend, dialect="native", progress=False)
    assert b.memory.read(0, 2) == b"\x01\x02"


def test_uf2_of_another_family_needs_force(board, tmp_path):
    b = board("native")
    path = tmp_path / "fw.uf2"
    save(Image([(0, code(512, "uf2"))]), path, family="rp2040")
    image = load(path)
    with pytest.raises(host.ImageRejected, match=r"^UF2 family rp2040 .* does not match atmega32u4"):
        b.flash(image)
    assert b.memory.erase_counters.total == 0
    result = b.flash(image, force=True)
    assert result.verified and b.memory.read(0, 512) == image.tobytes(0, 512)


# --------------------------------------------------------------------------
# item 3: "verified" only after a comparison that can fail


def _corrupt_read_back(monkeypatch, at: int):
    """The native device returns one wrong byte in its READ data (the flash itself is right)."""
    in_report = NativeEngine.in_report

    def lying(self, max_length):
        reading = not self.queue and self.read_remaining
        start = self.read_address
        report = in_report(self, max_length)
        if reading and report is not None and start <= at < start + len(report):
            report = bytearray(report)
            report[at - start] ^= 0x5A
            report = bytes(report)
        return report

    monkeypatch.setattr(NativeEngine, "in_report", lying)


def test_native_wrong_read_back_fails_exit_1(tmp_path, capsys, monkeypatch):
    """The flash is right, the read-back is not: exit 1 naming the address, never "verified".
    (HalfKay and LUFA cannot read: test_cli_prints_what_it_saw pins their "not verified".)"""
    path = tmp_path / "fw.hex"
    data = code(3000, "rb")
    save(Image([(0, data)]), path)
    _corrupt_read_back(monkeypatch, 0x777)
    rc, out, err = run_cli(capsys, "flash", str(path), "--via", "hid", "--dialect", "native", "--emulate",
                           "atmega32u4", "--image", str(tmp_path / "flash.bin"), "--no-progress")
    assert rc == 1, (out, err)
    assert "verified" not in out
    assert err.strip().splitlines() == [
        f"bootkit: failed: verify failed at 0x777: wrote 0x{data[0x777]:02X}, read 0x{data[0x777] ^ 0x5A:02X}"]


# --------------------------------------------------------------------------
# HalfKay blocks as teensy_write() sends them: a slow answer is tried again


def test_halfkay_block_tried_again_after_a_slow_answer(board, monkeypatch):
    """A transfer that times out (a busy device, a loaded VM) is sent again, as teensy_write
    does (each try gets the rest of the budget, which shrinks by 10 ms a try), instead of
    failing the flash after one 250 ms timeout."""
    import time

    import usb.core

    b = board("halfkay")
    set_report = host.HidClient.set_report
    slow = {0x100}  # the second block: 0.25 s, not the first block's 3 s

    def once_too_slow(self, data, timeout=None):
        address = data[0] | data[1] << 8
        if address in slow:
            slow.discard(address)
            time.sleep(0.3)
            raise usb.core.USBTimeoutError("Operation timed out", errno=110)
        return set_report(self, data, timeout)

    monkeypatch.setattr(host.HidClient, "set_report", once_too_slow)
    image = Image([(0, code(0x180, "slow"))])
    result = b.flash(image)
    assert not slow
    assert b.memory.read(0, 0x180) == image.tobytes(0, 0x180)
    assert result.steps[-1] == LEFT


def test_halfkay_block_no_answer_names_the_block(board, monkeypatch):
    import usb.core

    b = board("halfkay")
    set_report = host.HidClient.set_report

    def never(self, data, timeout=None):
        if (data[0] | data[1] << 8) == 0x100:
            raise usb.core.USBTimeoutError("Operation timed out", errno=110)
        return set_report(self, data, timeout)

    monkeypatch.setattr(host.HidClient, "set_report", never)
    with pytest.raises(host.HidError) as info:
        b.flash(Image([(0, code(0x180, "never"))]))
    assert str(info.value) == "block at 0x100: no answer from the device (a SET_REPORT of 130 bytes timed out)"
    assert b.em.mode == "bootloader"
