"""Smoke tests of the VM harness itself: the guest boots the chosen kernel,
sees the host root read-only, shares a writable directory both ways, runs
the kernel's USB gadget stack on dummy_hcd, and survives a hung command."""

import os
import sys
import time

import pytest

from .harness import BootError, CommandTimeout, GuestVM, find_kernel

pytestmark = pytest.mark.vm

VID, PID = "1209", "b0b7"  # pid.codes test range; only ever seen inside the VM
GADGET = "/sys/kernel/config/usb_gadget/bootkit_smoke"


def test_boots_chosen_kernel(guest: GuestVM):
    _, kver = find_kernel()
    r = guest.run("uname -r", check=True)
    assert r.stdout.strip() == kver == guest.kver
    assert guest.boot_time is not None and guest.boot_time > 0


def test_environment(guest: GuestVM):
    r = guest.run('echo "$HOME|$PYTHONDONTWRITEBYTECODE"; command -v modprobe', check=True)
    home_flag, modprobe = r.stdout.splitlines()
    assert home_flag == "/tmp|1"
    assert modprobe.endswith("sbin/modprobe")
    # the host interpreter and the editable bootkit install work from the 9p root
    r = guest.run(["python3", "-c", "import sys, bootkit; print(sys.executable); print(bootkit.__file__)"],
                  check=True)
    exe, bootkit_file = r.stdout.splitlines()
    import bootkit
    assert os.path.realpath(exe) == os.path.realpath(sys.executable)
    assert bootkit_file == bootkit.__file__


def test_root_is_read_only(guest: GuestVM):
    r = guest.run("touch /usr/bootkit-vm-must-not-exist")
    assert r.rc != 0
    assert "Read-only file system" in r.stderr
    assert not os.path.exists("/usr/bootkit-vm-must-not-exist")
    # ... while the tmpfs places a read-only root needs are writable
    guest.run("touch /tmp/a /run/a /var/tmp/a /dev/shm/a", check=True)


def test_xfer_share_both_ways(guest: GuestVM):
    payload = bytes(range(256)) * 64
    (guest.xfer_dir / "from_host.bin").write_bytes(payload)
    r = guest.run(f"sha256sum {guest.guest_path('from_host.bin')} && "
                  f"cp {guest.guest_path('from_host.bin')} {guest.guest_path('from_guest.bin')} && "
                  f"echo hello from the guest > {guest.guest_path('note.txt')}", check=True)
    import hashlib
    assert r.stdout.split()[0] == hashlib.sha256(payload).hexdigest()
    assert (guest.xfer_dir / "from_guest.bin").read_bytes() == payload
    assert (guest.xfer_dir / "note.txt").read_text() == "hello from the guest\n"


def test_output_is_binary_safe(guest: GuestVM):
    data = bytes(range(256)) + b"\n\n@@BOOTKIT-AGENT@@ {}\n" + b"\r\x00" * 1000
    r = guest.run("cat; echo err >&2; exit 3", input=data)
    assert r.rc == 3
    assert r.stdout_bytes == data
    assert r.stderr == "err\n"


def test_gadget_modules_and_dummy_udc(guest: GuestVM):
    # -a: without it modprobe takes the further names as module parameters
    guest.run("modprobe -a dummy_hcd libcomposite usb_f_fs", check=True)
    r = guest.run("lsmod", check=True)
    for mod in ("dummy_hcd", "libcomposite", "usb_f_fs"):
        assert mod in r.stdout.split(), r.stdout
    r = guest.run("ls /sys/class/udc", check=True)
    assert any(name.startswith("dummy_udc") for name in r.stdout.split()), r.stdout


def _usb_ids(guest):
    """VID:PID of every device the guest's USB host side has enumerated."""
    r = guest.run("for d in /sys/bus/usb/devices/*; do [ -e $d/idVendor ] && "
                  "echo $(cat $d/idVendor):$(cat $d/idProduct); done; true", check=True)
    return set(r.stdout.split())


