"""`bootkit drop FILE` with no --drive (#21 item 5): the one mounted UF2 drive, found by its
INFO_UF2.TXT in the mount table (as uf2conv.py finds drives), its chip from the Board-ID or
family so a file is converted and checked without --chip, several drives listed (exit 2),
none one line (exit 1), a bar while the drive is awaited; `drop` and `print` over USB/IP."""

from __future__ import annotations

import functools
import struct
import threading
import time
from pathlib import Path

import pytest

from bootkit import progress
from bootkit.classes.msc import finder
from bootkit.classes.msc import host as msc_host
from bootkit.cli import main
from bootkit.formats import dump, write_hex
from bootkit.formats.image import Image
from bootkit.formats.uf2 import FAMILIES, UF2_BLOCK_SIZE
from bootkit.memory import get_chip

# How long the fake board may take to notice the copy and leave: it only stops a hung test.
BOARD_LIMIT = 120.0

RP2 = "UF2 Bootloader v3.0\r\nModel: Raspberry Pi RP2\r\nBoard-ID: RPI-RP2\r\n"
FEATHER = "UF2 Bootloader v3.15.0 SFHWRO\r\nModel: Adafruit Feather M0\r\nBoard-ID: SAMD21G18A-Feather-v0\r\n"


def _drive(root: Path, name: str, info: str) -> Path:
    point = root / name
    point.mkdir()
    (point / "INFO_UF2.TXT").write_text(info)
    return point


def _mount_table(monkeypatch, *entries: tuple[Path, str]) -> None:
    """A fake /proc/self/mounts: (mount point, file system type) lines the finder reads."""
    text = "".join(f"/dev/sd{chr(97 + i)}1 {str(p).replace(' ', chr(92) + '040')} {fs} rw,nosuid 0 0\n"
                   for i, (p, fs) in enumerate(entries))
    text = "sysfs /sys sysfs rw 0 0\n/dev/nvme0n1p2 / ext4 rw 0 0\n" + text
    monkeypatch.setattr(finder, "mounted_drives", functools.partial(finder.mounted_drives, mounts=text))


class Board:
    """A fake board behind a drive: once FIRMWARE.UF2 holds ``size`` bytes it waits ``linger`` s,
    then resets: its drive goes away (INFO_UF2.TXT disappears, as the volume unmounts)."""

    def __init__(self, point: Path, size: int, linger: float = 0.0):
        self.point, self.size, self.linger = point, size, linger
        self.got = b""
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        deadline = time.monotonic() + BOARD_LIMIT
        target = self.point / "FIRMWARE.UF2"
        while time.monotonic() < deadline:
            if target.exists() and target.stat().st_size >= self.size:
                self.got = target.read_bytes()
                time.sleep(self.linger)
                (self.point / "INFO_UF2.TXT").unlink()
                return
            time.sleep(0.01)

    def join(self) -> None:
        self.thread.join(BOARD_LIMIT)


def _blocks(raw: bytes) -> list[tuple[int, int, int]]:
    """(flags, targetAddr, familyID) of every UF2 block."""
    out = []
    for off in range(0, len(raw), UF2_BLOCK_SIZE):
        flags, target, _size, _no, _n, family = struct.unpack_from("<6I", raw, off + 8)
        out.append((flags, target, family))
    return out


@pytest.fixture(autouse=True)
def _quick_again(monkeypatch):
    # after the drive left, how long a real board gets to come back as its application (5 s):
    # the fake board never does, so the outcome is "left the bootloader" either way
    monkeypatch.setattr(msc_host, "AGAIN", 0.2)


def test_drop_finds_the_one_mounted_drive_and_its_chip(tmp_path, monkeypatch, capsys):
    point = _drive(tmp_path, "RPI RP2", RP2)  # a space in the mount point: \040 in the table
    other = _drive(tmp_path, "backup", RP2)  # not a FAT volume: not a UF2 drive
    _mount_table(monkeypatch, (point, "vfat"), (other, "ext4"))
    fw = tmp_path / "fw.bin"
    fw.write_bytes(bytes(range(256)) * 12)
    board = Board(point, 12 * UF2_BLOCK_SIZE)
    assert main(["drop", str(fw), "--no-progress"]) == 0
    board.join()
    out = capsys.readouterr().out
    assert f"{point}: the mounted UF2 drive, chip rp2040 from its INFO_UF2.TXT (Board-ID RPI-RP2)" in out
    assert "left the bootloader" in out
    # no --chip, no --address: the .bin went to the rp2040's application start, as rp2040 UF2 blocks
    start = get_chip("rp2040").application_ranges[0][0]
    assert _blocks(board.got) == [(0x2000, start + 256 * i, FAMILIES["rp2040"]) for i in range(12)]
    assert not (other / "FIRMWARE.UF2").exists()


