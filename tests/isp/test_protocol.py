"""The ISP instruction codecs against avrdude.conf's instruction bit patterns.

avrdude.conf (avrdude 7.x, installed with avrdude) writes each part's serial
programming instructions as 32-character bit patterns: '1'/'0' fixed bits,
'x' don't care, 'a' address bits, 'i' input data bits, 'o' output bits.  An
address bit's number is its position in the 32-bit instruction minus 8
(avrdude's config_gram.y), except in load_ext_addr, whose address bits hold
bits 16+ of the word address.  Every frame our codecs build must fit the
pattern of t85, m328p and m2560.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from bootkit.isp import protocol as P
from bootkit.isp.protocol import fuse_value_problem

CANDIDATES = ("/etc/avrdude.conf", "/usr/local/etc/avrdude.conf", "/usr/share/avrdude/avrdude.conf")


def _conf_text() -> str:
    for path in CANDIDATES:
        if Path(path).exists():
            return Path(path).read_text(errors="replace")
    if os.environ.get("CI"):
        pytest.fail("avrdude.conf not found (install avrdude): CI runs this test")
    pytest.skip("avrdude.conf not found (avrdude not installed)")


PART = re.compile(r'^part(?:\s+parent\s+"(?P<parent>[^"]+)")?\s*\n(?P<body>.*?)^;', re.S | re.M)
MEMORY = re.compile(r'^\s+memory\s+"(?P<name>[^"]+)"\s*\n(?P<body>.*?)^\s+;', re.S | re.M)
PATTERN = re.compile(r'^\s+(\w+)\s*=\s*"([01xaio. -]+)"\s*;', re.M)


def _parts(text: str) -> dict[str, dict[str, dict[str, str]]]:
    """id -> {"": part-level patterns, memory name: its patterns}, parents' entries inherited."""
    raw = {}
    for m in PART.finditer(text):
        body = m["body"]
        ident = re.search(r'^\s+id\s*=\s*"([^"]+)"', body, re.M)
        if not ident:
            continue
        memories = {mm["name"]: dict(PATTERN.findall(mm["body"])) for mm in MEMORY.finditer(body)}
        top = dict(PATTERN.findall(MEMORY.sub("", body)))
        raw[ident[1]] = (m["parent"], {"": top, **memories})
    out: dict[str, dict[str, dict[str, str]]] = {}

    def resolve(ident):
        if ident in out:
            return out[ident]
        parent, own = raw[ident]
        merged = {k: dict(v) for k, v in (resolve(parent) if parent else {}).items()}
        for name, patterns in own.items():
            merged.setdefault(name, {}).update(patterns)
        out[ident] = merged
        return merged

    for ident in raw:
        resolve(ident)
    return out


@pytest.fixture(scope="module")
def parts():
    return _parts(_conf_text())


def fits(frame: bytes, pattern: str, *, address: int = 0, value: int = 0, ext: bool = False) -> list[str]:
    """Where ``frame`` breaks ``pattern`` (empty: it fits)."""
    bits = pattern.replace(".", "").replace("-", "").replace(" ", "")
    assert len(bits) == 32, pattern
    word = int.from_bytes(frame, "big")
    problems = []
    for i, c in enumerate(bits):
        pos = 31 - i
        got = (word >> pos) & 1
        if c in "01":
            want = int(c)
        elif c == "a":
            want = ((address >> 16) if ext else (address >> (pos - 8))) & 1 if pos >= 8 else 0
        elif c == "i":
            want = (value >> (pos % 8)) & 1
        else:
            continue
        if got != want:
            problems.append(f"bit {pos} ({c}) is {got}, want {want}")
    return problems


CHIPS = {"t85": (8192, 64, 512, 4), "m328p": (32768, 128, 1024, 4), "m2560": (262144, 256, 4096, 8)}


