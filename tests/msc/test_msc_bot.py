"""Bulk-Only Transport and SCSI conformance of the emulated UF2 drive (BOT 1.0, SPC-4, SBC-3)."""

import struct

import pytest
from msc_helpers import Drive

from bootkit.classes.msc.protocol import (
    CBW,
    CSW_FAILED,
    CSW_GOOD,
    CSW_PHASE_ERROR,
    cdb_inquiry,
    cdb_read10,
    cdb_read_capacity10,
    cdb_request_sense,
    cdb_start_stop,
    cdb_test_unit_ready,
    cdb_verify10,
    cdb_write10,
    decode_sense,
)
from bootkit.usb.descriptors import parse_configuration
from bootkit.usb.device import SetupPacket, Stall


@pytest.fixture
def drive():
    d = Drive()
    yield d
    d.close()


def sense(drive):
    csw, data = drive.command(cdb_request_sense(18), in_length=18)
    assert csw.status == CSW_GOOD and len(data) == 18 and data[0] == 0x70
    return decode_sense(data)


def test_interface_is_scsi_bulk_only(drive):
    cfg = parse_configuration(drive.device.configuration_descriptor())
    (intf,) = cfg["interfaces"]
    assert (intf["bInterfaceClass"], intf["bInterfaceSubClass"], intf["bInterfaceProtocol"]) == (8, 6, 0x50)
    kinds = sorted((e["bEndpointAddress"] & 0x80, e["bmAttributes"]) for e in intf["endpoints"])
    assert kinds == [(0x00, 2), (0x80, 2)]


def test_get_max_lun_and_bad_class_requests(drive):
    assert drive.device.control(SetupPacket(0xA1, 0xFE, 0, 0, 1)) == b"\x00"
    with pytest.raises(Stall):
        drive.device.control(SetupPacket(0xA1, 0xFE, 1, 0, 1))  # wValue must be 0
    with pytest.raises(Stall):
        drive.device.control(SetupPacket(0xA1, 0x42, 0, 0, 1))


def test_csw_echoes_the_tag(drive):
    for tag in (1, 0xDEADBEEF, 0):
        assert drive.out(CBW(tag, 0, 0, 0, cdb_test_unit_ready()).pack())
        assert drive.csw().tag == tag


@pytest.mark.parametrize("raw", [
    CBW(7, 0, 0, 0, cdb_test_unit_ready()).pack()[:30],  # 30 bytes: not valid
    b"USBX" + CBW(7, 0, 0, 0, cdb_test_unit_ready()).pack()[4:],  # bad signature
    struct.pack("<IIIBBB16s", 0x43425355, 7, 0, 0, 0, 0, bytes(16)),  # bCBWCBLength 0: not meaningful
])
def test_invalid_cbw_stalls_both_until_reset_recovery(drive, raw):
    assert not drive.out(raw)
    assert drive.halted(drive.ep_in) and drive.halted(drive.ep_out)
    # BOT 6.6.1: clearing the halt is not enough, the pipes stay stalled
    drive.clear_halt(drive.ep_in)
    drive.clear_halt(drive.ep_out)
    assert drive.halted(drive.ep_in) and drive.halted(drive.ep_out)
    assert drive.inp(13) == "STALL"
    drive.reset_recovery()
    assert not drive.halted(drive.ep_in) and not drive.halted(drive.ep_out)
    csw, _ = drive.command(cdb_test_unit_ready())
    assert csw.status == CSW_GOOD


def test_case_1_and_6(drive):
    csw, _ = drive.command(cdb_test_unit_ready())
    assert (csw.status, csw.residue) == (CSW_GOOD, 0)
    csw, data = drive.command(cdb_inquiry(36), in_length=36)
    assert (csw.status, csw.residue, len(data)) == (CSW_GOOD, 0, 36)
    assert data[0] == 0 and data[1] & 0x80  # direct access, removable
    assert data[8:16] == b"bootkit "


def test_case_2_hn_lt_di_is_phase_error(drive):
    csw, _ = drive.command(cdb_read10(0, 1), host_length=0, host_in=False)
    assert csw.status == CSW_PHASE_ERROR


def test_case_3_hn_lt_do_is_phase_error(drive):
    csw, _ = drive.command(cdb_write10(drive.volume.data_start, 1), host_length=0, host_in=False)
    assert csw.status == CSW_PHASE_ERROR


def test_case_4_hi_gt_dn_stalls_in_with_full_residue(drive):
    csw, data = drive.command(cdb_test_unit_ready(), host_length=64, host_in=True)
    assert data == b"" and (csw.status, csw.residue) == (CSW_GOOD, 64)
    assert "case 4" in drive.fn.engine.events


def test_case_5_hi_gt_di_short_data_then_stall(drive):
    drive.tag += 1
    drive.out(CBW(drive.tag, 200, 0x80, 0, cdb_inquiry(36)).pack())
    assert len(drive.inp(200)) == 36
    assert drive.halted(drive.ep_in)  # the host learns the data ended early
    csw = drive.csw()
    assert (csw.status, csw.residue) == (CSW_GOOD, 164)


def test_case_7_hi_lt_di_sends_what_the_host_wants_and_phase_error(drive):
    drive.tag += 1
    drive.out(CBW(drive.tag, 512, 0x80, 0, cdb_read10(0, 2)).pack())
    assert len(drive.inp(4096)) == 512
    assert drive.csw().status == CSW_PHASE_ERROR


