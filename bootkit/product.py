"""Product profiles: one TOML file describing the bootloader a product ships.

```toml
[product]
name = "Arduino Leonardo"
chip = "atmega32u4"          # from the chip database; or a [chip] table (as in a --chip-file)
personality = "cdc"          # dfu, hid, cdc, printer, msc, midi
dialect = "caterina"         # default: the personality's choice for the chip
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
read_protected = false       # read-out protection (dfu dfuse/flip)
accept = ["uf2"]             # msc: the image formats the drive accepts

[cdc]                        # settings of the chosen personality only (one table)
software_id = "CATERIN"
timeout = 8.0                # or false: never leave by itself
```

Per-personality tables: ``[dfu]`` transfer_size, attributes, secure;
``[hid]`` mcu, interrupt_out; ``[cdc]`` software_id, timeout;
``[printer]`` device_id, protocol, job_timeout; ``[msc]`` uf2_family,
volume_label; ``[midi]`` the one-way file's pacing: encoding ("sysex" or
"notes"), margin (fraction added to the datasheet times), slack_ms.

Every problem is a :class:`ProductError` whose one line names the file, the
key and what is allowed.  A profile for a personality that has not landed
yet (its package is not importable) still validates against what is known
(its facts, when present); :meth:`Product.emulator` then says it is not
implemented yet.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .emulator import PERSONALITIES, Emulator, available_personalities, personality_module, resolve_chip
from .memory import Chip, ChipFileError, EntryPolicy, load_chip_file
from .memory.chips import read_toml
from .memory.entry import TRIGGERS


class ProductError(ValueError):
    """One line: ``FILE: key a.b: problem (allowed: ...)``."""


# --------------------------------------------------------------------------
# the schema: table -> key -> (check, allowed text)

_USB_STRING_MAX = 126  # a string descriptor holds at most 126 UTF-16 code units (bLength is one byte)
IMAGE_FORMATS = ("uf2", "bin", "hex")  # what a drive can take dropped on it (msc: drop.ACCEPTABLE)

_TABLES = {
    "product": ("name", "chip", "personality", "dialect", "description"),
    "usb": ("vid", "pid", "bcd_device", "manufacturer", "product", "serial"),
    "entry": ("triggers", "double_reset_window", "timeout"),
    "protection": ("bootloader_size", "read_protected", "accept"),
    "chip": None,  # a custom chip: checked by load_chip_file
    "dfu": ("transfer_size", "attributes", "secure"),
    "hid": ("mcu", "interrupt_out"),
    "cdc": ("software_id", "timeout"),
    "printer": ("device_id", "protocol", "job_timeout"),
    "msc": ("uf2_family", "volume_label"),
    "midi": ("encoding", "margin", "slack_ms"),
}
# settings the host side uses, not the device (MIDI file pacing: bootkit.classes.midi.midifile)
_HOST_ONLY = {"midi": ("encoding", "margin", "slack_ms")}
# profile key -> the bootloader_device parameter names it may have, first match wins
_OPTION_NAMES = {
    "uf2_family": ("uf2_family", "family"),
    "volume_label": ("volume_label", "label"),
    "accept": ("accept", "formats"),
}
# per-personality settings and the dialects they belong to (None: every dialect)
_DIALECT_ONLY = {
    ("dfu", "secure"): ("flip",),
    ("hid", "mcu"): ("halfkay",),
    ("hid", "interrupt_out"): ("lufa",),
}
# personality -> dialects whose emulation models read-out protection
_READ_PROTECTION = {"dfu": ("dfuse", "flip")}


def _parse_size(text: str) -> int | None:
    """'512 B', '4 KiB', '4K', '0x1000', 4096 -> bytes; 'ROM' -> 0; None when not a size."""
    if isinstance(text, bool):
        return None
    if isinstance(text, int):
        return text if text >= 0 else None
    if not isinstance(text, str):
        return None
    t = text.strip().upper().replace(" ", "")
    if t == "ROM":
        return 0
    if t.startswith("0X"):
        try:
            return int(t, 16)
        except ValueError:
            return None
    m = re.fullmatch(r"(\d+)(B|K|KB|KIB|M|MB|MIB)?", t)
    if not m:
        return None
    unit = (m.group(2) or "B")[0]
    return int(m.group(1)) * {"B": 1, "K": 1024, "M": 1024 * 1024}[unit]


def implemented(personality: str) -> bool:
    """The personality's package is importable and has its device side (a package still being
    written can import as an empty namespace package)."""
    if personality not in available_personalities():
        return False
    return hasattr(personality_module(personality), "bootloader_device")


def implemented_personalities() -> list[str]:
    return [p for p in PERSONALITIES if implemented(p)]


def facts_for(personality: str) -> tuple:
    """The personality's declared DialectFacts (``bootkit/classes/<name>/facts.py``), () when absent."""
    try:
        mod = importlib.import_module(f"bootkit.classes.{personality}.facts")
    except Exception:  # noqa: BLE001 - a personality being written may not import yet
        return ()
    return tuple(getattr(mod, "FACTS", ()))


