"""What exists and which to choose: ``demo``, ``chips``, ``list``, ``choose``, ``product check``."""

from __future__ import annotations

import argparse
import sys

from .errors import EXIT_BAD_INPUT, EXIT_OK, BadInput

FMT = argparse.RawDescriptionHelpFormatter


def add_commands(sub, argv=()) -> None:
    s = sub.add_parser("demo", formatter_class=FMT, help="flash a sample image through every personality (emulated)",
                       description="Flash the sample images in examples/firmware through every personality and "
                                   "dialect into emulated devices on the in-process bus, read them back, and print "
                                   "a table.", epilog="example:\n  bootkit demo")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("chips", formatter_class=FMT, help="list the chip database",
                       description="Print every chip bootkit knows, with its memories and bootloader region "
                                   "(docs/chips.md says where each figure comes from).",
                       epilog="examples:\n  bootkit chips\n  bootkit chips --family stm32\n"
                              "  bootkit chips --family avr,xmega --json\n  bootkit --chip-file mychip.toml chips")
    s.add_argument("--family", metavar="F[,F]", help="only these families: avr, xmega, stm32, samd, esp32, "
                                                     "nrf52, rp2040, rp2350")
    s.add_argument("--json", action="store_true", help="a JSON array, one object per chip")
    s.set_defaults(func=cmd_chips)

    s = sub.add_parser("list", formatter_class=FMT, help="list the bootloaders any personality can talk to",
                       description="List every bootloader a personality's host side can talk to, each "
                                   "personality finding its own: interfaces on real USB (libusb), serial ports "
                                   "by their USB ids, mounted UF2 drives (INFO_UF2.TXT), /dev/usb/lp* nodes by "
                                   "their IEEE 1284 ID, MIDI ports by name (with the optional MIDI extra); or, "
                                   "with --usbip, what a USB/IP server exports. docs/finding.md says how each "
                                   "is recognised.",
                       epilog="examples:\n  bootkit list\n  bootkit list --json\n"
                              "  bootkit list --usbip 127.0.0.1:3240")
    s.add_argument("--json", action="store_true", help="a JSON array, one object per device")
    s.add_argument("--usbip", metavar="HOST[:PORT]", help="the devices a USB/IP server exports (and nothing else)")
    s.set_defaults(func=cmd_list)

    s = sub.add_parser("choose", formatter_class=FMT, help="rank the personalities for your product's needs",
                       description="Rank personality/dialect pairs for the operating systems your customers use "
                                   "and what the update must do, with a comparison table. The facts come from "
                                   "what each personality declares in bootkit/classes/*/facts.py.",
                       epilog="examples:\n  bootkit choose --os ipados --needs no-host-software\n"
                              "  bootkit choose --needs eeprom --chip atmega32u4 --write product.toml\n\n"
                              "oses: windows, macos, linux, ipados, android\n"
                              "needs: eeprom, readback, no-host-software, no-driver, unattended, fast, "
                              "small-bootloader, feedback")
    s.add_argument("--os", default="", metavar="A,B", help="operating systems the update must work from")
    s.add_argument("--needs", default="", metavar="X,Y", help="what the update must do")
    s.add_argument("--chip", help="the product's chip (rules out what cannot run on it)")
    s.add_argument("--write", metavar="P.toml", help="write a starter product profile for the top choice")
    s.add_argument("--details", action="store_true",
                   help="every reason of every dialect and the comparison table (default: a short ranking)")
    s.add_argument("--json", action="store_true",
                   help="the ranking as one JSON array (name, score, works, reasons), best first")
    s.set_defaults(func=cmd_choose)

    pr = sub.add_parser("product", formatter_class=FMT, help="product profiles (TOML)",
                        description="Check a product profile: chip, personality, USB ids, protection, settings.",
                        epilog="example:\n  bootkit product check examples/products/arduino-leonardo.toml")
    psub = pr.add_subparsers(dest="product_command", metavar="ACTION")
    s = psub.add_parser("check", formatter_class=FMT, help="validate a profile and summarise it",
                        epilog="example:\n  bootkit product check examples/products/teensy2-halfkay.toml")
    s.add_argument("path", metavar="P.toml")
    s.set_defaults(func=cmd_product_check)
    pr.set_defaults(func=lambda args: (pr.print_help(), EXIT_BAD_INPUT)[1])


def cmd_demo(args) -> int:
    from ..demo import run_demo

    return run_demo()


