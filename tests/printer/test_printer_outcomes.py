"""Issue 16 for the printer personality: every reported success is observed.

`bootkit print FILE` parses the whole file and checks it against the chip
before anything is sent (exit 2, one line naming file and line, the image
file and the device's flash untouched); a device that reports an error after
the job is exit 1 with the device's own line; "verified" only after the
device's CRC-32 of flash read back equals the image's; what the device does
after the job is reported as seen.
"""

from __future__ import annotations

import random

import pytest

from bootkit.classes.common import HostError, ImageRejected
from bootkit.classes.printer import bootloader_device, host
from bootkit.cli import main
from bootkit.emulator import Emulator
from bootkit.formats import Image, write_hex
from bootkit.memory import SimulatedFlash, WriteFault, get_chip
from bootkit.transports.virtual import VirtualBus, get_backend
from bootkit.usb.descriptors import DeviceInfo, Interface
from bootkit.usb.device import Device, Function, Target

CHIP = get_chip("atmega32u4")
AT128 = get_chip("at90usb1286")


def app(n: int, seed) -> bytes:
    rng = random.Random(f"printer-outcomes:{seed}")
    return b"\x0c\x94" + bytes(rng.getrandbits(8) for _ in range(n - 2))


def flash_file(tmp_path, chip=CHIP, content: bytes = b"") -> tuple:
    """A --image FILE.bin holding a valid application (so a lost page 0 would show)."""
    path = tmp_path / "flash.bin"
    path.write_bytes(content + b"\xff" * (chip.flash_size - len(content)))
    return path, path.read_bytes()


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = main(["print", *map(str, argv), "--no-progress"])
    out, err = capsys.readouterr()
    return rc, out, err


# --------------------------------------------------------------------------
# bad input: exit 2, one line, nothing sent, nothing lost


@pytest.mark.parametrize("name, content, message", [
    ("random.hex", random.Random(3).randbytes(3000), "random.hex: the extension says Intel HEX (.hex) but the "
     "content is not Intel HEX (first bytes fd 3f eb 3c 92 50 b7 97); give --format if it is another one"),
    ("empty.hex", b"", "empty.hex: empty file (0 bytes): nothing to print"),
    ("blank.hex", b"\n\r\n  \n", "blank.hex: empty file (6 bytes): nothing to print"),
    ("eof-only.hex", b":00000001FF\n", "eof-only.hex: no data records: nothing to print"),
], ids=["random", "empty", "blank", "eof-only"])
def test_a_file_that_programs_nothing_is_refused(tmp_path, capsys, monkeypatch, name, content, message):
    monkeypatch.chdir(tmp_path)
    image, before = flash_file(tmp_path, content=app(1024, 1))
    (tmp_path / name).write_bytes(content)
    rc, out, err = run(capsys, name, "--emulate", "atmega32u4", "--image", image)
    assert rc == 2 and out == ""
    assert err == f"bootkit: error: {message}\n"
    assert (tmp_path / name).read_bytes() == content
    assert image.read_bytes() == before


def test_random_bytes_read_as_hex_name_the_line(tmp_path):
    # --format hex: the content is taken as HEX and its first line named
    path = tmp_path / "random.hex"
    path.write_bytes(random.Random(4).randbytes(500))
    with pytest.raises(ImageRejected, match=r"random\.hex: line 1: expected ':'"):
        host.prepare(path, fmt="hex")


def test_a_corrupt_hex_erases_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    image, before = flash_file(tmp_path, content=app(4096, 2))
    lines = write_hex(Image([(0, app(2048, 3))])).splitlines(keepends=True)
    rec = lines[30].rstrip("\n")
    lines[30] = rec[:-2] + "%02X" % ((int(rec[-2:], 16) + 1) & 0xFF) + "\n"
    bad = "".join(lines).encode()
    (tmp_path / "bad.hex").write_bytes(bad)
    rc, out, err = run(capsys, "bad.hex", "--emulate", "atmega32u4", "--image", image)
    assert rc == 2 and out == ""
    assert err.startswith("bootkit: error: bad.hex: line 31: bad checksum") and err.count("\n") == 1
    assert (tmp_path / "bad.hex").read_bytes() == bad
    assert image.read_bytes() == before  # page 0 (the reset vector) was not erased


