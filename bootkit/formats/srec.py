"""Motorola S-records (srec(5) as written by srec_cat and objcopy).

``S`` + type digit + hex pairs: byte count (address + data + checksum),
address, data, checksum.  The checksum is the ones' complement of the low
byte of the sum of count, address and data bytes.

S0 header (16-bit address 0), S1/S2/S3 data with a 16/24/32-bit address,
S5/S6 16/24-bit count of the data records so far, S7/S8/S9 termination
with a 32/24/16-bit start address.  srec(5) calls the termination record
mandatory and objcopy always writes one (address 0 for no entry point: we
read 0 back as "no start address"), but srec_cat leaves it out when it has
no execution start address, so a file that simply ends after its data
records is accepted; a file cut inside a record still fails on that
record's length or checksum.
"""

from __future__ import annotations


from .ihex import unhex
from .image import FormatError, Image

_ADDRESS_BYTES = {0: 2, 1: 2, 2: 3, 3: 4, 5: 2, 6: 3, 7: 4, 8: 3, 9: 2}


def parse_srec(data: bytes | str, *, source: str | None = None) -> Image:
    """Parse an S-record file; data after the termination record is ignored."""
    if isinstance(data, str):
        data = data.encode("ascii", "replace")
    image = Image()
    n_data = 0
    lines = bytes(data).splitlines()
    for number, text in enumerate(lines, 1):

        def fail(problem: str) -> FormatError:
            return FormatError(problem, source=source, where=f"line {number}")

        text = text.strip()
        if not text:
            continue
        if text[:1] not in (b"S", b"s") or len(text) < 2:
            raise fail("expected 'S'")
        kind = text[1] - 0x30
        if kind not in _ADDRESS_BYTES:
            raise fail(f"unknown record type {text[:2].decode('ascii', 'replace')!r}")
        raw = unhex(text[2:], fail)
        width = _ADDRESS_BYTES[kind]
        if not raw or raw[0] != len(raw) - 1:
            got = len(raw) - 1 if raw else 0
            raise fail(f"bad length (count byte says {raw[0] if raw else 0}, line has {got})")
        if raw[0] < width + 1:
            raise fail(f"record too short for a {width}-byte address")
        if sum(raw) & 0xFF != 0xFF:
            expected = ~sum(raw[:-1]) & 0xFF
            raise fail(f"bad checksum (expected 0x{expected:02X}, got 0x{raw[-1]:02X})")
        address = int.from_bytes(raw[1:1 + width], "big")
        payload = raw[1 + width:-1]
        if kind in (1, 2, 3):
            try:
                image.add(address, payload)
            except FormatError as exc:
                raise exc.at(source=source, where=f"line {number}") from None
            n_data += 1
        elif kind in (5, 6):
            if payload:
                raise fail(f"S{kind} count record with data")
            if address != n_data:
                raise fail(f"record count mismatch (S{kind} says {address}, file has {n_data} data records)")
        elif kind in (7, 8, 9):
            if address:
                image.start_address, image.start_address_kind = address, "linear"
            return image
        # S0: header text, not part of the image
    return image  # no S7/S8/S9: srec_cat's output without a start address


def _record(kind: int, address: int, payload: bytes) -> str:
    width = _ADDRESS_BYTES[kind]
    body = bytes([width + len(payload) + 1]) + address.to_bytes(width, "big") + payload
    return f"S{kind}{body.hex().upper()}{~sum(body) & 0xFF:02X}\n"


def write_srec(image: Image, *, record_size: int = 32, header: bytes = b"bootkit") -> str:
    """The image as S-records: S1/S2/S3 chosen by the highest address
    (or start address), an S5/S6 count, and the matching S9/S8/S7."""
    highest = max(image.end - 1, image.start_address or 0, 0)
    if highest > 0xFFFFFFFF:
        raise FormatError(f"address 0x{highest:X} is above the 4 GiB S-records can express")
    data_kind = 1 if highest <= 0xFFFF else 2 if highest <= 0xFFFFFF else 3
    limit = 255 - 1 - _ADDRESS_BYTES[data_kind]
    if not 0 < record_size <= limit:
        raise ValueError(f"record_size must be 1..{limit} for S{data_kind} records")
    out = [_record(0, 0, bytes(header))]
    count = 0
    for address, data in image.segments:
        for i in range(0, len(data), record_size):
            out.append(_record(data_kind, address + i, data[i:i + record_size]))
            count += 1
    if count <= 0xFFFF:
        out.append(_record(5, count, b""))
    elif count <= 0xFFFFFF:
        out.append(_record(6, count, b""))
    out.append(_record(10 - data_kind, image.start_address or 0, b""))
    return "".join(out)
