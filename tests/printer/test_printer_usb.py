"""The printer personality on the virtual bus: descriptors, usblp's requests, the host client."""

import time

import pytest
import usb.core

from bootkit.classes import printer
from bootkit.classes.common import HostError, ImageRejected
from bootkit.classes.printer import host
from bootkit.classes.printer.protocol import (
    DEFAULT_DEVICE_ID,
    PAPER_EMPTY,
    SELECT,
    STATUS_OK,
    USBLP_DEVICE_ID_SIZE,
    parse_device_id,
)
from bootkit.emulator import Emulator
from bootkit.formats import Image, write_hex
from bootkit.memory import SimulatedFlash, get_chip
from bootkit.samples import load_sample
from bootkit.transports.virtual import VirtualBus, get_backend
from bootkit.usb.descriptors import Endpoint, Interface, DeviceInfo
from bootkit.usb.device import Device, Function, SetupPacket, Stall

CHIP = get_chip("atmega32u4")


@pytest.fixture
def rig():
    bus = VirtualBus()
    em = Emulator(CHIP, "printer")
    em.attach(bus)
    yield em, get_backend(bus)
    em.close()


def reference(image, chip=CHIP):
    return image.tobytes(chip.flash_start, chip.flash_end)


def pyusb_dev(backend):
    dev = usb.core.find(backend=backend)
    dev.set_configuration()
    return dev


# --------------------------------------------------------------------------
# descriptors and class requests


def test_descriptors(rig):
    em, backend = rig
    dev = pyusb_dev(backend)
    assert (dev.idVendor, dev.idProduct) == (0x03EB, 0x206B)
    intf = dev[0][(0, 0)]
    assert (intf.bInterfaceClass, intf.bInterfaceSubClass, intf.bInterfaceProtocol) == (7, 1, 2)
    kinds = sorted((usb.util.endpoint_direction(e.bEndpointAddress), usb.util.endpoint_type(e.bmAttributes))
                   for e in intf)
    assert kinds == [(usb.util.ENDPOINT_OUT, usb.util.ENDPOINT_TYPE_BULK),
                     (usb.util.ENDPOINT_IN, usb.util.ENDPOINT_TYPE_BULK)]


def test_unidirectional_protocol_has_no_in_endpoint():
    dev = printer.bootloader_device(SimulatedFlash(CHIP), CHIP, protocol=1)
    intf = dev.configuration_descriptor()
    assert intf[9 + 7] == 0x01 and intf[9 + 4] == 1  # bInterfaceProtocol 1, one endpoint
    with pytest.raises(ValueError):
        printer.bootloader_device(SimulatedFlash(CHIP), CHIP, protocol=3)


def test_get_device_id_as_usblp_sends_it(rig):
    em, backend = rig
    dev = pyusb_dev(backend)
    # usblp_get_id: USB_TYPE_CLASS | USB_DIR_IN | USB_RECIP_INTERFACE, wValue = config 0,
    # wIndex = (ifnum << 8) | alt, wLength = USBLP_DEVICE_ID_SIZE - 1
    raw = bytes(dev.ctrl_transfer(0xA1, 0x00, 0, (0 << 8) | 0, USBLP_DEVICE_ID_SIZE - 1))
    assert int.from_bytes(raw[:2], "big") == len(raw) == len(DEFAULT_DEVICE_ID) + 2
    assert raw[2:].decode() == DEFAULT_DEVICE_ID
    assert parse_device_id(raw[2:].decode())["MDL"] == "Generic_/_Text_Only"
    # a short wLength truncates, the length field still counts the whole id
    assert bytes(dev.ctrl_transfer(0xA1, 0x00, 0, 0, 4))[:2] == raw[:2]


def test_get_device_id_wrong_alternate_stalls():
    dev = printer.bootloader_device(SimulatedFlash(CHIP), CHIP)
    dev.set_configuration(1)
    with pytest.raises(Stall):
        dev.control(SetupPacket(0xA1, 0x00, 0, 0x0001, 1023))


