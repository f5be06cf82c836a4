"""``bootkit choose``: rank personality/dialect pairs for a product's needs, and say why.

Nothing here knows a personality: every fact comes from the
``FACTS: tuple[DialectFacts, ...]`` each personality declares in
``bootkit/classes/<name>/facts.py`` (a new personality plugs in by having
one).  Conventions read from those facts:

- ``driver[os]``: "none" (works out of the box; text after "none" such as
  "none (usbser)" is a note), "no" (cannot work: the dialect is excluded
  for that OS, with the quirk that mentions the OS as the reason), or what
  to install;
- ``host_software``: "none" (or "none: ...") when the OS alone is enough;
- ``feedback``: starts with "none" when the user learns nothing beyond
  success or failure;
- ``benchmark``: the script, then optionally "wire limit N KiB/s": the
  throughput the benchmark measured, used for the need "fast";
- ``bootloader_size``: "ROM", "512 B", "4 KiB", ...

Regenerate docs/choosing.md with ``python -m bootkit.chooser --write-docs docs/choosing.md``.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from . import registry
from .classes.common import OSES, DialectFacts

NEEDS = {
    "eeprom": "writes EEPROM as well as flash",
    "readback": "reads the flash back (and so verifies by reading)",
    "no-host-software": "the OS alone is enough: no tool to install",
    "no-driver": "no driver to install on the chosen OSes",
    "unattended": "scriptable with no user action at the device",
    "fast": "high throughput (as our benchmarks measured it)",
    "small-bootloader": "the bootloader takes little or no flash",
    "feedback": "the user learns what went wrong",
}
FAST_KIB_S = 500  # a wire limit at or above this counts as fast; below 100 as slow


def all_facts() -> list[DialectFacts]:
    """Every dialect's facts, personality by personality in the registry's display order
    (``Personality.facts()``; a facts module that does not import is an error, not "no facts")."""
    out: list[DialectFacts] = []
    for personality in registry.personalities():
        out.extend(personality.facts())
    return out


def _is_none(text: str) -> bool:
    return re.split(r"[:(;,]", text, maxsplit=1)[0].strip().lower() == "none"


def throughput_kib_s(facts: DialectFacts) -> float | None:
    m = re.search(r"wire limit (?:about )?(\d+(?:\.\d+)?)\s*KiB/s", facts.benchmark)
    return float(m.group(1)) if m else None


def bootloader_bytes(facts: DialectFacts) -> int | None:
    text = facts.bootloader_size.strip()
    if text.upper().startswith("ROM"):
        return 0
    m = re.match(r"(\d+)\s*(B|KiB|K|KB|MiB|M)\b", text)
    if not m:
        return None
    return int(m.group(1)) * {"B": 1, "K": 1024, "M": 1 << 20}[m.group(2)[0]]


def os_quirk(facts: DialectFacts, os_name: str) -> str | None:
    label = {"ipados": "ipados", "macos": "macos", "windows": "windows", "linux": "linux", "android": "android"}[os_name]
    for quirk, _how in facts.quirks:
        if label in quirk.lower().replace(" ", ""):
            return quirk
    return None


@dataclass
class Ranked:
    facts: DialectFacts
    score: float
    works: bool  # on every requested OS, and on the chip
    why: list[str] = field(default_factory=list)  # "+ ...", "- ...", "x ..." (excluded)

    @property
    def personality(self) -> str:
        return self.facts.personality

    @property
    def dialect(self) -> str:
        return self.facts.dialect

    @property
    def name(self) -> str:
        return f"{self.facts.personality}/{self.facts.dialect}"


def _check_words(words, allowed, what: str) -> tuple[str, ...]:
    if isinstance(words, str):
        words = [w for w in words.split(",") if w.strip()]
    words = tuple(w.strip().lower() for w in words)
    for w in words:
        if w not in allowed:
            raise ValueError(f"unknown {what} {w!r} (allowed: {', '.join(allowed)})")
    return words


def choose(oses=(), needs=(), chip=None, facts: list[DialectFacts] | None = None) -> list[Ranked]:
    """Rank every declared personality/dialect for ``needs`` on ``oses`` (default: every OS) and ``chip``.

    Dialects that cannot work on a requested OS (driver "no") or cannot be
    hosted by the chip come last, with the reason.  Raises ValueError for an
    unknown OS, need or chip.
    """
    oses = _check_words(oses, OSES, "OS")
    needs = _check_words(needs, tuple(NEEDS), "need")
    if isinstance(chip, str):
        try:
            chip = registry.resolve_chip(chip)
        except KeyError as exc:
            raise ValueError(exc.args[0]) from None
    target_oses = oses or OSES
    out = []
    for f in (facts if facts is not None else all_facts()):
        why: list[str] = []
        works = True
        score = 0.0
        for os_name in oses:
            if f.driver.get(os_name, "no") == "no":
                works = False
                quirk = os_quirk(f, os_name)
                why.append(f"x cannot work on {os_name}" + (f": {quirk}" if quirk else ""))
        if chip is not None:
            if not chip.usb:
                works = False
                why.append(f"x {chip.name} has no USB device port")
            elif f.families and chip.family not in f.families:
                works = False
                why.append(f"x {chip.name} ({chip.family}) cannot host it (fits: {', '.join(f.families)})")
            else:
                need = bootloader_bytes(f)
                if need and need >= chip.flash_size:
                    works = False
                    why.append(f"x the flash of {chip.name} is too small for its {f.bootloader_size} bootloader")
        for need in needs:
            s, text = _judge(f, need, target_oses)
            score += s
            why.append(("+ " if s > 0 else "- " if s < 0 else "~ ") + f"{need}: {text}")
        out.append(Ranked(f, score, works, why))
    order = {p: i for i, p in enumerate(registry.personality_names())}
    # stable: personality order, then the order each facts.py lists its dialects
    return sorted(out, key=lambda r: (not r.works, -r.score, order.get(r.personality, 99)))


def _judge(f: DialectFacts, need: str, oses) -> tuple[float, str]:
    if need == "eeprom":
        return (1, "writes EEPROM") if f.eeprom else (-1, "flash only")
    if need == "readback":
        return (1, f"reads back (verify: {f.verify})") if f.readback else (-1, f"write-only (verify: {f.verify})")
    if need == "no-host-software":
        return (1, "the OS alone is enough") if _is_none(f.host_software) else (-1, f"needs {f.host_software}")
    if need == "no-driver":
        missing = [f"{o}: {f.driver.get(o, 'no')}" for o in oses if not _is_none(f.driver.get(o, "no"))]
        return (-1, "; ".join(missing)) if missing else (1, f"no driver on {', '.join(oses)}")
    if need == "unattended":
        return (1, "scriptable, no action at the device") if f.unattended else (-1, "someone must act at the device")
    if need == "fast":
        kib = throughput_kib_s(f)
        if kib is None:
            return 0, "no throughput measured"
        if kib >= FAST_KIB_S:
            return 1, f"wire limit {kib:g} KiB/s"
        return (0, f"wire limit {kib:g} KiB/s") if kib >= 100 else (-1, f"wire limit {kib:g} KiB/s")
    if need == "small-bootloader":
        n = bootloader_bytes(f)
        if n is None:
            return 0, f"size unknown ({f.bootloader_size})"
        if n <= 1024:
            return 1, "no flash (ROM)" if n == 0 else f"{f.bootloader_size}"
        if n <= 2048:
            return 0.5, f.bootloader_size
        return (0, f.bootloader_size) if n <= 4096 else (-1, f.bootloader_size)
    if need == "feedback":
        return (-1, f.feedback) if _is_none(f.feedback) else (1, f.feedback)
    raise ValueError(need)  # pragma: no cover - _check_words guards it


# --------------------------------------------------------------------------
# output


def render_ranking(ranked: list[Ranked]) -> str:
    lines = []
    for i, r in enumerate(ranked, 1):
        status = f"score {r.score:+g}" if r.works else "excluded"
        lines.append(f"{i}. {r.name} ({status}): {r.facts.summary}")
        lines += [f"     {w}" for w in r.why]
    return "\n".join(lines)


#: The default view's limits (#21 item 6): it fits a terminal without scrolling sideways or far.
BRIEF_LINES = 40
BRIEF_COLUMNS = 100


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[:max(0, width - 3)].rstrip() + "..."


def _marks(r: Ranked) -> str:
    """A dialect's verdict per need in a few characters each: "+eeprom -readback"."""
    marks = []
    for w in r.why:
        sign, _, rest = w.partition(" ")
        if sign in "+-~":
            marks.append(sign + rest.split(":", 1)[0])
    return " ".join(marks)


