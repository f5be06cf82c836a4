"""The Linux USB gadget transport: configfs (libcomposite) + FunctionFS.

The kernel is the device controller's driver and composes the device: it
answers the chapter-9 standard requests (GET_DESCRIPTOR, SET_ADDRESS,
SET_CONFIGURATION, SET_INTERFACE) from what configfs and FunctionFS were
given, and hands each bootkit :class:`~bootkit.usb.device.Function` exactly
what the sans-I/O model expects: class/vendor requests with function-local
interface numbers in wIndex (f_fs.c ``ffs_func_revmap_intf``) and one file
per endpoint (``ep1..epN``, in descriptor order).  This module owns the
I/O: it builds the gadget, reads ep0 events, runs one thread per endpoint,
calls :meth:`Target.poll` regularly and rebuilds the gadget when the target
re-enumerates (DFU detach, leave after manifestation).

Only the standard library is used: os, struct, select, threading, signal
and ctypes (for mount(2)/umount2(2)).  References:
Documentation/usb/functionfs.rst, Documentation/usb/gadget_configfs.rst,
include/uapi/linux/usb/functionfs.h and drivers/usb/gadget/function/f_fs.c.

Known limits of FunctionFS (not of bootkit), checked on Debian's 6.1:

* SET_INTERFACE is handled by the kernel (composite.c calls the function's
  set_alt, and f_fs only reports FUNCTIONFS_ENABLE without the alternate
  number), so a function cannot know which alternate setting the host
  chose.  We assume alternate 0.
* Until f_fs learnt the DFU functional descriptor (Linux 6.12, with
  Documentation/usb/functionfs-desc.rst; seen working on Debian's 6.12.95),
  ``ffs_do_single_desc`` accepts a class-specific descriptor 0x21 only
  after a HID or CCID interface: the DFU one is refused with EINVAL.  We then retry without the
  class-specific descriptors the kernel refuses and log it; host tools must
  be told what the descriptor would have said (dfu-util ``-t 2048``, and
  ``-s ADDRESS`` to select DfuSe).
* After the data stage of a control OUT request the kernel has already
  acknowledged the status stage, so such a request can no longer be
  STALLed; a DFU engine that refuses a DNLOAD block shows dfuERROR at the
  next GETSTATUS instead (DFU 1.1 section 6.1.2 allows either).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import errno
import os
import select
import signal
import struct
import threading
import time

from ..usb.device import (
    RECIP_ENDPOINT,
    Device,
    Function,
    SetupPacket,
    Stall,
    Target,
)

CONFIGFS = "/sys/kernel/config"
GADGETS = CONFIGFS + "/usb_gadget"
UDC_CLASS = "/sys/class/udc"
FFS_MOUNT_ROOT = "/run/bootkit/ffs"
DEFAULT_GADGET = "bootkit"

# include/uapi/linux/usb/functionfs.h
FUNCTIONFS_DESCRIPTORS_MAGIC_V2 = 3
FUNCTIONFS_STRINGS_MAGIC = 2
FUNCTIONFS_HAS_FS_DESC = 1
FUNCTIONFS_HAS_HS_DESC = 2
FUNCTIONFS_ALL_CTRL_RECIP = 64

# enum usb_functionfs_event_type
FUNCTIONFS_BIND, FUNCTIONFS_UNBIND, FUNCTIONFS_ENABLE, FUNCTIONFS_DISABLE, \
    FUNCTIONFS_SETUP, FUNCTIONFS_SUSPEND, FUNCTIONFS_RESUME = range(7)
EVENT_NAMES = {FUNCTIONFS_BIND: "BIND", FUNCTIONFS_UNBIND: "UNBIND", FUNCTIONFS_ENABLE: "ENABLE",
               FUNCTIONFS_DISABLE: "DISABLE", FUNCTIONFS_SETUP: "SETUP", FUNCTIONFS_SUSPEND: "SUSPEND",
               FUNCTIONFS_RESUME: "RESUME"}
# struct usb_functionfs_event: struct usb_ctrlrequest (8 bytes), u8 type, u8 _pad[3]
EVENT_SIZE = 12

# f_fs accepts class descriptor 0x21 after HID and CCID interfaces only
# (DFU too from Linux 6.12).
USB_CLASS_HID, USB_CLASS_CCID = 0x03, 0x0B

POLL_INTERVAL = 0.02  # seconds between Target.poll() calls when idle
# A real host notices a device that detached itself only at its next hub
# status poll (USB 2.0 11.12.3/11.24.2.7: the hub reports C_PORT_CONNECTION
# through its interrupt endpoint), some milliseconds after the device's last
# status stage; tools rely on that (dfu-programmer `start` releases the
# interface after LUFA's final DNLOAD, and LUFA detaches 1 ms later).
# Unbinding at once would make dummy_hcd report the disconnect before the
# tool's next call, so the old gadget stays bound (still answering) this long.
DETACH_GRACE = 0.25
LANG_EN_US = 0x0409


class TransportUnavailable(RuntimeError):
    """The machine cannot carry a gadget; the message says what to do."""


# --------------------------------------------------------------------------
# prerequisites

def _mounts() -> list[tuple[str, str, str]]:
    try:
        with open("/proc/mounts") as f:
            return [tuple(line.split()[:3]) for line in f if len(line.split()) >= 3]
    except OSError:
        return []


def _filesystems() -> set[str]:
    try:
        with open("/proc/filesystems") as f:
            return {line.split()[-1] for line in f if line.strip()}
    except OSError:
        return set()


def _functionfs_present() -> bool:
    # f_fs.c registers the "functionfs" filesystem only when the first
    # ffs.* instance is created, so look for the module too.
    if "functionfs" in _filesystems() or os.path.isdir("/sys/module/usb_f_fs"):
        return True
    try:
        with open(f"/lib/modules/{os.uname().release}/modules.builtin") as f:
            return any(line.strip().endswith("/usb_f_fs.ko") for line in f)
    except OSError:
        return False


def available_udcs() -> list[str]:
    try:
        return sorted(os.listdir(UDC_CLASS))
    except OSError:
        return []


def _udc_speed(udc: str) -> str:
    """"full" or "high", from /sys/class/udc/UDC/current_speed ("high-speed", ...)."""
    try:
        with open(os.path.join(UDC_CLASS, udc, "current_speed")) as f:
            text = f.read().strip()
    except OSError:
        return "high"
    return "full" if text in ("full-speed", "low-speed") else "high"


def _udc_owner(udc: str) -> str | None:
    """Name of the configfs gadget bound to `udc`, if any."""
    try:
        names = os.listdir(GADGETS)
    except OSError:
        return None
    for name in names:
        try:
            with open(os.path.join(GADGETS, name, "UDC")) as f:
                if f.read().strip() == udc:
                    return name
        except OSError:
            continue
    return None


def check_prerequisites(udc: str | None = None, gadget_name: str = DEFAULT_GADGET) -> str:
    """Return the UDC to bind, or raise TransportUnavailable with a one-line fix."""
    if os.geteuid() != 0 and not os.access(GADGETS, os.W_OK):
        raise TransportUnavailable(
            "the functionfs transport needs root (configfs gadgets and mount(2)): run it with sudo")
    if not any(fstype == "configfs" and mnt == CONFIGFS for _, mnt, fstype in _mounts()):
        raise TransportUnavailable(
            f"configfs not mounted at {CONFIGFS}: run `modprobe libcomposite` and "
            f"`mount -t configfs none {CONFIGFS}`")
    if not os.path.isdir(GADGETS):
        raise TransportUnavailable(
            f"{GADGETS} is missing (libcomposite not loaded): run `modprobe libcomposite`")
    if not _functionfs_present():
        raise TransportUnavailable("FunctionFS is not available: run `modprobe usb_f_fs`")
    udcs = available_udcs()
    if not udcs:
        raise TransportUnavailable(
            f"no UDC in {UDC_CLASS}: load dummy_hcd (`modprobe dummy_hcd`) or use a board with a "
            "device controller (Raspberry Pi Zero: dtoverlay=dwc2, `modprobe dwc2`)")
    if udc is None:
        free = [u for u in udcs if _udc_owner(u) in (None, gadget_name)]
        if not free:
            raise TransportUnavailable(
                f"every UDC is taken ({', '.join(f'{u} by gadget {_udc_owner(u)}' for u in udcs)}): "
                f"unbind one (`echo > {GADGETS}/NAME/UDC`) or pass --udc")
        udc = free[0]
    elif udc not in udcs:
        raise TransportUnavailable(f"no UDC named {udc!r} in {UDC_CLASS} (present: {', '.join(udcs)})")
    else:
        owner = _udc_owner(udc)
        if owner not in (None, gadget_name):
            raise TransportUnavailable(
                f"UDC {udc} is already bound to gadget {owner!r}: `echo > {GADGETS}/{owner}/UDC` first")
    return udc


# --------------------------------------------------------------------------
# mount(2) through libc

_libc = None


def _libc_call(name, *args):
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    rc = getattr(_libc, name)(*args)
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{name}: {os.strerror(e)}")


def _mount_functionfs(instance: str, path: str) -> None:
    os.makedirs(path, exist_ok=True)
    _libc_call("mount", instance.encode(), path.encode(), b"functionfs", ctypes.c_ulong(0), None)


def _umount(path: str) -> None:
    MNT_DETACH = 2
    _libc_call("umount2", path.encode(), ctypes.c_int(MNT_DETACH))


# --------------------------------------------------------------------------
# descriptor blobs for ep0 (functionfs.h: descriptors V2 and strings)

@dataclasses.dataclass
class _FunctionLayout:
    descriptors: bytes
    strings: bytes
    endpoints: list  # index i -> (Endpoint, descriptor address) of file ep{i+1}
    dropped: list  # class-specific descriptor types left out for the kernel


def _speed_set(fn: Function, speed: str, strings: list[str], ep_keys: list, drop_class: bool):
    """Descriptors of one speed; returns (blob, count, dropped types)."""
    out, count, dropped = [], 0, []
    ep_index = 0
    for intf in fn.interfaces(speed):
        sidx = 0
        if intf.name:
            if intf.name not in strings:
                strings.append(intf.name)
            sidx = strings.index(intf.name) + 1
        head = bytearray(dataclasses.replace(intf, endpoints=[], extra=b"").descriptor(intf.number, sidx, speed))
        head[4] = len(intf.endpoints)  # bNumEndpoints: the endpoints follow the class descriptors below
        out.append(bytes(head))
        count += 1
        for raw in _split(intf.extra):
            if drop_class and 0x20 <= raw[1] <= 0x2F and intf.cls not in (USB_CLASS_HID, USB_CLASS_CCID):
                dropped.append(raw[1])
                continue
            out.append(raw)
            count += 1
        for ep in intf.endpoints:
            ep_index += 1
            key = (ep.number, ep.direction)
            if len(ep_keys) < ep_index:
                ep_keys.append(key)
            address = ep_index | (0x80 if ep.is_in else 0)
            for raw in _split(ep.descriptor(speed, address)):
                # class-specific endpoint descriptors (USB-MIDI CS_ENDPOINT 0x25) too
                if drop_class and 0x20 <= raw[1] <= 0x2F and intf.cls not in (USB_CLASS_HID, USB_CLASS_CCID):
                    dropped.append(raw[1])
                    continue
                out.append(raw)
                count += 1
    return b"".join(out), count, dropped


def _split(blob: bytes) -> list[bytes]:
    out, i = [], 0
    while i + 1 < len(blob) and blob[i] >= 2:
        out.append(blob[i:i + blob[i]])
        i += blob[i]
    return out


def function_layout(fn: Function, *, drop_class: bool = False) -> _FunctionLayout:
    strings: list[str] = []
    ep_keys: list = []
    fs, fs_count, dropped = _speed_set(fn, "full", strings, ep_keys, drop_class)
    hs, hs_count, _ = _speed_set(fn, "high", strings, ep_keys, drop_class)
    for s in fn.strings():
        if s not in strings:
            strings.append(s)
    body = struct.pack("<II", fs_count, hs_count) + fs + hs
    # ALL_CTRL_RECIP: composite.c hands requests with recipient "other" (usblp's
    # SOFT_RESET, bmRequestType 0x23) to a function only when it asks for them.
    flags = FUNCTIONFS_HAS_FS_DESC | FUNCTIONFS_HAS_HS_DESC | FUNCTIONFS_ALL_CTRL_RECIP
    descs = struct.pack("<III", FUNCTIONFS_DESCRIPTORS_MAGIC_V2, 12 + len(body), flags) + body
    if strings:
        text = struct.pack("<H", LANG_EN_US) + b"".join(s.encode("utf-8") + b"\0" for s in strings)
        strs = struct.pack("<IIII", FUNCTIONFS_STRINGS_MAGIC, 16 + len(text), len(strings), 1) + text
    else:
        strs = struct.pack("<IIII", FUNCTIONFS_STRINGS_MAGIC, 16, 0, 0)
    by_key = {(ep.number, ep.direction): ep for ep in fn.endpoints()}
    eps = [(by_key[k], (i + 1) | (0x80 if k[1] == "in" else 0)) for i, k in enumerate(ep_keys)]
    return _FunctionLayout(descs, strs, eps, sorted(set(dropped)))


# --------------------------------------------------------------------------
# one gadget (one Device) in configfs

def _write(path: str, value) -> None:
    with open(path, "w") as f:
        f.write(str(value) + "\n" if not isinstance(value, str) or value else "\n")


class _Gadget:
    def __init__(self, device: Device, name: str, udc: str, log):
        self.device, self.name, self.udc, self.log = device, name, udc, log
        self.path = os.path.join(GADGETS, name)
        self.created: list[tuple[str, str]] = []  # (kind, path) to undo in reverse
        self.ports: list[_FunctionPort] = []
        self.bound = False

    def build(self) -> None:
        info = self.device.info
        g = self.path
        self._mkdir(g)
        for field, value in (("idVendor", f"0x{info.idVendor:04x}"), ("idProduct", f"0x{info.idProduct:04x}"),
                             ("bcdDevice", f"0x{info.bcdDevice:04x}"), ("bcdUSB", f"0x{info.bcdUSB:04x}"),
                             ("bDeviceClass", info.bDeviceClass), ("bDeviceSubClass", info.bDeviceSubClass),
                             ("bDeviceProtocol", info.bDeviceProtocol),
                             ("bMaxPacketSize0", info.bMaxPacketSize0)):
            _write(os.path.join(g, field), value)
        self._mkdir(os.path.join(g, "strings", "0x409"))
        for field, value in (("manufacturer", info.manufacturer), ("product", info.product),
                             ("serialnumber", info.serial)):
            if value:
                _write(os.path.join(g, "strings", "0x409", field), value)
        c = os.path.join(g, "configs", "c.1")
        self._mkdir(c)
        _write(os.path.join(c, "MaxPower"), info.bMaxPower * 2)  # configfs takes mA
        _write(os.path.join(c, "bmAttributes"), f"0x{info.bmAttributes:02x}")
        self._mkdir(os.path.join(c, "strings", "0x409"))
        _write(os.path.join(c, "strings", "0x409", "configuration"),
               info.configuration_name or info.product or "bootkit")
        for i, fn in enumerate(self.device.functions):
            instance = f"{self.name}{i}"
            fdir = os.path.join(g, "functions", f"ffs.{instance}")
            self._mkdir(fdir)
            mnt = os.path.join(FFS_MOUNT_ROOT, instance)
            _mount_functionfs(instance, mnt)
            self.created.append(("mount", mnt))
            port = _FunctionPort(fn, mnt, self.log)
            self.ports.append(port)
            port.open()
            link = os.path.join(c, f"ffs.{instance}")
            os.symlink(fdir, link)
            self.created.append(("link", link))

    def _mkdir(self, path: str) -> None:
        # configfs creates strings/, configs/, functions/ and configs/c.1/strings/ itself
        os.mkdir(path)
        self.created.append(("dir", path))

    def bind(self) -> None:
        _write(os.path.join(self.path, "UDC"), self.udc)
        self.bound = True
        i = self.device.info
        self.log(f"functionfs: gadget {self.name} bound to {self.udc} as "
                 f"{i.idVendor:04x}:{i.idProduct:04x} ({i.product})")

    def unbind(self) -> None:
        if self.bound:
            try:
                _write(os.path.join(self.path, "UDC"), "")
            except OSError as e:
                self.log(f"functionfs: unbinding {self.udc} failed: {e}")
            self.bound = False

    def destroy(self) -> None:
        self.unbind()
        for port in self.ports:
            port.close()
        for kind, path in reversed(self.created):
            try:
                if kind == "link":
                    os.unlink(path)
                elif kind == "mount":
                    _umount(path)
                    try:
                        os.rmdir(path)
                    except OSError:
                        pass
                else:
                    os.rmdir(path)
            except FileNotFoundError:
                pass
            except OSError as e:
                self.log(f"functionfs: cleanup of {path} failed: {e}")
        self.created.clear()


def remove_stale_gadget(name: str, log=print) -> None:
    """Tear down a gadget a killed serve() left behind (same name)."""
    g = os.path.join(GADGETS, name)
    if not os.path.isdir(g):
        return
    log(f"functionfs: removing stale gadget {name}")
    try:
        _write(os.path.join(g, "UDC"), "")
    except OSError:
        pass
    for c in _listdir(os.path.join(g, "configs")):
        cp = os.path.join(g, "configs", c)
        for entry in _listdir(cp):
            if os.path.islink(os.path.join(cp, entry)):
                os.unlink(os.path.join(cp, entry))
        for lang in _listdir(os.path.join(cp, "strings")):
            os.rmdir(os.path.join(cp, "strings", lang))
        os.rmdir(cp)
    for fn in _listdir(os.path.join(g, "functions")):
        instance = fn.split(".", 1)[-1]
        mnt = os.path.join(FFS_MOUNT_ROOT, instance)
        if any(m == mnt for _, m, _ in _mounts()):
            try:
                _umount(mnt)
            except OSError as e:
                log(f"functionfs: umount {mnt}: {e}")
        os.rmdir(os.path.join(g, "functions", fn))
    for lang in _listdir(os.path.join(g, "strings")):
        os.rmdir(os.path.join(g, "strings", lang))
    os.rmdir(g)


def _listdir(path):
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


# --------------------------------------------------------------------------
# one FunctionFS instance: ep0 events and endpoint threads

class _FunctionPort:
    def __init__(self, fn: Function, mountpoint: str, log):
        self.fn, self.mountpoint, self.log = fn, mountpoint, log
        self.ep0: int | None = None
        self.layout: _FunctionLayout | None = None
        self.ep_fds: list[int] = []
        self.threads: list[threading.Thread] = []
        self.enabled = threading.Event()
        self.stopping = threading.Event()
        self.configured = False
        self.lock: threading.RLock | None = None  # set by the server
        self.speed = "high"  # the enumerated speed, read from the UDC on ENABLE

    def open(self) -> None:
        ep0 = os.path.join(self.mountpoint, "ep0")
        self.ep0 = os.open(ep0, os.O_RDWR)
        layout = function_layout(self.fn)
        try:
            os.write(self.ep0, layout.descriptors)
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
            stripped = function_layout(self.fn, drop_class=True)
            if not stripped.dropped:
                raise
            # f_fs.c ffs_do_single_desc (before 6.12) accepts a class
            # descriptor 0x21 only after a HID or CCID interface.
            hint = ("tell dfu-util the transfer size (-t SIZE, and -s ADDRESS for DfuSe)"
                    if 0x21 in stripped.dropped else
                    "hosts that need the class descriptors (CDC functional, USB-MIDI) may refuse the "
                    "interface: see docs/gadget.md")
            self.log("functionfs: this kernel's FunctionFS refused class-specific descriptor(s) "
                     f"{', '.join(f'0x{t:02X}' for t in stripped.dropped)} (f_fs takes the DFU functional "
                     f"descriptor only from Linux 6.12); serving without them: {hint}")
            os.close(self.ep0)
            self.ep0 = os.open(ep0, os.O_RDWR)
            layout = stripped
            os.write(self.ep0, layout.descriptors)
        os.write(self.ep0, layout.strings)
        self.layout = layout
        for i, (ep, address) in enumerate(layout.endpoints):
            fd = os.open(os.path.join(self.mountpoint, f"ep{i + 1}"), os.O_RDWR | os.O_NONBLOCK)
            self.ep_fds.append(fd)

    def start_io(self, lock) -> None:
        self.lock = lock
        seen = set()
        for fd, (ep, address) in zip(self.ep_fds, self.layout.endpoints):
            if (ep.number, ep.direction) in seen:
                continue  # the same endpoint in another alternate setting
            seen.add((ep.number, ep.direction))
            target = self._in_loop if ep.is_in else self._out_loop
            t = threading.Thread(target=target, args=(fd, ep), daemon=True,
                                 name=f"ffs-{self.fn.name}-ep{address:02x}")
            t.start()
            self.threads.append(t)

    def packet_size(self, ep) -> int:
        """wMaxPacketSize at the enumerated speed.

        An OUT read must ask for exactly one packet: a longer request only
        completes on a short packet, so a full 64-byte report would sit in
        the UDC; a shorter one overflows (f_fs does not round it up)."""
        if self.speed == "high":
            return ep.hs_max_packet_size or (512 if ep.transfer == "bulk" else ep.max_packet_size)
        return ep.max_packet_size

    def _out_loop(self, fd, ep) -> None:
        while not self.stopping.is_set():
            if not self.enabled.wait(0.05):
                continue
            try:
                data = os.read(fd, self.packet_size(ep))
            except BlockingIOError:
                time.sleep(0.005)
                continue
            except OSError as e:  # ESHUTDOWN on disable / disconnect
                if not self.stopping.is_set() and self.enabled.is_set():
                    self.log(f"functionfs: OUT endpoint {ep.number}: {e.strerror}")
                time.sleep(0.02)
                continue
            with self.lock:
                try:
                    self.fn.ep_out(ep, data)
                except Stall:
                    self._clear_or_halt(fd, ep)

    def _in_loop(self, fd, ep) -> None:
        size = max(ep.hs_max_packet_size or 0, ep.max_packet_size)
        while not self.stopping.is_set():
            if not self.enabled.wait(0.05):
                continue
            with self.lock:
                try:
                    data = self.fn.ep_in(ep, size)
                except Stall:
                    data = None
            if data is None:
                time.sleep(0.002)
                continue
            try:
                os.write(fd, data)
            except BlockingIOError:
                time.sleep(0.005)
            except OSError as e:
                if not self.stopping.is_set():
                    self.log(f"functionfs: IN endpoint {ep.number}: {e.strerror} (data dropped)")

    def _clear_or_halt(self, fd, ep) -> None:
        # Halting a FunctionFS endpoint from user space means doing I/O in the
        # wrong direction (f_fs.c ffs_epfile_io: "halt" path).
        try:
            if ep.is_in:
                os.read(fd, 0)
            else:
                os.write(fd, b"")
        except OSError:
            pass

    def close(self) -> None:
        self.stopping.set()
        self.enabled.clear()
        for t in self.threads:
            t.join(1.0)
        for fd in self.ep_fds:
            os.close(fd)
        self.ep_fds = []
        if self.ep0 is not None:
            os.close(self.ep0)
            self.ep0 = None


# --------------------------------------------------------------------------
# the event loop

class _StopWaiting(Exception):
    """Raised by serve()'s signal handler out of a wait on the host that may never end."""


