"""The contracts a personality implements, as code: :class:`Personality`,
:class:`HostSide`, :class:`Link`, and the options every dialect declares.

Each docstring here is the specification.  A personality package exposes one
:class:`Personality` instance as ``<package>.personality:PERSONALITY`` and
registers it in the ``bootkit.personalities`` entry-point group (the
built-ins do it in bootkit's own pyproject.toml, exactly as a plug-in does);
:mod:`bootkit.registry` finds it there.

This module imports nothing heavy: the registry, the command line and the
product loader read a personality's names, dialects and options without
importing its device or host side.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from .classes.common import DialectFacts, FlashResult, HostError, ImageRejected

if TYPE_CHECKING:
    import argparse

    from .formats.image import Image
    from .memory import Chip, MemoryIO
    from .usb.device import Device

__all__ = [
    "Personality", "HostSide", "Link", "DeviceOptions", "option", "OptionError",
    "FlashResult", "HostError", "ImageRejected", "DialectFacts", "FuseAccess", "Found", "Verbs",
]


class OptionError(ValueError):
    """An option a dialect does not take, or a value it does not accept: one line naming
    the personality/dialect, the option and what is accepted."""


def option(default: Any = None, *, help: str, **rules: Any) -> Any:
    """A field of a :class:`DeviceOptions` dataclass with its validation metadata.

    ``rules`` (all optional), read by the product loader to check a profile
    generically and by :meth:`Personality.make_options`:

    - ``min`` / ``max``: inclusive range of a number;
    - ``hex``: True when the value is shown and accepted as ``0x..``;
    - ``pattern``: a regular expression a string must match in full;
    - ``allowed``: the values accepted (a tuple), or the text shown as "allowed";
    - ``max_len``: the longest string;
    - ``kind``: ``"int"``, ``"number"`` (int or float), ``"str"``, ``"bool"``,
      ``"list"`` (of strings), ``"any"`` (``check`` decides); default from the annotation;
    - ``none``: a value a profile writes for "never" (``False`` for a timeout);
    - ``check``: ``f(value) -> None | (problem, allowed)``, a rule the others cannot say;
    - ``convert``: ``f(value) -> value`` applied after the checks (lower-case an MCU
      name, a UF2 family name to its number);
    - ``host_only``: True for a setting only the host side uses (MIDI pacing);
    - ``device_only``: True for a setting only the device side uses;
    - ``cli``: the ``--flag`` the command line exposes it as;
    - ``table``: the product table holding it (default: the personality's own,
      ``usb`` for ids and strings, ``protection`` for what a drive accepts);
    - ``key``: the product key when it differs from the field name;
    - ``product``: False when a product profile cannot set it (a host tuning, a test hook).

    ``make_options`` checks names only; values are checked where they come in (a product
    profile, the command line) against these rules.
    """
    return field(default=default, metadata={"help": help, **rules})


@dataclass(frozen=True)
class DeviceOptions:
    """The settings every dialect takes: the USB ids and strings the device enumerates
    with (None: the dialect's own).  A personality's options dataclasses derive from it,
    one per dialect (or one shared by several), frozen, every field made with :func:`option`.
    """

    vid: int | None = option(help="idVendor", min=0x0001, max=0xFFFF, hex=True, table="usb", device_only=True)
    pid: int | None = option(help="idProduct", min=0x0000, max=0xFFFF, hex=True, table="usb", device_only=True)
    bcd_device: int | None = option(help="bcdDevice", min=0x0000, max=0xFFFF, hex=True, table="usb",
                                    device_only=True)
    manufacturer: str | None = option(help="iManufacturer string", max_len=126, table="usb", device_only=True)
    product: str | None = option(help="iProduct string", max_len=126, table="usb", device_only=True)
    serial: str | None = option(help="iSerialNumber string", max_len=126, table="usb", device_only=True)

    def usb_ids(self) -> dict[str, Any]:
        """The ids and strings as ``bootloader_device`` keywords (None: the dialect's own)."""
        return {"vid": self.vid, "pid": self.pid, "bcd_device": self.bcd_device,
                "manufacturer": self.manufacturer, "product": self.product, "serial": self.serial}

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def own_fields(cls) -> tuple[dataclasses.Field, ...]:
        """The dialect's own settings (not the USB ids and strings every dialect takes)."""
        base = set(DeviceOptions.names())
        return tuple(f for f in dataclasses.fields(cls) if f.name not in base)


@dataclass
class Link:
    """How a host side reaches the device (all optional; None: find it).

    ``backend``: the pyusb backend (bootkit's in-process bus, its USB/IP client, or
    libusb for real hardware); ``vid``/``pid``/``serial``: which USB device;
    ``port``: a serial port (CDC) or a MIDI port name; ``path``: a mounted drive or
    a device node (``/dev/usb/lp0``); ``wait``: seconds to wait for the
    device to appear.  A host side that cannot use a field that is set raises
    :class:`OptionError` (never ignores it).
    """

    backend: Any = None
    vid: int | None = None
    pid: int | None = None
    serial: str | None = None
    port: str | None = None
    path: str | None = None
    wait: float | None = None

    def given(self) -> tuple[str, ...]:
        """The names of the fields that are set (backend excluded)."""
        return tuple(f.name for f in dataclasses.fields(self) if f.name != "backend"
                     and getattr(self, f.name) is not None)

    def check(self, personality: str, uses: tuple[str, ...] = ()) -> None:
        """Raise :class:`OptionError` when a field is set that ``personality``'s host side does
        not use (``backend``, ``vid``, ``pid`` and ``serial`` are always used)."""
        for name in self.given():
            if name not in ("vid", "pid", "serial") + tuple(uses):
                raise OptionError(f"the {personality} host side takes no {name} (it takes: "
                                  f"{', '.join(('vid', 'pid', 'serial') + tuple(uses))})")


@dataclass(frozen=True)
class Found:
    """One device a personality's host side can talk to, as ``bootkit list`` shows it and
    ``flash`` without ``--via`` picks it (:meth:`Personality.find_devices`).

    ``personality``/``dialect``: who talks to it (dialect None: the device does not say);
    ``link``: what to hand the host side (:class:`Link`) to reach exactly this device;
    ``where``: one human line saying where it is ("USB 03eb:2ff4 (bus 1 dev 5)",
    "/dev/ttyACM0 (2341:0036)", "/media/RPI-RP2 (UF2 drive)", "/dev/usb/lp0",
    "MIDI port 'x'"); ``vid``/``pid``/``serial``: its USB ids when known; ``chip``: the
    chip's name when the device says it (a UF2 drive's board, a HalfKay's MCU);
    ``details``: what else was read on the way (boot info, INFO_UF2.TXT fields, the
    IEEE 1284 device ID, the USB bus and address), JSON-serialisable values only.
    """

    personality: str
    dialect: str | None
    link: Link
    where: str
    vid: int | None = None
    pid: int | None = None
    serial: str | None = None
    chip: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """``personality/dialect`` (the personality alone when the dialect is unknown)."""
        return f"{self.personality}/{self.dialect}" if self.dialect else self.personality

    def to_json(self) -> dict[str, Any]:
        """The object ``bootkit list --json`` prints for it (ids as "03eb" hex strings)."""
        return {
            "personality": self.personality, "dialect": self.dialect, "where": self.where,
            "vid": f"{self.vid:04x}" if self.vid is not None else None,
            "pid": f"{self.pid:04x}" if self.pid is not None else None,
            "serial": self.serial, "chip": self.chip,
            "port": self.link.port, "path": self.link.path, "details": dict(self.details),
        }


@runtime_checkable
class HostSide(Protocol):
    """A personality's host side: ONE signature for every personality.

    ``flash`` validates the whole image against ``chip`` before anything is
    erased (:class:`ImageRejected`), erases what it needs, programs, verifies
    when the dialect can (``result.verified`` is never assumed) and, with
    ``leave``, starts the application.  ``read`` reads ``length`` bytes from
    ``start`` (default: the application region) of ``memory`` ("flash" or
    "eeprom").  ``dialect`` None: the device's own; ``options``: an instance
    of the dialect's options dataclass (:meth:`Personality.make_options`),
    whose host settings the adapter passes on explicitly.  Failures of the
    device or the exchange raise :class:`HostError`; a personality with no
    read command raises HostError saying so.
    """

    def flash(self, image: Image, link: Link, *, dialect: str | None = None, chip: Chip | None = None,
              options: DeviceOptions | None = None, progress: bool | None = None, memory: str = "flash",
              verify: bool = True, leave: bool = True, force: bool = False) -> FlashResult: ...

    def read(self, link: Link, *, dialect: str | None = None, chip: Chip | None = None,
             options: DeviceOptions | None = None, start: int | None = None, length: int | None = None,
             memory: str = "flash", progress: bool | None = None) -> Image: ...


@runtime_checkable
class FuseAccess(Protocol):
    """What a :class:`HostSide` MAY also implement: the target's signature and fuses, for
    ``bootkit signature`` and ``bootkit fuses`` (``isinstance(host, FuseAccess)`` says whether it does).

    Fuse names are avrdude's (``lfuse``, ``hfuse``, ``efuse``; ``lock`` for the lock byte).
    ``signature`` returns the target's 3 signature bytes.  ``read_fuses`` returns every fuse
    the target has, ``lock`` too, as the target reads them (unimplemented bits as 1).
    ``write_fuses`` checks every value of ``values`` against ``chip``'s fuse masks BEFORE
    anything is written (a name the chip lacks, or a value with bits outside the mask, is a
    ``ValueError`` (an ISP programmer's ``IspInputError`` for instance) of one line naming
    the fuse, the value and the mask: bad input, exit 2), then writes them and returns what it
    reads back afterwards.  A bootloader that cannot do one of these raises :class:`HostError`
    saying so ("FLIP cannot write fuses: use an ISP programmer"); the device or the exchange
    failing is a HostError too.
    ``link``, ``dialect``, ``chip`` and ``options`` are as for :meth:`HostSide.flash`.
    """

    def signature(self, link: Link, *, dialect: str | None = None, chip: Chip | None = None,
                  options: DeviceOptions | None = None) -> bytes: ...

    def read_fuses(self, link: Link, *, dialect: str | None = None, chip: Chip | None = None,
                   options: DeviceOptions | None = None) -> dict[str, int]: ...

    def write_fuses(self, link: Link, values: dict[str, int], *, dialect: str | None = None,
                    chip: Chip | None = None, options: DeviceOptions | None = None) -> dict[str, int]: ...


@runtime_checkable
class Verbs(Protocol):
    """What a :class:`HostSide` MAY also implement: the verbs ``bootkit erase``, ``bootkit verify``
    and ``bootkit reset`` (``isinstance(host, Verbs)`` says whether it does).

    ``erase`` erases the application region (never the bootloader region) and returns one line
    saying what was erased.  ``verify`` compares ``image`` with what ``memory`` holds: a read-back
    of every byte of the image, or the device's own CRC of the region where that is all it has
    (xusb-boot); it returns one line saying what was compared and raises :class:`HostError`
    naming the first differing address (or the CRCs that differ) otherwise: "verified" only
    after a comparison that could fail.  ``reset`` leaves the bootloader (the dialect's leave
    request) and returns what was then seen on the bus, as ``flash`` reports it ("application
    started (came back as VVVV:PPPP)" only when seen).  A dialect that cannot do one of these
    alone raises :class:`OptionError` saying so (bad input, exit 2: "plain DFU 1.1 has no erase
    command: flash erases as it downloads"); a device or exchange failing is a HostError.
    ``link``, ``dialect``, ``chip``, ``options`` and ``progress`` are as for :meth:`HostSide.flash`.
    """

    def erase(self, link: Link, *, dialect: str | None = None, chip: Chip | None = None,
              options: DeviceOptions | None = None, progress: bool | None = None) -> str: ...

    def verify(self, image: Image, link: Link, *, dialect: str | None = None, chip: Chip | None = None,
               options: DeviceOptions | None = None, progress: bool | None = None,
               memory: str = "flash") -> str: ...

    def reset(self, link: Link, *, dialect: str | None = None, chip: Chip | None = None,
              options: DeviceOptions | None = None) -> str: ...


class Personality(ABC):
    """One USB class personality: its names, dialects and options, its device side,
    its host side, its facts for ``bootkit choose``.

    A package exposes one instance as ``PERSONALITY`` in its ``personality.py``
    and registers it in the ``bootkit.personalities`` entry-point group; nothing
    outside the package names it.  Class attributes:

    - ``name``: the name on the command line and in product profiles;
    - ``order``: display order (built-ins 10..60, plug-ins 100 by default);
    - ``summary``: one line;
    - ``dialects``: its dialects, the first the usual one;
    - ``options``: dialect -> frozen :class:`DeviceOptions` dataclass of that
      dialect's device and host settings (field metadata: see :func:`option`);
    - ``demo``: (dialect, sample name) rows for ``bootkit demo``
      (``bootkit.samples.SAMPLES``);
    - ``demo_options``: device options the demo uses, e.g. a short leave delay;
    - ``emulated_options``: device options an emulated device gets by default when a
      host command or ``open_target(emulate=...)`` runs it (a drive that leaves soon
      after the last block instead of waiting for a desktop's last writes);
    - ``triggers``: entry triggers beyond the common ones it supports
      (the 1200-baud touch needs a serial port);
    - ``read_protection``: dialects whose emulation models read-out protection;
    - ``link_fields``: which :class:`Link` fields its host side uses besides
      the backend and the USB selection (``port``, ``path``, ``wait``);
    - ``serial_emulation``: True when an emulated device is reached through a
      pseudo-terminal (a byte stream) rather than the in-process bus;
    - ``commands``: the names of the commands :meth:`add_commands` adds (so the command
      line finds whose command it runs without building every parser);
    - ``cli_examples``: command (``flash``, ``read``, ``serve``) -> example command
      lines for the ``--help`` epilogs, each a whole ``bootkit ...`` line.

    Methods with a default need not be overridden.
    """

    name: ClassVar[str]
    order: ClassVar[int] = 100
    summary: ClassVar[str] = ""
    dialects: ClassVar[tuple[str, ...]]
    options: ClassVar[dict[str, type[DeviceOptions]]]
    demo: ClassVar[tuple[tuple[str, str], ...]] = ()
    demo_options: ClassVar[dict[str, Any]] = {}
    emulated_options: ClassVar[dict[str, Any]] = {}
    triggers: ClassVar[frozenset[str]] = frozenset()
    read_protection: ClassVar[tuple[str, ...]] = ()
    link_fields: ClassVar[tuple[str, ...]] = ()
    serial_emulation: ClassVar[bool] = False
    commands: ClassVar[tuple[str, ...]] = ()
    cli_examples: ClassVar[dict[str, list[str]]] = {}

    def __repr__(self) -> str:
        return f"<Personality {self.name} ({', '.join(self.dialects)})>"

    # -- dialects, chips and options

    @abstractmethod
    def default_dialect(self, chip: Chip) -> str:
        """The dialect a chip's usual bootloader speaks."""

    def check_dialect(self, dialect: str | None, chip: Chip | None = None) -> str:
        """``dialect``, or the chip's default when None; ValueError naming the dialects otherwise."""
        if dialect is None:
            if chip is None:
                return self.dialects[0]
            return self.default_dialect(chip)
        if dialect not in self.dialects:
            raise ValueError(f"unknown {self.name} dialect {dialect!r} (choose from {', '.join(self.dialects)})")
        return dialect

    def chip_for(self, chip: Chip, dialect: str | None) -> Chip:
        """The chip as this dialect's bootloader sees it (HalfKay resizes the boot region).
        Whoever builds the memory for a device of this personality builds it from this chip."""
        return chip

    def chip_named(self, name: str) -> Chip | None:
        """A chip only this personality defines (HalfKay's Teensy parts), None when unknown."""
        return None

    def entry_triggers(self, dialect: str) -> frozenset[str] | None:
        """The entry triggers (memory.entry) the dialect's bootloader documents, for an emulated
        board with no product profile; None: the common ones."""
        return None

    def options_for(self, dialect: str) -> type[DeviceOptions]:
        self.check_dialect(dialect)
        return self.options[dialect]

    def make_options(self, dialect: str, **settings: Any) -> DeviceOptions:
        """The dialect's options dataclass with ``settings``: an unknown name is an
        :class:`OptionError` naming the dialect and the options it takes, never dropped."""
        cls = self.options_for(dialect)
        names = cls.names()
        unknown = [k for k in settings if k not in names]
        if unknown:
            raise OptionError(f"option {unknown[0]!r} does not apply to {self.name}/{dialect} "
                              f"(it takes: {', '.join(names)})")
        return cls(**settings)

    def options_or_default(self, dialect: str | None, options: DeviceOptions | None) -> DeviceOptions:
        """``options``, checked to be the dialect's own class, or the dialect's defaults
        (the first dialect's when the device is to say which it speaks)."""
        cls = self.options_for(dialect or self.dialects[0])
        if options is None:
            return cls()
        if dialect is not None and not isinstance(options, cls):
            raise OptionError(f"{type(options).__name__} are not the options of {self.name}/{dialect} "
                              f"({cls.__name__})")
        return options

    # -- the device side

    @abstractmethod
    def bootloader_device(self, memory: MemoryIO, chip: Chip, dialect: str, options: DeviceOptions) -> Device:
        """The bootloader as it enumerates, driving ``memory``."""

    def application_device(self, memory: MemoryIO, chip: Chip, dialect: str,
                           options: DeviceOptions) -> Device | None:
        """The application as it enumerates (a run-time interface that can be asked to
        enter the bootloader), or None: the application shows nothing we model."""
        return None

    # -- the host side

    @abstractmethod
    def host(self) -> HostSide:
        """The host side (imported on first use: a device-only user does not pay for it)."""

    def list_devices(self, backend: Any) -> list[str]:
        """One line per device of this personality that ``backend`` (a pyusb backend) sees,
        for ``bootkit list``; default: none (a personality whose devices are not USB
        devices a bus listing can recognise: a serial port, a drive)."""
        return []

    def find_devices(self, backend: Any = None, *, local: bool = True) -> list[Found]:
        """Every device of this personality that can be reached, one :class:`Found` each, for
        ``bootkit list`` and ``flash`` without ``--via``.  ``backend``: a pyusb backend whose
        bus to look on (bootkit's in-process bus, its USB/IP client, libusb), None: no USB bus;
        ``local``: also look at what this machine has outside a pyusb bus (serial ports,
        mounted drives, device nodes, MIDI ports).  A device it cannot recognise is left out,
        never guessed; a bus or listing it cannot read raises (the caller says so on one
        line and lists the other personalities' devices).  Default: none (a plug-in adds its own).
        """
        return []

    def tool_hint(self, dialect: str, chip: Chip, where: str) -> str | None:
        """One example command line of the real tool that talks to this personality's device
        served at ``where`` (a pty's path), shown by ``bootkit serve``; None: no hint."""
        return None

    def run_demo_row(self, dialect: str, chip: Chip, image: Image) -> dict[str, Any] | None:
        """One ``bootkit demo`` row run the personality's own way (a pty, a file played),
        or None: the demo flashes through :meth:`host` on an in-process bus."""
        return None

    # -- what bootkit choose and product profiles read

    def facts(self) -> tuple[DialectFacts, ...]:
        """Its dialects' trade-offs for ``bootkit choose`` (the package's facts.py, imported here).
        A facts.py that fails to import is an error, not "no facts"."""
        return ()

    def check_product(self, check: Any, product: Any) -> None:
        """Cross-field rules of a product profile the option metadata cannot say (an option
        that must agree with the chip, a key a dialect forbids).  ``check.fail(key, problem,
        allowed)`` raises the product's one-line error; ``product`` has ``chip`` (with the
        profile's bootloader region), ``dialect``, ``settings`` (options field name -> value,
        after ``convert``), ``usb`` and ``boot_size_given`` (True when the profile sets
        protection.bootloader_size)."""

    def add_commands(self, subparsers: argparse._SubParsersAction) -> None:
        """Commands of this personality alone (sending a print job, dropping a file), added to
        the ``bootkit`` parser; each sets ``func``.  Default: none."""
