"""What the blink personality trades off, for ``bootkit choose`` (DialectFacts, as every
built-in personality declares its own)."""

from bootkit.classes.common import DialectFacts

FACTS = (
    DialectFacts(
        personality="blink", dialect="ep0",
        summary="a vendor-class interface, every command a control transfer on endpoint 0 (bootkit-plugin-blink)",
        # a vendor-class interface: Windows binds nothing by itself, as for DFU; the others open it by libusb
        driver={"windows": "WinUSB (Zadig)", "macos": "none", "linux": "none", "ipados": "no",
                "android": "OTG app (USB host API)"},
        host_software="bootkit with bootkit-plugin-blink",
        eeprom=False, readback=True, verify="read-back",
        feedback="a status code for every refused request (address, protected, not erased, ...)",
        unattended=True,
        bootloader_size="1 KiB",  # an estimate, nothing was built: control requests only, no class driver
        families=(),
        quirks=(
            ("Windows binds no driver to a vendor-class interface", "bind WinUSB once with Zadig (a Microsoft "
             "OS 2.0 descriptor would make it automatic)"),
            ("Linux: only root may open the device", "udev rule with the VID:PID and MODE=\"0666\""),
            ("iPadOS: apps cannot open a vendor-class interface", "none possible: choose msc (UF2 drive) or midi"),
        ),
        benchmark="",
    ),
)