def test_case_8_hi_ne_do(drive):
    csw, _ = drive.command(cdb_write10(drive.volume.data_start, 1), host_length=512, host_in=True)
    assert csw.status == CSW_PHASE_ERROR


def test_case_9_ho_gt_dn(drive):
    csw, _ = drive.command(cdb_test_unit_ready(), data_out=bytes(31))
    assert (csw.status, csw.residue) == (CSW_GOOD, 31)


def test_case_10_ho_ne_di(drive):
    csw, _ = drive.command(cdb_read10(0, 1), data_out=bytes(512))
    assert csw.status == CSW_PHASE_ERROR


def test_case_11_ho_gt_do_takes_its_share_then_stalls(drive):
    lba = drive.volume.data_start + 100
    csw, _ = drive.command(cdb_write10(lba, 1), data_out=b"\x5A" * 1024)
    assert (csw.status, csw.residue) == (CSW_GOOD, 512)
    assert drive.read(lba) == b"\x5A" * 512


def test_case_13_ho_lt_do_is_phase_error(drive):
    csw, _ = drive.command(cdb_write10(drive.volume.data_start + 5, 2), data_out=bytes(512))
    assert csw.status == CSW_PHASE_ERROR


def test_unknown_opcode_is_invalid_command_operation_code(drive):
    csw, _ = drive.command(bytes([0xC7, 0, 0, 0, 0, 0]))
    assert csw.status == CSW_FAILED
    assert sense(drive) == (0x5, 0x20, 0x00)
    assert sense(drive) == (0x0, 0x00, 0x00)  # reported once


@pytest.mark.parametrize("make", [lambda n: (cdb_read10(n, 1), None, 512),
                                  lambda n: (cdb_read10(n - 1, 2), None, 1024),
                                  lambda n: (cdb_write10(n, 1), bytes(512), 0),
                                  lambda n: (cdb_verify10(n + 7, 1), None, 0)])
def test_lba_out_of_range(drive, make):
    n = drive.volume.total_sectors
    cb, data_out, in_length = make(n)
    csw, data = drive.command(cb, data_out=data_out, in_length=in_length)
    assert csw.status == CSW_FAILED and data == b""
    assert csw.residue == (len(data_out) if data_out else in_length)
    assert sense(drive) == (0x5, 0x21, 0x00)


def test_last_lba_reads(drive):
    csw, data = drive.command(cdb_read_capacity10(), in_length=8)
    last, size = struct.unpack(">II", data)
    assert (last + 1, size) == (drive.volume.total_sectors, 512)
    assert len(drive.read(last)) == 512


def test_read_format_capacities_and_mode_sense(drive):
    csw, data = drive.command(bytes([0x23, 0, 0, 0, 0, 0, 0, 0, 12, 0]), in_length=12)
    assert csw.status == CSW_GOOD and struct.unpack(">I", data[4:8])[0] == drive.volume.total_sectors
    assert data[8] == 0x02 and int.from_bytes(data[9:12], "big") == 512
    csw, data = drive.command(bytes([0x1A, 0, 0x3F, 0, 192, 0]), in_length=192)
    assert csw.status == CSW_GOOD and data[0] == len(data) - 1 and not data[2] & 0x80  # not write protected
    csw, data = drive.command(bytes([0x5A, 0, 0x08, 0, 0, 0, 0, 0, 64, 0]), in_length=64)
    assert csw.status == CSW_GOOD and data[8] == 0x08
    csw, _ = drive.command(bytes([0x1A, 0, 0x1C, 0, 192, 0]), in_length=192)
    assert csw.status == CSW_FAILED and sense(drive) == (0x5, 0x24, 0x00)


def test_prevent_allow_sync_and_eject(drive):
    assert drive.command(bytes([0x1E, 0, 0, 0, 1, 0]))[0].status == CSW_GOOD
    assert drive.command(bytes([0x35]) + bytes(9))[0].status == CSW_GOOD
    assert drive.command(cdb_start_stop(False, True))[0].status == CSW_GOOD
    assert drive.command(cdb_test_unit_ready())[0].status == CSW_FAILED
    assert sense(drive) == (0x2, 0x3A, 0x00)  # NOT READY, MEDIUM NOT PRESENT
    csw, _ = drive.command(cdb_read10(0, 1), in_length=512)
    assert csw.status == CSW_FAILED
    assert drive.command(cdb_start_stop(True, True))[0].status == CSW_GOOD
    assert drive.command(cdb_test_unit_ready())[0].status == CSW_GOOD


def test_verify_with_bytchk_compares(drive):
    assert drive.command(cdb_verify10(0, 1), data_out=drive.read(0))[0].status == CSW_GOOD
    assert drive.command(cdb_verify10(0, 1, bytchk=True), data_out=drive.read(0))[0].status == CSW_GOOD
    assert drive.command(cdb_verify10(0, 1, bytchk=True), data_out=bytes(512))[0].status == CSW_FAILED
    assert sense(drive) == (0xE, 0x1D, 0x00)


def test_inquiry_evpd_is_invalid_field(drive):
    csw, _ = drive.command(bytes([0x12, 1, 0x80, 0, 36, 0]), in_length=36)
    assert csw.status == CSW_FAILED and sense(drive) == (0x5, 0x24, 0x00)