def cmd_chips(args) -> int:
    from ..memory import CHIPS
    from ..memory.chips import FAMILIES

    chips = list(CHIPS)
    families = list(FAMILIES)
    if args.family is not None:
        wanted = [f.strip().lower() for f in args.family.split(",") if f.strip()]
        unknown = [f for f in wanted if f not in families] or ([] if wanted else [args.family])
        if unknown:
            raise BadInput(f"--family {unknown[0]!r}: no such chip family (known: {', '.join(families)})")
        chips = [c for c in chips if c.family in wanted]
    # grouped by family (in FAMILIES' order), by name within a family with numbers compared
    # as numbers: atmega8, atmega16, atmega128
    import re

    chips = sorted(chips, key=lambda c: (families.index(c.family),
                                         [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", c.name)]))
    if args.json:
        import json

        # one object per line inside the array: valid JSON that still greps
        print("[\n" + ",\n".join(json.dumps(_chip_json(c)) for c in chips) + "\n]")
        return EXIT_OK

    header = ("chip", "family", "flash", "page", "EEPROM", "bootloader region", "signature", "UF2 family", "USB")
    rows = []
    for c in chips:
        size = f"{c.flash_size // 1024}K@0x{c.flash_start:X}"
        page = (_size(c.page_size) if len(c.flash_sectors) == 1 and c.flash_sectors[0][1] == c.page_size
                else ",".join(f"{n}x{_size(s)}" for n, s in c.flash_sectors))
        # no region: a ROM bootloader, or an AVR without a boot section (programmed over ISP)
        boot = (f"0x{c.boot_start:X}-0x{c.boot_end - 1:X}" if c.boot_size
                else "none (ISP)" if c.family == "avr" else "none (ROM)")
        rows.append((c.name, c.family, size, page, str(c.eeprom_size or "-"), boot,
                     c.signature.hex() or "-", f"0x{c.uf2_family:08x}" if c.uf2_family else "-",
                     "yes" if c.usb else "no"))
    # a plain aligned table, full rows whatever the terminal's width: rich's Table cost more
    # start-up than the rest of the command (#22 item 3, benchmarks/bench_startup.py)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip()
             for r in [header, tuple("-" * w for w in widths), *rows]]
    sys.stdout.write("\n".join(lines) + "\n")
    return EXIT_OK


def _size(n: int) -> str:
    """A sector size as the table shows it: 256, 2K."""
    return f"{n // 1024}K" if n >= 1024 and n % 1024 == 0 else str(n)


def _chip_json(c) -> dict:
    return {
        "name": c.name, "family": c.family, "flash_start": c.flash_start, "flash": c.flash_size,
        "page": c.page_size, "sectors": [list(g) for g in c.flash_sectors],
        "eeprom": c.eeprom_size, "eeprom_page": c.eeprom_page,
        "boot_region": {"start": c.boot_start, "size": c.boot_size} if c.boot_size else None,
        "signature": c.signature.hex() or None,
        "uf2_family": f"0x{c.uf2_family:08x}" if c.uf2_family is not None else None,
        "usb": c.usb, "aliases": list(c.aliases), "description": c.description,
    }


def cmd_list(args) -> int:
    from ..discovery import DiscoveryError, Unreachable, discover, libusb_backend, usbip_backend
    from .errors import Failed

    errors: list[tuple[str, str]] = []
    if args.usbip:
        try:
            backend = usbip_backend(args.usbip)
        except DiscoveryError as exc:
            raise BadInput(str(exc)) from None
        except Unreachable as exc:
            raise Failed(str(exc)) from None
        found = discover(backend=backend, errors=errors)
    else:
        backend = libusb_backend()
        if backend is None:
            print("real USB: not available (libusb not found): serial ports, drives, printers and MIDI ports "
                  "only", file=sys.stderr)
        found = discover(backend=backend, local=True, errors=errors)
    for name, why in errors:
        print(f"{name}: cannot look for devices: {why}", file=sys.stderr)
    if args.json:
        import json

        # one object per line inside the array: valid JSON that still greps
        print("[" + ",".join("\n" + json.dumps(f.to_json()) for f in found) + ("\n]" if found else "]"))
        return EXIT_OK
    if not found:
        print("no bootloader found" + (f" on the USB/IP server {args.usbip}" if args.usbip else ""))
        return EXIT_OK
    width = max(len(f.name) for f in found)
    for f in found:
        # what the device says of itself (xusb-boot's boot info, DFU's transfer size, INFO_UF2.TXT ...);
        # where it sits on the bus is already in f.where, the rest is in --json
        said = " ".join(f"{k}={v}" for k, v in f.details.items()
                        if k not in ("bus", "address", "interface", "usage") and isinstance(v, (str, int, float)))
        print(f"{f.name:<{width}}  {f.where}" + (f"  chip {f.chip}" if f.chip else "") + (f"  {said}" if said else ""))
    return EXIT_OK


def cmd_choose(args) -> int:
    from ..chooser import cli_choose

    if args.json:
        return _choose_json(args)
    return cli_choose(args.os, args.needs, args.chip, args.write, details=args.details)


def _choose_json(args) -> int:
    """``choose --json``: the same ranking as the text, one object per personality/dialect."""
    import json

    from ..chooser import choose, write_profile

    try:
        ranked = choose(args.os or (), args.needs or (), args.chip)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    best = next((r for r in ranked if r.works), None)
    if args.write:  # before anything is printed, as the text form does
        if best is None:
            raise BadInput("no personality works for these OSes and this chip: nothing written")
        try:
            write_profile(best, args.chip, args.write)
        except (ValueError, OSError) as exc:
            raise BadInput(f"{args.write}: {exc}") from None
    rows = [{"name": r.name, "personality": r.personality, "dialect": r.dialect, "score": r.score,
             "works": r.works, "reasons": list(r.why), "unmeasured_needs": r.unmeasured} for r in ranked]
    print(json.dumps(rows, indent=1))
    return EXIT_OK


def cmd_product_check(args) -> int:
    from ..product import cli_check

    return cli_check(args.path)
