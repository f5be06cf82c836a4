"""DFU personality conformance on the in-process bus, through pyusb.

Every test plugs a fresh :class:`Emulator` into its own ``VirtualBus`` and
talks to it as a host does: the bootkit host client (``host.flash``,
``host.read``, ``open_dialect``) or raw class requests with
``ctrl_transfer``.  Numbers and names come from DFU 1.1 (usb.org
DFU_1.1.pdf), ST AN3156 (DfuSe) and LUFA's BootloaderDFU.c (Atmel FLIP).
"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import struct
import subprocess
import sys
import time

import pytest
import usb.core
import usb.util

from bootkit.classes.dfu import host
from bootkit.classes.dfu.protocol import (
    ABORT,
    CLRSTATUS,
    DETACH,
    DNLOAD,
    GETSTATE,
    GETSTATUS,
    UPLOAD,
    State,
    Status,
    StatusReply,
)
from bootkit.emulator import Emulator
from bootkit.formats import Image, load, save
from bootkit.memory import get_chip, parse_dfuse_layout
from bootkit.memory.chips import EEPROM_BASE
from bootkit.transports.virtual import VirtualBus, get_backend

OUT = 0x21  # host-to-device, class, interface
IN = 0xA1  # device-to-host, class, interface


# --------------------------------------------------------------------------
# helpers


def payload(n: int, seed) -> bytes:
    """Deterministic code bytes that never start with an erased word."""
    rng = random.Random(f"dfu-conformance:{seed}")
    data = bytes(rng.getrandbits(8) for _ in range(n))
    return b"\x0c\x94" + data[2:] if n >= 2 else data


def app_range(chip):
    return chip.layout().application_ranges("flash")[0]


def reference(chip, image: Image) -> bytearray:
    """The chip's whole flash, erased, with the image's segments placed."""
    ref = bytearray(b"\xff" * chip.flash_size)
    for start, data in image.segments:
        ref[start - chip.flash_start:start - chip.flash_start + len(data)] = data
    return ref


class Plugged:
    """One emulated board on its own bus."""

    def __init__(self, path, chip, dialect, options=None, **kw):
        self.chip = get_chip(chip) if isinstance(chip, str) else chip
        self.dialect = dialect
        self.path = path
        self.options = {"dialect": dialect, **(options or {})}
        self.bus = VirtualBus()
        self.em = Emulator(self.chip, "dfu", options=self.options, image=path, **kw)
        self.em.attach(self.bus)
        self.backend = get_backend(self.bus)

    @property
    def memory(self):
        return self.em.memory

    def flash(self, image, **kw):
        kw.setdefault("dialect", self.dialect)
        kw.setdefault("chip", self.chip)
        return host.flash(image, self.backend, progress=False, **kw)

    def read(self, **kw):
        kw.setdefault("dialect", self.dialect)
        kw.setdefault("chip", self.chip)
        return host.read(self.backend, progress=False, **kw)

    def dialect_client(self, **kw):
        kw.setdefault("dialect", self.dialect)
        kw.setdefault("chip", self.chip)
        return host.open_dialect(self.backend, progress=False, **kw)

    def device(self):
        """The one device on the bus, configured, for raw requests."""
        devs = list(usb.core.find(find_all=True, backend=self.backend))
        assert len(devs) == 1, devs
        dev = devs[0]
        dev.set_configuration()
        return dev

    def close(self):
        self.em.close()


@pytest.fixture
def plug(tmp_path):
    boards = []

    def make(chip, dialect, options=None, name="flash.bin", **kw):
        b = Plugged(tmp_path / name, chip, dialect, options, **kw)
        boards.append(b)
        return b

    yield make
    for b in boards:
        b.close()


def status(dev, intf=0) -> StatusReply:
    return StatusReply.unpack(bytes(dev.ctrl_transfer(IN, GETSTATUS, 0, intf, 6)))


def state(dev, intf=0) -> int:
    return bytes(dev.ctrl_transfer(IN, GETSTATE, 0, intf, 1))[0]


def dnload(dev, block, data, intf=0):
    return dev.ctrl_transfer(OUT, DNLOAD, block, intf, data if data else None)


def upload(dev, block, length, intf=0) -> bytes:
    return bytes(dev.ctrl_transfer(IN, UPLOAD, block, intf, length))


def clrstatus(dev, intf=0):
    dev.ctrl_transfer(OUT, CLRSTATUS, 0, intf, None)


def assert_stalls(fn, *args):
    with pytest.raises(usb.core.USBError) as info:
        fn(*args)
    assert info.value.errno == errno.EPIPE, info.value  # a STALL is "Pipe error" (errno 32)


def assert_status(dev, bstatus, bstate):
    st = status(dev)
    assert (Status(st.bStatus), State(st.bState)) == (bstatus, bstate), st.describe()
    return st


def settle(dev) -> StatusReply:
    """GETSTATUS until the device leaves dfuDNBUSY / dfuDNLOAD-SYNC (fast mode: poll timeout 0)."""
    for _ in range(10):
        st = status(dev)
        if st.bState not in (State.dfuDNBUSY, State.dfuDNLOAD_SYNC):
            return st
    raise AssertionError(f"still busy: {st.describe()}")


def dfuse_command(dev, data: bytes) -> StatusReply:
    dnload(dev, 0, data)
    return settle(dev)


# --------------------------------------------------------------------------
# 1. a HEX with gaps, above 64 KiB, odd final length: flash, read back, file

# (dialect, chip, segments as (offset from the application start, length))
ROUNDTRIP = [
    ("flip", "atmega32u4", [(0, 1500), (0x1234, 300), (0x4001, 77), (0x6F00, 0x9B)]),
    # FLIP on a 128 KiB part: 64 KiB page select (06 03 00 PP), a block across 0x10000
    ("flip", "at90usb1286", [(0, 2000), (0xFF00, 0x300), (0x10400, 5000), (0x1C001, 4097)]),
    # DfuSe: 16 KiB, 64 KiB and 128 KiB sectors, data up to the last byte of flash
    ("dfuse", "stm32f411", [(0, 3000), (0x4010, 700), (0x10000, 0x2000), (0x20003, 1001), (0x7F001, 4095)]),
    ("dfu", "stm32f103c8", [(0, 1000), (0x1001, 33), (0x8000, 2048), (0xDC00, 1023)]),
    ("dfu", "atmega32u4", [(0, 1500), (0x1234, 300), (0x6F00, 0x9B)]),
]


def roundtrip_image(chip, segments) -> Image:
    start = app_range(chip)[0]
    return Image([(start + off, payload(n, (chip.name, off))) for off, n in segments])


@pytest.mark.parametrize("dialect,chip_name,segments", ROUNDTRIP, ids=[f"{d}-{c}" for d, c, _ in ROUNDTRIP])
def test_flash_hex_leaves_flash_byte_identical(plug, tmp_path, dialect, chip_name, segments):
    chip = get_chip(chip_name)
    image = roundtrip_image(chip, segments)
    assert image.segments[-1][1].__len__() % 2 == 1  # odd final length
    hex_path = tmp_path / "fw.hex"
    save(image, hex_path)
    text = hex_path.read_text()
    if image.end > chip.flash_start + 0x10000:
        # an extended linear address record (type 04) for the part above 64 KiB
        upper = (image.end - 1) >> 16
        assert f":02000004{upper:04X}" in text
    loaded = load(hex_path)
    assert loaded == image

    b = plug(chip, dialect)
    ref = reference(chip, loaded)
    result = b.flash(loaded)
    assert result.dialect == dialect
    assert result.verified
    assert b.memory.flash_bytes() == bytes(ref)
    assert b.memory.app_valid
    assert b.em.mode == "application"

    # read back (the host detaches the application first)
    back = b.read()
    lo, hi = app_range(chip)
    assert back.start <= lo and back.end >= hi, (hex(back.start), hex(back.end))
    base = chip.flash_start
    assert back.tobytes(back.start, back.end) == bytes(ref[back.start - base:back.end - base])

    b.close()
    assert b.path.read_bytes() == bytes(ref)
    assert json.loads(b.path.with_name(b.path.name + ".state.json").read_text())["app_valid"] is True

    # a power cycle from the file: the board comes back with the same flash
    again = plug(chip, dialect, name=b.path.name)
    assert again.memory.app_valid
    assert again.memory.flash_bytes() == bytes(ref)
    back = again.read()
    assert back.tobytes(lo, hi) == bytes(ref[lo - base:hi - base])


def test_flash_honours_a_small_wTransferSize_and_non_tolerant_manifestation(plug):
    """Plain DFU with wTransferSize 64 and bitManifestationTolerant clear (DFU 1.1 A.1.2)."""
    chip = get_chip("stm32f103c8")
    b = plug(chip, "dfu", {"transfer_size": 64, "attributes": 0x03})
    image = roundtrip_image(chip, [(0, 1000), (0x401, 99)])
    result = b.flash(image)
    assert b.memory.flash_bytes() == bytes(reference(chip, image))
    assert b.memory.app_valid and b.em.mode == "application"
    assert not result.verified  # no upload after a non-tolerant manifestation


# --------------------------------------------------------------------------
# 2. descriptors

DESCRIPTORS = [
    # dialect, chip, bmAttributes, wDetachTimeOut, wTransferSize, bcdDFUVersion
    ("dfu", "stm32f103c8", 0x07, 1000, 1024, 0x0110),
    ("dfuse", "stm32f411", 0x0B, 255, 2048, 0x011A),
    ("flip", "atmega32u4", 0x03, 0, 0x0C00, 0x0110),
]


@pytest.mark.parametrize("dialect,chip,attrs,detach,size,version", DESCRIPTORS, ids=[d[0] for d in DESCRIPTORS])
def test_dfu_mode_interface_and_functional_descriptor(plug, dialect, chip, attrs, detach, size, version):
    b = plug(chip, dialect)
    dev = b.device()
    intfs = list(dev[0])
    assert intfs
    for intf in intfs:
        assert (intf.bInterfaceClass, intf.bInterfaceSubClass, intf.bInterfaceProtocol) == (0xFE, 0x01, 0x02)
        assert intf.bNumEndpoints == 0
        extra = bytes(intf.extra_descriptors)
        assert len(extra) == 9
        assert struct.unpack("<BBBHHH", extra) == (9, 0x21, attrs, detach, size, version)


def test_configured_functional_descriptor(plug):
    b = plug("stm32f103c8", "dfu", {"transfer_size": 512, "attributes": 0x01})
    extra = bytes(next(iter(b.device()[0])).extra_descriptors)
    assert struct.unpack("<BBBHHH", extra) == (9, 0x21, 0x01, 1000, 512, 0x0110)
    item = host.find_interfaces(b.backend)[0]
    assert item.functional.wTransferSize == 512
    assert item.functional.can_download and not item.functional.can_upload


def test_dfuse_alternate_settings_name_the_memories(plug):
    b = plug("stm32f411", "dfuse")
    dev = b.device()
    names = {intf.bAlternateSetting: usb.util.get_string(dev, intf.iInterface) for intf in dev[0]}
    assert names[0] == "@Internal Flash /0x08000000/04*016Kg,01*064Kg,03*128Kg"
    assert names[1].startswith("@Option Bytes")
    _, regions = parse_dfuse_layout(names[1])
    assert (regions[0].start, regions[0].size) == (0x1FFFC000, 16)
    assert (dev.idVendor, dev.idProduct) == (0x0483, 0xDF11)
    item = host.find_interfaces(b.backend)[0]
    assert item.guess_dialect() == "dfuse"
    assert [a for a, _ in item.alts] == [0, 1]


@pytest.mark.parametrize("chip,pid", [("atmega32u4", 0x2FF4), ("at90usb1286", 0x2FFB)])
def test_flip_usb_ids(plug, chip, pid):
    b = plug(chip, "flip")
    dev = b.device()
    assert (dev.idVendor, dev.idProduct) == (0x03EB, pid)
    assert host.find_interfaces(b.backend)[0].guess_dialect() == "flip"


# --------------------------------------------------------------------------
# 3. the state machine, by raw requests (DFU 1.1 appendix A)


def test_plain_dfu_state_machine(plug):
    chip = get_chip("stm32f103c8")
    b = plug(chip, "dfu")
    dev = b.device()
    assert_status(dev, Status.OK, State.dfuIDLE)
    assert state(dev) == State.dfuIDLE

    dnload(dev, 0, payload(1024, "sm"))
    assert state(dev) == State.dfuDNLOAD_SYNC
    assert_status(dev, Status.OK, State.dfuDNLOAD_IDLE)

    # UPLOAD in dfuDNLOAD-IDLE is not allowed (A.2.6): STALL, dfuERROR/errSTALLEDPKT
    assert_stalls(upload, dev, 0, 64)
    assert_status(dev, Status.errSTALLEDPKT, State.dfuERROR)
    assert state(dev) == State.dfuERROR
    # in dfuERROR only GETSTATUS, GETSTATE and CLRSTATUS
    assert_stalls(dnload, dev, 1, b"\x00" * 16)
    assert_status(dev, Status.errSTALLEDPKT, State.dfuERROR)
    clrstatus(dev)
    assert_status(dev, Status.OK, State.dfuIDLE)

    # CLRSTATUS outside dfuERROR
    assert_stalls(clrstatus, dev)
    assert_status(dev, Status.errSTALLEDPKT, State.dfuERROR)
    clrstatus(dev)
    # DETACH is a run-time request (A.2.3)
    assert_stalls(dev.ctrl_transfer, OUT, DETACH, 1000, 0, None)
    assert_status(dev, Status.errSTALLEDPKT, State.dfuERROR)
    clrstatus(dev)
    assert_status(dev, Status.OK, State.dfuIDLE)
    # ABORT in dfuIDLE is fine
    dev.ctrl_transfer(OUT, ABORT, 0, 0, None)
    assert_status(dev, Status.OK, State.dfuIDLE)

    # usable again: a whole update works
    image = roundtrip_image(chip, [(0, 3000)])
    b.flash(image)
    assert b.memory.flash_bytes() == bytes(reference(chip, image))
    assert b.em.mode == "application"


def test_dfuse_state_machine(plug):
    chip = get_chip("stm32f411")
    b = plug(chip, "dfuse")
    dev = b.device()
    assert_status(dev, Status.OK, State.dfuIDLE)
    # GET_COMMANDS: UPLOAD block 0 in dfuIDLE (AN3156 6.2)
    assert upload(dev, 0, 16) == bytes((0x00, 0x21, 0x41, 0x92))
    assert state(dev) in (State.dfuIDLE, State.dfuUPLOAD_IDLE)
    dev.ctrl_transfer(OUT, ABORT, 0, 0, None)

    # Set Address Pointer; the command runs on the first GETSTATUS, which says dfuDNBUSY
    dnload(dev, 0, struct.pack("<BI", 0x21, 0x08004000))
    assert_status(dev, Status.OK, State.dfuDNBUSY)
    assert_status(dev, Status.OK, State.dfuDNLOAD_IDLE)

    # illegal: UPLOAD in dfuDNLOAD-IDLE
    assert_stalls(upload, dev, 2, 64)
    assert_status(dev, Status.errSTALLEDPKT, State.dfuERROR)
    clrstatus(dev)
    assert_status(dev, Status.OK, State.dfuIDLE)

    # a data block: (wBlockNum - 2) * wTransferSize + pointer
    dnload(dev, 0, struct.pack("<BI", 0x21, 0x08004000))
    settle(dev)
    data = payload(300, "dfuse-sm")
    dnload(dev, 2, data)
    assert_status(dev, Status.OK, State.dfuDNBUSY)
    assert_status(dev, Status.OK, State.dfuDNLOAD_IDLE)
    assert b.memory.flash_bytes()[0x4000:0x4000 + 300] == data
    dev.ctrl_transfer(OUT, ABORT, 0, 0, None)
    assert_status(dev, Status.OK, State.dfuIDLE)

    # read it back: pointer, ABORT, UPLOAD block 2
    dfuse_command(dev, struct.pack("<BI", 0x21, 0x08004000))
    dev.ctrl_transfer(OUT, ABORT, 0, 0, None)
    assert upload(dev, 2, 300) == data

    # CLRSTATUS in dfuIDLE and DETACH in DFU mode stall
    dev.ctrl_transfer(OUT, ABORT, 0, 0, None)
    assert_stalls(clrstatus, dev)
    assert_status(dev, Status.errSTALLEDPKT, State.dfuERROR)
    clrstatus(dev)
    assert_stalls(dev.ctrl_transfer, OUT, DETACH, 255, 0, None)
    assert_status(dev, Status.errSTALLEDPKT, State.dfuERROR)
    clrstatus(dev)

    image = roundtrip_image(chip, [(0, 5000), (0x20000, 77)])
    b.flash(image)
    ref = reference(chip, image)
    ref[0x4000:0x4000 + 300] = data  # sector 1 is not in the image: not erased
    assert b.memory.flash_bytes() == bytes(ref)
    assert b.em.mode == "application"


def test_flip_illegal_requests_stall(plug):
    chip = get_chip("atmega32u4")
    b = plug(chip, "flip")
    dev = b.device()
    assert_status(dev, Status.OK, State.dfuIDLE)
    assert_stalls(clrstatus, dev)
    assert_status(dev, Status.errSTALLEDPKT, State.dfuERROR)
    clrstatus(dev)
    assert_stalls(dev.ctrl_transfer, OUT, DETACH, 0, 0, None)
    assert_status(dev, Status.errSTALLEDPKT, State.dfuERROR)
    clrstatus(dev)
    # a program block puts LUFA in dfuDNLOAD-IDLE; UPLOAD there stalls
    start, end = 0x0000, 0x003F
    block = bytes((0x01, 0x00, start >> 8, start & 0xFF, end >> 8, end & 0xFF)) + bytes(26) + payload(64, "f") + bytes(16)
    dnload(dev, 0, block)
    assert_status(dev, Status.OK, State.dfuDNLOAD_IDLE)
    assert_stalls(upload, dev, 0, 64)
    assert_status(dev, Status.errSTALLEDPKT, State.dfuERROR)
    clrstatus(dev)
    assert_status(dev, Status.OK, State.dfuIDLE)
    image = roundtrip_image(chip, [(0, 3000)])
    b.flash(image)
    assert b.memory.flash_bytes() == bytes(reference(chip, image))


# --------------------------------------------------------------------------
# 4. bad input


def test_plain_dfu_download_past_the_application_is_errADDRESS(plug):
    chip = get_chip("atmega32u4")  # 28 KiB application, 4 KiB LUFA-size bootloader on top
    b = plug(chip, "dfu")
    boot = payload(chip.boot_size, "boot")
    b.memory.poke(chip.boot_start, boot)
    dev = b.device()
    lo, hi = app_range(chip)
    blocks = (hi - lo) // 1024
    for n in range(blocks):
        dnload(dev, n, payload(1024, n))
        assert_status(dev, Status.OK, State.dfuDNLOAD_IDLE)
    dnload(dev, blocks, b"\x00" * 1024)
    assert_status(dev, Status.errADDRESS, State.dfuERROR)
    assert b.memory.flash_bytes()[chip.boot_start:] == boot
    clrstatus(dev)
    assert_status(dev, Status.OK, State.dfuIDLE)

    # the host client names the status and the state
    d = b.dialect_client()
    with pytest.raises(host.DfuError, match=r"errADDRESS in dfuERROR"):
        d.write(Image([(lo, payload(hi - lo + 1, "too long"))]))
    assert b.memory.flash_bytes()[chip.boot_start:] == boot
    # and the device is usable after CLRSTATUS
    image = roundtrip_image(chip, [(0, 2000)])
    b.flash(image)
    assert b.memory.flash_bytes()[:2000] == image.segments[0][1]
    assert b.memory.flash_bytes()[chip.boot_start:] == boot


def test_plain_dfu_block_out_of_sequence_is_errNOTDONE(plug):
    chip = get_chip("stm32f103c8")
    b = plug(chip, "dfu")
    dev = b.device()
    dnload(dev, 0, payload(1024, 0))
    assert_status(dev, Status.OK, State.dfuDNLOAD_IDLE)
    dnload(dev, 2, payload(1024, 2))
    assert_status(dev, Status.errNOTDONE, State.dfuERROR)
    clrstatus(dev)
    assert_status(dev, Status.OK, State.dfuIDLE)
    image = roundtrip_image(chip, [(0, 4000)])
    b.flash(image)
    assert b.memory.flash_bytes() == bytes(reference(chip, image))


def test_plain_dfu_zero_length_dnload_in_dfuIDLE_is_errNOTDONE(plug):
    b = plug("stm32f103c8", "dfu")
    dev = b.device()
    assert_stalls(dnload, dev, 0, b"")
    assert_status(dev, Status.errNOTDONE, State.dfuERROR)
    clrstatus(dev)
    assert_status(dev, Status.OK, State.dfuIDLE)


def test_dfuse_write_outside_the_region_is_errADDRESS(plug):
    chip = get_chip("stm32f411")
    b = plug(chip, "dfuse")
    dev = b.device()
    # the pointer is inside, the block runs past the end of flash
    dfuse_command(dev, struct.pack("<BI", 0x21, 0x0807FC00))
    dnload(dev, 2, b"\x00" * 2048)
    assert_status(dev, Status.errADDRESS, State.dfuERROR)
    clrstatus(dev)
    # the block number puts the address past the end
    dfuse_command(dev, struct.pack("<BI", 0x21, 0x08000000))
    dnload(dev, 2 + 0x80000 // 2048, b"\x00" * 16)
    assert_status(dev, Status.errADDRESS, State.dfuERROR)
    clrstatus(dev)
    # UPLOAD past the end
    dfuse_command(dev, struct.pack("<BI", 0x21, 0x08000000))
    dev.ctrl_transfer(OUT, ABORT, 0, 0, None)
    assert_stalls(upload, dev, 2 + 0x80000 // 2048, 16)
    assert_status(dev, Status.errADDRESS, State.dfuERROR)
    clrstatus(dev)
    assert b.memory.flash_bytes() == b"\xff" * chip.flash_size
    image = roundtrip_image(chip, [(0, 2000)])
    b.flash(image)
    assert b.memory.flash_bytes() == bytes(reference(chip, image))


def test_dfuse_set_address_outside_the_region_is_refused(plug):
    b = plug("stm32f411", "dfuse")
    dev = b.device()
    dnload(dev, 0, struct.pack("<BI", 0x21, 0x20000000))
    st = status(dev)
    assert st.bState == State.dfuERROR and st.bStatus == Status.errTARGET, st.describe()
    clrstatus(dev)
    assert_status(dev, Status.OK, State.dfuIDLE)


def test_dfuse_protected_bootloader_region_is_errTARGET(plug):
    """stm32f103c8 keeps an 8 KiB bootloader at 0x08000000 (dapboot-style), emulated speaking DfuSe."""
    chip = get_chip("stm32f103c8")
    b = plug(chip, "dfuse")
    boot = payload(chip.boot_size, "bluepill boot")
    b.memory.poke(chip.boot_start, boot)

    def boot_intact():
        return b.memory.flash_bytes()[:chip.boot_size] == boot

    dev = b.device()
    # erase the bootloader's first page
    dnload(dev, 0, struct.pack("<BI", 0x41, 0x08000000))
    assert_status(dev, Status.errTARGET, State.dfuERROR)
    clrstatus(dev)
    assert boot_intact()
    # write into it
    dfuse_command(dev, struct.pack("<BI", 0x21, 0x08000000))
    dnload(dev, 2, b"\x00" * 1024)
    assert_status(dev, Status.errTARGET, State.dfuERROR)
    clrstatus(dev)
    assert boot_intact()
    # a block that straddles the end of the bootloader
    dfuse_command(dev, struct.pack("<BI", 0x21, 0x08001C00))
    dnload(dev, 2, b"\x00" * 2048)
    assert_status(dev, Status.errTARGET, State.dfuERROR)
    clrstatus(dev)
    assert boot_intact()
    assert b.memory.flash_bytes()[chip.boot_size:] == b"\xff" * (chip.flash_size - chip.boot_size)
    # a mass erase leaves it alone
    b.memory.poke(0x08004000, b"\x12\x34")
    assert dfuse_command(dev, b"\x41").bStatus == Status.OK
    assert boot_intact()
    assert b.memory.flash_bytes()[0x4000:0x4002] == b"\xff\xff"
    # and the device is usable
    image = roundtrip_image(chip, [(0, 3000), (0x8001, 55)])
    b.flash(image)
    ref = reference(chip, image)
    ref[:chip.boot_size] = boot
    assert b.memory.flash_bytes() == bytes(ref)
    assert b.em.mode == "application"


def test_dfuse_host_message_names_status_and_state(plug):
    """Without --chip the DfuSe host cannot know the bootloader: the device refuses, the message says how."""
    chip = get_chip("stm32f103c8")
    b = plug(chip, "dfuse")
    boot = payload(chip.boot_size, "boot")
    b.memory.poke(chip.boot_start, boot)
    with pytest.raises(host.DfuError, match=r"errTARGET in dfuERROR"):
        b.flash(Image([(0x08000000, payload(100, 1))]), chip=None)
    assert b.memory.flash_bytes()[:chip.boot_size] == boot


# (dialect, chip, segments of a bad image: a good segment first, so a host that
# does not validate first would already have erased something)
REJECTED = [
    ("dfu", "stm32f103c8", [(0x08004000, 100), (0x0800FF00, 0x200)], "does not fit"),
    ("dfu", "stm32f103c8", [(0x08001F00, 0x200)], "bootloader"),
    ("dfuse", "stm32f103c8", [(0x08004000, 100), (0x08001F00, 0x200)], "bootloader"),
    ("dfuse", "stm32f411", [(0x08000000, 100), (0x0807FF00, 0x200)], "does not fit"),
    ("flip", "atmega32u4", [(0x0000, 100), (0x6F00, 0x200)], "bootloader"),
    ("flip", "atmega32u4", [(0x0000, 100), (0x8000, 0x10)], "does not fit"),
    ("flip", "at90usb1286", [(0x0000, 100), (0x1DF00, 0x200)], "bootloader"),
]


@pytest.mark.parametrize("dialect,chip_name,segments,why", REJECTED,
                         ids=[f"{d}-{c}-{w.split()[0]}" for d, c, _, w in REJECTED])
def test_host_rejects_an_image_before_erasing_anything(plug, dialect, chip_name, segments, why):
    chip = get_chip(chip_name)
    b = plug(chip, dialect)
    old = payload(chip.flash_size, "old firmware")
    b.memory.poke(chip.flash_start, old)
    image = Image([(s, payload(n, s)) for s, n in segments])
    with pytest.raises(host.ImageRejected, match=why):
        b.flash(image)
    assert b.memory.flash_bytes() == old
    assert b.memory.erase_counters.total == 0


# --------------------------------------------------------------------------
# 5. read-out protection


@pytest.mark.parametrize("command", [b"\x41", b"\x92"], ids=["mass-erase", "read-unprotect"])
def test_dfuse_read_protection(plug, command):
    chip = get_chip("stm32f411")
    b = plug(chip, "dfuse", read_protected=True)
    secret = payload(4096, "secret")
    b.memory.poke(0x08000000, secret)
    with pytest.raises(host.DfuError, match=r"in dfuERROR"):
        b.read(start=0x08000000, length=4096)
    dev = b.device()
    settle(dev)
    st = status(dev)
    if st.bState == State.dfuERROR:
        clrstatus(dev)
    dfuse_command(dev, struct.pack("<BI", 0x21, 0x08000000))
    dev.ctrl_transfer(OUT, ABORT, 0, 0, None)
    assert_stalls(upload, dev, 2, 64)
    assert status(dev).bState == State.dfuERROR
    clrstatus(dev)
    # a download is refused as well
    dfuse_command(dev, struct.pack("<BI", 0x21, 0x08008000))
    dnload(dev, 2, b"\x00" * 16)
    assert status(dev).bState == State.dfuERROR
    clrstatus(dev)
    # mass erase / Read Unprotect (AN3156 6.3.4): flash erased, protection lifted
    assert dfuse_command(dev, command).bStatus == Status.OK
    dev.ctrl_transfer(OUT, ABORT, 0, 0, None)
    back = b.read(start=0x08000000, length=4096)
    assert back.tobytes(0x08000000, 0x08001000) == b"\xff" * 4096
    image = roundtrip_image(chip, [(0, 1000)])
    b.flash(image)
    assert b.memory.flash_bytes() == bytes(reference(chip, image))


def test_flip_secure_mode_allows_only_read_and_chip_erase(plug):
    chip = get_chip("atmega32u4")
    b = plug(chip, "flip", read_protected=True)
    secret = payload(0x7000, "secret")
    b.memory.poke(0, secret)
    f = b.dialect_client()
    assert f.signature() == chip.signature  # read commands (05 ..) work
    with pytest.raises(host.DfuError):
        f.read(0, 256)
    dev = f.client.dev
    st = status(dev)
    assert st.bState == State.dfuERROR
    clrstatus(dev)
    # blank check and programming are refused too
    for cmd in (bytes((0x03, 0x01, 0x00, 0x00, 0x6F, 0xFF)),
                bytes((0x01, 0x00, 0x00, 0x00, 0x00, 0x0F)) + bytes(26) + bytes(16) + bytes(16)):
        try:
            dnload(dev, 0, cmd)
        except usb.core.USBError as exc:
            assert exc.errno == errno.EPIPE
        assert status(dev).bState == State.dfuERROR
        clrstatus(dev)
    assert b.memory.flash_bytes()[:0x7000] == secret
    # chip erase (04 00 FF) lifts secure mode
    f.erase()
    assert f.read(0, 0x7000).tobytes(0, 0x7000) == b"\xff" * 0x7000
    image = roundtrip_image(chip, [(0, 1000), (0x5000, 3)])
    b.flash(image)
    assert b.memory.flash_bytes() == bytes(reference(chip, image))
    assert b.em.mode == "application"


def test_flip_secure_mode_refusal_is_lufas_errWRITE(plug):
    """LUFA BootloaderDFU.c ProcessBootloaderCommand: a refused command in secure
    mode sets dfuERROR with errWRITE and stalls (DFU_Status = errWRITE;
    Endpoint_StallTransaction())."""
    b = plug("atmega32u4", "flip", read_protected=True)
    dev = b.device()
    assert_stalls(dnload, dev, 0, bytes((0x03, 0x00, 0x00, 0x00, 0x00, 0xFF)))
    assert_status(dev, Status.errWRITE, State.dfuERROR)


# --------------------------------------------------------------------------
# 6. FLIP specifics


def test_flip_eeprom_write_and_read(plug):
    chip = get_chip("atmega32u4")
    b = plug(chip, "flip")
    data = payload(301, "eeprom")
    image = Image([(0, data), (0x200, b"\x5a" * 17)])
    b.flash(image, memory="eeprom", leave=False)  # flash is blank: there is no application to start
    eeprom = b.memory.region_bytes("eeprom")
    ref = bytearray(b"\xff" * chip.eeprom_size)
    ref[0:301] = data
    ref[0x200:0x211] = b"\x5a" * 17
    assert eeprom == bytes(ref)
    assert b.memory.flash_bytes() == b"\xff" * chip.flash_size  # flash untouched, not erased
    assert b.memory.erase_counters.total == 0
    back = b.read(memory="eeprom")
    assert back.start == 0
    assert back.tobytes(0, chip.eeprom_size) == bytes(ref)
    # avr-gcc's .eeprom address (0x810000) works as well
    b.flash(Image([(EEPROM_BASE + 0x300, b"\xa5\x5a\x01")]), memory="eeprom", leave=False)
    assert b.memory.region_bytes("eeprom")[0x300:0x303] == b"\xa5\x5a\x01"
    # the EEPROM survives a power cycle through FILE.bin.state.json
    b.close()
    again = plug(chip, "flip", name=b.path.name)
    assert again.memory.region_bytes("eeprom")[:301] == data


@pytest.mark.parametrize("chip", ["atmega32u4", "at90usb1286"])
def test_flip_signature(plug, chip):
    b = plug(chip, "flip")
    f = b.dialect_client()
    assert f.signature() == get_chip(chip).signature
    assert len(f.signature()) == 3


def test_flip_blank_check_and_first_non_blank_address(plug):
    chip = get_chip("atmega32u4")
    b = plug(chip, "flip")
    dev = b.device()
    check = bytes((0x03, 0x01, 0x00, 0x00, 0x6F, 0xFF))  # blank check 0x0000-0x6FFF
    dnload(dev, 0, check)
    assert_status(dev, Status.OK, State.dfuIDLE)
    b.memory.poke(0x1234, b"\x00")
    b.memory.poke(0x2000, b"\x00")
    dnload(dev, 0, check)
    assert_status(dev, Status.errCHECK_ERASED, State.dfuERROR)
    # LUFA answers the following UPLOAD with the first non-blank address (Endpoint_Write_16_LE)
    reply = upload(dev, 0, 2)
    assert struct.unpack("<H", reply)[0] == 0x1234
    clrstatus(dev)
    assert_status(dev, Status.OK, State.dfuIDLE)


def test_flip_blank_check_above_64k(plug):
    chip = get_chip("at90usb1286")
    b = plug(chip, "flip")
    dev = b.device()
    b.memory.poke(0x12345, b"\x00")
    dnload(dev, 0, bytes((0x06, 0x03, 0x00, 0x01)))  # select the second 64 KiB page
    assert_status(dev, Status.OK, State.dfuIDLE)
    dnload(dev, 0, bytes((0x03, 0x01, 0x00, 0x00, 0xFF, 0xFF)))
    assert_status(dev, Status.errCHECK_ERASED, State.dfuERROR)
    assert struct.unpack("<H", upload(dev, 0, 2))[0] == 0x2345
    clrstatus(dev)


# --------------------------------------------------------------------------
# 7. run-time DFU and detach (DFU 1.1 section 5)


@pytest.mark.parametrize("dialect,chip", [("dfu", "stm32f103c8"), ("dfuse", "stm32f411"), ("flip", "atmega32u4")])
def test_runtime_interface_and_detach(plug, dialect, chip):
    chip = get_chip(chip)
    b = plug(chip, dialect)
    image = roundtrip_image(chip, [(0, 2048)])
    b.flash(image)
    assert b.em.mode == "application"

    items = host.find_interfaces(b.backend)
    assert len(items) == 1 and items[0].runtime
    dev = b.device()
    assert (dev.idVendor, dev.idProduct) == (0x1209, 0xB00E)
    intf = next(iter(dev[0]))
    assert (intf.bInterfaceClass, intf.bInterfaceSubClass, intf.bInterfaceProtocol) == (0xFE, 0x01, 0x01)
    extra = bytes(intf.extra_descriptors)
    assert extra[:2] == b"\x09\x21"
    assert_status(dev, Status.OK, State.appIDLE)

    back = host.detach_to_dfu(items[0], b.backend)
    assert not back.runtime
    assert b.em.mode == "bootloader"
    dev = b.device()
    assert next(iter(dev[0])).bInterfaceProtocol == 0x02
    assert_status(dev, Status.OK, State.dfuIDLE)
    # the application is still there; a reset in DFU mode starts it again
    assert b.memory.app_valid
    try:
        dev.reset()
    except usb.core.USBError:
        pass
    assert b.em.mode == "application"

    # open_dialect detaches by itself
    d = b.dialect_client()
    assert b.em.mode == "bootloader"
    assert d.name == dialect
    got = d.read(image.start, 2048) if dialect != "dfu" else d.read(length=2048)
    assert got.tobytes(image.start, image.start + 2048) == image.segments[0][1]


def test_runtime_detach_by_raw_requests(plug):
    chip = get_chip("stm32f103c8")
    b = plug(chip, "dfu")
    b.flash(roundtrip_image(chip, [(0, 100)]))
    dev = b.device()
    assert state(dev) == State.appIDLE
    dev.ctrl_transfer(OUT, DETACH, 1000, 0, None)
    assert state(dev) == State.appDETACH
    assert b.em.mode == "application"
    try:
        dev.reset()  # the USB reset within wDetachTimeOut re-enumerates in DFU mode
    except usb.core.USBError:
        pass
    assert b.em.mode == "bootloader"
    dev = b.device()
    assert next(iter(dev[0])).bInterfaceProtocol == 0x02


# --------------------------------------------------------------------------
# 8. killing the host halfway (power safety)

HALFWAY = [("dfu", "stm32f103c8"), ("dfuse", "stm32f411"), ("flip", "atmega32u4"), ("flip", "at90usb1286")]


@pytest.mark.parametrize("dialect,chip_name", HALFWAY, ids=[f"{d}-{c}" for d, c in HALFWAY])
def test_interrupted_update_keeps_the_bootloader_and_a_retry_works(plug, dialect, chip_name):
    chip = get_chip(chip_name)
    lo, hi = app_range(chip)
    b = plug(chip, dialect)
    old = Image([(lo, payload(6000, "old"))])
    b.flash(old)
    assert b.em.mode == "application" and b.memory.app_valid

    size = min(hi - lo, 80 * 1024)
    new = Image([(lo, payload(size, "new"))])
    half = Image([(lo, new.segments[0][1][:size // 2])])
    d = b.dialect_client()  # detaches the application
    assert b.em.mode == "bootloader"
    d.validate(new)
    if dialect in ("dfuse", "flip"):
        d.erase(new)
    d.write(half)  # ... and the host dies here: no manifest, no leave
    del d
    assert b.memory.app_valid is False

    # power cycles keep the board in its bootloader
    assert b.em.board.power_on() == "bootloader"
    assert "not valid" in b.em.board.reason
    assert b.em.board.reset() == "bootloader"

    # and from the file: the same after a real power cycle of the emulated board
    b.close()
    state_file = json.loads(b.path.with_name(b.path.name + ".state.json").read_text())
    assert state_file["app_valid"] is False
    again = plug(chip, dialect, name=b.path.name)
    assert again.em.mode == "bootloader"
    assert "not valid" in again.em.board.reason
    assert again.memory.flash_bytes()[lo - chip.flash_start:lo - chip.flash_start + size // 2] == half.segments[0][1]

    result = again.flash(new)
    assert result.verified or dialect == "dfu"
    assert again.memory.flash_bytes() == bytes(reference(chip, new))
    assert again.memory.app_valid and again.em.mode == "application"


def test_interrupted_update_on_the_same_device_then_retry(plug):
    """The same device object the dead host left in dfuDNLOAD-IDLE: the next host recovers it."""
    chip = get_chip("stm32f103c8")
    b = plug(chip, "dfu")
    dev = b.device()
    for n in range(5):
        dnload(dev, n, payload(1024, n))
        settle(dev)
    del dev
    assert not b.memory.app_valid
    assert b.em.board.power_on() == "bootloader"
    image = roundtrip_image(chip, [(0, 9000)])
    b.flash(image)
    assert b.memory.flash_bytes() == bytes(reference(chip, image))
    assert b.em.mode == "application"


def _bootkit_cmd(*args):
    return [sys.executable, "-m", "bootkit", *args]


def test_killed_cli_process_never_leaves_a_half_new_image(tmp_path):
    """`bootkit flash --emulate` runs the device in the same process: a SIGKILL
    mid-way loses the whole update, and FILE.bin keeps its previous content
    (the image is only written back when the device side stops)."""
    from bootkit.cli import main

    chip = get_chip("stm32f411")
    image_file = tmp_path / "flash.bin"
    old = Image([(0x08000000, payload(3000, "old cli"))])
    save(old, tmp_path / "old.hex")
    assert main(["flash", str(tmp_path / "old.hex"), "--emulate", "stm32f411", "--image", str(image_file),
                 "--dialect", "dfuse"]) == 0
    previous = image_file.read_bytes()
    assert previous == bytes(reference(chip, old))

    new = Image([(0x08000000, payload(448 * 1024 + 1, "big new"))])
    save(new, tmp_path / "new.hex")
    complete = bytes(reference(chip, new))
    cmd = _bootkit_cmd("flash", str(tmp_path / "new.hex"), "--via", "dfu", "--emulate", "stm32f411",
                       "--image", str(image_file), "--dialect", "dfuse", "--no-progress")

    t0 = time.monotonic()
    subprocess.run(cmd, check=True, capture_output=True, cwd=tmp_path, timeout=120)
    full = time.monotonic() - t0
    assert image_file.read_bytes() == complete
    image_file.write_bytes(previous)  # start from the old content again
    (tmp_path / "flash.bin.state.json").write_text(json.dumps({"app_valid": True}))

    killed = 0
    for fraction in (0.3, 0.4, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95):
        proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(full * fraction)
        proc.send_signal(signal.SIGKILL)
        rc = proc.wait(timeout=60)
        content = image_file.read_bytes()
        assert content in (previous, complete), f"half-new image after SIGKILL at {fraction:.0%}"
        if rc == -signal.SIGKILL:
            killed += 1
            if content == complete:  # killed after the write-back: fine, then start over
                image_file.write_bytes(previous)
        else:
            assert rc == 0 and content == complete
            image_file.write_bytes(previous)
    assert killed, "no run was killed before it finished; the test did not test anything"


# The same CLI run, killed at a known point: the child prints a marker after
# half of the DNLOAD blocks went to the emulated device, then the parent SIGKILLs it.
_HALFWAY_CHILD = r"""
import sys
from bootkit.classes.dfu.client import DfuClient
from bootkit.cli import main

