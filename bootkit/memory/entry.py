"""Entry policy: when does a board run its bootloader rather than its application?

Triggers come from the xmega raw-HID bootloader and Arduino's Caterina:

- ``blank``: the first application word reads 0xFFFF (nothing to run);
- ``invalid``: the last update never reached ``manifest()`` (power safety:
  an interrupted update keeps the device in its bootloader, so a retry works);
- ``magic``: the application left MAGIC_WORD in no-init RAM and reset
  (0x97e1e28e, as the xmega raw-HID bootloader uses);
- ``double-reset``: reset pressed twice within ``double_reset_window`` s;
- ``baud1200``: the host opened the CDC port at 1200 baud and dropped DTR
  (Arduino's "1200-baud touch");
- ``timeout``: a bootloader entered for any soft reason leaves for a valid
  application after ``timeout`` s without host activity (Caterina: 8 s).

Two more, only where a profile or a dialect asks for them (the xmega raw-HID
bootloader, xusb-boot, README "Ways to enter the bootloader" and main.c
pre_main_boot_check):

- ``reset-button``: the reset button toggles: pressed while the application
  runs (with USB plugged in) it enters the bootloader, pressed while the
  bootloader runs it starts the application (when there is one);
- ``watchdog``: the bootloader's watchdog resets the chip when no host has
  sent an SOF within its period (2 s): a present application starts, blank
  flash brings the bootloader back ("keeps resetting until it can establish
  a USB connection").
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

MAGIC_WORD = 0x97E1E28E
TRIGGERS = ("blank", "invalid", "magic", "double-reset", "baud1200", "timeout")
# named only where wanted: they change what the reset button does
OPTIONAL_TRIGGERS = ("reset-button", "watchdog")
ALL_TRIGGERS = TRIGGERS + OPTIONAL_TRIGGERS
XUSB_TRIGGERS = frozenset(("blank", "magic", "reset-button", "watchdog"))  # xusb-boot's, as its README lists them


@dataclass
class EntryPolicy:
    triggers: frozenset[str] = frozenset(TRIGGERS)
    double_reset_window: float = 0.5
    timeout: float = 8.0

    def __post_init__(self):
        unknown = set(self.triggers) - set(ALL_TRIGGERS)
        if unknown:
            raise ValueError(f"unknown entry trigger(s) {sorted(unknown)}; allowed: {', '.join(ALL_TRIGGERS)}")


class BootState(Protocol):
    """What the entry policy reads of a memory (any MemoryIO has both)."""

    @property
    def app_valid(self) -> bool: ...

    def is_blank(self) -> bool: ...


@dataclass
class Board:
    """The reset logic of one emulated board: which mode it runs, and why.

    ``memory`` needs ``is_blank()`` and ``app_valid`` (any MemoryIO has
    both).  The clock is injectable so tests need no sleeps.
    """

    memory: BootState
    policy: EntryPolicy = field(default_factory=EntryPolicy)
    clock: Callable[[], float] = time.monotonic
    mode: str = "off"  # off, bootloader, application
    reason: str = ""
    noinit_magic: int = 0
    _last_reset: float | None = None
    _entered_at: float = 0.0
    _last_activity: float = 0.0

    def _decide(self, soft: str | None) -> None:
        t = self.policy.triggers
        now = self.clock()
        if "blank" in t and self.memory.is_blank():
            mode, reason = "bootloader", "blank flash"
        elif "invalid" in t and not self.memory.app_valid:
            mode, reason = "bootloader", "application not valid (update incomplete)"
        elif soft and soft in t:
            mode, reason = "bootloader", soft
        else:
            mode, reason = "application", "valid application"
        self.mode, self.reason = mode, reason
        self._entered_at = self._last_activity = now
        self.noinit_magic = 0  # the bootloader consumes the magic word

    def power_on(self) -> str:
        self._last_reset = None
        self._decide(None)
        return self.mode

    def reset(self, *, soft: str | None = None) -> str:
        """A reset; ``soft`` names the trigger that caused it, if any."""
        now = self.clock()
        if soft is None and self.noinit_magic == MAGIC_WORD:
            soft = "magic"
        if soft is None and self._last_reset is not None and now - self._last_reset <= self.policy.double_reset_window:
            soft = "double-reset"
        self._last_reset = now
        self._decide(soft)
        return self.mode

    def hold_boot_button(self) -> str:
        """Reset with the boot button held (LUFA's HWB pin, the RP2040 BOOTSEL): always the bootloader."""
        self._decide(None)
        self.mode, self.reason = "bootloader", "boot button held"
        return self.mode

    def reset_button(self) -> str:
        """The reset button.  With ``reset-button`` (xusb-boot) it toggles: from the
        bootloader to the application (when the flash holds one), from the application
        to the bootloader; without, it is a plain reset (twice quickly: ``double-reset``)."""
        if "reset-button" not in self.policy.triggers:
            return self.reset()
        self._last_reset = self.clock()
        # main.c: an external reset while the bootloader ran (boot_magic holds its own
        # value) goes to the application; one while the application ran, to the bootloader
        self._decide(None if self.mode == "bootloader" else "reset-button")
        return self.mode

    def watchdog(self) -> str:
        """The bootloader's watchdog fired (no SOF within its period): with ``watchdog``
        the chip resets, so a present application starts; without, nothing changes."""
        if "watchdog" in self.policy.triggers and self.mode == "bootloader":
            self._last_reset = None
            self._decide(None)
        return self.mode

    def application_requests_bootloader(self) -> str:
        """The application writes the magic word to no-init RAM and resets."""
        self.noinit_magic = MAGIC_WORD
        return self.reset()

    def touch_1200(self) -> str:
        return self.reset(soft="baud1200")

    def leave(self) -> str:
        """The bootloader was told to start the application (after manifest)."""
        self._last_reset = None
        self._decide(None)
        return self.mode

    def activity(self) -> None:
        self._last_activity = self.clock()

    def tick(self) -> str:
        """Leave a soft-entered bootloader after the timeout without host activity."""
        if (self.mode == "bootloader" and "timeout" in self.policy.triggers
                and self.memory.app_valid and not self.memory.is_blank()
                and self.clock() - self._last_activity >= self.policy.timeout):
            self._decide(None)
        return self.mode
