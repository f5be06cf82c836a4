"""The host side: ``flash`` and ``read`` through any registered personality.

The personality is ``--via`` (or the product's, or the first registered); its options come
from its dialect's options dataclass (:meth:`Personality.make_options`), whose fields
marked ``cli`` are the personality's own flags (``--transfer-size``, ``--mcu``, ...); the
device is reached through a :class:`~bootkit.contracts.Link` and the one
:class:`~bootkit.contracts.HostSide` signature.  No personality is named here.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from typing import Any

from .errors import EXIT_FAILED, EXIT_OK, BadInput, Failed
from .arguments import add_input_options, parse_int, parse_vidpid
from .images import input_image, target_chip
from .session import Session, talking

FMT = argparse.RawDescriptionHelpFormatter


def _via_in(argv) -> str | None:
    """The ``--via`` value on the command line, if any (to declare only its flags)."""
    for i, arg in enumerate(argv):
        if arg == "--via" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--via="):
            return arg.split("=", 1)[1]
    return None


def _flag_fields(personality) -> dict[str, dataclasses.Field]:
    """flag -> options field, for every field of the personality's dialects marked ``cli``."""
    flags: dict[str, dataclasses.Field] = {}
    for cls in personality.options.values():
        for f in dataclasses.fields(cls):
            flag = f.metadata.get("cli")
            if flag:
                flags.setdefault(flag, f)
    return flags


def _flag_type(f: dataclasses.Field):
    """The argparse type of an options field, from its ``kind`` or its annotation."""
    kind = f.metadata.get("kind") or str(f.type)
    if kind == "list" or "tuple" in kind:
        return lambda text: tuple(x.strip() for x in text.split(",") if x.strip())
    if "bool" in kind:
        return None
    if kind == "number" or "float" in kind:
        return float
    if "int" in kind:
        return parse_int
    return str


def _add_personality_flags(sp, argv) -> None:
    """The flags the personalities' options declare (``cli`` metadata): only ``--via``'s when
    the command line names one (loading one personality), else every one's."""
    from .. import registry

    via = _via_in(argv)
    try:
        chosen = [registry.personality(via)] if via else registry.personalities()
    except ValueError:  # an unknown --via: refused with the registry's names when the command runs
        chosen = []
    group = sp.add_argument_group("personality options")
    seen: dict[str, str] = {}
    for p in chosen:
        for flag, f in _flag_fields(p).items():
            if flag in seen:
                seen[flag] += f", {p.name}"
                continue
            seen[flag] = p.name
            kind = _flag_type(f)
            if kind is None:
                group.add_argument(flag, dest=f"option:{flag}", action="store_true", default=None,
                                   help=f"{p.name}: {f.metadata.get('help', '')}")
            else:
                group.add_argument(flag, dest=f"option:{flag}", type=kind, metavar=f.name.upper(),
                                   help=f"{p.name}: {f.metadata.get('help', '')}")


def add_selection(sp, argv=()) -> None:
    """The options every host command shares: which personality, which device, where it is."""
    sp.add_argument("--via", metavar="PERSONALITY",
                    help="personality to talk to (default: the product's, else the first registered; "
                         "see `bootkit choose`)")
    sp.add_argument("--dialect", help="protocol dialect of the personality; default from the device")
    sp.add_argument("--device", type=parse_vidpid, metavar="VID:PID", help="select the device by USB ids")
    sp.add_argument("--serial", help="select the device by serial number")
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
    sp.add_argument("--port", help="a serial port or MIDI port, for a personality reached through one "
                                   "(default: found by VID:PID)")
    sp.add_argument("--usbip", metavar="HOST[:PORT]",
                    help="talk to a device served by `bootkit serve --transport usbip` (no kernel needed)")
    sp.add_argument("--drive", metavar="PATH",
                    help="a mounted bootloader drive or a device node, for a personality reached through one")
    sp.add_argument("--wait", type=float, metavar="SECONDS",
                    help="wait this long for the device to appear (personalities that can wait)")
    from .parser import add_verbosity

    add_verbosity(sp, suppress=True)
    _add_personality_flags(sp, argv)


