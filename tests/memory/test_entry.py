"""Entry policy: when an emulated board runs its bootloader, with a fake clock."""

from __future__ import annotations

import pytest

from bootkit.memory import MAGIC_WORD, Board, EntryPolicy, SimulatedFlash, get_chip
from bootkit.memory.entry import TRIGGERS


class FakeClock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def blank_flash(chip="atmega32u4") -> SimulatedFlash:
    return SimulatedFlash(get_chip(chip))


def programmed_flash(chip="atmega32u4") -> SimulatedFlash:
    """An image programmed but never manifested (an interrupted update)."""
    flash = blank_flash(chip)
    start = flash.layout.application_ranges()[0][0]
    flash.program(start, b"\x0c\x94\x5c\x00")
    return flash


def valid_flash(chip="atmega32u4") -> SimulatedFlash:
    flash = programmed_flash(chip)
    flash.manifest()
    return flash


def board(memory, policy=None, clock=None):
    clock = clock or FakeClock()
    return Board(memory=memory, policy=policy or EntryPolicy(), clock=clock), clock


def policy_without(*names, **kw) -> EntryPolicy:
    return EntryPolicy(triggers=frozenset(TRIGGERS) - set(names), **kw)


# ---------------------------------------------------------------------------


def test_magic_word_value():
    # the xmega raw-HID bootloader's value
    assert MAGIC_WORD == 0x97E1E28E


@pytest.mark.parametrize("chip", ["atmega32u4", "stm32f103c8", "rp2040", "nrf52840"])
def test_blank_flash_runs_the_bootloader(chip):
    b, clock = board(blank_flash(chip))
    assert b.power_on() == "bootloader"
    assert b.mode == "bootloader"
    assert "blank" in b.reason
    clock.advance(100)
    assert b.reset_button() == "bootloader"
    clock.advance(100)
    assert b.tick() == "bootloader"


@pytest.mark.parametrize("chip", ["atmega32u4", "stm32f103c8", "rp2040", "nrf52840"])
def test_manifested_valid_application_runs(chip):
    b, clock = board(valid_flash(chip))
    assert b.power_on() == "application"
    clock.advance(10)
    assert b.reset_button() == "application"


def test_interrupted_update_stays_in_the_bootloader_across_resets():
    flash = programmed_flash()
    b, clock = board(flash)
    assert b.power_on() == "bootloader"
    assert "valid" in b.reason
    for _ in range(5):
        clock.advance(10)
        assert b.reset_button() == "bootloader"
        assert b.power_on() == "bootloader"
    clock.advance(1000)
    assert b.tick() == "bootloader"
    # the retry completes the update: now the application runs
    flash.manifest()
    clock.advance(10)
    assert b.reset_button() == "application"


def test_update_started_over_a_valid_app_and_interrupted_keeps_the_bootloader():
    flash = valid_flash()
    b, clock = board(flash)
    assert b.power_on() == "application"
    clock.advance(10)
    assert b.application_requests_bootloader() == "bootloader"
    flash.erase(0)
    flash.program(0, b"\x0c\x94")            # power lost before manifest
    clock.advance(10)
    assert b.power_on() == "bootloader"
    clock.advance(10)
    assert b.reset_button() == "bootloader"


def test_interrupted_update_persisted_in_a_file_stays_in_the_bootloader(tmp_path):
    path = tmp_path / "img.bin"
    chip = get_chip("atmega32u4")
    flash = SimulatedFlash(chip, path)
    flash.program(0, b"\x0c\x94")
    flash.close()
    b, _ = board(SimulatedFlash(chip, path))
    assert b.power_on() == "bootloader"


def test_magic_word_enters_the_bootloader_and_is_consumed():
    b, clock = board(valid_flash())
    assert b.power_on() == "application"
    clock.advance(10)
    assert b.application_requests_bootloader() == "bootloader"
    assert b.reason == "magic"
    assert b.noinit_magic == 0                 # consumed
    clock.advance(10)                          # far from the previous reset
    assert b.reset_button() == "application"


def test_magic_word_left_in_ram_enters_on_plain_reset():
    b, clock = board(valid_flash())
    b.power_on()
    clock.advance(10)
    b.noinit_magic = MAGIC_WORD
    assert b.reset() == "bootloader"
    assert b.noinit_magic == 0


def test_wrong_magic_word_is_ignored():
    b, clock = board(valid_flash())
    b.power_on()
    clock.advance(10)
    b.noinit_magic = MAGIC_WORD ^ 1
    assert b.reset() == "application"


def test_double_reset_within_the_window_enters_the_bootloader():
    policy = EntryPolicy(double_reset_window=0.5)
    b, clock = board(valid_flash(), policy)
    assert b.power_on() == "application"
    clock.advance(10)
    assert b.reset_button() == "application"
    clock.advance(0.3)
    assert b.reset_button() == "bootloader"
    assert b.reason == "double-reset"


def test_double_reset_at_the_edge_of_the_window():
    policy = EntryPolicy(double_reset_window=0.5)
    b, clock = board(valid_flash(), policy)
    b.power_on()
    clock.advance(10)
    b.reset_button()
    clock.advance(0.5)
    assert b.reset_button() == "bootloader"


