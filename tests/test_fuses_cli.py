"""``bootkit fuses read|write|verify`` and ``bootkit signature`` (issue 20 item 5).

The command line is generic over personalities: most tests drive it through a plug-in
personality registered here (``fakeprog``, a FuseAccess host over an in-memory AVR that
records every call), so what the command checks before it talks, what it sends and what it
prints is seen exactly.  The DFU personality's FLIP dialect reads a real signature from the
emulated LUFA bootloader on the in-process bus.
"""

from __future__ import annotations

import json

import pytest

from bootkit import registry
from bootkit.cli import main
from bootkit.contracts import DeviceOptions, FuseAccess, HostError, Link, Personality
from bootkit.memory import chips, get_chip


class FakeAvr:
    """An AVR as an ISP programmer sees it: signature, fuses (unimplemented bits read as 1)."""

    def __init__(self, chip: str = "attiny85", signature: bytes | None = None):
        self.chip = get_chip(chip)
        self.sig = self.chip.signature if signature is None else signature
        self.masks = {f.name: f.mask for f in self.chip.fuses}
        self.masks["lock"] = self.chip.lock.mask
        self.cells = {f.name: f.default for f in self.chip.fuses}
        self.cells["lock"] = 0xFF
        self.calls: list[tuple] = []
        self.stuck: dict[str, int] = {}  # a fuse whose cell does not take what is written

    def read(self) -> dict[str, int]:
        return {name: (v | ~self.masks[name]) & 0xFF for name, v in self.cells.items()}


class FakeHost:
    def __init__(self, avr: FakeAvr):
        self.avr = avr
        self.fail: Exception | None = None

    def flash(self, image, link, **kw):
        raise HostError("not here")

    def read(self, link, **kw):
        raise HostError("not here")

    def signature(self, link: Link, *, dialect=None, chip=None, options=None) -> bytes:
        self.avr.calls.append(("signature", link.port))
        return self.avr.sig

    def read_fuses(self, link: Link, *, dialect=None, chip=None, options=None) -> dict[str, int]:
        self.avr.calls.append(("read_fuses", chip.name if chip else None))
        return self.avr.read()

    def write_fuses(self, link: Link, values, *, dialect=None, chip=None, options=None) -> dict[str, int]:
        self.avr.calls.append(("write_fuses", dict(values)))
        if self.fail is not None:
            raise self.fail
        for name, value in values.items():
            self.avr.cells[name] = self.avr.stuck.get(name, value)
        return self.avr.read()


class PlainHost:
    """A host side with no fuse access."""

    def flash(self, image, link, **kw):
        raise HostError("not here")

    def read(self, link, **kw):
        raise HostError("not here")


class FakePersonality(Personality):
    dialects = ("one", "two")
    options = {"one": DeviceOptions, "two": DeviceOptions}
    link_fields = ("port",)

    def __init__(self, name: str, host):
        self.name = name  # type: ignore[misc]  # a ClassVar on the contract; each fake has its own
        self._host = host

    def default_dialect(self, chip):
        return "one"

    def bootloader_device(self, memory, chip, dialect, options):
        raise NotImplementedError

    def host(self):
        return self._host


@pytest.fixture
def avr(monkeypatch):
    """A fake programmer ``fakeprog`` (FuseAccess) and ``fakeplain`` (not), registered as
    plug-ins are (the registry's loaded table), and a chip database restored afterwards."""
    target = FakeAvr()
    loaded = registry._loaded.setdefault(registry.PERSONALITIES, {})
    monkeypatch.setitem(loaded, "fakeprog", FakePersonality("fakeprog", FakeHost(target)))
    monkeypatch.setitem(loaded, "fakeplain", FakePersonality("fakeplain", PlainHost()))
    monkeypatch.setattr(chips.CHIPS, "_chips", dict(chips.CHIPS._chips))
    return target


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


VIA = ("--via", "fakeprog", "--port", "fake0")


def test_the_fake_is_a_fuse_access_host_and_the_plain_one_is_not(avr):
    assert isinstance(FakeHost(avr), FuseAccess)
    assert not isinstance(PlainHost(), FuseAccess)


# -- signature


def test_signature_prints_the_bytes_and_the_chip_names(avr, capsys):
    code, out, err = run(capsys, "signature", *VIA)
    assert (code, out, err) == (0, "1E 93 0B: attiny85\n", "")
    assert avr.calls == [("signature", "fake0")]
    code, out, _ = run(capsys, "signature", *VIA, "--json")
    assert code == 0 and json.loads(out) == {"signature": "1e930b", "chips": ["attiny85"]}


