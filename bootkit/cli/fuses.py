"""``bootkit fuses read|write|verify`` and ``bootkit signature``: a target's fuses and signature
through any registered personality whose host side is a :class:`~bootkit.contracts.FuseAccess`.

The device is selected as for ``flash``/``read`` (``--via``, ``--dialect``, ``--device``,
``--port``, ``--emulate CHIP``, ``--product``, ...: the same Session, Link and options as
:mod:`bootkit.cli.transfer`).  The chip is ``--chip NAME``, the emulated one, or read from the
device: ``--chip auto`` (or no ``--chip`` for a real device) reads the signature and looks it
up in the chip database (:func:`bootkit.memory.chips_by_signature`).  Fuse names are avrdude's
(``lfuse``, ``hfuse``, ``efuse``, ``lock``).  Every value is checked against the chip's fuse
mask before anything is written.  No personality is named here.
"""

from __future__ import annotations

import argparse
import json
import re
from contextlib import contextmanager
from typing import Any

from .arguments import parse_int, parse_vidpid
from .errors import EXIT_OK, BadInput, Failed
from .session import talking

FMT = argparse.RawDescriptionHelpFormatter
AUTO = "auto"


def parse_assignment(text: str) -> tuple[str, int]:
    """``lfuse=0x62`` -> ("lfuse", 0x62): avrdude's fuse names, a byte value."""
    m = re.fullmatch(r"\s*([A-Za-z][A-Za-z0-9_]*)\s*=\s*(\S+)\s*", text)
    if m is None:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE such as lfuse=0x62, got {text!r}")
    name, value = m.group(1).lower(), parse_int(m.group(2))
    if not 0 <= value <= 0xFF:
        raise argparse.ArgumentTypeError(f"{name}={m.group(2)}: a fuse is one byte (0x00-0xFF)")
    return name, value


def _hex(sig: bytes) -> str:
    return " ".join(f"{b:02X}" for b in sig)


def _line(values: dict[str, int]) -> str:
    return " ".join(f"{name}=0x{value:02X}" for name, value in values.items())


# -- the parser

def _selection(sp, argv) -> None:
    """The device selection ``flash``/``read`` take (bootkit.cli.transfer), less what only a
    memory transfer uses (--memory, --progress)."""
    from .transfer import _add_personality_flags

    sp.add_argument("--via", metavar="PERSONALITY",
                    help="personality to talk to (default: the product's, else the first registered)")
    sp.add_argument("--dialect", help="protocol dialect of the personality; default from the device")
    sp.add_argument("--device", type=parse_vidpid, metavar="VID:PID", help="select the device by USB ids")
    sp.add_argument("--serial", help="select the device by serial number")
    sp.add_argument("--chip", metavar="CHIP|auto",
                    help="the target chip; 'auto' (the default for a real device) reads its signature "
                         "and looks it up in the chip database")
    sp.add_argument("--emulate", metavar="CHIP",
                    help="run the device side in this process, emulating CHIP")
    sp.add_argument("--image", metavar="FILE.bin",
                    help="with --emulate: the chip's whole flash, created erased if absent, written back")
    sp.add_argument("--product", metavar="P.toml",
                    help="a product profile: the personality, dialect, ids and chip come from it")
    sp.add_argument("--port", help="a serial port, for a personality reached through one")
    sp.add_argument("--usbip", metavar="HOST[:PORT]",
                    help="talk to a device served by `bootkit serve --transport usbip`")
    sp.add_argument("--drive", metavar="PATH", help="a device node, for a personality reached through one")
    sp.add_argument("--wait", type=float, metavar="SECONDS",
                    help="wait this long for the device to appear (personalities that can wait)")
    _add_personality_flags(sp, argv)


def _fuse_capable() -> str:
    """The registered personalities whose host side is a FuseAccess (loads them: help only)."""
    from .. import registry
    from ..contracts import FuseAccess

    names = []
    for p in registry.personalities():
        try:
            if isinstance(p.host(), FuseAccess):
                names.append(p.name)
        except Exception:  # a plug-in whose host does not load: not listed (flash says why)
            continue
    return ", ".join(names) or "none registered"


