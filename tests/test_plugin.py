"""Issue 18 item 4, proof by a plug-in: examples/plugin (bootkit-plugin-blink) is installed
into a temporary venv with pip, and bootkit's own commands handle its personality, "blink",
with no edit to bootkit/: serve (USB/IP, in a child process), flash, read, choose, demo and
product check, each judged by what it did (the bytes read back are the image's; the image
file the server wrote back holds it).  Once pip uninstalls it, the same commands do not
know the name.

Every command runs as a child process, `python -m bootkit` with this checkout first on the
import path (as tests/killutil.py does), so the code under test is this checkout's.  Waits
only end a hung test: killutil.hang_limit() (100 measured start-ups, at least 30 s).
"""

from __future__ import annotations

import os
import re
import signal
import site
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bootkit.formats import load, save
from bootkit.memory import SimulatedFlash, get_chip
from bootkit.samples import load_sample

import killutil as K

PLUGIN = K.CHECKOUT / "examples" / "plugin"
PRODUCT = PLUGIN / "blink.toml"
CHIP = "stm32f103c8"

def venv_python(root: Path) -> Path:
    return root / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


@pytest.fixture(scope="module")
def plugin_python(tmp_path_factory) -> Path:
    """A venv that sees this interpreter's packages (bootkit installed editable, its
    dependencies) and has bootkit-plugin-blink installed by pip, with no network."""
    root = tmp_path_factory.mktemp("plugin-venv")
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(root)], check=True,
                   timeout=K.hang_limit())
    python = venv_python(root)
    # --system-site-packages sees the *base* interpreter's site-packages; when this test runs in
    # a venv of its own (CI), that venv's site-packages (where bootkit is installed) is added too,
    # with its .pth files (the editable install's finder): site.addsitedir, as site.py does it
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True, timeout=K.hang_limit()).stdout.strip()
    parents = [p for p in site.getsitepackages() if Path(p).is_dir()]
    Path(purelib, "_bootkit_test_parent.pth").write_text(
        "".join(f"import site; site.addsitedir({p!r})\n" for p in parents))
    env = K.env()
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # no __pycache__ left in examples/plugin by the build backend
    r = subprocess.run([str(python), "-m", "pip", "install", "--no-build-isolation", "--no-deps", "--no-index",
                        "--disable-pip-version-check", str(PLUGIN)], env=env, capture_output=True, text=True,
                       timeout=K.hang_limit())
    assert r.returncode == 0, f"pip install {PLUGIN} failed:\n{r.stdout}\n{r.stderr}"
    # the venv sees this checkout's bootkit (not another clone), its built-in personalities, and the plug-in
    r = subprocess.run([str(python), "-c", "import bootkit, bootkit_blink, bootkit.registry as r; "
                        "print(bootkit.__file__); print(r.__file__); print(bootkit_blink.__file__); "
                        "print(' '.join(r.personality_names()))"],
                       env=K.env(), capture_output=True, text=True, timeout=K.hang_limit(), cwd=str(root))
    assert r.returncode == 0, r.stderr
    bootkit_file, registry_file, blink_file, names = r.stdout.splitlines()
    for file in (bootkit_file, registry_file):
        assert Path(file).resolve().is_relative_to(K.CHECKOUT), f"{file} is not this checkout's"
    assert Path(blink_file).resolve().is_relative_to(root), f"the plug-in was not imported from the venv: {blink_file}"
    assert names.split()[-1] == "blink" and "dfu" in names.split(), names
    return python


def run(python: Path, *args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), "-m", "bootkit", *map(str, args)], env=K.env(), cwd=cwd,
                          capture_output=True, text=True, timeout=K.hang_limit())