def test_signature_of_another_chip_than_chip_is_exit_1(avr, capsys):
    code, out, err = run(capsys, "signature", *VIA, "--chip", "atmega328p")
    assert code == 1
    assert out == "1E 93 0B: attiny85\n"
    assert err == "bootkit: failed: signature 1E 93 0B is not atmega328p's (1E 95 0F)\n"


def test_signature_no_chip_knows(avr, capsys):
    avr.sig = b"\x1e\x77\x01"
    code, out, _ = run(capsys, "signature", *VIA)
    assert code == 0
    assert out == "1E 77 01: no chip in the database has it (add one with --chip-file FILE.toml)\n"


@pytest.mark.parametrize("sig", [b"\xff\xff\xff", b"\x00\x00\x00"])
def test_a_target_that_does_not_answer_is_exit_1(avr, capsys, sig):
    avr.sig = sig
    code, out, err = run(capsys, "signature", *VIA)
    assert code == 1 and out == ""
    assert err == (f"bootkit: failed: signature {' '.join(f'{b:02X}' for b in sig)}: the target does not answer "
                   "(check wiring, power and clock)\n")


def test_a_personality_without_fuse_access_is_one_line_exit_2(avr, capsys):
    code, out, err = run(capsys, "signature", "--via", "fakeplain", "--port", "x")
    assert (code, out, err) == (2, "", "bootkit: error: fakeplain cannot read a signature\n")
    code, out, err = run(capsys, "fuses", "read", "--via", "fakeplain", "--dialect", "two", "--port", "x")
    assert (code, out, err) == (2, "", "bootkit: error: fakeplain/two cannot read fuses\n")
    code, _, err = run(capsys, "fuses", "write", "lfuse=0x62", "--via", "hid", "--emulate", "atmega32u4")
    assert (code, err) == (2, "bootkit: error: hid cannot write fuses\n")


# -- fuses read and the chip by its signature


def test_fuses_read_finds_the_chip_by_its_signature(avr, capsys):
    code, out, err = run(capsys, "fuses", "read", *VIA)
    assert (code, err) == (0, "")
    assert out == "attiny85 (signature 1E 93 0B): lfuse=0x62 hfuse=0xDF efuse=0xFF lock=0xFF\n"
    assert avr.calls == [("signature", "fake0"), ("read_fuses", "attiny85")]
    code, out, _ = run(capsys, "fuses", "read", *VIA, "--chip", "auto", "--json")
    assert code == 0
    assert json.loads(out) == {"chip": "attiny85", "signature": "1e930b",
                               "fuses": {"lfuse": 0x62, "hfuse": 0xDF, "efuse": 0xFF, "lock": 0xFF}}


def test_fuses_read_with_a_named_chip_reads_no_signature(avr, capsys):
    code, out, _ = run(capsys, "fuses", "read", *VIA, "--chip", "attiny85")
    assert code == 0 and out == "attiny85: lfuse=0x62 hfuse=0xDF efuse=0xFF lock=0xFF\n"
    assert avr.calls == [("read_fuses", "attiny85")]


def test_a_signature_several_chips_share_lists_them_exit_2(avr, capsys, tmp_path):
    twin = tmp_path / "twin.toml"
    twin.write_text('[chip]\nname = "tiny85twin"\nfamily = "avr"\nflash = "8K"\npage_size = 64\n'
                    'signature = [0x1E, 0x93, 0x0B]\n')
    code, out, err = run(capsys, "--chip-file", str(twin), "fuses", "read", *VIA)
    assert (code, out) == (2, "")
    assert err == ("bootkit: error: signature 1E 93 0B is that of several chips: attiny85, tiny85twin "
                   "(give --chip NAME)\n")
    assert avr.calls == [("signature", "fake0")]


def test_a_signature_no_chip_has_is_exit_2(avr, capsys):
    avr.sig = b"\x1e\x77\x01"
    code, _, err = run(capsys, "fuses", "write", "lfuse=0x62", *VIA)
    assert code == 2
    assert err == ("bootkit: error: signature 1E 77 01: no chip in the database has it (give --chip NAME, or "
                   "add the chip with --chip-file FILE.toml)\n")
    assert [c[0] for c in avr.calls] == ["signature"]


# -- fuses write


