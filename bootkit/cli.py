"""The ``bootkit`` command.

Exit status: 0 success, 1 the device or tool failed, 2 bad input (file, arguments).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from . import __version__
from .classes.common import HostError, ImageRejected

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
# what --format takes on input (formats.FORMATS, without importing the formats package at start-up)
INPUT_FORMATS = ("hex", "bin", "uf2", "dfu", "dfuse", "srec", "elf")


class BadInput(Exception):
    """Exit 2 with this one-line message."""


class Failed(Exception):
    """Exit 1 with this one-line message."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Python would raise KeyboardInterrupt for SIGINT."""


class Interrupted(Exception):
    """Exit 130 (SIGINT) or 143 (SIGTERM), as a shell reports a signal, with one line saying
    what state the interrupted operation left the device in."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def _int(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r} (use 4096 or 0x1000)") from None


def _vidpid(text: str) -> tuple[int, int]:
    try:
        vid, pid = text.split(":")
        return int(vid, 16), int(pid, 16)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected VID:PID in hex, e.g. 03eb:2ff4, got {text!r}") from None


class _Unused:
    """Stands in for the parser of a command that is not being run, and takes
    (and ignores) whatever that command's parser would be given."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: self


class _OneCommand:
    """The subcommands action, building only the parser of ``wanted``: building
    all sixteen argparse parsers costs ~0.2 s of start-up on a slow board (a Pi
    Zero, or the TCG guest of benchmarks/bench_gadget_dfu.py)."""

    def __init__(self, action, wanted: str):
        self.action, self.wanted = action, wanted

    def add_parser(self, name, **kwargs):
        return self.action.add_parser(name, **kwargs) if name == self.wanted else _Unused()