def render_brief(ranked: list[Ranked], needs=(), width: int = BRIEF_COLUMNS,
                 max_lines: int = BRIEF_LINES) -> str:
    """What ``bootkit choose`` prints by default: one line per dialect (score and its verdict per
    need, or its summary), the reasons of the top choice, and where the rest is (--details).
    At most ``max_lines`` lines, none longer than ``width``."""
    width = max(40, width)
    best = next((r for r in ranked if r.works), None)
    reasons = []
    if best is not None and best.why:
        reasons = [f"why {best.name}:"] + [f"  {w}" for w in best.why]
    footer = ["--details: every reason and the comparison table", "--write P.toml: a starter profile for the top choice"]
    if best is None:
        footer.insert(0, "nothing works for these OSes and this chip.")
    room = max_lines - (len(reasons) + 1 if reasons else 0) - 1 - len(footer)
    if room < 3 and reasons:  # many needs: the reasons give way to the ranking
        keep = max(2, len(reasons) - (3 - room))
        reasons = reasons[:keep - 1] + ["  ... (--details)"]
        room = max_lines - len(reasons) - 1 - 1 - len(footer)
    name_w = max((len(r.name) for r in ranked), default=0)
    lines: list[str] = []
    shown = ranked if len(ranked) <= room else ranked[:room - 1]
    for i, r in enumerate(shown, 1):
        if r.works:
            status = f"{r.score:+g}"
            tail = _marks(r) if needs else r.facts.summary
        else:
            status = "excl."
            tail = next((w[2:] for w in r.why if w.startswith("x ")), "excluded")
        # "1. name" as the long view starts; the columns after it aligned whatever i's digits
        lines.append(_clip(f"{i}. {r.name:<{name_w + 2 - len(str(i))}} {status:>5}  {tail}", width))
    if len(shown) < len(ranked):
        lines.append(f"    ... {len(ranked) - len(shown)} more (--details)")
    if reasons:
        lines.append("")
        lines += [_clip(line, width) for line in reasons]
    lines.append("")
    lines += [_clip(line, width) for line in footer]
    return "\n".join(lines)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_table(ranked: list[Ranked]) -> str:
    """A Markdown comparison table of the ranked dialects (the same columns in the CLI and the docs)."""
    head = (["personality/dialect"] + [f"driver: {o}" for o in OSES]
            + ["host software", "EEPROM", "read-back / verify", "feedback", "throughput (our benchmark)",
               "bootloader size", "known OS quirks -> how bootkit handles them"])
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in ranked:
        f = r.facts
        cells = ([r.name] + [f.driver.get(o, "no") for o in OSES]
                 + [f.host_software, "yes" if f.eeprom else "no",
                    f"{'yes' if f.readback else 'no'} / {f.verify}", f.feedback, f.benchmark or "not measured",
                    f.bootloader_size, "; ".join(f"{q} -> {how}" for q, how in f.quirks) or "-"])
        rows.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(rows)


