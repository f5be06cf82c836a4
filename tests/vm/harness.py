"""Boot the Debian kernel in QEMU with the host's root as the guest's root.

The guest is a real Linux USB host: tests load dummy_hcd, libcomposite and
usb_f_fs in it, build configfs gadgets, and run real host tools (dfu-util,
avrdude, lsusb, ...) against them, all from the host's own filesystem.

How it works (see README.md in this folder):

* find_kernel() picks the newest installed /boot/vmlinuz-<ver> that has
  /lib/modules/<ver>/kernel (package linux-image-amd64).
* build_initramfs() writes a gzip'd cpio (newc) with busybox-static, the
  virtio / 9p / virtio_console modules of that kernel (in the order
  `modprobe --show-depends` gives, decompressed on the host), the guest
  agent and an /init script. /init mounts the host root over 9p read-only,
  puts tmpfs on /tmp /run /var/tmp /dev/shm, moves /dev /proc /sys into it,
  mounts configfs, devpts and the writable "xfer" 9p share, chroots and
  starts guest_agent.py with the host's Python interpreter.
* GuestVM talks to the agent over a virtio-serial port that QEMU connects
  to a unix socket the host listens on. The kernel console (ttyS0) goes to
  a log file; its tail is put into every error message.
"""

from __future__ import annotations

import atexit
import base64
import gzip
import io
import json
import lzma
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
AGENT_SOURCE = HERE / "guest_agent.py"
MARKER = b"@@BOOTKIT-AGENT@@ "

QEMU = "qemu-system-x86_64"
BUSYBOX = "/bin/busybox"  # from busybox-static (the dynamic busybox would not run in the initramfs)

#: Modules the initramfs loads, by name; their dependencies come from
#: `modprobe --show-depends`. On Debian 6.1 the order comes out as
#: virtio_ring virtio netfs fscache 9pnet 9p 9pnet_virtio
#: virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_console.
INITRAMFS_MODULES = ("9p", "9pnet_virtio", "virtio_pci", "virtio_console")

GUEST_XFER_DIR = "/run/bootkit/xfer"
AGENT_PORT_NAME = "bootkit.agent"
DEFAULT_BOOT_TIMEOUT = 120.0
CONSOLE_TAIL_LINES = 40


# --------------------------------------------------------------------------
# errors and results

class GuestError(RuntimeError):
    """The guest failed: did not boot, died, or a command misbehaved."""


class VMUnavailable(GuestError):
    """A required system tool (qemu, kernel, busybox-static) is missing."""


class BootError(GuestError):
    """The guest did not reach a ready agent in time (or QEMU exited)."""


class GuestDied(GuestError):
    """QEMU exited or the agent stopped answering; the VM is unusable."""


class CommandTimeout(GuestError):
    """A command ran past its timeout; the agent killed it, the VM is fine."""

    def __init__(self, message: str, result: "Result"):
        super().__init__(message)
        self.result = result


class CommandFailed(GuestError):
    def __init__(self, message: str, result: "Result"):
        super().__init__(message)
        self.result = result


@dataclass
class Result:
    cmd: object
    rc: int
    stdout_bytes: bytes = b""
    stderr_bytes: bytes = b""
    duration: float = 0.0
    timed_out: bool = False

    @property
    def stdout(self) -> str:
        return self.stdout_bytes.decode("utf-8", "replace")

    @property
    def stderr(self) -> str:
        return self.stderr_bytes.decode("utf-8", "replace")

    @property
    def ok(self) -> bool:
        return self.rc == 0 and not self.timed_out

    def describe(self, limit: int = 4000) -> str:
        return (f"command {self.cmd!r} -> rc={self.rc}"
                f"{' (timed out)' if self.timed_out else ''}"
                f" in {self.duration:.1f}s\n--- stdout ---\n{self.stdout[-limit:]}"
                f"\n--- stderr ---\n{self.stderr[-limit:]}")

    def check(self) -> "Result":
        if not self.ok:
            raise CommandFailed(self.describe(), self)
        return self


# --------------------------------------------------------------------------
# what is installed