def say(args, line: str, *, err: bool = False) -> None:
    """A command's line: on stdout (or stderr), unless -q (only errors; --json output is
    what was asked for and still printed)."""
    if getattr(args, "quiet", False) and not getattr(args, "json", False):
        return
    if err and getattr(args, "quiet", False):
        return
    print(line, file=sys.stderr if err else sys.stdout, flush=err)


def quiet_progress(args) -> None:
    """-q: no progress bar either."""
    if getattr(args, "quiet", False):
        args.progress = False


def add_commands(sub, argv=()) -> None:
    def selection(sp, reading=False):
        add_selection(sp, argv)

    s = sub.add_parser("flash", formatter_class=FMT, help="flash a firmware file into a device",
                       description="Validate FILE against the target, erase what it needs, program, verify by "
                                   "reading back, and start the application.",
                       epilog=_epilog("flash", "\n\nFILE's format comes from its content and extension together "
                                      "(--format overrides);\na binary goes to --address, else to the application "
                                      "start of --chip/--emulate.", argv))
    s.add_argument("file", metavar="FILE")
    selection(s)
    s.add_argument("--address", type=parse_int, help="load address of a binary file (default: the application start "
                   "of --chip/--emulate)")
    add_input_options(s)
    s.add_argument("--no-verify", dest="verify", action="store_false", help="skip the read-back verification")
    s.add_argument("--no-leave", dest="leave", action="store_false", help="stay in the bootloader afterwards")
    s.add_argument("--all", action="store_true",
                   help="flash every device found (--via, --device, --serial filter them) at once, one line each")
    s.add_argument("--json", action="store_true", help="one JSON object (per device with --all) instead of text")
    s.set_defaults(func=cmd_flash, unknown_arguments=unknown_arguments)

    s = sub.add_parser("read", formatter_class=FMT, help="read a device's memory into a file",
                       description="Read the application flash (or EEPROM) back into OUT (format from its "
                                   "extension: .hex, .bin, .uf2, .srec, or a DFU suffix file).",
                       epilog=_epilog("read", argv=argv))
    s.add_argument("output", metavar="OUT")
    selection(s, reading=True)
    s.add_argument("--start", type=parse_int, help="first address to read")
    s.add_argument("--length", type=parse_int, help="number of bytes to read")
    s.add_argument("--json", action="store_true", help="one JSON object instead of text")
    s.set_defaults(func=cmd_read, unknown_arguments=unknown_arguments)


def examples(command: str, via: str | None = None) -> list[str]:
    """Every personality's example lines for ``command`` (``Personality.cli_examples``); with
    ``via``, that personality's only (loading one personality, not every registered one: #22
    item 3: `bootkit flash --via NAME --help`).  An unknown ``via`` falls back to every one's."""
    from .. import registry

    if via:
        try:
            return list(registry.personality(via).cli_examples.get(command, ()))
        except ValueError:
            pass
    return [line for p in registry.personalities() for line in p.cli_examples.get(command, ())]


def first_example(command: str) -> str:
    """The first personality's first example of ``command`` (the top-level help shows it)."""
    return examples(command)[0]


def _epilog(command: str, tail: str = "", argv=()):
    """The examples of ``command``'s help, built when shown: only ``--via``'s when argv names one."""
    from .parser import LazyEpilog

    via = _via_in(argv)
    return LazyEpilog(lambda: "examples:\n" + "".join(f"  {line}\n" for line in examples(command, via))
                      .rstrip("\n") + tail)


def _personality(name: str):
    from .. import registry

    try:
        return registry.personality(name)
    except ValueError as exc:
        raise BadInput(f"--via: {exc}") from None


def _default_personality() -> str:
    from .. import registry

    return registry.personality_names()[0]


def _not_for(flag: str, personality) -> BadInput:
    takes = ", ".join(_flag_fields(personality)) or "none"
    return BadInput(f"{flag} does not apply to --via {personality.name} (its options: {takes})")


def unknown_arguments(args, extra: list[str]) -> str | None:
    """The one line for arguments the parser did not take: a flag of another personality than
    ``--via``'s (only its flags are declared when the command line names it); None: argparse's."""
    from .. import registry

    flag = next((a.split("=", 1)[0] for a in extra if a.startswith("--")), None)
    if flag is None or not getattr(args, "via", None):
        return None
    if any(flag in _flag_fields(p) for p in registry.personalities()):
        return str(_not_for(flag, _personality(args.via)))
    return None


