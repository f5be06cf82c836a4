"""The six USB class personalities, each a package with its device and host side."""

from __future__ import annotations

import importlib


def lazy_names(package: str, names: dict[str, str]):
    """A module ``__getattr__`` (PEP 562) that imports ``names`` (name ->
    submodule) on first use, so a host client (bootkit flash) does not pay
    for a personality's device side at start-up."""

    def __getattr__(name: str):
        if name in names:
            return getattr(importlib.import_module(names[name], package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
