"""The guest kernel imports bootkit devices served over USB/IP from the host.

`bootkit serve ... --transport usbip` runs on the host (this machine),
listening on 127.0.0.1 only.  The guest reaches it through QEMU's user
network with `restrict=on` (no route to the host or anywhere else) plus one
`guestfwd` rule: a guest connection to 10.0.2.100:3240 runs relay.py on the
host, which connects to 127.0.0.1:PORT.  (A `guestfwd=...-tcp:` chardev
would connect once at QEMU start; `cmd:` runs once per connection, and
usbip opens one connection to list and one per attach.)

In the guest, vhci-hcd is a real host controller: `usbip attach` plugs the
device in, the kernel enumerates it, and tools nobody here wrote drive it:
dfu-util flashes an STM32F411 (DfuSe), `mount` + `cp` of a UF2 programs an
RP2040 through usb-storage and vfat.  A re-enumeration (DFU leave, the UF2
bootloader rebooting) closes the USB/IP connection, which the guest sees as
an unplug.  The image file the server writes back on SIGTERM is the check.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from .conftest import require_vm
from .harness import GuestVM

pytestmark = pytest.mark.vm

GUEST_SERVER = "10.0.2.100"  # the guestfwd address: only the relay answers there
DFUSE_ID = "0483:df11"
F411_FLASH = 512 * 1024
RP2040_FLASH = 2 * 1024 * 1024
RP2040_BASE = 0x10000000

# stdin/stdout are the guest's TCP connection (QEMU's slirp gives the command
# a socket); argv[1] is the host loopback port of the USB/IP server.
RELAY = textwrap.dedent("""\
    import os, selectors, socket, sys
    peer = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    peer.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sel = selectors.DefaultSelector()
    sel.register(0, selectors.EVENT_READ)
    sel.register(peer, selectors.EVENT_READ)
    while True:
        for key, _ in sel.select():
            if key.fileobj == 0:
                data = os.read(0, 65536)
                if not data:
                    peer.shutdown(socket.SHUT_WR)
                    sel.unregister(0)
                    continue
                peer.sendall(data)
            else:
                data = peer.recv(65536)
                if not data:
                    sys.exit(0)
                while data:
                    data = data[os.write(1, data):]
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def net_guest(tmp_path_factory):
    """A guest of its own with user networking, vhci-hcd, usb-storage and vfat loaded."""
    require_vm()
    if shutil.which("usbip") is None:
        pytest.skip("usbip not installed (apt-get install usbip; see tests/vm/apt-packages.txt)")
    port = _free_port()
    relay = tmp_path_factory.mktemp("usbip-relay") / "relay.py"
    relay.write_text(RELAY)
    netdev = f"user,id=n0,restrict=on,guestfwd=tcp:{GUEST_SERVER}:3240-cmd:{sys.executable} {relay} {port}"
    assert "," not in f"{sys.executable} {relay}", "QEMU would split the guestfwd command at a comma"
    vm = GuestVM(keep_workdir=bool(os.environ.get("BOOTKIT_VM_KEEP")),
                 extra_qemu_args=("-netdev", netdev, "-device", "virtio-net-pci,netdev=n0"))
    vm.start()
    try:
        r = vm.run("modprobe -a virtio_net vhci-hcd usb-storage vfat nls_cp437 nls_ascii nls_iso8859-1; "
                   "modprobe vhci-hcd", timeout=60)
        if r.rc != 0:
            pytest.skip("the guest kernel cannot load vhci-hcd: " + r.describe())
        vm.run("for n in /sys/class/net/*; do i=${n##*/}; [ $i = lo ] && continue; "
               "ip link set $i up && ip addr add 10.0.2.15/24 dev $i && exit 0; done; exit 1", check=True)
        vm.usbip_port = port
        yield vm
    finally:
        vm.close()


def usb_ids(guest: GuestVM) -> set[str]:
    r = guest.run("for d in /sys/bus/usb/devices/*; do [ -e $d/idVendor ] && "
                  "echo $(cat $d/idVendor):$(cat $d/idProduct); done; true", check=True)
    return set(r.stdout.split())


def wait_until(what: str, check, timeout: float = 30.0, context=lambda: ""):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not after {timeout}s\n{context()}")
        time.sleep(0.3)


class HostServer:
    """`bootkit serve PERSONALITY --transport usbip` on the host's loopback."""

    def __init__(self, personality: str, chip: str, image, port: int, *extra: str):
        self.image = image
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bootkit", "serve", personality, "--chip", chip, "--image", str(image),
             "--transport", "usbip", "--listen", f"127.0.0.1:{port}", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        wait_until("the usbip server listening", lambda: any("exporting" in x for x in self.lines) or
                   self.proc.poll() is not None, 30, self.describe)
        assert self.proc.poll() is None, self.describe()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def describe(self) -> str:
        return f"--- host server (rc={self.proc.poll()}) ---\n{self.log}"

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self._reader.join(5)
        return rc


def attach(guest: GuestVM, server: HostServer, busid: str = "1-1"):
    r = guest.run(f"usbip list -r {GUEST_SERVER}", timeout=60)
    assert r.rc == 0 and busid in r.stdout, r.describe() + "\n" + server.describe()
    r = guest.run(f"usbip attach -r {GUEST_SERVER} -b {busid}", timeout=60)
    assert r.rc == 0, r.describe() + "\n" + server.describe()
    return r