def _options(args, personality, settings: dict[str, Any]):
    """The dialect's options dataclass with the product's settings and the personality's flags,
    and the device settings its flags give an emulated device (``device_only`` fields).
    A flag that belongs to another personality, or to another dialect, is bad input."""
    flags = _flag_fields(personality)
    device: dict[str, Any] = {}
    for key, value in vars(args).items():
        if not key.startswith("option:") or value is None:
            continue
        flag = key.split(":", 1)[1]
        if flag not in flags:
            raise _not_for(flag, personality)
        if flags[flag].metadata.get("device_only"):
            if not args.emulate:
                raise BadInput(f"{flag} configures an emulated device: it needs --emulate")
            device[flags[flag].name] = value
        else:
            settings[flags[flag].name] = value
    dialects = [args.dialect] if args.dialect else list(personality.dialects)
    if args.dialect:
        try:
            personality.check_dialect(args.dialect)
        except ValueError as exc:
            raise BadInput(f"--dialect: {exc}") from None
    problem = None
    for dialect in dialects:  # no --dialect: the first dialect that takes them (the device says which)
        try:
            return personality.make_options(dialect, **settings), device
        except ValueError as exc:
            problem = problem or exc
    flag = next((f for f, field in flags.items() if field.name in settings), None)
    raise BadInput(f"{flag or 'an option'}: {problem}")


def _apply_product(args) -> dict[str, Any]:
    """With --product: the personality, dialect, ids and chip come from the profile; returns
    its host settings (options field name -> value)."""
    if not getattr(args, "product", None):
        args.via = args.via or _default_personality()
        return {}
    from ..product import ProductError, load_product

    try:
        product = load_product(args.product)
    except ProductError as exc:
        raise BadInput(str(exc)) from None
    if args.via and args.via != product.personality:
        raise BadInput(f"--via {args.via} disagrees with {args.product} (personality {product.personality})")
    args.via = product.personality
    args.loaded_product = product
    if args.dialect and args.dialect != product.dialect:
        raise BadInput(f"--dialect {args.dialect} disagrees with {args.product} (dialect {product.dialect})")
    args.dialect = product.dialect
    if args.chip is None:
        args.chip = product.host_chip().name
    if args.device is None and "vid" in product.usb and "pid" in product.usb:
        args.device = (product.usb["vid"], product.usb["pid"])
    if args.serial is None and "serial" in product.usb:
        args.serial = product.usb["serial"]
    return product.host_settings()


def _link(args, session):
    from ..contracts import Link

    vid, pid = args.device or (None, None)
    return Link(backend=session.backend, vid=vid, pid=pid, serial=args.serial, port=session.port,
                path=getattr(args, "drive", None), wait=getattr(args, "wait", None))


def _prepare(args, settings: dict[str, Any]):
    """The personality, its options and the session, every problem bad input before a device is touched."""
    from ..contracts import OptionError

    personality = _personality(args.via)
    options, device = _options(args, personality, settings)
    session = Session(args, personality, device)
    try:
        link = _link(args, session)
        link.check(personality.name, personality.link_fields)
    except OptionError as exc:
        session.close()
        raise BadInput(str(exc)) from None
    return personality, options, session, link


def _found(args) -> list:
    """The devices ``flash`` without --via (or with --all) may use: discover() on --usbip's
    server, else on this machine, filtered by --via, --device and --serial."""
    from ..discovery import DiscoveryError, discover

    errors: list[tuple[str, str]] = []
    try:
        found = discover(usbip=args.usbip, personality=args.via, errors=errors)
    except DiscoveryError as exc:
        raise BadInput(str(exc)) from None
    except ValueError as exc:  # an unknown --via
        raise BadInput(f"--via: {exc}") from None
    for name, line in errors:
        print(f"bootkit: {name}: not searched: {line}", file=sys.stderr)
    if args.device is not None:
        found = [f for f in found if (f.vid, f.pid) == tuple(args.device)]
    if args.serial is not None:
        found = [f for f in found if f.serial == args.serial]
    return found