def _command_in(argv: list[str]) -> str | None:
    """The subcommand named on the command line, if any (past the global options)."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--chip-file":
            i += 2
        elif arg.startswith("-"):
            i += 1
        else:
            return arg
    return None


def _parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line parser; with ``command``, only that subcommand is built
    (every one when it is None or unknown, so help and errors list them all)."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(
        prog="bootkit", formatter_class=fmt,
        description="USB device bootloaders: one memory core, six USB class personalities, device and host side.",
        epilog="examples:\n  bootkit demo\n  bootkit chips\n"
               "  bootkit flash fw.hex --via dfu --emulate atmega32u4 --image flash.bin\n"
               "  bootkit convert fw.hex fw.uf2 --family rp2040\n\n"
               "exit status: 0 success, 1 the device or tool failed, 2 bad input",
    )
    p.add_argument("--version", action="version", version=f"bootkit {__version__}")
    p.add_argument("--chip-file", action="append", default=[], metavar="FILE.toml",
                   help="add a chip from a TOML file (repeatable)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    if command in COMMANDS:
        sub = _OneCommand(sub, command)

    s = sub.add_parser("demo", formatter_class=fmt, help="flash a sample image through every personality (emulated)",
                       description="Flash the sample images in examples/firmware through every personality and "
                                   "dialect into emulated devices on the in-process bus, read them back, and print "
                                   "a table.", epilog="example:\n  bootkit demo")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("chips", formatter_class=fmt, help="list the chip database",
                       description="Print every chip bootkit knows, with its memories and bootloader region.",
                       epilog="examples:\n  bootkit chips\n  bootkit --chip-file mychip.toml chips")
    s.set_defaults(func=cmd_chips)

    s = sub.add_parser("convert", formatter_class=fmt, help="convert between firmware formats",
                       description="Convert IN to OUT; formats come from the content (IN) and extension (OUT): "
                                   "hex, bin, uf2, dfu (binary + DFU suffix), dfuse, srec, elf (read only).",
                       epilog="examples:\n  bootkit convert fw.hex fw.uf2 --family rp2040\n"
                              "  bootkit convert fw.bin fw.hex --base 0x08000000\n"
                              "  bootkit convert fw.hex fw.dfu                 # DfuSe when fw.hex has addresses\n"
                              "  bootkit convert fw.img fw.hex --from bin --base 0x08000000")
    s.add_argument("input", metavar="IN")
    s.add_argument("output", metavar="OUT")
    s.add_argument("--base", type=_int, help="load address of a binary input")
    s.add_argument("--family", help="UF2 family: a name (rp2040, nrf52840, ...) or 0x... id")
    s.add_argument("--format", dest="fmt", metavar="FORMAT",
                   help="OUT's format, when the extension does not say (dfu: a plain suffix file even when IN "
                        "has addresses; a .dfu name picks DfuSe for an image with addresses)")
    s.add_argument("--from", dest="from_fmt", choices=INPUT_FORMATS, metavar="FORMAT",
                   help="IN's format (" + ", ".join(INPUT_FORMATS) + "); default: from its content and extension")
    s.set_defaults(func=cmd_convert)

    s = sub.add_parser("list", formatter_class=fmt, help="list devices any personality can talk to",
                       description="List emulated devices on the in-process bus and real USB devices that a "
                                   "bootkit host client can talk to.", epilog="example:\n  bootkit list")
    s.set_defaults(func=cmd_list)

    def selection(sp, reading=False):
        sp.add_argument("--via", metavar="PERSONALITY", help="personality to talk to (default dfu, or the product's)")
        sp.add_argument("--dialect", help="protocol dialect (dfu: dfu, dfuse, flip); default from the device")
        sp.add_argument("--device", type=_vidpid, metavar="VID:PID", help="select the device by USB ids")
        sp.add_argument("--serial", help="select the device by serial number")
        sp.add_argument("--alt", type=int, help="DFU alternate setting")
        sp.add_argument("--transfer-size", type=_int, metavar="N",
                        help="DFU wTransferSize, when the device does not say (dfu-util -t)")
        sp.add_argument("--chip", help="the target chip (validates the image against it)")
        sp.add_argument("--memory", choices=("flash", "eeprom"), default="flash")
        sp.add_argument("--emulate", metavar="CHIP",
                        help="run the device side in this process on the in-process bus, emulating CHIP")
        sp.add_argument("--image", metavar="FILE.bin",
                        help="with --emulate: the chip's whole flash, created erased if absent, written back")
        sp.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bar (default: on a terminal only)")
        sp.add_argument("--product", metavar="P.toml",
                        help="a product profile: the personality, dialect, ids and chip come from it")
        sp.add_argument("--port", help="cdc: the serial port (default: found by VID:PID)")
        sp.add_argument("--usbip", metavar="HOST[:PORT]",
                        help="talk to a device served by `bootkit serve --transport usbip` (no kernel needed)")
        sp.add_argument("--drive", metavar="MOUNTPOINT", help="msc: a mounted bootloader drive (copy a file to it)")
        sp.add_argument("--mcu", help="hid/halfkay: the Teensy MCU, as teensy_loader_cli --mcu names it")
        sp.add_argument("--wait", type=float, metavar="SECONDS",
                        help="hid: wait this long for the device to appear (teensy_loader_cli -w)")

    def input_options(sp) -> None:
        """What every command that takes a firmware FILE shares: its format and --force."""
        sp.add_argument("--format", dest="fmt", choices=INPUT_FORMATS, metavar="FORMAT",
                        help="FILE's format (" + ", ".join(INPUT_FORMATS) + "); default: from its content and "
                             "extension together, refusing a file they disagree on or that is not firmware")
        sp.add_argument("--force", action="store_true",
                        help="flash a UF2 file of another family, or a DFU file whose VID:PID is not the "
                             "target's (never lifts the bootloader-region or reset-vector checks)")

    s = sub.add_parser("flash", formatter_class=fmt, help="flash a firmware file into a device",
                       description="Validate FILE against the target, erase what it needs, program, verify by "
                                   "reading back, and start the application.",
                       epilog="examples:\n  bootkit flash fw.hex --via dfu --emulate atmega32u4 --image flash.bin\n"
                              "  bootkit flash fw.bin --via dfu --dialect dfuse --address 0x08000000\n"
                              "  bootkit flash fw.hex --via dfu --device 03eb:2ff4\n"
                              "  bootkit flash fw.img --format bin --via dfu --chip stm32f411 --device 0483:df11\n"
                              "  bootkit flash fw.uf2 --via msc --emulate rp2040 --image flash.bin --force\n"
                              "  bootkit flash fw.elf --memory eeprom --via cdc --emulate atmega32u4 --image flash.bin\n\n"
                              "FILE's format comes from its content and extension together (--format overrides);\n"
                              "a binary goes to --address, else to the application start of --chip/--emulate.")
    s.add_argument("file", metavar="FILE")
    selection(s)
    s.add_argument("--address", type=_int, help="load address of a binary file (default: the application start "
                   "of --chip/--emulate)")
    input_options(s)
    s.add_argument("--no-verify", dest="verify", action="store_false", help="skip the read-back verification")
    s.add_argument("--no-leave", dest="leave", action="store_false", help="stay in the bootloader afterwards")
    s.set_defaults(func=cmd_flash)

    s = sub.add_parser("read", formatter_class=fmt, help="read a device's memory into a file",
                       description="Read the application flash (or EEPROM) back into OUT (format from its "
                                   "extension: .hex, .bin, .uf2, .srec, .dfu).",
                       epilog="examples:\n  bootkit read back.hex --via dfu --emulate atmega32u4 --image flash.bin\n"
                              "  bootkit read back.bin --via dfu --device 0483:df11 --start 0x08000000 --length 65536")
    s.add_argument("output", metavar="OUT")
    selection(s, reading=True)
    s.add_argument("--start", type=_int, help="first address to read")
    s.add_argument("--length", type=_int, help="number of bytes to read")
    s.set_defaults(func=cmd_read)

    def file_command(sp, device_help: str, emulate_help: str) -> None:
        """What `drop` and `print` share: FILE, its format and --force, the device selection and an
        emulated target."""
        sp.add_argument("file", metavar="FILE")
        sp.add_argument("--device", type=_vidpid, metavar="VID:PID", help=device_help)
        sp.add_argument("--serial", help="select the device by serial number")
        sp.add_argument("--chip", help="the target chip (validates the image against it first)")
        sp.add_argument("--address", type=_int, help="load address of a binary file (default: the application "
                        "start of --chip/--emulate)")
        sp.add_argument("--emulate", metavar="CHIP", help=emulate_help)
        sp.add_argument("--image", metavar="FILE.bin", help="with --emulate: the chip's whole flash")
        sp.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
        input_options(sp)

    s = sub.add_parser("drop", formatter_class=fmt, help="drop a firmware file onto a UF2/mass-storage bootloader",
                       description="Copy FILE onto a mass-storage bootloader drive, converted to UF2 when the drive "
                                   "says so in INFO_UF2.TXT, and wait for the device to leave. On the emulator or a "
                                   "raw USB device it writes through FAT on SCSI commands.",
                       epilog="examples:\n  bootkit drop fw.hex --drive /media/RPI-RP2\n"
                              "  bootkit drop fw.uf2 --emulate rp2040 --image flash.bin\n"
                              "  bootkit drop fw.bin --emulate stm32f411 --accept uf2,bin --as bin\n"
                              "  bootkit drop fw.uf2 --emulate rp2040 --image flash.bin --force   # another family")
    file_command(s, "a USB device, written through SCSI (pyusb)", "drop onto an emulated drive in this process")
    s.add_argument("--drive", metavar="MOUNTPOINT", help="the mounted drive")
    s.add_argument("--as", dest="as_kind", choices=("uf2", "bin", "hex"), help="kind of file to drop (default: UF2 "
                   "when the drive takes it)")
    s.add_argument("--accept", metavar="uf2,bin,hex", help="with --emulate: the file kinds the drive accepts")
    s.set_defaults(func=cmd_drop, via="msc", usbip=None, dialect=None, port=None, product=None)

    s = sub.add_parser("print", formatter_class=fmt, help="print a HEX file to a printer-personality device",
                       description="Send FILE as a print job to a device with the printer personality (any "
                                   "format; non-HEX input is converted to Intel HEX first), then report the "
                                   "device's port status and its one-line job status.",
                       epilog="examples:\n  bootkit print fw.hex --printer /dev/usb/lp0\n"
                              "  bootkit print fw.hex --emulate atmega32u4 --image flash.bin\n"
                              "  bootkit print fw.bin --device 03eb:206b --address 0\n"
                              "  bootkit print fw.img --format hex --emulate atmega32u4 --image flash.bin")
    file_command(s, "select the device by USB ids (pyusb)", "print into an emulated device in this process")
    s.add_argument("--printer", metavar="/dev/usb/lpN", help="the kernel's printer device (usblp)")
    s.set_defaults(func=cmd_print, via="printer", usbip=None, dialect=None, port=None)

    s = sub.add_parser("choose", formatter_class=fmt, help="rank the personalities for your product's needs",
                       description="Rank personality/dialect pairs for the operating systems your customers use "
                                   "and what the update must do, with a comparison table. The facts come from "
                                   "what each personality declares in bootkit/classes/*/facts.py.",
                       epilog="examples:\n  bootkit choose --os ipados --needs no-host-software\n"
                              "  bootkit choose --needs eeprom --chip atmega32u4 --write product.toml\n\n"
                              "oses: windows, macos, linux, ipados, android\n"
                              "needs: eeprom, readback, no-host-software, no-driver, unattended, fast, "
                              "small-bootloader, feedback")
    s.add_argument("--os", default="", metavar="A,B", help="operating systems the update must work from")
    s.add_argument("--needs", default="", metavar="X,Y", help="what the update must do")
    s.add_argument("--chip", help="the product's chip (rules out what cannot run on it)")
    s.add_argument("--write", metavar="P.toml", help="write a starter product profile for the top choice")
    s.set_defaults(func=cmd_choose)

    pr = sub.add_parser("product", formatter_class=fmt, help="product profiles (TOML)",
                        description="Check a product profile: chip, personality, USB ids, protection, settings.",
                        epilog="example:\n  bootkit product check examples/products/lufa-dfu-atmega32u4.toml")
    psub = pr.add_subparsers(dest="product_command", metavar="ACTION")
    s = psub.add_parser("check", formatter_class=fmt, help="validate a profile and summarise it",
                        epilog="example:\n  bootkit product check examples/products/teensy2-halfkay.toml")
    s.add_argument("path", metavar="P.toml")
    s.set_defaults(func=cmd_product_check)
    pr.set_defaults(func=lambda args: (pr.print_help(), EXIT_BAD_INPUT)[1])

    m = sub.add_parser("midi", formatter_class=fmt, help="MIDI files that reprogram a device",
                       description="Encode firmware as a MIDI file any player can play into a device with the "
                                   "MIDI personality, or play one.",
                       epilog="examples:\n  bootkit midi encode fw.hex -o fw.mid --chip atmega32u4\n"
                              "  bootkit midi play fw.mid --port 'bootkit MIDI'")
    msub = m.add_subparsers(dest="midi_command", metavar="ACTION")
    s = msub.add_parser("encode", formatter_class=fmt, help="firmware -> .mid (Standard MIDI File) or .syx",
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
    s.add_argument("--address", type=_int, help="load address of a binary file (default: the application start)")
    input_options(s)
    s.set_defaults(func=cmd_midi_encode)
    s = msub.add_parser("play", formatter_class=fmt, help="play a .mid into a MIDI port, honouring its timing",
                        description="Play FILE into a MIDI output port (mido + python-rtmidi).",
                        epilog="example:\n  bootkit midi play fw.mid --port 'bootkit MIDI'")
    s.add_argument("file", metavar="FILE")
    s.add_argument("--port", help="output port name (default: the first one)")
    s.set_defaults(func=cmd_midi_play)
    m.set_defaults(func=lambda args: (m.print_help(), EXIT_BAD_INPUT)[1])

    s = sub.add_parser("serve", formatter_class=fmt, help="run an emulated bootloader on a transport",
                       description="Run the device side of a personality, emulating CHIP, on a transport, until "
                                   "Ctrl-C.  The flash image is written back to --image when it stops.",
                       epilog="examples:\n  bootkit serve dfu --chip stm32f411 --image flash.bin "
                              "--transport functionfs\n  bootkit serve --product examples/products/rp2040-uf2.toml\n  bootkit serve dfu --chip atmega32u4 --dialect flip "
                              "--transport usbip\n  bootkit serve cdc --chip atmega32u4 --transport pty")
    s.add_argument("personality", metavar="PERSONALITY", nargs="?")
    s.add_argument("--chip")
    s.add_argument("--product", metavar="P.toml", help="serve the device a product profile describes")
    s.add_argument("--dialect")
    s.add_argument("--image", metavar="FILE.bin")
    s.add_argument("--transport", default="virtual", choices=("virtual", "functionfs", "usbip", "pty", "midiport"))
    s.add_argument("--udc", help="functionfs: the UDC to bind (default: the only one)")
    s.add_argument("--listen", metavar="ADDR:PORT",
                   help="usbip: where to listen (default 127.0.0.1:3240; another address prints a warning)")
    s.add_argument("--allow", metavar="ADDR,...", help="usbip: only these client addresses or networks")
    s.add_argument("--serial", help="USB serial number string")
    s.add_argument("--realtime", action="store_true", help="honour the chip's erase and program times")
    s.add_argument("--read-protected", action="store_true",
                   help="refuse reads until a full erase (DfuSe read protection, FLIP secure mode)")
    s.set_defaults(func=cmd_serve)
    return p


# --------------------------------------------------------------------------
def _read_input(path: str) -> bytes:
    """An input file's bytes; a missing or unreadable one is one line (BadInput)."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise BadInput(f"{path}: no such file") from None
    except OSError as exc:
        raise BadInput(f"{path}: cannot read: {exc.strerror or exc}") from None


