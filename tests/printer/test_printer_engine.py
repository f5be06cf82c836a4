"""The printer engine (sans-I/O): streaming HEX to flash, bad jobs, recovery."""

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bootkit.classes.printer.device import DONE, ERROR, IDLE, RECEIVING, RESYNC, PrinterEngine
from bootkit.classes.printer.protocol import NOT_ERROR, PAPER_EMPTY, SELECT, STATUS_OK, parse_status_line
from bootkit.formats import Image, write_hex
from bootkit.memory import SimulatedFlash, get_chip
from bootkit.samples import named_sample, sample_image

CHIP = get_chip("atmega32u4")
BOOT = (CHIP.boot_start, CHIP.boot_end)
MARK = bytes(range(256)) * (CHIP.boot_size // 256)  # a recognisable "bootloader"


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def make(chip=CHIP, **kw):
    mem = SimulatedFlash(chip)
    if chip.boot_size:
        mem.poke(chip.boot_start, MARK[:chip.boot_size] if chip is CHIP else b"\xa5" * chip.boot_size)
    clock = Clock()
    signals = []
    eng = PrinterEngine(mem, clock=clock, signal=lambda *a: signals.append(a), **kw)
    eng.clock_ = clock
    eng.signals = signals
    return mem, eng


def reference(image: Image, chip=CHIP) -> bytes:
    """The whole flash as it must read after programming ``image`` (erased elsewhere, bootloader kept)."""
    ref = bytearray(image.tobytes(chip.flash_start, chip.flash_end))
    if chip is CHIP:
        ref[CHIP.boot_start:CHIP.boot_end] = MARK
    return bytes(ref)


def status_line(eng) -> str:
    raw = eng.read_status(1024)
    return raw.decode() if raw else ""


def assert_failed(mem, eng, *words, paper=False):
    assert not mem.app_valid
    assert mem.read(CHIP.boot_start, CHIP.boot_size) == MARK, "bootloader touched"
    assert mem.is_blank(), "the reset vector must be erased after a failed job"
    assert not eng.port_status & NOT_ERROR
    assert eng.port_status & SELECT
    assert bool(eng.port_status & PAPER_EMPTY) == paper
    line = status_line(eng)
    job = parse_status_line(line)
    assert job is not None and not job.ok, line
    for w in words:
        assert w in line, (w, line)
    assert line.endswith("\n") and line.count("\n") == 1
    return line


def assert_good(mem, eng, image, chip=CHIP):
    assert eng.state == DONE, eng.history
    assert mem.app_valid
    assert mem.flash_bytes() == reference(image, chip)
    assert eng.port_status == STATUS_OK
    job = parse_status_line(status_line(eng))
    assert job is not None and job.ok and job.size == image.size
    assert eng.signals and eng.signals[-1][0] == "leave"


SAMPLE = named_sample("sample-atmega32u4")[1]
SAMPLE_HEX = write_hex(SAMPLE).encode()
SMALL = sample_image(CHIP, 700 + 5, 0x900, 33, seed=7)
SMALL_HEX = write_hex(SMALL).encode()


# ---------------------------------------------------------------------------
# chunking: the same flash whatever the packet sizes


def feed_chunks(eng, data, sizes):
    i = 0
    for n in sizes:
        eng.write(data[i:i + n])
        i += n
    eng.write(data[i:])


def test_whole_job_at_once():
    mem, eng = make()
    eng.write(SAMPLE_HEX)
    assert_good(mem, eng, SAMPLE)


def test_one_byte_at_a_time():
    mem, eng = make()
    for i in range(len(SMALL_HEX)):
        eng.write(SMALL_HEX[i:i + 1])
    assert_good(mem, eng, SMALL)


def test_usb_packets_of_64():
    mem, eng = make()
    feed_chunks(eng, SAMPLE_HEX, [64] * (len(SAMPLE_HEX) // 64))
    assert_good(mem, eng, SAMPLE)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(min_value=1, max_value=300), max_size=200), st.sampled_from([b"\n", b"\r\n", b"\r"]))
def test_any_chunking_gives_the_same_flash(sizes, eol):
    data = SMALL_HEX.replace(b"\n", eol)
    mem, eng = make()
    feed_chunks(eng, data, sizes)
    assert_good(mem, eng, SMALL)


# ---------------------------------------------------------------------------
# what a print job looks like


def test_lowercase_crlf_header_and_form_feed():
    job = b"\x1b%-12345X@PJL JOB NAME=\"fw\"\r\nsome header text\r\n" + SMALL_HEX.lower().replace(b"\n", b"\r\n") + b"\x0c"
    mem, eng = make()
    eng.write(job)
    assert_good(mem, eng, SMALL)


def test_eof_record_without_line_end():
    mem, eng = make()
    eng.write(SMALL_HEX.rstrip(b"\n"))
    assert_good(mem, eng, SMALL)


def test_trailer_after_eof_is_ignored():
    mem, eng = make()
    eng.write(SMALL_HEX + b"\x0c" + SMALL_HEX.replace(b":10", b":1X"))  # a second, corrupt "copy"
    assert_good(mem, eng, SMALL)


def test_records_out_of_order_and_unaligned():
    image = Image([(0x0000, bytes(range(7))), (0x0083, b"\x11" * 300), (0x1005, b"\x22" * 3), (0x0200, b"\x33" * 17)])
    lines = write_hex(image, record_size=13).splitlines(keepends=True)
    eof = lines.pop()
    random.Random(3).shuffle(lines)
    lines.append(eof)
    mem, eng = make()
    eng.write("".join(lines).encode())
    assert_good(mem, eng, image)


def test_start_address_records_are_recorded():
    image = Image([(0, b"\x0c\x94" * 20)], start_address=0x1234, start_address_kind="linear")
    mem, eng = make()
    eng.write(write_hex(image).encode())
    assert_good(mem, eng, image)
    assert eng.start_address == 0x1234
    mem, eng = make()
    seg = b":0400000300001000E9\n"
    eng.write(seg + write_hex(Image([(0, b"\x0c\x94")])).encode())
    assert eng.state == DONE and eng.start_address == 0x1000


def test_extended_linear_address_above_64k():
    chip = get_chip("at90usb1286")
    image = Image([(0x0000, b"\x0c\x94" * 64), (0xFFF0, bytes(range(40))), (0x1C010, b"\x55" * 77)])
    job = write_hex(image).encode()
    assert b":02000004" in job
    mem, eng = make(chip)
    eng.write(job)
    assert eng.state == DONE, eng.history
    assert mem.flash_bytes()[:chip.boot_start] == image.tobytes(0, chip.boot_start)


def test_extended_segment_address():
    chip = get_chip("at90usb1286")
    # 02 record: base = 0x1000 * 16 = 0x10000; then data at offset 0x0010
    job = (write_hex(Image([(0, b"\x0c\x94")])).encode().replace(b":00000001FF\n", b"")
           + b":020000021000EC\n:04001000DEADBEEFB4\n:00000001FF\n")
    mem, eng = make(chip)
    eng.write(job)
    assert eng.state == DONE, eng.history
    assert mem.read(0x10010, 4) == b"\xde\xad\xbe\xef"


# ---------------------------------------------------------------------------
# bad input


def corrupt(text: bytes, line_no: int, fn) -> bytes:
    lines = text.split(b"\n")
    lines[line_no] = fn(lines[line_no])
    return b"\n".join(lines)


@pytest.mark.parametrize("name,fn,reason", [
    ("checksum", lambda ln: ln[:-2] + b"%02X" % ((int(ln[-2:], 16) + 1) & 0xFF), "bad checksum"),
    ("length", lambda ln: ln[:1] + b"11" + ln[3:], "bad length"),
    ("digit", lambda ln: ln[:20] + b"G" + ln[21:], "non-hex digit"),
])
@pytest.mark.parametrize("chunk", [1, 64, 100000])
def test_corrupt_record(name, fn, reason, chunk):
    job = corrupt(SMALL_HEX, 20, fn)
    mem, eng = make()
    feed_chunks(eng, job, [chunk] * (len(job) // chunk))
    assert_failed(mem, eng, reason, "record 21", "line 21")
    assert eng.state in (ERROR, RESYNC)
    # nothing of the bad record reached flash
    assert mem.read(20 * 16, 16) == b"\xff" * 16


def test_data_into_the_bootloader():
    image = Image([(0, b"\x0c\x94" * 8), (CHIP.boot_start - 8, b"\x77" * 24)])
    mem, eng = make()
    eng.write(write_hex(image).encode())
    assert_failed(mem, eng, "bootloader region", paper=True)


def test_data_beyond_flash():
    job = write_hex(Image([(0, b"\x0c\x94" * 8)])).encode().replace(b":00000001FF\n", b"") + \
        b":020000040001F9\n:04000000DEADBEEFC4\n:00000001FF\n"
    mem, eng = make()
    eng.write(job)
    assert_failed(mem, eng, "beyond the application flash", "line 3", paper=True)


def test_eeprom_addresses_are_not_flash():
    image = Image([(0, b"\x0c\x94"), (0x810000, b"\x01\x02")])
    mem, eng = make()
    eng.write(write_hex(image).encode())
    assert_failed(mem, eng, "beyond the application flash", paper=True)


def test_cut_off_job_reported_on_soft_reset():
    mem, eng = make()
    eng.write(SAMPLE_HEX[:len(SAMPLE_HEX) // 2])
    assert eng.state == RECEIVING
    assert eng.read_status(64) is None  # nothing to say while the job is open
    eng.soft_reset()
    assert_failed(mem, eng, "cut off", "SOFT_RESET")
    assert eng.state == IDLE


def test_cut_off_job_reported_after_idle_timeout():
    mem, eng = make(job_timeout=2.0)
    eng.write(SAMPLE_HEX[:3000])
    eng.tick(1.0)
    assert eng.state == RECEIVING
    eng.tick(2.5)
    assert_failed(mem, eng, "cut off", "no data for 2 s")
    eng.write(SMALL_HEX)
    assert_good(mem, eng, SMALL)


@pytest.mark.parametrize("cut", [1000, 1003, 1020, 4400])
@pytest.mark.parametrize("second", ["same", "other"])
def test_half_a_job_then_a_good_job(cut, second):
    other = SAMPLE if second == "same" else sample_image(CHIP, 4000, 0x2000, 99, seed=5)
    mem, eng = make()
    eng.write(SAMPLE_HEX[:cut])
    eng.write(write_hex(other).encode())
    assert_good(mem, eng, other)


def test_half_a_job_of_a_bigger_image_leaves_no_stale_pages():
    mem, eng = make()
    eng.write(SAMPLE_HEX[:20000])  # 0x0000..~0x1B00 of the big sample
    eng.soft_reset()
    status_line(eng)
    eng.write(SMALL_HEX)
    assert_good(mem, eng, SMALL)


def test_new_job_after_a_bad_job_and_its_eof():
    bad = corrupt(SMALL_HEX, 5, lambda ln: ln[:-2] + b"00")
    mem, eng = make()
    eng.write(bad)
    assert eng.state == RESYNC
    assert_failed(mem, eng, "bad checksum")
    eng.write(b"\x0cjunk between jobs\n:10FFF000" + b"00" * 16 + b"11\n")  # not at address 0: ignored
    eng.write(SAMPLE_HEX)
    assert_good(mem, eng, SAMPLE)


def test_new_job_after_soft_reset():
    bad = corrupt(SMALL_HEX, 5, lambda ln: ln[:9] + b"zz" + ln[11:])
    mem, eng = make()
    eng.write(bad[:400])
    assert eng.state == ERROR
    eng.soft_reset()
    eng.write(SMALL_HEX)
    assert_good(mem, eng, SMALL)


def test_bad_job_does_not_touch_a_previous_application_until_it_starts():
    mem, eng = make()
    eng.write(b"just some text that is not hex\n\x0c")
    assert eng.state == IDLE and eng.port_status == STATUS_OK and eng.read_status(64) is None


# ---------------------------------------------------------------------------
# property: random print jobs never write outside the application, never crash


def check_invariants(mem, eng):
    assert mem.read(CHIP.boot_start, CHIP.boot_size) == MARK
    assert eng.port_status in (STATUS_OK, SELECT, SELECT | PAPER_EMPTY)
    for name in ("EEPROM", "Fuses", "Lock", "Signature"):
        region = mem.layout.region(name)
        fresh = SimulatedFlash(CHIP)
        assert mem.region_bytes(region.kind) == fresh.region_bytes(region.kind)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=20))
def test_random_bytes_never_write_outside_the_application(chunks):
    mem, eng = make()
    for c in chunks:
        eng.write(c)
    eng.soft_reset()
    check_invariants(mem, eng)


_ALPHABET = b":0123456789ABCDEFabcdef\r\n\x0cGz "


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(SMALL_HEX) - 1), st.sampled_from(list(_ALPHABET))), max_size=6),
       st.lists(st.integers(1, 500), max_size=30))
def test_mutated_hex_never_writes_outside_the_application(mutations, sizes):
    job = bytearray(SMALL_HEX + b":020000040000FA\n:10700000" + b"00" * 16 + b"80\n:00000001FF\n")
    for pos, ch in mutations:
        job[pos] = ch
    mem, eng = make()
    feed_chunks(eng, bytes(job), sizes)
    eng.soft_reset()
    check_invariants(mem, eng)
    if mem.app_valid:
        # manifested: then what is in flash is exactly what the job said
        assert eng.history[-1].startswith("OK")


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from([b"record", b"junk", b"reset", b"eof", b"cut"]), max_size=25))
def test_random_job_sequences(ops):
    mem, eng = make(leave=False)
    lines = SMALL_HEX.splitlines(keepends=True)
    i = 0
    for op in ops:
        if op == b"record":
            eng.write(lines[i % len(lines)])
            i += 1
        elif op == b"junk":
            eng.write(b"\x00\xff:1\r\n")
        elif op == b"reset":
            eng.soft_reset()
        elif op == b"eof":
            eng.write(b":00000001FF\n")
        else:
            eng.write(lines[i % len(lines)][:7])
    eng.soft_reset()
    check_invariants(mem, eng)
