"""``bootkit -v``: one line per USB transfer or serial read/write on stderr.

A pyusb backend's transfer methods (pyusb's ``usb.backend.IBackend``: ctrl_transfer,
bulk/intr/iso write and read) are wrapped on the backend INSTANCE, so its type stays what it
was (the host clients tell the in-process bus by it), and pyserial's ``Serial.read`` and
``Serial.write`` on the class for as long as the trace is on.  Nothing here is imported unless
``-v`` is given; :func:`untrace` puts everything back.

The lines look like a usbmon text trace cut down to what a bootloader exchange needs
(Documentation/usb/usbmon.rst: direction, endpoint, length, data), e.g.::

    usb ctrl 21 01 wValue=0002 wIndex=0000 OUT 64 bytes: 0c 94 ... -> 64
    usb ctrl a1 03 wValue=0000 wIndex=0000 IN 6 -> 6 bytes: 00 64 00 00 05 00
    usb bulk ep 0x02 OUT 31 bytes: 55 53 42 43 ... -> 31
    serial /dev/pts/3 write 2 bytes: 1b 53
"""

from __future__ import annotations

import functools
import sys
import threading
from typing import Any, Callable

SHOWN = 16  # data bytes shown per line (the rest as "...")
_lock = threading.Lock()
_undo: list[Callable[[], None]] = []


def _hex(data: Any) -> str:
    raw = bytes(data)
    text = " ".join(f"{b:02x}" for b in raw[:SHOWN])
    return text + (" ..." if len(raw) > SHOWN else "")


def emit(line: str) -> None:
    """One trace line on stderr (whole lines: transfers of several threads do not interleave)."""
    with _lock:
        print(line, file=sys.stderr, flush=True)


def _ctrl(original):
    def ctrl_transfer(dev_handle, bmRequestType, bRequest, wValue, wIndex, data, timeout):
        head = f"usb ctrl {bmRequestType:02x} {bRequest:02x} wValue={wValue:04x} wIndex={wIndex:04x}"
        device_to_host = bmRequestType & 0x80  # USB 2.0 9.3.1: bit 7 of bmRequestType is the direction
        try:
            result = original(dev_handle, bmRequestType, bRequest, wValue, wIndex, data, timeout)
        except Exception as exc:
            emit(f"{head} {'IN' if device_to_host else 'OUT'} -> {type(exc).__name__}: {exc}")
            raise
        if device_to_host:
            n = result if isinstance(result, int) else len(result)
            got = data[:n] if isinstance(result, int) and data is not None else result
            emit(f"{head} IN {len(data) if data is not None else 0} -> {n} bytes: {_hex(got)}")
        else:
            emit(f"{head} OUT {len(data) if data is not None else 0} bytes: {_hex(data or b'')} -> {result}")
        return result
    return ctrl_transfer


def _write(kind: str, original):
    def write(dev_handle, ep, intf, data, timeout):
        head = f"usb {kind} ep 0x{ep:02x} OUT {len(data)} bytes: {_hex(data)}"
        try:
            result = original(dev_handle, ep, intf, data, timeout)
        except Exception as exc:
            emit(f"{head} -> {type(exc).__name__}: {exc}")
            raise
        emit(f"{head} -> {result}")
        return result
    return write


def _read(kind: str, original):
    def read(dev_handle, ep, intf, buff, timeout):
        asked = buff if isinstance(buff, int) else len(buff)
        head = f"usb {kind} ep 0x{ep:02x} IN {asked}"
        try:
            result = original(dev_handle, ep, intf, buff, timeout)
        except Exception as exc:
            emit(f"{head} -> {type(exc).__name__}: {exc}")
            raise
        n = result if isinstance(result, int) else len(result)
        got = buff[:n] if isinstance(result, int) and not isinstance(buff, int) else result
        emit(f"{head} -> {n} bytes: {_hex(got)}")
        return result
    return read


def trace_backend(backend: Any) -> Any:
    """Wrap ``backend``'s transfer methods (in place; returns it).  None is left alone."""
    if backend is None or getattr(backend, "_bootkit_traced", False):
        return backend
    wrapped: dict[str, Callable[[Any], Any]] = {"ctrl_transfer": _ctrl}
    for kind in ("bulk", "intr", "iso"):
        wrapped[f"{kind}_write"] = functools.partial(_write, kind)
        wrapped[f"{kind}_read"] = functools.partial(_read, kind)
    for name, wrap in wrapped.items():
        original = getattr(backend, name, None)
        if original is None:
            continue
        setattr(backend, name, wrap(original))
    backend._bootkit_traced = True

    def undo() -> None:
        for name in wrapped:
            backend.__dict__.pop(name, None)  # the class's own method shows through again
        backend.__dict__.pop("_bootkit_traced", None)
    _undo.append(undo)
    return backend


def trace_serial() -> None:
    """Trace every pyserial port's read and write (pyserial's platform class) until :func:`untrace`."""
    import serial

    cls: Any = serial.Serial  # its methods are replaced below, and put back by untrace()
    if getattr(cls, "_bootkit_traced", False):
        return
    read, write = cls.read, cls.write

    def traced_read(self, size=1):
        data = read(self, size)
        emit(f"serial {self.port} read {size} -> {len(data)} bytes: {_hex(data)}")
        return data

    def traced_write(self, data):
        n = write(self, data)
        emit(f"serial {self.port} write {len(bytes(data))} bytes: {_hex(data)}")
        return n

    cls.read, cls.write, cls._bootkit_traced = traced_read, traced_write, True

    def undo() -> None:
        cls.read, cls.write = read, write
        del cls._bootkit_traced
    _undo.append(undo)


def untrace() -> None:
    """Undo every wrapping, newest first."""
    while _undo:
        _undo.pop()()
