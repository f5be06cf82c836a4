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

# The chip families (Chip.family): what `bootkit chips --family` filters on and a chip
# file may name
FAMILIES = ("avr", "xmega", "stm32", "samd", "esp32", "nrf52", "rp2040", "rp2350")


@dataclass(frozen=True)
class Fuse:
    name: str  # lfuse, hfuse, efuse (avrdude's names)
    default: int
    mask: int  # bits that exist; unimplemented bits read as 1


@dataclass(frozen=True)
class Chip:
    name: str
    family: str  # avr, xmega, stm32, samd, esp32, nrf52, rp2040, rp2350 (FAMILIES)
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


def _stm32(name, *, sectors, boot=0, uf2, option=None, program_ms, erase_ms, full_erase_ms, aliases=(),
           description="", boot_note="system-memory (ROM) DfuSe bootloader: no flash is reserved"):
    """An STM32 at 0x08000000.  ``sectors``: the DfuSe layout's (count, size) groups, as the ROM
    bootloader reports them (AN2606; dfu-util -l).  ``page_size`` is the first sector's size, as
    for the STM32F411 before (the unit a DfuSe host erases).  ``boot``: bytes a flash-resident
    bootloader keeps at the bottom (0 for the ROM bootloader).  ``option``: (address, size) of
    the option bytes where the reference manual maps them into memory."""
    return Chip(
        name=name, family="stm32", flash_start=0x08000000, flash_sectors=sectors, page_size=sectors[0][1],
        boot_start=0x08000000, boot_size=boot, uf2_family=uf2,
        extra=(("Option Bytes", "option", option[0], option[1]),) if option else (),
        aliases=aliases, timing=Timing(program_ms=program_ms, erase_ms=erase_ms, full_erase_ms=full_erase_ms),
        description=description, boot_note=boot_note,
    )


