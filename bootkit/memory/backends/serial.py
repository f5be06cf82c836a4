"""``serial:PORT,DIALECT``: a bootloader on a serial port, through the host client of the
personality whose ``serial.DIALECT`` adapter is registered (``bootkit.memories``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import TargetSpec, adapters

if TYPE_CHECKING:
    from ..chips import Chip
    from ..core import MemoryIO


def open_serial(spec: TargetSpec, chip: Chip | None = None) -> MemoryIO:
    assert spec.device is not None and spec.dialect is not None
    found = dict(adapters("serial"))
    adapter = found.get(spec.dialect)
    if adapter is None:
        raise ValueError(f"--target {spec.text}: no serial memory adapter for dialect {spec.dialect!r} "
                         f"(registered: {', '.join(sorted(found)) or 'none'})")
    memory: MemoryIO = adapter(spec.device, spec.dialect, chip)
    return memory
