"""Raw binary images: the bytes of flash from one base address on."""

from __future__ import annotations

from .image import Image


def parse_bin(data: bytes, base: int = 0) -> Image:
    """``data`` as one segment at ``base`` (an empty file is an empty image).  The image
    holds ``data`` itself when it is ``bytes`` (immutable): a large binary is not copied."""
    return Image._adopt(base, bytes(data))


def write_bin(image: Image, fill: int = 0xFF) -> bytes:
    """The bytes from ``image.start`` to ``image.end``, gaps filled with ``fill``."""
    return image.tobytes(fill=fill)