class FunctionFsServer:
    """Serves a Target on a UDC until stop() (or SIGINT/SIGTERM in serve())."""

    # True while ep0 waits for the host to finish a control transfer's data or status
    # stage.  A host that gave up on the request (dfu-util killed between a GETSTATUS
    # and its reply, or mid-DNLOAD) never does, and f_fs's wait ends only on a signal
    # with EINTR, which Python retries (PEP 475): serve()'s handler raises _StopWaiting
    # out of that wait instead, or SIGTERM would never stop the server.
    waiting_on_host = False

    def __init__(self, target: Target, *, udc: str | None = None, gadget_name: str | None = None, log=print):
        self.target = target
        self.gadget_name = gadget_name or DEFAULT_GADGET
        self.udc = check_prerequisites(udc, self.gadget_name)
        self.log = log
        self.lock = threading.RLock()
        self.gadget: _Gadget | None = None
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    # -- gadget lifecycle
    def _up(self, device: Device) -> None:
        self.gadget = _Gadget(device, self.gadget_name, self.udc, self.log)
        try:
            self.gadget.build()
            for port in self.gadget.ports:
                port.start_io(self.lock)
            self.gadget.bind()
        except BaseException:
            self._down()
            raise

    def _down(self) -> None:
        if self.gadget is not None:
            self.gadget.destroy()
            self.gadget = None

    def run(self) -> None:
        remove_stale_gadget(self.gadget_name, self.log)
        try:
            while not self._stop.is_set():
                with self.lock:
                    device, generation = self.target.device, self.target.generation
                if device is None:
                    self.log("functionfs: the target has no device any more (disconnected); stopping")
                    return
                self._up(device)
                try:
                    self._serve_generation(generation)
                finally:
                    self._down()
                if not self._stop.is_set():
                    with self.lock:
                        history = self.target.history[-1:] if self.target.history else []
                    self.log(f"functionfs: re-enumerating ({'; '.join(history) or 'new device'})")
        finally:
            self._down()

    def _serve_generation(self, generation: int) -> None:
        ports = {p.ep0: p for p in self.gadget.ports}
        last_poll = 0.0
        while not self._stop.is_set():
            try:
                readable, _, _ = select.select(list(ports), [], [], POLL_INTERVAL)
            except InterruptedError:
                readable = []
            for fd in readable:
                self._ep0_events(ports[fd])
            now = time.monotonic()
            if readable or now - last_poll >= POLL_INTERVAL:
                last_poll = now
                with self.lock:
                    self.target.poll()
                    changed = self.target.generation != generation
                if changed:
                    self._linger(ports, DETACH_GRACE)
                    return

    def _linger(self, ports, seconds: float) -> None:
        """Keep answering ep0 on the outgoing gadget for a moment (see DETACH_GRACE)."""
        end = time.monotonic() + seconds
        while not self._stop.is_set() and (left := end - time.monotonic()) > 0:
            try:
                readable, _, _ = select.select(list(ports), [], [], min(left, POLL_INTERVAL))
            except InterruptedError:
                readable = []
            for fd in readable:
                self._ep0_events(ports[fd])

    def _ep0_events(self, port: _FunctionPort) -> None:
        try:
            raw = os.read(port.ep0, EVENT_SIZE * 8)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self.log(f"functionfs: reading ep0 events failed: {e.strerror}")
            time.sleep(0.05)
            return
        for off in range(0, len(raw) - EVENT_SIZE + 1, EVENT_SIZE):
            setup, etype = raw[off:off + 8], raw[off + 8]
            if etype == FUNCTIONFS_SETUP:
                self._setup(port, SetupPacket.unpack(setup))
                continue
            self._lifecycle(port, etype)

    def _lifecycle(self, port: _FunctionPort, etype: int) -> None:
        name = EVENT_NAMES.get(etype, f"event {etype}")
        fn = port.fn
        with self.lock:
            if etype == FUNCTIONFS_ENABLE:
                port.speed = _udc_speed(self.udc)
                if port.configured:
                    # A second ENABLE without DISABLE is SET_INTERFACE: f_fs
                    # does not say which alternate; assume 0 (see module doc).
                    for number in sorted({i.number for i in fn.interfaces()}):
                        fn.set_alternate(number, 0)
                else:
                    port.configured = True
                    fn.configured(True)
                port.enabled.set()
            elif etype == FUNCTIONFS_DISABLE:
                # Bus reset, disconnect or SET_CONFIGURATION: composite.c
                # reset_config() disables every function.
                port.enabled.clear()
                if port.configured:
                    port.configured = False
                    fn.bus_reset()
                    fn.configured(False)
            elif etype == FUNCTIONFS_UNBIND:
                port.enabled.clear()
                port.configured = False
        self.log(f"functionfs: {fn.name}: {name}")

    def _setup(self, port: _FunctionPort, req: SetupPacket) -> None:
        fd, fn = port.ep0, port.fn
        if req.recipient == RECIP_ENDPOINT and port.layout is not None:
            # f_fs gives the endpoint's file index (ffs_func_revmap_ep);
            # the function expects the address from its descriptors.
            idx = req.wIndex & 0x7F
            if 1 <= idx <= len(port.layout.endpoints):
                req = req.with_index(port.layout.endpoints[idx - 1][1])
        try:
            if req.is_in:
                try:
                    with self.lock:
                        reply = self._call_setup(fn, req, b"")
                except Stall:
                    self._stall(fd, req)
                    return
                self._from_host(os.write, fd, bytes(reply or b"")[:req.wLength])
            elif req.wLength == 0:
                try:
                    with self.lock:
                        self._call_setup(fn, req, b"")
                except Stall:
                    self._stall(fd, req)
                    return
                self._from_host(os.read, fd, 0)  # status stage: ACK
            else:
                data = self._from_host(os.read, fd, req.wLength)  # data stage; f_fs ACKs the status stage
                try:
                    with self.lock:
                        self._call_setup(fn, req, data)
                except Stall as e:
                    self.log(f"functionfs: {fn.name}: request 0x{req.bRequest:02x} refused after its data "
                             f"stage ({e or 'stall'}); FunctionFS cannot STALL it any more")
        except _StopWaiting:
            self.log(f"functionfs: {fn.name}: stopped while the host had not finished request "
                     f"0x{req.bmRequestType:02x}/0x{req.bRequest:02x}")
        except OSError as e:
            # EIDRM: the host reset or disconnected while the request was
            # pending (f_fs cancels it); EL2HLT/EBADMSG: already stalled.
            self.log(f"functionfs: {fn.name}: control request 0x{req.bmRequestType:02x}/0x{req.bRequest:02x} "
                     f"aborted: {e.strerror}")

    def _from_host(self, io, fd: int, arg):
        """A control transfer's data or status stage on ep0, which waits for the host
        (see waiting_on_host): only here may serve()'s signal handler raise _StopWaiting."""
        self.waiting_on_host = True
        try:
            if self._stop.is_set():  # a request read after the signal: its wait could be endless too
                raise _StopWaiting
            return io(fd, arg)
        finally:
            self.waiting_on_host = False

    def _call_setup(self, fn: Function, req: SetupPacket, data: bytes):
        """fn.setup() then Target.poll(); a personality's bug stalls the request
        (logged) instead of taking the whole gadget down."""
        try:
            reply = fn.setup(req, data)
        except Stall:
            raise
        except Exception as e:  # noqa: BLE001 - keep serving, as a real device would
            self.log(f"functionfs: {fn.name}: request 0x{req.bmRequestType:02x}/0x{req.bRequest:02x} "
                     f"raised {type(e).__name__}: {e}; stalling it")
            raise Stall(str(e)) from e
        self.target.poll()
        return reply

    def _stall(self, fd: int, req: SetupPacket) -> None:
        # Documentation/usb/functionfs.rst / f_fs.c ffs_ep0_read/ffs_ep0_write:
        # I/O in the direction opposite to the data stage halts ep0 (EL2HLT).
        try:
            if req.is_in:
                os.read(fd, 0)
            else:
                os.write(fd, b"")
        except OSError as e:
            if e.errno not in (errno.EL2HLT, errno.EBADMSG):
                self.log(f"functionfs: stalling ep0 failed: {e.strerror}")