def _load_image(path: str, *, base=None, family=None, fmt=None, memory: str = "flash"):
    """A firmware file as an Image: format from --format, else content and extension
    together (formats.identify refuses a MIDI file, text, an unknown or contradicting
    one); every problem is one line (BadInput)."""
    from .formats import FormatError, identify, load

    data = _read_input(path)
    try:
        fmt = identify(data, path, fmt)
        return load(data, fmt=fmt, base=base, family=family, source=path, memory=memory)
    except FormatError as exc:
        raise BadInput(str(exc)) from None
    except ValueError as exc:  # e.g. an unknown --family name
        raise BadInput(f"{path}: {exc}") from None


def _target_chip(args):
    """The chip an image is checked against before any device is touched: --chip (or the
    product's), else the emulated one; None for a real device named by neither."""
    return _chip(args.chip) if getattr(args, "chip", None) else _chip(getattr(args, "emulate", None))


def _input_image(args, chip, *, memory: str = "flash"):
    """Load FILE for a host command and check it against ``chip`` before any device is
    touched.

    - A binary (or the payload of a plain DFU-suffix file) carries no address: it goes
      to --address, else to the application start of the known chip (what `flash --help`
      promises); with no chip known it is refused, since a wrong guess writes the
      application at the wrong place (dfu-util needs -s ADDRESS for a DfuSe target too).
    - A UF2 file is read with the chip's family selected, so a multi-family file keeps
      only the chip's blocks (as a UF2 bootloader does: uf2conv.py / tinyuf2 skip blocks
      of another familyID); a file with none of them, or blocks without a familyID, is
      refused by common.preflight, naming both families, unless --force.
    """
    from .classes.common import app_first_address, preflight
    from .formats import FormatError, identify

    path, force = args.file, getattr(args, "force", False)
    base = getattr(args, "address", None)
    fmt = getattr(args, "fmt", None)
    data = _read_input(path)
    try:
        fmt = identify(data, path, fmt)
    except FormatError as exc:
        raise BadInput(str(exc)) from None
    if fmt in ("bin", "dfu") and not data.startswith(b"DfuSe") and base is None:
        if memory != "flash":
            base = 0  # EEPROM images are offsets from the EEPROM's first byte
        elif chip is not None:
            base = app_first_address(chip)
        else:
            raise BadInput(f"{path}: a {'binary' if fmt == 'bin' else 'DFU suffix'} file has no load address: "
                           "give --address, or --chip so it goes to the application start")
    family = None
    if fmt == "uf2" and chip is not None and chip.uf2_family is not None:
        if chip.uf2_family in _load_image(path, fmt=fmt).origin.uf2_families:
            family = chip.uf2_family
    image = _load_image(path, base=base, family=family, fmt=fmt, memory=memory)
    if not image:
        raise BadInput(f"{path}: no {'EEPROM ' if memory == 'eeprom' else ''}data"
                       + (" (an ELF file's EEPROM is its .eeprom section)" if fmt == "elf" and memory == "eeprom"
                          else ""))
    try:
        preflight(image, chip, force=force, memory=memory)
    except ImageRejected as exc:
        raise BadInput(f"{path}: {exc}") from None
    return image