def test_two_resets_farther_apart_run_the_application():
    policy = EntryPolicy(double_reset_window=0.5)
    b, clock = board(valid_flash(), policy)
    b.power_on()
    for _ in range(4):
        clock.advance(0.51)
        assert b.reset_button() == "application"
    clock.advance(3.0)
    assert b.reset_button() == "application"


def test_power_on_forgets_the_previous_reset():
    b, clock = board(valid_flash(), EntryPolicy(double_reset_window=0.5))
    b.power_on()
    clock.advance(10)
    b.reset_button()
    clock.advance(0.1)
    assert b.power_on() == "application"
    clock.advance(0.1)
    assert b.reset_button() == "application"


def test_touch_1200_enters_the_bootloader():
    b, clock = board(valid_flash())
    b.power_on()
    clock.advance(10)
    assert b.touch_1200() == "bootloader"
    assert b.reason == "baud1200"


# ---------------------------------------------------------------------------
# Timeout


@pytest.mark.parametrize("enter", ["touch_1200", "application_requests_bootloader", "double"])
def test_soft_entered_bootloader_times_out_to_the_application(enter):
    policy = EntryPolicy(timeout=8.0)
    b, clock = board(valid_flash(), policy)
    b.power_on()
    clock.advance(10)
    if enter == "double":
        b.reset_button()
        clock.advance(0.2)
        assert b.reset_button() == "bootloader"
    else:
        assert getattr(b, enter)() == "bootloader"
    clock.advance(7.9)
    assert b.tick() == "bootloader"
    clock.advance(0.1)
    assert b.tick() == "application"


def test_activity_postpones_the_timeout():
    b, clock = board(valid_flash(), EntryPolicy(timeout=8.0))
    b.power_on()
    clock.advance(10)
    assert b.touch_1200() == "bootloader"
    clock.advance(5)
    b.activity()
    clock.advance(5)                      # 10 s since entry, 5 s since activity
    assert b.tick() == "bootloader"
    b.activity()
    clock.advance(7.9)
    assert b.tick() == "bootloader"
    clock.advance(0.1)
    assert b.tick() == "application"


def test_custom_timeout():
    b, clock = board(valid_flash(), EntryPolicy(timeout=1.5))
    b.power_on()
    clock.advance(10)
    b.touch_1200()
    clock.advance(1.4)
    assert b.tick() == "bootloader"
    clock.advance(0.1)
    assert b.tick() == "application"


@pytest.mark.parametrize("make", [blank_flash, programmed_flash])
def test_bootloader_entered_because_app_is_invalid_never_times_out(make):
    b, clock = board(make(), EntryPolicy(timeout=8.0))
    assert b.power_on() == "bootloader"
    for _ in range(10):
        clock.advance(100)
        assert b.tick() == "bootloader"


def test_timeout_not_in_policy_never_leaves():
    b, clock = board(valid_flash(), policy_without("timeout"))
    b.power_on()
    clock.advance(10)
    assert b.touch_1200() == "bootloader"
    clock.advance(1000)
    assert b.tick() == "bootloader"


def test_application_mode_tick_stays_in_application():
    b, clock = board(valid_flash())
    b.power_on()
    clock.advance(1000)
    assert b.tick() == "application"


def test_leave_after_manifest_runs_the_application():
    flash = blank_flash()
    b, clock = board(flash)
    assert b.power_on() == "bootloader"
    flash.program(0, b"\x0c\x94")
    assert b.leave() == "bootloader"           # not manifested yet
    flash.manifest()
    assert b.leave() == "application"


# ---------------------------------------------------------------------------
# Policies


def test_policy_without_baud1200_ignores_the_touch():
    b, clock = board(valid_flash(), policy_without("baud1200"))
    b.power_on()
    clock.advance(10)
    assert b.touch_1200() == "application"


def test_policy_without_magic_ignores_the_magic_word():
    b, clock = board(valid_flash(), policy_without("magic"))
    b.power_on()
    clock.advance(10)
    assert b.application_requests_bootloader() == "application"


def test_policy_without_double_reset_ignores_it():
    b, clock = board(valid_flash(), policy_without("double-reset"))
    b.power_on()
    clock.advance(10)
    b.reset_button()
    clock.advance(0.1)
    assert b.reset_button() == "application"


def test_policy_without_invalid_runs_an_unmanifested_app():
    b, _ = board(programmed_flash(), policy_without("invalid"))
    assert b.power_on() == "application"


def test_policy_without_blank_still_catches_blank_flash_as_invalid():
    b, _ = board(blank_flash(), policy_without("blank"))
    assert b.power_on() == "bootloader"
    assert "blank" not in b.reason


def test_policy_with_only_magic():
    b, clock = board(blank_flash(), EntryPolicy(triggers=frozenset({"magic"})))
    assert b.power_on() == "application"
    clock.advance(10)
    assert b.application_requests_bootloader() == "bootloader"


def test_unknown_trigger_raises_value_error():
    with pytest.raises(ValueError) as exc:
        EntryPolicy(triggers=frozenset({"blank", "sneeze"}))
    assert "sneeze" in str(exc.value)
    # the message lists the allowed names
    for name in TRIGGERS:
        assert name in str(exc.value)


def test_default_policy_has_every_trigger():
    p = EntryPolicy()
    assert set(p.triggers) == set(TRIGGERS)
    assert p.timeout == 8.0                     # Caterina's 8 s