def detach_all(guest: GuestVM):
    guest.run("for p in $(usbip port 2>/dev/null | sed -n 's/^Port \\([0-9]*\\):.*/\\1/p'); do "
              "usbip detach -p $p; done; true", timeout=60)


def test_dfu_util_flashes_host_served_f411_through_vhci(net_guest, tmp_path):
    g = net_guest
    fw = random.Random(10).randbytes(40 * 1024 + 123)
    (g.xfer_dir / "usbip-fw.bin").write_bytes(fw)
    image = tmp_path / "f411.bin"
    server = HostServer("dfu", "stm32f411", image, g.usbip_port)
    try:
        t0 = time.monotonic()
        attach(g, server)
        wait_until("0483:df11 enumerated on vhci", lambda: DFUSE_ID in usb_ids(g), 30,
                   lambda: server.describe() + "\n" + g.console_tail())
        attached = time.monotonic() - t0
        r = g.run("dfu-util -l", timeout=60)
        assert "Found DFU: [0483:df11]" in r.stdout, r.describe()
        t0 = time.monotonic()
        r = g.run("dfu-util -a 0 -s 0x08000000:leave -D usbip-fw.bin", timeout=180, cwd=g.guest_xfer_dir)
        took = time.monotonic() - t0
        assert r.rc == 0, r.describe() + "\n" + server.describe()
        assert "Download done." in r.stdout or "File downloaded successfully" in r.stdout, r.describe()
        # leave = re-enumeration: the server closes the import, vhci sees an unplug
        wait_until("the DFU device unplugged after leave", lambda: DFUSE_ID not in usb_ids(g), 30,
                   lambda: server.describe())
        wait_until("re-enumeration logged", lambda: "re-enumerated" in server.log, 10, server.describe)
        # the new device (the application, with its DFU run-time interface)
        # is exported under the same bus id: attaching again shows it
        attach(g, server)
        r = wait_until("the run-time device enumerated", lambda: (
            lambda res: res if "Found Runtime" in res.stdout else None)(g.run("dfu-util -l", timeout=60)), 30,
            server.describe)
        print(f"usbip attach {attached:.1f}s, dfu-util download of {len(fw)} bytes over vhci + slirp {took:.1f}s; "
              + r.stdout.split("Found Runtime: ", 1)[1].splitlines()[0])
    finally:
        detach_all(g)
        rc = server.stop()
    assert rc == 0, server.describe()
    img = image.read_bytes()
    assert len(img) == F411_FLASH
    assert img[:len(fw)] == fw, server.describe()
    assert img[len(fw):] == b"\xff" * (F411_FLASH - len(fw))


def test_uf2_copy_programs_host_served_rp2040_through_vhci(net_guest, tmp_path):
    g = net_guest
    fw = random.Random(11).randbytes(64 * 1024 + 3 * 256)
    (tmp_path / "fw.bin").write_bytes(fw)
    subprocess.run([sys.executable, "-m", "bootkit", "convert", str(tmp_path / "fw.bin"),
                    str(g.xfer_dir / "usbip-fw.uf2"), "--base", hex(RP2040_BASE), "--family", "rp2040"],
                   check=True, capture_output=True)
    image = tmp_path / "rp2040.bin"
    server = HostServer("msc", "rp2040", image, g.usbip_port)
    mnt = "/tmp/usbip-uf2"
    try:
        before = set(g.run("ls /sys/block", check=True).stdout.split())
        attach(g, server)
        disk = wait_until("a usb-storage disk", lambda: sorted(
            set(g.run("ls /sys/block", check=True).stdout.split()) - before), 60,
            lambda: server.describe() + "\n" + g.console_tail())[0]
        dev = f"/dev/{disk}"
        wait_until(f"{dev} readable", lambda: g.run(f"blockdev --getsize64 {dev}", timeout=30).ok, 30)
        r = g.run(f"mkdir -p {mnt} && mount -t vfat {dev} {mnt} && ls -l {mnt} && cat {mnt}/INFO_UF2.TXT",
                  timeout=60)
        assert r.rc == 0, r.describe() + "\n" + g.console_tail()
        t0 = time.monotonic()
        # the UF2 bootloader reboots once the last block is in: the copy (or
        # the sync) may see the disk vanish, as with a real RP2040
        r = g.run(f"cp {g.guest_path('usbip-fw.uf2')} {mnt}/ && sync", timeout=180)
        took = time.monotonic() - t0
        wait_until("the mass storage device unplugged after the last block", lambda: not g.run(
            f"test -e /sys/block/{disk}").ok, 60, lambda: r.describe() + "\n" + server.describe())
        print(f"cp + sync of a {len(fw)}-byte image as UF2 over vhci + slirp: {took:.1f}s (cp rc={r.rc})")
    finally:
        g.run(f"umount -l {mnt}; true", timeout=30)
        detach_all(g)
        rc = server.stop()
    assert rc == 0, server.describe()
    img = image.read_bytes()
    assert len(img) == RP2040_FLASH
    assert img[:len(fw)] == fw, server.describe()
    assert set(img[len(fw):]) <= {0xFF}
    assert "re-enumerated" in server.log, server.describe()