def typical_bootloader_bytes(facts) -> int | None:
    """The declared size of the real bootloader in bytes (0 for ROM), None when it does not parse."""
    text = facts.bootloader_size.split("(")[0].strip()
    return _parse_size(text)


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
    settings: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def implemented(self) -> bool:
        return implemented(self.personality)

    def options(self) -> dict[str, Any]:
        """The profile's device options, by profile key (see :meth:`emulator` for the parameter names)."""
        opts: dict[str, Any] = {}
        if self.dialect:
            opts["dialect"] = self.dialect
        for key in ("vid", "pid", "serial", "manufacturer", "product", "bcd_device"):
            if key in self.usb:
                opts[key] = self.usb[key]
        host_only = _HOST_ONLY.get(self.personality, ())
        opts.update({k: v for k, v in self.settings.items() if k not in host_only})
        if self.accept:
            opts["accept"] = self.accept
        return opts

    def encode_options(self) -> dict[str, Any]:
        """Host-side settings of the personality (MIDI: the one-way file's encoding, margin, slack_ms)."""
        return {k: v for k, v in self.settings.items() if k in _HOST_ONLY.get(self.personality, ())}

    def device_options(self) -> dict[str, Any]:
        """:meth:`options` renamed to the personality's ``bootloader_device`` parameters.

        Every option must be a parameter the function names (a ``**kwargs``
        catch-all would drop it silently): otherwise a ProductError names
        the profile key.
        """
        if not self.implemented:
            raise ProductError(f"{self.path}: key product.personality: the {self.personality} personality is not "
                               f"implemented yet (available: {', '.join(implemented_personalities())})")
        params = inspect.signature(personality_module(self.personality).bootloader_device).parameters
        out = {}
        for key, value in self.options().items():
            name = next((n for n in _OPTION_NAMES.get(key, (key,)) if n in params), None)
            if name is None:
                allowed = ", ".join(p for p in params if p not in ("memory", "chip")
                                    and params[p].kind is not inspect.Parameter.VAR_KEYWORD)
                raise ProductError(f"{self.path}: key {self._key_of(key)}: not supported by the {self.personality} "
                                   f"personality's bootloader_device yet (allowed: {allowed})")
            out[name] = value
        return out

    def emulator(self, image=None, realtime: bool = False, readonly: bool = False) -> Emulator:
        """The emulated board this profile describes (chip, bootloader region, personality, options).
        ``readonly``: the image is only read (a shared lock; nothing written back)."""
        opts = self.device_options()
        try:
            return Emulator(self.chip, self.personality, image=image, realtime=realtime, options=opts,
                            policy=self.policy, read_protected=self.read_protected, readonly=readonly)
        except ValueError as exc:
            raise ProductError(f"{self.path}: {exc}") from None

    def _key_of(self, option: str) -> str:
        if option in ("vid", "pid", "serial", "manufacturer", "product", "bcd_device"):
            return f"usb.{option}"
        if option == "accept":
            return "protection.accept"
        if option == "dialect":
            return "product.dialect"
        return f"{self.personality}.{option}"

    def host_options(self) -> dict[str, Any]:
        """Keyword arguments for the personality's ``host.flash`` / ``host.read``.

        ``dialect`` and ``chip`` always (the Chip, with the profile's
        bootloader region), ``vid``/``pid``/``serial`` when the profile sets
        them, ``mcu`` for HalfKay.  The personality itself is
        :attr:`personality` (``--via``).
        """
        chip = self.chip
        if self.implemented:  # HalfKay's board: the chip with HalfKay's boot region
            adapt = getattr(personality_module(self.personality), "chip_for", None)
            if adapt is not None:
                chip = adapt(chip, self.dialect)
        out: dict[str, Any] = {"dialect": self.dialect, "chip": chip}
        for key in ("vid", "pid", "serial"):
            if key in self.usb:
                out[key] = self.usb[key]
        if self.personality == "hid" and "mcu" in self.settings:
            out["mcu"] = self.settings["mcu"]
        return out

    def summary(self) -> list[str]:
        c = self.chip
        boot = (f"bootloader {_fmt_size(c.boot_size)} at 0x{c.boot_start:X}-0x{c.boot_end - 1:X}" if c.boot_size
                else "no flash reserved (ROM bootloader)")
        lines = [
            f"{self.path}: OK",
            f"product: {self.name}" + (f" ({self.description})" if self.description else ""),
            f"chip: {c.name} ({c.family}, {_fmt_size(c.flash_size)} flash at 0x{c.flash_start:X}, {boot})",
            f"personality: {self.personality}/{self.dialect or 'default'}"
            + ("" if self.implemented else " (not implemented yet: validated against the schema and its facts)"),
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
        t = sorted(self.policy.triggers, key=TRIGGERS.index)
        extra = f" (leaves after {self.policy.timeout:g} s without host activity)" if "timeout" in t else ""
        lines.append(f"entry: {', '.join(t) or 'none (boot button only)'}{extra}")
        prot = ["read-out protected" if self.read_protected else "readable"]
        if self.accept:
            prot.append(f"accepts {', '.join(self.accept)}")
        lines.append("protection: " + ", ".join(prot))
        if self.settings:
            lines.append("settings: " + ", ".join(f"{k}={_fmt_value(v)}" for k, v in self.settings.items()))
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

    def fail(self, key: str, problem: str, allowed: str | None = None):
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

    def table(self, doc, name) -> dict:
        t = doc.get(name, {})
        if not isinstance(t, dict):
            self.fail(name, f"expected a table [{name}], got {type(t).__name__}")
        allowed = _TABLES[name]
        if allowed is not None:
            for k in t:
                if k not in allowed:
                    self.fail(f"{name}.{k}", "unknown key", ", ".join(allowed))
        return t


def load_product(path: str | Path) -> Product:
    """Read and validate a product profile; raises :class:`ProductError`."""
    path = Path(path)
    doc = read_toml(path, ProductError)
    ck = _Checker(path)
    for name in doc:
        if name not in _TABLES:
            ck.fail(name, "unknown table" if isinstance(doc[name], dict) else "unknown key",
                    ", ".join(f"[{t}]" for t in _TABLES))
    prod = ck.table(doc, "product")
    usb_t = ck.table(doc, "usb")
    entry_t = ck.table(doc, "entry")
    prot_t = ck.table(doc, "protection")

    # -- product
    name = ck.str_(prod, "name", "product.name", max_len=200)
    if name is None:
        ck.fail("product.name", "missing", "a product name")
    personality = ck.str_(prod, "personality", "product.personality", allowed=", ".join(PERSONALITIES))
    if personality is None:
        ck.fail("product.personality", "missing", ", ".join(PERSONALITIES))
    if personality not in PERSONALITIES:
        ck.fail("product.personality", f"unknown personality {personality!r}", ", ".join(PERSONALITIES))
    description = ck.str_(prod, "description", "product.description") or ""

    # -- personality tables: only the chosen one
    for other in PERSONALITIES:
        if other != personality and other in doc:
            ck.fail(other, f"settings for the {other} personality conflict with product.personality = "
                           f"{personality!r}", f"a [{personality}] table")
    settings_t = ck.table(doc, personality) if personality in doc else {}

    # -- chip
    chip_name = ck.str_(prod, "chip", "product.chip")
    if chip_name is not None and "chip" in doc:
        ck.fail("product.chip", "conflicts with the [chip] table", "product.chip or a [chip] table, not both")
    if chip_name is not None:
        try:
            chip = resolve_chip(chip_name)
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

    if not chip.usb:
        ck.fail("product.chip", f"{chip.name} has no USB device port: it cannot host the {personality} personality "
                                f"(a USB class)", "a chip with USB (see `bootkit chips`)")

    # -- dialect, checked against the module or, before it lands, its facts
    facts = facts_for(personality)
    module = personality_module(personality) if implemented(personality) else None
    known = tuple(getattr(module, "DIALECTS", ())) if module else ()
    known = known or tuple(dict.fromkeys(f.dialect for f in facts))
    dialect = ck.str_(prod, "dialect", "product.dialect", allowed=", ".join(known) or None)
    notes: list[str] = []
    if dialect is not None and known and dialect not in known:
        ck.fail("product.dialect", f"unknown {personality} dialect {dialect!r}", ", ".join(known))
    if dialect is None and module is not None:
        dialect = module.default_dialect(chip)
    elif dialect is None and known:
        dialect = known[0]
    if not known:
        notes.append(f"the {personality} personality has not landed (no module, no facts): "
                     f"dialect {dialect!r} not checked")
    fact = next((f for f in facts if f.dialect == dialect), None)
    if fact is not None and fact.families and chip.family not in fact.families:
        ck.fail("product.chip", f"{chip.name} ({chip.family}) cannot host {personality}/{dialect}",
                f"a chip of family {', '.join(fact.families)}")

    # a dialect whose bootloader has its own region (HalfKay: 512 B / 1 KiB at the top)
    adapt = getattr(module, "chip_for", None) if module is not None else None
    if adapt is not None:
        try:
            chip = adapt(chip, dialect)
        except (KeyError, ValueError) as exc:
            ck.fail("product.chip", f"{chip.name} cannot host {personality}/{dialect}: {exc}".replace("'", ""),
                    "a chip that dialect supports")

    # -- usb
    usb: dict[str, Any] = {}
    for key, lo in (("vid", 0x0001), ("pid", 0x0000), ("bcd_device", 0x0000)):
        v = ck.int_(usb_t, key, f"usb.{key}", lo, 0xFFFF)
        if v is not None:
            usb[key] = v
    for key in ("manufacturer", "product", "serial"):
        v = ck.str_(usb_t, key, f"usb.{key}", max_len=_USB_STRING_MAX,
                    allowed=f"at most {_USB_STRING_MAX} characters")
        if v is not None:
            if not v:
                ck.fail(f"usb.{key}", "empty string", "omit the key to use the dialect's own")
            usb[key] = v

    # -- protection and the bootloader region
    boot = prot_t.get("bootloader_size")
    if boot is not None:
        size = _parse_size(boot)
        if size is None:
            ck.fail("protection.bootloader_size", f"expected a size, got {boot!r}", "4096, \"4K\", \"512 B\", \"0x1000\"")
        if size >= chip.flash_size:
            ck.fail("protection.bootloader_size", f"{_fmt_size(size)} leaves no room for an application: the flash "
                                                  f"of {chip.name} is too small ({_fmt_size(chip.flash_size)})",
                    f"below {_fmt_size(chip.flash_size)}")
        if personality == "hid" and dialect == "halfkay":
            ck.fail("protection.bootloader_size", "conflicts with dialect halfkay, whose bootloader size is fixed "
                                                  "by the MCU (512 B or 1 KiB)", "omit it for halfkay")
        if size % chip.page_size and chip.family != "stm32":
            ck.fail("protection.bootloader_size", f"{size} is not a whole number of {chip.page_size}-byte pages",
                    f"a multiple of {chip.page_size}")
        if size != chip.boot_size:
            try:
                chip = chip.with_boot(size)
            except ValueError as exc:
                ck.fail("protection.bootloader_size", str(exc), f"{_fmt_size(chip.boot_size)} on {chip.name}")
    if fact is not None:
        need = typical_bootloader_bytes(fact)
        if need and need >= chip.flash_size:
            ck.fail("product.chip", f"the flash of {chip.name} ({_fmt_size(chip.flash_size)}) is too small for the "
                                    f"{personality}/{dialect} bootloader ({fact.bootloader_size})",
                    "a chip with more flash")
        if need and chip.boot_size and chip.boot_size < need and not (personality == "hid" and dialect == "halfkay"):
            notes.append(f"the bootloader region ({_fmt_size(chip.boot_size)}) is smaller than the real "
                         f"{personality}/{dialect} bootloader ({fact.bootloader_size}): fine for emulation only")
    read_protected = bool(ck.bool_(prot_t, "read_protected", "protection.read_protected"))
    if read_protected and dialect not in _READ_PROTECTION.get(personality, ()):
        models = ", ".join(f"{p}/{d}" for p, ds in _READ_PROTECTION.items() for d in ds)
        ck.fail("protection.read_protected", f"{personality}/{dialect} has no read-out protection", models)
    accept: tuple[str, ...] = ()
    if "accept" in prot_t:
        v = prot_t["accept"]
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v) or not v:
            ck.fail("protection.accept", f"expected a list of format names, got {v!r}", ", ".join(IMAGE_FORMATS))
        for x in v:
            if x not in IMAGE_FORMATS:
                ck.fail("protection.accept", f"unknown image format {x!r}", ", ".join(IMAGE_FORMATS))
        if personality != "msc":
            ck.fail("protection.accept", f"only a drive chooses the formats it accepts; {personality} takes what "
                                         f"its host client sends", "with personality msc")
        accept = tuple(v)

    # -- entry
    triggers = None
    if "triggers" in entry_t:
        v = entry_t["triggers"]
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            ck.fail("entry.triggers", f"expected a list of trigger names, got {v!r}", ", ".join(TRIGGERS))
        for x in v:
            if x not in TRIGGERS:
                ck.fail("entry.triggers", f"unknown trigger {x!r}", ", ".join(TRIGGERS))
        triggers = frozenset(v)
        if "baud1200" in triggers and personality != "cdc":
            ck.fail("entry.triggers", f"'baud1200' (the 1200-baud touch) needs a CDC serial port; it conflicts with "
                                      f"personality {personality!r}", ", ".join(t for t in TRIGGERS if t != "baud1200"))
    else:
        triggers = frozenset(t for t in TRIGGERS if t != "baud1200" or personality == "cdc")
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

    # -- per-personality settings
    settings = _settings(ck, personality, dialect, settings_t, chip)

    return Product(path=path, name=name, chip=chip, personality=personality, dialect=dialect, usb=usb,
                   policy=policy, read_protected=read_protected, accept=accept, settings=settings,
                   description=description, notes=notes)