class Serve:
    """`bootkit serve ARGS` run by ``python`` in a child process; ``address`` is the first group
    of ``ready`` in the line that says it is serving.  Its output is drained by a thread."""

    def __init__(self, python: Path, *args, cwd: Path, ready: re.Pattern):
        self.proc = subprocess.Popen([str(python), "-m", "bootkit", "serve", *map(str, args)], env=K.env(),
                                     cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        found = threading.Event()
        self.address = ""

        def read() -> None:
            for line in self.proc.stdout:
                self.lines.append(line)
                m = ready.search(line)
                if m and not found.is_set():
                    self.address = m.group(1)
                    found.set()
            found.set()  # the output ended: the server is gone

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        if not found.wait(K.hang_limit()) or not self.address:
            self.proc.kill()
            raise AssertionError(f"serve {' '.join(map(str, args))} did not print {ready.pattern!r}: "
                                 f"{''.join(self.lines)!r} {self.proc.stderr.read()!r}")

    def interrupt(self) -> tuple[int, str]:
        """Ctrl-C: the server writes its image back and exits.  Returns (exit status, stderr)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        _, err = self.proc.communicate(timeout=K.hang_limit())
        self._reader.join(timeout=K.hang_limit())
        return self.proc.returncode, err


def firmware(tmp_path: Path):
    chip, image = load_sample("sample-stm32f103c8")
    path = tmp_path / "fw.hex"
    save(image, path)
    return chip, image, path


def holds(flash: bytes, chip, image) -> bool:
    return all(flash[s - chip.flash_start:s - chip.flash_start + len(d)] == d for s, d in image.segments)


def test_plugin_installed_by_pip_is_served_flashed_read_chosen_demoed_and_checked(plugin_python, tmp_path):
    chip, image, fw = firmware(tmp_path)

    # --- serve the product (USB/IP, a child process) -> flash -> read -> Ctrl-C
    server = Serve(plugin_python, "--product", PRODUCT, "--image", "flash.bin", "--transport", "usbip",
                   "--listen", "127.0.0.1:0", cwd=tmp_path, ready=K.USBIP_READY)
    try:
        usbip = f"127.0.0.1:{server.address}"
        done = run(plugin_python, "flash", fw.name, "--via", "blink", "--usbip", usbip, "--chip", CHIP,
                   cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert "verified" in done.stdout and f"{image.size} bytes" in done.stdout, done.stdout
        # the application enumerates with its run-time interface: the host saw it appear
        assert "application started (came back as 1209:0001)" in done.stdout, done.stdout

        # the host sends the application DETACH, then reads the bootloader
        back = run(plugin_python, "read", "back.hex", "--via", "blink", "--usbip", usbip, "--serial", "BLINK-0001",
                   "--chip", CHIP, cwd=tmp_path)
        assert back.returncode == 0, back.stderr
        read = load(tmp_path / "back.hex")
        for start, data in image.segments:
            assert read.crop(start, start + len(data)).segments == [(start, data)], \
                f"the bytes read back at 0x{start:X} are not the image's"
    finally:
        rc, err = server.interrupt()
    assert rc in (0, 130), f"serve exited {rc}: {err}"
    flash = (tmp_path / "flash.bin").read_bytes()
    assert holds(flash, get_chip(CHIP), image), "the image file the server wrote back does not hold the firmware"

    # --- the device side in this process (--emulate): the same host, on the in-process bus
    emulated = run(plugin_python, "flash", fw.name, "--via", "blink", "--emulate", CHIP, "--image", "emulated.bin",
                   cwd=tmp_path)
    assert emulated.returncode == 0, emulated.stderr
    assert "verified" in emulated.stdout, emulated.stdout
    assert holds((tmp_path / "emulated.bin").read_bytes(), get_chip(CHIP), image)

    # --- choose: the plug-in's facts are ranked with the built-ins'
    chosen = run(plugin_python, "choose", "--os", "linux", "--need", "readback", cwd=tmp_path)
    assert chosen.returncode == 0, chosen.stderr
    assert re.search(r"^\d+\. blink/ep0 ", chosen.stdout, re.M), chosen.stdout

    # --- product check: the plug-in's table and its options are validated
    checked = run(plugin_python, "product", "check", PRODUCT, cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert "personality: blink/ep0" in checked.stdout, checked.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text(PRODUCT.read_text().replace("max_transfer = 512", "max_transfer = 5"))
    refused = run(plugin_python, "product", "check", bad, cwd=tmp_path)
    assert refused.returncode == 2 and "blink.max_transfer" in refused.stderr, refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr

    # --- demo: a row per demo entry of the plug-in, verified
    demo = run(plugin_python, "demo", cwd=tmp_path)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    rows = [line for line in demo.stdout.splitlines() if re.match(r"\W*blink\W", line)]
    assert [re.split(r"\s*│\s*", r.strip("│ ")) [1:3] for r in rows] == [["ep0", "stm32f103c8"],
                                                                        ["ep0", "atmega32u4"]], demo.stdout
    assert all(r.rstrip("│ ").endswith("yes") for r in rows), demo.stdout

    # --- uninstalled, the name is unknown again to the same interpreter
    r = subprocess.run([str(plugin_python), "-m", "pip", "uninstall", "--yes", "bootkit-plugin-blink"],
                       env=K.env(), capture_output=True, text=True, timeout=K.hang_limit())
    assert r.returncode == 0, r.stderr
    check_unknown_without_the_plugin(plugin_python, tmp_path, fw)


def check_unknown_without_the_plugin(python: Path, tmp_path: Path, fw: Path) -> None:
    """``python`` without the plug-in installed: the same commands refuse the name (exit 2,
    one line naming it) or do not show it.  (The venv's own interpreter once the plug-in is
    uninstalled, rather than the base interpreter: a developer may well have installed the
    example there, as its README says.)"""
    for args in (["serve", "blink", "--chip", CHIP],
                 ["flash", fw.name, "--via", "blink", "--emulate", CHIP],
                 ["read", "back.hex", "--via", "blink", "--emulate", CHIP],
                 ["product", "check", PRODUCT]):
        r = run(python, *args, cwd=tmp_path)
        assert r.returncode == 2, f"{args}: exit {r.returncode}: {r.stderr}"
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and re.search(r"\bblink\b", lines[0]), f"{args}: {r.stderr}"
    chosen = run(python, "choose", "--os", "linux", cwd=tmp_path)
    assert chosen.returncode == 0 and "dfu/dfu" in chosen.stdout and "blink" not in chosen.stdout, chosen.stdout
    demo = run(python, "demo", cwd=tmp_path)
    assert demo.returncode == 0 and "dfu" in demo.stdout and "blink" not in demo.stdout, demo.stdout


# ----------------------------------------------------------------------------------------------
# the plug-in's engine, as every built-in engine is tested: no request sequence writes outside
# the application region, and every refusal is a status, never a crash


@pytest.fixture(scope="module")
def blink():
    sys.path.insert(0, str(PLUGIN))
    try:
        from bootkit_blink import device, protocol
    finally:
        sys.path.remove(str(PLUGIN))
    return device, protocol


_request = st.one_of(
    st.tuples(st.just("address"), st.integers(0x0800_0000 - 64, 0x0800_0000 + 0x3000)),
    st.tuples(st.just("erase"), st.none()),
    st.tuples(st.just("write"), st.binary(min_size=0, max_size=80)),
    st.tuples(st.just("read"), st.integers(0, 80)),
    st.tuples(st.just("other"), st.integers(0, 255)),
)


@settings(max_examples=200)
@given(requests=st.lists(_request, max_size=30))
def test_blink_engine_never_writes_outside_the_application(blink, requests):
    device, P = blink
    chip = get_chip(CHIP)
    memory = SimulatedFlash(chip)
    engine = device.BlinkEngine(memory, max_transfer=64)
    boot = memory.read(chip.boot_start, chip.boot_size)
    for kind, arg in requests:
        try:
            if kind == "address":
                engine.request(P.SET_ADDRESS, data=arg.to_bytes(4, "little"))
            elif kind == "erase":
                engine.request(P.ERASE, data=b"")
            elif kind == "write":
                engine.request(P.WRITE, data=arg)
            elif kind == "read":
                engine.request(P.READ, length=arg)
            else:
                engine.request(arg, data=b"")
        except device.Refused as refused:
            status = P.Status.unpack(engine.request(P.GET_STATUS))
            assert status.status == refused.status != P.OK
        assert memory.read(chip.boot_start, chip.boot_size) == boot
