"""bootkit.registry: personalities (and transports) found through entry points, the
built-ins included; unknown names and broken plug-ins said in one line; options checked
by name per dialect (bootkit.contracts)."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import sys
import types
from pathlib import Path

import pytest

from bootkit import registry
from bootkit.contracts import DeviceOptions, Link, OptionError, Personality

BUILTINS = ["dfu", "hid", "cdc", "printer", "msc", "midi", "isp"]
GROUP = "bootkit.personalities"


@pytest.fixture(autouse=True)
def fresh_registry():
    registry.clear_cache()
    yield
    registry.clear_cache()


class _Tiny(Personality):
    name = "tiny"
    summary = "a plug-in personality for these tests"
    dialects = ("one",)
    options = {"one": DeviceOptions}

    def default_dialect(self, chip):
        return "one"

    def bootloader_device(self, memory, chip, dialect, options):
        raise NotImplementedError

    def host(self):
        raise NotImplementedError


def _with_plugins(monkeypatch, *fakes: tuple[str, str], module: types.ModuleType | None = None):
    """importlib.metadata.entry_points as if a distribution declared ``fakes`` (name, value)."""
    real = importlib.metadata.entry_points
    extra = [importlib.metadata.EntryPoint(name, value, GROUP) for name, value in fakes]

    def entry_points(**selection):
        found = list(real(**selection))
        if selection.get("group") == GROUP:
            found += extra
        return found

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    if module is not None:
        monkeypatch.setitem(sys.modules, module.__name__, module)


def _plugin_module(**names) -> types.ModuleType:
    module = types.ModuleType("bootkit_test_plugin")
    for key, value in names.items():
        setattr(module, key, value)
    return module


def test_builtins_are_entry_points_of_bootkits_own_distribution():
    declared = {ep.name: ep.value for ep in importlib.metadata.distribution("bootkit").entry_points
                if ep.group == GROUP}
    assert sorted(declared) == sorted(BUILTINS)
    assert registry.personality_names() == BUILTINS  # display order: Personality.order
    for name in BUILTINS:
        p = registry.personality(name)
        assert isinstance(p, Personality) and p.name == name
        assert declared[name] == f"{type(p).__module__}:PERSONALITY"
        assert set(p.options) == set(p.dialects)
        for cls in p.options.values():
            assert dataclasses.is_dataclass(cls) and issubclass(cls, DeviceOptions)
            assert cls.__dataclass_params__.frozen  # type: ignore[attr-defined]
            for f in dataclasses.fields(cls):
                assert f.metadata.get("help"), f"{name}: {cls.__name__}.{f.name} has no help"


def test_a_builtin_is_found_without_scanning_every_distribution(monkeypatch):
    def scan(**selection):
        raise AssertionError("entry_points() scans every installed distribution")

    monkeypatch.setattr(importlib.metadata, "entry_points", scan)
    assert registry.personality("hid").name == "hid"


def test_unknown_personality_is_one_line_naming_the_known_ones():
    with pytest.raises(ValueError) as info:
        registry.personality("floppy")
    assert str(info.value) == "unknown personality 'floppy' (choose from dfu, hid, cdc, printer, msc, midi, isp)"


def test_a_plugin_registers_like_a_builtin(monkeypatch):
    _with_plugins(monkeypatch, ("tiny", "bootkit_test_plugin:TINY"), module=_plugin_module(TINY=_Tiny()))
    assert registry.personality_names() == BUILTINS + ["tiny"]  # order 100: after the built-ins
    assert registry.personality("tiny").summary.startswith("a plug-in")
    with pytest.raises(ValueError, match=r"\(choose from dfu, hid, cdc, printer, msc, midi, isp, tiny\)"):
        registry.personality("floppy")


def test_a_broken_plugin_is_reported_not_hidden(monkeypatch):
    _with_plugins(monkeypatch, ("broken", "bootkit_no_such_module:PERSONALITY"))
    with pytest.raises(registry.PluginError) as info:
        registry.personality_names()
    line = str(info.value)
    assert "\n" not in line
    assert "'broken = bootkit_no_such_module:PERSONALITY'" in line and "ModuleNotFoundError" in line
    with pytest.raises(registry.PluginError, match="broken"):
        registry.personality("broken")
    assert registry.personality("dfu").name == "dfu"  # the others still load by name


@pytest.mark.parametrize("value, problem", [
    (object(), " is a object, not a bootkit.contracts.Personality instance"),
    (type("Other", (_Tiny,), {"name": "other"})(), " holds the personality 'other': the names must agree"),
    (type("NoOptions", (_Tiny,), {"options": {}})(), ": options must name exactly its dialects (one), got none"),
])
def test_a_plugin_holding_the_wrong_thing_is_reported(monkeypatch, value, problem):
    _with_plugins(monkeypatch, ("tiny", "bootkit_test_plugin:TINY"), module=_plugin_module(TINY=value))
    with pytest.raises(registry.PluginError) as info:
        registry.personality("tiny")
    assert str(info.value) == f"bootkit.personalities entry point 'tiny = bootkit_test_plugin:TINY'{problem}"


def test_an_option_a_dialect_does_not_take_is_an_error_naming_the_dialect():
    dfu = registry.personality("dfu")
    assert dfu.make_options("flip", secure=True).secure is True
    with pytest.raises(OptionError) as info:
        dfu.make_options("dfuse", secure=True)
    assert str(info.value).startswith("option 'secure' does not apply to dfu/dfuse (it takes: vid, pid, ")
    assert "transfer_size" in str(info.value) and "secure" not in str(info.value).split("(it takes:")[1]
    with pytest.raises(ValueError, match=r"unknown dfu dialect 'dfux' \(choose from dfu, dfuse, flip\)"):
        dfu.make_options("dfux")


def test_the_emulator_refuses_an_option_instead_of_dropping_it():
    from bootkit.emulator import Emulator

    # secure mode is FLIP's: a DfuSe device used to take it and ignore it
    with pytest.raises(ValueError, match=r"option 'secure' does not apply to dfu/dfuse"):
        Emulator("stm32f411", "dfu", options={"dialect": "dfuse", "secure": True})
    with pytest.raises(ValueError, match=r"option 'interrupt_out' does not apply to hid/halfkay"):
        Emulator("atmega32u4", "hid", options={"interrupt_out": True})  # halfkay: the chip's default
    with Emulator("atmega32u4", "hid", options={"dialect": "lufa", "interrupt_out": True}) as em:
        assert em.dialect == "lufa" and em.settings.interrupt_out is True


def test_a_link_field_a_host_side_does_not_use_is_an_error():
    from bootkit.formats.image import Image

    image = Image([(0, b"\x0c\x94" * 8)])
    with pytest.raises(OptionError, match=r"the dfu host side takes no port \(it takes: vid, pid, serial\)"):
        registry.personality("dfu").host().flash(image, Link(port="/dev/ttyACM0"))
    with pytest.raises(OptionError, match=r"the hid host side takes no path"):
        registry.personality("hid").host().read(Link(path="/media/x"))


def test_chips_a_personality_defines_resolve_through_the_registry():
    from bootkit.classes.hid.protocol import _EXTRA_CHIPS

    name = next(iter(_EXTRA_CHIPS))
    assert registry.resolve_chip(name).name == name
    with pytest.raises(KeyError, match="unknown chip 'z80'"):
        registry.resolve_chip("z80")


def test_transports_are_registered_by_name():
    assert registry.transport_names() == ["functionfs", "midiport", "pty", "usbip", "virtual"]
    with pytest.raises(ValueError, match=r"unknown transport 'carrier-pigeon' \(choose from functionfs, "):
        registry.transport("carrier-pigeon")


def test_bootkits_own_table_is_what_importlib_metadata_reads():
    """The start-up path reads bootkit's entry_points.txt itself (importlib.metadata costs
    ~50 ms of imports): it must find what importlib.metadata finds."""
    want = {(ep.group, ep.name, ep.value) for ep in importlib.metadata.distribution("bootkit").entry_points}
    got = {(group, name, ep.value) for group, eps in registry._own_table().items() for name, ep in eps.items()}
    assert got == want


def test_a_lookup_by_name_does_not_import_importlib_metadata():
    import subprocess

    code = ("import sys; from bootkit import registry; registry.personality('dfu'); "
            "print('importlib.metadata' in sys.modules, 'bootkit.classes.dfu.host' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "False"]  # neither the metadata machinery nor the host side


def test_a_broken_facts_module_is_an_error_not_no_facts(monkeypatch):
    """bootkit choose reads every personality's facts: one that cannot load them says so."""
    from bootkit import chooser

    class BrokenFacts(_Tiny):
        def facts(self):
            raise ImportError("No module named 'bootkit_test_plugin.facts'")

    _with_plugins(monkeypatch, ("tiny", "bootkit_test_plugin:TINY"), module=_plugin_module(TINY=BrokenFacts()))
    with pytest.raises(ImportError, match="bootkit_test_plugin.facts"):
        chooser.all_facts()


