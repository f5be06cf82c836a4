"""What the mass-storage personality declares about itself, for ``bootkit choose``."""

from ..common import DialectFacts

# USB mass storage (class 0x08, SCSI, Bulk-Only) is mounted by every OS's own
# driver: Windows usbstor, macOS IOUSBMassStorageDriver, Linux usb-storage,
# iPadOS (Files app, iPadOS 13+, FAT volumes) and Android with USB OTG
# (mounted by the system's storage manager; file managers can copy onto it).
_DRIVERS = {"windows": "none", "macos": "none", "linux": "none", "ipados": "none", "android": "none"}

_QUIRKS = (
    ("macOS Finder writes ._NAME AppleDouble files, .fseventsd and .Trashes next to the firmware",
     "metadata lands in the data overlay and is ignored: UF2 detection is by block magic, raw-file "
     "assembly skips '._' names and AppleDouble content"),
    ("macOS writes the FAT and directory late, sometimes after the data, and reports error -36 / "
     "'device disappeared' if the drive resets too quickly",
     "the device leaves only after leave_delay (1 s by default) once the last block arrived; "
     "bootkit flash uses F_FULLFSYNC rather than fsync"),
    ("macOS Ventura 13.0 Finder failed copying extended attributes to UF2 drives (error 100093)",
     "bootkit flash --drive writes the bytes with os.write, never the attributes (as cp -X)"),
    ("Windows sends its final FAT/directory writes, SYNCHRONIZE CACHE and TEST UNIT READY after the data",
     "leave is delayed; writes after completion are accepted and ignored"),
    ("Windows asks READ FORMAT CAPACITIES and MODE SENSE pages a flash drive may not have",
     "READ FORMAT CAPACITIES is answered; unknown mode pages get ILLEGAL REQUEST / INVALID FIELD IN CDB "
     "as Linux's f_mass_storage does"),
    ("Linux keeps written data in its page cache and writes back later, in any order",
     "sectors are accepted in any order (UF2: per block; BIN/HEX: once directory, FAT chain and data are all "
     "there); bootkit flash fsyncs, and drops cached CURRENT.UF2 pages before reading it"),
    ("hosts read back what they just wrote (directory, FAT) to check it",
     "FAT and directory writes are kept in an overlay; written UF2 sectors are re-generated from flash"),
)

FACTS: tuple[DialectFacts, ...] = (
    DialectFacts(
        personality="msc", dialect="uf2",
        summary="USB drive: drop a .UF2 file (Microsoft UF2: family id, blocks in any order)",
        driver=dict(_DRIVERS), host_software="none", eeprom=False, readback=True,
        verify="device checks",  # every block counted; manifest and reset only when all arrived
        feedback="none on the drive: a refused file simply leaves the drive mounted (INFO_UF2.TXT says what it takes)",
        unattended=True, bootloader_size="16 KiB", families=("stm32", "rp2040", "rp2350", "nrf52", "samd", "esp32", "avr"),
        quirks=_QUIRKS, benchmark="benchmarks/bench_msc.py"),
    DialectFacts(
        personality="msc", dialect="bin",
        summary="USB drive: drop a raw .BIN (programmed at the application start), when the product accepts it",
        driver=dict(_DRIVERS), host_software="none", eeprom=False, readback=True,
        verify="device checks", feedback="none on the drive: a file larger than the application is ignored",
        unattended=True, bootloader_size="16 KiB", families=(),
        quirks=_QUIRKS + (("a raw file arrives as data, directory entry and FAT in any order",
                           "programmed only when all three agree, so a truncated copy programs nothing"),),
        benchmark="benchmarks/bench_msc.py"),
    DialectFacts(
        personality="msc", dialect="hex",
        summary="USB drive: drop an Intel .HEX, when the product accepts it",
        driver=dict(_DRIVERS), host_software="none", eeprom=False, readback=True,
        verify="device checks", feedback="none on the drive: a bad record or an address outside the "
                                         "application makes the file ignored",
        unattended=True, bootloader_size="16 KiB", families=(),
        quirks=_QUIRKS, benchmark="benchmarks/bench_msc.py"),
)