def test_custom_device_id():
    text = "MFG:Acme;MDL:Flasher 3000;CLS:PRINTER;"
    dev = printer.bootloader_device(SimulatedFlash(CHIP), CHIP, device_id=text)
    dev.set_configuration(1)
    assert dev.control(SetupPacket(0xA1, 0x00, 0, 0, 1023))[2:].decode() == text


def test_get_port_status_and_soft_reset_as_usblp_sends_them(rig):
    em, backend = rig
    dev = pyusb_dev(backend)
    # usblp_read_status: 0xA1, GET_PORT_STATUS, wValue 0, wIndex ifnum, 1 byte
    assert bytes(dev.ctrl_transfer(0xA1, 0x01, 0, 0, 1)) == bytes([STATUS_OK])
    dev.write(0x01 if False else host.find_printers(backend)[0].ep_out, b":10000000")
    # usblp_reset: USB_TYPE_CLASS | USB_DIR_OUT | USB_RECIP_OTHER = 0x23
    dev.ctrl_transfer(0x23, 0x02, 0, 0, None)
    status = dev.ctrl_transfer(0xA1, 0x01, 0, 0, 1)[0]
    assert status == SELECT  # error: the job was cut off
    line = bytes(dev.read(host.find_printers(backend)[0].ep_in, 64, 100)).decode()
    assert line.startswith("ERROR job 1:") and "cut off" in line
    # the spec's own SOFT_RESET (recipient interface) is accepted too
    dev.ctrl_transfer(0x21, 0x02, 0, 0, None)
    with pytest.raises(usb.core.USBError):
        dev.ctrl_transfer(0xA1, 0x07, 0, 0, 1)  # no such request: STALL


# --------------------------------------------------------------------------
# the host client through pyusb


def test_flash_through_pyusb_equals_the_image(rig):
    em, backend = rig
    _, image = load_sample("sample-atmega32u4")
    result = host.flash(image, backend, chip="atmega32u4", progress=False)
    assert result.verified and result.dialect == "lufa" and result.bytes == image.size
    assert em.memory.flash_bytes()[:CHIP.boot_start] == reference(image)[:CHIP.boot_start]
    assert em.memory.app_valid
    time.sleep(0.6)
    usb.core.find(backend=backend)  # polls the bus: the device left for the application
    assert em.mode == "application"


def test_flash_from_a_file_of_another_format(rig, tmp_path):
    em, backend = rig
    image = Image([(0, b"\x0c\x94" * 100), (0x3001, b"abc")])
    path = tmp_path / "fw.bin"
    path.write_bytes(image.tobytes(0))
    result = host.flash(path, backend, progress=False)
    assert result.verified
    assert em.memory.flash_bytes()[:CHIP.boot_start] == Image([(0, image.tobytes(0))]).tobytes(0, CHIP.boot_start)


def test_endpoints_come_from_the_descriptors():
    class Other(Function):  # takes endpoint 1 in both directions first
        def __init__(self):
            super().__init__()
            self.eps = [Endpoint(1, "out"), Endpoint(1, "in")]

        def interfaces(self, speed="full"):
            return [Interface(0, 0xFF, endpoints=self.eps)]

    mem = SimulatedFlash(CHIP)
    base = printer.bootloader_device(mem, CHIP)
    dev = Device(DeviceInfo(0x1209, 0x0001), [Other(), base.functions[0]])
    bus = VirtualBus()
    bus.attach(dev)
    found = host.find_printers(get_backend(bus))
    assert [(p.interface, p.ep_out, p.ep_in) for p in found] == [(1, 0x02, 0x82)]
    image = Image([(0, b"\x0c\x94" * 300)])
    assert host.flash(image, get_backend(bus), progress=False).verified
    assert mem.read(0, 600) == image.tobytes(0)


def _corrupt_hex(image, line_index):
    text = write_hex(image).splitlines(keepends=True)
    line = text[line_index].rstrip("\n")
    text[line_index] = line[:-2] + "%02X" % ((int(line[-2:], 16) + 1) & 0xFF) + "\n"  # checksum off by one
    return "".join(text)