def find_kernel() -> tuple[str, str]:
    """(path of vmlinuz, kernel version) of the newest installed kernel
    whose modules are installed too. Raises VMUnavailable otherwise."""
    found = []
    for p in Path("/boot").glob("vmlinuz-*"):
        ver = p.name[len("vmlinuz-"):]
        if Path("/lib/modules", ver, "kernel").is_dir() and os.access(p, os.R_OK):
            found.append((_version_key(ver), str(p), ver))
    if not found:
        raise VMUnavailable(
            "no kernel: need /boot/vmlinuz-<ver> and /lib/modules/<ver>/kernel "
            "(apt-get install linux-image-amd64)")
    found.sort()
    return found[-1][1], found[-1][2]


def _version_key(ver: str):
    return [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", ver)]


def _is_static_elf(path: str) -> bool:
    """True if the ELF file has no PT_INTERP (i.e. is statically linked)."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if head[:4] != b"\x7fELF" or head[4] != 2:  # 64-bit only
                return False
            phoff = int.from_bytes(head[32:40], "little")
            phentsize = int.from_bytes(head[54:56], "little")
            phnum = int.from_bytes(head[56:58], "little")
            f.seek(phoff)
            table = f.read(phentsize * phnum)
    except OSError:
        return False
    for i in range(phnum):
        if int.from_bytes(table[i * phentsize:i * phentsize + 4], "little") == 3:
            return False
    return True


def vm_available() -> tuple[bool, str]:
    """(True, "") if qemu, a kernel with modules and busybox-static are
    present, else (False, reason naming the Debian packages to install)."""
    missing = []
    if shutil.which(QEMU) is None:
        missing.append(f"{QEMU} (apt-get install qemu-system-x86)")
    try:
        find_kernel()
    except VMUnavailable as e:
        missing.append(str(e))
    if not _is_static_elf(BUSYBOX):
        missing.append(f"static {BUSYBOX} (apt-get install busybox-static)")
    if shutil.which("modprobe") is None and not os.path.exists("/sbin/modprobe"):
        missing.append("modprobe (apt-get install kmod)")
    if missing:
        return False, "VM tests need: " + "; ".join(missing) + \
            " -- see tests/vm/apt-packages.txt"
    return True, ""


# --------------------------------------------------------------------------
# initramfs

def _modprobe() -> str:
    return shutil.which("modprobe") or "/sbin/modprobe"


def module_load_order(kver: str, names=INITRAMFS_MODULES) -> list[str]:
    """Paths of the .ko files to insmod, dependencies first, no duplicates,
    built-in modules left out."""
    order: list[str] = []
    for name in names:
        out = subprocess.run(
            [_modprobe(), "-S", kver, "--show-depends", name],
            capture_output=True, text=True)
        if out.returncode != 0:
            raise VMUnavailable(f"modprobe --show-depends {name} for {kver} failed: "
                                f"{out.stderr.strip()}")
        for line in out.stdout.splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "insmod" and parts[1] not in order:
                order.append(parts[1])  # "builtin X" lines need nothing
    return order


def _read_module(path: str) -> bytes:
    if path.endswith(".xz"):
        return lzma.decompress(Path(path).read_bytes())
    if path.endswith(".gz"):
        return gzip.decompress(Path(path).read_bytes())
    if path.endswith(".zst"):
        try:
            import zstandard  # type: ignore
            return zstandard.ZstdDecompressor().decompressobj().decompress(
                Path(path).read_bytes())
        except ImportError:
            return subprocess.run(["zstd", "-dc", path], check=True,
                                  capture_output=True).stdout
    return Path(path).read_bytes()


class _Cpio:
    """Minimal writer for the cpio "newc" format the kernel unpacks."""

    def __init__(self):
        self.buf = io.BytesIO()
        self.ino = 1

    def _entry(self, name: str, mode: int, data: bytes = b""):
        name_b = name.encode() + b"\0"
        hdr = "070701" + "".join("%08X" % v for v in (
            self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name_b), 0))
        self.ino += 1
        self.buf.write(hdr.encode() + name_b)
        self.buf.write(b"\0" * ((-(110 + len(name_b))) % 4))
        self.buf.write(data)
        self.buf.write(b"\0" * ((-len(data)) % 4))

    def dir(self, name, mode=0o755):
        self._entry(name, stat.S_IFDIR | mode)

    def file(self, name, data: bytes, mode=0o644):
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name, target):
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return self.buf.getvalue()


# Stage 1, /init in the initramfs: modules, the 9p root and everything a
# read-only root needs, then switch_root. PID 1 must itself change root (not
# run a chrooted child): kernel usermode helpers such as request_module()'s
# /sbin/modprobe run with PID 1's root, and configfs loads usb_f_* modules
# that way when a function directory is created.
INIT_SCRIPT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
. /bootkit/boot.env
say() { echo "bootkit-init: $*"; }
die() { say "FATAL: $*"; sleep 1; poweroff -f; }
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /bootkit/modules); do
    insmod "/modules/$m" || say "insmod $m failed"
done
R=/newroot
mount -t 9p -o "trans=virtio,version=9p2000.L,ro,msize=$MSIZE$ROOT_OPTS" hostroot $R \
    || die "cannot mount the host root over 9p"
# Host directories below the guest's tmpfs mount points (a checkout or a venv
# under /tmp, as CI clones may be) would be hidden by them: bind them aside
# now and put them back on top once every tmpfs is mounted.
N=0
while read -r K; do
    [ -n "$K" ] || continue
    N=$((N + 1)); mkdir -p /keep/$N
    mount -o bind "$R$K" /keep/$N || say "cannot keep $K"
done < /bootkit/keep
mount -t tmpfs -o mode=1777 tmpfs $R/tmp || die "tmpfs /tmp"
mount -t tmpfs -o mode=755 tmpfs $R/run || die "tmpfs /run"
[ -d $R/var/tmp ] && mount -t tmpfs -o mode=1777 tmpfs $R/var/tmp
PORT=
for d in /sys/class/virtio-ports/*; do
    [ "$(cat $d/name 2>/dev/null)" = "{AGENT_PORT_NAME}" ] && PORT=/dev/${d##*/}
done
[ -n "$PORT" ] || die "virtio-serial port {AGENT_PORT_NAME} not found"
mount --move /dev $R/dev || die "move /dev"
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts -o mode=620,ptmxmode=666 devpts $R/dev/pts
mount -t tmpfs -o mode=1777 tmpfs $R/dev/shm
mount --move /proc $R/proc || die "move /proc"
mount --move /sys $R/sys || die "move /sys"
N=0
while read -r K; do
    [ -n "$K" ] || continue
    N=$((N + 1)); mkdir -p "$R$K"
    mount --move /keep/$N "$R$K" || say "cannot put back $K"
done < /bootkit/keep
mkdir -p $R/run/bootkit $R{GUEST_XFER_DIR}
mount -t 9p -o "trans=virtio,version=9p2000.L,msize=$MSIZE" xfer $R{GUEST_XFER_DIR} \
    || die "cannot mount the xfer share"
cp /bin/busybox /bootkit/* $R/run/bootkit/
echo "PORT=$PORT" >> $R/run/bootkit/boot.env
exec switch_root $R /run/bootkit/busybox sh /run/bootkit/stage2.sh
die "switch_root failed"
""".replace("{GUEST_XFER_DIR}", GUEST_XFER_DIR).replace("{AGENT_PORT_NAME}", AGENT_PORT_NAME)

# Stage 2, PID 1 in the host's root: configfs, loopback, then the agent;
# power off when it exits (QEMU runs with -no-reboot, so it exits too).
STAGE2_SCRIPT = r"""BB=/run/bootkit/busybox
. /run/bootkit/boot.env
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
say() { echo "bootkit-init: $*"; }
modprobe configfs || say "modprobe configfs failed"
$BB mount -t configfs configfs /sys/kernel/config || say "configfs mount failed"
$BB ip link set lo up || say "no loopback"
$BB hostname bootkit-vm
# Without udevd nothing loads drivers for new devices (the Debian kernel has
# no uevent helper) and libusb, built with libudev, never hears of devices
# that appear after libusb_init().
if [ -x /lib/systemd/systemd-udevd ]; then
    /lib/systemd/systemd-udevd --daemon --resolve-names=never || say "udevd failed"
    # No coldplug trigger: everything present at boot already has its
    # driver, and `udevadm trigger` costs ~3 s under TCG.
else
    say "no systemd-udevd (apt-get install udev): drivers are not autoloaded"
fi
cd /
say "starting agent on $PORT"
$BB env -i HOME=/tmp PATH=$PATH "$PYTHON" -S /run/bootkit/guest_agent.py "$PORT" /run/bootkit/agent.json
say "agent exited ($?)"
$BB sync
$BB poweroff -f
"""


# Where the guest mounts a tmpfs over the host's directory.
GUEST_TMPFS = ("/tmp", "/run", "/var/tmp", "/dev/shm")


def kept_host_paths() -> list[str]:
    """Host directories the guest needs that lie below one of GUEST_TMPFS: this
    checkout, the interpreter's prefix and its import path (an editable install
    points there).  /init keeps them visible over the tmpfs; outermost only."""
    candidates = {str(Path(__file__).resolve().parents[2]), sys.prefix, sys.base_prefix,
                  os.path.dirname(os.path.realpath(sys.executable))}
    candidates.update(p for p in sys.path if p and os.path.isdir(p))
    # where `bootkit` resolves for a process started elsewhere, as in the guest: an
    # editable install maps it to the checkout it was installed from, which may not be
    # the one running these tests
    found = subprocess.run([sys.executable, "-c", "import bootkit; print(bootkit.__file__)"], cwd="/",
                           capture_output=True, text=True)
    if found.returncode == 0 and found.stdout.strip():
        candidates.add(str(Path(found.stdout.strip()).parents[1]))
    under = sorted({os.path.realpath(p) for p in candidates
                    if any(os.path.realpath(p).startswith(t + "/") for t in GUEST_TMPFS)})
    kept: list[str] = []
    for p in under:
        if not any(p.startswith(k + "/") for k in kept) and "\n" not in p:
            kept.append(p)
    return kept


def guest_env() -> dict[str, str]:
    """Environment of commands in the guest: the host's PATH (with the
    running interpreter's bin first, so `python3` and `bootkit` are this
    venv's, not a pyenv shim) plus the sbin directories."""
    bindir = os.path.dirname(sys.executable)
    path = [bindir] + os.environ.get("PATH", "").split(os.pathsep) + \
        ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]
    seen, parts = set(), []
    for p in path:
        if p and p not in seen:
            seen.add(p)
            parts.append(p)
    env = {
        "PATH": ":".join(parts),
        "HOME": "/tmp",
        "TMPDIR": "/tmp",
        "PYTHONDONTWRITEBYTECODE": "1",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TERM": "dumb",
        "BOOTKIT_VM": "1",
        "BOOTKIT_XFER": GUEST_XFER_DIR,
    }
    for k in ("VIRTUAL_ENV", "PYENV_ROOT", "PYENV_VERSION"):
        if os.environ.get(k):
            env[k] = os.environ[k]
    # The guest imports bootkit from the checkout under test, whatever checkout the
    # interpreter's editable install points to (a CI clone and a developer's tree can differ).
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH")) if p)
    return env


