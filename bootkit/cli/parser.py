"""The command line parser, built lazily: only the parser of the command being run.

Each command group is a module with ``add_commands(subparsers)`` (as httpx and python-can
pick a transport or an interface by name with a lazy import); a personality adds its own
commands (sending a print job, dropping a file on a drive) through ``Personality.add_commands``.
"""

from __future__ import annotations

import argparse
import importlib

from .. import __version__

# command -> the module of bootkit.cli that builds its parser and runs it
GROUPS = {
    "demo": "catalog", "chips": "catalog", "convert": "convert", "list": "catalog",
    "flash": "transfer", "read": "transfer", "choose": "catalog", "product": "catalog", "serve": "serve",
    "fuses": "fuses", "signature": "fuses", "sample": "convert",
    "erase": "verbs", "verify": "verbs", "reset": "verbs", "info": "verbs",
}
COMMANDS = tuple(GROUPS)


class _Unused:
    """Stands in for the parser of a command that is not being run, and takes
    (and ignores) whatever that command's parser would be given."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: self


class _OneCommand:
    """The subcommands action, building only the parser of ``wanted``: building
    all sixteen argparse parsers costs ~0.2 s of start-up on a slow board (a Pi
    Zero, or the TCG guest of benchmarks/bench_gadget_dfu.py)."""

    def __init__(self, action, wanted: str):
        self.action, self.wanted, self.built = action, wanted, False

    def add_parser(self, name, **kwargs):
        if name != self.wanted:
            return _Unused()
        self.built = True
        return self.action.add_parser(name, **kwargs)


def command_in(argv: list[str]) -> str | None:
    """The subcommand named on the command line, if any (past the global options)."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--chip-file":
            i += 2
        elif arg.startswith("-"):
            i += 1
        else:
            return arg
    return None


def _personality_commands(sub, command: str | None = None) -> None:
    """The personalities' own commands (``Personality.add_commands``): every one's, or only
    the personality's that declares ``command`` in ``Personality.commands``."""
    from .. import registry

    for personality in registry.personalities():
        if command is None or command in personality.commands:
            personality.add_commands(sub)


def add_verbosity(p: argparse.ArgumentParser, suppress: bool = False) -> None:
    """-v/--verbose and -q/--quiet: on the top-level parser, and again (``suppress``: no
    default, so the subcommand does not overwrite the top level's value) on the host commands,
    so `bootkit -v flash ...` and `bootkit flash ... -v` both work."""
    default: dict = {"default": argparse.SUPPRESS} if suppress else {}
    p.add_argument("-v", "--verbose", action="count", **(default or {"default": 0}),
                   help="one line per USB transfer or serial read/write on stderr (bootkit.trace)")
    p.add_argument("-q", "--quiet", action="store_true", **(default or {"default": False}),
                   help="print only errors")


class LazyEpilog:
    """A command's help epilog, built only when the help is shown: gathering the
    personalities' examples loads every registered personality (plug-ins included), which
    a command that only runs must not pay for, nor fail on."""

    def __init__(self, build):
        self.build = build


class _Parser(argparse.ArgumentParser):
    """The top-level parser: its examples are gathered only when its help is shown."""

    def format_help(self) -> str:
        lazy: object = self.epilog  # argparse declares a str; a LazyEpilog stands in for one
        if isinstance(lazy, LazyEpilog):
            self.epilog = lazy.build()
        if self.epilog is None:
            from .transfer import first_example

            self.epilog = ("examples:\n  bootkit demo\n  bootkit chips\n"
                           f"  {first_example('flash')}\n"
                           "  bootkit convert fw.hex fw.uf2 --family rp2040\n\n"
                           "exit status: 0 success, 1 the device or tool failed, 2 bad input")
        return super().format_help()


def build_parser(command: str | None = None, argv=()) -> argparse.ArgumentParser:
    """The command line parser; with ``command``, only that subcommand is built
    (every one when it is None or unknown, so help and errors list them all).
    ``argv`` lets a command declare only what its arguments need (``--via``'s flags)."""
    p = _Parser(prog="bootkit", formatter_class=argparse.RawDescriptionHelpFormatter,
                description="USB device bootloaders: one memory core, six USB class personalities, device and "
                            "host side.")
    p.add_argument("--version", action="version", version=f"bootkit {__version__}")
    p.add_argument("--chip-file", action="append", default=[], metavar="FILE.toml",
                   help="add a chip from a TOML file (repeatable)")
    add_verbosity(p)
    action = p.add_subparsers(dest="command", metavar="COMMAND")
    if command in GROUPS:
        importlib.import_module(f"bootkit.cli.{GROUPS[command]}").add_commands(_OneCommand(action, command), argv)
        return p
    if command is not None:  # a personality's own command, or an unknown one
        one = _OneCommand(action, command)
        _personality_commands(one, command)
        if one.built:
            return p
    for module in dict.fromkeys(GROUPS.values()):
        importlib.import_module(f"bootkit.cli.{module}").add_commands(action, argv)
    _personality_commands(action)
    return p