def _epilog(command: str, generic: list[str], tail: str, sub: str | None = None):
    from .parser import LazyEpilog
    from .transfer import examples

    def build() -> str:
        # a personality's "fuses" examples hold read, write and verify lines: each subcommand shows its own
        own = [e for e in examples(command) if sub is None or e.startswith(f"bootkit {command} {sub}")]
        lines = own + generic
        return ("examples:\n" + "".join(f"  {line}\n" for line in lines)
                + f"\npersonalities whose host side can: {_fuse_capable()}\n" + tail)

    return LazyEpilog(build)


MASK_NOTE = ("fuse names are avrdude's (lfuse, hfuse, efuse, lock); a value's bits outside the chip's\n"
             "mask (bits the chip lacks) must be all 1 or all 0; verify compares the bits in the mask.\n")
EXITS = "exit status: 0 success, 1 the device failed or a fuse differs, 2 bad input"


READ_EXAMPLES = ["bootkit fuses read --via PERSONALITY --port /dev/ttyACM0",
                 "bootkit fuses read --via PERSONALITY --chip auto --json"]
WRITE_EXAMPLES = ["bootkit fuses write lfuse=0x62 hfuse=0xDF efuse=0xFF --via PERSONALITY --chip attiny85 "
                  "--port /dev/ttyACM0"]
VERIFY_EXAMPLES = ["bootkit fuses verify lfuse=0x62 hfuse=0xDF --via PERSONALITY --emulate attiny85"]


def add_commands(sub, argv=()) -> None:
    from .transfer import unknown_arguments

    s = sub.add_parser("fuses", formatter_class=FMT, help="read, write or verify an AVR's fuses and lock byte",
                       description="Read, write or verify the target's fuses and lock byte through a "
                                   "personality that can (an ISP programmer, a serial bootloader that "
                                   "reads its own fuses).",
                       epilog=_epilog("fuses", READ_EXAMPLES + WRITE_EXAMPLES + VERIFY_EXAMPLES, MASK_NOTE + EXITS))
    actions = s.add_subparsers(dest="fuses_action", metavar="ACTION", required=True)
    r = actions.add_parser("read", formatter_class=FMT, help="print the fuses and lock byte",
                           description="Print every fuse of the chip and its lock byte (NAME=0xVV, or JSON).",
                           epilog=_epilog("fuses", READ_EXAMPLES, EXITS, "read"))
    _selection(r, argv)
    r.add_argument("--json", action="store_true", help="print one JSON object")
    r.set_defaults(func=cmd_fuses_read, unknown_arguments=unknown_arguments)
    w = actions.add_parser("write", formatter_class=FMT, help="write fuses (NAME=VALUE ...)",
                           description="Check every value against the chip's masks, write them, read them back.",
                           epilog=_epilog("fuses", WRITE_EXAMPLES, MASK_NOTE + EXITS, "write"))
    w.add_argument("values", nargs="+", type=parse_assignment, metavar="NAME=VALUE")
    _selection(w, argv)
    w.set_defaults(func=cmd_fuses_write, unknown_arguments=unknown_arguments)
    v = actions.add_parser("verify", formatter_class=FMT, help="compare fuses with NAME=VALUE ... (exit 1 if not)",
                           description="Read the fuses and compare the bits in each fuse's mask with the values "
                                       "given; print what differs and exit 1 when anything does.",
                           epilog=_epilog("fuses", VERIFY_EXAMPLES, MASK_NOTE + EXITS, "verify"))
    v.add_argument("values", nargs="+", type=parse_assignment, metavar="NAME=VALUE")
    _selection(v, argv)
    v.set_defaults(func=cmd_fuses_verify, unknown_arguments=unknown_arguments)

    g = sub.add_parser("signature", formatter_class=FMT, help="read the target's signature bytes",
                       description="Read the target's 3 signature bytes and name the chips of the chip "
                                   "database that have them; with --chip, exit 1 unless it is that chip's.",
                       epilog=_epilog("signature", [
                           "bootkit signature --via PERSONALITY --port /dev/ttyACM0",
                           "bootkit signature --via PERSONALITY --emulate attiny85 --json"], EXITS))
    _selection(g, argv)
    g.add_argument("--json", action="store_true", help="print one JSON object")
    g.set_defaults(func=cmd_signature, unknown_arguments=unknown_arguments)


