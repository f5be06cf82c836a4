"""The device side: ``serve`` a personality on a transport until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import signal
import time

from .errors import EXIT_OK, BadInput, Failed
from .images import find_chip

FMT = argparse.RawDescriptionHelpFormatter


def add_commands(sub) -> None:
    s = sub.add_parser("serve", formatter_class=FMT, help="run an emulated bootloader on a transport",
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


def cmd_serve(args) -> int:
    from ..emulator import Emulator

    if args.transport == "usbip":  # checked before the emulator (and its --image) is opened
        from ..transports import usbip

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
            from ..product import ProductError, load_product

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
            chip = find_chip(args.chip)
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
                from ..transports.functionfs import TransportUnavailable, serve
            except ImportError:
                raise Failed("the functionfs transport is not available in this build") from None
            try:
                serve(emulator, udc=args.udc, log=lambda m: print(m, flush=True))
            except TransportUnavailable as exc:
                raise BadInput(str(exc)) from None
        elif args.transport == "usbip":
            usbip.serve([emulator.target], listen=listen, allow=allow, log=lambda m: print(m, flush=True))
        elif args.transport == "midiport":
            from ..transports import midiport

            try:
                midiport.serve(emulator, log=lambda m: print(m, flush=True))
            except midiport.TransportUnavailable as exc:
                raise BadInput(str(exc)) from None
        elif args.transport == "pty":
            from ..transports.pty import serve_pty

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
