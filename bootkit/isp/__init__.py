"""AVR in-system programming (ISP): the serial programming instruction set, an
emulated AVR on the other end of the wires, the links that carry the 4-byte
instructions (emulated, USBasp, STK500 v2, Linux spidev) and an AVRprog-style
API::

    from bootkit.isp import AVRprog, EmulatedTarget

    prog = AVRprog(EmulatedTarget("attiny85"))
    prog.verify_sig(AVRprog.Boards.ATtiny85)

A layer beside bootkit.memory: it imports bootkit.memory and bootkit.formats
only.  Names are imported on first use (PEP 562), so ``import bootkit.isp``
loads nothing else.  See docs/isp.md.
"""

from __future__ import annotations

# name -> module that defines it; imported on first access
_LAZY = {
    "AVRprog": "bootkit.isp.avrprog", "EmulatedTarget": "bootkit.isp.avrprog",
    "EmulatedAvr": "bootkit.isp.target",
    "IspLink": "bootkit.isp.link", "EmulatedLink": "bootkit.isp.link",
    "IspError": "bootkit.isp.errors", "IspInputError": "bootkit.isp.errors",
    "SpidevLink": "bootkit.isp.spidev",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'bootkit.isp' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
