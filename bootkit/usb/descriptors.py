"""USB descriptors declared as data, serialised and parsed back (USB 2.0 ch. 9.6).

Personalities declare interfaces and endpoints as dataclasses (in the style
of facedancer); a :class:`~bootkit.usb.device.Device` numbers them and
serialises the configuration; :func:`parse_descriptors` reads any
descriptor blob back into dicts, so tests can compare what goes on the wire
with what was declared.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

# bDescriptorType (USB 2.0 table 9-5)
DEVICE = 0x01
CONFIGURATION = 0x02
STRING = 0x03
INTERFACE = 0x04
ENDPOINT = 0x05
DEVICE_QUALIFIER = 0x06
OTHER_SPEED_CONFIGURATION = 0x07
INTERFACE_ASSOCIATION = 0x0B
CS_INTERFACE = 0x24
CS_ENDPOINT = 0x25

# bmAttributes transfer types (USB 2.0 table 9-13)
CONTROL, ISOCHRONOUS, BULK, INTERRUPT = 0, 1, 2, 3
TRANSFER_TYPES = {"control": CONTROL, "isochronous": ISOCHRONOUS, "bulk": BULK, "interrupt": INTERRUPT}

DIR_OUT, DIR_IN = 0x00, 0x80


@dataclass
class Endpoint:
    """A non-control endpoint of a Function.

    ``number`` is the function-local logical number; the Device assigns the
    bus address (``address``).  Host code must read addresses from the
    descriptors: a Linux UDC renumbers them.
    """

    number: int
    direction: str  # "in" or "out"
    transfer: str = "bulk"
    max_packet_size: int = 64  # full speed
    hs_max_packet_size: int | None = None  # high speed (bulk: 512)
    interval: int = 0  # full-speed frames for interrupt endpoints
    hs_interval: int | None = None
    extra: bytes = b""  # class-specific endpoint descriptors (USB-MIDI MS_GENERAL)
    # USB MIDI 1.0 section 6.2.1: its standard bulk endpoint descriptors use the
    # audio-class 9-byte form (bRefresh, bSynchAddress).
    audio_style: bool = False
    address: int = 0  # assigned by the Device

    @property
    def is_in(self) -> bool:
        return self.direction == "in"

    def descriptor(self, speed: str = "full", address: int | None = None) -> bytes:
        addr = self.address if address is None else address
        mps = self.max_packet_size
        interval = self.interval
        if speed == "high":
            mps = self.hs_max_packet_size or (512 if self.transfer == "bulk" else mps)
            if self.hs_interval is not None:
                interval = self.hs_interval
            elif self.transfer == "interrupt" and interval:
                # high speed counts 125 us microframes as 2^(bInterval-1)
                interval = min(16, max(1, (interval * 8).bit_length()))
        attrs = TRANSFER_TYPES[self.transfer]
        length = 9 if self.audio_style else 7
        body = struct.pack("<BBBBHB", length, ENDPOINT, addr, attrs, mps, interval)
        if length == 9:
            body += b"\x00\x00"  # bRefresh, bSynchAddress
        return body + self.extra


@dataclass
class Interface:
    """One alternate setting of an interface, function-local numbering."""

    number: int
    cls: int
    subclass: int = 0
    protocol: int = 0
    alternate: int = 0
    name: str | None = None
    endpoints: list[Endpoint] = field(default_factory=list)
    extra: bytes = b""  # class-specific descriptors after the interface descriptor

    def descriptor(self, number: int, string_index: int, speed: str = "full") -> bytes:
        out = struct.pack(
            "<BBBBBBBBB", 9, INTERFACE, number, self.alternate, len(self.endpoints),
            self.cls, self.subclass, self.protocol, string_index,
        )
        out += self.extra
        for ep in self.endpoints:
            out += ep.descriptor(speed)
        return out


@dataclass
class DeviceInfo:
    """The device descriptor's fields, and its strings."""

    idVendor: int
    idProduct: int
    bcdDevice: int = 0x0100
    manufacturer: str | None = "bootkit"
    product: str | None = "bootkit device"
    serial: str | None = None
    bcdUSB: int = 0x0200
    bDeviceClass: int = 0
    bDeviceSubClass: int = 0
    bDeviceProtocol: int = 0
    bMaxPacketSize0: int = 64
    configuration_name: str | None = None
    bmAttributes: int = 0x80  # bus powered
    bMaxPower: int = 50  # in 2 mA units: 100 mA

    def __post_init__(self):
        for name in ("idVendor", "idProduct", "bcdDevice"):
            value = getattr(self, name)
            if not 0 <= value <= 0xFFFF:
                raise ValueError(f"{name} 0x{value:X} is out of range 0x0000..0xFFFF")


