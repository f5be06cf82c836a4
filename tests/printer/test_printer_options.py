"""The printer host takes the options it can honour and refuses the rest (#18 item 5:
no ``**_`` that silently drops an option)."""

from __future__ import annotations

import pytest

from bootkit.classes.common import HostError, ImageRejected
from bootkit.classes.printer import host
from bootkit.formats import Image
from bootkit.transports.virtual import VirtualBus, get_backend

IMAGE = Image([(0, b"\x0c\x94" + bytes(126))])


def empty_bus():
    return get_backend(VirtualBus())  # nothing on it: a refusal must come before any lookup


def test_an_option_the_printer_does_not_take_is_a_type_error():
    with pytest.raises(TypeError, match="transfer_size"):
        host.flash(IMAGE, empty_bus(), transfer_size=64)
    with pytest.raises(TypeError, match="alt"):
        host.print_file("fw.hex", empty_bus(), alt=1)
    with pytest.raises(TypeError, match="trim"):
        host.read(empty_bus(), trim=False)
    # the selection every host's read takes is taken, and the answer is that a printer cannot read
    with pytest.raises(HostError, match="^the printer personality cannot read flash"):
        host.read(empty_bus(), vid=0x03EB, pid=0x206B, dialect="lufa", memory="flash", start=0, length=16)


@pytest.mark.parametrize("option, message", [
    ({"verify": False}, "cannot skip verification"),
    ({"leave": False}, "cannot stay"),
    ({"dialect": "caterina"}, "one dialect, lufa, not caterina"),
])
def test_what_the_printer_cannot_do_is_refused_before_anything_is_sent(option, message):
    with pytest.raises(ImageRejected, match=message):
        host.flash(IMAGE, empty_bus(), **option)

