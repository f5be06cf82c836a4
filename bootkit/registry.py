"""Where personalities, device transports and memory back-ends are found: three
entry-point groups (``bootkit.personalities``, ``bootkit.transports``,
``bootkit.memories``).

bootkit's own are declared in its pyproject.toml exactly as a plug-in declares
its own, e.g. ``name = "package.personality:PERSONALITY"``; entry
points exist once the distribution is installed (``pip install -e .`` again
after adding one).  Everything is lazy, in the manner of python-can's
interface table (``can.interfaces.BACKENDS``): nothing is imported until asked
for by name, and a lookup of a built-in reads bootkit's own distribution
metadata only, not every installed distribution's (the start-up of ``bootkit
flash --via X`` does not grow with the environment).

A plug-in that fails to load is a :class:`PluginError`, one line naming the
entry point and what broke; it is never skipped silently.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .contracts import Personality

__all__ = [
    "PERSONALITIES", "TRANSPORTS", "MEMORIES", "PluginError",
    "personality_names", "personality", "personalities", "transport_names", "transport",
    "memory_names", "memory", "resolve_chip", "clear_cache",
]

PERSONALITIES = "bootkit.personalities"
TRANSPORTS = "bootkit.transports"
MEMORIES = "bootkit.memories"
_WHAT = {PERSONALITIES: "personality", TRANSPORTS: "transport", MEMORIES: "memory back-end"}


class PluginError(RuntimeError):
    """An entry point that does not load or does not hold what its group needs (one line)."""


class _EntryPoint(Protocol):
    name: str
    value: str
    group: str

    def load(self) -> Any: ...


class _Own:
    """One of bootkit's own entry points, read from its installed metadata by :func:`_own_table`."""

    __slots__ = ("name", "value", "group")

    def __init__(self, name: str, value: str, group: str):
        self.name, self.value, self.group = name, value, group

    def load(self) -> Any:
        # "module:attr.attr", as importlib.metadata.EntryPoint.load resolves it
        module, _, attrs = self.value.partition(":")
        value: Any = importlib.import_module(module.strip())
        for attr in filter(None, attrs.strip().split(".")):
            value = getattr(value, attr)
        return value


# group -> name -> entry point; bootkit's own, and every distribution's
_own: dict[str, dict[str, _EntryPoint]] = {}
_every: dict[str, dict[str, _EntryPoint]] = {}
# group -> name -> the loaded object
_loaded: dict[str, dict[str, Any]] = {}


def clear_cache() -> None:
    """Forget what was found and loaded (after installing a plug-in in this process; tests)."""
    _own.clear()
    _every.clear()
    _loaded.clear()


def _is_own_metadata(name: str) -> bool:
    """``bootkit-VERSION.dist-info``, ``bootkit.egg-info`` or ``bootkit-VERSION.egg-info``."""
    if not name.endswith((".dist-info", ".egg-info")):
        return False
    base = name.rsplit(".", 1)[0]  # bootkit-0.1.0 (the version may hold dots)
    return base == "bootkit" or (base.startswith("bootkit-") and "-" not in base[len("bootkit-"):])


def _own_table() -> dict[str, dict[str, _EntryPoint]]:
    """bootkit's own entry points, read from its metadata's entry_points.txt.

    By hand rather than with importlib.metadata.distribution("bootkit"): importing
    importlib.metadata (it brings the email package) costs about 50 ms, more than
    the whole start-up of ``bootkit chips``, which must not grow (issue 18).  The
    directory is found as importlib.metadata finds it (the first sys.path entry
    holding ``bootkit-VERSION.dist-info`` or ``bootkit.egg-info``) and the file is
    the ini-style format of the PyPA entry-points specification.
    """
    for entry in sys.path:
        folder = entry or "."
        try:
            names = sorted(n for n in os.listdir(folder) if _is_own_metadata(n))
        except OSError:  # a zip file, a directory that went away
            continue
        if names:
            path = os.path.join(folder, names[0], "entry_points.txt")
            try:
                with open(path, encoding="utf-8") as f:
                    text = f.read()
            except FileNotFoundError:
                text = ""
            table: dict[str, dict[str, _EntryPoint]] = {}
            group = None
            for line in text.splitlines():
                line = line.strip()
                if not line or line[0] in "#;":
                    continue
                if line.startswith("[") and line.endswith("]"):
                    group = line[1:-1].strip()
                elif group is not None and "=" in line:
                    name, value = (part.strip() for part in line.split("=", 1))
                    table.setdefault(group, {})[name] = _Own(name, value, group)
            return table
    raise PluginError("bootkit is not installed, so its built-in personalities and transports "
                      "(entry points) are not registered: run `pip install -e .` in the checkout")


