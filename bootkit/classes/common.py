"""What every personality's host client shares.

Contract of a personality package ``bootkit.classes.<name>``:

- ``NAME``, ``DIALECTS``, ``default_dialect(chip)``;
- ``bootloader_device(memory, chip, *, dialect=None, **options) -> Device``
  and optionally ``application_device(memory, chip, **options)``;
- ``DEMO``: (dialect, sample name) rows for ``bootkit demo``;
- ``host.flash(image, backend=None, **selection) -> FlashResult`` and
  ``host.read(backend=None, **selection) -> Image``, raising
  :class:`ImageRejected` (bad input: nothing was erased) or
  :class:`HostError` (the device or the exchange failed).
"""

from __future__ import annotations

from dataclasses import dataclass, field


class HostError(Exception):
    """The device or the exchange failed: one line saying what and where."""


class ImageRejected(ValueError):
    """The image does not fit the target: refused before anything is erased."""


@dataclass
class FlashResult:
    dialect: str
    bytes: int
    seconds: float
    verified: bool
    steps: list[str] = field(default_factory=list)


def check_ranges(image, ranges, protected, what: str) -> None:
    """Refuse an image with data outside ``ranges`` or inside a ``protected`` range."""
    for start, data in image.segments:
        end = start + len(data)
        for ps, pe in protected:
            if start < pe and ps < end:
                raise ImageRejected(
                    f"image data at 0x{max(start, ps):X} reaches into the bootloader region "
                    f"0x{ps:X}-0x{pe - 1:X} of {what}")
        if not any(rs <= start and end <= re for rs, re in ranges):
            span = ", ".join(f"0x{rs:X}-0x{re - 1:X}" for rs, re in ranges)
            raise ImageRejected(f"image data 0x{start:X}-0x{end - 1:X} does not fit {what} (writable: {span})")


OSES = ("windows", "macos", "linux", "ipados", "android")


@dataclass(frozen=True)
class DialectFacts:
    """What one personality/dialect declares about itself, for ``bootkit choose``.

    Each personality keeps these in ``bootkit/classes/<name>/facts.py`` as
    ``FACTS: tuple[DialectFacts, ...]``: the one place its trade-offs live.
    """

    personality: str
    dialect: str
    summary: str
    # per OS in OSES: "none" (works out of the box), a driver to install, or "no" (cannot work)
    driver: dict
    host_software: str  # "none" when the OS itself is enough (copy a file, print, play MIDI)
    eeprom: bool
    readback: bool
    verify: str  # how a flash is verified: "read-back", "CRC", "device checks", "none"
    feedback: str  # what the user learns when it fails
    unattended: bool  # scriptable with no user action at the device
    bootloader_size: str  # typical size of the real bootloader: "ROM", "512 B", "4 KiB", ...
    families: tuple = ()  # chip families it fits ("avr", "xmega", "stm32", "rp2040", "nrf52"); () = any
    quirks: tuple = ()  # (quirk, how bootkit handles it)
    benchmark: str = ""  # the benchmarks/ script that measures its throughput