# -- checking values against the chip

def chip_fuses(chip) -> dict[str, Any]:
    """name -> Fuse (default, mask) of the chip's fuses and its lock byte."""
    out = {f.name: f for f in chip.fuses}
    if chip.lock is not None:
        out["lock"] = chip.lock
    return out


def check_values(chip, values: list[tuple[str, int]]) -> dict[str, int]:
    """The NAME=VALUE pairs as a dict, every one checked against ``chip`` (one line, BadInput):
    a name the chip lacks, a name given twice, a value with bits outside the mask that are
    neither all 1 (as the chip reads unimplemented bits) nor all 0 (avrdude.conf's masked form)."""
    known = chip_fuses(chip)
    out: dict[str, int] = {}
    for name, value in values:
        if name in out:
            raise BadInput(f"{name} is given twice")
        fuse = known.get(name)
        if fuse is None:
            has = ", ".join(known) or "none"
            raise BadInput(f"{name}: {chip.name} has no such fuse (its fuses: {has})")
        outside = ~fuse.mask & 0xFF
        if value & outside not in (0, outside):
            raise BadInput(f"{name}=0x{value:02X} is outside its mask 0x{fuse.mask:02X} on {chip.name} "
                           f"(bits 0x{value & outside:02X} do not exist: give them all 1 or all 0)")
        out[name] = value
    return out


def differences(chip, expected: dict[str, int], got: dict[str, int]) -> list[str]:
    """What differs in the bits of each fuse's mask (avrdude 7 compares fuses under their bitmask)."""
    known = chip_fuses(chip)
    out = []
    for name, value in expected.items():
        mask = known[name].mask
        if name not in got:
            out.append(f"{name} was not read back")
        elif got[name] & mask != value & mask:
            out.append(f"{name} reads 0x{got[name]:02X}, expected 0x{value:02X} (mask 0x{mask:02X})")
    return out


# -- running

class _Target:
    """A FuseAccess host side, its link and options, and the chip (given, emulated or read)."""

    def __init__(self, args, what: str):
        from ..contracts import FuseAccess
        from .images import find_chip
        from .transfer import _apply_product, _personality

        settings = _apply_product(args)
        personality = _personality(args.via)
        host = personality.host()
        if not isinstance(host, FuseAccess):
            where = personality.name + (f"/{args.dialect}" if args.dialect else "")
            raise BadInput(f"{where} cannot {what}")
        self.host = host
        chip_arg = args.chip
        # auto: the named word, or a real device with no chip named (an emulated one is its own chip)
        self.auto = (chip_arg or "").lower() == AUTO or (chip_arg is None and not args.emulate)
        if self.auto:
            args.chip = None
        self.given = find_chip(args.chip) if args.chip else None
        # the chip whose masks are checked before any device (or emulated image) is touched
        self.known = self.given or (None if self.auto else find_chip(args.emulate))
        self.args, self.settings = args, settings
        self.signature: bytes | None = None

    def open(self):
        from .transfer import _prepare

        personality, self.options, self.session, self.link = _prepare(self.args, self.settings)
        return self.session

    def keywords(self, chip=None) -> dict[str, Any]:
        return {"dialect": self.args.dialect, "chip": chip, "options": self.options}

    def read_signature(self) -> bytes:
        sig = bytes(self.host.signature(self.link, **self.keywords(self.given)))
        if len(sig) != 3:
            raise Failed(f"the device answered a signature of {len(sig)} bytes ({sig.hex()}), not 3")
        if sig in (b"\xff\xff\xff", b"\x00\x00\x00"):
            # avrdude's "Yikes! Invalid device signature": nothing answers on the other end
            raise Failed(f"signature {_hex(sig)}: the target does not answer (check wiring, power and clock)")
        self.signature = sig
        return sig

    def chip(self):
        """The chip: --chip, the emulated one, or the one whose signature the device reads."""
        if not self.auto:
            chip = self.session.chip or self.given
            if chip is None:
                raise BadInput("give --chip NAME (or --chip auto)")
            return chip
        from ..memory.chips import chips_by_signature

        sig = self.read_signature()
        matches = chips_by_signature(sig)
        if not matches:
            raise BadInput(f"signature {_hex(sig)}: no chip in the database has it (give --chip NAME, or add "
                           f"the chip with --chip-file FILE.toml)")
        if len(matches) > 1:
            raise BadInput(f"signature {_hex(sig)} is that of several chips: "
                           f"{', '.join(c.name for c in matches)} (give --chip NAME)")
        return matches[0]

    def label(self, chip) -> str:
        return f"{chip.name} (signature {_hex(self.signature)})" if self.auto and self.signature else chip.name


