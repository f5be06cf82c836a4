"""Issue 17, real processes: one writer per image, readers share.

Two `bootkit` processes with the same ``--image FILE.bin``: the second writer is refused
with one line naming the file and the holder's PID (exit 1), and the file ends with the
first writer's image.  "At once" is made deterministic: the first process is stopped
(SIGSTOP) while /proc/locks shows it holding the image's lock, the second runs to its end,
then the first is continued.  (Two processes merely started together may not overlap at all:
an in-process flash holds the image for a few tens of milliseconds.)
"""

from __future__ import annotations

import re
import signal

from bootkit.formats import load, save
from bootkit.samples import sample_image

import killutil as K

CHIP = "stm32f103c8"
FLASH_START = 0x08000000  # its flash, whose first 8 KiB are the bootloader
ATTEMPTS = 5  # tries to catch the first process holding its lock before the test gives up


def firmware(tmp_path, seed: int):
    image = sample_image(CHIP, 40 * 1024 + 1, 0xB000, 255, seed=seed)
    path = tmp_path / f"fw{seed}.hex"
    save(image, path)
    return image, path


def refused(result_rc: int, err: str, holder_pid: int) -> None:
    """Exit 1 and one line naming the image and the holder's PID."""
    lines = err.strip().splitlines()
    assert result_rc == 1, f"exit {result_rc}: {err!r}"
    assert len(lines) == 1, f"not one line: {err!r}"
    assert lines[0].startswith("bootkit: failed: "), lines[0]
    assert "same.bin" in lines[0] and re.search(rf"\b{holder_pid}\b", lines[0]), lines[0]


def caught(tmp_path, args, kind: str):
    """Start ``bootkit args`` and stop it while it holds the image's ``kind`` lock."""
    image_path = tmp_path / "same.bin"
    for _ in range(ATTEMPTS):
        proc = K.start(*args, cwd=tmp_path)
        if K.stop_while_locked(proc, image_path, kind):
            return proc
        out, err = proc.communicate(timeout=K.hang_limit())
        assert proc.returncode == 0, f"{args}: {out!r} {err!r}"
    raise AssertionError(f"`bootkit {' '.join(map(str, args))}` never held a {kind} lock on same.bin "
                         f"(/proc/locks, {ATTEMPTS} runs)")


def resume(proc) -> tuple[str, str]:
    proc.send_signal(signal.SIGCONT)
    return proc.communicate(timeout=K.hang_limit())


def flash_emulated(fw_path) -> list:
    return ["flash", fw_path.name, "--via", "dfu", "--emulate", CHIP, "--image", "same.bin"]


def test_two_flash_emulate_on_one_image_one_wins(tmp_path):
    image_path = tmp_path / "same.bin"
    base = K.make_image(image_path, CHIP)
    (a, a_path), (_, b_path) = firmware(tmp_path, 1), firmware(tmp_path, 2)
    first = caught(tmp_path, flash_emulated(a_path), "WRITE")
    try:
        second = K.run(*flash_emulated(b_path), cwd=tmp_path)
    finally:
        out, err = resume(first)
    assert first.returncode == 0 and "verified;" in out, (out, err)
    refused(second.returncode, second.stderr, first.pid)
    assert second.stdout == ""
    data, valid = K.load(image_path, CHIP)
    assert data == K.expected_flash(base, CHIP, a) and valid, "the file does not hold the winner's image"


def serve_holding(tmp_path) -> K.Server:
    return K.Server("dfu", "--chip", CHIP, "--dialect", "dfu", "--image", "same.bin", "--transport", "usbip",
                    "--listen", "127.0.0.1:0", cwd=tmp_path, ready=K.USBIP_READY)


def second_serve(tmp_path) -> tuple[int, str, str]:
    """A second `bootkit serve` on same.bin: (exit status, stdout, stderr); a server that
    starts serving instead of being refused is stopped and reported as exit None."""
    proc = K.start("serve", "dfu", "--chip", CHIP, "--dialect", "dfu", "--image", "same.bin",
                   "--transport", "usbip", "--listen", "127.0.0.1:0", cwd=tmp_path)
    out = []
    for line in proc.stdout:  # ends when it exits (refused), or at its ready line
        out.append(line)
        if K.USBIP_READY.search(line):
            rest, err = K.stop(proc)
            return None, "".join(out) + rest, err
    rest, err = proc.communicate(timeout=K.hang_limit())
    return proc.returncode, "".join(out) + rest, err


def test_serve_holds_the_image_against_a_second_serve_flash_and_read(tmp_path):
    image_path = tmp_path / "same.bin"
    base = K.make_image(image_path, CHIP)
    (a, a_path), (_, b_path) = firmware(tmp_path, 1), firmware(tmp_path, 2)
    server = serve_holding(tmp_path)
    try:
        rc, out, err = second_serve(tmp_path)
        assert rc is not None, f"a second serve on same.bin started serving: {out!r}"
        refused(rc, err, server.proc.pid)
        writer = K.run(*flash_emulated(b_path), cwd=tmp_path)
        refused(writer.returncode, writer.stderr, server.proc.pid)
        reader = K.run("read", "back.bin", "--via", "dfu", "--emulate", CHIP, "--image", "same.bin", cwd=tmp_path)
        refused(reader.returncode, reader.stderr, server.proc.pid)
        assert not (tmp_path / "back.bin").exists()
        # the holder is unharmed: a flash through it lands in the file
        done = K.run("flash", a_path.name, "--usbip", f"127.0.0.1:{server.address}", "--chip", CHIP, cwd=tmp_path)
        assert done.returncode == 0 and "verified;" in done.stdout, (done.stdout, done.stderr)
    finally:
        server.kill()
    data, valid = K.load(image_path, CHIP)
    assert data == K.expected_flash(base, CHIP, a) and valid


def read_emulated(out_name) -> list:
    return ["read", out_name, "--via", "dfu", "--emulate", CHIP, "--image", "same.bin"]


def test_two_readers_share_and_a_writer_is_refused_while_one_reads(tmp_path):
    image_path = tmp_path / "same.bin"
    base = K.make_image(image_path, CHIP)
    (a, a_path), (_, b_path) = firmware(tmp_path, 1), firmware(tmp_path, 2)
    assert K.run(*flash_emulated(a_path), cwd=tmp_path).returncode == 0
    first = caught(tmp_path, read_emulated("back1.hex"), "READ")
    try:
        second = K.run(*read_emulated("back2.hex"), cwd=tmp_path)
        writer = K.run(*flash_emulated(b_path), cwd=tmp_path)
    finally:
        out, err = resume(first)
    assert first.returncode == 0, (out, err)
    assert second.returncode == 0, (second.stdout, second.stderr)
    refused(writer.returncode, writer.stderr, first.pid)
    want = K.expected_flash(base, CHIP, a)
    for name in ("back1.hex", "back2.hex"):
        back = load(tmp_path / name)
        assert back.start <= a.start and back.end >= a.end, f"{name} misses the application"
        for start, data in back.segments:
            assert data == want[start - FLASH_START:start - FLASH_START + len(data)], f"{name} is not the image"
    data, valid = K.load(image_path, CHIP)
    assert data == want and valid, "the readers or the refused writer changed the file"
