"""The MIDI personality's own commands: ``bootkit midi encode`` (firmware as a MIDI file any
player can play into the device) and ``bootkit midi play``."""

from __future__ import annotations

import argparse
from pathlib import Path

from ...cli.arguments import add_input_options, parse_int
from ...cli.errors import EXIT_BAD_INPUT, EXIT_OK, BadInput
from ...cli.images import find_chip, input_image
from ...cli.session import talking
from ..common import ImageRejected

FMT = argparse.RawDescriptionHelpFormatter


def add_commands(sub) -> None:
    m = sub.add_parser("midi", formatter_class=FMT, help="MIDI files that reprogram a device",
                       description="Encode firmware as a MIDI file any player can play into a device with the "
                                   "MIDI personality, or play one.",
                       epilog="examples:\n  bootkit midi encode fw.hex -o fw.mid --chip atmega32u4\n"
                              "  bootkit midi play fw.mid --port 'bootkit MIDI'")
    msub = m.add_subparsers(dest="midi_command", metavar="ACTION")
    s = msub.add_parser("encode", formatter_class=FMT, help="firmware -> .mid (Standard MIDI File) or .syx",
                        description="Write a Standard MIDI File (or a raw SysEx stream) whose events are paced "
                                    "so each page's erase and program time has passed before the next arrives.",
                        epilog="examples:\n  bootkit midi encode fw.hex -o fw.mid --chip atmega32u4\n"
                               "  bootkit midi encode fw.hex -o fw.syx --chip atmega32u4   # for amidi -s\n"
                               "  bootkit midi encode fw.hex -o fw.mid --chip rp2040 --encoding notes\n"
                               "  bootkit midi encode fw.uf2 -o fw.mid --chip rp2040 --force   # a UF2 of another family")
    s.add_argument("file", metavar="FILE")
    s.add_argument("-o", "--output", required=True, metavar="OUT.mid|OUT.syx")
    s.add_argument("--chip", required=True)
    s.add_argument("--encoding", choices=("sysex", "notes"), default="sysex")
    s.add_argument("--margin", type=float, default=0.25, help="extra time per page, as a fraction (default 0.25)")
    s.add_argument("--address", type=parse_int, help="load address of a binary file (default: the application start)")
    add_input_options(s)
    s.set_defaults(func=cmd_midi_encode)
    s = msub.add_parser("play", formatter_class=FMT, help="play a .mid into a MIDI port, honouring its timing",
                        description="Play FILE into a MIDI output port (mido + python-rtmidi: pip install 'bootkit[midi]').",
                        epilog="example:\n  bootkit midi play fw.mid --port 'bootkit MIDI'")
    s.add_argument("file", metavar="FILE")
    s.add_argument("--port", help="output port name (default: the first one)")
    s.set_defaults(func=cmd_midi_play)
    m.set_defaults(func=lambda args: (m.print_help(), EXIT_BAD_INPUT)[1])


def cmd_midi_encode(args) -> int:
    from . import midifile

    chip = find_chip(args.chip)
    image = input_image(args, chip)
    out = Path(args.output)
    try:
        if out.suffix.lower() == ".syx":
            out.write_bytes(midifile.encode_syx(image, chip, encoding=args.encoding, margin=args.margin,
                                                   force=args.force))
            interval = midifile.syx_interval_ms(image, chip, margin=args.margin)
            print(f"{out}: send with `amidi -p hw:N,0,0 -s {out} -i {interval}`")
        elif out.suffix.lower() in (".mid", ".midi"):
            midifile.encode_midi(image, chip, encoding=args.encoding, margin=args.margin,
                                 force=args.force).save(out)
            print(f"{out}: play with `aplaymidi -p PORT {out}` or `bootkit midi play {out}`")
        else:
            raise BadInput(f"{out}: give a .mid or .syx name")
    except (ImageRejected, ValueError) as exc:
        raise BadInput(f"{args.file}: {exc}") from None
    return EXIT_OK


def cmd_midi_play(args) -> int:
    from . import host

    if not Path(args.file).exists():
        raise BadInput(f"{args.file}: no such file")
    with talking(args.file):
        result = host.play(args.file, args.port)
    print(f"{args.file}: played {result}")
    return EXIT_OK
