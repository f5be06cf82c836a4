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
  be told what the descriptor would have said (the DFU host tool's ``-t 2048``,
  and ``-s ADDRESS`` to select DfuSe).
* After the data stage of a control OUT request the kernel has already
  acknowledged the status stage, so such a request can no longer be
  STALLed; a DFU engine that refuses a DNLOAD block shows dfuERROR at the
  next GETSTATUS instead (DFU 1.1 section 6.1.2 allows either).
"""

from __future__ import annotations

import signal
import threading
from typing import Any, Callable

from ..base import DeviceTransport, target_of
from .layout import function_layout
from .prerequisites import available_udcs, check_prerequisites
from .server import FunctionFsServer, stop_on_signal


def serve(emulator_or_target: Any, *, udc: str | None = None, gadget_name: str | None = None,
          log: Callable[[str], None] = print) -> None:
    """Serve an Emulator (or a Target) as a Linux USB gadget until SIGINT/SIGTERM
    (:class:`FunctionFsTransport`).

    Raises TransportUnavailable (before touching anything) when configfs,
    FunctionFS or a UDC is missing.  Returns normally on SIGINT/SIGTERM,
    after removing the gadget; writing the emulator's image back is the
    caller's job (Emulator.close()).
    """
    FunctionFsTransport(udc=udc, gadget_name=gadget_name, log=log).serve(emulator_or_target)


class FunctionFsTransport(DeviceTransport):
    """The :class:`~bootkit.transports.base.DeviceTransport` of a Linux USB gadget: serve on
    ``udc`` (default: the only free one) as configfs gadget ``gadget_name`` until :meth:`stop`,
    SIGINT or SIGTERM.  Needs root, configfs, FunctionFS and a UDC (:meth:`available`)."""

    name = "functionfs"
    summary = "a Linux USB gadget (configfs + FunctionFS) on a UDC: the kernel is the USB host's peer"

    def __init__(self, *, udc: str | None = None, gadget_name: str | None = None,
                 log: Callable[[str], None] | None = print):
        self.udc = udc
        self.gadget_name = gadget_name
        self.log = log or (lambda line: None)
        self.server: FunctionFsServer | None = None
        self._stopped = False

    @classmethod
    def available(cls) -> None:
        check_prerequisites()

    def serve(self, emulator: Any, *, ready: Callable[[str], None] | None = None) -> None:
        server = self.server = FunctionFsServer(target_of(emulator), udc=self.udc, gadget_name=self.gadget_name,
                                                log=self.log)
        if self._stopped:
            return
        if ready is not None:
            server.on_bound = lambda: ready(f"UDC {server.udc}")
        previous = {}
        if threading.current_thread() is threading.main_thread():
            on_signal = stop_on_signal(server, self.log)
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, on_signal)
        try:
            server.run()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.log("functionfs: gadget removed")

    def stop(self) -> None:
        self._stopped = True
        if self.server is not None:
            self.server.stop()


__all__ = ["serve", "FunctionFsTransport", "FunctionFsServer", "check_prerequisites", "function_layout",
           "available_udcs", "stop_on_signal"]
