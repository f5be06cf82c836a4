"""`bootkit read --emulate --image`: a reader of the image file (#17 item 3)."""

from __future__ import annotations

from pathlib import Path

from bootkit import cli
from bootkit.memory import get_chip
from bootkit.memory.flash import SimulatedFlash

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = str(ROOT / "examples" / "firmware" / "sample-atmega32u4.hex")


def _image(tmp_path) -> Path:
    image = tmp_path / "fw.bin"
    assert cli.main(["flash", "--emulate", "atmega32u4", "--image", str(image), "--no-progress", SAMPLE]) == 0
    return image


def test_read_shares_the_image_with_another_reader(tmp_path, capsys):
    image = _image(tmp_path)
    with SimulatedFlash(get_chip("atmega32u4"), image, readonly=True):
        assert cli.main(["read", "--emulate", "atmega32u4", "--image", str(image),
                         str(tmp_path / "back.hex")]) == 0
    assert (tmp_path / "back.hex").exists()


def test_read_is_refused_while_a_writer_holds_the_image(tmp_path, capsys):
    image = _image(tmp_path)
    capsys.readouterr()
    with SimulatedFlash(get_chip("atmega32u4"), image):
        assert cli.main(["read", "--emulate", "atmega32u4", "--image", str(image),
                         str(tmp_path / "back.hex")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("bootkit: failed: ") and "fw.bin" in err and "\n" not in err, err
    assert not (tmp_path / "back.hex").exists()


def test_read_of_a_missing_image_is_bad_input_and_creates_nothing(tmp_path, capsys):
    assert cli.main(["read", "--emulate", "atmega32u4", "--image", str(tmp_path / "none.bin"),
                     str(tmp_path / "back.hex")]) == 2
    assert "none.bin: no such file" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_mass_storage_flash_writes_the_image_file_through_a_few_times_not_per_block(tmp_path, monkeypatch):
    """The drive's check of each UF2 block it programmed is its own (peek), not a host's
    read-back: the image file is saved at the observable points only (#17 item 2)."""
    from bootkit.memory.store import ImageStore

    saves = []
    original = ImageStore.save
    monkeypatch.setattr(ImageStore, "save", lambda self, *a, **kw: (saves.append(1), original(self, *a, **kw))[1])
    assert cli.main(["flash", "--via", "msc", "--emulate", "atmega32u4", "--image", str(tmp_path / "fw.bin"),
                     "--no-progress", SAMPLE]) == 0
    # creating the file, the read-back of all blocks but the last, the last one's, manifest/leave, close
    assert 1 < len(saves) <= 6, len(saves)
