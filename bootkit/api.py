"""The public API behind ``import bootkit``: open a target, flash, read, erase, serve.

``bootkit/__init__.py`` re-exports these names lazily (PEP 562), so ``import
bootkit`` costs nothing; this module itself imports only the small shared
pieces (``classes.common``) and pulls in a personality, pyusb or the formats
when a call needs them.

A script::

    import bootkit

    with bootkit.open_target(name, emulate="atmega32u4", image="flash.bin") as target:
        result = target.flash("fw.hex", progress=True)
    print(result.verified, result.steps)

where ``name`` is a registered personality (``bootkit.PERSONALITIES``); docs/api.md
has the recipes.

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
from .contracts import Link

__all__ = [
    "open_target", "Target", "flash", "read", "erase", "load_image", "get_chip", "serve",
    "FlashResult", "HostError", "ImageRejected", "PERSONALITIES", "TRANSPORTS",
]



def __getattr__(name: str) -> Any:
    """``PERSONALITIES`` and ``TRANSPORTS``: the registered names (bootkit.registry), in
    display order, looked up when first asked for (a plug-in installed later is seen by a
    new process)."""
    from . import registry

    if name == "PERSONALITIES":
        return tuple(registry.personality_names())
    if name == "TRANSPORTS":
        return tuple(registry.transport_names())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    from .registry import resolve_chip  # only then: it loads the personalities

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
    one of ``bootkit.formats.FORMATS``).  A binary goes to ``address``, else to the
    application start of ``chip``; a UF2 file keeps ``chip``'s family.  ``memory="eeprom"``
    reads an ELF's .eeprom section (a binary then starts at 0).  Raises
    :class:`ImageRejected` for a missing, unreadable, corrupt, empty file or one that
    does not suit ``chip`` (``force`` lifts only the UF2-family and DFU-suffix checks).

    >>> image = bootkit.load_image("examples/firmware/sample-atmega32u4.hex", chip="atmega32u4")
    >>> hex(image.start), image.size
    ('0x0', 9520)
    """
    chip = _chip_or_none(chip)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ImageRejected(f"{path}: no such file") from None
    except OSError as exc:
        raise ImageRejected(f"{path}: cannot read: {exc.strerror or exc}") from None
    from .classes.common import firmware_image

    return firmware_image(data, os.fspath(path), chip=chip, address=address, fmt=fmt, memory=memory, force=force,
                          give="give address= or chip=")


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
    """One device a host side talks to: an emulated chip in this process, a device
    behind a USB/IP server, a real USB device, or a serial port.  Made by
    :func:`open_target`; close it (or use ``with``) so an emulated chip's image file is
    written back and its lock released.

    Attributes: ``personality`` (its name), ``definition`` (the registered
    :class:`~bootkit.contracts.Personality`), ``dialect`` (None: the device's own),
    ``chip`` (None when unknown), ``link`` (a :class:`~bootkit.contracts.Link`: the pyusb
    backend, ``vid``/``pid``/``serial``, ``port``, ``path``, ``wait``), ``emulator`` (the
    :class:`~bootkit.emulator.Emulator` when emulated, else None), ``options`` (the
    dialect's settings passed to every call by name, checked against the dialect's
    options dataclass: an unknown one is a ValueError naming what the dialect takes).
    """

    def __init__(self, personality: str, *, backend: Any = None, port: str | None = None,
                 path: str | None = None, wait: float | None = None, chip: Any = None,
                 dialect: str | None = None, vid: int | None = None, pid: int | None = None,
                 serial: str | None = None, emulator: Any = None, options: dict[str, Any] | None = None,
                 on_close: Callable[[], None] | None = None, where: str | None = None):
        from .registry import personality as registered

        self.definition = registered(personality)  # ValueError naming the known ones
        self.personality, self.chip, self.dialect = personality, chip, dialect
        self.link = Link(backend=backend, vid=vid, pid=pid, serial=serial, port=port, path=path, wait=wait)
        self.emulator, self.options, self.where = emulator, dict(options or {}), where
        self._on_close = on_close
        self.closed = False

    @property
    def backend(self) -> Any:
        return self.link.backend

    @property
    def port(self) -> str | None:
        return self.link.port

    def __repr__(self) -> str:
        link = self.link
        where = self.where or (f"emulated {self.chip.name}" if self.emulator is not None else
                               f"port {link.port}" if link.port else f"path {link.path}" if link.path else
                               f"{link.vid:04x}:{link.pid:04x}" if link.vid is not None and link.pid is not None
                               else "first found")
        return f"<bootkit.Target {self.personality} {where}>"

    def _settings(self, options: dict[str, Any]) -> Any:
        """The dialect's options dataclass from the target's options and this call's."""
        if self.closed:
            raise ValueError("the target is closed")
        p = self.definition
        dialect = self.dialect or (self.emulator.dialect if self.emulator is not None else None)
        if dialect is None:  # the device says which it speaks: the chip's usual one's settings
            dialect = p.default_dialect(self.chip) if self.chip is not None else p.dialects[0]
        return p.make_options(dialect, **{**self.options, **options})

    def flash(self, image: Any, *, verify: bool = True, leave: bool = True, progress: bool | None = False,
              force: bool = False, memory: str = "flash", address: int | None = None,
              **options: Any) -> FlashResult:
        """Validate, erase, program, verify and (``leave``) start the application, through
        this personality's own host side; returns its :class:`FlashResult`.

        ``image``: a path (read with :func:`load_image` against this target's chip,
        ``address`` placing a binary) or an Image.  ``result.verified`` is true only when
        the host read the image back or had the device check it (CRC), never assumed;
        ``result.steps`` are the host's own words.  ``progress=True`` draws a bar on
        stderr (None: only on a terminal).  ``options``: settings of the dialect's options
        dataclass (e.g. a DFU ``transfer_size``), by name; one the dialect does not take
        is a ValueError.  Raises :class:`ImageRejected` (nothing was erased) or
        :class:`HostError`.  Examples: docs/api.md.
        """
        settings = self._settings(options)
        if isinstance(image, (str, os.PathLike)):
            image = load_image(image, chip=self.chip, address=address, memory=memory, force=force)
        return self.definition.host().flash(image, self.link, dialect=self.dialect, chip=self.chip,
                                            options=settings, progress=progress, memory=memory, verify=verify,
                                            leave=leave, force=force)

    def read(self, *, start: int | None = None, length: int | None = None, memory: str = "flash",
             progress: bool | None = False, **options: Any) -> Any:
        """Read the application flash (or ``memory="eeprom"``) back as an Image, through this
        personality's host side (from ``start`` for ``length`` bytes; default: the
        application region).  Raises :class:`ImageRejected` or :class:`HostError` (for
        one, a personality with no read command).
        """
        settings = self._settings(options)
        return self.definition.host().read(self.link, dialect=self.dialect, chip=self.chip, options=settings,
                                           start=start, length=length, memory=memory, progress=progress)

    def erase(self) -> None:
        """Erase the whole application flash (never the bootloader region); the application
        is then not valid.  Emulated targets only for now, through the memory core as a
        bootloader's chip-erase command does; a real device raises NotImplementedError
        (no personality's host side offers an erase on its own yet).
        """
        if self.closed:
            raise ValueError("the target is closed")
        if self.emulator is None:
            raise NotImplementedError(f"erase of a real {self.personality} device: no host side offers it yet; "
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

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_target(personality: str, *, emulate: Any = None, image: str | os.PathLike | None = None,
                usbip: str | None = None, device: str | tuple[int, int] | None = None, serial: str | None = None,
                port: str | None = None, path: str | None = None, wait: float | None = None, chip: Any = None,
                dialect: str | None = None, options: dict[str, Any] | None = None,
                readonly: bool = False) -> Target:
    """Open a device to talk to with ``personality`` (a registered name: see
    ``bootkit.registry.personality_names()``):

    - ``emulate="CHIP"``: the device side in this process (an Emulator on a private
      in-process bus, or on a pseudo-terminal for a personality whose host side talks to
      a serial port), its flash kept in ``image`` (the chip's whole flash, created erased
      when absent, written back on close; ``readonly`` opens it with a shared lock and
      never writes it);
    - ``usbip="HOST[:PORT]"``: a device served by ``bootkit serve --transport usbip`` (or
      :func:`serve`), through bootkit's userspace USB/IP client, no kernel needed;
    - ``port=``: a serial port or a MIDI port name, ``path=``: a mounted drive or a device
      node, for a personality whose host side uses one (``Personality.link_fields``);
    - otherwise real USB through libusb, selected by ``device="VID:PID"`` (or a tuple)
      and ``serial``; the first matching device when neither is given.  ``wait``: seconds
      to wait for the device to appear, where the host side can.

    ``chip`` (name or Chip) is what images are checked against (default: the emulated
    chip); ``dialect`` forces one (default: what the device says); ``options`` are the
    dialect's settings (its options dataclass, by name) for the emulated device and the
    host side alike.  Raises ValueError (ImageRejected is one) for an unknown
    personality, chip, option or bad argument, OSError when libusb is missing.
    """
    from .registry import personality as registered

    definition = registered(personality)  # ValueError for an unknown one, before anything opens
    if sum(x is not None for x in (emulate, usbip)) > 1:
        raise ValueError("emulate= and usbip= exclude each other")
    if image is not None and emulate is None:
        raise ValueError("image= is the emulated chip's flash: it needs emulate=CHIP")
    for name, value in (("port", port), ("path", path), ("wait", wait)):
        if value is not None and name not in definition.link_fields:
            raise ValueError(f"{name}= does not apply to {personality} (its host side takes: "
                             f"{', '.join(definition.link_fields) or 'no port, path or wait'})")
    vid, pid = _vid_pid(device)
    options = dict(options or {})
    given = options.pop("dialect", None)  # the dialect may come with the options too
    if given is not None and dialect is not None and given != dialect:
        raise ValueError(f"dialect={dialect!r} and options dialect {given!r} disagree")
    dialect = dialect or given
    chip = _chip_or_none(chip)
    common: dict[str, Any] = {"chip": chip, "dialect": dialect, "vid": vid, "pid": pid, "serial": serial,
                              "options": options, "wait": wait}
    if emulate is not None:
        from .emulator import Emulator

        # e.g. an emulated drive leaves soon after the last block (a real one waits about a second)
        device_options = {**definition.emulated_options, **options}
        emulator = Emulator(get_chip(emulate) if isinstance(emulate, str) else emulate, personality,
                            image=image, options=device_options, dialect=dialect, readonly=readonly)
        common["chip"] = chip or emulator.chip  # the personality may size the bootloader its own way
        try:
            if definition.serial_emulation:  # its host side talks to a serial port: a pty
                from .transports.pty import pty_server

                bridge = pty_server(emulator, log=None)
                slave = bridge.__enter__().slave_path

                def close() -> None:
                    try:
                        bridge.__exit__(None, None, None)
                    finally:
                        emulator.close()

                return Target(personality, port=slave, emulator=emulator, on_close=close, **common)
            from .transports.virtual import VirtualBus, get_backend

            bus = VirtualBus()
            emulator.attach(bus)
            return Target(personality, backend=get_backend(bus), emulator=emulator, on_close=emulator.close,
                          path=path, **common)
        except BaseException:
            emulator.close()
            raise
    if usbip is not None:
        from .transports import usbip_client

        backend = usbip_client.get_backend(*usbip_client.parse_address(usbip))
        return Target(personality, backend=backend, port=port, path=path, where=f"usbip {usbip}", **common)
    if port is not None or path is not None:
        return Target(personality, port=port, path=path, **common)
    backend = _libusb_backend()
    if backend is None:
        raise OSError("no USB access: libusb was not found (install libusb-1.0-0), or use emulate=CHIP")
    return Target(personality, backend=backend, **common)


def flash(image, target: Target, **kwargs) -> FlashResult:
    """``target.flash(image, **kwargs)``: see :meth:`Target.flash`.
    """
    return target.flash(image, **kwargs)


def read(target: Target, **kwargs):
    """``target.read(**kwargs)``: see :meth:`Target.read`.
    """
    return target.read(**kwargs)


def erase(target: Target) -> None:
    """``target.erase()``: see :meth:`Target.erase`.
    """
    target.erase()


def serve(emulator: Any, transport: str = "usbip", *, stop: threading.Event | None = None,
          ready: Callable[[str], None] | None = None, **settings: Any) -> None:
    """Serve an :class:`~bootkit.emulator.Emulator` on a registered device transport
    (``bootkit.registry.transport_names()``: usbip, virtual, pty, functionfs, ... and any a
    plug-in adds) until ``stop`` is set or Ctrl-C (KeyboardInterrupt); then return.  The
    caller owns the emulator: close it afterwards so its image is written back.

    ``settings`` are the transport's own (``DeviceTransport.__init__``), e.g. for usbip
    ``listen=("127.0.0.1", 0)`` (port 0 picks one), ``allow``, ``log``; for functionfs
    ``udc``; an unknown one is a TypeError.  ``ready(where)`` is called once a host can
    reach the device, with one line saying how (usbip: ``"127.0.0.1:PORT"``, which
    ``open_target(..., usbip=where)`` takes; pty: the pseudo-terminal's path).  Raises
    ValueError for an unknown transport, ``TransportUnavailable`` (a RuntimeError) when
    this machine cannot carry it.
    """
    from .registry import transport as registered

    cls = registered(transport)  # ValueError naming the known ones
    cls.available()
    stop = stop or threading.Event()
    with cls(**settings) as carrier:
        def watch() -> None:
            stop.wait()
            carrier.stop()

        watcher = threading.Thread(target=watch, name=f"stop {transport}", daemon=True)
        watcher.start()
        try:
            carrier.serve(emulator, ready=ready)
        except KeyboardInterrupt:
            pass
        finally:
            stop.set()  # ends the watcher
            watcher.join()
