"""The MIDI personality: a class-compliant USB-MIDI bootloader; device and host side.

A USB MIDI 1.0 device needs no driver on Windows, macOS, Linux, iPadOS or
Android.  Two dialects of one SysEx protocol (docs/personalities/midi.md):

- ``sysex``: two-way, every command acknowledged, read-back verify;
- ``file``: one-way, a Standard MIDI File any player plays into the device
  (paced from the chip's datasheet timing, per-page checksums, a whole-image
  CRC before the device manifests), in SysEx or in Note On events.

The device is the same for both: it answers the two-way commands and
follows a file when one is played into it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import lazy_names

# The device side is imported when a device is built, so a host client
# (bootkit flash) does not pay for it at start-up.
if TYPE_CHECKING:
    from ...memory import Chip
    from ...usb.device import Device

NAME = "midi"
DIALECTS = ("sysex", "file")
# bootkit demo: (dialect, sample image in examples/firmware)
DEMO = (("sysex", "sample-atmega32u4"), ("file", "sample-atmega32u4"), ("sysex", "sample-stm32f103c8"))


def default_dialect(chip: Chip) -> str:
    return "sysex"


def bootloader_device(memory, chip: Chip, *, dialect: str | None = None, vid: int | None = None,
                      pid: int | None = None, serial: str | None = None, manufacturer: str | None = None,
                      product: str | None = None, bcd_device: int | None = None) -> Device:
    """The bootloader as it enumerates: one USB-MIDI function (both dialects use the same device)."""
    from ...usb.descriptors import DeviceInfo
    from ...usb.device import Device
    from .device import MidiBootEngine, MidiFunction
    from .host import BOOTKIT_VID, MIDI_PID

    if dialect is not None and dialect not in DIALECTS:
        raise ValueError(f"unknown MIDI dialect {dialect!r} (choose from {', '.join(DIALECTS)})")
    engine = MidiBootEngine(memory, chip)
    # The product string is what every OS shows as the MIDI port's name.
    info = DeviceInfo(vid if vid is not None else BOOTKIT_VID, pid if pid is not None else MIDI_PID,
                      bcd_device if bcd_device is not None else 0x0100,
                      manufacturer=manufacturer or "bootkit", product=product or f"{chip.name} MIDI bootloader",
                      serial=serial)
    return Device(info, [MidiFunction(engine, "bootkit MIDI bootloader")])


def run_demo_row(dialect: str, chip: Chip, image) -> dict:
    """One ``bootkit demo`` row: two-way through the host client, or the one-way file's
    messages replayed at full speed into the emulated device (the demo compares the flash)."""
    from ...emulator import Emulator
    from ...transports.virtual import VirtualBus, get_backend
    from . import host

    bus = VirtualBus()
    with Emulator(chip, NAME, options={"dialect": dialect}) as em:
        em.attach(bus)
        result = host.flash(image, get_backend(bus), dialect=dialect, chip=chip, progress=False, realtime=False)
        seconds = result.seconds  # the flash, not the watch after leaving
        flash = em.memory.flash_bytes()
        base = chip.flash_start
        identical = all(flash[s - base:s - base + len(d)] == d for s, d in image.segments)
        return {
            "personality": NAME, "dialect": dialect, "chip": chip.name, "bytes": image.size, "seconds": seconds,
            "verified": (result.verified or dialect == "file") and identical and em.memory.app_valid,
        }


__getattr__ = lazy_names(__name__, {
    "MidiBootEngine": ".device", "MidiFunction": ".device", "encode_midi": ".midifile",
    "encode_syx": ".midifile", "file_events": ".midifile"})


__all__ = ["NAME", "DIALECTS", "DEMO", "default_dialect", "bootloader_device", "run_demo_row", "MidiBootEngine",
           "MidiFunction", "encode_midi", "encode_syx", "file_events"]
