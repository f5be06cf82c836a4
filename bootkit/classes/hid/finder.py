"""Finding HID bootloaders for ``bootkit list``: the known VID:PIDs' HID interfaces
(:func:`.host.find_devices`), with what each says about its chip: HalfKay's board by its
usage (teensy_loader_cli's table), xusb-boot's GET_BOOT_INFO (xusbboot-cli -l asks too)."""

from __future__ import annotations

from typing import Any

from ...contracts import Found
from ..finding import release, usb_found

NAME = "hid"


def find(backend: Any = None, *, local: bool = True) -> list[Found]:
    if backend is None or not _any_hid_interface(backend):
        return []  # the host side (and the memory core under it) is not imported for nothing
    import usb.core
    import usb.util

    from .host import HidClient, HidError, XusbHost, find_devices
    from .protocol import HALFKAY_BY_ID, HALFKAY_USAGE_PAGE

    out = []
    for t in find_devices(backend):
        details: dict[str, Any] = {"interface": t.interface,
                                   "usage": f"{t.report.usage_page:04x}:{t.report.usage:02x}"}
        chip = None
        if t.dialect == "halfkay" and t.report.usage_page == HALFKAY_USAGE_PAGE:
            m = HALFKAY_BY_ID.get(t.report.usage)
            if m is not None:
                chip, details["board"] = m.name, m.board
        elif t.dialect == "xusb":
            try:
                bound = bool(t.device.is_kernel_driver_active(t.interface))
            except (usb.core.USBError, NotImplementedError):
                bound = False
            try:
                info = XusbHost.boot_info_of(HidClient(t, timeout=1000))
                chip = info.mcu.lower() or None
                details.update(version=f"{info.version[0]}.{info.version[1]}", flash_size=info.flash_size,
                               page_size=info.page_size)
            except (HidError, usb.core.USBError) as exc:
                details["note"] = f"boot info unreadable ({exc})"
            finally:
                usb.util.dispose_resources(t.device)
                if bound:  # usbhid gets the interface back: a listing must not leave hidraw gone
                    try:
                        t.device.attach_kernel_driver(t.interface)
                    except (usb.core.USBError, NotImplementedError):
                        pass
        out.append(usb_found(NAME, t.dialect, t.device, backend, serial=t.serial, chip=chip, **details))
        release(t.device)  # the report descriptor was read through an open handle
    return out


def _any_hid_interface(backend: Any) -> bool:
    from ..usbhost import matching_devices

    return any(i.bInterfaceClass == 0x03 for _dev, cfg in matching_devices(backend) for i in cfg)  # HID 1.11 4.1