def string_descriptor(text: str) -> bytes:
    data = text.encode("utf-16-le")
    if len(data) > 253:
        raise ValueError(f"string descriptor too long: {text!r}")
    return bytes([len(data) + 2, STRING]) + data


def langid_descriptor(langids=(0x0409,)) -> bytes:
    return bytes([2 + 2 * len(langids), STRING]) + b"".join(struct.pack("<H", x) for x in langids)


def interface_association(first: int, count: int, cls: int, subclass: int, protocol: int, istring: int = 0) -> bytes:
    return struct.pack("<BBBBBBBB", 8, INTERFACE_ASSOCIATION, first, count, cls, subclass, protocol, istring)


# --------------------------------------------------------------------------
# Parsing (for tests, the host side and the virtual backend)

_FIELDS = {
    DEVICE: ("<BBHBBBBHHHBBBB", ("bLength", "bDescriptorType", "bcdUSB", "bDeviceClass", "bDeviceSubClass",
                                  "bDeviceProtocol", "bMaxPacketSize0", "idVendor", "idProduct", "bcdDevice",
                                  "iManufacturer", "iProduct", "iSerialNumber", "bNumConfigurations")),
    CONFIGURATION: ("<BBHBBBBB", ("bLength", "bDescriptorType", "wTotalLength", "bNumInterfaces",
                                 "bConfigurationValue", "iConfiguration", "bmAttributes", "bMaxPower")),
    INTERFACE: ("<BBBBBBBBB", ("bLength", "bDescriptorType", "bInterfaceNumber", "bAlternateSetting",
                               "bNumEndpoints", "bInterfaceClass", "bInterfaceSubClass", "bInterfaceProtocol",
                               "iInterface")),
    ENDPOINT: ("<BBBBHB", ("bLength", "bDescriptorType", "bEndpointAddress", "bmAttributes", "wMaxPacketSize",
                           "bInterval")),
    DEVICE_QUALIFIER: ("<BBHBBBBBB", ("bLength", "bDescriptorType", "bcdUSB", "bDeviceClass", "bDeviceSubClass",
                                      "bDeviceProtocol", "bMaxPacketSize0", "bNumConfigurations", "bReserved")),
    INTERFACE_ASSOCIATION: ("<BBBBBBBB", ("bLength", "bDescriptorType", "bFirstInterface", "bInterfaceCount",
                                          "bFunctionClass", "bFunctionSubClass", "bFunctionProtocol",
                                          "iFunction")),
}


class DescriptorError(ValueError):
    pass


def split_descriptors(blob: bytes) -> list[bytes]:
    """Split a concatenation of descriptors by their bLength bytes."""
    out = []
    i = 0
    while i < len(blob):
        length = blob[i]
        if length < 2 or i + length > len(blob):
            raise DescriptorError(f"bad descriptor length {length} at offset {i}")
        out.append(bytes(blob[i:i + length]))
        i += length
    return out


def parse_descriptor(raw: bytes) -> dict:
    """One descriptor as a dict of its fields (raw bytes kept under 'raw')."""
    dtype = raw[1]
    if dtype in _FIELDS:
        fmt, names = _FIELDS[dtype]
        size = struct.calcsize(fmt)
        if len(raw) < size:
            raise DescriptorError(f"descriptor type 0x{dtype:02X} is {len(raw)} bytes, needs {size}")
        d = dict(zip(names, struct.unpack_from(fmt, raw)))
    else:
        d = {"bLength": raw[0], "bDescriptorType": dtype}
    d["raw"] = raw
    return d


def parse_configuration(blob: bytes) -> dict:
    """A configuration descriptor set as a tree: config -> interfaces -> endpoints.

    Class-specific descriptors are kept as ``extra`` (a list of raw bytes) on
    the interface or endpoint they follow, as libusb reports them.
    """
    descs = split_descriptors(blob)
    if not descs or descs[0][1] != CONFIGURATION:
        raise DescriptorError("not a configuration descriptor")
    config = parse_descriptor(descs[0])
    config["interfaces"] = []
    config["extra"] = []
    current = config
    last_intf = None
    for raw in descs[1:]:
        d = parse_descriptor(raw)
        if raw[1] == INTERFACE:
            d["endpoints"] = []
            d["extra"] = []
            config["interfaces"].append(d)
            current = last_intf = d
        elif raw[1] == ENDPOINT and last_intf is not None:
            d["extra"] = []
            last_intf["endpoints"].append(d)
            current = d
        else:
            current["extra"].append(raw)
    return config