@pytest.mark.parametrize("part", sorted(CHIPS))
def test_every_codec_fits_avrdude_conf(parts, part):
    conf = parts[part]
    flash, page, eeprom, eeprom_page = CHIPS[part]
    checks = [(P.programming_enable(), conf[""]["pgm_enable"], {}),
              (P.chip_erase(), conf[""]["chip_erase"], {})]
    for word in (0, 1, page // 2 - 1, 0x5A5 % (flash // 2), flash // 2 - 1):
        low16 = word & 0xFFFF
        for value in (0x00, 0xA5, 0xFF):
            checks.append((P.load_program_page(word, False, value), conf["flash"]["loadpage_lo"],
                           dict(address=word % (page // 2), value=value)))
            checks.append((P.load_program_page(word, True, value), conf["flash"]["loadpage_hi"],
                           dict(address=word % (page // 2), value=value)))
        checks.append((P.read_program(low16, False), conf["flash"]["read_lo"], dict(address=low16)))
        checks.append((P.read_program(low16, True), conf["flash"]["read_hi"], dict(address=low16)))
        aligned = word - word % (page // 2)
        checks.append((P.write_program_page(aligned & 0xFFFF), conf["flash"]["writepage"],
                       dict(address=aligned & 0xFFFF)))
        if "load_ext_addr" in conf["flash"]:
            checks.append((P.load_extended_address(word >> 16), conf["flash"]["load_ext_addr"],
                           dict(address=word, ext=True)))
    for addr in (0, 1, eeprom_page - 1, eeprom // 2 + 3, eeprom - 1):
        for value in (0x00, 0x3C, 0xFF):
            checks.append((P.read_eeprom(addr), conf["eeprom"]["read"], dict(address=addr)))
            checks.append((P.write_eeprom(addr, value), conf["eeprom"]["write"], dict(address=addr, value=value)))
            checks.append((P.load_eeprom_page(addr % eeprom_page, value), conf["eeprom"]["loadpage_lo"],
                           dict(address=addr % eeprom_page, value=value)))
        checks.append((P.write_eeprom_page(addr - addr % eeprom_page), conf["eeprom"]["writepage"],
                       dict(address=addr - addr % eeprom_page)))
    for name in P.FUSE_NAMES:
        for value in (0x00, 0x62, 0xFF):
            checks.append((P.write_fuse(name, value), conf[name]["write"], dict(value=value)))
        checks.append((P.read_fuse(name), conf[name]["read"], {}))
    for value in (0xFF, 0xFC, 0xC0):
        checks.append((P.write_lock(value), conf["lock"]["write"], dict(value=value)))
    checks.append((P.read_lock(), conf["lock"]["read"], {}))
    for i in range(3):
        checks.append((P.read_signature(i), conf["signature"]["read"], dict(address=i)))
    checks.append((P.read_calibration(0), conf["calibration"]["read"], {}))
    failures = [f"{frame.hex(' ')} vs {pattern}: {problems}" for frame, pattern, kw in checks
                if (problems := fits(frame, pattern, **kw))]
    assert len(checks) > 100
    assert not failures, "\n".join(failures)


def test_the_checker_finds_a_wrong_encoding(parts):
    conf = parts["m328p"]
    assert fits(P.read_program(0x123, True), conf["flash"]["read_lo"], address=0x123)  # high vs low
    assert fits(P.read_fuse("hfuse"), conf["efuse"]["read"])
    assert fits(bytes((0x20, 0x02, 0x23, 0)), conf["flash"]["read_lo"], address=0x123)  # address bits moved
    assert not fits(bytes((0x20, 0x01, 0x23, 0)), conf["flash"]["read_lo"], address=0x123)


def test_the_parser_inherits_from_a_parent_part(parts):
    # m328p is 'part parent "m328"' and declares no flash memory of its own
    assert parts["m328p"]["flash"]["read_lo"].replace(".", "").startswith("0010")
    assert "load_ext_addr" in parts["m2560"]["flash"] and "load_ext_addr" not in parts["t85"]["flash"]


def test_programming_enable_and_data_positions():
    assert P.programming_enable() == b"\xac\x53\x00\x00"
    assert P.poll_rdy() == b"\xf0\x00\x00\x00"
    assert P.load_extended_address(1) == b"\x4d\x00\x01\x00"
    assert (P.ECHO_INDEX, P.DATA_INDEX, P.ECHO) == (2, 3, 0x53)
    with pytest.raises(ValueError, match="unknown fuse 'xfuse'"):
        P.write_fuse("xfuse", 0)


@pytest.mark.parametrize("value,mask,ok", [
    (0x62, 0xFF, True), (0x01, 0x01, True), (0xFF, 0x01, True), (0xFE, 0x01, True),
    (0x06, 0x07, True), (0x06, 0x01, False), (0x100, 0xFF, False), (-1, 0xFF, False), (0x3F, 0x03, False),
])
def test_fuse_value_rule(value, mask, ok):
    problem = fuse_value_problem("efuse", value, mask)
    assert (problem is None) == ok, problem
    if not ok:
        assert "\n" not in problem and "efuse" in problem
