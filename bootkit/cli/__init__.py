"""The ``bootkit`` command.

A package by concern: ``parser`` builds the command line (only the parser of the command
being run), ``arguments`` holds the argument types and groups several commands share,
``images`` reads and checks firmware input, ``session`` is where a host command talks, and
one module per command group runs it (``catalog``, ``convert``, ``transfer``, ``serve``);
a personality's own commands live in its package (``bootkit/classes/<name>/cli.py``).

Exit status: 0 success, 1 the device or tool failed, 2 bad input (file, arguments).
"""

from __future__ import annotations

import errno
import os
import signal
import sys

from .errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, BadInput, Failed, Interrupted, Terminated
from .parser import build_parser, command_in


def _terminated(signum, frame):
    raise Terminated()


def main(argv=None) -> int:
    try:
        return _main(sys.argv[1:] if argv is None else list(argv))
    except Exception as exc:
        from ..registry import PluginError

        if not isinstance(exc, PluginError):
            raise
        # an installed plug-in that does not load: say which, in one line (registry.PluginError)
        print(f"bootkit: failed: {exc}", file=sys.stderr)
        return EXIT_FAILED


def _asks_version(argv: list[str]) -> bool:
    """``bootkit [--chip-file F]... --version``: argparse would print the version and exit
    as soon as it met the option, but building the parser without a command builds every
    command's, the personalities' too (the registry's scan of installed plug-ins)."""
    i = 0
    while i < len(argv):
        if argv[i] == "--version":
            return True
        if argv[i] != "--chip-file" or i + 1 >= len(argv) or argv[i + 1].startswith("-"):
            return False  # a command, help, or anything argparse should judge
        i += 2
    return False


def _main(argv: list[str]) -> int:
    if _asks_version(argv):
        from .. import __version__

        print(f"bootkit {__version__}")  # argparse's "version" action: stdout, exit 0
        return EXIT_OK
    parser = build_parser(command_in(argv), argv)
    args, extra = parser.parse_known_args(argv)
    if extra:
        explain = getattr(args, "unknown_arguments", None)
        line = explain(args, extra) if explain is not None else None
        if line is None:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        print(f"bootkit: error: {line}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not args.command:
        parser.print_help()
        return EXIT_BAD_INPUT
    from ..progress import reset_phases

    reset_phases()
    previous = None
    if args.command != "serve":  # serve has its own SIGTERM handling: stop and write the image back
        try:
            previous = signal.signal(signal.SIGTERM, _terminated)
        except ValueError:  # main() called from another thread (a script's worker): no handler
            pass
    try:
        return _run(args)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _run(args) -> int:
    try:
        if args.chip_file:  # only then: the memory package is not every command's (convert needs none of it)
            from ..memory import ChipFileError, load_chip_file

            for f in args.chip_file:
                try:
                    load_chip_file(f)
                except ChipFileError as exc:
                    raise BadInput(str(exc)) from None
        return args.func(args)
    except BadInput as exc:
        print(f"bootkit: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Failed as exc:
        print(f"bootkit: failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except Interrupted as exc:
        print(f"bootkit: interrupted: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt as exc:
        print("bootkit: interrupted", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    except BrokenPipeError:  # output piped into head & co.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except OSError as exc:  # includes pyusb's USBError: a device or connection that failed
        hint = ""
        if getattr(exc, "errno", None) in (errno.EACCES, errno.EPERM):
            # libusb's LIBUSB_ERROR_ACCESS, a /dev/ttyACM* or /dev/hidraw* the user may not open
            hint = ("; install the udev rules: packaging/60-bootkit.rules "
                    "(python -m bootkit.udev; see docs/install.md)")
        print(f"bootkit: failed: {exc}{hint}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