def build_initramfs(workdir, kver: str | None = None, *, python: str | None = None,
                    msize: int = 512000, root_cache: str = "loose") -> Path:
    """Write <workdir>/initramfs.cpio.gz for kernel `kver` and return its path."""
    workdir = Path(workdir)
    if kver is None:
        kver = find_kernel()[1]
    python = python or os.path.realpath(sys.executable)
    cpio = _Cpio()
    for d in ("bin", "sbin", "dev", "proc", "sys", "newroot", "modules", "bootkit", "tmp"):
        cpio.dir(d)
    cpio.file("bin/busybox", Path(BUSYBOX).read_bytes(), 0o755)
    names = []
    for path in module_load_order(kver):
        name = re.sub(r"\.(xz|gz|zst)$", "", os.path.basename(path))
        cpio.file("modules/" + name, _read_module(path))
        names.append(name)
    cpio.file("bootkit/modules", ("\n".join(names) + "\n").encode())
    root_opts = f",cache={root_cache}" if root_cache else ""
    cpio.file("bootkit/boot.env", (
        f"PYTHON='{python}'\nMSIZE={int(msize)}\nROOT_OPTS='{root_opts}'\n").encode())
    cpio.file("bootkit/keep", "".join(p + "\n" for p in kept_host_paths()).encode())
    cpio.file("bootkit/agent.json", json.dumps({"env": guest_env()}).encode())
    cpio.file("bootkit/guest_agent.py", AGENT_SOURCE.read_bytes())
    cpio.file("bootkit/stage2.sh", STAGE2_SCRIPT.encode(), 0o755)
    cpio.file("init", INIT_SCRIPT.encode(), 0o755)
    out = workdir / "initramfs.cpio.gz"
    out.write_bytes(gzip.compress(cpio.finish(), compresslevel=1))
    return out


