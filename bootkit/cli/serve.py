"""The device side: ``serve`` a personality on a transport until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import signal

from .errors import EXIT_OK, BadInput, Failed
from .images import find_chip
from .transfer import _epilog

FMT = argparse.RawDescriptionHelpFormatter


def _transport_names() -> list[str]:
    from .. import registry

    return registry.transport_names()


def add_commands(sub, argv=()) -> None:
    s = sub.add_parser("serve", formatter_class=FMT, help="run an emulated bootloader on a transport",
                       description="Run the device side of a personality, emulating CHIP, on a transport, until "
                                   "Ctrl-C.  The flash image is written back to --image when it stops.  Board "
                                   "events: SIGUSR1 presses the reset button, SIGUSR2 is the application "
                                   "leaving the magic word and resetting (the entry policy decides what runs).",
                       epilog=_epilog("serve"))
    s.add_argument("personality", metavar="PERSONALITY", nargs="?")
    s.add_argument("--chip")
    s.add_argument("--target", metavar="SPEC",
                   help="the memory behind the personality: sim:CHIP (the default: --chip's simulated flash), "
                        "usb:VID:PID[,SERIAL], usbip://HOST[:PORT][/BUSID], serial:PORT,DIALECT, or another "
                        "registered back-end (see docs/bridge.md)")
    s.add_argument("--product", metavar="P.toml", help="serve the device a product profile describes")
    s.add_argument("--dialect")
    s.add_argument("--image", metavar="FILE.bin")
    s.add_argument("--transport", metavar="TRANSPORT",
                   help="a registered device transport: " + ", ".join(_transport_names()) + " (default: usbip on "
                        "127.0.0.1:3240, which `bootkit flash --usbip` and `usbip attach` reach; pty for a "
                        "serial personality; virtual is the in-process bus, which only this process sees)")
    s.add_argument("--udc", help="functionfs: the UDC to bind (default: the only one)")
    s.add_argument("--listen", metavar="ADDR:PORT",
                   help="usbip: where to listen (default 127.0.0.1:3240; another address prints a warning)")
    s.add_argument("--allow", metavar="ADDR,...", help="usbip: only these client addresses or networks")
    s.add_argument("--serial", help="USB serial number string")
    s.add_argument("--realtime", action="store_true", help="honour the chip's erase and program times")
    s.add_argument("--read-protected", action="store_true",
                   help="refuse reads until a full erase (the dialects that model read-out protection)")
    s.set_defaults(func=cmd_serve)


def _default_transport(args) -> str:
    """Where a served device can be reached from another process: a pty for a personality whose
    emulation is a byte stream (avrdude -P /dev/pts/N), USB/IP for the others (the in-process bus,
    the old default, is reachable by nothing outside this process)."""
    from .. import registry

    name = args.personality
    if name is None and args.product:
        from ..product import ProductError, load_product

        try:
            name = load_product(args.product).personality
        except (ProductError, OSError):
            return "usbip"  # the profile's own error comes a moment later, in its own words
    try:
        return "pty" if registry.personality(name).serial_emulation else "usbip"
    except (ValueError, TypeError):
        return "usbip"  # an unknown name: its error comes a moment later


def _transport(args):
    """The registered transport class and its settings from the command line, every problem one
    line before the emulator (and its --image) is opened."""
    import inspect

    from .. import registry

    try:
        cls = registry.transport(args.transport)
    except ValueError as exc:
        raise BadInput(f"--transport: {exc}") from None
    given = {name: value for name, value in (("udc", args.udc), ("listen", args.listen), ("allow", args.allow))
             if value is not None}
    takes = inspect.signature(cls.__init__).parameters
    for name, value in given.items():
        if name not in takes:
            raise BadInput(f"--{name} does not apply to --transport {args.transport}")
        # a transport checks its settings when it is made, before anything is opened
        # (DeviceTransport.__init__); one at a time, so the line names the flag at fault
        try:
            cls(**{name: value})
        except ValueError as exc:
            raise BadInput(f"--{name}: {exc}") from None
    return cls, given


def _target(args):
    """``--target SPEC``: (the chip name the front describes, the back-end or None for the
    simulated flash).  Bad input is one line (exit 2); a target that cannot be reached is
    one line too (exit 1)."""
    from ..memory.backends import open_target, parse_target
    from ..memory.core import MemoryFault

    try:
        spec = parse_target(args.target)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    if spec.scheme == "sim":
        assert spec.chip is not None
        if args.chip and find_chip(args.chip).name != find_chip(spec.chip).name:
            raise BadInput(f"--target {spec.text} disagrees with --chip {args.chip}")
        return spec.chip, None
    if not args.chip:
        raise BadInput(f"--target {spec.text} needs --chip CHIP: the chip behind it, as the front describes it "
                       f"(its boot region, its UF2 family)")
    if args.image or args.read_protected or args.realtime:
        flag = "--image" if args.image else "--read-protected" if args.read_protected else "--realtime"
        raise BadInput(f"{flag} applies to a simulated flash, not to --target {spec.text}")
    chip = find_chip(args.chip)
    try:
        backend = open_target(spec, chip)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    except (OSError, MemoryFault) as exc:  # the target is not there or does not answer: one line
        raise Failed(f"--target {spec.text}: {exc}") from None
    # the back-end describes the chip as it reaches it (over ISP: all of flash, no boot region)
    described = getattr(backend, "chip", None)
    return described if described is not None else args.chip, backend


def cmd_serve(args) -> int:
    import inspect

    from ..emulator import Emulator
    from ..transports.base import TransportUnavailable

    if args.transport is None:
        args.transport = _default_transport(args)
    cls, settings = _transport(args)
    try:
        if args.product:
            from ..product import ProductError, load_product

            try:
                product = load_product(args.product)
            except ProductError as exc:
                raise BadInput(str(exc)) from None
            for given, wanted, what in ((args.personality, product.personality, "personality"),
                                        (args.chip, product.chip.name, "chip")):
                if given and given.lower() != wanted.lower():
                    raise BadInput(f"{what} {given} disagrees with {args.product} ({what} {wanted})")
            if args.target:
                raise BadInput(f"--target and --product exclude each other (a product names its target: "
                               f"product.target in {args.product})")
            try:
                emulator = product.emulator(image=args.image, realtime=args.realtime)
            except ProductError as exc:
                raise BadInput(str(exc)) from None
            except OSError as exc:  # product.target is not there or does not answer: one line
                raise Failed(f"{args.product}: product.target {product.target}: {exc}") from None
            except Exception as exc:
                from ..memory.core import MemoryFault

                if isinstance(exc, MemoryFault):
                    raise Failed(f"{args.product}: product.target {product.target}: {exc}") from None
                raise
            args.personality, chip = product.personality, product.chip
        else:
            if not args.personality or not (args.chip or args.target):
                raise BadInput("serve needs PERSONALITY and --chip, or --product P.toml")
            backend = None
            described = None
            if args.target:
                described, backend = _target(args)
            chip = described if described is not None and not isinstance(described, str) else \
                find_chip(described or args.chip)
            options = {}
            if args.dialect:
                options["dialect"] = args.dialect
            if args.serial:
                options["serial"] = args.serial
            try:
                emulator = Emulator(chip, args.personality, image=args.image, options=options,
                                    realtime=args.realtime, read_protected=args.read_protected, backend=backend)
            except BaseException:
                if backend is not None and hasattr(backend, "close"):
                    backend.close()
                raise
    except ValueError as exc:
        raise BadInput(str(exc)) from None

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    def ready(where: str) -> None:
        dev = emulator.target.device
        ids = f" as {dev.info.idVendor:04x}:{dev.info.idProduct:04x}" if dev is not None else ""
        print(f"serving {args.personality} ({chip.name}){ids} on {where}. Ctrl-C to stop.", flush=True)

    signal.signal(signal.SIGTERM, on_signal)
    # events from outside the bus, acted on at the transport's next poll (Emulator.press)
    signal.signal(signal.SIGUSR1, lambda signum, frame: emulator.press("reset-button"))
    signal.signal(signal.SIGUSR2, lambda signum, frame: emulator.press("magic"))
    try:
        if "log" in inspect.signature(cls.__init__).parameters:
            settings["log"] = lambda m: print(m, flush=True)
        with cls(**settings) as transport:
            transport.serve(emulator, ready=ready)
    except TransportUnavailable as exc:
        raise BadInput(str(exc)) from None
    except KeyboardInterrupt:
        pass
    finally:
        emulator.close()
        if args.image:
            print(f"{args.image}: flash written back (application {'valid' if emulator.memory.app_valid else 'not valid'})",
                  flush=True)
    return EXIT_OK
