"""The state's image hash is a hash list, updated for the blocks that changed (issue 22 item 4).

A save used to hash the whole image (2 MiB on an RP2040: 0.24 s of CPU under QEMU TCG, about
half of the mass-storage gadget's time in bench_gadget_vs_kernel.py).  Now only the 4 KiB
blocks holding a change since the last save are hashed again; what the state names must still
be exactly the hash of the image on disk, after any sequence of operations, and a state written
before (the plain SHA-256 of the image) must still say "valid".
"""

from __future__ import annotations

import gc
import hashlib
import json
import random

import pytest

import bootkit.memory.store as store
from bootkit.memory import SimulatedFlash, get_chip
from bootkit.memory.store import HASH_BLOCK, image_hash

CHIP = get_chip("stm32f103c8")          # 64 KiB, 1 KiB pages, application at 0x08002000
APP = 0x08002000
RP2040 = get_chip("rp2040")


def state_of(path):
    return json.loads(path.with_name(path.name + ".state.json").read_text())


def test_image_hash_is_sha256_over_the_blocks_sha256():
    data = random.Random(1).randbytes(3 * HASH_BLOCK + 100)
    blocks = [data[i:i + HASH_BLOCK] for i in range(0, len(data), HASH_BLOCK)]
    want = hashlib.sha256(b"".join(hashlib.sha256(b).digest() for b in blocks)).hexdigest()
    assert image_hash(data) == want
    assert image_hash(data) != image_hash(data[:-1] + b"\0")


@pytest.mark.parametrize("seed", range(6))
def test_after_any_operations_the_state_names_the_hash_of_the_file(tmp_path, seed):
    rng = random.Random(seed)
    path = tmp_path / "img.bin"
    flash = SimulatedFlash(CHIP, path)
    end = CHIP.flash_start + CHIP.flash_size
    for _ in range(60):
        op = rng.choice(["program", "program", "erase", "erase_all", "poke", "persist", "save", "read",
                         "reopen"])
        if op == "program":
            address = rng.randrange(APP, end - 300)
            data = bytes(rng.getrandbits(8) & b for b in flash.peek(address, rng.randrange(1, 300)))
            flash.program(address, data)  # only clears bits: never a not-erased fault
        elif op == "erase":
            flash.erase(rng.randrange(APP, end))
        elif op == "erase_all":
            flash.erase_all()
        elif op == "poke":
            address = rng.randrange(CHIP.flash_start, end - 64)
            flash.poke(address, rng.randbytes(rng.randrange(1, 64)))
        elif op == "persist":
            flash.persist()
        elif op == "save":
            flash.save()
        elif op == "read":
            flash.read(rng.randrange(CHIP.flash_start, end - 64), 64)  # a read-back may save
        else:
            flash.close()
            gc.collect()
            flash = SimulatedFlash(CHIP, path)
        if not flash.dirty:
            on_disk = path.read_bytes()
            assert on_disk == flash.flash_bytes(), op
            assert state_of(path)["image_sha256"] == image_hash(on_disk), op
    flash.close()
    assert state_of(path)["image_sha256"] == image_hash(path.read_bytes())


def test_a_save_hashes_only_the_blocks_that_changed(tmp_path, monkeypatch):
    path = tmp_path / "img.bin"
    SimulatedFlash(RP2040, path).close()
    flash = SimulatedFlash(RP2040, path)       # 2 MiB
    hashed = []
    real = hashlib.sha256

    def counting(data=b""):
        hashed.append(len(data))
        return real(data)

    monkeypatch.setattr(store.hashlib, "sha256", counting)
    flash.program(RP2040.flash_start + 5 * HASH_BLOCK + 10, b"\x00" * 300)
    flash.program(RP2040.flash_start + 9 * HASH_BLOCK - 2, b"\x00" * 4)   # across a block boundary
    flash.persist()
    monkeypatch.undo()
    blocks = [n for n in hashed if n == HASH_BLOCK]
    assert len(blocks) == 3, hashed                     # blocks 5, 8 and 9, not 512 of them
    assert sum(hashed) < 3 * HASH_BLOCK + 32 * 512 + 1  # plus the list of 512 digests
    assert state_of(path)["image_sha256"] == image_hash(path.read_bytes())
    flash.close()


def test_a_state_naming_the_whole_image_sha256_still_loads_valid(tmp_path):
    path = tmp_path / "img.bin"
    with SimulatedFlash(CHIP, path) as flash:
        flash.program(APP, b"\x12\x34" * 100)
        flash.manifest()
    # as the store wrote it before the hash list
    state = state_of(path)
    state["image_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    path.with_name("img.bin.state.json").write_text(json.dumps(state))
    with SimulatedFlash(CHIP, path) as flash:
        assert flash.app_valid
        flash.program(APP + 1024, b"\x00" * 16)         # the next save writes the hash list
    assert state_of(path)["image_sha256"] == image_hash(path.read_bytes())
    with SimulatedFlash(CHIP, path) as flash:
        assert not flash.app_valid                     # programmed after the manifest
        assert flash.peek(APP, 200) == b"\x12\x34" * 100


def test_a_state_naming_another_image_still_loads_invalid(tmp_path):
    path = tmp_path / "img.bin"
    with SimulatedFlash(CHIP, path) as flash:
        flash.program(APP, b"\x12\x34" * 100)
        flash.manifest()
    data = bytearray(path.read_bytes())
    data[HASH_BLOCK * 3 + 7] ^= 0x01                    # one bit in a block the update never touched
    path.write_bytes(bytes(data))
    with SimulatedFlash(CHIP, path) as flash:
        assert not flash.app_valid