def _looked_for(args) -> str:
    what = f"{args.via} devices" if args.via else "bootloaders of any personality"
    where = f" on the USB/IP server {args.usbip}" if args.usbip else " (USB, serial ports, drives, printers, MIDI)"
    sel = "".join(f" {x}" for x in ((f"{args.device[0]:04x}:{args.device[1]:04x}" if args.device else ""),
                                    (f"serial {args.serial}" if args.serial else "")) if x)
    return what + (f" matching{sel}" if sel else "") + where


def _use_found(args, f) -> None:
    """Point the command's selection at one found device."""
    args.via = f.personality
    args.dialect = args.dialect or f.dialect
    if f.vid is not None and f.pid is not None:
        args.device = (f.vid, f.pid)
    args.serial = args.serial or f.serial
    if f.link.port and not args.port:
        args.port = f.link.port
    if f.link.path and not args.drive:
        args.drive = f.link.path


def _json(facts: dict[str, Any]) -> str:
    import json  # only when printed: the help and parsing of these commands need none of it

    return json.dumps(facts)


def needs_discovery(args) -> bool:
    """No --via, --product nor --emulate: the device is found (discover()), not assumed."""
    return not args.via and not getattr(args, "product", None) and not args.emulate


def pick_device(args, several: str = "") -> None:
    """The one device discover() finds (--device, --serial, --port, --drive filter them) becomes
    the command's selection, said on stderr; none is exit 1 saying what was looked for; several
    are listed, exit 2."""
    found = _found(args)
    if getattr(args, "port", None):
        found = [f for f in found if f.link.port == args.port]
    if getattr(args, "drive", None):
        found = [f for f in found if f.link.path == args.drive]
    if not found:
        raise Failed(f"no device found: looked for {_looked_for(args)}")
    if len(found) > 1:
        for f in found:
            print(f"  {f.name}: {f.where}", file=sys.stderr)
        raise BadInput(f"{len(found)} devices found (listed above): choose one with --via, --device or --serial"
                       + (f", or {several}" if several else ""))
    _use_found(args, found[0])
    if not getattr(args, "json", False):
        say(args, f"using {found[0].name} at {found[0].where}", err=True)


def _flash_line(path: str, via: str, result, image, memory: str) -> tuple[str, dict[str, Any]]:
    rate = result.bytes / 1024 / result.seconds if result.seconds else 0
    left_out = image.origin.eeprom if image.origin is not None and memory == "flash" else 0
    line = (f"{path}: {result.bytes} bytes via {via}/{result.dialect} in {result.seconds:.2f} s "
            f"({rate:.0f} KiB/s), {'verified' if result.verified else 'not verified'}; " + ", ".join(result.steps)
            + (f"; its {left_out} EEPROM bytes (.eeprom) were not written: flash it again with --memory eeprom"
               if left_out else ""))
    facts = {"file": path, "ok": True, "personality": via, "dialect": result.dialect, "bytes": result.bytes,
             "seconds": round(result.seconds, 4), "verified": bool(result.verified), "steps": list(result.steps),
             "eeprom_not_written": left_out}
    return line, facts


def cmd_flash(args) -> int:
    quiet_progress(args)
    if args.image and not args.emulate:
        raise BadInput("--image needs --emulate CHIP")  # bad input before any device is looked for
    if args.all:
        return _flash_all(args)
    if needs_discovery(args):
        # the file first: a bad one is refused before any device is looked for
        input_image(args, target_chip(args), memory=args.memory)
        pick_device(args, "flash them all with --all")
    settings = _apply_product(args)
    # the file first: a bad one is refused before a personality (or a device) is even loaded
    image = input_image(args, target_chip(args), memory=args.memory)
    personality, options, session, link = _prepare(args, settings)
    with talking(args.file, session):
        result = personality.host().flash(image, link, dialect=args.dialect, chip=session.chip, options=options,
                                          progress=args.progress, memory=args.memory, verify=args.verify,
                                          leave=args.leave, force=args.force)
    line, facts = _flash_line(args.file, args.via, result, image, args.memory)
    say(args, _json(facts) if args.json else line)
    return EXIT_OK