def _chip(name):
    from .memory import get_chip

    if name is None:
        return None
    try:
        return get_chip(name)
    except KeyError:
        pass
    from .emulator import resolve_chip  # only then: it imports the USB device model

    try:
        return resolve_chip(name)
    except KeyError as exc:
        raise BadInput(exc.args[0]) from None


def cmd_chips(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from .memory import CHIPS

    t = Table(title="bootkit chips")
    for col in ("chip", "family", "flash", "page", "EEPROM", "bootloader region", "signature", "UF2 family", "USB"):
        t.add_column(col)
    for c in CHIPS:
        size = f"{c.flash_size // 1024}K@0x{c.flash_start:X}"
        page = (f"{c.page_size}" if len(c.flash_sectors) == 1 and c.flash_sectors[0][1] == c.page_size
                else ",".join(f"{n}x{s // 1024}K" for n, s in c.flash_sectors))
        boot = f"0x{c.boot_start:X}-0x{c.boot_end - 1:X}" if c.boot_size else "none (ROM)"
        t.add_row(c.name, c.family, size, page, str(c.eeprom_size or "-"), boot,
                  c.signature.hex() or "-", f"0x{c.uf2_family:08x}" if c.uf2_family else "-",
                  "yes" if c.usb else "no")
    # piped output keeps full rows instead of wrapping to 80 columns
    Console(width=None if sys.stdout.isatty() else 160).print(t)
    return EXIT_OK


def cmd_convert(args) -> int:
    from .formats import FORMATS, FormatError, format_from_name, save

    try:
        image = _load_image(args.input, base=args.base, family=args.family, fmt=args.from_fmt)
    except BadInput as exc:  # convert's --format names OUT's format; IN's is --from
        raise BadInput(str(exc).replace("--format", "--from")) from None
    if not image:
        raise BadInput(f"{args.input}: no data to convert")
    fmt = args.fmt or format_from_name(args.output)
    if fmt is None or fmt not in FORMATS or fmt == "elf":
        raise BadInput(f"{args.output}: cannot tell the output format from the name; give --format "
                       f"({', '.join(f for f in FORMATS if f != 'elf')})")
    if fmt == "uf2" and args.family is None:
        raise BadInput("UF2 output needs --family (e.g. rp2040, nrf52840, or 0xe48bff56)")
    addressed = image.start != 0 or len(image.segments) > 1
    note = ""
    if fmt == "dfu" and addressed and args.fmt is None:
        # a plain DFU 1.1 suffix file has no addresses (DFU 1.1 appendix B); DfuSe's elements
        # carry one each (UM0391), which is what dfu-util -D needs for an STM32 target
        fmt, note = "dfuse", "; written as DfuSe to keep its addresses (--format dfu: a plain suffix file)"
    elif fmt in ("dfu", "bin") and addressed:
        note = (f"; the address is dropped: a {'plain DFU suffix' if fmt == 'dfu' else 'binary'} file holds "
                f"bytes from 0x{image.start:X} on, gaps filled with 0xFF (flash it with --address 0x{image.start:X})")
    try:
        save(image, args.output, fmt, family=args.family)
    except (FormatError, ValueError) as exc:
        raise BadInput(str(exc)) from None
    print(f"{args.input} -> {args.output}: {image.size} bytes in {len(image.segments)} segment(s), "
          f"0x{image.start:X}-0x{image.end - 1:X}" + note)
    return EXIT_OK


def _real_backend():
    from .api import _libusb_backend

    return _libusb_backend()


def cmd_list(args) -> int:
    from .classes.dfu import host as dfu_host
    from .emulator import available_personalities
    from .transports.virtual import get_backend

    rows = []
    backends = [("emulated", get_backend())]
    real = _real_backend()
    if real is None:
        print("real USB: not available on this machine (libusb not found); emulated devices only")
    else:
        backends.append(("usb", real))
    for where, backend in backends:
        try:
            for item in dfu_host.find_interfaces(backend):
                rows.append((where, "dfu", item.describe()))
            if "hid" in available_personalities():
                from .classes.hid import host as hid_host

                for line in hid_host.list_devices(backend):
                    rows.append((where, "hid", line))
        except Exception as exc:  # a bus we cannot read is reported, not fatal
            print(f"{where}: cannot enumerate ({exc})")
    if not rows:
        print("no devices found")
    for where, personality, text in rows:
        print(f"{where:9s} {personality:8s} {text}")
    return EXIT_OK


class _Session:
    """Where a host command talks to: an in-process emulator, a USB/IP server, or real USB."""

    def __init__(self, args):
        self.emulator = None
        self.port = getattr(args, "port", None)
        self._pty = None
        if args.emulate and args.usbip:
            raise BadInput("--emulate and --usbip exclude each other")
        if args.usbip:
            from .transports import usbip_client

            try:
                self.backend = usbip_client.get_backend(*usbip_client.parse_address(args.usbip))
            except ValueError as exc:
                raise BadInput(f"--usbip: {exc}") from None
            self.chip = _chip(args.chip)
        elif args.emulate:
            from .emulator import Emulator
            from .transports.virtual import VirtualBus, get_backend

            product = getattr(args, "loaded_product", None)
            # `read` only reads the image: a shared lock, so readers do not exclude each other (#17)
            readonly = args.command == "read"
            if readonly and args.image and not Path(args.image).exists():
                raise BadInput(f"--image {args.image}: no such file (read reads an existing image; flash or "
                               "serve creates one)")
            try:
                if product is not None:
                    if args.emulate.lower() != product.chip.name.lower():
                        raise BadInput(f"--emulate {args.emulate} disagrees with the product's chip "
                                       f"{product.chip.name}")
                    self.emulator = product.emulator(image=args.image, readonly=readonly)
                else:
                    options = {"dialect": args.dialect} if args.dialect else {}
                    if args.via == "msc":
                        # the emulated drive leaves soon after the last block (a real one waits
                        # about a second for the host's last FAT writes)
                        options["leave_delay"] = 0.2
                        if getattr(args, "accept", None):
                            options["accept"] = args.accept
                    self.emulator = Emulator(_chip(args.emulate), args.via, image=args.image, options=options,
                                             readonly=readonly)
            except ValueError as exc:
                raise BadInput(str(exc)) from None
            if args.via == "cdc":
                # a serial personality: the emulated device sits on a pseudo-terminal
                from .transports.pty import pty_server

                self._pty = pty_server(self.emulator, log=None)
                self.port = self._pty.__enter__().slave_path
                self.backend = None
            else:
                self.bus = VirtualBus()
                self.emulator.attach(self.bus)
                self.backend = get_backend(self.bus)
            self.chip = self.emulator.chip if product is not None or not args.chip else _chip(args.chip)
        else:
            if args.image:
                raise BadInput("--image needs --emulate CHIP")
            self.backend = _real_backend()
            if self.backend is None and not self.port and not getattr(args, "drive", None):
                raise Failed("no USB access: libusb was not found (install libusb-1.0-0), or use --emulate CHIP")
            self.chip = _chip(args.chip)

    def close(self):
        if self._pty is not None:
            self._pty.__exit__(None, None, None)
        if self.emulator is not None:
            self.emulator.close()


@contextmanager
def _talking(what: str, session: "_Session | None" = None):
    """Run a host client: a refused image is bad input (exit 2), a failing device or
    exchange exit 1; the session (emulator, pty) is closed either way."""
    try:
        yield
    except ImageRejected as exc:
        raise BadInput(f"{what}: {exc}") from None
    except HostError as exc:
        raise Failed(str(exc)) from None
    except KeyboardInterrupt as exc:
        from .progress import interrupted_state

        state = interrupted_state()
        emulator = session.emulator if session is not None else None
        if session is not None:
            session, closing = None, session
            closing.close()  # the emulated device's image is written back before we say so
        if emulator is not None and emulator.image:
            valid = "valid" if emulator.memory.app_valid else "not valid"
            state += f"; {emulator.image} saved with the application {valid}"
        raise Interrupted(state, 143 if isinstance(exc, Terminated) else 130) from None
    finally:
        if session is not None:
            session.close()


def _host_module(via: str):
    import importlib

    from .emulator import personality_module

    try:  # unknown or not implemented; only this one: importing all six costs a second on a slow board
        personality_module(via)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    return importlib.import_module(f"bootkit.classes.{via}.host")


def _personality_options(args, session) -> dict:
    """Options only some personalities take, passed only when given (or always, for their own)."""
    options = {}
    if args.via == "dfu":
        options["alt"] = args.alt
        if args.transfer_size:
            options["transfer_size"] = args.transfer_size
    elif args.alt is not None or getattr(args, "transfer_size", None):
        raise BadInput("--alt and --transfer-size are DFU options")
    for name in ("mcu", "wait"):
        value = getattr(args, name, None)
        if value is not None:
            if args.via != "hid":
                raise BadInput(f"--{name} is a HID option")
            options[name] = value
    if getattr(args, "drive", None):
        if args.via != "msc":
            raise BadInput("--drive is a mass-storage option")
        options["drive"] = args.drive
    if session.port is not None:
        if args.via not in ("cdc", "midi"):
            raise BadInput("--port is a CDC (serial port) or MIDI (port name) option")
        options["port"] = session.port
    return options


def _apply_product(args) -> dict:
    """With --product: the personality, dialect, ids and chip come from the profile."""
    if not getattr(args, "product", None):
        args.via = args.via or "dfu"
        return {}
    from .product import ProductError, load_product

    try:
        product = load_product(args.product)
    except ProductError as exc:
        raise BadInput(str(exc)) from None
    if args.via and args.via != product.personality:
        raise BadInput(f"--via {args.via} disagrees with {args.product} (personality {product.personality})")
    args.via = product.personality
    args.loaded_product = product
    options = product.host_options()
    if args.dialect and args.dialect != options.get("dialect"):
        raise BadInput(f"--dialect {args.dialect} disagrees with {args.product} (dialect {options.get('dialect')})")
    args.dialect = options.pop("dialect", None)
    if args.chip is None:
        args.chip = options["chip"].name
    options.pop("chip", None)
    if args.device is None and "vid" in options and "pid" in options:
        args.device = (options.pop("vid"), options.pop("pid"))
    if args.serial is None and "serial" in options:
        args.serial = options.pop("serial")
    return {k: v for k, v in options.items() if k not in ("vid", "pid", "serial")}


def cmd_flash(args) -> int:
    extra = _apply_product(args)
    # the file first: a bad one is refused before a personality (or a device) is even loaded
    image = _input_image(args, _target_chip(args), memory=args.memory)
    host = _host_module(args.via)
    session = _Session(args)
    with _talking(args.file, session):
        vid, pid = args.device or (None, None)
        result = host.flash(image, session.backend, vid=vid, pid=pid, serial=args.serial, dialect=args.dialect,
                            chip=session.chip, memory=args.memory, verify=args.verify,
                            leave=args.leave, progress=args.progress, force=args.force,
                            **{**extra, **_personality_options(args, session)})
    rate = result.bytes / 1024 / result.seconds if result.seconds else 0
    left_out = image.origin.eeprom if image.origin is not None and args.memory == "flash" else 0
    print(f"{args.file}: {result.bytes} bytes via {args.via}/{result.dialect} in {result.seconds:.2f} s "
          f"({rate:.0f} KiB/s), {'verified' if result.verified else 'not verified'}; " + ", ".join(result.steps)
          + (f"; its {left_out} EEPROM bytes (.eeprom) were not written: flash it again with --memory eeprom"
             if left_out else ""))
    return EXIT_OK


def cmd_read(args) -> int:
    from .formats import format_from_name, save

    extra = _apply_product(args)
    host = _host_module(args.via)
    fmt = format_from_name(args.output)
    if fmt is None or fmt == "elf":
        raise BadInput(f"{args.output}: give a .hex, .bin, .uf2, .srec or .dfu name")
    session = _Session(args)
    with _talking(args.output, session):
        vid, pid = args.device or (None, None)
        image = host.read(session.backend, vid=vid, pid=pid, serial=args.serial, dialect=args.dialect,
                          chip=session.chip, memory=args.memory, start=args.start,
                          length=args.length, progress=args.progress,
                          **{**extra, **_personality_options(args, session)})
    family = session.chip.uf2_family if session.chip is not None else None
    if fmt == "uf2" and family is None:
        raise BadInput("UF2 output needs a chip with a UF2 family (--chip)")
    save(image, args.output, fmt, family=family)
    print(f"{args.output}: {image.size} bytes from 0x{image.start:X}")
    return EXIT_OK


def cmd_drop(args) -> int:
    from .classes.msc import host

    if args.drive and (args.emulate or args.device):
        raise BadInput("--drive excludes --emulate and --device")
    if args.accept and not args.emulate:
        raise BadInput("--accept configures an emulated drive: it needs --emulate")
    image = _input_image(args, _target_chip(args))
    args.usbip = None
    session = None if args.drive else _Session(args)
    vid, pid = args.device or (None, None)
    with _talking(args.file, session):
        result = host.flash(image, session.backend if session else None, drive=args.drive, vid=vid, pid=pid,
                            serial=args.serial, chip=session.chip if session else _chip(args.chip),
                            fmt=args.as_kind, progress=args.progress, force=args.force)
    print(f"{args.file}: dropped {result.bytes} bytes as {result.dialect}; " + ", ".join(result.steps))
    return EXIT_OK


def cmd_print(args) -> int:
    from .classes.printer import host

    if args.printer and (args.emulate or args.device):
        raise BadInput("--printer excludes --emulate and --device")
    if not Path(args.file).exists():
        raise BadInput(f"{args.file}: no such file")
    # the whole file is parsed first: a corrupt or empty one is refused before anything is sent
    try:
        base, target = args.address, _chip(args.chip or args.emulate)
        if base is None and target is not None:  # a binary goes to the application start
            from .classes.common import app_first_address

            base = app_first_address(target)
        job = host.prepare(args.file, fmt=getattr(args, "fmt", None), base=base,
                           family=target.uf2_family if target is not None else None)
    except ImageRejected as exc:
        raise BadInput(str(exc)) from None
    session = None if args.printer else _Session(args)
    backend = session.backend if session else None
    chip = session.chip if session else _chip(args.chip)
    vid, pid = args.device or (None, None)
    with _talking(args.file, session):
        result = host.print_job(job, backend, printer=args.printer, vid=vid, pid=pid, serial=args.serial,
                                chip=chip, force=getattr(args, "force", False), progress=args.progress)
    print(f"{args.file}: printed {result.bytes} bytes, {'verified' if result.verified else 'not verified'}; "
          + ", ".join(result.steps))
    return EXIT_OK


def cmd_choose(args) -> int:
    from .chooser import cli_choose

    return cli_choose(args.os, args.needs, args.chip, args.write)


def cmd_product_check(args) -> int:
    from .product import cli_check

    return cli_check(args.path)


def cmd_midi_encode(args) -> int:
    from .classes.midi import midifile

    chip = _chip(args.chip)
    image = _input_image(args, chip)
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
    from .classes.midi import host

    if not Path(args.file).exists():
        raise BadInput(f"{args.file}: no such file")
    with _talking(args.file):
        result = host.play(args.file, args.port)
    print(f"{args.file}: played {result}")
    return EXIT_OK


def cmd_serve(args) -> int:
    from .emulator import Emulator

    if args.transport == "usbip":  # checked before the emulator (and its --image) is opened
        from .transports import usbip

        try:
            listen = usbip.parse_listen(args.listen) if args.listen else ("127.0.0.1", 3240)
        except ValueError as exc:
            raise BadInput(f"--listen: {exc}") from None
        try:
            allow = usbip.parse_allow(args.allow) if args.allow is not None else None
        except ValueError as exc:
            raise BadInput(f"--allow: {exc}") from None
    try:
        if args.product:
            from .product import ProductError, load_product

            try:
                product = load_product(args.product)
            except ProductError as exc:
                raise BadInput(str(exc)) from None
            for given, wanted, what in ((args.personality, product.personality, "personality"),
                                        (args.chip, product.chip.name, "chip")):
                if given and given.lower() != wanted.lower():
                    raise BadInput(f"{what} {given} disagrees with {args.product} ({what} {wanted})")
            emulator = product.emulator(image=args.image, realtime=args.realtime)
            args.personality, chip = product.personality, product.chip
        else:
            if not args.personality or not args.chip:
                raise BadInput("serve needs PERSONALITY and --chip, or --product P.toml")
            chip = _chip(args.chip)
            options = {}
            if args.dialect:
                options["dialect"] = args.dialect
            if args.serial:
                options["serial"] = args.serial
            emulator = Emulator(chip, args.personality, image=args.image, options=options,
                                realtime=args.realtime, read_protected=args.read_protected)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    stop = {"now": False}

    def on_signal(signum, frame):
        stop["now"] = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        if args.transport == "functionfs":
            try:
                from .transports.functionfs import TransportUnavailable, serve
            except ImportError:
                raise Failed("the functionfs transport is not available in this build") from None
            try:
                serve(emulator, udc=args.udc, log=lambda m: print(m, flush=True))
            except TransportUnavailable as exc:
                raise BadInput(str(exc)) from None
        elif args.transport == "usbip":
            usbip.serve([emulator.target], listen=listen, allow=allow, log=lambda m: print(m, flush=True))
        elif args.transport == "midiport":
            from .transports import midiport

            try:
                midiport.serve(emulator, log=lambda m: print(m, flush=True))
            except midiport.TransportUnavailable as exc:
                raise BadInput(str(exc)) from None
        elif args.transport == "pty":
            from .transports.pty import serve_pty

            serve_pty(emulator, log=lambda m: print(m, flush=True))
        else:
            emulator.attach()
            dev = emulator.target.device
            print(f"serving {args.personality} ({chip.name}) as {dev.info.idVendor:04x}:{dev.info.idProduct:04x} "
                  "on the in-process bus: only this process sees it. Ctrl-C to stop.", flush=True)
            while True:
                time.sleep(0.2)
                emulator.target.poll()
    except KeyboardInterrupt:
        pass
    finally:
        emulator.close()
        if args.image:
            print(f"{args.image}: flash written back (application {'valid' if emulator.memory.app_valid else 'not valid'})",
                  flush=True)
    return EXIT_OK


def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo()


COMMANDS = ("demo", "chips", "convert", "list", "flash", "read", "drop", "print", "choose", "product", "midi",
            "serve")


def _terminated(signum, frame):
    raise Terminated()


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = _parser(_command_in(argv))
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return EXIT_BAD_INPUT
    from .progress import reset_phases

    reset_phases()
    previous = None
    if args.command != "serve":  # serve has its own SIGTERM handling: stop and write the image back
        try:
            previous = signal.signal(signal.SIGTERM, _terminated)
        except ValueError:  # main() called from another thread (a script's worker): no handler
            pass
    try:
        return _run(args)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _run(args) -> int:
    try:
        from .memory import ChipFileError, load_chip_file

        for f in args.chip_file:
            try:
                load_chip_file(f)
            except ChipFileError as exc:
                raise BadInput(str(exc)) from None
        return args.func(args)
    except BadInput as exc:
        print(f"bootkit: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Failed as exc:
        print(f"bootkit: failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except Interrupted as exc:
        print(f"bootkit: interrupted: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt as exc:
        print("bootkit: interrupted", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    except BrokenPipeError:  # output piped into head & co.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except OSError as exc:  # includes pyusb's USBError: a device or connection that failed
        print(f"bootkit: failed: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