def render_quirks(ranked: list[Ranked]) -> str:
    """Known OS quirks and how bootkit handles them, per dialect."""
    out = []
    for r in ranked:
        if not r.facts.quirks:
            continue
        out.append(f"**{r.name}**\n")
        out += [f"- {q}: {how}" for q, how in r.facts.quirks]
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _pick_chip(facts: DialectFacts):
    from .memory import CHIPS

    for c in CHIPS:
        if c.usb and (not facts.families or c.family in facts.families):
            need = bootloader_bytes(facts)
            if not need or need < c.flash_size:
                return c
    raise ValueError(f"no chip in the database fits {facts.personality}/{facts.dialect}; give one")


def _and(words: list[str]) -> str:
    return " and ".join(words) if len(words) < 3 else ", ".join(words[:-1]) + " and " + words[-1]


def _toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_profile(ranked: Ranked, chip=None, path=None) -> str:
    """Write (and return) a starter product profile for ``ranked`` that ``load_product`` accepts.

    ``chip``: a Chip or a name; default the first USB chip in the database
    the dialect fits.  Raises ValueError when the choice cannot work on it.
    """
    from .memory.entry import TRIGGERS

    f = ranked.facts
    personality = registry.personality(f.personality)
    if chip is None:
        chip = _pick_chip(f)
    elif isinstance(chip, str):
        try:
            chip = registry.resolve_chip(chip)
        except KeyError as exc:
            raise ValueError(exc.args[0]) from None
    if not chip.usb:
        raise ValueError(f"{chip.name} has no USB device port")
    if f.families and chip.family not in f.families:
        raise ValueError(f"{f.personality}/{f.dialect} does not fit {chip.name} ({chip.family}); "
                         f"it fits {', '.join(f.families)}")
    triggers = ["blank", "invalid", "magic", "double-reset"]
    triggers += [t for t in TRIGGERS if t in personality.triggers]  # e.g. a serial port's 1200-baud touch
    protectable = [f"{p.name}/{d}" for p in registry.personalities() for d in p.read_protection]
    lines = [
        f"# Starter profile for {f.personality}/{f.dialect} on {chip.name}, written by `bootkit choose`.",
        f"# {f.summary}",
        "# Check it with `bootkit product check FILE`; the keys are described in bootkit/product.py.",
        "",
        "[product]",
        f"name = {_toml_str('My ' + chip.name + ' product')}",
        f"chip = {_toml_str(chip.name)}",
        f"personality = {_toml_str(f.personality)}",
        f"dialect = {_toml_str(f.dialect)}",
        "",
        "[usb]",
        "# vid = 0x1209          # your own ids (pid.codes gives open-source hardware a PID);",
        "# pid = 0x0001          # the dialect's own ids are used while these stay commented out",
        'serial = "0001"',
        "",
        "[entry]",
        "triggers = [" + ", ".join(_toml_str(t) for t in triggers) + "]",
        "",
        "[protection]",
        "read_protected = false" if f.dialect in personality.read_protection
        else f"# read_protected = false   # {_and(protectable)} only",
        f"# bootloader_size = \"{f.bootloader_size}\"   # default: the chip's boot region"
        if bootloader_bytes(f) else "# bootloader_size: the chip's (the bootloader is in ROM)",
        "",
    ]
    text = "\n".join(lines)
    if path is not None:
        Path(path).write_text(text)
    return text


