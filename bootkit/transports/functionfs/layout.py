"""The descriptor and string blobs a FunctionFS ep0 takes (include/uapi/linux/usb/functionfs.h:
descriptors V2 and strings), built from a sans-I/O Function's declarations.

Endpoints are numbered in descriptor order (file ``ep{i}`` is the i-th), and the
class-specific descriptors an older f_fs refuses can be left out (``drop_class``).
"""

from __future__ import annotations

import dataclasses
import struct

from ...usb.device import Function

# include/uapi/linux/usb/functionfs.h
FUNCTIONFS_DESCRIPTORS_MAGIC_V2 = 3
FUNCTIONFS_STRINGS_MAGIC = 2
FUNCTIONFS_HAS_FS_DESC = 1
FUNCTIONFS_HAS_HS_DESC = 2
FUNCTIONFS_ALL_CTRL_RECIP = 64

# f_fs accepts class descriptor 0x21 after HID and CCID interfaces only
# (DFU too from Linux 6.12).
USB_CLASS_HID, USB_CLASS_CCID = 0x03, 0x0B
LANG_EN_US = 0x0409


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
