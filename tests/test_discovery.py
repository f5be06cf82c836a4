"""Finding devices (#21 item 3): `bootkit list`, bootkit.discovery and each personality's finder.

The must-show test serves one emulated device of every personality and dialect on one USB/IP
server (threads in this process) and runs `bootkit list --json --usbip` as its own process.
The finders of what is not on a USB bus (serial ports, mounted UF2 drives, /dev/usb/lp*, MIDI
ports) are driven with fake port entries, fake mount tables and fake /dev and /sys trees.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from bootkit import registry
from bootkit.classes.cdc import finder as cdc_finder
from bootkit.classes.isp import finder as isp_finder
from bootkit.classes.midi import finder as midi_finder
from bootkit.classes.msc import finder as msc_finder
from bootkit.classes.printer import finder as printer_finder
from bootkit.cli import main
from bootkit.contracts import Found, Link
from bootkit.discovery import discover
from bootkit.emulator import Emulator
from bootkit.memory import get_chip
from bootkit.transports.usbip import UsbipServer

# one device of each personality and dialect: (personality, dialect, chip).  MIDI's two dialects
# are one device (the sysex engine takes the one-way file too), which answers IDENTIFY: midi/sysex.
SERVED = [
    ("dfu", "dfu", "stm32f411"), ("dfu", "dfuse", "stm32f411"), ("dfu", "flip", "atmega32u4"),
    ("hid", "halfkay", "atmega32u4"), ("hid", "lufa", "atmega32u4"), ("hid", "native", "atmega32u4"),
    ("hid", "xusb", "atxmega128a4u"),
    ("cdc", "lufa", "atmega32u4"), ("cdc", "caterina", "atmega32u4"), ("cdc", "optiboot", "atmega328p"),
    ("cdc", "wiring", "atmega2560"),
    ("isp", "stk500v2", "atmega328p"), ("isp", "usbasp", "attiny85"),
    ("msc", "uf2", "stm32f411"), ("msc", "bin", "stm32f103c8"), ("msc", "hex", "samd21g18a"),
    ("printer", "lufa", "atmega32u4"),
    ("midi", "sysex", "atmega32u4"),
]
# the chip a listing can name, where the device says it (FLIP's PID, HalfKay's board usage,
# xusb's boot info, a UF2 drive's Board-ID, MIDI's IDENTIFY)
CHIP_SAID = {("dfu", "flip"), ("hid", "halfkay"), ("hid", "xusb"), ("msc", "uf2"), ("msc", "bin"), ("msc", "hex"),
             ("midi", "sysex")}


@pytest.fixture(scope="module")
def every_personality():
    emulators = [Emulator(get_chip(chip), p, options={"dialect": d}) for p, d, chip in SERVED]
    busids = {f"1-{n}": e for n, e in enumerate(emulators, 1)}
    with UsbipServer({b: e.attach() for b, e in busids.items()}, ("127.0.0.1", 0), log=None) as server:
        yield server
    for e in emulators:
        e.close()


def test_list_json_usbip_names_every_personality(every_personality):
    """bootkit list --json --usbip, as its own process, against one device of each personality
    and dialect: each named by personality and dialect, in bus order per personality, with its ids."""
    port = every_personality.port
    run = subprocess.run([sys.executable, "-m", "bootkit", "list", "--json", "--usbip", f"127.0.0.1:{port}"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    listed = json.loads(run.stdout)
    got = sorted((o["personality"], o["dialect"]) for o in listed)
    assert got == sorted((p, d) for p, d, _ in SERVED)
    by_where = {o["where"].split()[2]: o for o in listed}  # "USB/IP 127.0.0.1:PORT 1-3 (03eb:2ff4)"
    for n, (p, d, chip) in enumerate(SERVED, 1):
        o = by_where[f"1-{n}"]
        assert (o["personality"], o["dialect"]) == (p, d)
        assert o["where"].startswith(f"USB/IP 127.0.0.1:{port} 1-{n} (")
        assert o["vid"] is not None and o["pid"] is not None
        if (p, d) in CHIP_SAID:
            assert o["chip"] == chip, o
        else:
            assert o["chip"] is None


def test_list_text_one_line_each(every_personality, capsys):
    assert main(["list", "--usbip", f"127.0.0.1:{every_personality.port}"]) == 0
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert len(lines) == len(SERVED)
    assert any(line.startswith("dfu/flip ") and "chip atmega32u4" in line for line in lines)
    # what a device says of itself follows: xusb-boot's boot info (#19: `bootkit list` shows it)
    assert any(line.startswith("hid/xusb ") and "version=1.0" in line and "page_size=" in line for line in lines)
    assert any(line.startswith("msc/bin ") and "chip stm32f103c8" in line for line in lines)


def test_a_listing_leaves_every_device_free(every_personality, capsys):
    """A listing in this process lets go of every device it opened (a USB/IP server lets one client
    import a device at a time): another process's listing or flash sees them all."""
    from bootkit.transports import usbip, usbip_client

    assert main(["list", "--usbip", f"127.0.0.1:{every_personality.port}"]) == 0
    capsys.readouterr()
    held = [d.path for d in usbip_client.list_devices(port=every_personality.port) if usbip.IMPORTED_BY in d.path]
    assert held == []


