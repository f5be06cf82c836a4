"""`bootkit sample CHIP -o OUT`: a firmware file for any chip, so the README's commands have inputs
in an empty directory (issue 21 item 1)."""

from __future__ import annotations

import pytest

from bootkit import cli
from bootkit.formats import load
from bootkit.memory import get_chip


@pytest.mark.parametrize("chip,name", [("atmega32u4", "a.hex"), ("stm32f411", "s.hex"), ("rp2040", "p.uf2"),
                                       ("attiny85", "t.hex"), ("stm32f103c8", "f.bin")])
def test_a_sample_fits_the_chips_application_and_has_a_gap(tmp_path, chip, name, capsys):
    out = tmp_path / name
    assert cli.main(["sample", chip, "-o", str(out)]) == 0
    c = get_chip(chip)
    start, end = c.application_ranges[0]
    image = load(out, base=start) if name.endswith(".bin") else load(out, family=c.uf2_family)
    assert image.start == start and image.end <= end
    assert image.size % 2 == 1 or len(image.segments) == 2  # odd length or a gap: the shape real images have
    if not name.endswith(".bin"):
        assert len(image.segments) == 2
    assert out.name in capsys.readouterr().out


def test_the_same_seed_gives_the_same_bytes_and_another_seed_others(tmp_path):
    for name, seed in (("1.hex", "1"), ("2.hex", "1"), ("3.hex", "2")):
        assert cli.main(["sample", "atmega32u4", "-o", str(tmp_path / name), "--seed", seed]) == 0
    assert (tmp_path / "1.hex").read_bytes() == (tmp_path / "2.hex").read_bytes()
    assert (tmp_path / "1.hex").read_bytes() != (tmp_path / "3.hex").read_bytes()


def test_bad_input_is_one_line_exit_2(tmp_path, capsys):
    assert cli.main(["sample", "z80", "-o", str(tmp_path / "x.hex")]) == 2
    assert cli.main(["sample", "attiny85", "-o", str(tmp_path / "x.hex"), "--size", "9000"]) == 2
    assert cli.main(["sample", "attiny85", "-o", str(tmp_path / "x.uf2")]) == 2
    assert cli.main(["sample", "attiny85", "-o", str(tmp_path / "x.what")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(line.startswith("bootkit: error: ") for line in err)
    assert not list(tmp_path.iterdir())
