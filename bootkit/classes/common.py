"""What every personality's host side shares: its errors, its result, and the checks
made on an image before anything is erased.

A personality's host module (``bootkit.classes.<name>.host``) has ``flash(image,
backend=None, *, <selection and settings>) -> FlashResult`` and ``read(backend=None,
*, ...) -> Image`` with explicit keywords (no ``**_``: an option a host does not take
is a TypeError); the personality's :class:`bootkit.contracts.HostSide` adapter maps the
one contract signature onto them.  Both raise :class:`ImageRejected` (bad input:
nothing was erased) or :class:`HostError` (the device or the exchange failed), and
report in :attr:`FlashResult.steps` only what was observed (issue 16 item 3;
:class:`bootkit.classes.usbhost.LeaveWatch` for what a device does after leaving).
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


# Chip families whose bootloaders erase the whole application before they program it
# (LUFA's DFU/CDC/HID/printer bootloaders, Caterina, HalfKay, xusb-boot: a chip erase
# first) and start the application only when its first word is programmed (LUFA's
# "pgm_read_word_near(0) != 0xFFFF" test).  An image without that word leaves such a
# device in its bootloader with its old application gone, so it is refused before
# anything is erased.  The other families (STM32, RP2040, nRF52) erase only the pages
# an image touches: a partial image is flashed and the device's own answer to the
# final manifest/leave step says whether an application is there to run.
VECTOR_REQUIRED_FAMILIES = ("avr", "xmega")


def app_first_address(chip) -> int:
    """Where the application's first word (the reset vector) lives on ``chip``."""
    ranges = chip.application_ranges
    return ranges[0][0] if ranges else chip.flash_start


def family_name(family_id: int | None) -> str:
    """A UF2 familyID as people know it: "rp2040 (0xe48bff56)"."""
    from ..formats.uf2 import FAMILIES

    if family_id is None:
        return "no familyID"
    for name, value in FAMILIES.items():
        if value == family_id:
            return f"{name} (0x{family_id:08x})"
    return f"0x{family_id:08x}"


def preflight(image, chip, *, force: bool = False, memory: str = "flash") -> None:
    """Refuse, before anything is erased, an image that was built for another target
    or that would leave the device without a runnable application.

    - A UF2 file's familyIDs must all be ``chip``'s (a block without one, or of
      another family, is refused: uf2conv.py and tinyuf2 drop such blocks, so the
      device would get part of the file); ``force`` flashes it anyway.
    - On a family in VECTOR_REQUIRED_FAMILIES the image must cover the
      application's first word (see there); ``force`` does not lift this.

    The bootloader region is checked by each host with :func:`check_ranges`,
    which ``force`` never lifts either.
    """
    if chip is None or memory != "flash" or not image:
        return
    origin = getattr(image, "origin", None)
    if origin is not None and origin.format == "uf2" and not force:
        wrong = sorted((f for f in origin.uf2_families if f != chip.uf2_family), key=lambda f: -1 if f is None else f)
        if wrong:
            want = f"0x{chip.uf2_family:08x}" if chip.uf2_family is not None else "no UF2 family"
            raise ImageRejected(
                f"UF2 family {', '.join(family_name(f) for f in wrong)} does not match {chip.name} ({want}); "
                f"--force flashes it anyway")
    if chip.family in VECTOR_REQUIRED_FAMILIES:
        first = app_first_address(chip)
        if image.crop(first, first + 2).size < 2:
            raise ImageRejected(
                f"image has no data at 0x{first:X}, the application's first word (reset vector): "
                f"the {chip.name} bootloader erases the whole application and would keep control")


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


def firmware_image(data: bytes, source: str, *, chip=None, address: int | None = None, fmt: str | None = None,
                   memory: str = "flash", force: bool = False, give: str = "give an address"):
    """The Image of a firmware file's ``data``, placed and checked against ``chip`` before
    any device is touched (bootkit.load_image and the command line's FILE; ``give`` says how
    to supply a missing load address).  Raises :class:`ImageRejected`, one line starting
    with ``source``."""
    from ..formats import ADDRESSED, FormatError, identify, load

    try:
        fmt = identify(data, source, fmt)
        base = address
        if fmt not in ADDRESSED and not data.startswith(b"DfuSe") and base is None:
            if memory != "flash":
                base = 0  # EEPROM images are offsets from the EEPROM's first byte
            elif chip is not None:
                base = app_first_address(chip)
            else:
                raise ImageRejected(f"{source}: a {'binary' if fmt == 'bin' else 'DFU suffix'} file has no load "
                                    f"address: {give}")
        family = None
        if fmt == "uf2" and chip is not None and chip.uf2_family is not None:
            origin = load(data, fmt=fmt, source=source).origin
            if origin is not None and chip.uf2_family in origin.uf2_families:
                family = chip.uf2_family  # a multi-family file: keep this chip's blocks
        image = load(data, fmt=fmt, base=base, family=family, source=source, memory=memory)
    except FormatError as exc:
        raise ImageRejected(str(exc)) from exc
    except ValueError as exc:  # ImageRejected itself, or e.g. an unknown UF2 family
        if isinstance(exc, ImageRejected):
            raise
        raise ImageRejected(f"{source}: {exc}") from exc
    if not image:
        raise ImageRejected(f"{source}: no {'EEPROM ' if memory == 'eeprom' else ''}data"
                            + (" (an ELF file's EEPROM is its .eeprom section)" if fmt == "elf" and memory == "eeprom"
                               else ""))
    try:
        preflight(image, chip, force=force, memory=memory)
    except ImageRejected as exc:
        raise ImageRejected(f"{source}: {exc}") from None
    return image
