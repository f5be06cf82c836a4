"""Issue 16 for the CDC personality: every reported success is observed.

- a chip AVR109 cannot address (32-bit flash addresses) is refused before a byte is sent;
- common.preflight runs before 'e' (force accepted);
- after 'E' the host reports what it saw, never a bare "application started";
- a device that returns wrong data on read-back fails the flash (exit 1).
"""

import json

import pytest

from bootkit.classes.cdc import host
from bootkit.classes.cdc.avr109 import Avr109Engine
from bootkit.classes.common import ImageRejected
from bootkit.cli import main
from bootkit.formats import save
from bootkit.formats.image import FileOrigin, Image
from bootkit.memory import SimulatedFlash, get_chip
from bootkit.samples import named_sample
from bootkit.transports.pty import pty_server

M32U4 = get_chip("atmega32u4")


def run_cli(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


class Recording(Avr109Engine):
    """The engine, counting what the host sent (every byte, commands or not)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.received = bytearray()

    def feed(self, data):
        self.received += data
        return super().feed(data)


@pytest.fixture
def served():
    mem = SimulatedFlash(M32U4)
    eng = Recording(mem)
    with pty_server(eng) as srv:
        yield mem, eng, srv.slave_path


def sample():
    return named_sample("sample-atmega32u4")[1]


# --------------------------------------------------------------------------
# item 1: 32-bit flash addresses


@pytest.mark.parametrize("name", ["stm32f411", "rp2040", "stm32f103c8"])
def test_a_chip_out_of_avr109_reach_is_refused_before_anything_is_sent(served, name):
    mem, eng, port = served
    chip = get_chip(name)
    image = Image([(chip.flash_start + 0x4000, b"\x00" * 300)])
    with pytest.raises(ImageRejected, match=f"{name} cannot be flashed over AVR109 .*out of AVR109's reach"):
        host.flash(image, port=port, chip=chip, progress=False)
    with pytest.raises(ImageRejected, match="out of AVR109's reach"):
        host.read(port=port, chip=name, progress=False)
    assert bytes(eng.received) == b""


@pytest.mark.parametrize("name", ["stm32f411", "rp2040"])
def test_cli_emulating_a_32_bit_chip_over_cdc_is_bad_input_in_one_line(tmp_path, capsys, name):
    chip = get_chip(name)
    save(Image([(chip.flash_start, b"\x00" * 1000)]), tmp_path / "fw.hex")
    rc, out, err = run_cli(capsys, "flash", tmp_path / "fw.hex", "--via", "cdc", "--emulate", name)
    assert rc == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bootkit: error: ") and "out of AVR109's reach" in lines[0]
    assert name in lines[0]


def test_cli_port_with_a_32_bit_chip_is_refused_before_anything_is_sent(tmp_path, capsys, served):
    mem, eng, port = served
    save(Image([(0x10000000, b"\x00" * 1000)]), tmp_path / "fw.hex")
    rc, out, err = run_cli(capsys, "flash", tmp_path / "fw.hex", "--via", "cdc", "--port", port, "--chip", "rp2040")
    assert rc == 2, (out, err)
    assert err.strip().splitlines() == [
        f"bootkit: error: {tmp_path / 'fw.hex'}: rp2040 cannot be flashed over AVR109 (--via cdc): rp2040's flash "
        "at 0x10000000-0x101FFFFF is out of AVR109's reach: its flash addresses are 16-bit word addresses "
        "('A', below 0x20000) or 24-bit ('H', below 0x2000000)"]
    assert bytes(eng.received) == b""


# --------------------------------------------------------------------------
# item 4: common.preflight before 'e'


def test_preflight_refuses_an_image_without_the_first_word_before_erasing(served):
    mem, eng, port = served
    good = sample()
    host.flash(good, port=port, progress=False)
    eng.reset()  # back into the bootloader for the next session
    before = mem.flash_bytes()
    eng.received.clear()
    partial = Image([(0x400, b"\x11" * 64)])
    for force in (False, True):  # force does not lift it on AVR
        with pytest.raises(ImageRejected, match="no data at 0x0, the application's first word"):
            host.flash(partial, port=port, progress=False, force=force)
    assert b"e" not in bytes(eng.received) and b"B" not in bytes(eng.received)
    assert mem.flash_bytes() == before and mem.app_valid


def test_preflight_refuses_a_uf2_of_another_family_unless_forced(served):
    mem, eng, port = served
    image = Image([(0, b"\x0c\x94" * 64)])
    image.origin = FileOrigin("uf2", "fw.uf2", frozenset({0xE48BFF56}))  # rp2040's family
    with pytest.raises(ImageRejected, match="UF2 family rp2040"):
        host.flash(image, port=port, chip=M32U4, progress=False)
    assert bytes(eng.received) == b""
    with pytest.raises(ImageRejected, match="UF2 family rp2040"):
        host.flash(image, port=port, progress=False)  # the chip named by the device's signature
    assert b"e" not in bytes(eng.received)
    assert host.flash(image, port=port, progress=False, force=True).verified
    assert mem.read(0, 128) == b"\x0c\x94" * 64


# --------------------------------------------------------------------------
# item 3: what happened after 'E' is what was seen


def test_cli_emulated_board_reports_the_application_it_saw(tmp_path, capsys):
    rc, out, err = run_cli(capsys, "flash", "examples/firmware/sample-atmega32u4.hex", "--via", "cdc",
                           "--emulate", "atmega32u4", "--image", tmp_path / "f.bin")
    assert rc == 0, (out, err)
    assert out.rstrip().endswith("verified, application started (came back as 03EB:2044)"), out
    assert json.loads((tmp_path / "f.bin.state.json").read_text())["app_valid"] is True


def test_cli_caterina_reports_the_sketch_after_its_500_ms(tmp_path, capsys):
    rc, out, err = run_cli(capsys, "flash", "examples/firmware/sample-atmega32u4.hex", "--via", "cdc",
                           "--dialect", "caterina", "--emulate", "atmega32u4")
    assert rc == 0, (out, err)
    assert out.rstrip().endswith("application started (came back as 2341:8036)"), out


def test_bare_engine_that_goes_quiet_is_reported_as_left_not_as_started(served):
    mem, eng, port = served
    result = host.flash(sample(), port=port, progress=False)
    assert result.steps[-1] == f"left the bootloader (not seen again within {host.PROBE_WAIT:g} s)"
    assert "application started" not in ", ".join(result.steps)
    assert mem.app_valid


class DropsPageZero(Recording):
    """Acknowledges every block but never writes the first page: the application's
    first word stays erased (a board whose SPM failed, seen only after 'E' without verify)."""

    def _cmd_block_write(self, f):
        if self.address == 0 and f[3] == ord("F"):
            self.address += f[1] << 8 | f[2]
            return b"\r"
        return super()._cmd_block_write(f)


def test_device_that_stayed_in_its_bootloader_fails_naming_why():
    mem = SimulatedFlash(M32U4)
    eng = DropsPageZero(mem)
    with pty_server(eng) as srv:
        with pytest.raises(host.Avr109Error) as exc:
            host.flash(sample(), port=srv.slave_path, progress=False, verify=False)
    assert str(exc.value) == ("the device stayed in its bootloader: first word of flash is erased: "
                              "the bootloader kept control")
    assert not mem.app_valid


def test_cli_device_that_stayed_in_its_bootloader_exits_1(tmp_path, capsys):
    mem = SimulatedFlash(M32U4)
    eng = DropsPageZero(mem)
    with pty_server(eng) as srv:
        rc, out, err = run_cli(capsys, "flash", "examples/firmware/sample-atmega32u4.hex", "--via", "cdc",
                               "--port", srv.slave_path, "--no-verify")
    assert rc == 1, (out, err)
    assert out == ""
    assert err.strip().splitlines() == [
        "bootkit: failed: the device stayed in its bootloader: first word of flash is erased: "
        "the bootloader kept control"]


# --------------------------------------------------------------------------
# item 5: wrong data on read-back


class LiesOnReadBack(Recording):
    """Writes what it is given, but one byte of a 'g' flash read comes back changed."""

    def _cmd_block_read(self, f):
        data = super()._cmd_block_read(f)
        if f[3] == ord("F") and len(data) > 5:
            data = data[:5] + bytes([data[5] ^ 0x01]) + data[6:]
        return data


def test_cli_flash_fails_when_the_read_back_differs(capsys):
    mem = SimulatedFlash(M32U4)
    eng = LiesOnReadBack(mem)
    with pty_server(eng) as srv:
        rc, out, err = run_cli(capsys, "flash", "examples/firmware/sample-atmega32u4.hex", "--via", "cdc",
                               "--port", srv.slave_path)
    assert rc == 1, (out, err)
    assert "verified" not in out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bootkit: failed: verify failed at 0x5: wrote 0x"), lines
    assert not mem.app_valid  # never told to leave ('E' manifests) after a failed verify


# --------------------------------------------------------------------------
# a real board after 'E': its port vanishes (or falls silent), then something (or nothing) enumerates


class VanishedPort:
    """A ttyACM whose device detached: every write fails as pyserial reports it."""

    timeout = 1.0

    def write(self, data):
        import serial

        raise serial.SerialException("write failed: [Errno 5] Input/output error")

    def read(self, n):
        return b""


class SilentPort(VanishedPort):
    """A port still open after 'E' on which nothing answers (the board is detaching)."""

    def write(self, data):
        return len(data)


LUFA_BOOT, LUFA_APP = (0x03EB, 0x204A), (0x03EB, 0x2044)


def watch(monkeypatch, looks, port=VanishedPort, wait=1.0):
    """watch_leave on /dev/ttyACM0 with the system's ports scripted: ``looks`` is what
    pyserial lists on each look ({path: (vid, pid)}); the last look stays."""
    from types import SimpleNamespace

    looks = list(looks)
    now = [looks[0]]

    def list_ports(wanted, serial_number=None):
        if wanted == host.application_ids("lufa"):  # each look starts with the application ids
            now[0] = looks.pop(0) if looks else now[0]
        return [p for p, ids in now[0].items() if ids in wanted]

    monkeypatch.setattr(host, "list_ports", list_ports)
    monkeypatch.setattr(host, "_port_ids", lambda path: now[0].get(path))
    session = SimpleNamespace(client=host.Avr109Client(port(), software_id=b"LUFACDC", dialect="lufa"),
                              path="/dev/ttyACM0")
    clock = iter(range(10_000))
    return host.watch_leave(session, wait, sleep=lambda s: None, clock=lambda: next(clock) * 0.1)


def test_detached_board_whose_application_enumerates(monkeypatch):
    step = watch(monkeypatch, [{"/dev/ttyACM0": LUFA_BOOT}, {}, {"/dev/ttyACM1": LUFA_APP}])
    assert step == "application started (came back as 03EB:2044)"


def test_detached_board_whose_bootloader_comes_back_stayed(monkeypatch):
    with pytest.raises(host.Avr109Error) as exc:
        watch(monkeypatch, [{"/dev/ttyACM0": LUFA_BOOT}, {}, {"/dev/ttyACM0": LUFA_BOOT}])
    assert str(exc.value) == "the device stayed in its bootloader: it came back as 03EB:204A on /dev/ttyACM0"


def test_detached_board_not_seen_again(monkeypatch):
    step = watch(monkeypatch, [{}], wait=1.0)
    assert step == "left the bootloader (not seen again within 1 s)"


def test_silent_port_still_listed_as_the_bootloader_is_watched_not_called_stayed(monkeypatch):
    """LUFA detaches a moment after 'E' (USB_Detach, then its watchdog reset): its port may
    still be listed, silent; what enumerates after it vanished is what is reported."""
    step = watch(monkeypatch, [{"/dev/ttyACM0": LUFA_BOOT}] * 3 + [{}, {"/dev/ttyACM0": LUFA_APP}],
                 port=SilentPort)
    assert step == "application started (came back as 03EB:2044)"


def test_silent_port_that_never_goes_away_stayed(monkeypatch):
    with pytest.raises(host.Avr109Error) as exc:
        watch(monkeypatch, [{"/dev/ttyACM0": LUFA_BOOT}], port=SilentPort, wait=1.0)
    assert str(exc.value) == ("the device stayed in its bootloader: it is still there on /dev/ttyACM0 but no "
                              "longer answers AVR109")