def _spi_flash(name, family, *, start, size, boot_start=None, boot=0, uf2, aliases=(), description="",
               boot_note=""):
    """A chip whose flash is an external QSPI NOR part: 4 KiB erase sectors, 256-byte program
    pages (the JEDEC SFDP figures of the W25Q-class parts these boards carry).  Timing: W25Q32JV
    datasheet section 9.6, page program 0.4 ms typ, 4 KiB sector erase 45 ms typ, chip erase
    10 s typ per 4 MiB."""
    return Chip(
        name=name, family=family, flash_start=start, flash_sectors=((size // (4 * KiB), 4 * KiB),), page_size=256,
        boot_start=start if boot_start is None else boot_start, boot_size=boot, uf2_family=uf2, aliases=aliases,
        timing=Timing(program_ms=0.4, erase_ms=45.0, full_erase_ms=10000.0 * size / (4 * 1024 * KiB)),
        description=description, boot_note=boot_note,
    )


# UF2 family ids: microsoft/uf2 utils/uf2families.json
UF2_ATMEGA32 = 0x16573617
UF2_RP2040 = 0xE48BFF56
UF2_NRF52840 = 0xADA52840
UF2_STM32F1 = 0x5EE21072
UF2_STM32F4 = 0x57755A57
UF2_STM32F0 = 0x647824B6
UF2_STM32F3 = 0x6B846188
UF2_STM32F7 = 0x53B80F00
UF2_STM32G0 = 0x300F5633
UF2_STM32G4 = 0x4C71240A
UF2_STM32H7 = 0x6DB66082
UF2_STM32L4 = 0x00FF6919
UF2_SAMD21 = 0x68ED2B88
UF2_SAMD51 = 0x55114460
UF2_ESP32S2 = 0xBFDD4EEE
UF2_ESP32S3 = 0xC47E5767
UF2_NRF52833 = 0x621E937A
UF2_RP2350_ARM_S = 0xE48BFF59  # "Raspberry Pi RP2350, Secure Arm image" (picotool's default)

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
    # ---- Everything below was added for issue 21 (the chip database).  Sources, per column:
    # AVR and ATxmega: signature, flash size and SPM page, EEPROM size and page: avrdude.conf
    #   (avrdude 7.1, the Debian package), the part named by the alias that is an avrdude id
    #   (tests/memory/test_chipdb.py compares them with the installed file);
    # boot (USB AVRs): the bootloader size in dfu-programmer's target table (src/arguments.c,
    #   "BootSz": 4 KiB, or 8 KiB on the AT90USB64x/128x), which is Atmel's DFU bootloader's;
    # boot (other ATmegas): the largest BOOTSZ boot section of the datasheet's "Boot Loader
    #   Parameters" table, as for the ATmega328P/2560 above (Optiboot-class loaders fit in it);
    # fuses: factory defaults from each datasheet's "Fuse Bits" tables, masks = the bits the
    #   datasheet defines (never more than avrdude.conf's write pattern carries); lock mask:
    #   BLB12..LB1 (0x3F) on parts with a boot section, LB2..LB1 (0x03) on the ATtinys.
    # -- USB AVRs in dfu-programmer's target table (its atmega32u6 is not in avrdude.conf and
    #    was left out: none of its figures could be checked)
    # ATmega8U2/16U2/32U2 datasheet 7799: fuses 0x5E/0xD9/0xF4 (HWBE programmed), efuse bits 3:0
    _avr("atmega8u2", flash=8 * KiB, page=128, eeprom=512, eeprom_page=4, sig=(0x1E, 0x93, 0x89),
         boot=4 * KiB, fuses=(("lfuse", 0x5E, 0xFF), ("hfuse", 0xD9, 0xFF), ("efuse", 0xF4, 0x0F)),
         aliases=("m8u2",), description="USB-serial chip of the first Arduino Uno/Mega boards",
         boot_note="BOOTSZ max 2048 words (4 KiB): Atmel's DFU bootloader"),
    _avr("atmega16u2", flash=16 * KiB, page=128, eeprom=512, eeprom_page=4, sig=(0x1E, 0x94, 0x89),
         boot=4 * KiB, fuses=(("lfuse", 0x5E, 0xFF), ("hfuse", 0xD9, 0xFF), ("efuse", 0xF4, 0x0F)),
         aliases=("m16u2",), description="USB-serial chip of the Arduino Uno/Mega 2560 R3",
         boot_note="BOOTSZ max 2048 words (4 KiB): Atmel's DFU bootloader"),
    _avr("atmega32u2", flash=32 * KiB, page=128, eeprom=1024, eeprom_page=4, sig=(0x1E, 0x95, 0x8A),
         boot=4 * KiB, fuses=(("lfuse", 0x5E, 0xFF), ("hfuse", 0xD9, 0xFF), ("efuse", 0xF4, 0x0F)),
         aliases=("m32u2",), description="LUFA boards, keyboards",
         boot_note="BOOTSZ max 2048 words (4 KiB): Atmel's DFU bootloader"),
    # ATmega16U4/32U4 datasheet 7766 (as the atmega32u4 above)
    _avr("atmega16u4", flash=16 * KiB, page=128, eeprom=512, eeprom_page=4, sig=(0x1E, 0x94, 0x88),
         boot=4 * KiB, fuses=(("lfuse", 0x5E, 0xFF), ("hfuse", 0x99, 0xFF), ("efuse", 0xF3, 0x0F)),
         aliases=("m16u4",), description="the 16 KiB ATmega32U4",
         boot_note="BOOTSZ max 2048 words (4 KiB): Atmel's DFU bootloader"),
    # AT90USB82/162 datasheet 7707: fuses 0x5E/0xD9/0xF4
    _avr("at90usb82", flash=8 * KiB, page=128, eeprom=512, eeprom_page=4, sig=(0x1E, 0x93, 0x82),
         boot=4 * KiB, fuses=(("lfuse", 0x5E, 0xFF), ("hfuse", 0xD9, 0xFF), ("efuse", 0xF4, 0x0F)),
         aliases=("usb82",), description="8 KiB USB AVR",
         boot_note="BOOTSZ max 2048 words (4 KiB): Atmel's DFU bootloader"),
    _avr("at90usb162", flash=16 * KiB, page=128, eeprom=512, eeprom_page=4, sig=(0x1E, 0x94, 0x82),
         boot=4 * KiB, fuses=(("lfuse", 0x5E, 0xFF), ("hfuse", 0xD9, 0xFF), ("efuse", 0xF4, 0x0F)),
         aliases=("usb162",), description="Teensy 1.0, Minimus",
         boot_note="BOOTSZ max 2048 words (4 KiB): Atmel's DFU bootloader"),
    # AT90USB646/647/1286/1287 datasheet 7593 (as the at90usb1286 above)
    _avr("at90usb646", flash=64 * KiB, page=256, eeprom=2048, eeprom_page=8, sig=(0x1E, 0x96, 0x82),
         boot=8 * KiB, fuses=(("lfuse", 0x5E, 0xFF), ("hfuse", 0x99, 0xFF), ("efuse", 0xF3, 0x0F)),
         aliases=("usb646",), description="Teensy++ 1.0",
         boot_note="BOOTSZ max 4096 words (8 KiB): Atmel's DFU bootloader"),
    _avr("at90usb647", flash=64 * KiB, page=256, eeprom=2048, eeprom_page=8, sig=(0x1E, 0x96, 0x82),
         boot=8 * KiB, fuses=(("lfuse", 0x5E, 0xFF), ("hfuse", 0x99, 0xFF), ("efuse", 0xF3, 0x0F)),
         aliases=("usb647",), description="USB OTG AVR, 64 KiB (same signature as the AT90USB646)",
         boot_note="BOOTSZ max 4096 words (8 KiB): Atmel's DFU bootloader"),
    _avr("at90usb1287", flash=128 * KiB, page=256, eeprom=4096, eeprom_page=8, sig=(0x1E, 0x97, 0x82),
         boot=8 * KiB, fuses=(("lfuse", 0x5E, 0xFF), ("hfuse", 0x99, 0xFF), ("efuse", 0xF3, 0x0F)),
         aliases=("usb1287",), description="AT90USBKey (same signature as the AT90USB1286)",
         boot_note="BOOTSZ max 4096 words (8 KiB): Atmel's DFU bootloader"),
    # -- ATmegas without USB that AVRprog/USBasp/Arduino-as-ISP users program
    # ATmega8 datasheet 2486: fuses 0xE1/0xD9, no efuse
    _avr("atmega8", flash=8 * KiB, page=64, eeprom=512, eeprom_page=4, sig=(0x1E, 0x93, 0x07),
         boot=2 * KiB, fuses=(("lfuse", 0xE1, 0xFF), ("hfuse", 0xD9, 0xFF)),
         usb=False, aliases=("m8",), description="classic ATmega8 (no native USB)",
         boot_note="BOOTSZ max 1024 words (2 KiB)"),
    # ATmega16 datasheet 2466 / ATmega32 datasheet 2503: fuses 0xE1/0x99, no efuse
    _avr("atmega16", flash=16 * KiB, page=128, eeprom=512, eeprom_page=4, sig=(0x1E, 0x94, 0x03),
         boot=2 * KiB, fuses=(("lfuse", 0xE1, 0xFF), ("hfuse", 0x99, 0xFF)),
         usb=False, aliases=("m16",), description="classic 40-pin ATmega16 (no native USB)",
         boot_note="BOOTSZ max 1024 words (2 KiB)"),
    _avr("atmega32", flash=32 * KiB, page=128, eeprom=1024, eeprom_page=4, sig=(0x1E, 0x95, 0x02),
         boot=4 * KiB, fuses=(("lfuse", 0xE1, 0xFF), ("hfuse", 0x99, 0xFF)),
         usb=False, aliases=("m32",), description="classic 40-pin ATmega32 (no native USB)",
         boot_note="BOOTSZ max 2048 words (4 KiB)"),
    # ATmega128 datasheet 2467: fuses 0xE1/0x99/0xFD (M103C programmed), efuse bits 1:0
    _avr("atmega128", flash=128 * KiB, page=256, eeprom=4096, eeprom_page=8, sig=(0x1E, 0x97, 0x02),
         boot=8 * KiB, fuses=(("lfuse", 0xE1, 0xFF), ("hfuse", 0x99, 0xFF), ("efuse", 0xFD, 0x03)),
         usb=False, aliases=("m128",), description="ATmega128 (no native USB)",
         boot_note="BOOTSZ max 4096 words (8 KiB)"),
    # ATmega48A/PA/88A/PA/168A/PA/328/P datasheet 8271: 0x62/0xDF/0xF9 (88/168: BOOTSZ in efuse)
    _avr("atmega88", flash=8 * KiB, page=64, eeprom=512, eeprom_page=4, sig=(0x1E, 0x93, 0x0A),
         boot=2 * KiB, fuses=(("lfuse", 0x62, 0xFF), ("hfuse", 0xDF, 0xFF), ("efuse", 0xF9, 0x07)),
         usb=False, aliases=("m88",), description="ATmega88 (no native USB)",
         boot_note="BOOTSZ max 1024 words (2 KiB)"),
    _avr("atmega168", flash=16 * KiB, page=128, eeprom=512, eeprom_page=4, sig=(0x1E, 0x94, 0x06),
         boot=2 * KiB, fuses=(("lfuse", 0x62, 0xFF), ("hfuse", 0xDF, 0xFF), ("efuse", 0xF9, 0x07)),
         usb=False, aliases=("m168",), description="Arduino Diecimila/Nano 2 (no native USB)",
         boot_note="BOOTSZ max 1024 words (2 KiB)"),
    _avr("atmega168p", flash=16 * KiB, page=128, eeprom=512, eeprom_page=4, sig=(0x1E, 0x94, 0x0B),
         boot=2 * KiB, fuses=(("lfuse", 0x62, 0xFF), ("hfuse", 0xDF, 0xFF), ("efuse", 0xF9, 0x07)),
         usb=False, aliases=("m168p",), description="ATmega168P (no native USB)",
         boot_note="BOOTSZ max 1024 words (2 KiB)"),
    _avr("atmega328", flash=32 * KiB, page=128, eeprom=1024, eeprom_page=4, sig=(0x1E, 0x95, 0x14),
         boot=4 * KiB, fuses=(("lfuse", 0x62, 0xFF), ("hfuse", 0xD9, 0xFF), ("efuse", 0xFF, 0x07)),
         usb=False, aliases=("m328",), description="the non-picoPower ATmega328 (no native USB)",
         boot_note="BOOTSZ max 2048 words (4 KiB); Optiboot uses 512 B"),
    # ATmega164A/PA/324A/PA/644A/PA/1284/P datasheet 8272: fuses 0x62/0x99/0xFF, efuse bits 2:0
    _avr("atmega644p", flash=64 * KiB, page=256, eeprom=2048, eeprom_page=8, sig=(0x1E, 0x96, 0x0A),
         boot=8 * KiB, fuses=(("lfuse", 0x62, 0xFF), ("hfuse", 0x99, 0xFF), ("efuse", 0xFF, 0x07)),
         usb=False, aliases=("m644p",), description="Sanguino, 3D-printer boards (no native USB)",
         boot_note="BOOTSZ max 4096 words (8 KiB)"),
    _avr("atmega1284p", flash=128 * KiB, page=256, eeprom=4096, eeprom_page=8, sig=(0x1E, 0x97, 0x05),
         boot=8 * KiB, fuses=(("lfuse", 0x62, 0xFF), ("hfuse", 0x99, 0xFF), ("efuse", 0xFF, 0x07)),
         usb=False, aliases=("m1284p",), description="Melzi/Sanguinololu 3D printers (no native USB)",
         boot_note="BOOTSZ max 4096 words (8 KiB)"),
    # ATmega640/1280/1281/2560/2561 datasheet 2549 (as the atmega2560 above)
    _avr("atmega1280", flash=128 * KiB, page=256, eeprom=4096, eeprom_page=8, sig=(0x1E, 0x97, 0x03),
         boot=8 * KiB, fuses=(("lfuse", 0x62, 0xFF), ("hfuse", 0x99, 0xFF), ("efuse", 0xFF, 0x07)),
         usb=False, aliases=("m1280",), description="Arduino Mega (first version, no native USB)",
         boot_note="BOOTSZ max 4096 words (8 KiB)"),
    # -- ATtinys: no boot section (no BOOTSZ fuses), so nothing is reserved: they are
    #    programmed over ISP (AVRprog, USBasp); the attiny85 above keeps micronucleus' 2 KiB.
    # ATtiny13A datasheet 8126: fuses 0x6A/0xFF, hfuse bits 4:0
    _avr("attiny13a", flash=1 * KiB, page=32, eeprom=64, eeprom_page=4, sig=(0x1E, 0x90, 0x07),
         boot=0, fuses=(("lfuse", 0x6A, 0xFF), ("hfuse", 0xFF, 0x1F)),
         lock_mask=0x03, usb=False, aliases=("t13a",), description="ATtiny13A (no native USB)",
         boot_note="no boot section: programmed over ISP"),
    # ATtiny25/45/85 datasheet 2586 (as the attiny85 above)
    _avr("attiny25", flash=2 * KiB, page=32, eeprom=128, eeprom_page=4, sig=(0x1E, 0x91, 0x08),
         boot=0, fuses=(("lfuse", 0x62, 0xFF), ("hfuse", 0xDF, 0xFF), ("efuse", 0xFF, 0x01)),
         lock_mask=0x03, usb=False, aliases=("t25",), description="ATtiny25 (no native USB)",
         boot_note="no boot section: programmed over ISP"),
    _avr("attiny45", flash=4 * KiB, page=64, eeprom=256, eeprom_page=4, sig=(0x1E, 0x92, 0x06),
         boot=0, fuses=(("lfuse", 0x62, 0xFF), ("hfuse", 0xDF, 0xFF), ("efuse", 0xFF, 0x01)),
         lock_mask=0x03, usb=False, aliases=("t45",), description="ATtiny45 (no native USB)",
         boot_note="no boot section: programmed over ISP"),
    # ATtiny24A/44A/84A datasheet 8183: fuses 0x62/0xDF/0xFF, efuse bit 0 (SELFPRGEN)
    _avr("attiny44", flash=4 * KiB, page=64, eeprom=256, eeprom_page=4, sig=(0x1E, 0x92, 0x07),
         boot=0, fuses=(("lfuse", 0x62, 0xFF), ("hfuse", 0xDF, 0xFF), ("efuse", 0xFF, 0x01)),
         lock_mask=0x03, usb=False, aliases=("t44",), description="ATtiny44 (no native USB)",
         boot_note="no boot section: programmed over ISP"),
    _avr("attiny84", flash=8 * KiB, page=64, eeprom=512, eeprom_page=4, sig=(0x1E, 0x93, 0x0C),
         boot=0, fuses=(("lfuse", 0x62, 0xFF), ("hfuse", 0xDF, 0xFF), ("efuse", 0xFF, 0x01)),
         lock_mask=0x03, usb=False, aliases=("t84",), description="ATtiny84 (no native USB)",
         boot_note="no boot section: programmed over ISP"),
    # ATtiny2313A/4313 datasheet 8246: fuses 0x64/0xDF/0xFF, efuse bit 0 (SELFPRGEN)
    _avr("attiny2313", flash=2 * KiB, page=32, eeprom=128, eeprom_page=4, sig=(0x1E, 0x91, 0x0A),
         boot=0, fuses=(("lfuse", 0x64, 0xFF), ("hfuse", 0xDF, 0xFF), ("efuse", 0xFF, 0x01)),
         lock_mask=0x03, usb=False, aliases=("t2313",), description="ATtiny2313 (no native USB)",
         boot_note="no boot section: programmed over ISP"),
    _avr("attiny4313", flash=4 * KiB, page=64, eeprom=256, eeprom_page=4, sig=(0x1E, 0x92, 0x0D),
         boot=0, fuses=(("lfuse", 0x64, 0xFF), ("hfuse", 0xDF, 0xFF), ("efuse", 0xFF, 0x01)),
         lock_mask=0x03, usb=False, aliases=("t4313",), description="ATtiny4313 (no native USB)",
         boot_note="no boot section: programmed over ISP"),
    # -- The other ATxmega parts in dfu-programmer's target table.  Application and boot
    #    section sizes, flash page: avrdude.conf's "application" and "boot" memories (where
    #    dfu-programmer differs, its figure is its DFU transfer unit, not the part's: its
    #    128A1U page of 256 and 16C4 boot section of 1 KiB); the fuse bytes as above.
    _xmega("atxmega16a4u", app=16 * KiB, boot=4 * KiB, page=256, eeprom=1024, sig=(0x1E, 0x94, 0x41),
           aliases=("x16a4u",), description="xmega with USB, 44 pins, 16 KiB"),
    _xmega("atxmega64a3u", app=64 * KiB, boot=4 * KiB, page=256, eeprom=2048, sig=(0x1E, 0x96, 0x42),
           aliases=("x64a3u",), description="xmega with USB, 64 pins, 64 KiB"),
    _xmega("atxmega192a3u", app=192 * KiB, boot=8 * KiB, page=512, eeprom=2048, sig=(0x1E, 0x97, 0x44),
           aliases=("x192a3u",), description="xmega with USB, 64 pins, 192 KiB"),
    _xmega("atxmega256a3bu", app=256 * KiB, boot=8 * KiB, page=512, eeprom=4096, sig=(0x1E, 0x98, 0x43),
           aliases=("x256a3bu",), description="xmega with USB and battery backup (XMEGA-A3BU Xplained)"),
    _xmega("atxmega64a1u", app=64 * KiB, boot=4 * KiB, page=256, eeprom=2048, sig=(0x1E, 0x96, 0x4E),
           aliases=("x64a1u",), description="xmega with USB, 100 pins, 64 KiB"),
    _xmega("atxmega128a1u", app=128 * KiB, boot=8 * KiB, page=512, eeprom=2048, sig=(0x1E, 0x97, 0x4C),
           aliases=("x128a1u",), description="xmega with USB, 100 pins (XMEGA-A1U Xplained Pro)"),
    _xmega("atxmega64b1", app=64 * KiB, boot=4 * KiB, page=256, eeprom=2048, sig=(0x1E, 0x96, 0x52),
           aliases=("x64b1",), description="xmega with USB and LCD driver, 100 pins"),
    _xmega("atxmega128b1", app=128 * KiB, boot=8 * KiB, page=256, eeprom=2048, sig=(0x1E, 0x97, 0x4D),
           aliases=("x128b1",), description="xmega with USB and LCD driver, 100 pins (XMEGA-B1 Xplained)"),
    _xmega("atxmega64b3", app=64 * KiB, boot=4 * KiB, page=256, eeprom=2048, sig=(0x1E, 0x96, 0x51),
           aliases=("x64b3",), description="xmega with USB and LCD driver, 64 pins"),
    _xmega("atxmega128b3", app=128 * KiB, boot=8 * KiB, page=256, eeprom=2048, sig=(0x1E, 0x97, 0x4B),
           aliases=("x128b3",), description="xmega with USB and LCD driver, 64 pins"),
    _xmega("atxmega16c4", app=16 * KiB, boot=4 * KiB, page=256, eeprom=1024, sig=(0x1E, 0x94, 0x43),
           aliases=("x16c4",), description="low-cost xmega with USB, 44 pins, 16 KiB"),
    _xmega("atxmega64c3", app=64 * KiB, boot=4 * KiB, page=256, eeprom=2048, sig=(0x1E, 0x96, 0x49),
           aliases=("x64c3",), description="low-cost xmega with USB, 64 pins, 64 KiB"),
    _xmega("atxmega128c3", app=128 * KiB, boot=8 * KiB, page=512, eeprom=2048, sig=(0x1E, 0x97, 0x52),
           aliases=("x128c3",), description="low-cost xmega with USB, 64 pins, 128 KiB"),
    _xmega("atxmega256c3", app=256 * KiB, boot=8 * KiB, page=512, eeprom=4096, sig=(0x1E, 0x98, 0x46),
           aliases=("x256c3",), description="low-cost xmega with USB, 64 pins, 256 KiB"),
    _xmega("atxmega384c3", app=384 * KiB, boot=8 * KiB, page=512, eeprom=4096, sig=(0x1E, 0x98, 0x45),
           aliases=("x384c3",), description="low-cost xmega with USB, 64 pins, 384 KiB"),
    # -- STM32 with a USB DFU (DfuSe) bootloader in system memory (AN2606 "STM32 microcontroller
    #    system memory boot mode", the USB DFU column).  Sector layouts: the reference manual's
    #    "Flash memory organization" table (the layout the ROM reports to dfu-util -l); UF2
    #    family: uf2families.json's per-series id (tinyuf2 builds every F4 for STM32F4).
    #    Timing: the datasheet's "Flash memory characteristics" table (typical), per first
    #    sector (program_ms, erase_ms) and for a mass erase.
    # RM0091 3.2 / DS9826: 1 KiB pages; 16-bit program 53.5 us, page and mass erase 20 ms (min)
    _stm32("stm32f042k6", sectors=((32, 1 * KiB),), uf2=UF2_STM32F0, option=(0x1FFFF800, 16),
           program_ms=27.4, erase_ms=20.0, full_erase_ms=20.0, description="crystal-less USB STM32F0"),
    # RM0091 3.2 / DS9826: 2 KiB pages on the 128 KiB parts
    _stm32("stm32f072rb", sectors=((64, 2 * KiB),), uf2=UF2_STM32F0, option=(0x1FFFF800, 16),
           program_ms=54.8, erase_ms=20.0, full_erase_ms=20.0, description="Nucleo-F072RB, 32F072B-DISCO"),
    # RM0008 3.3.3 (medium density: 128 x 1 KiB); no ROM DFU, as the stm32f103c8 above: dapboot
    _stm32("stm32f103cb", sectors=((128, 1 * KiB),), boot=8 * KiB, uf2=UF2_STM32F1, option=(0x1FFFF800, 16),
           program_ms=26.6, erase_ms=20.0, full_erase_ms=20.0,
           description="128 KiB STM32F103 (many Blue Pills); DFU bootloaders such as dapboot keep 8 KiB",
           boot_note="8 KiB flash bootloader at 0x08000000"),
    # RM0316 4.2.1 / DS9118: 2 KiB pages; 16-bit program 53.5 us, page erase 20 ms (min)
    _stm32("stm32f303cc", sectors=((128, 2 * KiB),), uf2=UF2_STM32F3, option=(0x1FFFF800, 16),
           program_ms=54.8, erase_ms=20.0, full_erase_ms=20.0, description="STM32F303 with USB FS"),
    # RM0368 3.3 / DS9716: 4x16, 1x64, 1x128 KiB; as the stm32f411 (x32: 16 KiB sector 250 ms)
    _stm32("stm32f401cc", sectors=((4, 16 * KiB), (1, 64 * KiB), (1, 128 * KiB)), uf2=UF2_STM32F4,
           option=(0x1FFFC000, 16), program_ms=64.0, erase_ms=250.0, full_erase_ms=2000.0,
           aliases=("blackpill-f401",), description="Black Pill (F401 version)"),
    # RM0090 3.3 / DS8626: 4x16, 1x64, 7x128 KiB; x32: 16 KiB sector 250 ms, mass erase 8 s
    _stm32("stm32f405rg", sectors=((4, 16 * KiB), (1, 64 * KiB), (7, 128 * KiB)), uf2=UF2_STM32F4,
           option=(0x1FFFC000, 16), program_ms=64.0, erase_ms=250.0, full_erase_ms=8000.0,
           description="Adafruit Feather STM32F405, pyboard"),
    _stm32("stm32f407vg", sectors=((4, 16 * KiB), (1, 64 * KiB), (7, 128 * KiB)), uf2=UF2_STM32F4,
           option=(0x1FFFC000, 16), program_ms=64.0, erase_ms=250.0, full_erase_ms=8000.0,
           description="STM32F4DISCOVERY"),
    # RM0390 3.3 / DS10693: 4x16, 1x64, 3x128 KiB
    _stm32("stm32f446re", sectors=((4, 16 * KiB), (1, 64 * KiB), (3, 128 * KiB)), uf2=UF2_STM32F4,
           option=(0x1FFFC000, 16), program_ms=64.0, erase_ms=250.0, full_erase_ms=4000.0,
           description="Nucleo-F446RE"),
    # RM0385 3.3.1: 4x32, 1x128, 3x256 KiB; option bytes 0x1FFF0000 (32 bytes).  Timing: the F4
    # x32 word time over a 32 KiB sector; 32 KiB sector erase as DS10916's (estimate for the rest)
    _stm32("stm32f746ng", sectors=((4, 32 * KiB), (1, 128 * KiB), (3, 256 * KiB)), uf2=UF2_STM32F7,
           option=(0x1FFF0000, 32), program_ms=128.0, erase_ms=400.0, full_erase_ms=8000.0,
           description="32F746G-DISCOVERY"),
    # RM0410 3.3.1: single-bank mode (nDBANK=1, the default) 4x32, 1x128, 7x256 KiB
    _stm32("stm32f767zi", sectors=((4, 32 * KiB), (1, 128 * KiB), (7, 256 * KiB)), uf2=UF2_STM32F7,
           option=(0x1FFF0000, 32), program_ms=128.0, erase_ms=400.0, full_erase_ms=16000.0,
           description="Nucleo-F767ZI"),
    # RM0444 3.3.1 / DS13560: 2 x 128 pages of 2 KiB; 64-bit program 85 us, page and mass erase 22 ms
    _stm32("stm32g0b1re", sectors=((256, 2 * KiB),), uf2=UF2_STM32G0,
           program_ms=21.8, erase_ms=22.0, full_erase_ms=22.0, description="Nucleo-G0B1RE (USB on the G0B1)"),
    # RM0440 3.3.1 / DS12589: 2 KiB pages (dual bank, the default on the 512 KiB parts);
    # 64-bit program 81.7 us, page and mass erase 22 ms
    _stm32("stm32g431kb", sectors=((64, 2 * KiB),), uf2=UF2_STM32G4,
           program_ms=20.9, erase_ms=22.0, full_erase_ms=22.0, description="Nucleo-G431KB"),
    _stm32("stm32g474re", sectors=((256, 2 * KiB),), uf2=UF2_STM32G4,
           program_ms=20.9, erase_ms=22.0, full_erase_ms=22.0, description="Nucleo-G474RE"),
    # RM0433 4.3.4: 2 banks x 8 sectors of 128 KiB; RM0468 4.3.4 (H723/733): one bank of 8.
    # Timing: a 256-bit flash word ~11 us x 4096 per sector, 128 KiB sector erase ~2 s
    # (estimates of the order of DS12110's typicals)
    _stm32("stm32h743zi", sectors=((16, 128 * KiB),), uf2=UF2_STM32H7,
           program_ms=45.0, erase_ms=2000.0, full_erase_ms=16000.0, description="Nucleo-H743ZI"),
    _stm32("stm32h723zg", sectors=((8, 128 * KiB),), uf2=UF2_STM32H7,
           program_ms=45.0, erase_ms=2000.0, full_erase_ms=8000.0, description="Nucleo-H723ZG"),
    # RM0394 3.3.1 / RM0351 3.3.1: 2 KiB pages; DS11451 64-bit program 81.7 us, page and mass
    # erase 22 ms
    _stm32("stm32l432kc", sectors=((128, 2 * KiB),), uf2=UF2_STM32L4,
           program_ms=20.9, erase_ms=22.0, full_erase_ms=22.0, description="Nucleo-L432KC"),
    _stm32("stm32l476rg", sectors=((512, 2 * KiB),), uf2=UF2_STM32L4,
           program_ms=20.9, erase_ms=22.0, full_erase_ms=22.0, description="Nucleo-L476RG"),
    # -- SAM D21 / D51 with Microsoft's UF2 bootloader (uf2-samdx1: 8 KiB on the D21, 16 KiB on
    #    the D51, at 0, kept by the BOOTPROT fuse).  SAM D21 datasheet DS40001882 22.6.1: 64-byte
    #    pages, erase by 256-byte rows; table 37-41: page write 2.5 ms, row erase 6 ms (max).
    #    SAM D5x datasheet DS60001507 25.6.1: 512-byte pages, 8 KiB erase blocks (timing: an
    #    estimate of the same order; the datasheet gives no typical figure).
    Chip(name="samd21g18a", family="samd", flash_start=0, flash_sectors=((1024, 256),), page_size=64,
         boot_start=0, boot_size=8 * KiB, uf2_family=UF2_SAMD21, aliases=("samd21",),
         timing=Timing(program_ms=2.5, erase_ms=6.0, full_erase_ms=240.0),
         description="Arduino Zero, Adafruit Feather M0, Seeeduino XIAO",
         boot_note="UF2 bootloader (uf2-samdx1) in the first 8 KiB"),
    Chip(name="samd21e18a", family="samd", flash_start=0, flash_sectors=((1024, 256),), page_size=64,
         boot_start=0, boot_size=8 * KiB, uf2_family=UF2_SAMD21,
         timing=Timing(program_ms=2.5, erase_ms=6.0, full_erase_ms=240.0),
         description="Adafruit Trinket M0, Gemma M0", boot_note="UF2 bootloader (uf2-samdx1) in the first 8 KiB"),
    Chip(name="samd51j19a", family="samd", flash_start=0, flash_sectors=((64, 8 * KiB),), page_size=512,
         boot_start=0, boot_size=16 * KiB, uf2_family=UF2_SAMD51, aliases=("samd51",),
         timing=Timing(program_ms=2.5, erase_ms=100.0, full_erase_ms=500.0),
         description="Adafruit Feather M4 Express, ItsyBitsy M4",
         boot_note="UF2 bootloader (uf2-samdx1) in the first 16 KiB"),
    Chip(name="samd51j20a", family="samd", flash_start=0, flash_sectors=((128, 8 * KiB),), page_size=512,
         boot_start=0, boot_size=16 * KiB, uf2_family=UF2_SAMD51,
         timing=Timing(program_ms=2.5, erase_ms=100.0, full_erase_ms=1000.0),
         description="Adafruit PyPortal, Metro M4 AirLift", boot_note="UF2 bootloader (uf2-samdx1) in the first 16 KiB"),
    # -- ESP32-S2/S3: the ROM loader (USB serial/DFU) is in mask ROM; the flash holds ESP-IDF's
    #    second-stage bootloader (0x1000 on the S2, 0x0 on the S3) and partition table (0x8000),
    #    so the first 64 KiB are kept and applications start at 0x10000 (ESP-IDF "Partition
    #    Tables": the default factory app offset).  Flash: the module's (ESP32-S2-WROOM 4 MiB,
    #    ESP32-S3-WROOM-1-N8 8 MiB datasheets).
    _spi_flash("esp32s2", "esp32", start=0, size=4 * 1024 * KiB, boot=64 * KiB, uf2=UF2_ESP32S2,
               aliases=("esp32-s2",), description="ESP32-S2 (4 MiB module flash); ROM loader, tinyuf2",
               boot_note="second-stage bootloader and partition table below 0x10000"),
    _spi_flash("esp32s3", "esp32", start=0, size=8 * 1024 * KiB, boot=64 * KiB, uf2=UF2_ESP32S3,
               aliases=("esp32-s3",), description="ESP32-S3 (8 MiB module flash); ROM loader, tinyuf2",
               boot_note="second-stage bootloader and partition table below 0x10000"),
    # -- nRF52833: nRF52833 PS v1.x 4.3: 128 pages of 4 KiB; as the nrf52840 above, the Adafruit
    #    nRF52 bootloader keeps the top 48 KiB (its linker/nrf52833.ld: the bootloader at 0x74000,
    #    the MBR params page at 0x7E000, the bootloader settings at 0x7F000)
    Chip(name="nrf52833", family="nrf52", flash_start=0, flash_sectors=((128, 4 * KiB),), page_size=4 * KiB,
         boot_start=0x74000, boot_size=48 * KiB, uf2_family=UF2_NRF52833,
         timing=Timing(program_ms=42.0, erase_ms=85.0, full_erase_ms=169.0),
         description="nRF52833 boards with the Adafruit UF2 bootloader", boot_note="Adafruit bootloader at 0x74000"),
    # -- RP2350: RP2350 datasheet 5.1 (boot ROM, UF2 mass storage), Pico 2 datasheet: 4 MiB QSPI
    #    flash (W25Q32RV) at 0x10000000
    _spi_flash("rp2350", "rp2350", start=0x10000000, size=4 * 1024 * KiB, uf2=UF2_RP2350_ARM_S,
               aliases=("pico2",), description="Raspberry Pi Pico 2 (4 MiB QSPI flash); ROM UF2 bootloader",
               boot_note="mask-ROM bootloader: no flash is reserved"),
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
        # Eighty names do not fit one line: name the nearest ones and where the rest are
        import difflib  # only on this error path

        names = [*self._chips, *(a.lower() for c in self._chips.values() for a in c.aliases)]
        near = difflib.get_close_matches(key, names, n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(near[:-1]) + ' or ' if near[1:] else ''}{near[-1]}? " if near else ""
        raise KeyError(f"unknown chip {name!r} ({hint}`bootkit chips` lists all {len(self._chips)}; "
                       "add one with --chip-file FILE.toml)")


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
    family = "avr"               # one of FAMILIES: avr, xmega, stm32, samd, esp32, ...
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
    if family not in FAMILIES:
        raise ChipFileError(f"{path}: chip.family must be one of {', '.join(FAMILIES)}, got {family!r}")
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
