"""The public API behind ``import bootkit``: open a target, flash, read, erase, serve.

``bootkit/__init__.py`` re-exports these names lazily (PEP 562), so ``import
bootkit`` costs nothing; this module itself imports only the small shared
pieces (``classes.common``) and pulls in a personality, pyusb or the formats
when a call needs them.

A script::

    import bootkit

    with bootkit.open_target("dfu", emulate="atmega32u4", image="flash.bin") as target:
        result = target.flash("fw.hex", progress=True)
    print(result.verified, result.steps)

Errors are the framework's own: :class:`ImageRejected` (a ``ValueError``: bad
input, refused before anything was erased), :class:`HostError` (the device or
the exchange failed), ``KeyError`` for an unknown chip, ``OSError`` (pyusb's
``USBError`` included) for a connection that failed.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Callable

from .classes.common import FlashResult, HostError, ImageRejected

__all__ = [
    "open_target", "Target", "flash", "read", "erase", "load_image", "get_chip", "serve",
    "FlashResult", "HostError", "ImageRejected", "PERSONALITIES", "TRANSPORTS",
]

#: The built-in personalities (``emulator.PERSONALITIES``; no registry yet: issue 18 item 3).
PERSONALITIES = ("dfu", "hid", "cdc", "printer", "msc", "midi")
#: What :func:`serve` can put an emulated device on.
TRANSPORTS = ("virtual", "usbip", "pty", "functionfs", "midiport")
#: Personalities whose host side talks to a serial port (cdc) or a MIDI port (midi) when given ``port``.
_PORT_PERSONALITIES = ("cdc", "midi")


def get_chip(name: str):
    """The chip called ``name`` (case-insensitive, aliases too): the database, chips added
    from a chip file (``bootkit.memory.load_chip_file``), or one a personality defines
    (HalfKay's Teensy parts).  Raises ``KeyError`` naming the known chips.

    >>> bootkit.get_chip("atmega32u4").flash_size
    32768
    """
    from .memory import get_chip as database_chip

    try:
        return database_chip(name)
    except KeyError:
        pass
    from .emulator import resolve_chip  # only then: it imports the USB device model

    return resolve_chip(name)


def _chip_or_none(chip):
    if chip is None or not isinstance(chip, str):
        return chip
    return get_chip(chip)


def load_image(path: str | os.PathLike, *, chip=None, address: int | None = None, fmt: str | None = None,
               memory: str = "flash", force: bool = False):
    """Read a firmware file into an :class:`~bootkit.formats.Image` and check it against
    ``chip`` (a name or a Chip) before any device is touched.

    The format comes from the content and the extension together (``fmt`` overrides:
    hex, bin, uf2, dfu, dfuse, srec, elf).  A binary goes to ``address``, else to the
    application start of ``chip``; a UF2 file keeps ``chip``'s family.  ``memory="eeprom"``
    reads an ELF's .eeprom section (a binary then starts at 0).  Raises
    :class:`ImageRejected` for a missing, unreadable, corrupt, empty file or one that
    does not suit ``chip`` (``force`` lifts only the UF2-family and DFU-suffix checks).

    >>> image = bootkit.load_image("examples/firmware/sample-atmega32u4.hex", chip="atmega32u4")
    >>> hex(image.start), image.size
    ('0x0', 9520)
    """
    from .classes.common import app_first_address, preflight
    from .formats import FormatError, identify, load

    chip = _chip_or_none(chip)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ImageRejected(f"{path}: no such file") from None
    except OSError as exc:
        raise ImageRejected(f"{path}: cannot read: {exc.strerror or exc}") from None
    source = os.fspath(path)
    try:
        fmt = identify(data, source, fmt)
        base = address
        if fmt in ("bin", "dfu") and not data.startswith(b"DfuSe") and base is None:
            if memory != "flash":
                base = 0  # EEPROM images are offsets from the EEPROM's first byte
            elif chip is not None:
                base = app_first_address(chip)
            else:
                raise ImageRejected(f"{path}: a binary file has no load address: give address= or chip=")
        family = None
        if fmt == "uf2" and chip is not None and chip.uf2_family is not None:
            if chip.uf2_family in load(data, fmt=fmt, source=source).origin.uf2_families:
                family = chip.uf2_family  # a multi-family file: keep this chip's blocks
        image = load(data, fmt=fmt, base=base, family=family, source=source, memory=memory)
    except FormatError as exc:
        raise ImageRejected(str(exc)) from exc
    except ValueError as exc:  # ImageRejected itself, or e.g. an unknown UF2 family
        if isinstance(exc, ImageRejected):
            raise
        raise ImageRejected(f"{path}: {exc}") from exc
    if not image:
        raise ImageRejected(f"{path}: no {'EEPROM ' if memory == 'eeprom' else ''}data")
    try:
        preflight(image, chip, force=force, memory=memory)
    except ImageRejected as exc:
        raise ImageRejected(f"{path}: {exc}") from None
    return image


def _libusb_backend():
    """pyusb's libusb 1.0 backend, or None when libusb is not installed."""
    import sys

    import usb.backend.libusb1

    if sys.platform.startswith("linux"):
        # pyusb finds libusb through ctypes.util.find_library, which runs `ldconfig -p` in a
        # subprocess (~0.1 s on a slow board); dlopen finds the soname itself
        backend = usb.backend.libusb1.get_backend(find_library=lambda name: "libusb-1.0.so.0")
        if backend is not None:
            return backend
    return usb.backend.libusb1.get_backend()


def _vid_pid(device) -> tuple[int | None, int | None]:
    if device is None:
        return None, None
    if isinstance(device, str):
        try:
            vid, pid = device.split(":")
            return int(vid, 16), int(pid, 16)
        except ValueError:
            raise ValueError(f"device: expected 'VID:PID' in hex, e.g. '03eb:2ff4', got {device!r}") from None
    vid, pid = device
    return int(vid), int(pid)


class Target:
    """One device a host client talks to: an emulated chip in this process, a device
    behind a USB/IP server, a real USB device, or a serial port.  Made by
    :func:`open_target`; close it (or use ``with``) so an emulated chip's image file is
    written back and its lock released.

    Attributes: ``personality``, ``dialect`` (None: the device's own), ``chip`` (None
    when unknown), ``backend`` (the pyusb backend, None for a serial port), ``port``,
    ``vid``/``pid``/``serial`` (the selection), ``emulator`` (the
    :class:`~bootkit.emulator.Emulator` when emulated, else None), ``options``
    (personality options passed to every call, e.g. ``alt`` or ``transfer_size`` for
    dfu, ``mcu`` for hid).
    """

    def __init__(self, personality: str, *, backend=None, port: str | None = None, chip=None,
                 dialect: str | None = None, vid: int | None = None, pid: int | None = None,
                 serial: str | None = None, emulator=None, options: dict[str, Any] | None = None,
                 on_close: Callable[[], None] | None = None, where: str | None = None):
        self.where = where
        self.personality, self.backend, self.port, self.chip = personality, backend, port, chip
        self.dialect, self.vid, self.pid, self.serial = dialect, vid, pid, serial
        self.emulator, self.options = emulator, dict(options or {})
        self._on_close = on_close
        self.closed = False

    def __repr__(self) -> str:
        where = self.where or (f"emulated {self.chip.name}" if self.emulator is not None else
                 f"port {self.port}" if self.port else
                 f"{self.vid:04x}:{self.pid:04x}" if self.vid is not None else "first found")
        return f"<bootkit.Target {self.personality} {where}>"

    def _host(self):
        import importlib

        from .emulator import personality_module

        personality_module(self.personality)  # ValueError naming the known ones
        return importlib.import_module(f"bootkit.classes.{self.personality}.host")

    def _selection(self, options: dict) -> dict:
        if self.closed:
            raise ValueError("the target is closed")
        selection = {"vid": self.vid, "pid": self.pid, "serial": self.serial, "dialect": self.dialect,
                     "chip": self.chip}
        if self.port is not None:
            selection["port"] = self.port
        return {**selection, **self.options, **options}

    def flash(self, image, *, verify: bool = True, leave: bool = True, progress: bool | None = False,
              force: bool = False, memory: str = "flash", address: int | None = None,
              **options) -> FlashResult:
        """Validate, erase, program, verify and (``leave``) start the application, through
        this personality's own host client; returns its :class:`FlashResult`.

        ``image``: a path (read with :func:`load_image` against this target's chip,
        ``address`` placing a binary) or an Image.  ``result.verified`` is true only when
        the host read the image back or had the device check it (CRC), never assumed;
        ``result.steps`` are the host's own words.  ``progress=True`` draws a bar on
        stderr (None: only on a terminal).  ``options`` go to the host client as they are
        (e.g. ``transfer_size=1024`` for dfu).  Raises :class:`ImageRejected` (nothing was
        erased) or :class:`HostError`.

        >>> with bootkit.open_target("dfu", emulate="atmega32u4") as t:
        ...     t.flash("examples/firmware/sample-atmega32u4.hex").verified
        True
        >>> with bootkit.open_target("hid", emulate="atmega32u4") as t:   # HalfKay: no read command
        ...     t.flash("examples/firmware/sample-atmega32u4.hex").verified
        False
        """
        if isinstance(image, (str, os.PathLike)):
            image = load_image(image, chip=self.chip, address=address, memory=memory, force=force)
        return self._host().flash(image, self.backend, memory=memory, verify=verify, leave=leave,
                                  progress=progress, force=force, **self._selection(options))

    def read(self, *, start: int | None = None, length: int | None = None, memory: str = "flash",
             progress: bool | None = False, **options):
        """Read the application flash (or ``memory="eeprom"``) back as an Image, through this
        personality's host client (from ``start`` for ``length`` bytes; default: the
        application region).  Raises :class:`ImageRejected` or :class:`HostError` (for
        one, a personality with no read command: printer).

        >>> with bootkit.open_target("dfu", emulate="atmega32u4", image="flash.bin") as t:
        ...     t.read(length=16).size
        16
        """
        return self._host().read(self.backend, memory=memory, start=start, length=length, progress=progress,
                                 **self._selection(options))

    def erase(self) -> None:
        """Erase the whole application flash (never the bootloader region); the application
        is then not valid.  Emulated targets only for now, through the memory core as a
        bootloader's chip-erase command does; a real device raises NotImplementedError
        (no personality's host client offers an erase on its own yet: issue 18 item 2).

        >>> with bootkit.open_target("dfu", emulate="atmega32u4", image="flash.bin") as t:
        ...     t.erase()
        """
        if self.closed:
            raise ValueError("the target is closed")
        if self.emulator is None:
            raise NotImplementedError(f"erase of a real {self.personality} device: no host client offers it yet; "
                                      "flash() erases what the image needs")
        self.emulator.memory.erase_all()
        self.emulator.memory.persist()

    def close(self) -> None:
        """Stop the emulated device (its image file is written back) or the serial bridge."""
        if self.closed:
            return
        self.closed = True
        if self._on_close is not None:
            self._on_close()

    def __enter__(self) -> "Target":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_target(personality: str = "dfu", *, emulate: str | None = None, image: str | os.PathLike | None = None,
                usbip: str | None = None, device: str | tuple[int, int] | None = None, serial: str | None = None,
                port: str | None = None, chip=None, dialect: str | None = None,
                options: dict[str, Any] | None = None, readonly: bool = False) -> Target:
    """Open a device to talk to with ``personality`` (dfu, hid, cdc, printer, msc, midi):

    - ``emulate="CHIP"``: the device side in this process (an Emulator on a private
      in-process bus, or on a pseudo-terminal for cdc), its flash kept in ``image`` (the
      chip's whole flash, created erased when absent, written back on close; ``readonly``
      opens it with a shared lock and never writes it);
    - ``usbip="HOST[:PORT]"``: a device served by ``bootkit serve --transport usbip`` (or
      :func:`serve`), through bootkit's userspace USB/IP client, no kernel needed;
    - ``port="/dev/ttyACM0"``: a serial port (cdc) or a MIDI port name (midi);
    - otherwise real USB through libusb, selected by ``device="VID:PID"`` (or a tuple)
      and ``serial``; the first matching device when neither is given.

    ``chip`` (name or Chip) is what images are checked against (default: the emulated
    chip); ``dialect`` forces one (default: what the device says); ``options`` are the
    device side's options when emulating (``{"dialect": ...}`` is filled in from
    ``dialect``) and the host client's otherwise.  Raises ValueError (ImageRejected is
    one) for an unknown personality, chip or bad argument, OSError when libusb is missing.

    >>> target = bootkit.open_target("dfu", emulate="stm32f411", image="flash.bin")
    >>> target.chip.name
    'stm32f411'
    >>> target.close()
    """
    from .emulator import personality_module

    personality_module(personality)  # ValueError for an unknown one, before anything opens
    if sum(x is not None for x in (emulate, usbip)) > 1:
        raise ValueError("emulate= and usbip= exclude each other")
    if image is not None and emulate is None:
        raise ValueError("image= is the emulated chip's flash: it needs emulate=CHIP")
    vid, pid = _vid_pid(device)
    options = dict(options or {})
    chip = _chip_or_none(chip)
    common = {"chip": chip, "dialect": dialect, "vid": vid, "pid": pid, "serial": serial}
    if emulate is not None:
        from .emulator import Emulator

        device_options = {**options, **({"dialect": dialect} if dialect else {})}
        if personality == "msc":
            # the emulated drive leaves soon after the last block (a real one waits about a second)
            device_options.setdefault("leave_delay", 0.2)
        emulator = Emulator(get_chip(emulate) if isinstance(emulate, str) else emulate, personality,
                            image=image, options=device_options, readonly=readonly)
        common["chip"] = chip or emulator.chip  # the personality may size the bootloader its own way
        try:
            if personality == "cdc":  # a serial personality: the emulated device sits on a pty
                from .transports.pty import pty_server

                bridge = pty_server(emulator, log=None)
                slave = bridge.__enter__().slave_path

                def close():
                    try:
                        bridge.__exit__(None, None, None)
                    finally:
                        emulator.close()

                return Target(personality, port=slave, emulator=emulator, on_close=close, **common)
            from .transports.virtual import VirtualBus, get_backend

            bus = VirtualBus()
            emulator.attach(bus)
            return Target(personality, backend=get_backend(bus), emulator=emulator, on_close=emulator.close,
                          **common)
        except BaseException:
            emulator.close()
            raise
    if usbip is not None:
        from .transports import usbip_client

        backend = usbip_client.get_backend(*usbip_client.parse_address(usbip))
        return Target(personality, backend=backend, port=port, options=options, where=f"usbip {usbip}", **common)
    if port is not None and personality in _PORT_PERSONALITIES:
        return Target(personality, port=port, options=options, **common)
    backend = _libusb_backend()
    if backend is None:
        raise OSError("no USB access: libusb was not found (install libusb-1.0-0), or use emulate=CHIP")
    return Target(personality, backend=backend, port=port, options=options, **common)


def flash(image, target: Target, **kwargs) -> FlashResult:
    """``target.flash(image, **kwargs)``: see :meth:`Target.flash`.

    >>> with bootkit.open_target("dfu", emulate="atmega32u4", image="flash.bin") as t:
    ...     bootkit.flash("fw.hex", t, progress=True).verified
    True
    """
    return target.flash(image, **kwargs)


def read(target: Target, **kwargs):
    """``target.read(**kwargs)``: see :meth:`Target.read`.

    >>> with bootkit.open_target("dfu", emulate="atmega32u4", image="flash.bin") as t:
    ...     bootkit.read(t, start=0, length=256).size
    256
    """
    return target.read(**kwargs)


def erase(target: Target) -> None:
    """``target.erase()``: see :meth:`Target.erase`.

    >>> with bootkit.open_target("dfu", emulate="atmega32u4", image="flash.bin") as t:
    ...     bootkit.erase(t)
    """
    target.erase()


def serve(emulator, transport: str = "usbip", *, stop: threading.Event | None = None,
          listen: tuple[str, int] = ("127.0.0.1", 3240), allow=None, udc: str | None = None,
          log: Callable[[str], None] | None = print, ready: Callable[[Any], None] | None = None) -> None:
    """Serve an :class:`~bootkit.emulator.Emulator` on a transport until ``stop`` is set or
    Ctrl-C (KeyboardInterrupt); then return.  The caller owns the emulator: close it
    afterwards so its image is written back.

    - ``"usbip"``: a USB/IP server on ``listen`` (port 0 picks one), clients limited to
      ``allow``; ``ready((host, port))`` once listening.  Reach it with
      ``open_target(..., usbip="127.0.0.1:PORT")`` or ``usbip attach``.
    - ``"pty"``: the byte stream of a cdc device on a pseudo-terminal; ``ready(path)``.
    - ``"virtual"``: the in-process default bus (only this process sees it); ``ready(target)``.
    - ``"functionfs"``: a Linux USB gadget on ``udc`` (root, configfs); ends on SIGINT/SIGTERM
      only (``stop`` is not supported); raises ``TransportUnavailable`` (a RuntimeError).
    - ``"midiport"``: a midi device on ALSA sequencer ports; raises ``TransportUnavailable``.

    >>> with bootkit.Emulator("atmega32u4", "dfu", image="flash.bin") as em:
    ...     bootkit.serve(em, "usbip", listen=("127.0.0.1", 3240))   # until Ctrl-C
    """
    if transport not in TRANSPORTS:
        raise ValueError(f"unknown transport {transport!r} (choose from {', '.join(TRANSPORTS)})")
    stop = stop or threading.Event()

    def wait(poll=None):
        try:
            while not stop.wait(0.2):
                if poll is not None:
                    poll()
        except KeyboardInterrupt:
            pass

    if transport == "usbip":
        from .transports.usbip import UsbipServer

        with UsbipServer([emulator.target], listen, allow=allow, log=log) as server:
            if ready is not None:
                ready((server.listen[0], server.port))
            wait()
    elif transport == "pty":
        from .transports.pty import pty_server

        with pty_server(emulator, log=log) as server:
            if ready is not None:
                ready(server.slave_path)
            wait()
    elif transport == "virtual":
        target = emulator.attach()
        try:
            if ready is not None:
                ready(target)
            wait(target.poll)  # timers (DFU's delayed leave, the entry policy's timeout)
        finally:
            from .transports.virtual import DEFAULT_BUS

            DEFAULT_BUS.detach(target)
            emulator._bus = None
    elif transport == "functionfs":
        from .transports.functionfs import serve as serve_gadget

        serve_gadget(emulator, udc=udc, log=log or (lambda line: None))
    else:
        from .transports import midiport

        if ready is not None:
            ready(emulator.target)
        midiport.serve(emulator, log=log or (lambda line: None), stop=stop)