# --------------------------------------------------------------------------
# docs/choosing.md

DOC_EXAMPLES = (
    ((), ("no-driver",)),
    (("ipados",), ("no-host-software",)),
    ((), ("eeprom",)),
    (("windows", "linux"), ("readback", "unattended")),
    ((), ("small-bootloader",)),
)


def command_line(oses=(), needs=(), chip=None) -> str:
    parts = ["bootkit choose"]
    if oses:
        parts.append("--os " + ",".join(oses))
    if needs:
        parts.append("--needs " + ",".join(needs))
    if chip:
        parts.append(f"--chip {chip}")
    return " ".join(parts)


def report(oses=(), needs=(), chip=None) -> str:
    """What ``bootkit choose`` prints: the ranking with reasons, then the comparison table."""
    ranked = choose(oses, needs, chip)
    return render_ranking(ranked) + "\n\n" + render_table(ranked) + "\n"


def generate_docs() -> str:
    facts = all_facts()
    everything = choose()
    out = [
        "# Choosing a bootloader personality",
        "",
        "<!-- generated by `python -m bootkit.chooser --write-docs docs/choosing.md` from the facts.py of every "
        "personality; do not edit by hand -->",
        "",
        "Which USB class a bootloader presents decides what your users must install, which OSes can update "
        "the device at all, and what they learn when an update fails. `bootkit choose` ranks every "
        "personality/dialect bootkit implements for your OSes and needs, and says why; `--write P.toml` "
        "writes a starter product profile for the top choice (check it with `bootkit product check P.toml`).",
        "",
        "```",
        "bootkit choose [--os " + ",".join(OSES) + "] [--needs " + ",".join(NEEDS) + "] [--chip CHIP] "
        "[--write P.toml]",
        "```",
        "",
        "Needs:",
        "",
    ]
    out += [f"- `{n}`: {d}" for n, d in NEEDS.items()]
    out += [
        "",
        "A dialect whose driver entry for a requested OS is \"no\" cannot work there: it is ranked last, "
        "with the reason. Throughput is the wire limit our own benchmarks measured (full-speed USB time of "
        "the transfers the protocol needs); a real chip's flash programming time comes on top.",
        "",
        f"Facts from: {', '.join(sorted({f'bootkit/classes/{f.personality}/facts.py' for f in facts}))}.",
        "",
        "## Comparison",
        "",
        render_table(everything),
        "",
        "## Known OS quirks and how bootkit handles them",
        "",
        render_quirks(everything),
        "## Examples",
        "",
    ]
    for oses, needs in DOC_EXAMPLES:
        ranked = choose(oses, needs)
        out += [f"`{command_line(oses, needs)}`", "", "```", render_ranking(ranked), "```", ""]
    return "\n".join(out)


