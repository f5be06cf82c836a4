"""The ISP programmer personality's constants, shared by its device and host halves.

The STK500 v2 wire protocol itself (AVR068 framing, command ids, command bodies) lives
in :mod:`bootkit.isp.stk500v2`, beside the ISP links, because the host link and the
Mega 2560 "wiring" bootloader use it too; this module adds what only the programmer
personality needs: its USB identity, its sign-on names and its parameter table.
"""

from __future__ import annotations

from . import SIGN_ON_NAMES
from ...isp.stk500v2 import (
    PARAM_CONTROLLER_INIT,
    PARAM_HW_VER,
    PARAM_OSC_CMATCH,
    PARAM_OSC_PSCALE,
    PARAM_RESET_POLARITY,
    PARAM_SCK_DURATION,
    PARAM_STATUS,
    PARAM_SW_MAJOR,
    PARAM_SW_MINOR,
    PARAM_TOPCARD_DETECT,
    PARAM_VADJUST,
    PARAM_VTARGET,
)


# The STK500's parameters as GET/SET_PARAMETER see them (AVR068 §7), with the values a
# board with firmware 2.10 and a 5 V target reports.  PARAM_STATUS bit 6 is "in
# programming mode".  An id not in this table answers STATUS_CMD_FAILED.
DEFAULT_PARAMETERS: dict[int, int] = {
    PARAM_HW_VER: 0x02,
    PARAM_SW_MAJOR: 0x02,
    PARAM_SW_MINOR: 0x0A,
    PARAM_VTARGET: 50,  # 5.0 V, tenths of a volt
    PARAM_VADJUST: 50,  # AREF 5.0 V
    PARAM_OSC_PSCALE: 0x02,
    PARAM_OSC_CMATCH: 0x01,
    PARAM_SCK_DURATION: 0x02,  # 8.68 us SCK period (avrdude's table): fine for a 1 MHz target
    PARAM_TOPCARD_DETECT: 0xFF,  # no top card
    PARAM_STATUS: 0x00,
    PARAM_RESET_POLARITY: 0x01,  # AVR-style, low-active RESET
    PARAM_CONTROLLER_INIT: 0x00,
}

# The programmer as it enumerates when served as a CDC-ACM function: the pid.codes test
# VID and a PID of bootkit's block (as the DFU and MSC personalities' own devices).
# Real STK500 v2 programmers with a USB serial port have their own vendors' ids; give
# --vid/--pid (a product profile's [usb] table) to look like one.
BOOTKIT_VID, BOOTKIT_ISP_PID = 0x1209, 0xB011
STRINGS = ("bootkit", "STK500 v2 ISP programmer")

__all__ = ["SIGN_ON_NAMES", "DEFAULT_PARAMETERS", "BOOTKIT_VID", "BOOTKIT_ISP_PID", "STRINGS"]
