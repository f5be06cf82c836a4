"""One gadget (one Device) in configfs (Documentation/usb/gadget_configfs.rst): its
directories, strings and configuration, one FunctionFS instance per Function mounted
with mount(2), binding to the UDC, and the teardown in reverse order.

mount(2)/umount2(2) go through ctypes: the standard library has no binding for them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

from ...usb.device import Device
from .endpoints import FunctionPort
from .prerequisites import GADGETS, _mounts

FFS_MOUNT_ROOT = "/run/bootkit/ffs"


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


def _write(path: str, value) -> None:
    with open(path, "w") as f:
        f.write(str(value) + "\n" if not isinstance(value, str) or value else "\n")


class _Gadget:
    def __init__(self, device: Device, name: str, udc: str, log):
        self.device, self.name, self.udc, self.log = device, name, udc, log
        self.path = os.path.join(GADGETS, name)
        self.created: list[tuple[str, str]] = []  # (kind, path) to undo in reverse
        self.ports: list[FunctionPort] = []
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
        for field, text in (("manufacturer", info.manufacturer), ("product", info.product),
                            ("serialnumber", info.serial)):
            if text:
                _write(os.path.join(g, "strings", "0x409", field), text)
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
            port = FunctionPort(fn, mnt, self.log)
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