# --------------------------------------------------------------------------
# the VM

_LIVE: "set[GuestVM]" = set()


@atexit.register
def _kill_leftover_vms():
    for vm in list(_LIVE):
        vm.kill()


def _die_with_parent():
    """preexec_fn: SIGKILL QEMU if the test process dies without cleaning up."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class BackgroundProcess:
    """A process started by GuestVM.run_bg(); stop() it (or the VM does at exit)."""

    def __init__(self, vm: "GuestVM", handle: int, pid: int, cmd):
        self.vm, self.handle, self.pid, self.cmd = vm, handle, pid, cmd
        self.result: Result | None = None

    def poll(self) -> int | None:
        """Exit status, or None while it runs."""
        if self.result is not None:
            return self.result.rc
        return self.vm._request({"op": "bgpoll", "handle": self.handle}, 30)["rc"]

    def output(self) -> Result:
        """What it has written so far (rc is None while it runs)."""
        r = self.vm._request({"op": "bgpoll", "handle": self.handle, "output": True}, 30)
        return Result(self.cmd, r["rc"], base64.b64decode(r["stdout"]),
                      base64.b64decode(r["stderr"]))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> Result:
        """Send `sig` to its process group, SIGKILL after `timeout` (scaled by the
        guest's measured slowness); returns its exit status and everything it wrote."""
        timeout *= self.vm.slowness()
        if self.result is None:
            r = self.vm._request({"op": "bgstop", "handle": self.handle,
                                  "signal": int(sig), "timeout": timeout}, timeout + 30)
            self.result = Result(self.cmd, r["rc"], base64.b64decode(r["stdout"]),
                                 base64.b64decode(r["stderr"]), timed_out=r["killed"])
        return self.result

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.vm.alive:
            self.stop()


class GuestVM:
    """One QEMU guest, its kernel console log and its command agent.

    with GuestVM() as vm:
        r = vm.run("modprobe dummy_hcd && lsusb", timeout=60)
    """

    def __init__(self, timeout: float = DEFAULT_BOOT_TIMEOUT, *, memory: int = 1024,
                 smp: int = 1, workdir=None, keep_workdir: bool = False,
                 root_cache: str = "loose", extra_qemu_args=(),
                 append: str = ""):
        self.boot_timeout = timeout
        self.memory, self.smp = memory, smp
        self.root_cache = root_cache
        self.extra_qemu_args = list(extra_qemu_args)
        self.extra_append = append
        self._own_workdir = workdir is None
        self.keep_workdir = keep_workdir
        self.workdir = Path(workdir) if workdir else None
        self.proc: subprocess.Popen | None = None
        self.sock: socket.socket | None = None
        self._buf = b""
        self._next_id = 1
        self.alive = False
        self.kernel = self.kver = None
        self.boot_time: float | None = None
        self.guest_xfer_dir = GUEST_XFER_DIR

    # A quiet 2-core machine boots the Debian kernel under TCG in about this long.
    NOMINAL_BOOT_SECONDS = 8.0

    def slowness(self) -> float:
        """How much slower than a quiet machine this guest runs now, at least 1: the
        measured boot time against NOMINAL_BOOT_SECONDS, or the host's load per core,
        whichever is larger.  Tests scale their waits by it instead of fixing them, so a
        loaded CI machine gets longer waits and a quiet one fails fast."""
        boot = (self.boot_time or self.NOMINAL_BOOT_SECONDS) / self.NOMINAL_BOOT_SECONDS
        try:
            load = os.getloadavg()[0] / (os.cpu_count() or 1)
        except OSError:
            load = 1.0
        return max(1.0, boot, load)

    # paths ---------------------------------------------------------------
    @property
    def console_log(self) -> Path:
        return self.workdir / "console.log"

    @property
    def xfer_dir(self) -> Path:
        """Host side of the writable share; the guest sees it at guest_xfer_dir."""
        return self.workdir / "xfer"

    def guest_path(self, name: str) -> str:
        """Guest path of <xfer_dir>/name."""
        return f"{self.guest_xfer_dir}/{name}"

    def console_tail(self, lines: int = CONSOLE_TAIL_LINES) -> str:
        try:
            text = self.console_log.read_bytes().decode("utf-8", "replace")
        except (OSError, TypeError, AttributeError):
            return "(no console log)"
        text = text.replace("\r", "")
        return "\n".join(text.splitlines()[-lines:])

    def _qemu_log_tail(self) -> str:
        try:
            return (self.workdir / "qemu.log").read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def _context(self) -> str:
        q = self._qemu_log_tail().strip()
        return (f"\n--- guest console (last {CONSOLE_TAIL_LINES} lines of "
                f"{self.console_log}) ---\n{self.console_tail()}"
                + (f"\n--- qemu output ---\n{q}" if q else ""))

    # lifecycle -------------------------------------------------------------
    def start(self) -> "GuestVM":
        ok, why = vm_available()
        if not ok:
            raise VMUnavailable(why)
        t0 = time.monotonic()
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="bootkit-vm-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.xfer_dir.mkdir(exist_ok=True)
        os.chmod(self.xfer_dir, 0o1777)
        self.kernel, self.kver = find_kernel()
        initrd = build_initramfs(self.workdir, self.kver, root_cache=self.root_cache)

        sock_path = str(self.workdir / "agent.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(sock_path)
        listener.listen(1)
        append = "console=ttyS0 panic=-1 quiet rdinit=/init mitigations=off " \
                 "8250.nr_uarts=1 " + self.extra_append
        cmd = [
            QEMU, "-accel", "tcg", "-cpu", "max",
            "-m", str(self.memory), "-smp", str(self.smp),
            "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
            "-monitor", "none",
            "-kernel", self.kernel, "-initrd", str(initrd), "-append", append.strip(),
            "-chardev", f"file,id=con0,path={self.console_log}",
            "-serial", "chardev:con0",
            "-fsdev", "local,id=fsroot,path=/,security_model=none,readonly=on,multidevs=remap",
            "-device", "virtio-9p-pci,fsdev=fsroot,mount_tag=hostroot",
            "-fsdev", f"local,id=fsxfer,path={self.xfer_dir},security_model=none,multidevs=remap",
            "-device", "virtio-9p-pci,fsdev=fsxfer,mount_tag=xfer",
            "-device", "virtio-serial-pci,id=vser0",
            "-chardev", f"socket,id=agent0,path={sock_path}",
            "-device", f"virtserialport,bus=vser0.0,chardev=agent0,name={AGENT_PORT_NAME}",
        ] + self.extra_qemu_args
        (self.workdir / "qemu.cmd").write_text(" ".join(cmd) + "\n")
        with open(self.workdir / "qemu.log", "wb") as qlog:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=qlog,
                                         stderr=subprocess.STDOUT, start_new_session=True,
                                         preexec_fn=_die_with_parent)
        self.alive = True
        _LIVE.add(self)
        deadline = t0 + self.boot_timeout
        try:
            listener.settimeout(0.25)
            while True:
                try:
                    self.sock, _ = listener.accept()
                    break
                except socket.timeout:
                    self._check_deadline(deadline, BootError, "QEMU did not connect "
                                         "to the agent socket")
            self.sock.settimeout(0.25)
            ready = self._wait_reply(0, deadline, BootError, "waiting for the guest agent")
        except BaseException:
            self.kill()
            raise
        finally:
            listener.close()
        self.guest_uname = ready.get("uname")
        self.boot_time = time.monotonic() - t0
        return self

    def _check_deadline(self, deadline, exc, what):
        if self.proc.poll() is not None:
            self.alive = False
            raise exc(f"QEMU exited (status {self.proc.returncode}) while {what}"
                      + self._context())
        if time.monotonic() > deadline:
            self.kill()
            raise exc(f"timed out {what}; the VM was killed" + self._context())

    def _wait_reply(self, rid, deadline, exc, what) -> dict:
        while True:
            while b"\n" in self._buf:
                line, self._buf = self._buf.split(b"\n", 1)
                i = line.find(MARKER)
                if i < 0:
                    continue
                try:
                    msg = json.loads(line[i + len(MARKER):])
                except ValueError:
                    continue
                if msg.get("id") == rid:
                    return msg
            self._check_deadline(deadline, exc, what)
            try:
                chunk = self.sock.recv(1 << 20)
            except socket.timeout:
                continue
            except OSError as e:
                self.kill()
                raise exc(f"agent connection failed ({e}) while {what}" + self._context())
            if not chunk:
                # give QEMU a moment to exit so the error reports its status
                try:
                    self.proc.wait(2)
                except subprocess.TimeoutExpired:
                    pass
                self.kill()
                raise exc(f"agent connection closed while {what}" + self._context())
            self._buf += chunk

    def _request(self, req: dict, wait: float) -> dict:
        if not self.alive:
            raise GuestDied("the VM is not running" + self._context())
        rid = self._next_id
        self._next_id += 1
        req = dict(req, id=rid)
        try:
            self.sock.sendall(json.dumps(req).encode() + b"\n")
        except OSError as e:
            self.kill()
            raise GuestDied(f"cannot send to the agent: {e}" + self._context())
        msg = self._wait_reply(rid, time.monotonic() + wait, GuestDied,
                               f"waiting for the agent to answer {req.get('op')} "
                               f"{req.get('cmd', '')!r}")
        if not msg.get("ok"):
            raise GuestError(f"agent error: {msg.get('error')}")
        return msg

    def run(self, cmd, timeout: float = 60.0, *, check: bool = False,
            input: bytes | str | None = None, env: dict | None = None,
            cwd: str | None = None) -> Result:
        """Run `cmd` (a shell string, or an argv list) in the guest and wait.

        After `timeout` seconds the agent SIGKILLs the command's process
        group and CommandTimeout is raised (the VM stays usable). Processes
        the command leaves behind in its session are killed when it exits:
        use run_bg() for daemons. If the agent itself stops answering, the
        VM is killed and GuestDied is raised. Both messages end with the
        tail of the guest console."""
        req = {"op": "run", "cmd": cmd, "timeout": timeout, "env": env, "cwd": cwd}
        if input is not None:
            if isinstance(input, str):
                input = input.encode()
            req["input"] = base64.b64encode(input).decode()
        r = self._request(req, timeout + 30.0)
        res = Result(cmd, r["rc"], base64.b64decode(r["stdout"]),
                     base64.b64decode(r["stderr"]), r["duration"], r["timed_out"])
        if res.timed_out:
            raise CommandTimeout(f"guest command timed out after {timeout}s: "
                                 + res.describe(1500) + self._context(), res)
        if check:
            res.check()
        return res

    def run_bg(self, cmd, *, env: dict | None = None, cwd: str | None = None) -> BackgroundProcess:
        """Start `cmd` in the background in its own session; returns a handle
        with poll(), output() and stop()."""
        r = self._request({"op": "bg", "cmd": cmd, "env": env, "cwd": cwd}, 30.0)
        return BackgroundProcess(self, r["handle"], r["pid"], cmd)

    def kill(self):
        self.alive = False
        _LIVE.discard(self)
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                self.proc.kill()
            self.proc.wait()
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def close(self, timeout: float = 15.0):
        """Ask the agent to power the guest off; kill QEMU if it does not."""
        if self.alive and self.proc.poll() is None:
            try:
                self._request({"op": "shutdown"}, 10.0)
                self.proc.wait(timeout)
            except (GuestError, subprocess.TimeoutExpired):
                pass
        self.kill()
        if self._own_workdir and not self.keep_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "GuestVM":
        return self.start()

    def __exit__(self, *exc):
        self.close()
