"""The memory core: MemoryIO, simulated flash, the chip database, entry policy."""

from .chips import CHIPS, Chip, ChipFileError, Fuse, get_chip, load_chip_file
from .core import (
    AddressFault,
    EraseFault,
    FirmwareFault,
    Layout,
    MemoryFault,
    MemoryIO,
    NotErasedFault,
    ProtectedFault,
    Region,
    Timing,
    VerifyFault,
    WriteFault,
    dfuse_layout,
    parse_dfuse_layout,
)
from .entry import MAGIC_WORD, Board, EntryPolicy
from .faults import FaultPlan, PowerCut
from .flash import SimulatedFlash
from .store import ImageBusy

__all__ = [
    "CHIPS", "Chip", "ChipFileError", "Fuse", "get_chip", "load_chip_file",
    "AddressFault", "EraseFault", "FirmwareFault", "Layout", "MemoryFault", "MemoryIO",
    "NotErasedFault", "ProtectedFault", "Region", "Timing", "VerifyFault", "WriteFault",
    "dfuse_layout", "parse_dfuse_layout", "MAGIC_WORD", "Board", "EntryPolicy", "SimulatedFlash",
    "FaultPlan", "PowerCut", "ImageBusy",
]
