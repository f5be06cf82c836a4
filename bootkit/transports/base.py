"""The device-transport contract: what carries an emulated device onto a bus.

A transport owns the I/O (loops, threads, sockets, file descriptors); the
device it serves is sans-I/O (:mod:`bootkit.usb.device`).  One small base
class, one module per transport, selection by name through the
``bootkit.transports`` entry-point group, as httpx transports and
python-can interfaces do.

A transport must:

- raise :class:`TransportUnavailable` (one line: what is missing and how to
  get it) from :meth:`DeviceTransport.available` or :meth:`~DeviceTransport.serve`
  before it touches anything, when the machine cannot carry it;
- call ``target.poll()`` between transfers and regularly while idle (timers:
  a delayed leave, the entry policy's timeout) and follow re-enumeration
  (``target.generation`` changes, ``target.device`` is the new device);
- hold a device's next transfer while ``target.busy_left()`` is positive
  (the memory behind it is erasing or programming in real-time mode), without
  holding any other device it serves.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, ClassVar

from ..usb.device import Device, Target


class TransportUnavailable(RuntimeError):
    """The machine cannot carry this transport; the message says what is missing and how to get it."""


def target_of(served: Any) -> Target:
    """The :class:`Target` behind what a transport is asked to serve: an Emulator (its
    ``.target``), a Target, or a bare Device (wrapped in a Target that never re-enumerates)."""
    target = getattr(served, "target", served)
    if isinstance(target, Device):
        target = Target(target)
    if not isinstance(target, Target):
        raise TypeError(f"cannot serve {type(served).__name__}: need an Emulator, a Target or a Device")
    return target


class DeviceTransport(ABC):
    """Carries one emulated device (an Emulator's Target) onto a bus until :meth:`stop`.

    ``__init__(**settings)`` takes the transport's own settings (a USB/IP
    listen address, a FunctionFS UDC, ...) as keywords; an unknown name is a
    TypeError, never silently dropped.  :meth:`serve` blocks; :meth:`stop` may
    be called from any thread (or a signal handler) and makes :meth:`serve`
    return.  :meth:`close` releases what the transport holds (after
    :meth:`stop`); the context manager closes it.  Writing the emulator's
    image back stays the caller's job (``Emulator.close()``).
    """

    #: the name the transport is registered under ("virtual", "usbip", ...)
    name: ClassVar[str]
    #: one line for listings and --help
    summary: ClassVar[str]

    @classmethod
    def available(cls) -> None:
        """Raise :class:`TransportUnavailable` when a prerequisite of this machine is
        missing (a kernel module, a device node, a Python package); by default nothing is."""
        return None

    @abstractmethod
    def serve(self, emulator: Any, *, ready: Callable[[str], None] | None = None) -> None:
        """Serve ``emulator`` (an Emulator, a Target or a Device) until :meth:`stop`.

        ``ready(where)`` is called once, when a host can reach the device;
        ``where`` says how, in one line (``127.0.0.1:3240``, ``/dev/pts/5``).
        """

    @abstractmethod
    def stop(self) -> None:
        """Make :meth:`serve` return soon (thread-safe; harmless when not serving)."""

    def close(self) -> None:
        """Stop, and release what the transport holds."""
        self.stop()

    def __enter__(self) -> "DeviceTransport":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["DeviceTransport", "TransportUnavailable", "target_of"]
