"""Issue 16 for the mass-storage personality: every reported success is observed.

- "verified" only after CURRENT.UF2 was read back equal (all blocks but the
  last before the last is sent, then the last one's data); wrong data read
  back is exit 1;
- a UF2 file is checked against the drive's family (the chip's, or what
  INFO_UF2.TXT says) before anything is written, and goes as its own blocks;
- what happens after the copy is reported as seen: "application started
  (came back as VVVV:PPPP)", "left the bootloader (not seen again within N
  s)", or "the device stayed in its bootloader: <why>".
"""

from __future__ import annotations

import random
import struct
import threading

import pytest

from bootkit.classes import msc
from bootkit.classes.common import HostError, ImageRejected
from bootkit.classes.msc import drive, host, plan
from bootkit.classes.msc.scsi import ScsiDisk
from bootkit.classes.msc.ghostfat import GhostFat
from bootkit.cli import main
from bootkit.emulator import Emulator
from bootkit.formats import Image, load, write_hex, write_uf2
from bootkit.formats.uf2 import FAMILIES, UF2Block, is_uf2_block
from bootkit.memory import SimulatedFlash, get_chip
from bootkit.transports.virtual import VirtualBus, get_backend
from bootkit.usb.descriptors import DeviceInfo, Interface
from bootkit.usb.device import Device, Function, Target

F411 = get_chip("stm32f411")
F103 = get_chip("stm32f103c8")
RP2040 = get_chip("rp2040")
NRF = get_chip("nrf52840")
M32U4 = get_chip("atmega32u4")


def rand(n: int, seed) -> bytes:
    rng = random.Random(f"msc-outcomes:{seed}")
    return bytes(rng.getrandbits(8) for _ in range(n))


def app_start(chip) -> int:
    return chip.layout().application_ranges("flash")[0][0]


def emulated(chip, **options):
    options.setdefault("leave_delay", 0.3)
    bus = VirtualBus()
    em = Emulator(chip, "msc", options=options)
    em.attach(bus)
    return em, get_backend(bus)


def uf2_file(tmp_path, name, image, family, **kw):
    path = tmp_path / name
    path.write_bytes(write_uf2(image, family=family, **kw))
    return path


def holds(memory, image) -> bool:
    return all(memory.read(s, len(d)) == d for s, d in image.segments)


def untouched(volume) -> bool:
    return not volume.meta and not volume.data and not volume.uf2


# --------------------------------------------------------------------------
# item 2: verified only after a read-back that can fail


def generated(chip) -> Image:
    """Gaps, odd lengths, segment starts off any 256-byte block or page, above 64 KiB."""
    a, end = chip.layout().application_ranges("flash")[0]
    far = 0x10000 if end - a > 0x20000 else 0x4000
    return Image([(a, rand(1001, chip.name + "a")), (a + 0x1203, rand(77, chip.name + "b")),
                  (a + far + 0x35, rand(4099, chip.name + "c")), (a + 2 * far - 1, rand(3, chip.name + "d"))])


@pytest.mark.parametrize("chip", [F411, RP2040, NRF], ids=lambda c: c.name)
def test_generated_images_are_read_back_byte_for_byte(chip):
    image = generated(chip)
    em, backend = emulated(chip)
    with em:
        result = host.flash(image, backend, chip=chip, progress=False)
        assert holds(em.memory, image) and em.memory.app_valid
    assert result.verified
    assert result.steps[-2:] == [f"CURRENT.UF2 read back: {image.size} bytes match",
                                 "left the bootloader (not seen again within 0.3 s)"]


def test_the_last_block_is_sent_only_after_the_others_read_back(monkeypatch):
    """The drive completes (and leaves) on its last block: everything else is read back before."""
    image = generated(F411)
    em, backend = emulated(F411)
    order = []
    real_write, real_read = ScsiDisk.write, ScsiDisk.read
    volume = em.target.device.functions[0].volume
    current = volume.cluster_lba(volume.current.first_cluster)

    def write(self, lba, data):
        order.append(("write", lba, em.memory.app_valid))
        return real_write(self, lba, data)

    def read(self, lba, count):
        if lba >= current and not em.memory.app_valid and any(o[0] == "write" for o in order):
            order.append(("read back", lba, em.memory.app_valid))
        return real_read(self, lba, count)

    monkeypatch.setattr(ScsiDisk, "write", write)
    monkeypatch.setattr(ScsiDisk, "read", read)
    with em:
        assert host.flash(image, backend, chip=F411, progress=False).verified
    kinds = [o[0] for o in order]
    last_write = len(kinds) - 1 - kinds[::-1].index("write")
    assert "read back" in kinds[:last_write]  # read back while the update was not complete
    assert not any(valid for _, _, valid in order[:last_write])


