"""Full-speed USB wire time of transfers, from the packet formats (USB 2.0 ch. 8).

A lower bound: packet bits at 12 Mb/s (SYNC, PID, fields, CRC, EOP) with
no bit stuffing, inter-packet gaps or frame scheduling, so a ratio
"our time / wire time" computed against it is a strict one.
"""

FULL_SPEED_BPS = 12_000_000
TOKEN = 8 + 8 + 7 + 4 + 5 + 3  # SYNC, PID, ADDR, ENDP, CRC5, EOP
HANDSHAKE = 8 + 8 + 3  # SYNC, PID, EOP


def data_packet(n: int) -> int:
    return 8 + 8 + 8 * n + 16 + 3  # SYNC, PID, payload, CRC16, EOP


def transaction(n: int) -> int:
    return TOKEN + data_packet(n) + HANDSHAKE


def control_bits(length: int, max_packet: int = 64) -> int:
    """SETUP stage, DATA stage of ``length`` bytes, STATUS stage."""
    bits = transaction(8)
    full, rest = divmod(length, max_packet)
    bits += full * transaction(max_packet) + (transaction(rest) if rest else 0)
    bits += transaction(0)
    return bits


def bulk_bits(length: int, max_packet: int = 64) -> int:
    full, rest = divmod(length, max_packet)
    bits = full * transaction(max_packet)
    if rest or not length:
        bits += transaction(rest)
    return bits


def seconds(bits: int) -> float:
    return bits / FULL_SPEED_BPS
