"""What the MIDI personality declares about itself, for ``bootkit choose``.

USB MIDI 1.0 is class compliant everywhere: Windows (usbaudio.sys), macOS
and iPadOS (CoreMIDI), Linux (snd-usb-audio), Android (android.media.midi
since 6.0, USB host mode) all bind their own driver.  Access from a web
page also works where Web MIDI with SysEx permission exists (Chromium).
"""

from ..common import DialectFacts

_NO_DRIVER = {"windows": "none", "macos": "none", "linux": "none", "ipados": "none", "android": "none"}

FACTS: tuple[DialectFacts, ...] = (
    DialectFacts(
        personality="midi",
        dialect="sysex",
        summary="two-way SysEx over class-compliant USB MIDI: acked commands, read-back and CRC verify",
        driver=dict(_NO_DRIVER),
        host_software="bootkit (mido + python-rtmidi), or any app that can send and receive SysEx",
        eeprom=False,
        readback=True,
        verify="read-back",
        feedback="a NAK with a reason for every refused command (checksum, range, bootloader, not erased)",
        unattended=True,
        bootloader_size="4 KiB",
        families=(),
        quirks=(
            ("Windows' WinMM MIDI ports are exclusive: a DAW holding the port blocks the updater",
             "the error names the port; close the other app (or use USB directly with libusb)"),
            ("Android needs USB host mode (OTG) and an app using android.media.midi",
             "documented; the one-way file also plays from any Android MIDI player app"),
            ("snd-usb-audio binds the interfaces on Linux",
             "use the ALSA port by name (--port), or bootkit detaches the driver for direct USB"),
        ),
        benchmark="benchmarks/bench_midi.py",
    ),
    DialectFacts(
        personality="midi",
        dialect="file",
        summary="a .mid file any player plays into the device: paced pages, per-page checksums, image CRC",
        driver=dict(_NO_DRIVER),
        host_software="none: any MIDI file player (aplaymidi, a DAW, GarageBand/AUM on iPad, a web MIDI player)",
        eeprom=False,
        readback=False,
        verify="CRC",
        feedback="none while playing; the device stays in its bootloader until every page arrived and the "
                 "CRC matched (play the file again to fill missing pages); IDENTIFY reports pages missing, damaged "
                 "frames and how the file ended",
        unattended=False,
        bootloader_size="4 KiB",
        families=(),
        quirks=(
            ("players and DAWs that drop SysEx (some iOS apps, some DAW tracks)",
             "the notes encoding: the same frames in Note On events on channel 16, velocity never 0"),
            ("Logic replays the first SysEx on every stop/play (Mutable Instruments' hex2sysex.py)",
             "the first event is not at time 0, and a repeated BEGIN keeps the pages already received"),
            ("players that speed up or quantise playback",
             "pacing from the chip's datasheet erase/program times plus a margin; play at normal speed"),
            ("DIN MIDI at 31250 baud is far slower than USB",
             "the file is paced for DIN: each frame's bytes at 3125 bytes/s, Note Ons 1 ms apart, then the page time"),
        ),
        benchmark="benchmarks/bench_midi.py",
    ),
)