# --------------------------------------------------------------------------
# command line


def cli_choose(oses=(), needs=(), chip=None, write=None, out=None, details: bool = False) -> int:
    """``bootkit choose [--os A,B] [--needs X,Y] [--chip C] [--details] [--write P.toml]``.

    ``oses`` and ``needs``: lists or comma-separated strings.  Prints the
    short ranking (:func:`render_brief`), or with ``details`` every reason and
    the comparison table; with ``write``, writes a starter profile for the
    top choice that works, before anything is printed (so ``| head`` closing
    the pipe early cannot stop it).  Returns 0, or 2 (bad input) with the
    error on stderr.
    """
    import shutil

    out = out or sys.stdout
    try:
        ranked = choose(oses or (), needs or (), chip)
    except ValueError as exc:
        print(f"bootkit: error: {exc}", file=sys.stderr)
        return 2
    best = next((r for r in ranked if r.works), None)
    if write:
        if best is None:
            print("bootkit: error: no personality works for these OSes and this chip: nothing written",
                  file=sys.stderr)
            return 2
        try:
            write_profile(best, chip, write)
        except (ValueError, OSError) as exc:
            print(f"bootkit: error: {write}: {exc}", file=sys.stderr)
            return 2
    if details:
        print(render_ranking(ranked), file=out)
        print(file=out)
        print(render_table(ranked), file=out)
    else:
        # the terminal's width (COLUMNS, else the tty's), never more than BRIEF_COLUMNS
        columns = min(shutil.get_terminal_size((BRIEF_COLUMNS, 24)).columns, BRIEF_COLUMNS)
        print(render_brief(ranked, _check_words(needs or (), tuple(NEEDS), "need"), width=columns), file=out)
    if write and best is not None:
        print(f"\n{write}: starter profile for {best.name} (check it with `bootkit product check {write}`)",
              file=out)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bootkit.chooser", description=__doc__.split("\n\n")[0])
    ap.add_argument("--os", default="", help=f"comma-separated: {', '.join(OSES)}")
    ap.add_argument("--needs", default="", help=f"comma-separated: {', '.join(NEEDS)}")
    ap.add_argument("--chip")
    ap.add_argument("--write", metavar="P.toml", help="write a starter profile for the top choice")
    ap.add_argument("--details", action="store_true", help="every reason and the comparison table")
    ap.add_argument("--write-docs", metavar="FILE.md", help="regenerate docs/choosing.md and exit")
    args = ap.parse_args(argv)
    if args.write_docs:
        Path(args.write_docs).write_text(generate_docs())
        print(args.write_docs)
        return 0
    return cli_choose(args.os, args.needs, args.chip, args.write, details=args.details)


if __name__ == "__main__":
    sys.exit(main())
