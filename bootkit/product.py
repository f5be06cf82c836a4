"""Product profiles: one TOML file describing the bootloader a product ships.

```toml
[product]
name = "Arduino Leonardo"
chip = "atmega32u4"          # from the chip database; or a [chip] table (as in a --chip-file)
personality = "..."          # a registered personality (`bootkit choose` ranks them)
dialect = "..."              # default: the personality's choice for the chip
description = "..."          # optional

[usb]                        # all optional: the dialect's own ids and strings by default
vid = 0x2341
pid = 0x0036
bcd_device = 0x0001
manufacturer = "Arduino LLC"
product = "Arduino Leonardo"
serial = "0001"

[entry]                      # when the board runs its bootloader (bootkit.memory.entry)
triggers = ["blank", "invalid", "baud1200", "timeout"]
double_reset_window = 0.5    # seconds
timeout = 8.0                # seconds; needs the "timeout" trigger

[protection]
bootloader_size = "4K"       # the protected bootloader region (default: the chip's)
read_protected = false       # read-out protection (the dialects that model it)
accept = ["uf2"]             # a drive: the image formats it accepts

[...]                        # the chosen personality's settings: one table, named after it
```

(examples/products/ holds one profile per personality.)

The personality's table and its keys are not listed here: they are the fields of its
dialects' options dataclasses (:mod:`bootkit.contracts`), whose metadata says the range,
pattern, allowed values, table and key of each, which dialects take it, and whether only
the host side uses it.  Cross-field rules the metadata cannot say are the personality's
own (``Personality.check_product``).

Every problem is a :class:`ProductError` whose one line names the file, the key and what
is allowed.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NoReturn

from .emulator import Emulator
from .memory import Chip, ChipFileError, EntryPolicy, load_chip_file
from .memory.chips import read_toml
from .memory.entry import ALL_TRIGGERS, TRIGGERS


class ProductError(ValueError):
    """One line: ``FILE: key a.b: problem (allowed: ...)``."""


# the tables every profile may have; then one named after the chosen personality
_CORE_TABLES = ("product", "usb", "entry", "protection", "chip")
_PRODUCT_KEYS = ("name", "chip", "personality", "dialect", "description", "target")
# [protection] keys of the profile itself; a personality's options may add more (table="protection")
_PROTECTION_KEYS = ("bootloader_size", "read_protected")
# what a [protection] key a personality adds means, for the one-line refusal of another personality
_PROTECTION_MEANING = {"accept": "only a drive chooses the formats it accepts"}
_NEVER = object()  # a profile's "never" (``none`` metadata, e.g. timeout = false): the option's None


def _registry():
    from . import registry

    return registry


def _kind_of(f: dataclasses.Field) -> str:
    """An options field's kind from its annotation (the dataclasses use string annotations)."""
    t = str(f.type)
    for name, kind in (("bool", "bool"), ("tuple", "list"), ("float", "number"), ("int", "int"), ("str", "str")):
        if name in t:
            return kind
    return "any"


def implemented(personality: str) -> bool:
    """A registered personality (one registered has its device side)."""
    return personality in _registry().personality_names()


def implemented_personalities() -> list[str]:
    return _registry().personality_names()


def facts_for(personality: str) -> tuple:
    """The personality's declared DialectFacts (a facts module that fails to import is an error)."""
    return tuple(_registry().personality(personality).facts())


def typical_bootloader_bytes(facts) -> int | None:
    """The declared size of the real bootloader in bytes (0 for ROM), None when it does not parse:
    the chooser's reading of the same string (one rule)."""
    from .chooser import bootloader_bytes

    return bootloader_bytes(facts)


def _product_fields(definition, dialect: str | None = None):
    """(field, table, key) of every field a profile may set, of ``dialect`` or of every dialect."""
    classes = [definition.options_for(dialect)] if dialect else list(definition.options.values())
    seen = set()
    for cls in classes:
        for f in dataclasses.fields(cls):
            if f.metadata.get("product", True) is False or f.name in seen:
                continue
            seen.add(f.name)
            yield f, f.metadata.get("table", definition.name), f.metadata.get("key", f.name)