def test_data_in_the_bootloader_region_is_refused_naming_line_and_address(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    image, before = flash_file(tmp_path, content=app(1024, 4))
    (tmp_path / "boot.hex").write_text(write_hex(Image([(0, app(64, 5)), (0x6FF8, b"\x00" * 16)])))
    rc, out, err = run(capsys, "boot.hex", "--emulate", "atmega32u4", "--image", image)
    assert rc == 2
    assert err == ("bootkit: error: boot.hex: line 5: image data at 0x7000 reaches into the bootloader region "
                   "0x7000-0x7FFF of the atmega32u4 application flash\n")
    assert image.read_bytes() == before


def test_an_image_without_the_reset_vector_is_refused_even_forced(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    image, before = flash_file(tmp_path, content=app(1024, 6))
    (tmp_path / "novec.hex").write_text(write_hex(Image([(0x100, app(512, 7))])))
    rc, out, err = run(capsys, "novec.hex", "--emulate", "atmega32u4", "--image", image)
    assert rc == 2 and "novec.hex: image has no data at 0x0, the application's first word" in err
    assert image.read_bytes() == before
    # force does not lift it (common.preflight), through the host API too
    bus = VirtualBus()
    with Emulator(CHIP, "printer") as em:
        em.attach(bus)
        with pytest.raises(ImageRejected, match="first word"):
            host.print_file(tmp_path / "novec.hex", get_backend(bus), chip=CHIP, force=True, progress=False)
        assert em.memory.erase_counters.total == 0


def test_a_uf2_of_another_family_is_refused_unless_forced(tmp_path):
    from bootkit.formats import save

    img = Image([(0, app(512, 8))])
    save(img, tmp_path / "fw.uf2", "uf2", family="rp2040")
    bus = VirtualBus()
    with Emulator(CHIP, "printer") as em:
        em.attach(bus)
        with pytest.raises(ImageRejected, match="UF2 family"):
            host.print_file(tmp_path / "fw.uf2", get_backend(bus), chip=CHIP, progress=False)
        assert em.target.device.functions[0].engine.jobs == 0
        assert host.print_file(tmp_path / "fw.uf2", get_backend(bus), chip=CHIP, force=True,
                               progress=False).verified
        assert em.memory.read(0, 512) == img.tobytes(0)


def test_a_multi_family_uf2_prints_only_the_targets_blocks(tmp_path, capsys, monkeypatch):
    """As a UF2 bootloader does (uf2conv.py, tinyuf2): the chip's blocks of a file for several families."""
    from bootkit.formats import dump

    monkeypatch.chdir(tmp_path)
    image, _ = flash_file(tmp_path)
    ours = Image([(0, app(512, 11))])
    (tmp_path / "multi.uf2").write_bytes(dump(Image([(0x10000000, app(512, 12))]), "uf2", family="rp2040")
                                         + dump(ours, "uf2", family=CHIP.uf2_family))
    rc, out, err = run(capsys, "multi.uf2", "--emulate", "atmega32u4", "--image", image)
    assert rc == 0, err
    assert out.startswith("multi.uf2: printed 512 bytes, verified; ")
    assert image.read_bytes() == ours.tobytes(0, CHIP.flash_size)


# --------------------------------------------------------------------------
# the device's answer


def test_a_good_job_is_verified_and_its_leave_observed(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    image, _ = flash_file(tmp_path)
    fw = Image([(0, app(3000, 9)), (0x1235, app(77, 10))])
    (tmp_path / "fw.hex").write_text(write_hex(fw))
    rc, out, err = run(capsys, "fw.hex", "--emulate", "atmega32u4", "--image", image)
    assert rc == 0, err
    assert out.startswith(f"fw.hex: printed {fw.size} bytes, verified; sent ")
    assert "verified (crc32 of flash read back by the device)" in out
    assert out.rstrip().endswith("left the bootloader (not seen again within 0.2 s)")
    assert image.read_bytes() == fw.tobytes(0, CHIP.flash_size)


def test_a_device_fault_after_the_job_started_is_exit_1_with_the_device_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    image, _ = flash_file(tmp_path)
    real = SimulatedFlash.program

    def worn(self, address, data):
        if address <= 0x800 < address + len(data):
            raise WriteFault("page 0x800 does not take the data (worn out)", 0x800)
        return real(self, address, data)

    monkeypatch.setattr(SimulatedFlash, "program", worn)
    (tmp_path / "fw.hex").write_text(write_hex(Image([(0, app(4096, 11))])))
    rc, out, err = run(capsys, "fw.hex", "--emulate", "atmega32u4", "--image", image)
    assert rc == 1 and out == ""
    assert err.startswith("bootkit: failed: the device stayed in its bootloader: ERROR job 1: record ")
    assert "write error: page 0x800 does not take the data (worn out)" in err
    assert err.rstrip().endswith("port status 0x10 (error)") and err.count("\n") == 1


def test_bootloader_region_data_the_host_could_not_check_is_reported_by_the_device(tmp_path):
    # no chip given (a real printer does not say which chip it is): the device refuses the record
    bus = VirtualBus()
    path = tmp_path / "boot.hex"
    path.write_text(write_hex(Image([(0, app(64, 12)), (0x7000, b"\x00" * 4)])))
    with Emulator(CHIP, "printer") as em:
        em.attach(bus)
        with pytest.raises(HostError) as err:
            host.print_file(path, get_backend(bus), progress=False)
        assert str(err.value) == ("the device stayed in its bootloader: ERROR job 1: record 5 (line 5): data at "
                                  "0x7000 reaches into the bootloader region 0x7000-0x7FFF; port status 0x30 "
                                  "(out of paper)")
        assert not em.memory.app_valid


def test_verified_only_when_the_device_crc_matches(monkeypatch):
    # a unidirectional printer has no status line: nothing to compare, so "not verified"
    bus = VirtualBus()
    with Emulator(CHIP, "printer", options={"protocol": 1}) as em:
        em.attach(bus)
        result = host.flash(Image([(0, app(600, 14))]), get_backend(bus), chip=CHIP, progress=False)
    assert not result.verified
    assert result.steps[1:] == ["port status 0x18 (ok)", "not verified (a unidirectional printer sends no status "
                                "line)", "left the bootloader (not seen again within 0.2 s)"]
    # a CRC that does not match the image's is a failure, not "verified"
    bus = VirtualBus()
    fw = Image([(0, app(1024, 13))])
    with Emulator(CHIP, "printer") as em:
        em.attach(bus)
        real = em.memory.read

        def flaky(address, length):  # one bit of flash reads back wrong
            data = bytearray(real(address, length))
            if address <= 0x100 < address + length:
                data[0x100 - address] ^= 0x04
            return bytes(data)

        monkeypatch.setattr(em.memory, "read", flaky)
        with pytest.raises(HostError, match=r"printer programmed 1024 bytes with crc32 [0-9a-f]{8}, the image "
                                            r"has 1024 bytes with crc32 [0-9a-f]{8}"):
            host.flash(fw, get_backend(bus), chip=CHIP, progress=False)


# --------------------------------------------------------------------------
# what the device does after a good job, as seen on the bus


class _App(Function):
    def interfaces(self, speed="full"):
        return [Interface(0, 0xFF)]


def _rig(after):
    """A printer bootloader whose leave brings up ``after(memory)`` (a Device or None)."""
    mem = SimulatedFlash(CHIP)
    target = Target(bootloader_device(mem, CHIP), lambda sig: after(mem))
    bus = VirtualBus()
    bus.attach(target)
    return mem, get_backend(bus)


def test_an_application_that_enumerates_is_reported_started():
    mem, backend = _rig(lambda mem: Device(DeviceInfo(0x1209, 0xA0A0, 0x0100), [_App()]))
    result = host.flash(Image([(0, app(700, 15))]), backend, chip=CHIP, progress=False)
    assert result.verified and result.steps[-1] == "application started (came back as 1209:A0A0)"


def test_a_bootloader_that_comes_back_is_a_failure():
    mem, backend = _rig(lambda mem: bootloader_device(mem, CHIP))
    with pytest.raises(HostError, match=r"^the device stayed in its bootloader: it came back as the printer "
                                        r"bootloader \(03EB:206B\)$"):
        host.flash(Image([(0, app(700, 16))]), backend, chip=CHIP, progress=False)
    assert mem.app_valid  # the flash itself is good: the host says what it saw


def test_a_bootloader_that_does_not_leave_is_a_failure():
    bus = VirtualBus()
    with Emulator(CHIP, "printer", options={"leave": False}) as em:
        em.attach(bus)
        with pytest.raises(HostError, match=r"^the device stayed in its bootloader: it is still there 0.3 s after "
                                            r"its status said the job was programmed$"):
            host.flash(Image([(0, app(700, 17))]), get_backend(bus), chip=CHIP, progress=False, wait=(0.3, 0.1))


def test_watch_outcomes_on_a_clock():
    from bootkit.classes.usbhost import Arrival, LeaveWatch, Look

    t = [0.0]

    def clock():
        return t[0]

    def sleep(s):
        t[0] += s

    def report(look, wait, again):
        return host._report(LeaveWatch(look, wait=wait, again=again, sleep=sleep, clock=clock), wait)

    seen = iter([Look(True), Look(False), Look(False), Look(False, Arrival(0x1209, 2, False))])
    assert report(lambda: next(seen), 5, 5) == "application started (came back as 1209:0002)"
    assert report(lambda: Look(False), 5, 2) == "left the bootloader (not seen again within 2 s)"
    with pytest.raises(HostError, match="still there 5 s"):
        report(lambda: Look(True), 5, 2)
    back = iter([Look(False), Look(False, Arrival(0x03EB, 0x206B, True))])
    with pytest.raises(HostError, match=r"stayed in its bootloader: it came back as the printer bootloader "
                                        r"\(03EB:206B\)$"):
        report(lambda: next(back), 5, 2)


# --------------------------------------------------------------------------
# usblp's sysfs: what a /dev/usb/lpN printer became


def _sysfs_device(root, name, busnum, devnum, vid, pid, printer=True):
    dev = root / "devices" / name
    dev.mkdir(parents=True)
    for key, value in (("busnum", busnum), ("devnum", devnum), ("idVendor", f"{vid:04x}"),
                       ("idProduct", f"{pid:04x}")):
        (dev / key).write_text(f"{value}\n")
    intf = dev / f"{name}:1.0"
    intf.mkdir()
    (intf / "bInterfaceClass").write_text("07\n" if printer else "ff\n")
    link = root / "bus" / "usb" / "devices" / name
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(dev)
    return dev


def test_sysfs_sees_the_printer_leave_and_an_application_arrive(tmp_path, monkeypatch):
    import shutil

    monkeypatch.setattr(host, "SYSFS", tmp_path)
    dev = _sysfs_device(tmp_path, "1-1", 1, 2, 0x03EB, 0x206B)
    before = set(host._sysfs_devices())
    assert before == {(1, 2)}
    p = host.FilePrinter.__new__(host.FilePrinter)
    p._sysid, p._sysids = (1, 2), (0x03EB, 0x206B)
    t = [0.0]

    def sleep(s):
        t[0] += s
        if t[0] > 0.2 and dev.exists():  # the bootloader leaves ...
            shutil.rmtree(dev)
            (tmp_path / "bus" / "usb" / "devices" / "1-1").unlink()
        elif t[0] > 0.4 and not (tmp_path / "devices" / "1-1b").exists():  # ... its application arrives
            _sysfs_device(tmp_path, "1-1b", 1, 3, 0x2341, 0x8036, printer=False)

    assert p.watch_leave(before, 5, 5, sleep=sleep, clock=lambda: t[0]) == \
        "application started (came back as 2341:8036)"


def test_a_stale_status_left_from_an_earlier_job_is_not_taken_for_this_jobs(tmp_path, monkeypatch):
    """`cat fw.hex > /dev/usb/lp0` leaves its job's line unread (usblp's read-ahead drops part
    of it at close, the rest waits on the way to the host): the next `bootkit print` must judge
    its own job by its own line (seen in the VM test under load)."""
    fw = Image([(0, app(700, 21))])
    (tmp_path / "fw.hex").write_text(write_hex(fw))
    stale = ["he bootloader region 0x1E000-0x1FFFF\n"]
    real = host.UsbPrinter.read_status
    monkeypatch.setattr(host.UsbPrinter, "read_status",
                        lambda self, timeout_ms=1000: stale.pop() if stale else real(self, timeout_ms))
    bus = VirtualBus()
    with Emulator(CHIP, "printer") as em:
        em.attach(bus)
        result = host.print_file(tmp_path / "fw.hex", get_backend(bus), chip=CHIP, progress=False)
        assert result.verified, result.steps
        assert em.memory.read(0, 700) == fw.tobytes(0)
