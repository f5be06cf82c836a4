"""Finding a personality's interface on a bus, for every pyusb host client.

Host clients never hard-code endpoint numbers: a Linux UDC renumbers them
(dummy_hcd turned OUT 0x01 into 0x02), so they are read from the
descriptors here.
"""

from __future__ import annotations

from typing import Iterator

import usb.core
import usb.util


def device_serial(dev) -> str | None:
    """The iSerialNumber string, or None when the device has none or will not say."""
    try:
        return dev.serial_number if dev.iSerialNumber else None
    except (ValueError, usb.core.USBError):
        return None


def in_process(backend) -> bool:
    """Whether ``backend`` is bootkit's in-process bus, where an emulated device leaves and
    re-enumerates at once, so a host waits for it far less than for real hardware.  The
    backend is recognised by its module, not imported: classes sit below transports."""
    return backend is not None and type(backend).__module__.endswith("transports.virtual")


def matching_devices(backend=None, *, vid=None, pid=None, serial=None) -> Iterator[tuple[object, object]]:
    """(device, first configuration) for every device the selection matches."""
    for dev in usb.core.find(find_all=True, backend=backend):
        if vid is not None and dev.idVendor != vid:
            continue
        if pid is not None and dev.idProduct != pid:
            continue
        if serial is not None and device_serial(dev) != serial:
            continue
        try:
            cfg = dev[0]
        except (usb.core.USBError, IndexError):
            continue
        yield dev, cfg


def take_interfaces(dev, *interfaces: int) -> None:
    """Detach the kernel drivers bound to ``interfaces`` (usbhid, usblp, usb-storage,
    snd-usb-audio hold real devices; teensy_loader_cli and dfu-util detach the same
    way), then select the configuration.  Neither is an error when there is nothing
    to do: the emulator has no kernel, a configured device may refuse a second
    SET_CONFIGURATION while an interface is claimed elsewhere."""
    for number in interfaces:
        try:
            if number >= 0 and dev.is_kernel_driver_active(number):
                dev.detach_kernel_driver(number)
        except (usb.core.USBError, NotImplementedError):
            pass
    try:
        dev.set_configuration()
    except usb.core.USBError:
        pass


def endpoint_pair(intf, transfer: int) -> tuple[int | None, int | None]:
    """The first IN and OUT bEndpointAddress of a transfer type (usb.util.ENDPOINT_TYPE_*)."""
    ep_in = ep_out = None
    for ep in intf:
        if usb.util.endpoint_type(ep.bmAttributes) != transfer:
            continue
        if usb.util.endpoint_direction(ep.bEndpointAddress) == usb.util.ENDPOINT_IN:
            ep_in = ep.bEndpointAddress if ep_in is None else ep_in
        else:
            ep_out = ep.bEndpointAddress if ep_out is None else ep_out
    return ep_in, ep_out


class FoundDevice:
    """Mixin for a host client's "interface found on a device" record (with a ``device`` field)."""

    @property
    def vid(self) -> int:
        return self.device.idVendor

    @property
    def pid(self) -> int:
        return self.device.idProduct

    @property
    def serial(self) -> str | None:
        return device_serial(self.device)
