"""A small reader for avrdude.conf, enough to check the chip database against it.

The grammar is avrdude's own (src/config_gram.y in avrdude 7.x): top-level
``part`` and ``programmer`` blocks, each a list of ``key = value;`` lines and,
in a part, ``memory "name"`` sub-blocks; a block ends at a ``;`` standing where a
statement would start.  ``part parent "m328"`` starts from a copy of part m328
(its memories too) and overrides what it names; a ``memory`` block in a child
changes only the keys it names, and ``memory "x" = NULL;`` removes one.
Comments run from ``#`` to the end of the line.
"""

from __future__ import annotations

import copy
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[A-Za-z0-9_.+-]+|[=;,|]')


@dataclass
class Part:
    id: str
    values: dict[str, list[str]] = field(default_factory=dict)
    memories: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    def value(self, key: str) -> list[str]:
        return self.values.get(key, [])

    def signature(self) -> bytes:
        return bytes(int(v, 0) for v in self.value("signature"))

    def memory(self, name: str) -> dict[str, list[str]] | None:
        return self.memories.get(name)

    def mem_int(self, name: str, key: str, default: int = 0) -> int:
        mem = self.memories.get(name) or {}
        vals = mem.get(key)
        return int(vals[0], 0) if vals else default


def _strip_comments(text: str) -> str:
    out = []
    for line in text.splitlines():
        # a '#' inside a quoted string (desc = "...") is not a comment
        in_str = False
        cut = len(line)
        for i, ch in enumerate(line):
            if ch == '"' and (i == 0 or line[i - 1] != "\\"):
                in_str = not in_str
            elif ch == "#" and not in_str:
                cut = i
                break
        out.append(line[:cut])
    return "\n".join(out)


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(_strip_comments(text))


def _unquote(tok: str) -> str:
    return tok[1:-1] if tok.startswith('"') else tok


def _statement(toks: list[str], i: int) -> tuple[str, list[str], int]:
    """``key = v1 v2, v3 ;`` from toks[i]: (key, values without commas, index after ';')."""
    key = toks[i]
    if toks[i + 1] != "=":
        raise ValueError(f"avrdude.conf: expected '=' after {key!r}, got {toks[i + 1]!r}")
    j = i + 2
    vals: list[str] = []
    while toks[j] != ";":
        if toks[j] != ",":
            vals.append(_unquote(toks[j]))
        j += 1
    return key, vals, j + 1


def parse(text: str) -> dict[str, Part]:
    """Every part in an avrdude.conf text, by id, with inheritance resolved."""
    toks = _tokens(text)
    parts: dict[str, Part] = {}
    i = 0
    while i < len(toks):
        tok = toks[i]
        if tok in ("part", "programmer"):
            kind = tok
            i += 1
            parent = None
            if toks[i] == "parent":
                parent = _unquote(toks[i + 1])
                i += 2
            if kind == "part":
                if parent is not None:
                    base = copy.deepcopy(parts[parent])
                    part = Part("", base.values, base.memories)
                else:
                    part = Part("")
            while toks[i] != ";":
                if toks[i] == "memory":
                    name = _unquote(toks[i + 1])
                    i += 2
                    if toks[i] == "=":  # memory "x" = NULL;
                        if kind == "part":
                            part.memories.pop(name, None)
                        i += 3
                        continue
                    mem = part.memories.setdefault(name, {}) if kind == "part" else {}
                    while toks[i] != ";":
                        if toks[i] == "alias":  # memory "wdtcfg" alias "fuse0"; (a second name)
                            mem["alias"] = [_unquote(toks[i + 1])]
                            i += 3
                            continue
                        key, vals, i = _statement(toks, i)
                        mem[key] = vals
                    i += 1
                else:
                    key, vals, i = _statement(toks, i)
                    if kind == "part":
                        part.values[key] = vals
            i += 1
            if kind == "part":
                part.id = part.values["id"][0]
                parts[part.id] = part
        else:  # a top-level setting: default_programmer = "..." ;
            _key, _vals, i = _statement(toks, i)
    return parts


def find_conf() -> Path | None:
    """The avrdude.conf the installed avrdude reads (the Debian package puts it in /etc)."""
    exe = shutil.which("avrdude")
    if exe is None:
        return None
    candidates = [Path("/etc/avrdude.conf"), Path(exe).resolve().parent.parent / "etc" / "avrdude.conf"]
    for path in candidates:
        if path.is_file():
            return path
    return None


def write_mask(pattern: str) -> int:
    """The bits a fuse/lock ``write`` instruction carries: its 'i' bits in the last byte
    ("1010.1100--1010.0100--xxxx.xxxx--xxxx.xiii" -> 0x07)."""
    last = pattern.replace(".", "").split("--")[-1]
    return sum(1 << (7 - k) for k, ch in enumerate(last) if ch == "i")
