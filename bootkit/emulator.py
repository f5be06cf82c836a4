"""An emulated board: simulated memory, the entry policy, and a personality.

It builds the Target a transport serves.  When the personality signals
(DFU detach, leave after manifest), the board's entry policy decides what
enumerates next: the bootloader again (the image is not valid), or the
application (with its run-time interface, where the personality has one).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from .contracts import DeviceOptions, Personality
from .memory import Board, Chip, EntryPolicy, MemoryIO, SimulatedFlash
from .memory.faults import FaultPlan
from .usb.device import Device, Signal, SignalKind, Target


@dataclass
class Emulator:
    """An emulated board with ``personality`` (a registered name) on ``chip`` (a Chip or a
    name).  ``options``: the dialect's settings, a dict (``{"dialect": ..., "vid": ...}``,
    checked by :meth:`Personality.make_options`: an unknown name is a ValueError naming the
    dialect and what it takes) or the dialect's options dataclass itself (then ``dialect``
    says which dialect; default: the chip's).  After construction ``definition`` is the
    :class:`~bootkit.contracts.Personality`, ``dialect`` the dialect, ``settings`` the
    options dataclass, ``chip`` the chip as the dialect's bootloader sees it."""

    chip: Chip | str
    personality: str
    image: str | os.PathLike[str] | None = None
    realtime: bool = False
    options: dict[str, Any] | DeviceOptions = field(default_factory=dict)
    #: None: the dialect's own entry triggers (Personality.entry_triggers), else the common ones
    policy: EntryPolicy | None = None
    read_protected: bool = False
    #: open the image with a shared lock and never write it (a `read` of an emulated board)
    readonly: bool = False
    #: cut the power at a chosen program/erase/file step (memory.faults)
    faults: FaultPlan | None = None
    dialect: str | None = None
    #: the memory behind the personality (``--target``: a real device through a host client,
    #: bootkit.memory.backends); None: a SimulatedFlash of ``chip`` (with ``image``).  It
    #: becomes ``memory``, and the emulator closes it.
    backend: MemoryIO | None = None

    def __post_init__(self) -> None:
        from .registry import personality, resolve_chip

        self.definition: Personality = personality(self.personality)
        chip = resolve_chip(self.chip) if isinstance(self.chip, str) else self.chip
        if isinstance(self.options, DeviceOptions):
            self.dialect = self.definition.check_dialect(self.dialect, chip)
            self.settings = self.options
            expected = self.definition.options_for(self.dialect)
            if not isinstance(self.settings, expected):
                raise ValueError(f"{type(self.settings).__name__} are not the options of "
                                 f"{self.personality}/{self.dialect} ({expected.__name__})")
        else:
            settings = dict(self.options)
            given = settings.pop("dialect", None)
            if given is not None and self.dialect is not None and given != self.dialect:
                raise ValueError(f"dialect {self.dialect!r} and options dialect {given!r} disagree")
            self.dialect = self.definition.check_dialect(given or self.dialect, chip)
            self.settings = self.definition.make_options(self.dialect, **settings)
        # A personality's bootloader may occupy another boot region than the
        # chip's default (HalfKay keeps 512 B at the top of an ATmega32U4).
        self.chip = chip = self.definition.chip_for(chip, self.dialect)
        if self.policy is None:
            own = self.definition.entry_triggers(self.dialect)
            self.policy = EntryPolicy(triggers=own) if own is not None else EntryPolicy()
        self.memory: SimulatedFlash
        if self.backend is None:
            self.memory = SimulatedFlash(chip, self.image, realtime=self.realtime,
                                         read_protected=self.read_protected, readonly=self.readonly,
                                         faults=self.faults)
        elif self.image is not None or self.faults is not None:
            raise ValueError("image and faults belong to a simulated flash, not to a given back-end")
        else:
            # type: the callers that reach past MemoryIO (flash_bytes, peek: the demo, tests)
            # build emulators on a simulated flash; only `serve --target` gives a back-end,
            # and the emulator itself uses MemoryIO's members (persist/close looked up)
            self.memory = self.backend  # type: ignore[assignment]
        try:
            self.board = Board(self.memory, self.policy)
            self.board.power_on()
            # An emulator is started to talk to its bootloader: a valid image
            # still comes up in the bootloader (as a double reset would).
            if self.board.mode != "bootloader":
                self.board.hold_boot_button()
            self.target = Target(self._device_for_mode(), self._on_signal)
        except BaseException:
            _close(self.memory)  # releases the image's lock (nothing changed: nothing written)
            raise
        self.events: list[str] = []

    def tool_hint(self, where: str) -> str | None:
        """An example command line for the real tool that talks to this device at ``where``."""
        assert isinstance(self.chip, Chip)
        return self.definition.tool_hint(self.dialect or "", self.chip, where)

    def _device_for_mode(self) -> Device | None:
        assert isinstance(self.chip, Chip)
        if self.board.mode == "bootloader":
            return self.definition.bootloader_device(self.memory, self.chip, self.dialect or "", self.settings)
        return self.definition.application_device(self.memory, self.chip, self.dialect or "", self.settings)

    def _on_signal(self, sig: Signal) -> Device | None:
        self.events.append(f"{sig.kind}: {sig.reason}")
        # The end of a session the host can see (HalfKay/AVR109/Printer/MIDI
        # leave or reset, MSC leave, a disconnect): the image file follows.
        persist = getattr(self.memory, "persist", None)  # a back-end without one writes through
        if persist is not None:
            persist()
        if sig.kind == "enter-bootloader":
            self.board.application_requests_bootloader()
        elif sig.kind == "touch-1200":  # Arduino's 1200-baud touch on a CDC application
            self.board.touch_1200()
        elif sig.kind == "leave":
            self.board.leave()
        elif sig.kind == "disconnect":
            return None
        elif sig.kind == "watchdog":  # the bootloader's own watchdog (xusb-boot: no SOF in time)
            self.board.watchdog()
        elif sig.kind == "reset-button":
            self.board.reset_button()
        else:
            self.board.reset()
        return self._device_for_mode()

    def run_application(self) -> str:
        """Reset the board as the power-on path would, without the boot button:
        a valid application starts (and enumerates), an invalid one keeps the bootloader."""
        self.board.leave()
        self.target.device = self._device_for_mode()
        self.target.generation += 1
        return self.board.mode

    def press(self, event: str) -> None:
        """An event from outside the USB bus, acted on at the transport's next poll (safe from a
        signal handler or another thread): ``reset-button``, or ``magic`` (the application
        leaves the magic word in no-init RAM and resets; only an application can)."""
        if event == "reset-button":
            sig = Signal(SignalKind.RESET_BUTTON, "reset button pressed")
        elif event == "magic":
            sig = Signal(SignalKind.ENTER_BOOTLOADER, "application: magic word and software reset")
        else:
            raise ValueError(f"unknown board event {event!r} (reset-button, magic)")
        self.target.inject(sig)

    @property
    def mode(self) -> str:
        return self.board.mode

    def attach(self, bus=None) -> Target:
        from .transports.virtual import DEFAULT_BUS

        (bus or DEFAULT_BUS).attach(self.target)
        self._bus = bus or DEFAULT_BUS
        return self.target

    def close(self) -> None:
        bus = getattr(self, "_bus", None)
        if bus is not None:
            bus.detach(self.target)
        _close(self.memory)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _close(memory: Any) -> None:
    close = getattr(memory, "close", None)  # MemoryIO does not require one
    if close is not None:
        close()
