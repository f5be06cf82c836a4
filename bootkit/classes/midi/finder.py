"""Finding MIDI bootloaders: MIDIStreaming interfaces of bootkit's ids on a bus with no
kernel driver in between (bootkit's in-process bus, its USB/IP client; on real USB
snd-usb-audio makes them ports), and MIDI ports by name when python-rtmidi, the [midi]
extra, is installed.

A USB one is asked IDENTIFY (one SysEx request, one short timeout): an answer makes it
``midi/sysex`` with the chip it names; none leaves only the one-way file (``midi/file``).
A port is recognised by the name its device enumerates with ("<chip> MIDI bootloader",
bootkit's default product string, which every OS shows as the port's name) and is not
asked anything: a port cannot be opened to one device alone.
"""

from __future__ import annotations

import re
from typing import Any, Callable

from ...contracts import Found, Link
from ..finding import real_usb, usb_found

NAME = "midi"
PORT_NAME = re.compile(r"(?:^|[\s:])(?P<chip>[A-Za-z0-9_.+-]+) MIDI bootloader")
IDENTIFY_TIMEOUT = 2.0  # s for the one IDENTIFY a listing sends (SysexClient's own; a bootloader answers at once)


def find(backend: Any = None, *, local: bool = True,
         port_names: Callable[[], list[str]] | None = None) -> list[Found]:
    found: list[Found] = []
    if backend is not None and not real_usb(backend):
        found += on_bus(backend)
    if local:
        found += on_ports(port_names)
    return found


def on_bus(backend: Any) -> list[Found]:
    from ..usbhost import device_serial, matching_devices

    # USB MIDI 1.0 section 4: an Audio (01) interface of subclass MIDIStreaming (03).  None on the
    # bus: the host side (and the memory core and formats under it) is not imported for nothing
    if not any((i.bInterfaceClass, i.bInterfaceSubClass) == (0x01, 0x03)
               for _dev, cfg in matching_devices(backend) for i in cfg):
        return []
    from .host import MidiError, SysexClient, UsbLink, find_devices

    out = []
    for target in find_devices(backend):
        dev = target.device
        serial = device_serial(dev)
        details: dict[str, Any] = {"interface": target.interface}
        chip = None
        dialect = "file"  # a device that cannot answer can still take the one-way file
        if target.ep_in is not None:
            link = UsbLink(target, timeout=int(IDENTIFY_TIMEOUT * 1000))
            try:
                info = SysexClient(link, timeout=IDENTIFY_TIMEOUT, retries=1).identify()
                dialect, chip = "sysex", info.chip
                details.update(flash_size=info.flash_size, page_size=info.page_size, app_valid=info.app_valid)
            except (MidiError, OSError) as exc:
                details["note"] = f"no IDENTIFY answer ({exc})"
            finally:
                link.close()
        out.append(usb_found(NAME, dialect, dev, backend, serial=serial, chip=chip, **details))
    return out


def rtmidi_output_names() -> list[str] | None:
    """The MIDI output ports mido sees, None when python-rtmidi (the [midi] extra) is absent."""
    import os
    import sys

    if sys.platform.startswith("linux") and not os.path.exists("/dev/snd/seq"):
        return []  # no ALSA sequencer (no snd-seq, a container): no MIDI port can exist here
    try:
        import rtmidi  # noqa: F401
    except ImportError:
        return None
    import mido

    return list(mido.get_output_names())


def on_ports(port_names: Callable[[], list[str] | None] | None = None) -> list[Found]:
    names = (port_names or rtmidi_output_names)()
    out = []
    for name in names or ():
        m = PORT_NAME.search(name)
        if m is None:
            continue
        out.append(Found(NAME, None, Link(port=name), f"MIDI port {name!r}", chip=m.group("chip").lower()))
    return out
