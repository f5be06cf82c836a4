"""Session writes: erase each sector the first time a session touches it.

This is what real bootloaders do when the protocol carries no erase
command of its own (DFU 1.1, LUFA's FLIP, HalfKay after its first block,
AVR109 page writes): a page is erased before its first write in an update,
and later writes in the same update only program.  Every personality that
needs it uses this one helper.
"""

from __future__ import annotations

from .core import AddressFault, MemoryIO, ProtectedFault


class SessionWriter:
    def __init__(self, memory: MemoryIO):
        self.memory = memory
        self.erased: set[int] = set()

    def reset(self) -> None:
        self.erased.clear()

    def write(self, address: int, data: bytes) -> float:
        """Program ``data`` at ``address``, erasing untouched sectors first; returns the
        seconds the memory is busy (the sum of what its erase and program calls returned).

        Raises the memory core's typed errors (address, protected, ...)
        before anything is modified when the whole span is not writable.
        """
        if not data:
            return 0.0
        layout = self.memory.layout
        region = layout.find(address)
        end = address + len(data)
        if end > region.end:
            raise AddressFault(f"0x{address:X}+{len(data)} runs past the end of {region.name} (0x{region.end:X})",
                               address)
        if layout.is_protected(address, end):
            raise ProtectedFault(f"0x{address:X}+{len(data)} reaches into the bootloader region", address)
        busy = 0.0
        if region.needs_erase and region.erasable:
            addr = address
            while addr < end:
                start, size = region.sector_at(addr)
                if start not in self.erased:
                    busy += self.memory.erase(start)
                    self.erased.add(start)
                addr = start + size
        return busy + self.memory.program(address, data)
