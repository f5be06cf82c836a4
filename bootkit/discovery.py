"""Finding devices: every personality's :meth:`~bootkit.contracts.Personality.find_devices`
on one bus, for ``bootkit list`` and ``flash`` without ``--via``.

Where to look:

- ``usbip="HOST[:PORT]"``: the devices a USB/IP server exports, through bootkit's userspace
  client backend (as ``flash --usbip`` reaches them), and nothing of this machine's own;
- ``backend``: that pyusb backend's bus (an in-process bus in a test), and nothing else;
- neither: real USB through libusb (when it can be loaded) and what this machine has that
  is not a USB device a bus listing shows (serial ports, mounted UF2 drives, /dev/usb/lp*,
  MIDI ports).

A personality whose finder fails does not stop the others: :func:`discover` with
``errors`` collects ``(personality, one line)`` for the caller to print.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .contracts import Found


class DiscoveryError(ValueError):
    """``usbip`` is not a HOST[:PORT] (bad input)."""


class Unreachable(OSError):
    """The USB/IP server cannot be asked for its devices (the environment failing)."""


def usbip_backend(address: str) -> Any:
    """The USB/IP client backend for ``HOST[:PORT]``: DiscoveryError when it does not parse,
    Unreachable when the server does not answer OP_REQ_DEVLIST (asked once here, so that a
    server that is not there is one line, not one per personality)."""
    from .transports import usbip_client

    try:
        host, port = usbip_client.parse_address(address)
    except ValueError as exc:
        raise DiscoveryError(f"--usbip: {exc}") from None
    try:
        usbip_client.list_devices(host, port)
    except (OSError, ValueError) as exc:
        why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise Unreachable(f"--usbip {address}: cannot list the USB/IP server's devices ({why})") from None
    return usbip_client.get_backend(host, port)


def discover(*, backend: Any = None, usbip: str | None = None, personality: str | None = None,
             local: bool | None = None, errors: list[tuple[str, str]] | None = None) -> list[Found]:
    """Every device found, personality by personality in display order.

    ``personality``: only that one's (a name the registry knows; ValueError otherwise).
    ``local``: also look at this machine's serial ports, drives, device nodes and MIDI ports
    (default: only when neither ``backend`` nor ``usbip`` is given).
    ``errors``: when given, a personality whose finder raised is appended as
    ``(name, one line)`` and the others still run; when None, the first failure raises.
    """
    from . import registry

    if backend is not None and usbip is not None:
        raise ValueError("discover: give backend or usbip, not both")
    if local is None:
        local = backend is None and usbip is None
    if usbip is not None:
        backend = usbip_backend(usbip)
    elif backend is None and local:
        backend = libusb_backend()  # None without libusb: serial ports, drives and the rest only
    chosen = [registry.personality(personality)] if personality is not None else registry.personalities()
    found: list[Found] = []
    for p in chosen:
        try:
            found.extend(p.find_devices(backend, local=local))
        except Exception as exc:  # noqa: BLE001 - one personality's failure is reported, not fatal
            if errors is None:
                raise
            errors.append((p.name, _one_line(exc)))
    return found


def libusb_backend() -> Any:
    """pyusb's libusb backend, None when libusb cannot be loaded."""
    from .api import _libusb_backend

    return _libusb_backend()


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


__all__ = ["discover", "libusb_backend", "usbip_backend", "DiscoveryError", "Unreachable"]
