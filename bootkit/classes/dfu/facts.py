"""What the DFU dialects trade off, for ``bootkit choose`` (see docs/personalities/dfu.md).

Throughput: ``benchmarks/bench_dfu.py`` counts the control transfers the
host client issues and prices them at USB full speed; the "wire limit"
below is image bytes over that wire time (256 KiB, wTransferSize 1024:
0.2186 s).  It measures the protocol, not a chip's flash: a real AVR
programs 128 bytes per 4.5 ms whatever the class.
"""

from ..common import DialectFacts

_WINDOWS = "WinUSB (Zadig)"
_ANDROID = "OTG app (USB host API)"
_IPADOS_QUIRK = ("iPadOS: apps cannot open a DFU interface (no user-space USB host access)",
                 "none possible: choose msc (UF2 drive) or midi for iPad users")
_COMMON_QUIRKS = (
    ("Windows binds no driver to a DFU interface", "bind WinUSB once with Zadig; bootkit flash and dfu-util "
     "then work (a Microsoft OS 2.0 descriptor would make it automatic)"),
    ("Linux: only root may open the device", "udev rule with the VID:PID and MODE=\"0666\" (docs/personalities/dfu.md)"),
    ("a device that resets during the final request makes the host see an error",
     "the host client counts a reset during leave/manifest as success"),
    _IPADOS_QUIRK,
)

FACTS = (
    DialectFacts(
        personality="dfu", dialect="dfu",
        summary="plain USB DFU 1.1: the class made for firmware updates, dfu-util everywhere",
        driver={"windows": _WINDOWS, "macos": "none", "linux": "none", "ipados": "no", "android": _ANDROID},
        host_software="dfu-util (or bootkit flash)",
        eeprom=False, readback=True, verify="read-back",
        feedback="DFU status codes (errADDRESS, errTARGET, errCHECK_ERASED, ...) shown by the host tool",
        unattended=True,  # DFU_DETACH on the application's run-time interface: dfu-util -e
        bootloader_size="8 KiB",  # dapboot / TinyUSB DFU on an STM32F103
        families=(),
        quirks=_COMMON_QUIRKS + (
            ("dfu-util cannot read back after a download on a device that is not manifestation tolerant",
             "bootkit's plain DFU device is manifestation tolerant, so the host verifies by UPLOAD"),
        ),
        benchmark="benchmarks/bench_dfu.py: wire limit 1171 KiB/s at wTransferSize 1024 "
                  "(emulator: 0.027 x wire time)",
    ),
    DialectFacts(
        personality="dfu", dialect="dfuse",
        summary="ST DfuSe (AN3156): the STM32 system-memory ROM bootloader, layout strings, option bytes",
        driver={"windows": "WinUSB (Zadig) or ST's DFU driver", "macos": "none", "linux": "none", "ipados": "no",
                "android": _ANDROID},
        host_software="dfu-util or STM32CubeProgrammer",
        eeprom=False, readback=True, verify="read-back",
        feedback="DFU status codes; read-out protection reported as errTARGET",
        unattended=False,  # the ROM bootloader is reached with BOOT0 held at reset (or an application jump)
        bootloader_size="ROM",
        families=("stm32",),
        quirks=_COMMON_QUIRKS + (
            ("the ROM bootloader is entered with the BOOT0 pin (button or jumper)",
             "an application may jump to system memory itself; the emulator starts in the bootloader"),
            ("read-out protection (RDP level 1) refuses UPLOAD and writes",
             "modelled: protection.read_protected; a mass erase or Read Unprotect clears it"),
        ),
        benchmark="benchmarks/bench_dfu.py (plain DFU; DfuSe issues the same control transfers): "
                  "wire limit 1171 KiB/s at wTransferSize 1024",
    ),
    DialectFacts(
        personality="dfu", dialect="flip",
        summary="Atmel FLIP as LUFA's DFU bootloader speaks it: flash and EEPROM, dfu-programmer",
        driver={"windows": "WinUSB (Zadig) or Atmel FLIP's driver", "macos": "none", "linux": "none",
                "ipados": "no", "android": _ANDROID},
        host_software="dfu-programmer or Atmel FLIP",
        eeprom=True, readback=True, verify="read-back",
        feedback="DFU status codes; secure mode refuses everything but chip erase",
        unattended=False,  # LUFA's DFU bootloader has no run-time interface: HWB button or an application jump
        bootloader_size="4 KiB",
        families=("avr", "xmega"),
        quirks=_COMMON_QUIRKS + (
            ("entry needs the HWB button or an application that jumps to the bootloader",
             "the emulator's entry policy models blank flash, magic word and double reset"),
            ("secure mode after reset (LUFA SECURE_MODE)", "modelled: dfu.secure or protection.read_protected; "
             "dfu-programmer erase clears it"),
        ),
        benchmark="benchmarks/bench_dfu.py (plain DFU; FLIP carries the same control transfers plus a "
                  "48-byte frame): wire limit 1171 KiB/s at wTransferSize 1024",
    ),
)