def test_fuses_write_writes_and_reads_back(avr, capsys):
    code, out, err = run(capsys, "fuses", "write", "lfuse=0xE2", "hfuse=0xD7", "lock=0xFC", *VIA,
                         "--chip", "attiny85")
    assert (code, err) == (0, "")
    assert out == "attiny85: wrote lfuse=0xE2 hfuse=0xD7 lock=0xFC; read back lfuse=0xE2 hfuse=0xD7 lock=0xFC\n"
    assert avr.calls == [("write_fuses", {"lfuse": 0xE2, "hfuse": 0xD7, "lock": 0xFC})]
    assert avr.read()["lfuse"] == 0xE2


def test_unimplemented_bits_all_1_or_all_0_are_accepted(avr, capsys):
    # attiny85's efuse has one bit (SELFPRGEN, mask 0x01): 0xFE as the chip reads it, 0x00 as
    # avrdude.conf's masked form writes it
    code, out, _ = run(capsys, "fuses", "write", "efuse=0x00", *VIA, "--chip", "attiny85")
    assert code == 0 and out.endswith("wrote efuse=0x00; read back efuse=0xFE\n")
    code, out, _ = run(capsys, "fuses", "write", "efuse=0xFF", *VIA, "--chip", "attiny85")
    assert code == 0 and out.endswith("read back efuse=0xFF\n")


def test_a_value_outside_its_mask_is_refused_before_anything(avr, capsys):
    code, out, err = run(capsys, "fuses", "write", "lfuse=0x62", "efuse=0x03", *VIA, "--chip", "attiny85")
    assert (code, out) == (2, "")
    assert err == ("bootkit: error: efuse=0x03 is outside its mask 0x01 on attiny85 (bits 0x02 do not exist: "
                   "give them all 1 or all 0)\n")
    assert avr.calls == []  # not even the signature: nothing was touched
    # found by its signature: read, then refused before any write
    code, _, err = run(capsys, "fuses", "write", "lock=0x7C", *VIA)
    assert code == 2 and "lock=0x7C is outside its mask 0x03 on attiny85 (bits 0x7C" in err
    assert avr.calls == [("signature", "fake0")]


@pytest.mark.parametrize("argv, line", [
    (("xfuse=0x62",), "xfuse: attiny85 has no such fuse (its fuses: lfuse, hfuse, efuse, lock)"),
    (("lfuse=0x62", "lfuse=0x61"), "lfuse is given twice"),
])
def test_names_are_checked_before_anything(avr, capsys, argv, line):
    code, out, err = run(capsys, "fuses", "write", *argv, *VIA, "--chip", "attiny85")
    assert (code, out, err) == (2, "", f"bootkit: error: {line}\n")
    assert avr.calls == []


@pytest.mark.parametrize("arg, line", [
    ("lfuse=0x100", "lfuse=0x100: a fuse is one byte (0x00-0xFF)"),
    ("lfuse", "expected NAME=VALUE such as lfuse=0x62, got 'lfuse'"),
    ("lfuse=zz", "not a number: 'zz'"),
])
def test_values_that_are_not_a_byte(avr, capsys, arg, line):
    with pytest.raises(SystemExit) as exc:
        main(["fuses", "write", arg, *VIA])
    assert exc.value.code == 2
    assert line in capsys.readouterr().err
    assert avr.calls == []


def test_a_fuse_that_does_not_take_the_value_is_exit_1(avr, capsys):
    avr.stuck["hfuse"] = 0xDF
    code, out, err = run(capsys, "fuses", "write", "hfuse=0x5F", *VIA, "--chip", "attiny85")
    assert (code, out) == (1, "")
    assert err == "bootkit: failed: written but hfuse reads 0xDF, expected 0x5F (mask 0xFF)\n"


@pytest.mark.parametrize("exc, code, line", [
    (ValueError("hfuse=0x5F: refused by the programmer"), 2, "bootkit: error: hfuse=0x5F: refused by the programmer"),
    (RuntimeError("target does not answer programming enable"), 1,
     "bootkit: failed: target does not answer programming enable"),
    (HostError("FLIP cannot write fuses"), 1, "bootkit: failed: FLIP cannot write fuses"),
])
def test_what_the_host_side_raises_is_one_line(avr, capsys, exc, code, line):
    bootkit_host = registry.personality("fakeprog").host()
    bootkit_host.fail = exc
    got, out, err = run(capsys, "fuses", "write", "hfuse=0x5F", *VIA, "--chip", "attiny85")
    assert (got, out, err) == (code, "", line + "\n")


