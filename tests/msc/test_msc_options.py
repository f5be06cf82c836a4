"""The mass-storage host takes the options it can honour and refuses the rest (#18 item 5:
no ``**_`` that silently drops an option)."""

from __future__ import annotations

import pytest

from bootkit.classes.common import ImageRejected
from bootkit.classes.msc import host
from bootkit.formats import Image
from bootkit.transports.virtual import VirtualBus, get_backend


def empty_bus():
    return get_backend(VirtualBus())  # nothing on it: a refusal must come before any lookup


def test_an_option_the_drive_does_not_take_is_a_type_error():
    with pytest.raises(TypeError, match="transfer_size"):
        host.flash(Image([(0x10000000, bytes(256))]), empty_bus(), transfer_size=64)
    with pytest.raises(TypeError, match="trim"):
        host.read(empty_bus(), trim=False)


def test_read_refuses_what_a_drive_cannot_give_before_looking_for_it():
    with pytest.raises(ImageRejected, match="flash only, not eeprom"):
        host.read(empty_bus(), memory="eeprom")
    with pytest.raises(ImageRejected, match="unknown mass-storage dialect 'uf3'"):
        host.read(empty_bus(), dialect="uf3")