real = DfuClient.dnload
count = {"n": 0}

def dnload(self, block, data):
    if block >= 2 and data:
        count["n"] += 1
        if count["n"] == int(sys.argv[1]):
            print("HALFWAY", flush=True)
            import time
            time.sleep(60)
    return real(self, block, data)

DfuClient.dnload = dnload
sys.exit(main(sys.argv[2:]))
"""


def test_cli_killed_at_half_the_blocks_keeps_the_previous_image(tmp_path):
    from bootkit.cli import main

    chip = get_chip("stm32f411")
    image_file = tmp_path / "flash.bin"
    old = Image([(0x08000000, payload(3000, "old cli"))])
    save(old, tmp_path / "old.hex")
    assert main(["flash", str(tmp_path / "old.hex"), "--emulate", "stm32f411", "--image", str(image_file),
                 "--dialect", "dfuse"]) == 0
    previous = image_file.read_bytes()
    state_before = (tmp_path / "flash.bin.state.json").read_text()

    size = 448 * 1024 + 1
    save(Image([(0x08000000, payload(size, "big new"))]), tmp_path / "new.hex")
    blocks = -(-size // 2048)
    args = ["flash", str(tmp_path / "new.hex"), "--via", "dfu", "--emulate", "stm32f411", "--image",
            str(image_file), "--dialect", "dfuse", "--no-progress"]
    proc = subprocess.Popen([sys.executable, "-c", _HALFWAY_CHILD, str(blocks // 2), *args], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "HALFWAY", (line, proc.stderr.read() if proc.poll() is not None else "")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert image_file.read_bytes() == previous
    assert (tmp_path / "flash.bin.state.json").read_text() == state_before
    # a retry from the file works and leaves the new image
    assert main(args) == 0
    assert image_file.read_bytes() == bytes(reference(chip, load(tmp_path / "new.hex")))


def test_interrupted_cli_process_writes_back_an_invalid_image(tmp_path):
    """SIGINT (Ctrl-C) lets the emulator write the flash back: a partial image is
    acceptable only if it is marked not valid, so the board stays in its bootloader."""
    chip = get_chip("stm32f411")
    image_file = tmp_path / "flash.bin"
    image_file.write_bytes(b"\xff" * chip.flash_size)
    new = Image([(0x08000000, payload(448 * 1024 + 1, "big new"))])
    save(new, tmp_path / "new.hex")
    complete = bytes(reference(chip, new))
    cmd = _bootkit_cmd("flash", str(tmp_path / "new.hex"), "--emulate", "stm32f411", "--image", str(image_file),
                       "--dialect", "dfuse", "--no-progress")
    t0 = time.monotonic()
    subprocess.run(cmd, check=True, capture_output=True, cwd=tmp_path, timeout=120)
    full = time.monotonic() - t0
    for fraction in (0.6, 0.8, 0.9):
        image_file.write_bytes(b"\xff" * chip.flash_size)
        (tmp_path / "flash.bin.state.json").unlink(missing_ok=True)
        proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(full * fraction)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        content = image_file.read_bytes()
        if content not in (b"\xff" * chip.flash_size, complete):
            em = Emulator(chip, "dfu", image=image_file, options={"dialect": "dfuse"})
            try:
                assert em.memory.app_valid is False
                assert em.mode == "bootloader"
            finally:
                em.memory.image_path = None  # do not write anything back
        assert not os.path.exists(str(image_file) + ".tmp") or content in (b"\xff" * chip.flash_size, complete)


def test_plain_dfu_flash_without_a_chip_verifies(plug):
    """A plain DFU device found by VID:PID only (no --chip): the host downloads from
    the image's first address and must verify against the same addresses."""
    chip = get_chip("stm32f103c8")
    b = plug(chip, "dfu")
    image = roundtrip_image(chip, [(0, 1000), (0x801, 99)])
    result = b.flash(image, chip=None)
    assert result.verified
    assert b.memory.flash_bytes() == bytes(reference(chip, image))
    assert b.em.mode == "application"