def test_print_file_refuses_a_corrupt_file_before_sending(rig, tmp_path):
    em, backend = rig
    path = tmp_path / "bad.hex"
    path.write_text(_corrupt_hex(Image([(0, bytes(range(256)))]), 3))
    before = path.read_bytes()
    with pytest.raises(ImageRejected, match=r"bad\.hex: line 4: bad checksum"):
        host.print_file(path, backend, progress=False)
    assert path.read_bytes() == before
    assert em.memory.erase_counters.total == 0 and em.memory.is_blank()
    assert em.target.device.functions[0].engine.jobs == 0  # nothing reached the device


def test_send_job_corrupt_reports_the_device_line(rig):
    # the raw path (what `cat bad.hex > /dev/usb/lp0` sends): the device finds the bad record
    em, backend = rig
    job = _corrupt_hex(Image([(0, bytes(range(256)))]), 3).encode()
    with pytest.raises(HostError) as err:
        host.send_job(job, backend, progress=False)
    assert str(err.value).startswith("the device stayed in its bootloader: ERROR job 1: record 4 (line 4): "
                                     "bad checksum")
    assert str(err.value).endswith("port status 0x10 (error)")
    assert not em.memory.app_valid and em.memory.is_blank()


def test_send_job_cut_off(rig):
    em, backend = rig
    _, image = load_sample("sample-atmega32u4")
    with pytest.raises(HostError, match="stayed in its bootloader: ERROR job 1: job cut off"):
        host.send_job(write_hex(image).encode()[:5000], backend, progress=False)
    assert not em.memory.app_valid
    # and a good job right after works
    assert host.flash(image, backend, progress=False).verified


def test_print_file_refuses_a_cut_file(rig, tmp_path):
    em, backend = rig
    _, image = load_sample("sample-atmega32u4")
    path = tmp_path / "cut.hex"
    path.write_bytes(write_hex(image).encode()[:5000])
    with pytest.raises(ImageRejected, match=r"cut\.hex: line 114: "):
        host.print_file(path, backend, progress=False)
    assert em.memory.erase_counters.total == 0


def test_print_file_beyond_flash_reports_paper_empty(rig, tmp_path):
    em, backend = rig
    path = tmp_path / "big.hex"
    path.write_text(write_hex(Image([(0, b"\x0c\x94"), (CHIP.boot_start, b"\x00" * 4)])))
    with pytest.raises(HostError, match="bootloader region"):
        host.print_file(path, backend, progress=False)
    dev = usb.core.find(backend=backend)
    assert dev.ctrl_transfer(0xA1, 0x01, 0, 0, 1)[0] == SELECT | PAPER_EMPTY


def test_flash_validates_against_the_chip_before_sending(rig):
    em, backend = rig
    before = em.memory.flash_bytes()
    with pytest.raises(ImageRejected, match="bootloader"):
        host.flash(Image([(CHIP.boot_start - 4, b"\x00" * 8)]), backend, chip="atmega32u4", progress=False)
    assert em.memory.flash_bytes() == before and em.memory.erase_counters.total == 0


def test_no_printer_found():
    with pytest.raises(HostError, match="no USB printer"):
        host.flash(Image([(0, b"\x00")]), get_backend(VirtualBus()), progress=False)


def test_printer_device_file(tmp_path):
    path = tmp_path / "lp0"
    path.write_bytes(b"")
    image = Image([(0, b"\x0c\x94" * 50)])
    result = host.flash(image, printer=path, progress=False)
    assert path.read_bytes() == write_hex(image).encode()
    assert not result.verified  # a plain file has no usblp ioctls


def test_read_is_refused():
    with pytest.raises(HostError):
        host.read()


def test_demo_row():
    from bootkit.demo import run_row

    row = run_row("printer", "lufa", "sample-atmega32u4")
    assert row["verified"], row