def stop_on_signal(server: FunctionFsServer, log):
    """The SIGINT/SIGTERM handler serve() installs: stop the server, and leave a wait on
    the host that may never end (FunctionFsServer.waiting_on_host)."""
    def on_signal(signum, frame):
        log(f"functionfs: {signal.Signals(signum).name}, stopping")
        server.stop()
        if server.waiting_on_host:
            raise _StopWaiting
    return on_signal


def serve(emulator_or_target, *, udc: str | None = None, gadget_name: str | None = None, log=print) -> None:
    """Serve an Emulator (or a Target) as a Linux USB gadget until SIGINT/SIGTERM.

    Raises TransportUnavailable (before touching anything) when configfs,
    FunctionFS or a UDC is missing.  Returns normally on SIGINT/SIGTERM,
    after removing the gadget; writing the emulator's image back is the
    caller's job (Emulator.close()).
    """
    target = getattr(emulator_or_target, "target", emulator_or_target)
    if isinstance(target, Device):
        target = Target(target)
    server = FunctionFsServer(target, udc=udc, gadget_name=gadget_name, log=log)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        on_signal = stop_on_signal(server, log)
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
    try:
        server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        log("functionfs: gadget removed")


__all__ = ["serve", "FunctionFsServer", "TransportUnavailable", "check_prerequisites", "function_layout",
           "available_udcs"]
