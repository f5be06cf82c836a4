"""The command line against a corpus of bad firmware files, as a user runs it.

Every file-taking command (flash through each personality on the emulator,
drop, print, midi encode, convert) gets every generated bad file that
applies to it: truncated, corrupt, empty, random, of another UF2 family or
DFU device, too big, into the bootloader region, without the AVR reset
vector, not firmware at all, named for one format and holding another.
Each run is a real ``bootkit`` process (``python -m bootkit.cli``), and
must end with exit status 2, exactly one line on stderr (no traceback),
and nothing lost: the ``--image`` flash file and its ``.state.json``,
created by a good flash first, are byte-identical afterwards, and no
output file appears.

The runs go through a pool of four threads; the counts and the wall time
are written to the terminal at the end of the session.
"""

from __future__ import annotations

import os
import random
import shutil
import struct
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from bootkit.formats import Image, add_suffix, dump, write_dfuse, write_hex, write_srec
from bootkit.formats.uf2 import UF2Block

# command id -> (argv before FILE, target chip or None); the emulated ones take
# FILE --emulate CHIP --image FLASH.bin.  Their target corpus is made for the chip
# as the device sees it (CORPUS_CHIP): an emulated Teensy (HalfKay, the HID default
# on an atmega32u4) has a 512-byte bootloader at 0x7E00, not LUFA's 4 KiB at 0x7000.
COMMANDS = {
    "flash-dfu": (["flash", "--via", "dfu"], "stm32f411"),
    "flash-hid": (["flash", "--via", "hid"], "atmega32u4"),
    "flash-cdc": (["flash", "--via", "cdc"], "atmega32u4"),
    "flash-printer": (["flash", "--via", "printer"], "atmega32u4"),
    "flash-msc": (["flash", "--via", "msc"], "rp2040"),
    "flash-midi": (["flash", "--via", "midi"], "atmega32u4"),
    "drop": (["drop"], "rp2040"),
    "print": (["print"], "atmega32u4"),
    "midi-encode": (["midi", "encode"], "atmega32u4"),
    "convert": (["convert"], None),
}
EMULATED = [c for c in COMMANDS if c not in ("midi-encode", "convert")]
CORPUS_CHIP = {"flash-hid": "atmega32u4-halfkay"}
APP_START = {"atmega32u4": 0, "stm32f411": 0x08000000, "rp2040": 0x10000000}
FAMILY = {"atmega32u4": "atmega32", "stm32f411": "stm32f4", "rp2040": "rp2040"}


def rand(n: int, seed) -> bytes:
    return random.Random(f"matrix:{seed}").randbytes(n)


def code(n: int, seed) -> bytes:
    """Application bytes that start like a real vector table (an AVR jmp / an ARM stack pointer)."""
    return b"\x0c\x94" + rand(n - 2, seed)


def elf(segments, machine=40, cls=1, data=1) -> bytes:
    """A minimal ELF32 with one PT_LOAD per (paddr, bytes)."""
    offset, table, blobs = 52 + 32 * len(segments), b"", b""
    for paddr, blob in segments:
        table += struct.pack("<8I", 1, offset + len(blobs), paddr, paddr, len(blob), len(blob), 5, 4)
        blobs += blob
    ident = b"\x7fELF" + bytes([cls, data, 1]) + bytes(9)
    return struct.pack("<16sHHIIIIIHHHHHH", ident, 2, machine, 1, 0, 52, 0, 0, 52, 32, len(segments), 40, 0,
                       0) + table + blobs


def uf2_blocks(blocks) -> bytes:
    """UF2 from (flags, address, blockNo, numBlocks, family, data) tuples."""
    return b"".join(UF2Block(f, a, n, total, fam, d).pack() for f, a, n, total, fam, d in blocks)


def hex_lines(image: Image) -> list[str]:
    return write_hex(image).splitlines()


def _fix_hex_checksum(line: str) -> str:
    raw = bytes.fromhex(line[1:-2])
    return f":{raw.hex().upper()}{(-sum(raw)) & 0xFF:02X}"