@dataclass
class Product:
    path: Path
    name: str
    chip: Chip  # with the profile's bootloader region
    personality: str
    dialect: str | None
    usb: dict[str, Any] = field(default_factory=dict)
    policy: EntryPolicy = field(default_factory=EntryPolicy)
    read_protected: bool = False
    accept: tuple[str, ...] = ()
    #: the personality's settings, by options field name (after ``convert``)
    settings: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    notes: list[str] = field(default_factory=list)
    #: options field name -> (table, key) in the profile
    keys: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: product.target: the memory behind the personality (bootkit.memory.backends; None: simulated)
    target: str | None = None

    @property
    def definition(self):
        return _registry().personality(self.personality)

    @property
    def implemented(self) -> bool:
        return implemented(self.personality)

    def _meta(self, name: str, what: str) -> bool:
        cls = self.definition.options_for(self.dialect or self.definition.dialects[0])
        f = next((f for f in dataclasses.fields(cls) if f.name == name), None)
        return bool(f is not None and f.metadata.get(what))

    def options(self) -> dict[str, Any]:
        """The profile's device options, by profile key (``dialect``, the USB ids and strings,
        the personality's device settings)."""
        opts: dict[str, Any] = {}
        if self.dialect:
            opts["dialect"] = self.dialect
        for key in ("vid", "pid", "serial", "manufacturer", "product", "bcd_device"):
            if key in self.usb:
                opts[key] = self.usb[key]
        for name, value in self.settings.items():
            if not self._meta(name, "host_only"):
                opts[self.keys.get(name, ("", name))[1]] = value
        return opts

    def encode_options(self) -> dict[str, Any]:
        """Host-side settings of the personality (e.g. the pacing of a one-way file)."""
        return {k: v for k, v in self.settings.items() if self._meta(k, "host_only")}

    def device_options(self) -> dict[str, Any]:
        """The emulated device's options by field name: ``dialect``, the USB ids and strings,
        and every setting the device side takes (``Personality.make_options`` checks them)."""
        out: dict[str, Any] = {"dialect": self.dialect} if self.dialect else {}
        out.update(self.usb)
        out.update({k: v for k, v in self.settings.items() if not self._meta(k, "host_only")})
        return out

    def emulator(self, image=None, realtime: bool = False, readonly: bool = False) -> Emulator:
        """The emulated board this profile describes (chip, bootloader region, personality, options).
        ``readonly``: the image is only read (a shared lock; nothing written back).  With a
        product.target other than sim:, the front drives that target (docs/bridge.md): it is
        opened here (OSError or a MemoryFault when it is not there)."""
        backend = None
        chip = self.chip
        if self.target is not None and not self.target.lower().startswith("sim:"):
            from .memory.backends import open_target

            if image is not None or realtime or readonly:
                raise ProductError(f"{self.path}: key product.target: {self.target} is not a simulated flash "
                                   f"(an image file, real-time or read-only mode apply to sim: only)")
            try:
                backend = open_target(self.target, self.chip)
            except ValueError as exc:
                raise ProductError(f"{self.path}: key product.target: {exc}") from None
            chip = getattr(backend, "chip", None) or chip  # as the back-end reaches it (ISP: no boot region)
        try:
            return Emulator(chip, self.personality, image=image, realtime=realtime,
                            options=self.device_options(), policy=self.policy,
                            read_protected=self.read_protected, readonly=readonly, backend=backend)
        except ValueError as exc:
            close = getattr(backend, "close", None)
            if close is not None:
                close()
            raise ProductError(f"{self.path}: {exc}") from None

    def host_chip(self) -> Chip:
        """The chip as the dialect's bootloader sees it (HalfKay's region), for the host side."""
        return self.definition.chip_for(self.chip, self.dialect)

    def host_settings(self) -> dict[str, Any]:
        """The settings a host side takes, by options field name (for ``make_options``)."""
        return {k: v for k, v in self.settings.items() if not self._meta(k, "device_only")}

    def host_options(self) -> dict[str, Any]:
        """Keyword arguments for the personality's host module's ``flash`` / ``read``:
        ``dialect`` and ``chip`` always (the Chip, with the profile's bootloader region),
        ``vid``/``pid``/``serial`` when the profile sets them, and the settings both sides
        take (neither device- nor host-only, such as a Teensy's MCU)."""
        out: dict[str, Any] = {"dialect": self.dialect, "chip": self.host_chip()}
        for key in ("vid", "pid", "serial"):
            if key in self.usb:
                out[key] = self.usb[key]
        for name, value in self.settings.items():
            if not self._meta(name, "device_only") and not self._meta(name, "host_only"):
                out[name] = value
        return out

    def summary(self) -> list[str]:
        c = self.chip
        boot = (f"bootloader {_fmt_size(c.boot_size)} at 0x{c.boot_start:X}-0x{c.boot_end - 1:X}" if c.boot_size
                else "no flash reserved (ROM bootloader)")
        lines = [
            f"{self.path}: OK",
            f"product: {self.name}" + (f" ({self.description})" if self.description else ""),
            f"chip: {c.name} ({c.family}, {_fmt_size(c.flash_size)} flash at 0x{c.flash_start:X}, {boot})",
            f"personality: {self.personality}/{self.dialect or 'default'}",
        ]
        ids = []
        if "vid" in self.usb or "pid" in self.usb:
            ids.append(f"{self.usb.get('vid', 0):04x}:{self.usb.get('pid', 0):04x}"
                       if "vid" in self.usb and "pid" in self.usb
                       else ", ".join(f"{k} 0x{self.usb[k]:04x}" for k in ("vid", "pid") if k in self.usb))
        if "bcd_device" in self.usb:
            ids.append(f"bcdDevice 0x{self.usb['bcd_device']:04X}")
        ids += [f"{k}={self.usb[k]!r}" for k in ("manufacturer", "product", "serial") if k in self.usb]
        lines.append("usb: " + (", ".join(ids) if ids else "the dialect's own ids and strings"))
        t = sorted(self.policy.triggers, key=ALL_TRIGGERS.index)
        extra = f" (leaves after {self.policy.timeout:g} s without host activity)" if "timeout" in t else ""
        lines.append(f"entry: {', '.join(t) or 'none (boot button only)'}{extra}")
        prot = ["read-out protected" if self.read_protected else "readable"]
        if self.accept:
            prot.append(f"accepts {', '.join(self.accept)}")
        lines.append("protection: " + ", ".join(prot))
        shown = {self.keys[k][1]: v for k, v in self.settings.items() if self.keys.get(k, ("",))[0] != "protection"}
        if shown:
            lines.append("settings: " + ", ".join(f"{k}={_fmt_value(v)}" for k, v in shown.items()))
        lines += [f"note: {n}" for n in self.notes]
        return lines


