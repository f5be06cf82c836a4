"""Real-time mode, every personality: the busy seconds the memory returns reach the
Target (which holds the device's next transfer), none are dropped on the way.

The memory's erase/erase_all/program/manifest are wrapped to add up what they return;
the Target's device is wrapped to add up what it hands to the transport.  An engine
that drops a memory call's result (as AVR109 and the UF2 drive did before they were
wired) leaves the second sum short.
"""

from __future__ import annotations

import pytest

from bootkit import registry
from bootkit.contracts import Link
from bootkit.emulator import Emulator
from bootkit.formats.image import Image
from bootkit.transports.virtual import VirtualBus, get_backend

# (personality, dialect, chip): one USB dialect of each built-in whose protocol has no way to
# say "busy" (DFU reports it in bwPollTimeout and answers dfuDNBUSY itself: test_realtime_busy)
CASES = [
    ("hid", "native", "atmega32u4"),
    ("printer", "lufa", "atmega32u4"),
    ("msc", "uf2", "rp2040"),
    ("midi", "sysex", "atmega32u4"),
]


def _count_memory(memory, sums):
    for name in ("erase", "erase_all", "program", "manifest"):
        real = getattr(memory, name)

        def wrapped(*a, _real=real, **kw):
            busy = _real(*a, **kw)
            sums["memory"] += busy
            return busy

        setattr(memory, name, wrapped)


def test_avr109_busy_seconds_reach_the_transport():
    # the CDC host talks to a serial port, not the bus: drive the AVR109 engine with raw
    # bulk transfers instead (e: chip erase, then a block write)
    import usb.core
    import usb.util

    sums = {"memory": 0.0, "target": 0.0}
    bus = VirtualBus()
    with Emulator("atmega32u4", "cdc", realtime=True, options={"dialect": "lufa"}) as em:
        _count(em, bus, sums)
        dev = usb.core.find(backend=get_backend(bus))
        dev.set_configuration()
        data = next(i for i in dev.get_active_configuration() if i.bInterfaceClass == 0x0A)
        out = next(e for e in data if usb.util.endpoint_direction(e.bEndpointAddress) == usb.util.ENDPOINT_OUT)
        inp = next(e for e in data if usb.util.endpoint_direction(e.bEndpointAddress) == usb.util.ENDPOINT_IN)

        def command(raw: bytes) -> bytes:
            out.write(raw)
            return bytes(inp.read(64, timeout=5000))

        assert command(b"e") == b"\r"
        assert command(b"A\x00\x00") == b"\r"
        assert command(b"B\x00\x80F" + bytes(range(128))) == b"\r"
    assert sums["memory"] > 0, "the real-time memory reported no busy time"
    assert sums["target"] == pytest.approx(sums["memory"])


def _count(em, bus, sums):
    """Attach ``em`` to ``bus``, adding up what its memory returns and what its Target takes."""
    _count_memory(em.memory, sums)
    target = em.attach(bus)
    take = target.device.take_busy

    def counted():
        busy = take()
        sums["target"] += busy
        return busy

    target.device.take_busy = counted


@pytest.mark.parametrize("personality,dialect,chip", CASES, ids=[f"{p}-{d}" for p, d, _ in CASES])
def test_busy_seconds_reach_the_transport(personality, dialect, chip):
    if dialect not in registry.personality(personality).dialects:
        pytest.fail(f"{personality} has no dialect {dialect}: update CASES")
    sums = {"memory": 0.0, "target": 0.0}
    bus = VirtualBus()
    with Emulator(chip, personality, realtime=True, options={"dialect": dialect}) as em:
        _count(em, bus, sums)
        start = em.chip.application_ranges[0][0]
        image = Image()
        image.add(start, bytes(range(256)) * 2)  # two AVR pages, one UF2 block's worth and more
        host = registry.personality(personality).host()
        host.flash(image, Link(backend=get_backend(bus)), dialect=dialect, chip=em.chip, progress=False)
        assert em.memory.flash_bytes()[start - em.chip.flash_start:][:512] == bytes(range(256)) * 2
    assert sums["memory"] > 0, "the real-time memory reported no busy time"
    assert sums["target"] == pytest.approx(sums["memory"]), \
        f"{sums['memory'] - sums['target']:.3f} s of memory busy time never reached the transport"