def _settings(ck: _Checker, personality: str, dialect: str | None, t: dict, chip: Chip) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in t:
        only = _DIALECT_ONLY.get((personality, key))
        if only is not None and dialect not in only:
            ck.fail(f"{personality}.{key}", f"conflicts with dialect {dialect!r}", f"with dialect {', '.join(only)}")
    p = personality
    if p == "dfu":
        v = ck.int_(t, "transfer_size", "dfu.transfer_size", 1, 0xFFFF, hexa=False)  # wTransferSize is a u16
        if v is not None:
            out["transfer_size"] = v
        # bmAttributes: bitCanDnload, bitCanUpload, bitManifestationTolerant, bitWillDetach (DFU 1.1 4.1.3)
        v = ck.int_(t, "attributes", "dfu.attributes", 0x00, 0x0F)
        if v is not None:
            if not v & 0x01:
                ck.fail("dfu.attributes", f"0x{v:02X} lacks bitCanDnload (0x01): nothing could be flashed",
                        "0x01-0x0F with bit 0 set")
            out["attributes"] = v
        v = ck.bool_(t, "secure", "dfu.secure")
        if v is not None:
            out["secure"] = v
    elif p == "hid":
        v = ck.str_(t, "mcu", "hid.mcu")
        if v is not None:
            from .classes.hid.protocol import HALFKAY_MCUS

            if v.lower() not in HALFKAY_MCUS:
                ck.fail("hid.mcu", f"unknown HalfKay MCU {v!r}", ", ".join(HALFKAY_MCUS))
            if v.lower() != chip.name.lower():
                ck.fail("hid.mcu", f"{v!r} conflicts with product.chip {chip.name!r}", chip.name)
            out["mcu"] = v.lower()
        v = ck.bool_(t, "interrupt_out", "hid.interrupt_out")
        if v is not None:
            out["interrupt_out"] = v
    elif p == "cdc":
        # AVR109 'S': a 7-character software identifier (LUFACDC, CATERIN, AVRBOOT)
        v = ck.str_(t, "software_id", "cdc.software_id", pattern=r"[ -~]{7}", allowed="7 printable ASCII characters")
        if v is not None:
            out["software_id"] = v
        if "timeout" in t:
            v = t["timeout"]
            if v is False:
                out["timeout"] = None
            else:
                out["timeout"] = ck.number(t, "timeout", "cdc.timeout", 0.1, 3600.0)
    elif p == "printer":
        v = ck.str_(t, "device_id", "printer.device_id", max_len=1021,
                    allowed="an IEEE 1284 id with MFG: and MDL: keys, e.g. "
                            "\"MFG:Generic;MDL:Generic_/_Text_Only;CMD:1284.4;CLS:PRINTER;\"")
        if v is not None:
            keys = {part.split(":", 1)[0].strip().upper() for part in v.split(";") if ":" in part}
            if not {"MFG", "MDL"} <= keys and not {"MANUFACTURER", "MODEL"} <= keys:
                ck.fail("printer.device_id", "an IEEE 1284 device id needs MFG: and MDL: (or MANUFACTURER:, MODEL:)",
                        "e.g. \"MFG:Generic;MDL:Generic_/_Text_Only;CMD:1284.4;CLS:PRINTER;\"")
            out["device_id"] = v
        v = ck.int_(t, "protocol", "printer.protocol", 1, 2, hexa=False)
        if v is not None:
            out["protocol"] = v  # 1 unidirectional, 2 bidirectional (USB printer class 4.2)
        v = ck.number(t, "job_timeout", "printer.job_timeout", 0.1, 3600.0)
        if v is not None:
            out["job_timeout"] = v
    elif p == "msc":
        if "uf2_family" in t:
            v = t["uf2_family"]
            from .formats.uf2 import FAMILIES, family_id

            if isinstance(v, bool) or not isinstance(v, (int, str)):
                ck.fail("msc.uf2_family", f"expected a family name or a 32-bit id, got {v!r}",
                        "rp2040, nrf52840, stm32f4, ... or 0x00000001-0xFFFFFFFF")
            try:
                v = family_id(v)
            except ValueError:
                ck.fail("msc.uf2_family", f"unknown UF2 family {t['uf2_family']!r}",
                        ", ".join(sorted(FAMILIES)) + " or a 32-bit id")
            if v == 0:
                ck.fail("msc.uf2_family", "0 is not a family id", "0x00000001-0xFFFFFFFF or a family name")
            if chip.uf2_family is not None and v != chip.uf2_family:
                ck.fail("msc.uf2_family", f"0x{v:08X} conflicts with the chip's family 0x{chip.uf2_family:08X} "
                                          f"({chip.name})", f"0x{chip.uf2_family:08X}, or omit it")
            out["uf2_family"] = v
        # FAT volume label: 11 bytes, upper case, no characters FAT forbids
        v = ck.str_(t, "volume_label", "msc.volume_label", pattern=r"[A-Z0-9 _\-!#$%&'()@^`{}~]{1,11}",
                    allowed="1-11 characters: A-Z 0-9 space _ - ! # $ % & ' ( ) @ ^ ` { } ~")
        if v is not None:
            out["volume_label"] = v
    elif p == "midi":
        # the one-way file's pacing (midifile.file_events): wait = datasheet ms x (1 + margin) + slack_ms
        v = ck.str_(t, "encoding", "midi.encoding", pattern="sysex|notes", allowed="sysex, notes")
        if v is not None:
            out["encoding"] = v
        v = ck.number(t, "margin", "midi.margin", 0.0, 10.0)
        if v is not None:
            out["margin"] = v
        v = ck.number(t, "slack_ms", "midi.slack_ms", 0.0, 1000.0)
        if v is not None:
            out["slack_ms"] = v
    return out


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
           "implemented_personalities", "IMAGE_FORMATS"]
