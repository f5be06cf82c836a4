"""Finding ISP programmers: USBasps (16c0:05dc, a vendor-class device reached through
libusb as avrdude does) and bootkit's STK500 v2 programmer (1209:b011, a CDC-ACM device:
a serial port on real USB, its bulk endpoints on bootkit's own buses)."""

from __future__ import annotations

from typing import Any, Callable, Iterable

from ...contracts import Found
from ..finding import port_found, real_usb, serial_ports, usb_found

NAME = "isp"
# USBasp's usbconfig.h (USB_CFG_VENDOR_ID 0x16c0, USB_CFG_DEVICE_ID 0x05dc), as bootkit.isp.usbasp
# has them, and our programmer's ids as .protocol has them: repeated so that a listing imports
# neither the programmer's link nor the STK500 v2 engine .protocol brings (tests/test_discovery
# checks they agree)
USBASP_VID, USBASP_PID = 0x16C0, 0x05DC
BOOTKIT_VID, BOOTKIT_ISP_PID = 0x1209, 0xB011


def find(backend: Any = None, *, local: bool = True,
         comports: Callable[[], Iterable[Any]] | None = None) -> list[Found]:
    found: list[Found] = []
    if backend is not None:
        from ..usbhost import device_serial, matching_devices

        for dev, _cfg in matching_devices(backend):
            ids = (dev.idVendor, dev.idProduct)
            if ids == (USBASP_VID, USBASP_PID):
                found.append(usb_found(NAME, "usbasp", dev, backend, serial=device_serial(dev)))
            elif ids == (BOOTKIT_VID, BOOTKIT_ISP_PID) and not real_usb(backend):
                found.append(usb_found(NAME, "stk500v2", dev, backend, serial=device_serial(dev)))
    if local:
        for port in serial_ports(comports):
            if (port.vid, port.pid) == (BOOTKIT_VID, BOOTKIT_ISP_PID):
                found.append(port_found(NAME, "stk500v2", port))
    return found