@pytest.mark.parametrize("where", ["an early block", "the last block"])
def test_wrong_data_read_back_is_exit_1(tmp_path, capsys, monkeypatch, where):
    """The drive hands back other data in CURRENT.UF2 than it was given: the drop fails."""
    image = generated(F411)
    uf2_file(tmp_path, "fw.uf2", image, F411.uf2_family)
    bad = image.start + 5 if where == "an early block" else image.end - 1
    real = GhostFat.current_block

    def flaky(self, block_no):
        raw = bytearray(real(self, block_no))
        target, size = struct.unpack_from("<II", raw, 12)
        if target <= bad < target + size:
            raw[32 + bad - target] ^= 0x10
        return bytes(raw)

    monkeypatch.setattr(GhostFat, "current_block", flaky)
    monkeypatch.chdir(tmp_path)
    rc = main(["drop", "fw.uf2", "--emulate", "stm32f411", "--image", "flash.bin", "--no-progress"])
    out, err = capsys.readouterr()
    assert rc == 1, out + err
    want = image.tobytes(bad, bad + 1)[0]
    assert err.strip() == (f"bootkit: failed: verify failed: CURRENT.UF2 reads 0x{want ^ 0x10:02X} at 0x{bad:X} "
                           f"where the file has 0x{want:02X} (1 byte(s) differ)"), err