def test_configfs_acm_gadget_enumerates(guest: GuestVM):
    guest.run("modprobe -a dummy_hcd libcomposite", check=True)
    udc = guest.run("ls /sys/class/udc | head -n1", check=True).stdout.strip()
    assert udc.startswith("dummy_udc")
    setup = f"""
set -e
G={GADGET}
mkdir $G
echo 0x{VID} > $G/idVendor
echo 0x{PID} > $G/idProduct
mkdir $G/strings/0x409
echo bootkit > $G/strings/0x409/manufacturer
echo "VM smoke" > $G/strings/0x409/product
echo 0001 > $G/strings/0x409/serialnumber
mkdir $G/configs/c.1
mkdir $G/configs/c.1/strings/0x409
echo acm > $G/configs/c.1/strings/0x409/configuration
mkdir $G/functions/acm.usb0
ln -s $G/functions/acm.usb0 $G/configs/c.1/
echo {udc} > $G/UDC
"""
    teardown = f"""
G={GADGET}
[ -d $G ] || exit 0
echo "" > $G/UDC 2>/dev/null
rm -f $G/configs/c.1/acm.usb0
rmdir $G/configs/c.1/strings/0x409 $G/configs/c.1 $G/functions/acm.usb0 $G/strings/0x409 $G
"""
    try:
        guest.run(setup, check=True)
        want = f"{VID}:{PID}"
        deadline = time.monotonic() + 20
        while want not in _usb_ids(guest):
            assert time.monotonic() < deadline, f"{want} never enumerated: {_usb_ids(guest)}"
            time.sleep(0.5)
        r = guest.run(f"lsusb -d {VID}:{PID}", check=True)
        assert f"ID {VID}:{PID}" in r.stdout
        # pyusb (libusb) reads the string descriptors through the guest kernel
        r = guest.run(["python3", "-c", "import usb.core; d = usb.core.find("
                       f"idVendor=0x{VID}, idProduct=0x{PID}); print(d.manufacturer, '/', d.product)"],
                      check=True)
        assert r.stdout.strip() == "bootkit / VM smoke"
        r = guest.run("for i in $(seq 50); do [ -e /dev/ttyACM0 ] && break; sleep 0.1; done; "
                      "ls /dev/ttyACM0", check=False)
        assert r.ok, "cdc_acm did not bind the gadget:\n" + r.describe()
    finally:
        td = guest.run(teardown)
    assert td.ok, td.describe()
    guest.run(f"test ! -e {GADGET}", check=True)
    deadline = time.monotonic() + 10
    while f"{VID}:{PID}" in _usb_ids(guest):
        assert time.monotonic() < deadline, "device still present after unbinding"
        time.sleep(0.5)


def test_background_process(guest: GuestVM):
    with guest.run_bg("echo started; trap 'echo bye; exit 7' TERM; "
                      "while :; do sleep 0.1; done") as bg:
        deadline = time.monotonic() + 10
        while "started" not in bg.output().stdout:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert bg.poll() is None
        res = bg.stop()
    assert res.rc == 7, res.describe()
    assert res.stdout == "started\nbye\n"


def test_hung_command_raises_with_console_tail(guest: GuestVM):
    t0 = time.monotonic()
    with pytest.raises(CommandTimeout) as info:
        guest.run("echo partial; sleep 600", timeout=3)
    elapsed = time.monotonic() - t0
    assert elapsed < 15
    message = str(info.value)
    assert "guest console" in message
    # the console's last line is in the message (earlier tests on the shared VM decide which line that is)
    last = guest.console_log.read_bytes().decode("utf-8", "replace").replace("\r", "").splitlines()[-1]
    assert last in message
    assert info.value.result.stdout == "partial\n"
    # the same VM still answers
    assert guest.alive
    assert guest.run("echo still here", check=True).stdout == "still here\n"
    assert guest.run("pgrep -x 'sleep' || true").stdout.strip() == ""


def test_boot_that_hangs_is_killed(vm_tools):
    vm = GuestVM(timeout=1.5)
    t0 = time.monotonic()
    with pytest.raises(BootError) as info:
        vm.start()
    try:
        assert time.monotonic() - t0 < 15
        assert "guest console" in str(info.value)
        assert vm.proc.poll() is not None, "QEMU still running"
    finally:
        vm.close()
