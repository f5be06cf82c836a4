"""bootkit: USB device bootloaders in Python.

One memory core (read / erase / program / manifest) behind interchangeable
USB class personalities (the DFU, HID, CDC, Printer, Mass Storage and MIDI
classes, and any a plug-in registers), each with a device side and a host side.  The public
API, for scripts::

    import bootkit

    print(bootkit.PERSONALITIES)                            # the registered names
    with bootkit.open_target(name, emulate="atmega32u4", image="flash.bin") as target:
        result = target.flash("fw.hex", progress=True)     # a FlashResult
    print(result.verified, result.steps)

Names: open_target, Target, flash, read, erase, load_image, get_chip,
Emulator, serve, FlashResult, HostError, ImageRejected, PERSONALITIES,
TRANSPORTS (the registered personalities and device transports:
bootkit.registry).  They are imported on first use (PEP 562), so ``import bootkit``
loads nothing else.  See docs/api.md (recipes) and docs/architecture.md.
"""

__version__ = "0.1.0"

# name -> module that defines it; imported on first access
_LAZY = {
    "open_target": "bootkit.api", "Target": "bootkit.api", "flash": "bootkit.api", "read": "bootkit.api",
    "erase": "bootkit.api", "load_image": "bootkit.api", "get_chip": "bootkit.api", "serve": "bootkit.api",
    "PERSONALITIES": "bootkit.api", "TRANSPORTS": "bootkit.api",
    "FlashResult": "bootkit.classes.common", "HostError": "bootkit.classes.common",
    "ImageRejected": "bootkit.classes.common",
    "Emulator": "bootkit.emulator",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'bootkit' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once: later lookups do not come back here
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