@contextmanager
def _talking(what: str, session):
    """:func:`talking`, plus a ValueError from the host side (a value it refuses: a fuse mask,
    IspInputError) as bad input, and a RuntimeError (an ISP exchange that failed, IspError) as
    a failure; the session is closed either way."""
    from ..classes.common import ImageRejected

    with talking(what, session):
        try:
            yield
        except ImageRejected:
            raise  # talking's own
        except ValueError as exc:
            raise BadInput(str(exc)) from None
        except RuntimeError as exc:
            raise Failed(str(exc)) from None


def cmd_fuses_read(args) -> int:
    t = _Target(args, "read fuses")
    with _talking("fuses", t.open()):
        chip = t.chip()
        values = t.host.read_fuses(t.link, **t.keywords(chip))
    known = chip_fuses(chip)
    ordered = {name: values[name] for name in known if name in values}
    ordered.update({name: v for name, v in values.items() if name not in ordered})
    if args.json:
        out: dict[str, Any] = {"chip": chip.name, "fuses": ordered}
        if t.signature is not None:
            out["signature"] = t.signature.hex()
        print(json.dumps(out))
    else:
        print(f"{t.label(chip)}: {_line(ordered)}")
    return EXIT_OK


def cmd_fuses_write(args) -> int:
    t = _Target(args, "write fuses")
    if t.known is not None:  # a named or emulated chip: its masks are checked before any device is touched
        check_values(t.known, args.values)
    with _talking("fuses", t.open()):
        chip = t.chip()
        values = check_values(chip, args.values)  # before anything is written
        back = t.host.write_fuses(t.link, values, **t.keywords(chip))
    wrong = differences(chip, values, back)
    if wrong:
        raise Failed("written but " + "; ".join(wrong))
    print(f"{t.label(chip)}: wrote {_line(values)}; read back {_line({n: back[n] for n in values})}")
    return EXIT_OK


def cmd_fuses_verify(args) -> int:
    t = _Target(args, "read fuses")
    if t.known is not None:
        check_values(t.known, args.values)
    with _talking("fuses", t.open()):
        chip = t.chip()
        expected = check_values(chip, args.values)
        got = t.host.read_fuses(t.link, **t.keywords(chip))
    wrong = differences(chip, expected, got)
    if wrong:
        raise Failed(f"{chip.name}: " + "; ".join(wrong))
    print(f"{t.label(chip)}: {_line(expected)} verified")
    return EXIT_OK


def cmd_signature(args) -> int:
    from ..memory.chips import chips_by_signature

    if (args.chip or "").lower() == AUTO:
        args.chip = None
    explicit = args.chip is not None
    t = _Target(args, "read a signature")
    t.auto = False  # the signature is what is asked for: read it once, below
    with _talking("signature", t.open()):
        sig = t.read_signature()
    matches = [c.name for c in chips_by_signature(sig)]
    expected = t.given if explicit else None
    if args.json:
        print(json.dumps({"signature": sig.hex(), "chips": matches}))
    else:
        print(f"{_hex(sig)}: " + (", ".join(matches) if matches else
                                  "no chip in the database has it (add one with --chip-file FILE.toml)"))
    if expected is not None and expected.signature != sig:
        raise Failed(f"signature {_hex(sig)} is not {expected.name}'s ({_hex(expected.signature)})")
    return EXIT_OK