# each built-in's HostSide adapter: the settings it is given reach its host module by name,
# and every name it passes is a parameter the host function declares (no **_ to fall into)
HOST_SETTINGS = {
    "dfu": ("dfuse", {"alt": 1, "transfer_size": 512, "leave_timeout": 0.25}, Link(vid=1, pid=2)),
    "hid": ("halfkay", {"mcu": "atmega32u4", "leave_wait": 0.25}, Link(wait=3.0)),
    "cdc": ("caterina", {"baudrate": 115200, "touch": False, "leave_wait": 0.25}, Link(port="/dev/null")),
    "printer": ("lufa", {"record_size": 32, "leave_wait": (0.25, 0.125)}, Link(path="/dev/usb/lp9")),
    "msc": ("bin", {"fmt": "hex", "leave_wait": 0.25, "again": 0.125}, Link(path="/media/DRIVE")),
    "midi": ("file", {"realtime": False, "retries": 5, "leave_wait": 0.25}, Link(port="synth")),
    "isp": ("stk500v2", {"sck_hz": 125000, "baudrate": 57600}, Link(port="/dev/null")),
}


@pytest.mark.parametrize("name", BUILTINS)
@pytest.mark.parametrize("call", ["flash", "read"])
def test_a_host_side_passes_every_setting_by_name(monkeypatch, name, call):
    import importlib
    import inspect

    from bootkit.formats.image import Image

    dialect, settings, link = HOST_SETTINGS[name]
    p = registry.personality(name)
    host = importlib.import_module(f"{type(p).__module__.rsplit('.', 1)[0]}.host")
    real = getattr(host, call)
    seen: dict = {}

    def spy(*args, **kwargs):
        params = inspect.signature(real).parameters
        assert not any(q.kind is inspect.Parameter.VAR_KEYWORD for q in params.values()), f"{name} host.{call} has **"
        unknown = set(kwargs) - set(params)
        assert not unknown, f"{name}: host.{call} does not take {unknown}"
        seen.update(kwargs)
        return "result"

    monkeypatch.setattr(host, call, spy)
    options = p.make_options(dialect, **settings)
    if call == "flash":
        p.host().flash(Image([(0, b"\x0c\x94" * 8)]), link, dialect=dialect, options=options)
    else:
        p.host().read(link, dialect=dialect, options=options)
        if name == "printer":  # no read command: its host.read only raises HostError saying so
            return
    host_values = set(map(repr, seen.values()))
    for field, value in settings.items():
        used_by_read = field in ("alt", "transfer_size", "mcu", "baudrate", "touch", "retries", "sck_hz")
        if call == "flash" or used_by_read:
            assert repr(value) in host_values, f"{name}: {field}={value!r} did not reach host.{call}: {seen}"
    for field in link.given():
        assert repr(getattr(link, field)) in host_values, f"{name}: link.{field} did not reach host.{call}"