def _own_entry_points(group: str) -> dict[str, _EntryPoint]:
    """bootkit's own entry points in ``group``: one distribution's metadata, no scan."""
    if not _own:
        _own.update(_own_table())
        _own.setdefault(group, {})
    return _own.get(group, {})


def _entry_points(group: str) -> dict[str, _EntryPoint]:
    """Every installed distribution's entry points in ``group`` (bootkit's own win a clash)."""
    if group not in _every:
        import importlib.metadata

        found: dict[str, _EntryPoint] = {ep.name: ep for ep in importlib.metadata.entry_points(group=group)}
        found.update(_own_entry_points(group))
        _every[group] = found
    return _every[group]


def _names(group: str) -> list[str]:
    return sorted(_entry_points(group))


def _unknown(group: str, name: str) -> ValueError:
    return ValueError(f"unknown {_WHAT[group]} {name!r} (choose from {', '.join(_display_names(group))})")


def _display_names(group: str) -> list[str]:
    if group == PERSONALITIES:
        try:
            return personality_names()
        except PluginError:
            pass
    return _names(group)


def _load(group: str, name: str) -> Any:
    loaded = _loaded.setdefault(group, {})
    if name in loaded:
        return loaded[name]
    ep = _own_entry_points(group).get(name) or _entry_points(group).get(name)
    if ep is None:
        raise _unknown(group, name)
    try:
        value = ep.load()
    except Exception as exc:  # an import error, a missing name: say which plug-in broke
        raise PluginError(f"{group} entry point '{ep.name} = {ep.value}' does not load: "
                          f"{type(exc).__name__}: {exc}") from exc
    _check(group, ep, value)
    loaded[name] = value
    return value


def _check(group: str, ep: _EntryPoint, value: Any) -> None:
    where = f"{group} entry point '{ep.name} = {ep.value}'"
    if group == PERSONALITIES:
        from .contracts import Personality

        if not isinstance(value, Personality):
            raise PluginError(f"{where} is a {type(value).__name__}, not a bootkit.contracts.Personality instance")
        if value.name != ep.name:
            raise PluginError(f"{where} holds the personality {value.name!r}: the names must agree")
        if not value.dialects or set(value.options) != set(value.dialects):
            raise PluginError(f"{where}: options must name exactly its dialects ({', '.join(value.dialects)}), "
                              f"got {', '.join(value.options) or 'none'}")
    elif group == TRANSPORTS and not isinstance(value, type):
        raise PluginError(f"{where} is a {type(value).__name__}, not a DeviceTransport class")
    elif group == MEMORIES and not callable(value):
        raise PluginError(f"{where} is a {type(value).__name__}, not a memory back-end factory")


# --------------------------------------------------------------------------
# personalities


def personality_names() -> list[str]:
    """Every registered personality, in display order (``Personality.order``, then name).
    Loads each one's ``personality.py`` (small: names, dialects, options; never its device
    or host side)."""
    return [p.name for p in personalities()]


def personality(name: str) -> Personality:
    """The personality registered as ``name``; ValueError naming the known ones when none is,
    :class:`PluginError` when its entry point does not load."""
    value: Personality = _load(PERSONALITIES, name)
    return value


def personalities() -> list[Personality]:
    """Every registered personality, loaded, in display order."""
    loaded = [personality(name) for name in _names(PERSONALITIES)]
    return sorted(loaded, key=lambda p: (p.order, p.name))


def resolve_chip(name: str):
    """A chip from the database (or a chip file), else one a personality defines (HalfKay's
    Teensy parts); KeyError naming the database's chips when nobody knows it."""
    from .memory import get_chip

    try:
        return get_chip(name)
    except KeyError as exc:
        for p in personalities():
            chip = p.chip_named(name)
            if chip is not None:
                return chip
        raise exc


# --------------------------------------------------------------------------
# device transports and memory back-ends


def transport_names() -> list[str]:
    """Every registered device transport (nothing imported)."""
    return _names(TRANSPORTS)


def transport(name: str) -> Any:
    """The DeviceTransport class registered as ``name`` (imported now); ValueError naming the
    known ones, :class:`PluginError` when it does not load."""
    return _load(TRANSPORTS, name)


def memory_names() -> list[str]:
    """Every registered memory back-end (nothing imported)."""
    return _names(MEMORIES)


def memory(name: str) -> Any:
    """The memory back-end factory registered as ``name``; ValueError naming the known ones."""
    return _load(MEMORIES, name)
