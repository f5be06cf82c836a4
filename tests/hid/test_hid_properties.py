"""Property tests: random reports never crash an engine, never write outside the application."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bootkit.classes import hid
from bootkit.classes.hid.protocol import REPORT_SIZE, Command, XusbCommand, native_command, xusb_command
from bootkit.memory import SimulatedFlash
from bootkit.usb.device import SetupPacket, Stall

PATTERN = bytes(range(256))


def make(dialect, chip_name):
    chip = hid.chip_for(chip_name, dialect)
    mem = SimulatedFlash(chip)
    protected = chip.layout().protected
    for start, end in protected:
        mem.poke(start, (PATTERN * ((end - start) // 256 + 1))[:end - start])
    device = hid.bootloader_device(mem, chip, dialect=dialect, interrupt_out=True)
    device.set_configuration(1)
    return device, mem, protected


def snapshot(mem, protected):
    return [mem.read(s, e - s) for s, e in protected]


def addresses(block, top):
    """Addresses near the interesting edges: 0, block multiples, the top, off by one."""
    return st.one_of(st.integers(0, top + 4 * block), st.sampled_from([0, block, top - block, top, top + 1]))


def halfkay_reports():
    raw = st.binary(max_size=300)
    blockish = st.builds(lambda a, b, d: bytes((a & 0xFF, (a >> 8) & 0xFF)) + d,
                         addresses(128, 0x8000), st.booleans(), st.binary(min_size=120, max_size=140))
    return st.lists(st.one_of(raw, blockish), max_size=12)


def lufa_reports():
    raw = st.binary(max_size=300)
    pageish = st.builds(lambda a, d: (a & 0xFFFF).to_bytes(2, "little") + d,
                        addresses(128, 0x8000), st.binary(min_size=120, max_size=140))
    return st.lists(st.one_of(raw, pageish), max_size=12)


def native_reports():
    raw = st.binary(max_size=80)
    cmd = st.builds(lambda c, a, n: native_command(c, a, n), st.sampled_from(list(Command) + [0, 0x7F]),
                    addresses(128, 0x8000), st.integers(0, 0x9000))
    return st.lists(st.one_of(raw, cmd, st.just(b"\x00" * REPORT_SIZE)), max_size=16)


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def feed(device, mem, protected, reports, *, control=True):
    before = snapshot(mem, protected)
    ep_out = next((a for a in device._bindings[0].endpoints if not a & 0x80), None)
    for i, report in enumerate(reports):
        try:
            if control or ep_out is None or i % 2:
                device.control(SetupPacket(0x21, 9, 0x0200, 0, len(report)), report)
            else:
                device.ep_out(ep_out, report)
        except Stall:
            pass
        for _ in range(3):
            try:
                device.ep_in(0x81, 64)
            except Stall:
                pass
        device.take_signals()
    assert snapshot(mem, protected) == before


@SETTINGS
@given(reports=halfkay_reports(), chip=st.sampled_from(["atmega32u4", "at90usb1286"]))
def test_halfkay_random_reports(reports, chip):
    device, mem, protected = make("halfkay", chip)
    feed(device, mem, protected, reports)


@SETTINGS
@given(reports=lufa_reports(), chip=st.sampled_from(["atmega32u4", "at90usb1286"]))
def test_lufa_random_reports(reports, chip):
    device, mem, protected = make("lufa", chip)
    feed(device, mem, protected, reports, control=False)


@SETTINGS
@given(reports=native_reports(), chip=st.sampled_from(["atmega32u4", "at90usb1286"]))
def test_native_random_reports(reports, chip):
    device, mem, protected = make("native", chip)
    feed(device, mem, protected, reports, control=False)


@SETTINGS
@given(data=st.binary(max_size=2048))
def test_report_descriptor_parser_never_crashes(data):
    from bootkit.classes.hid.protocol import parse_report_descriptor

    parse_report_descriptor(data)


def xusb_reports(page, top):
    raw = st.binary(max_size=80)
    cmd = st.builds(lambda c, a, n: xusb_command(c, a, n), st.sampled_from(list(XusbCommand) + [0x05, 0x7F]),
                    addresses(page, top), st.sampled_from([0, page, 2 * page, 3, top]))
    erase = st.just(xusb_command(XusbCommand.ERASE))
    return st.lists(st.one_of(raw, cmd, erase, st.just(b"\x0c" * REPORT_SIZE)), max_size=20)


@SETTINGS
@given(data=st.data(), chip=st.sampled_from(["atxmega32a4u", "atxmega128a3u"]))
def test_xusb_random_reports(data, chip):
    """SET_REPORT stalls, every OUT report is a command or data: nothing reaches the boot section."""
    device, mem, protected = make("xusb", chip)
    c = hid.chip_for(chip, "xusb")
    reports = data.draw(xusb_reports(c.page_size, c.boot_start))
    feed(device, mem, protected, reports, control=False)


@SETTINGS
@given(data=st.binary(max_size=200))
def test_boot_info_unpack_never_crashes(data):
    from bootkit.classes.hid.protocol import unpack_boot_info

    try:
        unpack_boot_info(data)
    except ValueError:
        pass