# -- fuses verify


def test_fuses_verify(avr, capsys):
    code, out, err = run(capsys, "fuses", "verify", "lfuse=0x62", "hfuse=0xDF", "efuse=0x01", *VIA)
    assert (code, err) == (0, "")  # efuse 0x01 and the chip's 0xFF agree in its mask (0x01)
    assert out == "attiny85 (signature 1E 93 0B): lfuse=0x62 hfuse=0xDF efuse=0x01 verified\n"
    code, out, err = run(capsys, "fuses", "verify", "lfuse=0xE2", "hfuse=0xDF", "lock=0xFC", *VIA,
                         "--chip", "attiny85")
    assert (code, out) == (1, "")
    assert err == ("bootkit: failed: attiny85: lfuse reads 0x62, expected 0xE2 (mask 0xFF); "
                   "lock reads 0xFF, expected 0xFC (mask 0x03)\n")
    assert ("write_fuses",) not in [c[:1] for c in avr.calls]


def test_fuses_verify_checks_masks_too(avr, capsys):
    code, _, err = run(capsys, "fuses", "verify", "efuse=0x02", *VIA, "--chip", "attiny85")
    assert code == 2 and "efuse=0x02 is outside its mask 0x01 on attiny85" in err
    assert avr.calls == []


# -- help


@pytest.mark.parametrize("argv", [["fuses"], ["fuses", "read"], ["fuses", "write"], ["fuses", "verify"],
                                  ["signature"]])