def test_the_emulator_takes_a_dialects_options_dataclass():
    from bootkit.classes.hid.personality import HalfKayOptions, LufaHidOptions
    from bootkit.emulator import Emulator

    with Emulator("atmega32u4", "hid", options=LufaHidOptions(interrupt_out=True), dialect="lufa") as em:
        assert em.settings.interrupt_out is True
        assert len(em.target.device.functions[0].interfaces()[0].endpoints) == 2  # IN and the OUT it asked for
    with pytest.raises(ValueError, match=r"HalfKayOptions are not the options of hid/lufa \(LufaHidOptions\)"):
        Emulator("atmega32u4", "hid", options=HalfKayOptions(), dialect="lufa")


def test_a_midi_files_pacing_reaches_the_host_and_only_for_the_file(monkeypatch):
    from bootkit.classes.midi import host
    from bootkit.formats.image import Image

    seen = []
    monkeypatch.setattr(host, "flash", lambda image, backend, **kw: seen.append(kw))
    midi = registry.personality("midi")
    image = Image([(0, b"\x0c\x94" * 8)])
    midi.host().flash(image, Link(port="synth"), dialect="file",
                      options=midi.make_options("file", encoding="notes", margin=2.0, slack_ms=1.0))
    assert (seen[0]["encoding"], seen[0]["margin"], seen[0]["slack_ms"]) == ("notes", 2.0, 1.0)
    midi.host().flash(image, Link(port="synth"), dialect="sysex", options=midi.make_options("sysex"))
    assert (seen[1]["encoding"], seen[1]["margin"], seen[1]["slack_ms"]) == (None, None, None)  # two-way: no pacing


def test_a_broken_plugin_is_one_line_from_the_cli_and_a_command_that_names_another_runs(monkeypatch, capsys,
                                                                                        tmp_path):
    from bootkit.cli import main

    _with_plugins(monkeypatch, ("broken", "bootkit_no_such_module:PERSONALITY"))
    assert main(["choose"]) == 1  # lists every personality: the broken one is reported
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("bootkit: failed: bootkit.personalities entry point 'broken")
    # flash --via dfu loads dfu only (its help examples are gathered only for --help)
    sample = Path(__file__).resolve().parents[1] / "examples" / "firmware" / "sample-atmega32u4.hex"
    image = tmp_path / "flash.bin"
    assert main(["flash", str(sample), "--via", "dfu", "--emulate", "atmega32u4", "--image", str(image)]) == 0
    assert "verified" in capsys.readouterr().out
