"""The chip database.

Figures come from the datasheets and from the tables Adafruit AVRprog and
avrdude.conf use (signatures, page sizes, fuse masks).  AVR memories other
than flash live at the addresses avr-gcc gives their ELF sections
(``.eeprom`` 0x810000, ``.fuse`` 0x820000, ``.lock`` 0x830000,
``.signature`` 0x840000), so one address space holds every memory.

Users add chips from a TOML file (see :func:`load_chip_file`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .core import Layout, Region, Timing

EEPROM_BASE = 0x810000
FUSE_BASE = 0x820000
LOCK_BASE = 0x830000
SIGNATURE_BASE = 0x840000

KiB = 1024


@dataclass(frozen=True)
class Fuse:
    name: str  # lfuse, hfuse, efuse (avrdude's names)
    default: int
    mask: int  # bits that exist; unimplemented bits read as 1


@dataclass(frozen=True)
class Chip:
    name: str
    family: str  # avr, xmega, stm32, rp2040, nrf52
    flash_start: int
    flash_sectors: tuple[tuple[int, int], ...]
    page_size: int  # programming page (AVR SPM page, flash program page)
    boot_start: int  # protected bootloader region
    boot_size: int
    eeprom_size: int = 0
    eeprom_page: int = 0
    signature: bytes = b""
    fuses: tuple[Fuse, ...] = ()
    lock: Fuse | None = None
    uf2_family: int | None = None
    usb: bool = True
    aliases: tuple[str, ...] = ()
    timing: Timing = Timing()
    # Extra regions (option bytes on STM32), as (name, kind, start, size).
    extra: tuple[tuple[str, str, int, int], ...] = ()
    description: str = ""
    boot_note: str = ""
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def flash_size(self) -> int:
        return sum(n * s for n, s in self.flash_sectors)

    @property
    def flash_end(self) -> int:
        return self.flash_start + self.flash_size

    @property
    def boot_end(self) -> int:
        return self.boot_start + self.boot_size

    def with_boot(self, size: int, at: str | None = None) -> "Chip":
        """The same chip with another bootloader size.

        AVR boot sections sit at the top of flash; ARM bootloaders at the
        bottom.  The xmega boot section is fixed and cannot be resized.
        """
        if self.family == "xmega":
            raise ValueError("the xmega boot section is fixed")
        at = at or ("top" if self.family == "avr" else "bottom")
        start = self.flash_end - size if at == "top" else self.flash_start
        return replace(self, boot_start=start, boot_size=size)

    @property
    def application_ranges(self) -> list[tuple[int, int]]:
        return self.layout().application_ranges("flash")

    def layout(self) -> Layout:
        regions = [
            Region(
                name="Flash",
                start=self.flash_start,
                sectors=self.flash_sectors,
                kind="flash",
                write_size=self.page_size,
            )
        ]
        if self.eeprom_size:
            regions.append(
                Region(
                    name="EEPROM",
                    start=EEPROM_BASE if self.family in ("avr", "xmega") else self.meta.get("eeprom_start", EEPROM_BASE),
                    sectors=((self.eeprom_size // max(self.eeprom_page, 1), max(self.eeprom_page, 1)),),
                    kind="eeprom",
                    needs_erase=False,
                )
            )
        if self.fuses:
            regions.append(
                Region(name="Fuses", start=FUSE_BASE, sectors=((len(self.fuses), 1),), kind="fuses",
                       erasable=False, writable=False, needs_erase=False)
            )
        if self.lock:
            regions.append(
                Region(name="Lock", start=LOCK_BASE, sectors=((1, 1),), kind="lock",
                       erasable=False, needs_erase=False)
            )
        if self.signature:
            regions.append(
                Region(name="Signature", start=SIGNATURE_BASE, sectors=((len(self.signature), 1),),
                       kind="signature", erasable=False, writable=False, needs_erase=False)
            )
        for name, kind, start, size in self.extra:
            # Option bytes are written whole, without a page erase ('e' in a DfuSe layout)
            regions.append(Region(name=name, start=start, sectors=((1, size),), kind=kind, erasable=False,
                                  needs_erase=False))
        protected = ((self.boot_start, self.boot_end),) if self.boot_size else ()
        return Layout(regions=tuple(regions), protected=protected)

    def initial_contents(self) -> dict[int, bytes]:
        """Contents of the non-flash regions of a new chip."""
        out: dict[int, bytes] = {}
        if self.fuses:
            out[FUSE_BASE] = bytes(f.default for f in self.fuses)
        if self.lock:
            out[LOCK_BASE] = bytes([self.lock.default])
        if self.signature:
            out[SIGNATURE_BASE] = self.signature
        return out


def _avr(name, *, flash, page, eeprom, eeprom_page, sig, boot, fuses, lock_mask=0x3F, uf2=None,
         usb=True, aliases=(), description="", boot_note=""):
    return Chip(
        name=name,
        family="avr",
        flash_start=0,
        flash_sectors=((flash // page, page),),
        page_size=page,
        boot_start=flash - boot,
        boot_size=boot,
        eeprom_size=eeprom,
        eeprom_page=eeprom_page,
        signature=bytes(sig),
        fuses=tuple(Fuse(n, d, m) for n, d, m in fuses),
        lock=Fuse("lock", 0xFF, lock_mask),
        uf2_family=uf2,
        usb=usb,
        aliases=aliases,
        # Datasheet self-programming figures: page erase and page write
        # tWD_FLASH 4.5 ms, chip erase (of the application) ~9 ms per 4.5 ms page ratio
        timing=Timing(program_ms=4.5, erase_ms=4.5, full_erase_ms=4.5 * (flash - boot) / page / 8,
                      manifest_ms=0.0),
        description=description,
        boot_note=boot_note,
    )


def _xmega(name, *, app, boot, page, eeprom, sig, flag=0x802700, aliases=(), description=""):
    """An ATxmega: application section from 0, the fixed boot section right after it.
    ``flag``: where xusb-boot's no-init magic word lives (its README: 0x802400 on the
    ATxmega32A4U, 0x802700 on the others)."""
    return Chip(
        name=name, family="xmega", flash_start=0,
        flash_sectors=(((app + boot) // page, page),), page_size=page, boot_start=app, boot_size=boot,
        eeprom_size=eeprom, eeprom_page=32, signature=bytes(sig),
        fuses=(Fuse("fuse0", 0xFF, 0xFF), Fuse("fuse1", 0xFF, 0xFF), Fuse("fuse2", 0xFF, 0x63),
               Fuse("fuse4", 0xFE, 0x1F), Fuse("fuse5", 0xFF, 0x3F)),
        lock=Fuse("lock", 0xFF, 0xFF), aliases=aliases,
        # tFLASH page erase+write ~4 ms; the application-section erase as the ATxmega32A4U figure
        # bootkit had, scaled by size (an estimate: the datasheets give no per-size figure)
        timing=Timing(program_ms=4.0, erase_ms=4.0, full_erase_ms=50.0 * app / (32 * KiB)),
        description=description,
        boot_note=f"separate {boot // KiB} KiB boot section at 0x{app:X}",
        meta={"boot_flag_address": flag},
    )


# UF2 family ids: microsoft/uf2 utils/uf2families.json
UF2_ATMEGA32 = 0x16573617
UF2_RP2040 = 0xE48BFF56
UF2_NRF52840 = 0xADA52840
UF2_STM32F1 = 0x5EE21072
UF2_STM32F4 = 0x57755A57

BUILTIN: tuple[Chip, ...] = (
    _avr("atmega32u4", flash=32 * KiB, page=128, eeprom=1024, eeprom_page=4, sig=(0x1E, 0x95, 0x87),
         boot=4 * KiB, fuses=(("lfuse", 0x5E, 0xFF), ("hfuse", 0x99, 0xFF), ("efuse", 0xF3, 0x0F)),
         uf2=UF2_ATMEGA32, aliases=("m32u4",),
         description="Arduino Leonardo, Teensy 2.0, many LUFA boards",
         boot_note="BOOTSZ max 2048 words (4 KiB): LUFA DFU and Caterina fit it"),
    _avr("at90usb1286", flash=128 * KiB, page=256, eeprom=4096, eeprom_page=8, sig=(0x1E, 0x97, 0x82),
         boot=8 * KiB, fuses=(("lfuse", 0x5E, 0xFF), ("hfuse", 0x99, 0xFF), ("efuse", 0xF3, 0x0F)),
         aliases=("usb1286",), description="Teensy++ 2.0",
         boot_note="BOOTSZ max 4096 words (8 KiB)"),
    _avr("atmega328p", flash=32 * KiB, page=128, eeprom=1024, eeprom_page=4, sig=(0x1E, 0x95, 0x0F),
         boot=4 * KiB, fuses=(("lfuse", 0x62, 0xFF), ("hfuse", 0xD9, 0xFF), ("efuse", 0xFF, 0x07)),
         usb=False, aliases=("m328p",), description="Arduino Uno/Nano (no native USB)",
         boot_note="BOOTSZ max 2048 words (4 KiB); Optiboot uses 512 B"),
    _avr("atmega2560", flash=256 * KiB, page=256, eeprom=4096, eeprom_page=8, sig=(0x1E, 0x98, 0x01),
         boot=8 * KiB, fuses=(("lfuse", 0x62, 0xFF), ("hfuse", 0x99, 0xFF), ("efuse", 0xFF, 0x07)),
         usb=False, aliases=("m2560",), description="Arduino Mega 2560 (no native USB)",
         boot_note="BOOTSZ max 4096 words (8 KiB)"),
    _avr("attiny85", flash=8 * KiB, page=64, eeprom=512, eeprom_page=4, sig=(0x1E, 0x93, 0x0B),
         boot=2 * KiB, fuses=(("lfuse", 0x62, 0xFF), ("hfuse", 0xDF, 0xFF), ("efuse", 0xFF, 0x01)),
         lock_mask=0x03, usb=False, aliases=("t85",),
         description="Digispark (V-USB, no hardware boot section)",
         boot_note="no boot section: micronucleus keeps ~2 KiB at the top by convention"),
    # The xmega parts xusb-boot builds for (its boards and ld-scripts); figures from the
    # XMEGA AU datasheets and avrdude.conf (signature, page sizes).  The boot section is a
    # separate section after the application section; the application-table section is
    # part of the application here, as xusb-boot's APP_SECTION_SIZE counts it.
    _xmega("atxmega32a4u", app=32 * KiB, boot=4 * KiB, page=256, eeprom=1024, sig=(0x1E, 0x95, 0x41),
           flag=0x802400, aliases=("x32a4u",), description="xmega with USB; the raw-HID bootloader's home"),
    _xmega("atxmega64a4u", app=64 * KiB, boot=4 * KiB, page=256, eeprom=2048, sig=(0x1E, 0x96, 0x46),
           aliases=("x64a4u",), description="xmega with USB (alpha_split keyboards)"),
    _xmega("atxmega128a4u", app=128 * KiB, boot=8 * KiB, page=256, eeprom=2048, sig=(0x1E, 0x97, 0x46),
           aliases=("x128a4u",), description="xmega with USB, 44 pins"),
    _xmega("atxmega128a3u", app=128 * KiB, boot=8 * KiB, page=512, eeprom=2048, sig=(0x1E, 0x97, 0x42),
           aliases=("x128a3u",), description="xmega with USB, 64 pins"),
    _xmega("atxmega256a3u", app=256 * KiB, boot=8 * KiB, page=512, eeprom=4096, sig=(0x1E, 0x98, 0x42),
           aliases=("x256a3u",), description="xmega with USB, 64 pins, 256 KiB"),
    Chip(
        name="stm32f103c8", family="stm32", flash_start=0x08000000,
        flash_sectors=((64, 1 * KiB),), page_size=1 * KiB,
        boot_start=0x08000000, boot_size=8 * KiB, uf2_family=UF2_STM32F1,
        extra=(("Option Bytes", "option", 0x1FFFF800, 16),), aliases=("bluepill",),
        # RM0008: page erase 20-40 ms, half-word program 52 us (x512 per KiB)
        timing=Timing(program_ms=26.6, erase_ms=20.0, full_erase_ms=20.0, manifest_ms=0.0),
        description="Blue Pill; DFU bootloaders such as dapboot keep the first 8 KiB",
        boot_note="8 KiB flash bootloader at 0x08000000",
    ),
    Chip(
        name="stm32f411", family="stm32", flash_start=0x08000000,
        flash_sectors=((4, 16 * KiB), (1, 64 * KiB), (3, 128 * KiB)), page_size=16 * KiB,
        # The DfuSe bootloader is ST's ROM in system memory, not in flash.
        boot_start=0x08000000, boot_size=0, uf2_family=UF2_STM32F4,
        extra=(("Option Bytes", "option", 0x1FFFC000, 16),), aliases=("stm32f411ce", "blackpill"),
        # RM0383 / DS10314: sector erase 16 KiB 250 ms, byte program x32 16 us
        timing=Timing(program_ms=64.0, erase_ms=250.0, full_erase_ms=4000.0, manifest_ms=0.0),
        description="Black Pill; ROM DfuSe bootloader",
        boot_note="system-memory (ROM) bootloader: no flash is reserved",
    ),
    Chip(
        name="rp2040", family="rp2040", flash_start=0x10000000,
        flash_sectors=((512, 4 * KiB),), page_size=256, boot_start=0x10000000, boot_size=0,
        uf2_family=UF2_RP2040, aliases=("pico",),
        # W25Q16JV: page program 0.4 ms typ, 4 KiB sector erase 45 ms typ
        timing=Timing(program_ms=0.4, erase_ms=45.0, full_erase_ms=5000.0),
        description="Raspberry Pi Pico (2 MiB QSPI flash); ROM UF2 bootloader",
        boot_note="mask-ROM bootloader: no flash is reserved",
    ),
    Chip(
        name="nrf52840", family="nrf52", flash_start=0,
        flash_sectors=((256, 4 * KiB),), page_size=4 * KiB,
        # Adafruit nRF52 bootloader + settings occupy the top 48 KiB.
        boot_start=0xF4000, boot_size=48 * KiB, uf2_family=UF2_NRF52840, aliases=("nrf52",),
        # nRF52840 PS: page erase 85 ms, word write 41 us (x1024 per page)
        timing=Timing(program_ms=42.0, erase_ms=85.0, full_erase_ms=169.0),
        description="Adafruit Feather nRF52840; UF2 bootloader",
        boot_note="Adafruit bootloader at 0xF4000",
    ),
)


class ChipDatabase:
    def __init__(self, chips=BUILTIN):
        self._chips: dict[str, Chip] = {}
        for c in chips:
            self.add(c)

    def add(self, chip: Chip) -> None:
        self._chips[chip.name.lower()] = chip

    def __iter__(self):
        return iter(self._chips.values())

    def get(self, name: str) -> Chip:
        key = name.lower()
        if key in self._chips:
            return self._chips[key]
        for chip in self._chips.values():
            if key in (a.lower() for a in chip.aliases):
                return chip
        known = ", ".join(sorted(self._chips))
        raise KeyError(f"unknown chip {name!r} (known: {known}; add one with --chip-file FILE.toml)")


CHIPS = ChipDatabase()


def get_chip(name: str) -> Chip:
    return CHIPS.get(name)


def chips_by_signature(sig: bytes) -> list[Chip]:
    """Every chip whose device signature is ``sig`` (the three bytes an AVR or
    ATxmega answers to "read signature"), in database order.

    Several parts share a signature (avrdude.conf gives the AT90USB1286 and
    AT90USB1287 the same 1E 97 82): the caller picks, or asks the user, when
    the list holds more than one.  Chips added with ``--chip-file`` are
    searched too.  An empty ``sig`` matches nothing."""
    sig = bytes(sig)
    if not sig:
        return []
    return [chip for chip in CHIPS if chip.signature == sig]


class ChipFileError(ValueError):
    pass


_SIZE_UNITS = {"": 1, "B": 1, "K": 1024, "KIB": 1024, "M": 1024 * 1024, "MIB": 1024 * 1024}


def parse_size(value, path, key, *, positive: bool = False) -> int:
    """A size in a chip file or a product profile: an int, '32K', '4 KiB', '1M' or '0x8000'
    (ChipFileError naming the file and key otherwise)."""
    size = None
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str):
        text = value.strip().upper()
        if text.startswith("0X"):
            try:
                size = int(text, 16)
            except ValueError:
                size = None
        else:
            num = text.rstrip("KMIB ")
            unit = text[len(num):].strip()
            if num.isdigit() and unit in _SIZE_UNITS:
                size = int(num) * _SIZE_UNITS[unit]
    if size is None:
        raise ChipFileError(f"{path}: key {key!r}: expected a size such as 32768, '32K' or '0x8000', got {value!r}")
    if size < 0 or (positive and size == 0):
        raise ChipFileError(f"{path}: key {key!r}: must be {'above' if positive else 'at least'} zero, got {value!r}")
    return size


def read_toml(path: str | Path, error: type[Exception] = ValueError) -> dict:
    """A TOML file as a dict, or ``error("FILE: what is wrong")`` on one line: a file
    that cannot be read, bytes that are not UTF-8 (TOML 1.0: "a TOML file must be a
    valid UTF-8 encoded Unicode document"), a syntax error, or nesting so deep that
    the parser runs out of stack (tomllib recurses once per level)."""
    if sys.version_info >= (3, 11):  # imported here: only --chip-file and --product need it
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise error(f"{path}: line {line}: not UTF-8 (byte 0x{raw[exc.start]:02X} at offset {exc.start}); "
                    "TOML files are UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:
        raise error(f"{path}: not valid TOML: arrays or tables nested too deeply") from None


def load_chip_file(path: str | Path, *, register: bool = True) -> Chip:
    """Read a chip from TOML and (by default) add it to the database.

    ```toml
    [chip]
    name = "atmega16u2"
    family = "avr"               # avr, xmega, stm32, rp2040, nrf52
    flash = "16K"                # or flash_sectors = [[4, "16K"], [1, "64K"]]
    flash_start = 0
    page_size = 128
    boot_size = "4K"             # protected bootloader region
    boot_at = "top"              # or "bottom"
    eeprom = 512
    signature = [0x1E, 0x94, 0x89]
    uf2_family = 0x16573617
    ```
    """
    path = Path(path)
    doc = read_toml(path, ChipFileError)
    table = doc.get("chip")
    if not isinstance(table, dict):
        raise ChipFileError(f"{path}: needs a [chip] table")
    allowed = {"name", "family", "flash", "flash_sectors", "flash_start", "page_size", "boot_size", "boot_at",
               "eeprom", "eeprom_page", "signature", "uf2_family", "usb", "aliases", "description",
               "fuses", "program_ms", "erase_ms"}
    for key in table:
        if key not in allowed:
            raise ChipFileError(f"{path}: unknown key chip.{key} (allowed: {', '.join(sorted(allowed))})")
    for key in ("name", "family", "page_size"):
        if key not in table:
            raise ChipFileError(f"{path}: missing key chip.{key}")
    family = table["family"]
    if family not in ("avr", "xmega", "stm32", "rp2040", "nrf52"):
        raise ChipFileError(f"{path}: chip.family must be one of avr, xmega, stm32, rp2040, nrf52, got {family!r}")
    page = parse_size(table["page_size"], path, "chip.page_size", positive=True)
    if "flash_sectors" in table:
        sectors = tuple((int(n), parse_size(s, path, "chip.flash_sectors", positive=True)) for n, s in table["flash_sectors"])
    elif "flash" in table:
        flash = parse_size(table["flash"], path, "chip.flash", positive=True)
        if flash % page:
            raise ChipFileError(f"{path}: chip.flash ({flash}) is not a multiple of chip.page_size ({page})")
        sectors = ((flash // page, page),)
    else:
        raise ChipFileError(f"{path}: needs chip.flash or chip.flash_sectors")
    start = parse_size(table.get("flash_start", 0), path, "chip.flash_start")
    boot = parse_size(table.get("boot_size", 0), path, "chip.boot_size")
    flash_size = sum(n * s for n, s in sectors)
    if boot > flash_size:
        raise ChipFileError(f"{path}: chip.boot_size ({boot}) is larger than the flash ({flash_size})")
    at = table.get("boot_at", "top" if family == "avr" else "bottom")
    if at not in ("top", "bottom"):
        raise ChipFileError(f"{path}: chip.boot_at must be 'top' or 'bottom', got {at!r}")
    sig = table.get("signature", [])
    fuses = tuple(Fuse(n, int(v[0]), int(v[1])) for n, v in table.get("fuses", {}).items())
    chip = Chip(
        name=str(table["name"]),
        family=family,
        flash_start=start,
        flash_sectors=sectors,
        page_size=page,
        boot_start=start + flash_size - boot if at == "top" else start,
        boot_size=boot,
        eeprom_size=parse_size(table.get("eeprom", 0), path, "chip.eeprom"),
        eeprom_page=int(table.get("eeprom_page", 4 if table.get("eeprom") else 0)),
        signature=bytes(sig),
        fuses=fuses,
        lock=Fuse("lock", 0xFF, 0x3F) if family in ("avr", "xmega") else None,
        uf2_family=table.get("uf2_family"),
        usb=bool(table.get("usb", True)),
        aliases=tuple(table.get("aliases", ())),
        timing=Timing(program_ms=float(table.get("program_ms", 4.5)), erase_ms=float(table.get("erase_ms", 4.5))),
        description=str(table.get("description", f"from {path.name}")),
    )
    if register:
        CHIPS.add(chip)
    return chip