def test_found_links_reach_the_device(every_personality):
    """What discover() hands back is enough to talk to the device: the DFU one's link reads its flash."""
    from bootkit.transports import usbip_client

    backend = usbip_client.get_backend(port=every_personality.port)
    found = discover(backend=backend, personality="dfu")
    flip = next(f for f in found if f.dialect == "flip")
    assert flip.link.backend is backend and (flip.link.vid, flip.link.pid) == (0x03EB, 0x2FF4)
    image = registry.personality("dfu").host().read(flip.link, dialect="flip", chip=get_chip("atmega32u4"),
                                                    start=0, length=64)
    assert image.tobytes(0, 64) == b"\xff" * 64


def test_a_failing_finder_is_one_line_and_the_others_still_list(every_personality, capsys, monkeypatch):
    dfu = registry.personality("dfu")

    def broken(backend=None, *, local=True):
        raise OSError("bus on fire\nsecond line")

    monkeypatch.setattr(dfu, "find_devices", broken)
    assert main(["list", "--usbip", f"127.0.0.1:{every_personality.port}"]) == 0
    out = capsys.readouterr()
    assert out.err == "dfu: cannot look for devices: bus on fire second line\n"
    lines = out.out.splitlines()
    assert len(lines) == len(SERVED) - 3 and not any(line.startswith("dfu/") for line in lines)


def test_nothing_found_says_so(capsys):
    with UsbipServer([], ("127.0.0.1", 0), log=None) as server:
        assert main(["list", "--usbip", f"127.0.0.1:{server.port}"]) == 0
        assert capsys.readouterr().out == f"no bootloader found on the USB/IP server 127.0.0.1:{server.port}\n"
        assert main(["list", "--json", "--usbip", f"127.0.0.1:{server.port}"]) == 0
        assert json.loads(capsys.readouterr().out) == []


