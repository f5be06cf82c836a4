"""An emulated board: simulated memory, the entry policy, and a personality.

It builds the Target a transport serves.  When the personality signals
(DFU detach, leave after manifest), the board's entry policy decides what
enumerates next: the bootloader again (the image is not valid), or the
application (with its run-time interface, where the personality has one).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .memory import Board, Chip, EntryPolicy, SimulatedFlash, get_chip
from .memory.faults import FaultPlan
from .usb.device import Device, Signal, Target

PERSONALITIES = ("dfu", "hid", "cdc", "printer", "msc", "midi")


def personality_module(name: str):
    if name not in PERSONALITIES:
        raise ValueError(f"unknown personality {name!r} (choose from {', '.join(PERSONALITIES)})")
    try:
        module = importlib.import_module(f"bootkit.classes.{name}")
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith(f"bootkit.classes.{name}"):
            raise ValueError(f"the {name} personality is not implemented yet") from None
        raise
    # a folder without __init__.py imports as a namespace package: not a personality yet
    if not hasattr(module, "bootloader_device"):
        raise ValueError(f"the {name} personality is not implemented yet")
    return module


def resolve_chip(name: str) -> Chip:
    """A chip from the database, or one a personality defines (HalfKay's Teensy parts)."""
    try:
        return get_chip(name)
    except KeyError as exc:
        for personality in available_personalities():
            named = getattr(personality_module(personality), "chip_named", None)
            if named is not None:
                try:
                    return named(name)
                except KeyError:
                    pass
        raise exc


def available_personalities() -> list[str]:
    out = []
    for name in PERSONALITIES:
        try:
            personality_module(name)
            out.append(name)
        except ValueError:
            pass
    return out


@dataclass
class Emulator:
    chip: Chip | str
    personality: str = "dfu"
    image: str | Path | None = None
    realtime: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    policy: EntryPolicy = field(default_factory=EntryPolicy)
    read_protected: bool = False
    #: open the image with a shared lock and never write it (a `read` of an emulated board)
    readonly: bool = False
    #: cut the power at a chosen program/erase/file step (memory.faults)
    faults: FaultPlan | None = None

    def __post_init__(self):
        self.module = personality_module(self.personality)
        if isinstance(self.chip, str):
            self.chip = resolve_chip(self.chip)
        # A personality's bootloader may occupy another boot region than the
        # chip's default (HalfKay keeps 512 B at the top of an ATmega32U4).
        adapt = getattr(self.module, "chip_for", None)
        if adapt is not None:
            self.chip = adapt(self.chip, self.options.get("dialect"))
        self.memory = SimulatedFlash(self.chip, self.image, realtime=self.realtime,
                                     read_protected=self.read_protected, readonly=self.readonly,
                                     faults=self.faults)
        try:
            self.board = Board(self.memory, self.policy)
            self.board.power_on()
            # An emulator is started to talk to its bootloader: a valid image
            # still comes up in the bootloader (as a double reset would).
            if self.board.mode != "bootloader":
                self.board.hold_boot_button()
            self.target = Target(self._device_for_mode(), self._on_signal)
        except BaseException:
            self.memory.close()  # releases the image's lock (nothing changed: nothing written)
            raise
        self.events: list[str] = []

    def _device_for_mode(self) -> Device | None:
        if self.board.mode == "bootloader":
            return self.module.bootloader_device(self.memory, self.chip, **self.options)
        app = getattr(self.module, "application_device", None)
        return app(self.memory, self.chip, **self.options) if app else None

    def _on_signal(self, sig: Signal) -> Device | None:
        self.events.append(f"{sig.kind}: {sig.reason}")
        # The end of a session the host can see (HalfKay/AVR109/printer/MIDI
        # leave or reset, MSC leave, a disconnect): the image file follows.
        self.memory.persist()
        if sig.kind == "enter-bootloader":
            self.board.application_requests_bootloader()
        elif sig.kind == "touch-1200":  # Arduino's 1200-baud touch on a CDC application
            self.board.touch_1200()
        elif sig.kind == "leave":
            self.board.leave()
        elif sig.kind == "disconnect":
            return None
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
        self.memory.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