def format_corpus() -> dict[str, bytes]:
    """Files no command may accept, whatever the target: broken or not firmware."""
    img = Image([(0x100, code(100, "f"))])
    hx = write_hex(img)
    lines = hx.splitlines()
    sr = write_srec(img)
    srl = sr.splitlines()
    uf = dump(Image([(0x10000000, code(600, "u"))]), "uf2", family="rp2040")  # 3 blocks
    dfuse = write_dfuse(Image([(0x08000000, code(64, "d"))]))
    dfu = add_suffix(code(64, "p"))
    el = elf([(0x08000000, code(64, "e"))])
    smf = b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x00\x60MTrk\x00\x00\x00\x04\x00\xff\x2f\x00"
    c = {}
    for ext in ("hex", "bin", "uf2", "dfu", "srec", "s19", "elf", "ihx"):
        c[f"empty.{ext}"] = b""
    for ext in ("hex", "uf2", "dfu", "srec", "elf", "img", "fw"):
        c[f"random.{ext}"] = rand(1500, ext)
    c["random-noext"] = rand(700, "noext")
    c["blank.bin"] = b"   \n\n"
    c["whitespace.hex"] = b"\n\n  \n"
    # Intel HEX
    c["hex-bad-checksum.hex"] = "\n".join(lines[:1] + [lines[1][:-2] + "00"] + lines[2:]).encode()
    c["hex-bad-checksum-last.hex"] = "\n".join(lines[:-2] + [lines[-2][:-2] + "00", lines[-1]]).encode()
    c["hex-truncated-line.hex"] = "\n".join(lines[:2] + [lines[2][:15]]).encode()
    c["hex-truncated-no-eof.hex"] = "\n".join(lines[:-1]).encode() + b"\n"
    c["hex-cut-mid-file.hex"] = hx.encode()[:len(hx) // 2]
    c["hex-bad-type.hex"] = "\n".join([_fix_hex_checksum(":01000009" + "AA" + "00")] + lines).encode()
    c["hex-odd-digits.hex"] = "\n".join([lines[0] + "0"] + lines[1:]).encode()
    c["hex-non-hex.hex"] = "\n".join([lines[0][:9] + "ZZ" + lines[0][11:]] + lines[1:]).encode()
    c["hex-bad-length.hex"] = "\n".join([":05" + lines[0][3:]] + lines[1:]).encode()
    c["hex-overlap.hex"] = "\n".join(lines[:1] + [_fix_hex_checksum(lines[0][:9] + "FF" * 16 + "00")]
                                     + lines[1:]).encode()
    c["hex-bad-ela.hex"] = ("\n".join([_fix_hex_checksum(":03000004000102" + "00")] + lines)).encode()
    c["hex-no-colon.hex"] = "\n".join([lines[0][1:]] + lines[1:]).encode()
    c["hex-only-eof.hex"] = b":00000001FF\n"
    # S-records
    c["srec-bad-checksum.srec"] = "\n".join(srl[:1] + [srl[1][:-2] + "00"] + srl[2:]).encode()
    c["srec-truncated-line.srec"] = "\n".join(srl[:2] + [srl[2][:12]]).encode()
    c["srec-count-mismatch.srec"] = "\n".join(srl[:1] + srl[2:]).encode()
    c["srec-unknown-type.s19"] = "\n".join(["S4030000FC"] + srl).encode()
    c["srec-bad-length.srec"] = "\n".join(srl[:1] + ["S1FF" + srl[1][4:]] + srl[2:]).encode()
    c["srec-non-hex.s19"] = "\n".join(srl[:1] + [srl[1][:6] + "GG" + srl[1][8:]] + srl[2:]).encode()
    c["srec-header-only.srec"] = b"S00600004844521B\nS9030000FC\n"
    # UF2
    c["uf2-truncated.uf2"] = uf[:-100]
    c["uf2-missing-block.uf2"] = uf[:512] + uf[1024:]
    c["uf2-duplicate-block.uf2"] = uf[:1024] + uf[:512]
    c["uf2-bad-magic-end.uf2"] = uf[:508] + b"\0\0\0\0" + uf[512:]
    c["uf2-bad-magic1.uf2"] = uf[:4] + b"\0\0\0\0" + uf[8:]
    c["uf2-payload-too-big.uf2"] = uf[:16] + struct.pack("<I", 477) + uf[20:]
    c["uf2-blockno-past-end.uf2"] = uf[:20] + struct.pack("<I", 9) + uf[24:]
    c["uf2-one-byte.uf2"] = uf[:1]
    # DFU suffix and DfuSe
    c["dfu-bad-crc.dfu"] = dfu[:-1] + bytes([dfu[-1] ^ 1])
    c["dfu-payload-flipped.dfu"] = bytes([dfu[0] ^ 0x80]) + dfu[1:]
    c["dfu-bad-blength.dfu"] = add_suffix(code(40, "bl"))[:-5] + b"\x08" + add_suffix(code(40, "bl"))[-4:]
    c["dfu-no-suffix.dfu"] = code(200, "ns")
    c["dfuse-truncated.dfu"] = dfuse[:-40]
    c["dfuse-bad-target.dfu"] = add_suffix(dfuse[:11] + b"Tarxet" + dfuse[17:-16], bcd_dfu=0x011A)
    c["dfuse-bad-size.dfu"] = add_suffix(dfuse[:6] + struct.pack("<I", 5) + dfuse[10:-16], bcd_dfu=0x011A)
    c["dfuse-version-2.dfu"] = add_suffix(dfuse[:5] + b"\x02" + dfuse[6:-16], bcd_dfu=0x011A)
    c["dfuse-element-past-target.dfu"] = add_suffix(dfuse[:11 + 274] + struct.pack("<II", 0x08000000, 9999)
                                                    + dfuse[11 + 274 + 8:-16], bcd_dfu=0x011A)
    c["dfuse-prefix-only.dfu"] = b"DfuSe\x01"
    # ELF
    c["elf-truncated-header.elf"] = el[:30]
    c["elf-64bit.elf"] = elf([(0, b"x")], cls=2)
    c["elf-big-endian.elf"] = elf([(0, b"x")], data=2)
    c["elf-segment-past-end.elf"] = el[:-10]
    c["elf-truncated-phdr.elf"] = el[:60]
    c["elf-no-segments.elf"] = elf([])
    # not firmware, or content and name disagree
    c["song.mid"] = smf
    c["song.bin"] = smf
    c["sysex.syx"] = b"\xf0\x7d\x01\x02\x03\xf7"
    c["sysex.bin"] = b"\xf0\x7d" + rand(60, "syx").translate(bytes(range(128)) * 2) + b"\xf7"
    c["notes.txt"] = b"remember to flash the board\n"
    c["notes.bin"] = b"this is a text file, not a binary image\n" * 3
    c["profile.json"] = b'{"chip": "atmega32u4"}\n'
    c["profile.toml"] = b'[product]\nname = "x"\n'
    c["archive.zip"] = b"PK\x03\x04" + rand(100, "zip")
    c["hex-in.bin"] = hx.encode()
    c["srec-in.bin"] = sr.encode()
    c["srec-in.hex"] = sr.encode()
    c["hex-in.srec"] = hx.encode()
    c["uf2-in.hex"] = uf
    c["uf2-in.bin"] = uf
    c["dfuse-in.hex"] = dfuse
    c["elf-in.uf2"] = el
    c["elf-in.hex"] = el
    c["hex-in.uf2"] = hx.encode()
    c["hex-in.elf"] = hx.encode()
    return c


def corpus_chip(corpus: str):
    from bootkit.memory import get_chip

    if corpus.endswith("-halfkay"):
        from bootkit.classes.hid import chip_for

        return chip_for(get_chip(corpus[:-len("-halfkay")]), "halfkay")
    return get_chip(corpus)


def target_corpus(corpus: str) -> dict[str, bytes]:
    """Well-formed files that do not fit the chip ``corpus`` names: refused before anything is erased."""
    chip = corpus_chip(corpus)
    chip_name = chip.name
    start, end = chip.flash_start, chip.flash_start + chip.flash_size
    app = APP_START[chip_name]
    vec = code(64, chip_name)
    other = "stm32f4" if chip_name != "stm32f411" else "rp2040"
    c = {}

    def each_format(tag, image, formats=("hex", "srec", "elf", "uf2", "dfu")):
        for fmt in formats:
            if fmt == "hex":
                c[f"{tag}.hex"] = write_hex(image).encode()
            elif fmt == "srec":
                c[f"{tag}.srec"] = write_srec(image).encode()
            elif fmt == "elf":
                c[f"{tag}.elf"] = elf(image.segments, machine=83 if chip.family == "avr" else 40)
            elif fmt == "uf2":
                c[f"{tag}.uf2"] = dump(image, "uf2", family=FAMILY[chip_name])
            elif fmt == "dfu":
                c[f"{tag}.dfu"] = write_dfuse(image)

    each_format("past-the-end", Image([(app, vec), (end - 8, rand(32, "end"))]))
    each_format("far-past-the-end", Image([(app, vec), (end + 0x10000, rand(16, "far"))]))
    if start:
        each_format("below-flash", Image([(start - 0x100, rand(0x80, "below")), (app, vec)]),
                    ("hex", "srec", "elf", "dfu"))
    c["too-big.bin"] = code(chip.flash_size - (app - start) + 1, "big")
    if chip.boot_size:
        boot = chip.boot_start
        each_format("into-bootloader", Image([(app, vec), (boot - 16, rand(32, "boot"))]))
        each_format("bootloader-only", Image([(app, vec), (boot + 0x40, rand(16, "boot2"))]), ("hex", "srec"))
        c["reaches-bootloader.bin"] = code(boot - app + 1, "reach")
    if chip.family == "avr":
        each_format("no-reset-vector", Image([(app + 0x100, rand(200, "novec"))]), ("hex", "srec", "elf", "uf2"))
        each_format("odd-no-vector", Image([(app + 1, rand(99, "odd"))]), ("hex",))
        c["eeprom-address.hex"] = write_hex(Image([(0, vec), (0x810000, b"ee")])).encode()
    # UF2 of another family, of several families without this one, without a familyID
    c["other-family.uf2"] = dump(Image([(app, vec)]), "uf2", family=other)
    c["two-other-families.uf2"] = (dump(Image([(app, vec)]), "uf2", family=other)
                                   + dump(Image([(app + 0x1000, vec)]), "uf2", family="samd21"))
    c["no-family-id.uf2"] = uf2_blocks([(0, app, 0, 1, 0, vec)])
    c["mixed-family-ids.uf2"] = uf2_blocks([(0x2000, app, 0, 1, get_family(FAMILY[chip_name]), vec)]) + \
        uf2_blocks([(0, app + 256, 0, 1, 0, vec)])
    return c


def get_family(name):
    from bootkit.formats import family_id

    return family_id(name)


def dfu_corpus() -> dict[str, bytes]:
    """DFU files made for another device (the DFU host compares the suffix's VID:PID)."""
    image = Image([(0x08000000, code(256, "foreign"))])
    return {
        "foreign-vidpid.dfu": write_dfuse(image, vid=0x1234, pid=0x5678),
        "foreign-vidpid-plain.dfu": add_suffix(code(256, "plain"), vid=0x1234, pid=0x5678),
    }


@dataclass(frozen=True)
class Row:
    command: str
    file: str
    extra: tuple = ()  # more options: --force, which must not lift what these files break


# --force lifts a UF2 family or a DFU suffix's VID:PID, never the bootloader region, the
# flash's bounds or the AVR reset vector: these commands also get every other target file with it
FORCED = ("flash-dfu", "flash-cdc", "flash-msc", "drop", "midi-encode")


def _rows() -> list[Row]:
    fmt_names = list(format_corpus())
    rows = [Row(cmd, f) for cmd in COMMANDS for f in fmt_names]
    for cmd, (_argv, chip) in COMMANDS.items():
        if chip is None:
            continue
        corpus = CORPUS_CHIP.get(cmd, chip)
        rows += [Row(cmd, f"{corpus}/{f}") for f in target_corpus(corpus)]
        if cmd in FORCED:
            rows += [Row(cmd, f"{corpus}/{f}", ("--force",)) for f in target_corpus(corpus)
                     if "famil" not in f and "no-family-id" not in f]
    rows += [Row("flash-dfu", f"stm32f411/{f}") for f in dfu_corpus()]
    return rows


ROWS = _rows()


def _bootkit(argv, cwd) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="200", PYTHONDONTWRITEBYTECODE="")
    return subprocess.run([sys.executable, "-m", "bootkit.cli", *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env=env)


GOOD = {  # a good first flash: the "nothing lost" check is against real content
    "atmega32u4": Image([(0, code(300, "good-avr"))]),
    "stm32f411": Image([(0x08000000, code(2000, "good-stm")), (0x08004001, rand(33, "odd"))]),
    "rp2040": Image([(0x10000000, code(1000, "good-rp"))]),
}


@pytest.fixture(scope="module")
def matrix(tmp_path_factory, request):
    root = tmp_path_factory.mktemp("matrix")
    files = root / "files"
    files.mkdir()
    for name, data in format_corpus().items():
        (files / name).write_bytes(data)
    for corpus in {*APP_START, *CORPUS_CHIP.values()}:
        (files / corpus).mkdir()
        for name, data in target_corpus(corpus).items():
            (files / corpus / name).write_bytes(data)
    for name, data in dfu_corpus().items():
        (files / "stm32f411" / name).write_bytes(data)
    n_files = sum(1 for p in files.rglob("*") if p.is_file())

    # one good flash per emulated command
    started = time.monotonic()
    images = {}

    def good(cmd):
        argv, chip = COMMANDS[cmd]
        where = root / "good" / cmd
        where.mkdir(parents=True)
        fw = where / "good.hex"
        fw.write_text(write_hex(GOOD[chip]))
        image = where / "flash.bin"
        r = _bootkit([*argv, str(fw), "--emulate", chip, "--image", str(image)], where)
        assert r.returncode == 0, f"{cmd}: the good flash failed: {r.stderr.strip()}"
        return cmd, image

    with ThreadPoolExecutor(4) as pool:
        images = dict(pool.map(good, EMULATED))

    def run(row: Row):
        argv, chip = COMMANDS[row.command]
        where = root / "runs" / row.command / (row.file.replace("/", "_") + "".join(row.extra))
        where.mkdir(parents=True)
        path = files / row.file
        out = where / "out"
        if row.command == "convert":
            full = [*argv, str(path), str(out) + ".hex"]
        elif row.command == "midi-encode":
            full = [*argv, str(path), "--chip", chip, "-o", str(out) + ".mid"]
        else:
            image = where / "flash.bin"
            shutil.copyfile(images[row.command], image)
            shutil.copyfile(str(images[row.command]) + ".state.json", str(image) + ".state.json")
            full = [*argv, str(path), "--emulate", chip, "--image", str(image)]
        full += row.extra
        t0 = time.monotonic()
        r = _bootkit(full, where)
        return row, r, where, time.monotonic() - t0

    if hasattr(request.config, "workerinput"):
        # Under pytest-xdist every worker collects every row but runs only its share, which it
        # cannot know here: each test runs its own row (run_row below).  Running them all here
        # ran the whole matrix once per worker (CI: 290 s of setup on each of the two).
        return {"results": {}, "run": run, "images": images, "elapsed": 0.0, "files": n_files}
    # only the rows this session runs (all of them, unless -k picked some)
    selected = [item.callspec.params["row"] for item in request.session.items
                if getattr(item, "callspec", None) is not None and "row" in item.callspec.params]
    rows = selected if selected else ROWS
    with ThreadPoolExecutor(4) as pool:
        done = list(pool.map(run, rows))
    results = {row: (r, where) for row, r, where, _t in done}
    elapsed = time.monotonic() - started
    slowest = max(done, key=lambda d: d[3])
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    summary = (f"cli matrix: {len(rows)} runs, {n_files} files, {len(COMMANDS)} commands, "
               f"{elapsed:.0f} s with 4 workers (slowest run {slowest[3]:.1f} s: {slowest[0].command} "
               f"{slowest[0].file})")
    if reporter is not None and capture is not None:
        def show():
            with capture.global_and_fixture_disabled():  # past pytest's capture of the fixture's teardown
                reporter.write_line(summary)

        request.addfinalizer(show)
    return {"results": results, "run": run, "images": images, "elapsed": elapsed, "files": n_files}


def run_row(matrix, row):
    """The row's bootkit run: done by the fixture in one pool, or now (under xdist)."""
    if row not in matrix["results"]:
        row_, r, where, _t = matrix["run"](row)
        matrix["results"][row] = (r, where)
    return matrix["results"][row]


def test_the_corpus_is_large_enough(matrix):
    assert matrix["files"] >= 100
    assert {r.command for r in ROWS} == set(COMMANDS)


@pytest.mark.parametrize("row", ROWS, ids=[f"{r.command}:{r.file}{''.join(r.extra)}" for r in ROWS])
def test_bad_file_is_exit_2_one_line_and_nothing_lost(matrix, row):
    r, where = run_row(matrix, row)
    err = r.stderr.strip().splitlines()
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    assert r.returncode == 2, f"exit {r.returncode}: {r.stdout.strip()[-300:]} {r.stderr.strip()[-300:]}"
    assert len(err) == 1 and err[0].startswith("bootkit: error: "), err
    assert Path(row.file).name in err[0], err[0]  # the line names the file
    assert not list(where.glob("out*")), "an output file was written"
    if row.command in matrix["images"]:
        good = matrix["images"][row.command]
        image = where / "flash.bin"
        assert image.read_bytes() == good.read_bytes(), "the flash image changed"
        assert Path(str(image) + ".state.json").read_bytes() == Path(str(good) + ".state.json").read_bytes(), \
            "the flash image's state changed"
