"""The MIDI personality as the registry sees it: a class-compliant USB-MIDI bootloader,
two-way SysEx or a one-way Standard MIDI File."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import DEMO, DIALECTS, NAME
from ...contracts import DeviceOptions, Link, Personality, option

if TYPE_CHECKING:
    from ...contracts import Found
    from ...formats.image import Image
    from ...memory import Chip, MemoryIO
    from ...usb.device import Device
    from ..common import DialectFacts, FlashResult


@dataclass(frozen=True)
class MidiOptions(DeviceOptions):
    """The device is the same for both dialects; the settings are the host's: how it paces
    the one-way file (midifile.file_events: wait = datasheet ms x (1 + margin) + slack_ms)."""

    encoding: str | None = option(help="how the one-way file carries the image: sysex, or notes for players "
                                       "that drop SysEx", pattern="sysex|notes", allowed="sysex, notes",
                                  host_only=True)
    margin: float | None = option(help="fraction added to the datasheet erase/program times", min=0.0, max=10.0,
                                  kind="number", host_only=True)
    slack_ms: float | None = option(help="milliseconds added to every wait", min=0.0, max=1000.0, kind="number",
                                    host_only=True)
    realtime: bool = option(True, help="pace the file in real time (False: as fast as the bus takes it)",
                            host_only=True, product=False)
    retries: int = option(3, help="times a two-way command is sent again after a timeout", min=0, max=100,
                          host_only=True, product=False)
    leave_wait: float | None = option(help="seconds the host watches for the device after it leaves",
                                      min=0.0, max=3600.0, host_only=True, product=False)


class MidiHost:
    """bootkit.classes.midi.host behind the one HostSide signature (``link.port``: a MIDI port name)."""

    def flash(self, image: Image, link: Link, *, dialect: str | None = None, chip: Chip | None = None,
              options: DeviceOptions | None = None, progress: bool | None = None, memory: str = "flash",
              verify: bool = True, leave: bool = True, force: bool = False) -> FlashResult:
        from . import host

        link.check(PERSONALITY.name, PERSONALITY.link_fields)
        o = PERSONALITY.options_or_default(dialect, options)
        assert isinstance(o, MidiOptions)
        # the one-way file's pacing (a product's [midi] table) applies to the file dialect only;
        # the host refuses pacing for two-way SysEx, so none is passed there
        file = dialect == "file"
        return host.flash(image, link.backend, port=link.port, vid=link.vid, pid=link.pid, serial=link.serial,
                          dialect=dialect, chip=chip, progress=progress, verify=verify, leave=leave, memory=memory,
                          realtime=o.realtime, retries=o.retries, force=force, leave_wait=o.leave_wait,
                          encoding=o.encoding if file else None, margin=o.margin if file else None,
                          slack_ms=o.slack_ms if file else None)

    def read(self, link: Link, *, dialect: str | None = None, chip: Chip | None = None,
             options: DeviceOptions | None = None, start: int | None = None, length: int | None = None,
             memory: str = "flash", progress: bool | None = None) -> Image:
        from . import host

        link.check(PERSONALITY.name, PERSONALITY.link_fields)
        o = PERSONALITY.options_or_default(dialect, options)
        assert isinstance(o, MidiOptions)
        return host.read(link.backend, port=link.port, vid=link.vid, pid=link.pid, serial=link.serial,
                         dialect=dialect, chip=chip, memory=memory, start=start, length=length, progress=progress,
                         retries=o.retries)

    # -- bootkit.contracts.Verbs: bootkit erase / verify / reset (two-way SysEx; the one-way file cannot)

    def _client(self, link: Link, dialect: str | None, options: DeviceOptions | None) -> tuple[Any, Any, Any]:
        from ...contracts import OptionError
        from . import host

        link.check(PERSONALITY.name, PERSONALITY.link_fields)
        if dialect == "file":
            raise OptionError("the MIDI file dialect is one-way (a .mid played into the device): it has no "
                              "erase, read or leave request")
        o = PERSONALITY.options_or_default(dialect, options)
        assert isinstance(o, MidiOptions)
        c_link = host.open_link(link.backend, port=link.port, vid=link.vid, pid=link.pid, serial=link.serial)
        try:
            return c_link, host.SysexClient(c_link, retries=o.retries), o
        except BaseException:
            c_link.close()
            raise

    def erase(self, link: Link, *, dialect: str | None = None, chip: Chip | None = None,
              options: DeviceOptions | None = None, progress: bool | None = None) -> str:
        c_link, c, _o = self._client(link, dialect, options)
        try:
            info = c.identify()
            span = info.app_end - info.app_start
            # ERASE of the application span (the device refuses the bootloader's: NAK PROTECTED);
            # the timeout allows twice the device's per-sector erase time, as flash does
            n = c.erase(info.app_start, span, 2.0 + max(1, span // max(info.page_size, 1)) * info.erase_us / 1e6 * 2)
            return f"{n} sector(s) of {info.chip}'s application erased (0x{info.app_start:X}-0x{info.app_end - 1:X})"
        finally:
            c_link.close()

    def verify(self, image: Image, link: Link, *, dialect: str | None = None, chip: Chip | None = None,
               options: DeviceOptions | None = None, progress: bool | None = None, memory: str = "flash") -> str:
        from ...contracts import OptionError
        from ..native import first_difference
        from . import host

        if dialect == "file":
            raise OptionError("the MIDI file dialect is one-way (a .mid played into the device): it cannot be "
                              "read back")
        # READ page by page (at most a page per request), as read does
        back = self.read(link, dialect=dialect, chip=chip, options=options, start=image.start,
                         length=image.end - image.start, memory=memory, progress=progress)
        for address, data in image.segments:
            got = back.crop(address, address + len(data))
            if got.size != len(data):  # what was not read is not verified (no 0xFF filling in)
                raise host.MidiError(f"verify failed at 0x{address + got.size:X}: the device returned {got.size} "
                                     f"of the {len(data)} bytes from 0x{address:X}")
            differs = first_difference(address, data, got.tobytes(address, address + len(data)))
            if differs:
                raise host.MidiError(differs)
        return f"{image.size} bytes equal to a read-back of 0x{image.start:X}-0x{image.end - 1:X}"

    def reset(self, link: Link, *, dialect: str | None = None, chip: Chip | None = None,
              options: DeviceOptions | None = None) -> str:
        from ..usbhost import bus_snapshot
        from . import host

        c_link, c, o = self._client(link, dialect, options)
        wait = host._default_wait(link.backend) if o.leave_wait is None else o.leave_wait
        try:
            before = bus_snapshot(link.backend) if isinstance(c_link, host.UsbLink) else None
            try:
                c.boot()  # a NAK: MidiError "the device stayed in its bootloader: ..."
            except host.Gone:
                pass  # it reset before its ACK reached us: what comes back (or not) says what happened
        finally:
            c_link.close()
        if isinstance(c_link, host.UsbLink):
            return host.watch_leave(link.backend, c_link.target, wait, before=before)
        return host.watch_port_leave(link.port or "", wait)  # "": mido's default port, as PortLink opened


class Midi(Personality):
    name = NAME
    order = 60
    summary = "a class-compliant USB-MIDI device: two-way SysEx, or a one-way MIDI file any player plays"
    dialects = DIALECTS
    options = {"sysex": MidiOptions, "file": MidiOptions}
    demo = DEMO
    link_fields = ("port",)
    commands = ("midi",)
    cli_examples = {
        "flash": ["bootkit flash fw.hex --via midi --emulate atmega32u4 --image flash.bin"],
        "read": ["bootkit read back.hex --via midi --emulate atmega32u4 --image flash.bin"],
        "serve": ["bootkit serve midi --chip atmega32u4 --transport midiport"],
    }

    def default_dialect(self, chip: Chip) -> str:
        return "sysex"

    def bootloader_device(self, memory: MemoryIO, chip: Chip, dialect: str, options: DeviceOptions) -> Device:
        from . import bootloader_device

        return bootloader_device(memory, chip, dialect=dialect, **options.usb_ids())

    def host(self) -> MidiHost:
        return MidiHost()

    def list_devices(self, backend: Any) -> list[str]:
        from .host import list_devices

        return list_devices(backend)

    def run_demo_row(self, dialect: str, chip: Chip, image: Image) -> dict[str, Any] | None:
        """Two-way through the host client, or the one-way file replayed at full speed."""
        from . import run_demo_row

        return run_demo_row(dialect, chip, image)

    def add_commands(self, subparsers: Any) -> None:
        from .cli import add_commands

        add_commands(subparsers)

    def find_devices(self, backend: Any = None, *, local: bool = True) -> list[Found]:
        from .finder import find

        return find(backend, local=local)

    def facts(self) -> tuple[DialectFacts, ...]:
        from .facts import FACTS

        return tuple(FACTS)


PERSONALITY = Midi()