def test_drop_checks_the_file_against_the_drives_chip_without_chip(tmp_path, monkeypatch, capsys):
    point = _drive(tmp_path, "FEATHERBOOT", FEATHER)
    _mount_table(monkeypatch, (point, "vfat"))
    fw = tmp_path / "fw.bin"
    fw.write_bytes(b"\x00\x20\x00\x20" + bytes(1020))
    board = Board(point, 4 * UF2_BLOCK_SIZE)
    assert main(["drop", str(fw), "--no-progress"]) == 0
    board.join()
    assert _blocks(board.got) == [(0x2000, 0x2000 + 256 * i, FAMILIES["samd21"]) for i in range(4)]
    # a HEX reaching into the SAMD21's 8 KiB bootloader is refused before a byte is written
    (point / "FIRMWARE.UF2").unlink()
    (point / "INFO_UF2.TXT").write_text(FEATHER)
    bad = tmp_path / "boot.hex"
    bad.write_text(write_hex(Image([(0x100, bytes(64))])))
    assert main(["drop", str(bad), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bootkit: error: ") and "samd21g18a" in err[0], err
    assert not (point / "FIRMWARE.UF2").exists()


def test_a_uf2_of_another_family_is_judged_by_the_drives_family_id(tmp_path, monkeypatch, capsys):
    """The chip is only inferred from INFO_UF2.TXT: the refusal names what the drive says, as the
    board's own bootloader would judge the file (and as the VM test sees it on a real mount)."""
    point = _drive(tmp_path, "RPI-RP2", RP2 + "Family-ID: 0xe48bff56\r\n")
    _mount_table(monkeypatch, (point, "vfat"))
    fw = tmp_path / "f4.uf2"
    fw.write_bytes(dump(Image([(0x10000000, bytes(range(256)) * 16)]), "uf2", family="stm32f4"))
    assert main(["drop", str(fw), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"bootkit: error: {fw}: UF2 family stm32f4 (0x57755a57) does not match the drive's Family-ID "
                   "rp2040 (0xe48bff56); --force drops it anyway"], err
    assert sorted(p.name for p in point.iterdir()) == ["INFO_UF2.TXT"]


def test_several_mounted_drives_are_listed_exit_2(tmp_path, monkeypatch, capsys):
    a = _drive(tmp_path, "RPI-RP2", RP2)
    b = _drive(tmp_path, "FEATHERBOOT", FEATHER)
    _mount_table(monkeypatch, (a, "vfat"), (b, "msdos"))
    fw = tmp_path / "fw.uf2"
    fw.write_bytes(b"")
    assert main(["drop", str(tmp_path / "fw.uf2")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"bootkit: error: 2 UF2 drives are mounted: {a} (RPI-RP2), {b} (SAMD21G18A-Feather-v0); "
                   "choose one with --drive MOUNTPOINT"], err
    assert not list(a.glob("FIRMWARE*")) and not list(b.glob("FIRMWARE*"))


def test_no_mounted_drive_is_one_line_exit_1(tmp_path, monkeypatch, capsys):
    usb_stick = tmp_path / "STICK"
    usb_stick.mkdir()  # a FAT volume without INFO_UF2.TXT is not a UF2 drive
    _mount_table(monkeypatch, (usb_stick, "vfat"))
    fw = tmp_path / "fw.hex"
    fw.write_text(":0400000001020304F2\n:00000001FF\n")
    assert main(["drop", str(fw)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["bootkit: failed: no mounted UF2 drive (a FAT volume with an INFO_UF2.TXT): put the board in "
                   "its bootloader, or give --drive MOUNTPOINT, --device VID:PID or --usbip HOST[:PORT]"], err


def test_the_wait_for_the_drive_to_leave_shows_progress(tmp_path, monkeypatch, capsys):
    """The copy, then the wait (up to 15 s on a real board) each say something in a log."""
    point = _drive(tmp_path, "RPI-RP2", RP2)
    _mount_table(monkeypatch, (point, "vfat"))
    fw = tmp_path / "fw.bin"
    fw.write_bytes(bytes(1024))
    # stderr as a log file would be (plain lines), and a line at every tick of the wait
    monkeypatch.setattr(progress, "interactive", lambda: False)
    monkeypatch.setattr(progress, "logging_to_file", lambda: True)
    monkeypatch.setattr(progress, "PLAIN_INTERVAL", 0.0)
    # the board lingers past the first whole second of the wait, so the bar ticks at least once
    board = Board(point, 4 * UF2_BLOCK_SIZE, linger=1.5)
    assert main(["drop", str(fw)]) == 0
    board.join()
    err = capsys.readouterr().err.splitlines()
    waiting = f"waiting for {point} to leave"
    copying = [line for line in err if line.startswith("copying FIRMWARE.UF2: ")]
    assert copying[-1].startswith(f"copying FIRMWARE.UF2: {4 * UF2_BLOCK_SIZE} bytes in "), err
    ticks = [line for line in err if line.startswith(f"{waiting}: ") and " of 15 s (" in line]
    assert ticks and ticks[0].startswith(f"{waiting}: 1 of 15 s ("), err
    assert err[-1].startswith(f"{waiting}: done in "), err
    assert err.index(copying[-1]) < err.index(ticks[0])


@pytest.fixture
def usbip_server():
    from bootkit.transports.usbip import UsbipServer

    running = []

    def start(targets):
        server = UsbipServer(targets, ("127.0.0.1", 0), log=None).start()
        running.append(server)
        return server

    yield start
    for server in running:
        server.close()


def test_drop_over_usbip_takes_the_chip_from_the_drive(tmp_path, usbip_server, capsys, monkeypatch):
    from bootkit.emulator import Emulator

    monkeypatch.setattr(progress, "interactive", lambda: False)  # stderr as a log: plain lines
    monkeypatch.setattr(progress, "logging_to_file", lambda: True)

    chip = get_chip("rp2040")
    start = chip.application_ranges[0][0]
    data = bytes((i * 7) & 0xFF for i in range(3000))
    (tmp_path / "fw.bin").write_bytes(data)
    with Emulator(chip, "msc", image=str(tmp_path / "flash.bin")) as em:
        server = usbip_server([em.target])
        assert main(["drop", str(tmp_path / "fw.bin"), "--usbip", f"127.0.0.1:{server.port}"]) == 0
        out, err = capsys.readouterr()
        assert "chip rp2040 from the drive's INFO_UF2.TXT" in out and "CURRENT.UF2 read back" in out, out
        # the copy through SCSI, then the wait for the drive to leave, each end with a line
        lines = err.splitlines()
        assert lines[0].startswith("copying FIRMWARE.UF2: 6144 bytes in "), lines
        assert lines[-1].startswith("waiting for the drive to leave: done in "), lines
        assert em.memory.read(start, len(data)) == data


def test_print_over_usbip(tmp_path, usbip_server, capsys):
    from bootkit.emulator import Emulator

    hex_file = Path(__file__).resolve().parents[2] / "examples" / "firmware" / "sample-atmega32u4.hex"
    with Emulator(get_chip("atmega32u4"), "printer", image=str(tmp_path / "flash.bin")) as em:
        server = usbip_server([em.target])
        assert main(["print", str(hex_file), "--usbip", f"127.0.0.1:{server.port}", "--no-progress"]) == 0
        out = capsys.readouterr().out
        assert ": printed 9520 bytes, verified;" in out, out
        assert em.memory.app_valid


@pytest.mark.parametrize("argv", [
    ["drop", "{fw}", "--emulate", "rp2040", "--image", "{flash}"],
    ["print", "{hex}", "--emulate", "atmega32u4", "--image", "{flash}"],
], ids=["drop", "print"])
@pytest.mark.parametrize("where", ["after", "before"])
def test_quiet_drop_and_print_say_nothing_but_work(tmp_path, argv, where):
    """-q (W2b's global flag, also after the command): no progress line and no result line; a
    plain run with stderr as a log file prints both (so the silence is -q's)."""
    import subprocess
    import sys

    fw = tmp_path / "fw.bin"
    fw.write_bytes(bytes(range(256)) * 4)
    hex_file = Path(__file__).resolve().parents[2] / "examples" / "firmware" / "sample-atmega32u4.hex"
    args = [a.format(fw=fw, hex=hex_file, flash=tmp_path / "flash.bin") for a in argv]

    def run(*extra_before, extra_after=()):
        with open(tmp_path / "log", "w") as log:
            proc = subprocess.run([sys.executable, "-m", "bootkit", *extra_before, *args, *extra_after],
                                  stdout=subprocess.PIPE, stderr=log, text=True, cwd=tmp_path, timeout=BOARD_LIMIT)
        return proc.returncode, proc.stdout, (tmp_path / "log").read_text()

    code, out, err = run()
    assert code == 0 and out and err, (out, err)
    code, out, err = run(extra_after=["-q"]) if where == "after" else run("-q")
    assert (code, out, err) == (0, "", "")
