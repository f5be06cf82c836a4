"""The ISP programmer personality: a programmer with an AVR on its ISP header.

Dialects: ``stk500v2`` (an STK500 v2 / AVRISP-class programmer: Atmel AVR068 framing
on a serial port, served on a pty or as a CDC-ACM function; avrdude -c stk500v2 /
-c avrisp2) and ``usbasp`` (Thomas Fischl's USBasp: vendor control requests on
16c0:05dc; avrdude -c usbasp).  ``--chip`` names the TARGET, the AVR on the header
(bootkit.isp.target.EmulatedAvr); the programmer itself has no flash of its own.
"""

from __future__ import annotations

from .. import lazy_names

NAME = "isp"
DIALECTS = ("stk500v2", "usbasp")
# CMD_SIGN_ON's answer: avrdude's stk500v2_getsync() treats "STK500_2" as an STK500 (it
# then reads the top card, Vtarget, Varef, oscillator and SCK parameters) and "AVRISP_2"
# as an AVRISP (HW/SW version and Vtarget only).  Here, not in .protocol, so the registry
# reads the options without importing the STK500 v2 codec.
SIGN_ON_NAMES = ("STK500_2", "AVRISP_2")
# bootkit demo: (dialect, sample image in examples/firmware)
DEMO = (("stk500v2", "sample-atmega32u4"),)

__getattr__ = lazy_names(__name__, {
    "Stk500v2Programmer": ".device", "IspProgrammerFunction": ".device"})

__all__ = ["NAME", "DIALECTS", "DEMO", "SIGN_ON_NAMES", "Stk500v2Programmer", "IspProgrammerFunction"]
