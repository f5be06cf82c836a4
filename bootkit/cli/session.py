"""Where a host command talks: an emulator in this process, a USB/IP server, or real USB;
and how a host client's failures become one line and an exit status."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any
from pathlib import Path

from ..classes.common import HostError, ImageRejected
from .errors import BadInput, Failed, Interrupted, Terminated
from .images import find_chip


def real_backend():
    from ..api import _libusb_backend

    return _libusb_backend()


class Session:
    """Where a host command talks to: an in-process emulator, a USB/IP server, or real USB.

    ``personality`` (a :class:`~bootkit.contracts.Personality`) says how an emulated device
    is reached (``serial_emulation``: on a pseudo-terminal) and what options an emulated
    device gets by default (``emulated_options``); ``device_options`` are a command's own
    (a drop's ``--accept``)."""

    def __init__(self, args, personality, device_options: dict | None = None):
        self.emulator: Any = None
        self.backend: Any = None
        self.port = getattr(args, "port", None)
        self._pty = None
        self._traced = False
        if getattr(args, "verbose", 0) and getattr(args, "quiet", False):
            raise BadInput("-v and -q exclude each other")
        if args.emulate and args.usbip:
            raise BadInput("--emulate and --usbip exclude each other")
        if args.usbip:
            from ..transports import usbip_client

            try:
                self.backend = usbip_client.get_backend(*usbip_client.parse_address(args.usbip))
            except ValueError as exc:
                raise BadInput(f"--usbip: {exc}") from None
            self.chip = find_chip(args.chip)
        elif args.emulate:
            from ..emulator import Emulator
            from ..transports.virtual import VirtualBus, get_backend

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
                    options = {**personality.emulated_options, **(device_options or {})}
                    if args.dialect:
                        options["dialect"] = args.dialect
                    self.emulator = Emulator(find_chip(args.emulate), personality.name, image=args.image,
                                             options=options, readonly=readonly)
            except ValueError as exc:
                raise BadInput(str(exc)) from None
            if personality.serial_emulation:
                # a serial personality: the emulated device sits on a pseudo-terminal
                from ..transports.pty import pty_server

                self._pty = pty_server(self.emulator, log=None)
                self.port = self._pty.__enter__().slave_path
                self.backend = None
            else:
                self.bus = VirtualBus()
                self.emulator.attach(self.bus)
                self.backend = get_backend(self.bus)
            self.chip = self.emulator.chip if product is not None or not args.chip else find_chip(args.chip)
        else:
            if args.image:
                raise BadInput("--image needs --emulate CHIP")
            self.backend = real_backend()
            if self.backend is None and not self.port and not getattr(args, "drive", None):
                raise Failed("no USB access: libusb was not found (install libusb-1.0-0), or use --emulate CHIP")
            self.chip = find_chip(args.chip)
        if getattr(args, "verbose", 0):
            from ..trace import trace_backend, trace_serial  # only with -v

            trace_backend(self.backend)
            trace_serial()
            self._traced = True

    def close(self):
        if self._traced:
            from ..trace import untrace

            self._traced = False
            untrace()
        if self._pty is not None:
            self._pty.__exit__(None, None, None)
        if self.emulator is not None:
            self.emulator.close()


@contextmanager
def talking(what: str, session: "Session | None" = None):
    """Run a host client: a refused image is bad input (exit 2), a failing device or
    exchange exit 1; the session (emulator, pty) is closed either way."""
    try:
        yield
    except ImageRejected as exc:
        raise BadInput(f"{what}: {exc}") from None
    except HostError as exc:
        raise Failed(str(exc)) from None
    except KeyboardInterrupt as exc:
        from ..progress import interrupted_state

        state = interrupted_state()
        emulator = session.emulator if session is not None else None
        if session is not None:
            closing: Session = session
            session = None
            closing.close()  # the emulated device's image is written back before we say so
        if emulator is not None and emulator.image:
            valid = "valid" if emulator.memory.app_valid else "not valid"
            state += f"; {emulator.image} saved with the application {valid}"
        raise Interrupted(state, 143 if isinstance(exc, Terminated) else 130) from None
    finally:
        if session is not None:
            session.close()