def _flash_all(args) -> int:
    """Every matching device at once (one thread each: the devices work in parallel, the host
    mostly waits on them); one line or JSON object per device as each ends; exit 1 if any failed."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    if args.emulate or getattr(args, "product", None):
        raise BadInput("--all flashes the devices found: it takes neither --emulate nor --product")
    found = _found(args)
    if not found:
        raise Failed(f"no device found: looked for {_looked_for(args)}")
    image = input_image(args, target_chip(args), memory=args.memory)
    # every personality's options and session before any device is touched (bad input: exit 2)
    prepared = {}
    for f in found:
        if f.personality not in prepared:
            personality = _personality(f.personality)
            one = argparse.Namespace(**vars(args))
            one.via = f.personality
            options, _device = _options(one, personality, {})
            prepared[f.personality] = (personality, options, Session(one, personality))
    lock = threading.Lock()
    failed = 0
    t0 = time.perf_counter()

    def run(f) -> None:
        nonlocal failed
        personality, options, session = prepared[f.personality]
        from ..contracts import Link

        link = Link(backend=session.backend, vid=f.link.vid, pid=f.link.pid, serial=f.link.serial,
                    port=f.link.port, path=f.link.path)
        try:
            with talking(args.file):
                result = personality.host().flash(image, link, dialect=args.dialect or f.dialect, chip=session.chip,
                                                  options=options, progress=False, memory=args.memory,
                                                  verify=args.verify, leave=args.leave, force=args.force)
            line, facts = _flash_line(f"{args.file} -> {f.where}", f.name, result, image, args.memory)
            facts.update(file=args.file, device=f.where, serial=f.serial)
        except (BadInput, Failed) as exc:
            line = f"{f.where}: failed: {exc}"
            facts = {"file": args.file, "device": f.where, "serial": f.serial, "personality": f.personality,
                     "dialect": f.dialect, "ok": False, "error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - one device's failure must not hide the others' results
            line = f"{f.where}: failed: {' '.join(str(exc).split()) or type(exc).__name__}"
            facts = {"file": args.file, "device": f.where, "serial": f.serial, "personality": f.personality,
                     "dialect": f.dialect, "ok": False, "error": line.split(": failed: ", 1)[1]}
        with lock:
            if not facts["ok"]:
                failed += 1
            if args.json or not facts["ok"]:  # a failure is an error: printed under -q too
                print(_json(facts) if args.json else line, flush=True)
            else:
                say(args, line)

    try:
        with ThreadPoolExecutor(max_workers=len(found)) as pool:
            list(pool.map(run, found))
    finally:
        for _p, _o, session in prepared.values():
            session.close()
    if not args.json:
        say(args, f"{len(found) - failed} of {len(found)} devices flashed in {time.perf_counter() - t0:.2f} s",
            err=True)
    return EXIT_FAILED if failed else EXIT_OK


def _writable_extensions() -> str:
    from ..formats import FORMATS

    return ", ".join(f".{f}" for f in FORMATS if f not in ("elf", "dfuse"))


def cmd_read(args) -> int:
    from ..formats import format_from_name, save

    quiet_progress(args)
    fmt = format_from_name(args.output)
    if fmt is None or fmt == "elf":
        raise BadInput(f"{args.output}: give a name ending in one of {_writable_extensions()}")
    if args.image and not args.emulate:
        raise BadInput("--image needs --emulate CHIP")  # bad input before any device is looked for
    if needs_discovery(args):
        pick_device(args)
    settings = _apply_product(args)
    personality, options, session, link = _prepare(args, settings)
    with talking(args.output, session):
        image = personality.host().read(link, dialect=args.dialect, chip=session.chip, options=options,
                                        start=args.start, length=args.length, memory=args.memory,
                                        progress=args.progress)
    family = session.chip.uf2_family if session.chip is not None else None
    if fmt == "uf2" and family is None:
        raise BadInput("UF2 output needs a chip with a UF2 family (--chip)")
    save(image, args.output, fmt, family=family)
    if args.json:
        say(args, _json({"file": args.output, "format": fmt, "bytes": image.size,
                              "start": f"0x{image.start:X}", "personality": args.via, "dialect": args.dialect}))
    else:
        say(args, f"{args.output}: {image.size} bytes from 0x{image.start:X}")
    return EXIT_OK
