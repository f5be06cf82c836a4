"""Deterministic sample firmware for the demo, tests and benchmarks.

A "firmware" here is pseudo-random code bytes with the shape real images
have: a vector table at the start of the application, a gap, a data block
above it, an odd final length.  ``examples/firmware/`` holds these images
written as Intel HEX (regenerate with ``python -m bootkit.samples``).
"""

from __future__ import annotations

import random
from pathlib import Path

from .formats.image import Image
from .memory import Chip, get_chip

SAMPLES = {
    # name: (chip, code size, data offset, data size)
    "sample-atmega32u4": ("atmega32u4", 9 * 1024 + 3, 0x4000, 301),
    "sample-stm32f411": ("stm32f411", 24 * 1024 + 5, 0x10000, 1027),
    "sample-stm32f103c8": ("stm32f103c8", 12 * 1024 + 1, 0x6000, 255),
    "sample-at90usb1286": ("at90usb1286", 70 * 1024 + 7, 0x18000, 513),
}


def sample_image(chip: Chip | str, code_size: int = 8 * 1024 + 3, data_offset: int = 0x3000,
                 data_size: int = 301, seed: int = 1) -> Image:
    chip = get_chip(chip) if isinstance(chip, str) else chip
    start = chip.layout().application_ranges("flash")[0][0]
    rng = random.Random(f"{chip.name}:{seed}")
    code = bytes(rng.getrandbits(8) for _ in range(code_size))
    data = bytes(rng.getrandbits(8) for _ in range(data_size))
    return Image([(start, code), (start + data_offset, data)])


def named_sample(name: str) -> tuple[Chip, Image]:
    chip, size, off, dsize = SAMPLES[name]
    c = get_chip(chip)
    return c, sample_image(c, size, off, dsize)


def examples_dir() -> Path | None:
    d = Path(__file__).resolve().parents[1] / "examples" / "firmware"
    return d if d.is_dir() else None


def load_sample(name: str) -> tuple[Chip, Image]:
    """The shipped HEX file when the checkout has it, else the same image generated."""
    from .formats import load

    chip, image = named_sample(name)
    d = examples_dir()
    if d is not None and (d / f"{name}.hex").exists():
        return chip, load(d / f"{name}.hex")
    return chip, image


if __name__ == "__main__":  # regenerate examples/firmware/*.hex
    from .formats import save

    out = Path(__file__).resolve().parents[1] / "examples" / "firmware"
    out.mkdir(parents=True, exist_ok=True)
    for name in SAMPLES:
        save(named_sample(name)[1], out / f"{name}.hex")
        print(out / f"{name}.hex")