def _fmt_size(n: int) -> str:
    if n and n % (1024 * 1024) == 0:
        return f"{n // (1024 * 1024)} MiB"
    if n and n % 1024 == 0:
        return f"{n // 1024} KiB"
    return f"{n} B"


def _fmt_value(v) -> str:
    if isinstance(v, int) and not isinstance(v, bool) and v > 9:
        return f"0x{v:X}"
    return repr(v)


# --------------------------------------------------------------------------
# loading


class _Checker:
    def __init__(self, path: Path):
        self.path = path

    def fail(self, key: str, problem: str, allowed: str | None = None) -> NoReturn:
        raise ProductError(f"{self.path}: key {key}: {problem}" + (f" (allowed: {allowed})" if allowed else ""))

    def int_(self, table, name, key, lo, hi, *, hexa=True) -> int | None:
        if name not in table:
            return None
        v = table[name]
        fmt = (lambda n: f"0x{n:04X}") if hexa else str
        if isinstance(v, bool) or not isinstance(v, int):
            self.fail(key, f"expected an integer, got {type(v).__name__} {v!r}", f"{fmt(lo)}-{fmt(hi)}")
        if not lo <= v <= hi:
            self.fail(key, f"{fmt(v) if v >= 0 else v} is out of range", f"{fmt(lo)}-{fmt(hi)}")
        return v

    def str_(self, table, name, key, *, max_len=None, pattern=None, allowed=None) -> str | None:
        if name not in table:
            return None
        v = table[name]
        if not isinstance(v, str):
            self.fail(key, f"expected a string, got {type(v).__name__} {v!r}", allowed)
        if max_len is not None and len(v) > max_len:
            self.fail(key, f"{len(v)} characters is too long", allowed or f"at most {max_len}")
        if pattern is not None and not re.fullmatch(pattern, v):
            self.fail(key, f"{v!r} is not valid", allowed)
        return v

    def bool_(self, table, name, key) -> bool | None:
        if name not in table:
            return None
        v = table[name]
        if not isinstance(v, bool):
            self.fail(key, f"expected true or false, got {type(v).__name__} {v!r}", "true, false")
        return v

    def number(self, table, name, key, lo, hi) -> float | None:
        if name not in table:
            return None
        v = table[name]
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            self.fail(key, f"expected a number, got {type(v).__name__} {v!r}", f"{lo:g}-{hi:g}")
        if not lo <= v <= hi:
            self.fail(key, f"{v!r} is out of range", f"{lo:g}-{hi:g}")
        return float(v)

    def table(self, doc, name, allowed=None) -> dict:
        t = doc.get(name, {})
        if not isinstance(t, dict):
            self.fail(name, f"expected a table [{name}], got {type(t).__name__}")
        if allowed is not None:
            for k in t:
                if k not in allowed:
                    self.fail(f"{name}.{k}", "unknown key", ", ".join(allowed))
        return t

    def field(self, table: dict, f: dataclasses.Field, key: str, full: str) -> Any:
        """A profile value checked against an options field's metadata (contracts.option):
        its kind, range, pattern, allowed values and own check; then converted."""
        meta = f.metadata
        if key not in table:
            return None
        v = table[key]
        if "none" in meta and v is meta["none"]:
            return _NEVER
        kind = meta.get("kind") or _kind_of(f)
        allowed = meta.get("allowed")
        allowed_text = allowed if isinstance(allowed, str) else ", ".join(allowed) if allowed else None
        if kind == "int":
            lo, hi = meta.get("min", 0), meta.get("max", 2**32 - 1)
            v = self.int_(table, key, full, lo, hi, hexa=bool(meta.get("hex")))
        elif kind == "number":
            v = self.number(table, key, full, meta.get("min", 0.0), meta.get("max", float("inf")))
        elif kind == "bool":
            v = self.bool_(table, key, full)
        elif kind == "str":
            max_len = meta.get("max_len")
            v = self.str_(table, key, full, max_len=max_len, pattern=meta.get("pattern"),
                          allowed=allowed_text or (f"at most {max_len} characters" if max_len else None))
            if isinstance(allowed, tuple) and v not in allowed:
                self.fail(full, f"{v!r} is not valid", allowed_text)
        elif kind == "list":
            if not isinstance(v, list) or not v or not all(isinstance(x, str) for x in v):
                self.fail(full, f"expected a list of names, got {v!r}", allowed_text)
            for x in v:
                if isinstance(allowed, tuple) and x not in allowed:
                    self.fail(full, f"unknown value {x!r}", allowed_text)
            v = tuple(v)
        check = meta.get("check")
        if check is not None:
            problem = check(v)
            if problem is not None:
                self.fail(full, *problem)
        convert = meta.get("convert")
        return convert(v) if convert is not None else v