def test_list_loads_no_host_side_for_nothing():
    """A listing that finds nothing imports no personality's host side, no memory core, no format."""
    with UsbipServer([], ("127.0.0.1", 0), log=None) as server:
        run = subprocess.run([sys.executable, "-X", "importtime", "-m", "bootkit", "list", "--usbip",
                              f"127.0.0.1:{server.port}"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-500:]
    names = {line.rsplit("|", 1)[1].strip() for line in run.stderr.splitlines()
             if line.startswith("import time:") and "self [us]" not in line}
    heavy = sorted(n for n in names if n.startswith(("bootkit.memory", "bootkit.formats", "bootkit.isp"))
                   or (n.startswith("bootkit.classes.") and n.endswith(".host")))
    assert heavy == []
    assert {"bootkit.classes.dfu.finder", "bootkit.classes.msc.finder", "bootkit.classes.midi.finder"} <= names


def test_usbip_server_not_there_is_exit_1_and_bad_address_exit_2(capsys):
    import socket

    with socket.socket() as s:  # a port nobody listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        assert main(["list", "--usbip", f"127.0.0.1:{port}"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--usbip 127.0.0.1:{port}: cannot list the USB/IP server's devices" in err
    assert main(["list", "--usbip", "127.0.0.1:notaport"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "port 'notaport'" in err


# --------------------------------------------------------------------------
# CDC and ISP: serial ports by VID:PID (fake list_ports entries)

def _port(device, vid=None, pid=None, serial=None, description="n/a"):
    return SimpleNamespace(device=device, vid=vid, pid=pid, serial_number=serial, description=description)


FAKE_PORTS = [
    _port("/dev/ttyS0"),  # not USB
    _port("/dev/ttyACM0", 0x03EB, 0x204A, "LUFA1", "LUFA CDC"),
    _port("/dev/ttyACM1", 0x2341, 0x8036, "HIDPC", "Arduino Leonardo"),  # a sketch: touch at 1200 baud
    _port("/dev/ttyACM2", 0x2341, 0x0036),  # Caterina itself
    _port("/dev/ttyACM3", 0x2341, 0x0043, "85739313"),  # an Uno's bridge
    _port("/dev/ttyACM4", 0x2A03, 0x0042),  # a Genuino Mega's bridge
    _port("/dev/ttyUSB0", 0x1A86, 0x7523, None, "USB2.0-Serial"),  # a CH340: could be anything
    _port("/dev/ttyACM5", 0x1209, 0xB011, "ISP1"),  # bootkit's STK500 v2 programmer
]


def test_cdc_ports_by_vid_pid():
    found = cdc_finder.find(None, comports=lambda: FAKE_PORTS)
    assert [(f.link.port, f.dialect, f.details["mode"]) for f in found] == [
        ("/dev/ttyACM0", "lufa", "bootloader"), ("/dev/ttyACM1", "caterina", "application"),
        ("/dev/ttyACM2", "caterina", "bootloader"), ("/dev/ttyACM3", "optiboot", "bridge"),
        ("/dev/ttyACM4", "wiring", "bridge")]
    first = found[0]
    assert first.personality == "cdc" and first.where == "/dev/ttyACM0 (03eb:204a)"
    assert (first.vid, first.pid, first.serial) == (0x03EB, 0x204A, "LUFA1")
    assert first.details["description"] == "LUFA CDC"
    assert found[3].to_json()["port"] == "/dev/ttyACM3" and found[3].serial == "85739313"
    assert "description" not in found[2].details  # pyserial's "n/a" is no description


def test_cdc_finder_knows_the_bridges_and_our_ids():
    from bootkit.classes.cdc import BRIDGE_IDS, IDS

    for dialect, ids in BRIDGE_IDS.items():
        assert cdc_finder.PORT_IDS[ids] == (dialect, "bridge")
    for dialect, (boot, app) in IDS.items():
        assert cdc_finder.PORT_IDS[boot] == (dialect, "bootloader")


def test_isp_programmer_port():
    found = isp_finder.find(None, comports=lambda: FAKE_PORTS)
    assert [(f.name, f.where) for f in found] == [("isp/stk500v2", "/dev/ttyACM5 (1209:b011)")]


def test_isp_usbasp_ids_match_the_link():
    from bootkit.classes.isp.protocol import BOOTKIT_ISP_PID, BOOTKIT_VID
    from bootkit.isp.usbasp import USBASP_PID, USBASP_VID

    assert (isp_finder.USBASP_VID, isp_finder.USBASP_PID) == (USBASP_VID, USBASP_PID)
    assert (isp_finder.BOOTKIT_VID, isp_finder.BOOTKIT_ISP_PID) == (BOOTKIT_VID, BOOTKIT_ISP_PID)


# --------------------------------------------------------------------------
# UF2 drives: fake mount tables

def _drive(root: Path, name: str, info: str | None) -> Path:
    d = root / name
    d.mkdir()
    if info is not None:
        (d / "INFO_UF2.TXT").write_bytes(info.replace("\n", "\r\n").encode("ascii"))
    return d


def test_uf2_drives_from_a_mount_table(tmp_path):
    pico = _drive(tmp_path, "RPI RP2", "UF2 Bootloader v3.0\nModel: Raspberry Pi RP2\nBoard-ID: RPI-RP2\n")
    ours = _drive(tmp_path, "STM32F103", "UF2 Bootloader bootkit-0.1\nModel: stm32f103c8 UF2 bootloader\n"
                                         "Board-ID: stm32f103c8-bootkit\nFamily-ID: 0x5EE21072\nAccepts: UF2, BIN\n")
    feather = _drive(tmp_path, "FEATHERBOOT", "UF2 Bootloader v3.6.0 SFHWRO\nModel: Adafruit Feather M0\n"
                                              "Board-ID: SAMD21G18A-Feather-v0\n")
    plain = _drive(tmp_path, "USBSTICK", None)  # a FAT stick: no INFO_UF2.TXT
    not_fat = _drive(tmp_path, "home", "UF2 Bootloader v1\n")  # ext4: not looked into
    escaped = str(pico).replace(" ", "\\040")  # /proc/self/mounts escapes a space as \040
    table = "\n".join([
        "proc /proc proc rw,nosuid 0 0",
        f"/dev/sdb1 {escaped} vfat rw,nosuid,uid=1000 0 0",
        f"/dev/sdc1 {ours} vfat rw 0 0",
        f"/dev/sdd1 {feather} msdos rw 0 0",
        f"/dev/sde1 {plain} vfat rw 0 0",
        f"/dev/sda2 {not_fat} ext4 rw 0 0",
        f"/dev/sdf1 {tmp_path / 'gone'} vfat rw 0 0",  # unplugged since: no such folder
    ])
    found = msc_finder.mounted_drives(mounts=table)
    assert [(f.link.path, f.dialect, f.chip) for f in found] == [
        (str(pico), "uf2", "rp2040"), (str(ours), "bin", "stm32f103c8"), (str(feather), "uf2", "samd21g18a")]
    assert found[0].where == f"{pico} (UF2 drive)" and found[0].personality == "msc"
    assert found[0].details["Board-ID"] == "RPI-RP2" and found[0].details["version"] == "UF2 Bootloader v3.0"


def test_uf2_drives_in_macos_volumes(tmp_path):
    _drive(tmp_path, "Macintosh HD", None)
    _drive(tmp_path, "CURRENT", "UF2 Bootloader bootkit-0.1\nBoard-ID: nrf52833-bootkit\nAccepts: UF2, HEX\n")
    found = msc_finder.mounted_drives(volumes=tmp_path)
    assert [(f.name, f.chip) for f in found] == [("msc/hex", "nrf52833")]


# --------------------------------------------------------------------------
# printers: fake /dev/usb and /sys trees

def _usblp(root: Path, name: str, ids: tuple[int, int] | None) -> None:
    """/dev/usb/<name>, and usblp's /sys/class/usbmisc/<name>/device -> the interface under its device."""
    (root / "dev" / "usb").mkdir(parents=True, exist_ok=True)
    (root / "dev" / "usb" / name).write_bytes(b"")
    if ids is None:
        return
    device = root / "sys" / "devices" / f"usb-{name}"
    (device / "1-1:1.0").mkdir(parents=True)
    (device / "idVendor").write_text(f"{ids[0]:04x}\n")
    (device / "idProduct").write_text(f"{ids[1]:04x}\n")
    misc = root / "sys" / "class" / "usbmisc" / name
    misc.mkdir(parents=True)
    (misc / "device").symlink_to(device / "1-1:1.0")


def test_printers_by_1284_id_and_usb_ids(tmp_path):
    _usblp(tmp_path, "lp0", (0x04B8, 0x0005))  # an Epson printer: left out
    _usblp(tmp_path, "lp1", (0x03EB, 0x206B))  # LUFA's printer bootloader, busy (CUPS holds it)
    _usblp(tmp_path, "lp2", (0x1209, 0x7777))  # a product's own ids, LUFA's default 1284 ID
    _usblp(tmp_path, "lp10", None)  # no sysfs entry (not usblp) and no ID: left out
    ids = {"lp0": "MFG:EPSON;CMD:ESCPL2;MDL:Stylus;CLS:PRINTER;",
           "lp2": "MFG:Generic;MDL:Generic_/_Text_Only;CMD:1284.4;CLS:PRINTER;"}

    def read_id(path: str) -> str | None:
        name = os.path.basename(path)
        if name == "lp1":
            raise OSError(errno.EBUSY, "Device or resource busy")
        return ids.get(name)

    found = printer_finder.device_nodes(tmp_path / "dev" / "usb", sysfs=tmp_path / "sys", read_id=read_id)
    lp = str(tmp_path / "dev" / "usb")
    assert [(f.link.path, f.name, f.where) for f in found] == [
        (f"{lp}/lp1", "printer/lufa", f"{lp}/lp1 (03eb:206b)"),
        (f"{lp}/lp2", "printer/lufa", f"{lp}/lp2 (1209:7777)")]
    assert found[0].details == {"note": "device ID unreadable: Device or resource busy"}
    assert found[1].details["device_id"].startswith("MFG:Generic;MDL:Generic_/_Text_Only;")


def test_printer_ioctl_on_a_plain_file_is_no_id(tmp_path):
    # drivers/usb/class/usblp.c: LPIOC_GET_DEVICE_ID(len) = _IOC(_IOC_READ, 'P', IOCNR_GET_DEVICE_ID=1, len)
    from bootkit.classes.printer.protocol import LPIOC_GET_DEVICE_ID

    assert LPIOC_GET_DEVICE_ID(1024) == 0x84005001
    f = tmp_path / "lp0"
    f.write_bytes(b"")
    assert printer_finder.ioctl_device_id(str(f)) is None  # ENOTTY: not a usblp node


# --------------------------------------------------------------------------
# MIDI ports by name

def test_midi_ports_by_name():
    names = ["Midi Through:Midi Through Port-0 14:0", "atmega32u4 MIDI bootloader:atmega32u4 MIDI bootloader "
             "MIDI 1 20:0", "Launchpad:Launchpad MIDI 1 24:0"]
    found = midi_finder.on_ports(lambda: names)
    assert [(f.name, f.link.port, f.chip) for f in found] == [("midi", names[1], "atmega32u4")]
    assert found[0].where == f"MIDI port {names[1]!r}"
    assert midi_finder.on_ports(lambda: None) == []  # no python-rtmidi: no ports, no error


# --------------------------------------------------------------------------
# the contract

def test_found_json_and_default_find_devices():
    f = Found("cdc", "lufa", Link(port="/dev/ttyACM0"), "/dev/ttyACM0 (03eb:204a)", vid=0x03EB, pid=0x204A,
              details={"mode": "bootloader"})
    assert f.to_json() == {"personality": "cdc", "dialect": "lufa", "where": "/dev/ttyACM0 (03eb:204a)",
                           "vid": "03eb", "pid": "204a", "serial": None, "chip": None, "port": "/dev/ttyACM0",
                           "path": None, "details": {"mode": "bootloader"}}
    assert Found("midi", None, Link(), "x").name == "midi"

    from bootkit.contracts import Personality

    class Plugin(Personality):
        name, dialects, options = "plugin", ("one",), {}

        def default_dialect(self, chip):
            return "one"

        def bootloader_device(self, memory, chip, dialect, options):
            raise NotImplementedError

        def host(self):
            raise NotImplementedError

    assert Plugin().find_devices(object()) == []


def test_every_builtin_personality_finds_its_own():
    """Each built-in overrides the default (which finds nothing)."""
    from bootkit.contracts import Personality

    for p in registry.personalities():
        assert type(p).find_devices is not Personality.find_devices, p.name


# --------------------------------------------------------------------------
# bootkit chips: a plain table (#22 item 3: rich's Table was most of its start-up)

def test_chips_is_a_plain_aligned_table_without_rich():
    run = subprocess.run([sys.executable, "-X", "importtime", "-m", "bootkit", "chips", "--family", "avr"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-500:]
    imported = {line.rsplit("|", 1)[1].strip().split(".")[0] for line in run.stderr.splitlines()
                if line.startswith("import time:") and "self [us]" not in line}
    assert "rich" not in imported
    lines = run.stdout.splitlines()
    assert lines[0].split() == ["chip", "family", "flash", "page", "EEPROM", "bootloader", "region", "signature",
                                "UF2", "family", "USB"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    row = next(line for line in lines if line.startswith("atmega32u4 "))
    assert row.split() == ["atmega32u4", "avr", "32K@0x0", "128", "1024", "0x7000-0x7FFF", "1e9587", "0x16573617", "yes"]
    # every column starts where its header does
    for name in ("family", "flash", "EEPROM", "bootloader region", "signature", "USB"):
        at = lines[0].index(name)
        assert row[at - 2:at] == "  " and row[at] != " ", name
