"""The in-process bus's pyusb backend: one per bus, freed with its bus."""

import gc
import weakref

from bootkit.transports.virtual import VirtualBus, get_backend


def test_one_backend_per_bus():
    bus = VirtualBus()
    assert get_backend(bus) is get_backend(bus)
    assert get_backend(VirtualBus()) is not get_backend(bus)


def test_a_bus_and_its_backend_are_freed_when_dropped():
    # a campaign or a server making a bus per run must not keep every one alive
    bus = VirtualBus()
    get_backend(bus)
    gone = weakref.ref(bus)
    del bus
    gc.collect()
    assert gone() is None