def test_dfuse_host_without_functional_descriptor_addresses_every_chunk(monkeypatch):
    """A FunctionFS gadget on older kernels carries no DFU functional descriptor:
    the host's wTransferSize is then a guess (1024) while the device uses 2048,
    so the host must not address data by sequential block numbers."""
    from bootkit.classes.dfu import finder, host
    from bootkit.emulator import Emulator
    from bootkit.formats.image import Image
    from bootkit.transports.virtual import VirtualBus, get_backend

    monkeypatch.setattr(finder, "_functional_from", lambda extra: None)
    bus = VirtualBus()
    data = bytes((i * 7) & 0xFF for i in range(9000))
    with Emulator("stm32f411", "dfu", options={"dialect": "dfuse"}) as em:
        em.attach(bus)
        item = host.find_interfaces(get_backend(bus))[0]
        assert not item.described and item.functional.wTransferSize == 1024
        result = host.flash(Image([(0x08000000, data)]), get_backend(bus), dialect="dfuse", progress=False,
                            leave=False)
        assert result.verified
        assert em.memory.read(0x08000000, len(data)) == data


def test_dfuse_guessed_from_layout_strings_without_functional_descriptor(monkeypatch):
    from bootkit.classes.dfu import finder, host
    from bootkit.emulator import Emulator
    from bootkit.transports.virtual import VirtualBus, get_backend

    monkeypatch.setattr(finder, "_functional_from", lambda extra: None)
    bus = VirtualBus()
    with Emulator("stm32f411", "dfu", options={"dialect": "dfuse", "vid": 0x1209, "pid": 0x0001}) as em:
        em.attach(bus)
        item = host.find_interfaces(get_backend(bus))[0]
        assert not item.described and item.guess_dialect() == "dfuse"
    with Emulator("stm32f103c8", "dfu", options={"dialect": "dfu"}) as em:
        em.attach(bus)
        items = [i for i in host.find_interfaces(get_backend(bus)) if i.pid == 0xB00D]
        assert items and items[0].guess_dialect() == "dfu"
