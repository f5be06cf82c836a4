"""What bootkit's two pyusb backends share (the in-process bus, the USB/IP client).

pyusb asks a backend for descriptors field by field and for transfers into
caller-owned ``array`` buffers.  Both of our backends know a device by its
raw configuration descriptor and move bytes with three primitives, so the
rest lives here once: descriptor objects parsed from the device's own
bytes (what goes on the wire, class-specific descriptors kept as
``extra_descriptors`` as libusb reports them), the standard requests pyusb
issues itself, and the array handling of every transfer type.
"""

from __future__ import annotations

import array
import struct

import usb.backend



class Desc:
    """A descriptor as pyusb expects it from a backend: fields as attributes."""

    def __init__(self, fields: dict, **extra):
        for k, v in fields.items():
            if k not in ("raw", "interfaces", "endpoints", "extra"):
                setattr(self, k, v)
        for k, v in extra.items():
            setattr(self, k, v)


def buffer_bytes(data) -> bytes:
    return data.tobytes() if isinstance(data, array.array) else bytes(data)


def _extra(tree: dict) -> list[int]:
    return [b for raw in tree["extra"] for b in raw]


class BlobBackend(usb.backend.IBackend):
    """A pyusb backend over devices known by their descriptor bytes.

    Subclasses provide ``_config_tree(dev, config)`` (a
    :func:`~bootkit.usb.descriptors.parse_configuration` tree) and the
    transfer primitives ``_control`` (IN: returns the bytes read; OUT:
    returns the count written), ``_write_bytes`` and ``_read_bytes``.
    """

    # --- to provide
    def _config_tree(self, dev, config: int) -> dict:
        raise NotImplementedError

    def _control(self, handle, bmRequestType, bRequest, wValue, wIndex, data_or_length, timeout=None):
        raise NotImplementedError

    def _write_bytes(self, handle, ep: int, payload: bytes, timeout) -> int:
        raise NotImplementedError

    def _read_bytes(self, handle, ep: int, size: int, timeout) -> bytes:
        raise NotImplementedError

    # --- descriptors
    def get_configuration_descriptor(self, dev, config):
        tree = self._config_tree(dev, config)
        return Desc(tree, extra_descriptors=_extra(tree))

    def _interfaces(self, dev, config):
        """Interfaces grouped by number, alternates in descriptor order: [[alt0, alt1...], ...]."""
        groups: dict[int, list] = {}
        for intf in self._config_tree(dev, config)["interfaces"]:
            groups.setdefault(intf["bInterfaceNumber"], []).append(intf)
        return list(groups.values())

    def get_interface_descriptor(self, dev, intf, alt, config):
        groups = self._interfaces(dev, config)
        if intf >= len(groups) or alt >= len(groups[intf]):
            raise IndexError("no such interface")
        d = groups[intf][alt]
        return Desc(d, extra_descriptors=_extra(d))

    def get_endpoint_descriptor(self, dev, ep, intf, alt, config):
        d = self._interfaces(dev, config)[intf][alt]["endpoints"][ep]
        raw = d["raw"]
        # libusb reports bRefresh/bSynchAddress, 0 for the 7-byte form
        return Desc(d, bRefresh=raw[7] if len(raw) > 7 else 0, bSynchAddress=raw[8] if len(raw) > 8 else 0,
                    extra_descriptors=_extra(d))

    # --- standard requests pyusb issues itself
    def set_configuration(self, dev_handle, config_value):
        self._control(dev_handle, 0x00, 9, config_value, 0, b"")

    def set_interface_altsetting(self, dev_handle, intf, altsetting):
        self._control(dev_handle, 0x01, 11, altsetting, intf, b"")

    def clear_halt(self, dev_handle, ep):
        self._control(dev_handle, 0x02, 1, 0, ep, b"")  # CLEAR_FEATURE(ENDPOINT_HALT)

    # --- no kernel here to claim from
    def claim_interface(self, dev_handle, intf):
        dev_handle.claimed.add(intf)

    def release_interface(self, dev_handle, intf):
        dev_handle.claimed.discard(intf)

    def is_kernel_driver_active(self, dev_handle, intf):
        return False

    def detach_kernel_driver(self, dev_handle, intf):
        pass

    def attach_kernel_driver(self, dev_handle, intf):
        pass

    # --- transfers into pyusb's array buffers
    def ctrl_transfer(self, dev_handle, bmRequestType, bRequest, wValue, wIndex, data, timeout):
        length = len(data) * data.itemsize
        if bmRequestType & 0x80:
            reply = self._control(dev_handle, bmRequestType, bRequest, wValue, wIndex, length, timeout)
            n = min(len(reply), length)
            if n:
                struct.pack_into(f"{n}s", data, 0, bytes(reply[:n]))
            return n
        return self._control(dev_handle, bmRequestType, bRequest, wValue, wIndex, buffer_bytes(data), timeout)

    def _read(self, dev_handle, ep, buff, timeout):
        size = len(buff) * buff.itemsize
        chunk = self._read_bytes(dev_handle, ep, size, timeout)
        n = min(len(chunk), size)
        if n:
            struct.pack_into(f"{n}s", buff, 0, bytes(chunk[:n]))
        return n

    def bulk_write(self, dev_handle, ep, intf, data, timeout):
        return self._write_bytes(dev_handle, ep, buffer_bytes(data), timeout)

    def bulk_read(self, dev_handle, ep, intf, buff, timeout):
        return self._read(dev_handle, ep, buff, timeout)

    def intr_write(self, dev_handle, ep, intf, data, timeout):
        return self._write_bytes(dev_handle, ep, buffer_bytes(data), timeout)

    def intr_read(self, dev_handle, ep, intf, buff, timeout):
        return self._read(dev_handle, ep, buff, timeout)


__all__ = ["BlobBackend", "Desc", "buffer_bytes"]
