"""USB wire time of transfers, from the packet formats (USB 2.0 ch. 5 and 8): the one wire
model every benchmark and the chooser's figures use.

A lower bound, priced per transfer type and speed:

- packet bits (SYNC, PID, fields, CRC, EOP; USB 2.0 8.3-8.4) at the bit rate, with no bit
  stuffing and no inter-packet gaps, so "our time / wire time" computed against it is strict;
- control transfers (SETUP, DATA, STATUS stages; 8.5.3): bit time only (the host may run
  several per frame, 5.5.4);
- bulk (5.8): bit time only;
- interrupt (5.7.4): at most one transaction per bInterval period (a 1 ms frame at full
  speed, 2**(bInterval-1) microframes of 125 us at high speed), so the bound is the larger
  of the bit time and the periods the transactions need.  This is why an HID report on an
  interrupt endpoint and the same report as SET_REPORT on endpoint 0 have different bounds.

``Speed`` holds the figures of one bus speed; ``FULL`` (12 Mb/s) is what an AVR, an
STM32F1/F4 or an RP2040 offers, ``HIGH`` (480 Mb/s) is here for devices that have it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Speed:
    name: str
    bits_per_second: int
    sync_bits: int  # 8 at full speed, 32 at high speed (7.1.10)
    eop_bits: int  # SE0 for 2 bits + J at full speed; 8 bits at high speed (7.1.13.2)
    frame_seconds: float  # a frame (full speed) or a microframe (high speed)
    max_control: int  # largest wMaxPacketSize of endpoint 0 (5.5.3)
    max_bulk: int  # largest wMaxPacketSize of a bulk endpoint (5.8.3)

    def token(self) -> int:
        return self.sync_bits + 8 + 7 + 4 + 5 + self.eop_bits  # SYNC, PID, ADDR, ENDP, CRC5, EOP

    def handshake(self) -> int:
        return self.sync_bits + 8 + self.eop_bits  # SYNC, PID, EOP

    def data_packet(self, n: int) -> int:
        return self.sync_bits + 8 + 8 * n + 16 + self.eop_bits  # SYNC, PID, payload, CRC16, EOP

    def transaction(self, n: int) -> int:
        return self.token() + self.data_packet(n) + self.handshake()

    def seconds(self, bits: int) -> float:
        return bits / self.bits_per_second


FULL = Speed("full", 12_000_000, 8, 3, 0.001, 64, 64)
HIGH = Speed("high", 480_000_000, 32, 8, 0.000125, 64, 512)

# the module's first users priced everything at full speed: these keep their names
FULL_SPEED_BPS = FULL.bits_per_second
TOKEN = FULL.token()
HANDSHAKE = FULL.handshake()


def data_packet(n: int, speed: Speed = FULL) -> int:
    return speed.data_packet(n)


def transaction(n: int, speed: Speed = FULL) -> int:
    return speed.transaction(n)


def _packets(length: int, max_packet: int) -> list[int]:
    """Payload sizes of the data packets of a transfer of ``length`` bytes (a zero-length
    transfer is one empty packet; a transfer ending on a full packet needs no ZLP when the
    length was known in advance, as in every transfer here)."""
    full, rest = divmod(length, max_packet)
    return [max_packet] * full + ([rest] if rest or not length else [])


def control_bits(length: int, max_packet: int = 64, speed: Speed = FULL) -> int:
    """SETUP stage, DATA stage of ``length`` bytes, STATUS stage (8.5.3)."""
    bits = speed.transaction(8)
    if length:
        bits += sum(speed.transaction(n) for n in _packets(length, max_packet))
    return bits + speed.transaction(0)


def bulk_bits(length: int, max_packet: int = 64, speed: Speed = FULL) -> int:
    return sum(speed.transaction(n) for n in _packets(length, max_packet))


def interrupt_transactions(length: int, max_packet: int = 64) -> int:
    return len(_packets(length, max_packet))


def interrupt_seconds(length: int, max_packet: int = 64, interval: int = 1, speed: Speed = FULL) -> float:
    """Wire time bound of one interrupt transfer: one transaction per bInterval period (5.7.4),
    never less than its bit time."""
    period = speed.frame_seconds * (interval if speed is FULL else 2 ** (max(1, interval) - 1))
    packets = _packets(length, max_packet)
    return max(speed.seconds(sum(speed.transaction(n) for n in packets)), len(packets) * period)


def control_seconds(length: int, max_packet: int = 64, speed: Speed = FULL) -> float:
    return speed.seconds(control_bits(length, max_packet, speed))


def bulk_seconds(length: int, max_packet: int = 64, speed: Speed = FULL) -> float:
    return speed.seconds(bulk_bits(length, max_packet, speed))


def seconds(bits: int, speed: Speed = FULL) -> float:
    return speed.seconds(bits)


class WireLog:
    """The transfers a host client issued through a pyusb backend, priced by type.

    ``attach(backend, device)`` wraps the backend's ctrl_transfer, bulk/intr read and write;
    each endpoint's type, wMaxPacketSize and bInterval come from the emulated device's own
    descriptors (``device.configuration``), so nothing about a class is assumed here.
    ``detach()`` restores the backend.  ``seconds()``: the wire bound of everything logged.
    """

    def __init__(self, speed: Speed = FULL):
        self.speed = speed
        self.transfers: list[tuple[str, int, int, int]] = []  # (type, bytes, wMaxPacketSize, bInterval)
        self._saved: dict[str, object] = {}

    def attach(self, backend, endpoints: dict[int, tuple[str, int, int]], ep0: int = 64) -> "WireLog":
        """``endpoints``: address -> (type "bulk"/"interrupt", wMaxPacketSize, bInterval)."""
        log = self.transfers

        def wrap(name, kind_of):
            real = getattr(backend, name)
            self._saved[name] = real

            def counted(*args):
                n = real(*args)
                kind, mps, interval = kind_of(args)
                log.append((kind, n if isinstance(n, int) else len(n), mps, interval))
                return n
            setattr(backend, name, counted)

        wrap("ctrl_transfer", lambda args: ("control", ep0, 0))
        for name in ("bulk_write", "bulk_read", "intr_write", "intr_read"):
            if hasattr(backend, name):
                wrap(name, lambda args: endpoints.get(args[1], ("bulk", 64, 0)))
        return self

    def detach(self, backend) -> None:
        for name in self._saved:
            delattr(backend, name)  # the instance attribute goes: the class's method shows again
        self._saved.clear()

    def seconds(self) -> float:
        total = 0.0
        for kind, n, mps, interval in self.transfers:
            if kind == "control":
                total += control_seconds(n, mps, self.speed)
            elif kind == "interrupt":
                total += interrupt_seconds(n, mps, interval, self.speed)
            else:
                total += bulk_seconds(n, mps, self.speed)
        return total

    def kinds(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for kind, *_ in self.transfers:
            out[kind] = out.get(kind, 0) + 1
        return out


def endpoints_of(device) -> dict[int, tuple[str, int, int]]:
    """address -> (type, wMaxPacketSize, bInterval) from a pyusb Device's (first) configuration
    descriptor; read before the host client configures the device."""
    import usb.util

    out = {}
    for intf in device[0]:
        for ep in intf:
            kind = {usb.util.ENDPOINT_TYPE_BULK: "bulk", usb.util.ENDPOINT_TYPE_INTR: "interrupt"}.get(
                usb.util.endpoint_type(ep.bmAttributes))
            if kind:
                out[ep.bEndpointAddress] = (kind, ep.wMaxPacketSize, ep.bInterval)
    return out