def test_help_has_examples(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    lines = out.split("examples:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert lines and all(line.startswith("  bootkit " + " ".join(argv)) for line in lines[1:] + lines[:1]
                         if len(argv) > 1 or argv == ["signature"])
    assert any(line.startswith("  bootkit " + " ".join(argv)) for line in lines)
    capable = out.split("personalities whose host side can: ", 1)[1].splitlines()[0].split(", ")
    assert "dfu" in capable and "hid" not in capable
    assert "exit status: 0 success, 1 the device failed or a fuse differs, 2 bad input" in out


# -- FLIP (the DFU personality): the signature, no fuses


def test_flip_reads_the_signature_of_the_emulated_bootloader(capsys):
    code, out, err = run(capsys, "signature", "--via", "dfu", "--emulate", "atmega32u4")
    assert (code, out, err) == (0, "1E 95 87: atmega32u4\n", "")
    code, out, _ = run(capsys, "signature", "--via", "dfu", "--dialect", "flip", "--emulate", "atmega32u4", "--json")
    assert code == 0 and json.loads(out) == {"signature": "1e9587", "chips": ["atmega32u4"]}


def test_flip_signature_needs_no_chip():
    """A FLIP bootloader with a product id dfu-programmer's table does not know: the signature
    is how its chip is found, so reading it needs no chip."""
    from bootkit.emulator import Emulator
    from bootkit.transports.virtual import VirtualBus, get_backend

    em = Emulator(get_chip("atmega328p"), "dfu", options={"dialect": "flip", "pid": 0x2F00})
    bus = VirtualBus()
    em.attach(bus)
    try:
        host = registry.personality("dfu").host()
        assert isinstance(host, FuseAccess)
        assert host.signature(Link(backend=get_backend(bus)), dialect="flip") == bytes.fromhex("1e950f")
    finally:
        em.close()


@pytest.mark.parametrize("argv, line", [
    (["fuses", "read", "--via", "dfu", "--emulate", "atmega32u4"],
     "FLIP cannot read fuses: its bootloader has no fuse command; use an ISP programmer (bootkit serve isp) "
     "or avrdude"),
    (["fuses", "write", "lfuse=0x5E", "--via", "dfu", "--emulate", "atmega32u4"],
     "FLIP cannot write fuses: its bootloader has no fuse command; use an ISP programmer (bootkit serve isp) "
     "or avrdude"),
    (["signature", "--via", "dfu", "--emulate", "stm32f411"],
     "DfuSe cannot read a signature: it has no such command (option bytes are memory: bootkit read reads them)"),
    (["signature", "--via", "dfu", "--dialect", "dfu", "--emulate", "stm32f103c8"],
     "DFU 1.1 cannot read a signature: it has no such command"),
])
def test_what_dfu_cannot_do_is_one_line_exit_1(capsys, argv, line):
    code, out, err = run(capsys, *argv)
    assert (code, out, err) == (1, "", f"bootkit: failed: {line}\n")


def test_flip_fuses_write_checks_masks_first(capsys):
    code, _, err = run(capsys, "fuses", "write", "hfuse=0x99", "efuse=0x10", "--via", "dfu",
                       "--emulate", "atmega32u4")
    assert code == 2 and "efuse=0x10 is outside its mask 0x0F on atmega32u4" in err


def test_flip_auto_on_a_signature_two_chips_share(capsys):
    """The AT90USB1286 and AT90USB1287 both answer 1E 97 82 (avrdude.conf): --chip auto lists them."""
    code, out, err = run(capsys, "signature", "--via", "dfu", "--emulate", "at90usb1287")
    assert (code, out) == (0, "1E 97 82: at90usb1286, at90usb1287\n")
    code, out, err = run(capsys, "fuses", "read", "--via", "dfu", "--emulate", "at90usb1287", "--chip", "auto")
    assert (code, out) == (2, "")
    assert err == ("bootkit: error: signature 1E 97 82 is that of several chips: at90usb1286, at90usb1287 "
                   "(give --chip NAME)\n")


# -- end to end: the isp personality (STK500 v2 and USBasp programmers with an emulated AVR on
#    their header) and the serial bootloaders of the cdc personality


@pytest.mark.parametrize("dialect", ["stk500v2", "usbasp"])
@pytest.mark.parametrize("chip, name, value, back", [
    ("attiny85", "lfuse", 0xE2, 0xE2),
    ("attiny85", "hfuse", 0x5F, 0x5F),
    ("attiny85", "efuse", 0x00, 0xFE),  # one bit (SELFPRGEN); the others read as 1
    ("attiny85", "lock", 0xFC, 0xFC),
    ("atmega328p", "efuse", 0xFD, 0xFD),
    ("atmega2560", "hfuse", 0xD8, 0xD8),
])
def test_isp_writes_reads_and_verifies_each_fuse(capsys, tmp_path, dialect, chip, name, value, back):
    flash = str(tmp_path / "flash.bin")
    via = ("--via", "isp", "--dialect", dialect, "--emulate", chip, "--image", flash)
    code, out, err = run(capsys, "fuses", "write", f"{name}=0x{value:02X}", *via)
    assert (code, err) == (0, "")
    assert out == f"{chip}: wrote {name}=0x{value:02X}; read back {name}=0x{back:02X}\n"
    # another command, the same image: the fuses persisted beside it
    code, out, _ = run(capsys, "fuses", "read", *via, "--json")
    assert code == 0 and json.loads(out)["fuses"][name] == back
    code, out, _ = run(capsys, "fuses", "verify", f"{name}=0x{value:02X}", *via)
    assert (code, out) == (0, f"{chip}: {name}=0x{value:02X} verified\n")
    defaults = {f.name: f.default | (~f.mask & 0xFF) for f in get_chip(chip).fuses}
    other = next(n for n in defaults if n != name)
    code, out, err = run(capsys, "fuses", "verify", f"{other}=0x{defaults[other] ^ 0x01:02X}", *via)
    assert (code, out) == (1, "")
    assert err.startswith(f"bootkit: failed: {chip}: {other} reads 0x{defaults[other]:02X}, expected ")


@pytest.mark.parametrize("dialect", ["stk500v2", "usbasp"])
def test_isp_refuses_a_value_outside_its_mask_and_writes_nothing(capsys, tmp_path, dialect):
    flash = str(tmp_path / "flash.bin")
    via = ("--via", "isp", "--dialect", dialect, "--emulate", "attiny85", "--image", flash)
    code, out, err = run(capsys, "fuses", "write", "lfuse=0xE2", "efuse=0x02", *via)
    assert (code, out) == (2, "")
    assert err == ("bootkit: error: efuse=0x02 is outside its mask 0x01 on attiny85 (bits 0x02 do not exist: "
                   "give them all 1 or all 0)\n")
    code, out, _ = run(capsys, "fuses", "read", *via)
    assert (code, out) == (0, "attiny85: lfuse=0x62 hfuse=0xDF efuse=0xFF lock=0xFF\n")  # lfuse not written


@pytest.mark.parametrize("dialect", ["stk500v2", "usbasp"])
def test_a_read_locked_target_is_one_line_exit_1_and_no_file(capsys, tmp_path, dialect):
    """Issue 20's bad input "a locked target", end to end: lock bits 0xFC (mode 3, no read
    nor write) make its flash read as 0xFF; a read says so and writes no file."""
    flash = str(tmp_path / "flash.bin")
    via = ("--via", "isp", "--dialect", dialect, "--emulate", "attiny85", "--image", flash)
    code, _, err = run(capsys, "fuses", "write", "lock=0xFC", *via)
    assert (code, err) == (0, "")
    back = tmp_path / "back.hex"
    code, out, err = run(capsys, "read", str(back), *via)
    assert (code, out) == (1, "")
    assert err.count("\n") == 1 and err.startswith("bootkit: failed: ") and "read-locked" in err, err
    assert not back.exists()


@pytest.mark.parametrize("dialect", ["stk500v2", "usbasp"])
def test_isp_signature(capsys, dialect):
    code, out, _ = run(capsys, "signature", "--via", "isp", "--dialect", dialect, "--emulate", "atmega2560")
    assert (code, out) == (0, "1E 98 01: atmega2560\n")
    code, out, err = run(capsys, "signature", "--via", "isp", "--dialect", dialect, "--emulate", "attiny85",
                         "--chip", "atmega328p")
    assert (code, out) == (1, "")
    assert "1E 93 0B" in err and "atmega328p" in err and err.count("\n") == 1


def test_isp_programmer_on_a_pty_finds_its_target_by_signature(capsys):
    """A programmer reached through its port (as a real one is), no --chip: the target is found
    by its signature, then read and written."""
    from bootkit.emulator import Emulator
    from bootkit.transports.pty import pty_server

    em = Emulator(get_chip("atmega328p"), "isp", options={"dialect": "stk500v2"})
    try:
        with pty_server(em) as srv:
            port = ("--via", "isp", "--port", srv.slave_path)
            code, out, err = run(capsys, "fuses", "read", *port)
            assert (code, out, err) == (0, "atmega328p (signature 1E 95 0F): lfuse=0x62 hfuse=0xD9 efuse=0xFF "
                                           "lock=0xFF\n", "")
            code, out, _ = run(capsys, "fuses", "write", "hfuse=0xDE", "lock=0xFC", *port, "--chip", "auto")
            assert (code, out) == (0, "atmega328p (signature 1E 95 0F): wrote hfuse=0xDE lock=0xFC; read back "
                                      "hfuse=0xDE lock=0xFC\n")
            code, out, _ = run(capsys, "fuses", "write", "efuse=0x0D", *port)  # bits 0x08 of 0xF8
            assert code == 2
            code, out, _ = run(capsys, "fuses", "verify", "lfuse=0x62", "hfuse=0xDE", "efuse=0x07", "lock=0x3C",
                               *port)
            assert (code, out) == (0, "atmega328p (signature 1E 95 0F): lfuse=0x62 hfuse=0xDE efuse=0x07 lock=0x3C "
                                      "verified\n")
    finally:
        em.close()


@pytest.mark.parametrize("argv, out", [
    (["signature", "--via", "cdc", "--emulate", "atmega32u4"], "1E 95 87: atmega32u4\n"),  # AVR109 's'
    (["fuses", "read", "--via", "cdc", "--emulate", "atmega32u4"],
     "atmega32u4: lfuse=0x5E hfuse=0x99 efuse=0xF3 lock=0xFF\n"),  # AVR109 'F', 'N', 'Q', 'r'
    (["fuses", "read", "--via", "cdc", "--dialect", "wiring", "--emulate", "atmega2560", "--chip", "auto"],
     "atmega2560 (signature 1E 98 01): lfuse=0x62 hfuse=0x99 efuse=0xFF lock=0xFF\n"),
    (["signature", "--via", "cdc", "--dialect", "optiboot", "--emulate", "atmega328p"], "1E 95 0F: atmega328p\n"),
])
def test_serial_bootloaders_read_signature_and_fuses(capsys, argv, out):
    code, got, err = run(capsys, *argv)
    assert (code, got, err) == (0, out, "")


@pytest.mark.parametrize("argv", [
    ["fuses", "write", "lfuse=0xFF", "--via", "cdc", "--emulate", "atmega32u4"],
    ["fuses", "read", "--via", "cdc", "--dialect", "optiboot", "--emulate", "atmega328p"],
])
def test_what_a_serial_bootloader_cannot_do_is_one_line_exit_1(capsys, argv):
    code, out, err = run(capsys, *argv)
    assert (code, out) == (1, "")
    assert err.startswith("bootkit: failed: ") and "cannot" in err and err.count("\n") == 1
