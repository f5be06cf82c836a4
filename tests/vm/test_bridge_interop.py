"""The kernel copies a UF2 onto our drive, and a DfuSe device on the HOST gets the firmware
(issue 23, must-show "in the VM").

On the host: `bootkit serve dfu --dialect dfuse` of a simulated stm32f411 on USB/IP
(127.0.0.1 only).  In the guest: `bootkit serve msc --chip stm32f411 --target
usbip://10.0.2.100:3240 --transport functionfs`, the UF2 drive on dummy_hcd whose memory
is that DfuSe device, reached through bootkit's userspace USB/IP client (no vhci-hcd) and
QEMU's guestfwd relay (see test_usbip_interop.py: one relay per connection).  The guest
kernel's usb-storage + vfat mount the drive and `cp fw.uf2 && sync` programs it; the
drive leaves once the DfuSe device confirmed its leave (manifest).  Then:

- the host's image file of the DfuSe device (written back on SIGTERM) holds the firmware;
- a second drive in front of the same device (the first one left for the application)
  is mounted, and CURRENT.UF2 read through it (the kernel's vfat read, past no cache: a
  new mount) carries the same bytes.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time

import pytest

from bootkit.formats.uf2 import UF2_BLOCK_SIZE, UF2Block

from .conftest import require_vm
from .harness import GuestVM
from .served import GADGET_DIR, wait_until
from .test_msc_interop import find_drive
from .test_usbip_interop import GUEST_SERVER, RELAY, HostServer, _free_port

pytestmark = pytest.mark.vm

F411_BASE = 0x08000000
F411_FLASH = 512 * 1024
MNT = "/tmp/bridge-drive"
MODULES = ("virtio_net dummy_hcd libcomposite usb_f_fs usb-storage sd_mod vfat nls_cp437 nls_utf8 "
           "nls_iso8859-1")


@pytest.fixture(scope="module")
def bridge_guest(tmp_path_factory):
    """A guest of its own: user networking restricted to the relay (as test_usbip_interop's),
    plus dummy_hcd and FunctionFS for the gadget, usb-storage and vfat for the drive."""
    require_vm()
    port = _free_port()
    relay = tmp_path_factory.mktemp("bridge-relay") / "relay.py"
    relay.write_text(RELAY)
    netdev = f"user,id=n0,restrict=on,guestfwd=tcp:{GUEST_SERVER}:3240-cmd:{sys.executable} {relay} {port}"
    assert "," not in f"{sys.executable} {relay}", "QEMU would split the guestfwd command at a comma"
    vm = GuestVM(keep_workdir=bool(os.environ.get("BOOTKIT_VM_KEEP")),
                 extra_qemu_args=("-netdev", netdev, "-device", "virtio-net-pci,netdev=n0"))
    vm.start()
    try:
        vm.run(f"modprobe -a {MODULES}", check=True, timeout=60)
        vm.run("for n in /sys/class/net/*; do i=${n##*/}; [ $i = lo ] && continue; "
               "ip link set $i up && ip addr add 10.0.2.15/24 dev $i && exit 0; done; exit 1", check=True)
        vm.usbip_port = port
        yield vm
    finally:
        vm.close()


def serve_front(g: GuestVM):
    """`bootkit serve msc` in the guest in front of the host's DfuSe device; waits for its drive."""
    daemon = g.run_bg(f"exec bootkit serve msc --chip stm32f411 --target usbip://{GUEST_SERVER}:3240 "
                      "--transport functionfs")
    dev = wait_until(g, lambda: find_drive(g) or (daemon.poll() is not None and "exited"),
                     "the bridged UF2 drive's block device", timeout=60, daemon=daemon)
    assert dev != "exited", "serve exited early:\n" + daemon.output().describe()
    return daemon, dev


def test_cp_onto_the_guest_drive_programs_the_host_dfuse_device(bridge_guest, tmp_path):
    g = bridge_guest
    fw = random.Random(2323).randbytes(24 * 1024 + 100)  # 97 UF2 blocks, two 16 KiB sectors
    (tmp_path / "fw.bin").write_bytes(fw)
    subprocess.run([sys.executable, "-m", "bootkit", "convert", str(tmp_path / "fw.bin"),
                    str(g.xfer_dir / "bridge-fw.uf2"), "--base", hex(F411_BASE), "--family", "stm32f4"],
                   check=True, capture_output=True)
    image = tmp_path / "f411.bin"
    server = HostServer("dfu", "stm32f411", image, g.usbip_port, "--dialect", "dfuse")
    fronts = []
    blocks = -(-len(fw) // 256)  # UF2 blocks of 256 bytes (bootkit's CURRENT.UF2, uf2conv's default)
    try:
        # 1. the kernel copies the UF2 onto the drive; the drive leaves once the back-end manifested
        front, dev = serve_front(g)
        fronts.append(front)
        r = g.run(f"mkdir -p {MNT} && mount -t vfat {dev} {MNT} && cat {MNT}/INFO_UF2.TXT", timeout=60)
        assert r.rc == 0, r.describe()
        t0 = time.monotonic()
        cp = g.run(f"cp {g.guest_path('bridge-fw.uf2')} {MNT}/ && sync", timeout=300)
        wait_until(g, lambda: not g.run(f"test -e /sys/block/{os.path.basename(dev)}").ok,
                   f"{dev} gone after the last block", timeout=60, daemon=front)
        took = time.monotonic() - t0
        g.run(f"umount {MNT} 2>/dev/null || umount -l {MNT}; true", timeout=60)
        assert cp.rc == 0, cp.describe() + "\n" + front.output().describe() + "\n" + server.describe()
        wait_until(g, lambda: front.poll() is not None, "the front's serve exiting by itself (its drive left)",
                   timeout=60, daemon=front)
        res = front.stop()
        assert res.rc == 0, res.describe()
        assert "leave: manifested" in server.log, server.describe()  # the back-end confirmed its leave

        # 2. a second drive in front of the same device: CURRENT.UF2 through the kernel's vfat
        front2, dev2 = serve_front(g)
        fronts.append(front2)
        r = g.run(f"mount -t vfat -o ro {dev2} {MNT} && dd if={MNT}/CURRENT.UF2 "
                  f"of={g.guest_path('bridge-current.uf2')} bs=512 count={blocks} 2>&1; rc=$?; "
                  f"umount {MNT}; exit $rc", timeout=300)
        assert r.rc == 0, r.describe() + "\n" + front2.output().describe()
        res2 = front2.stop()
        assert res2.rc == 0, res2.describe()
        assert g.run(f"test ! -e {GADGET_DIR}").ok, "gadget left behind in configfs:\n" + res2.describe()
    finally:
        g.run(f"umount -l {MNT} 2>/dev/null; true", timeout=30)
        for f in fronts:
            f.stop()
        rc = server.stop()
    assert rc == 0, server.describe()
    assert "flash written back (application valid)" in server.log, server.describe()
    img = image.read_bytes()
    assert len(img) == F411_FLASH
    assert img[:len(fw)] == fw, server.describe()
    # the first blocks of CURRENT.UF2 (the whole 512 KiB would be 1 MiB through the relay)
    raw = (g.xfer_dir / "bridge-current.uf2").read_bytes()
    assert len(raw) == blocks * UF2_BLOCK_SIZE, len(raw)
    got = [UF2Block.unpack(raw[i:i + UF2_BLOCK_SIZE]) for i in range(0, len(raw), UF2_BLOCK_SIZE)]
    assert [b.target_addr for b in got] == [F411_BASE + 256 * i for i in range(blocks)]
    assert b"".join(bytes(b.data) for b in got)[:len(fw)] == fw
    print(f"cp + sync of a {len(fw)}-byte image as UF2 onto the guest's drive, programmed on the host's "
          f"DfuSe device over USB/IP, until the drive left: {took:.1f}s")