def _boot_size(ck: "_Checker", value: Any) -> int:
    """protection.bootloader_size: the rule a chip's boot_size follows (memory.chips, a [chip] table
    in this same file or a --chip-file), plus "ROM" for no flash reserved."""
    from .memory.chips import parse_size  # the chip file's size rule, not a second one

    if isinstance(value, str) and value.strip().upper() == "ROM":
        return 0
    try:
        return parse_size(value, ck.path, "protection.bootloader_size")
    except ChipFileError:
        ck.fail("protection.bootloader_size", f"expected a size, got {value!r}",
                "4096, \"4K\", \"512 B\", \"0x1000\"")
        raise


def load_product(path: str | Path) -> Product:
    """Read and validate a profile; raises :class:`ProductError`."""
    registry = _registry()
    path = Path(path)
    doc = read_toml(path, ProductError)
    ck = _Checker(path)
    names = registry.personality_names()
    tables = _CORE_TABLES + tuple(names)
    for name in doc:
        if name not in tables:
            ck.fail(name, "unknown table" if isinstance(doc[name], dict) else "unknown key",
                    ", ".join(f"[{t}]" for t in tables))
    prod = ck.table(doc, "product", _PRODUCT_KEYS)

    # -- product
    name = ck.str_(prod, "name", "product.name", max_len=200)
    if name is None:
        ck.fail("product.name", "missing", "a product name")
    personality = ck.str_(prod, "personality", "product.personality", allowed=", ".join(names))
    if personality is None:
        ck.fail("product.personality", "missing", ", ".join(names))
    if personality not in names:
        ck.fail("product.personality", f"unknown personality {personality!r}", ", ".join(names))
    definition = registry.personality(personality)
    description = ck.str_(prod, "description", "product.description") or ""
    target = ck.str_(prod, "target", "product.target")
    if target is not None:
        from .memory.backends import parse_target

        try:
            spec = parse_target(target)
        except ValueError as exc:
            ck.fail("product.target", str(exc).removeprefix(f"--target {target.strip()}: "))
        if spec.scheme == "sim" and spec.chip is not None and spec.chip.lower() != str(prod.get("chip", "")).lower():
            ck.fail("product.target", f"{target} names another chip than product.chip", "sim:<product.chip>")

    # -- personality tables: only the chosen one
    for other in names:
        if other != personality and other in doc:
            ck.fail(other, f"settings for the {other} personality conflict with product.personality = "
                           f"{personality!r}", f"a [{personality}] table")
    every = list(_product_fields(definition))
    usb_t = ck.table(doc, "usb", [k for f, t, k in every if t == "usb"])
    entry_t = ck.table(doc, "entry", ("triggers", "double_reset_window", "timeout"))
    # a [protection] key some personality's options add (a drive's accept)
    foreign: dict[str, list[str]] = {}
    for p in registry.personalities():
        for _f, t, k in _product_fields(p):
            if t == "protection" and p.name not in foreign.setdefault(k, []):
                foreign[k].append(p.name)
    prot_t = ck.table(doc, "protection", _PROTECTION_KEYS + tuple(foreign))
    own_t = ck.table(doc, personality, [k for f, t, k in every if t == personality]) if personality in doc else {}

    # -- chip
    chip_name = ck.str_(prod, "chip", "product.chip")
    if chip_name is not None and "chip" in doc:
        ck.fail("product.chip", "conflicts with the [chip] table", "product.chip or a [chip] table, not both")
    if chip_name is not None:
        try:
            chip = registry.resolve_chip(chip_name)
        except KeyError as exc:
            ck.fail("product.chip", str(exc.args[0]).split(" (")[0],
                    "a chip from `bootkit chips`, or a [chip] table")
    elif "chip" in doc:
        if not isinstance(doc["chip"], dict):
            ck.fail("chip", "expected a [chip] table")
        try:
            chip = load_chip_file(path, register=False)
        except ChipFileError as exc:
            raise ProductError(str(exc)) from None
        except (ValueError, TypeError) as exc:
            ck.fail("chip", f"bad chip table: {exc}")
    else:
        ck.fail("product.chip", "missing", "a chip from `bootkit chips`, or a [chip] table")

    # behind a product.target the chip is the target's: the front runs elsewhere (a Pi's gadget)
    bridged = target is not None and not target.strip().lower().startswith("sim:")
    if not chip.usb and not bridged:
        ck.fail("product.chip", f"{chip.name} has no USB device port: it cannot host the {personality} personality "
                                f"(a USB class)", "a chip with USB (see `bootkit chips`)")

    # -- dialect
    facts = tuple(definition.facts())
    known = tuple(definition.dialects)
    dialect = ck.str_(prod, "dialect", "product.dialect", allowed=", ".join(known))
    if dialect is not None and dialect not in known:
        ck.fail("product.dialect", f"unknown {personality} dialect {dialect!r}", ", ".join(known))
    if dialect is None:
        dialect = definition.default_dialect(chip)
    notes: list[str] = []
    fact = next((f for f in facts if f.dialect == dialect), None)
    if fact is not None and fact.families and chip.family not in fact.families:
        ck.fail("product.chip", f"{chip.name} ({chip.family}) cannot host {personality}/{dialect}",
                f"a chip of family {', '.join(fact.families)}")

    # a dialect whose bootloader has its own region (HalfKay: 512 B / 1 KiB at the top)
    try:
        adapted = definition.chip_for(chip, dialect)
    except (KeyError, ValueError) as exc:
        ck.fail("product.chip", f"{chip.name} cannot host {personality}/{dialect}: {exc}".replace("'", ""),
                "a chip that dialect supports")
    own_region = adapted is not chip and (adapted.boot_start, adapted.boot_size) != (chip.boot_start, chip.boot_size)
    chip = adapted
    fields = {k: (f, t) for f, t, k in _product_fields(definition, dialect)}

    # -- usb
    usb: dict[str, Any] = {}
    for key in usb_t:
        v = ck.field(usb_t, fields[key][0], key, f"usb.{key}")
        if isinstance(v, str) and not v:
            ck.fail(f"usb.{key}", "empty string", "omit the key to use the dialect's own")
        usb[key] = v

    # -- protection and the bootloader region
    boot = prot_t.get("bootloader_size")
    if boot is not None:
        size = _boot_size(ck, boot)
        if size >= chip.flash_size:
            ck.fail("protection.bootloader_size", f"{_fmt_size(size)} leaves no room for an application: the flash "
                                                  f"of {chip.name} is too small ({_fmt_size(chip.flash_size)})",
                    f"below {_fmt_size(chip.flash_size)}")
        if size % chip.page_size and chip.family != "stm32":
            ck.fail("protection.bootloader_size", f"{size} is not a whole number of {chip.page_size}-byte pages",
                    f"a multiple of {chip.page_size}")
        if size != chip.boot_size:
            try:
                chip = chip.with_boot(size)
            except ValueError as exc:
                ck.fail("protection.bootloader_size", str(exc), f"{_fmt_size(chip.boot_size)} on {chip.name}")
    if fact is not None and not bridged:  # behind a target no front bootloader lives in its flash
        need = typical_bootloader_bytes(fact)
        if need and need >= chip.flash_size:
            ck.fail("product.chip", f"the flash of {chip.name} ({_fmt_size(chip.flash_size)}) is too small for the "
                                    f"{personality}/{dialect} bootloader ({fact.bootloader_size})",
                    "a chip with more flash")
        if need and chip.boot_size and chip.boot_size < need and not own_region:
            notes.append(f"the bootloader region ({_fmt_size(chip.boot_size)}) is smaller than the real "
                         f"{personality}/{dialect} bootloader ({fact.bootloader_size}): fine for emulation only")
    read_protected = bool(ck.bool_(prot_t, "read_protected", "protection.read_protected"))
    if read_protected and dialect not in definition.read_protection:
        models = ", ".join(f"{p.name}/{d}" for p in registry.personalities() for d in p.read_protection)
        ck.fail("protection.read_protected", f"{personality}/{dialect} has no read-out protection", models)

    # -- the personality's settings: its own table and the [protection] keys its options add
    settings: dict[str, Any] = {}
    keys: dict[str, tuple[str, str]] = {}
    for table_name, table in (("protection", prot_t), (personality, own_t)):
        for key in table:
            if table_name == "protection" and key in _PROTECTION_KEYS:
                continue
            if key not in fields:
                if table_name == "protection":
                    owners = ", ".join(foreign[key])
                    ck.fail(f"protection.{key}", f"{_PROTECTION_MEANING.get(key, 'not a setting of ' + personality)}; "
                                                 f"{personality} takes what its host client sends",
                            f"with personality {owners}")
                takes = [d for d in definition.dialects
                         if any(k == key for _f, _t, k in _product_fields(definition, d))]
                ck.fail(f"{personality}.{key}", f"conflicts with dialect {dialect!r}",
                        f"with dialect {', '.join(takes)}")
            f, _table = fields[key]
            v = ck.field(table, f, key, f"{table_name}.{key}")
            settings[f.name] = None if v is _NEVER else v
            keys[f.name] = (table_name, key)
    accept = tuple(prot_t["accept"]) if "accept" in prot_t else ()

    # -- entry: the common triggers, and those only some personalities support (a 1200-baud touch)
    special = {t: [p.name for p in registry.personalities() if t in p.triggers]
               for p in registry.personalities() for t in p.triggers}
    supported = tuple(t for t in TRIGGERS if t not in special or t in definition.triggers)
    # the optional triggers (memory.entry: xusb-boot's reset-button and watchdog) only when listed
    listable = supported + tuple(t for t in ALL_TRIGGERS if t not in TRIGGERS and t in definition.triggers)
    triggers = None
    if "triggers" in entry_t:
        v = entry_t["triggers"]
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            ck.fail("entry.triggers", f"expected a list of trigger names, got {v!r}", ", ".join(ALL_TRIGGERS))
        for x in v:
            if x not in ALL_TRIGGERS:
                ck.fail("entry.triggers", f"unknown trigger {x!r}", ", ".join(ALL_TRIGGERS))
            if x not in listable:
                ck.fail("entry.triggers", f"{x!r} needs personality {', '.join(special[x])}; it conflicts with "
                                          f"personality {personality!r}", ", ".join(listable))
        triggers = frozenset(v)
    else:
        triggers = frozenset(supported)
    window = ck.number(entry_t, "double_reset_window", "entry.double_reset_window", 0.05, 10.0)
    timeout = ck.number(entry_t, "timeout", "entry.timeout", 0.1, 3600.0)
    if timeout is not None and "timeout" not in triggers:
        ck.fail("entry.timeout", "set, but the 'timeout' trigger is not in entry.triggers",
                "add \"timeout\" to entry.triggers, or drop entry.timeout")
    if window is not None and "double-reset" not in triggers:
        ck.fail("entry.double_reset_window", "set, but the 'double-reset' trigger is not in entry.triggers",
                "add \"double-reset\" to entry.triggers, or drop the window")
    policy = EntryPolicy(triggers=triggers, double_reset_window=window if window is not None else 0.5,
                         timeout=timeout if timeout is not None else 8.0)

    # -- what only the personality knows (an option that must agree with the chip, a key a dialect forbids)
    definition.check_product(ck, SimpleNamespace(chip=chip, dialect=dialect, settings=settings, usb=usb,
                                                 boot_size_given=boot is not None))

    return Product(path=path, name=name, chip=chip, personality=personality, dialect=dialect, usb=usb,
                   policy=policy, read_protected=read_protected, accept=accept, settings=settings,
                   description=description, notes=notes, keys=keys, target=target)


def check(path: str | Path) -> list[str]:
    """Validate a profile and return its summary lines (raises :class:`ProductError`)."""
    return load_product(path).summary()


def cli_check(path: str | Path) -> int:
    """``bootkit product check P.toml``: 0 and the summary, or 2 and the one-line error."""
    try:
        lines = check(path)
    except ProductError as exc:
        print(f"bootkit: error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


__all__ = ["Product", "ProductError", "load_product", "check", "cli_check", "facts_for", "implemented",
           "implemented_personalities"]