def test_cli_drop_says_what_was_read_back_and_seen(tmp_path, capsys, monkeypatch):
    image = generated(RP2040)
    sent = load(uf2_file(tmp_path, "fw.uf2", image, RP2040.uf2_family))  # whole 256-byte blocks, 0xFF filled
    monkeypatch.chdir(tmp_path)
    rc = main(["drop", "fw.uf2", "--emulate", "rp2040", "--image", "flash.bin", "--no-progress"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert out.rstrip().endswith(f"CURRENT.UF2 read back: {sent.size} bytes match, "
                                 f"left the bootloader (not seen again within 0.3 s)"), out
    flash = (tmp_path / "flash.bin").read_bytes()
    assert all(flash[s - RP2040.flash_start:s - RP2040.flash_start + len(d)] == d for s, d in image.segments)


# --------------------------------------------------------------------------
# item 5: UF2 families on the host paths


def test_a_uf2_of_another_family_is_refused_before_writing(tmp_path):
    """`convert x.bin x.uf2 --family rp2040; drop x.uf2` onto an atmega32u4 used to go through,
    re-encoded with the drive's family."""
    image = Image([(0, b"\x0c\x94" + rand(3000, 1))])
    path = uf2_file(tmp_path, "x.uf2", image, "rp2040")
    em, backend = emulated(M32U4)
    with em:
        volume = em.target.device.functions[0].volume
        with pytest.raises(ImageRejected, match=r"UF2 family rp2040 \(0xe48bff56\) does not match atmega32u4 "
                                                r"\(0x16573617\)"):
            host.flash(load(path), backend, chip=M32U4, progress=False)
        assert untouched(volume) and not em.memory.app_valid


@pytest.mark.parametrize("families", [(None,), ("stm32f4", "rp2040")], ids=["family-less", "mixed"])
def test_family_less_and_mixed_uf2_are_refused_without_force(tmp_path, families):
    a = app_start(F411)
    raw = b"".join(write_uf2(Image([(a + i * 0x1000, rand(600, i))]), family=f) for i, f in enumerate(families))
    path = tmp_path / "odd.uf2"
    path.write_bytes(raw)
    em, backend = emulated(F411)
    with em:
        volume = em.target.device.functions[0].volume
        with pytest.raises(ImageRejected, match="does not match stm32f411"):
            host.flash(load(path), backend, chip=F411, progress=False)
        assert untouched(volume)


def test_without_a_chip_the_drive_family_from_info_uf2_decides(tmp_path):
    image = Image([(app_start(F411) + 0x400, rand(2000, 2))])
    path = uf2_file(tmp_path, "x.uf2", image, "rp2040")  # at the drive's addresses, another family's tag
    em, backend = emulated(F411)
    with em:
        volume = em.target.device.functions[0].volume
        with pytest.raises(ImageRejected, match=r"^UF2 family rp2040 \(0xe48bff56\) does not match the drive's "
                                                r"Family-ID stm32f4 \(0x57755a57\); --force drops it anyway$"):
            host.flash(load(path), backend, progress=False)
        assert untouched(volume) and not em.memory.app_valid


@pytest.mark.parametrize("text, family", [
    ("TinyUF2 Bootloader 0.18.1\r\nModel: Adafruit Feather ESP32-S2\r\nBoard-ID: ESP32S2-Feather-revC\r\n",
     FAMILIES["esp32s2"]),
    ("UF2 Bootloader v1.1.3 SFA\r\nModel: Raspberry Pi RP2\r\nBoard-ID: RPI-RP2\r\n", FAMILIES["rp2040"]),
    ("UF2 Bootloader v3.7.0\r\nModel: Adafruit Feather M0\r\nBoard-ID: SAMD21G18A-Feather-v0\r\n",
     FAMILIES["samd21"]),
    ("UF2 Bootloader\r\nBoard-ID: STM32F411CE-blackpill-v3\r\n", FAMILIES["stm32f4"]),
    ("UF2 Bootloader\r\nBoard-ID: nRF52840-Feather-revD\r\nFamily-ID: 0x1b57745f\r\n", FAMILIES["nrf52"]),
    ("UF2 Bootloader\r\nBoard-ID: Custom-Board\r\n", None),
])
def test_the_drive_family_from_board_id(text, family):
    assert plan.family_of_drive(plan.parse_info(text))[0] == family


def test_forced_foreign_file_goes_as_its_own_blocks_and_the_drive_ignores_it(tmp_path):
    image = Image([(app_start(F411) + 0x400, rand(2000, 3))])
    path = uf2_file(tmp_path, "x.uf2", image, "rp2040")
    em, backend = emulated(F411)
    with em:
        sink = em.target.device.functions[0].sink
        with pytest.raises(HostError, match=r"^the device stayed in its bootloader: it ignored the file: its blocks "
                                            r"are for UF2 family rp2040 \(0xe48bff56\), the drive takes stm32f4 "
                                            r"\(0x57755a57\)$"):
            host.flash(load(path), backend, chip=F411, force=True, progress=False)
        assert sink.other_families == {FAMILIES["rp2040"]}  # the file's own tags reached the drive
        assert not em.memory.app_valid and em.memory.is_blank()


def naive_uf2(start: int, data: bytes, family: int, size: int = 476) -> bytes:
    """One block per ``size`` bytes from an unaligned start (the payload rounded up to 4 bytes)."""
    chunks = [data[i:i + size] for i in range(0, len(data), size)]
    return b"".join(UF2Block(0x2000, start + i * size, i, len(chunks), family,
                             c + b"\xff" * (-len(c) % 4)).pack() for i, c in enumerate(chunks))


def test_a_uf2_file_goes_as_its_own_blocks(tmp_path):
    """476-byte payloads at unaligned addresses and another family's blocks in the file: sent
    as they are (uf2conv.py, cp), not decoded and re-encoded; the drive takes its own blocks
    and ignores the rest."""
    ours = naive_uf2(app_start(F411), rand(5001, 8), FAMILIES["stm32f4"])  # blocks 1.. start unaligned
    other = write_uf2(Image([(0x10000000, rand(900, 4))]), family="rp2040")
    path = tmp_path / "multi.uf2"
    path.write_bytes(other + ours)
    image = load(path, family="stm32f4")  # as `bootkit drop --chip stm32f411` loads it
    em, backend = emulated(F411)
    with em:
        sink = em.target.device.functions[0].sink
        result = host.flash(image, backend, chip=F411, progress=False)
        assert holds(em.memory, image) and em.memory.app_valid
        assert sink.programmed_blocks == len(ours) // 512
        assert sink.other_families == {FAMILIES["rp2040"]}
    assert result.verified and result.bytes == image.size


# --------------------------------------------------------------------------
# items 3 and 7: preflight, and the outcome as observed


def test_an_avr_image_without_its_first_word_is_refused_even_forced():
    em, backend = emulated(M32U4)
    with em:
        volume = em.target.device.functions[0].volume
        for force in (False, True):
            with pytest.raises(ImageRejected, match="no data at 0x0, the application's first word"):
                host.flash(Image([(0x100, rand(500, 5))]), backend, chip=M32U4, force=force, progress=False)
        assert untouched(volume)


def test_a_partial_image_on_blank_flash_stays_and_says_why():
    em, backend = emulated(F411)
    with em:
        with pytest.raises(HostError, match=r"^the device stayed in its bootloader: first word of flash is erased: "
                                            r"the bootloader kept control$"):
            host.flash(Image([(app_start(F411) + 0x1000, rand(700, 6))]), backend, chip=F411, progress=False)
        assert not em.memory.app_valid


class _App(Function):
    def interfaces(self, speed="full"):
        return [Interface(0, 0xFF)]


def _rig(chip, after):
    """A UF2 drive whose leave brings up ``after(memory)`` (a Device or None)."""
    mem = SimulatedFlash(chip)
    target = Target(msc.bootloader_device(mem, chip, leave_delay=0.3), lambda sig: after(mem))
    bus = VirtualBus()
    bus.attach(target)
    return mem, get_backend(bus)


def test_an_application_that_enumerates_is_reported_started():
    mem, backend = _rig(RP2040, lambda mem: Device(DeviceInfo(0x1209, 0xA0A0, 0x0100), [_App()]))
    result = host.flash(generated(RP2040), backend, chip=RP2040, progress=False)
    assert result.verified and result.steps[-1] == "application started (came back as 1209:A0A0)"


def test_a_bootloader_drive_that_comes_back_is_a_failure():
    mem, backend = _rig(RP2040, lambda mem: msc.bootloader_device(mem, RP2040))
    with pytest.raises(HostError, match=r"^the device stayed in its bootloader: it came back as its bootloader "
                                        r"drive \(1209:B010\)$"):
        host.flash(generated(RP2040), backend, chip=RP2040, progress=False)


# --------------------------------------------------------------------------
# --drive: a mounted drive (a directory here, its device side a thread)


class FakeDrive:
    """A mounted UF2 drive: what reached it at each fsync (the host's flush to the device),
    blocks of its family in FIRMWARE.UF2, is "programmed" into CURRENT.UF2 (optionally with
    one byte wrong); 0.1 s after numBlocks have arrived the drive goes (INFO_UF2.TXT and
    CURRENT.UF2 disappear)."""

    def __init__(self, root, chip, monkeypatch, *, corrupt_at=None):
        self.root, self.chip, self.corrupt_at = root, chip, corrupt_at
        self.base, end = chip.layout().application_ranges("flash")[0]
        self.count = (end - self.base) // 256
        root.mkdir()
        (root / "INFO_UF2.TXT").write_bytes(msc.info_text(model="fake", board_id=f"{chip.name}-fake",
                                                          flash_size=chip.flash_size, family=chip.uf2_family,
                                                          accept=("uf2",)))
        self.flash = bytearray(b"\xff" * (end - self.base))
        self._publish()
        self.seen: set[int] = set()
        self.left = False
        real = drive.full_sync

        def full_sync(fd):
            real(fd)
            self.process()

        monkeypatch.setattr(drive, "full_sync", full_sync)

    def _publish(self):
        blocks = (UF2Block(0x2000, self.base + k * 256, k, self.count, self.chip.uf2_family,
                           bytes(self.flash[k * 256:(k + 1) * 256])).pack() for k in range(self.count))
        (self.root / "CURRENT.UF2").write_bytes(b"".join(blocks))

    def _leave(self):
        for name in ("INFO_UF2.TXT", "CURRENT.UF2"):
            (self.root / name).unlink()
        self.left = True

    def process(self):
        data = (self.root / "FIRMWARE.UF2").read_bytes()
        for i in range(len(data) // 512):
            raw = data[i * 512:(i + 1) * 512]
            if not is_uf2_block(raw):
                continue
            b = UF2Block.unpack(raw)
            if b.family_id != self.chip.uf2_family or b.block_no in self.seen:
                continue
            self.seen.add(b.block_no)
            off = b.target_addr - self.base
            self.flash[off:off + len(b.data)] = b.data
            if self.corrupt_at is not None and 0 <= self.corrupt_at - b.target_addr < len(b.data):
                self.flash[self.corrupt_at - self.base] ^= 0x01
            if len(self.seen) == b.num_blocks:
                threading.Timer(0.1, self._leave).start()
        self._publish()


def test_mounted_drive_read_back_and_left(tmp_path, monkeypatch):
    image = generated(F103)
    drive = FakeDrive(tmp_path / "UF2BOOT", F103, monkeypatch)
    result = host.flash(image, drive=drive.root, chip=F103, timeout=5, again=0.2)
    assert drive.left and result.verified and result.dialect == "uf2"
    assert result.steps[-2:] == [f"CURRENT.UF2 read back: {image.size} bytes match",
                                 "left the bootloader (not seen again within 0.2 s)"]


def test_mounted_drive_wrong_read_back_fails(tmp_path, monkeypatch):
    image = generated(F103)
    drive = FakeDrive(tmp_path / "UF2BOOT", F103, monkeypatch, corrupt_at=image.start + 0x1203 + 9)
    with pytest.raises(HostError, match=rf"^verify failed: CURRENT.UF2 reads 0x[0-9A-F]{{2}} at "
                                        rf"0x{image.start + 0x1203 + 9:X} where the file has"):
        host.flash(image, drive=drive.root, chip=F103, timeout=5, again=0.2)


def test_mounted_drive_that_stays_says_why(tmp_path, monkeypatch):
    drive = FakeDrive(tmp_path / "UF2BOOT", F103, monkeypatch)
    image = Image([(app_start(F103) + 0x800, rand(300, 7))])
    path = uf2_file(tmp_path, "x.uf2", image, "stm32f4")
    with pytest.raises(HostError, match=r"^the device stayed in its bootloader: it ignored the file: its blocks "
                                        r"are for UF2 family stm32f4 \(0x57755a57\), the drive takes stm32f1 "
                                        r"\(0x5ee21072\)$"):
        host.flash(load(path), drive=drive.root, chip=F103, force=True, timeout=0.5, again=0.2)
    assert not drive.left


# --------------------------------------------------------------------------
# `bootkit flash --via msc`: its --memory, --no-verify and --no-leave mean what they say


def test_flash_via_msc_says_verified_only_when_read_back(tmp_path, capsys, monkeypatch):
    image = generated(RP2040)
    uf2_file(tmp_path, "fw.uf2", image, RP2040.uf2_family)
    monkeypatch.chdir(tmp_path)
    base = ["flash", "fw.uf2", "--via", "msc", "--emulate", "rp2040", "--image", "flash.bin", "--no-progress"]
    assert main(base) == 0
    out = capsys.readouterr().out
    assert ", verified; " in out and "CURRENT.UF2 read back" in out, out
    assert main(base + ["--no-verify"]) == 0
    out = capsys.readouterr().out
    assert ", not verified; " in out and "not verified (--no-verify)" in out, out


@pytest.mark.parametrize("option, message", [
    (["--memory", "eeprom"], "a UF2 drive programs flash only, not eeprom"),
    (["--no-leave"], "a UF2 drive starts its application once the file is complete: it cannot stay"),
])
def test_flash_via_msc_refuses_what_a_drive_cannot_do(tmp_path, capsys, monkeypatch, option, message):
    image = Image([(0, b"\x0c\x94" + rand(300, 9))])
    (tmp_path / "fw.hex").write_text(write_hex(image))
    monkeypatch.chdir(tmp_path)
    rc = main(["flash", "fw.hex", "--via", "msc", "--emulate", "atmega32u4", "--image", "flash.bin",
               "--no-progress", *option])
    err = capsys.readouterr().err
    assert rc == 2 and err.strip() == f"bootkit: error: fw.hex: {message}", err
