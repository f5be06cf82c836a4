"""IspLink's default operations (built on transact) and EmulatedLink."""

from __future__ import annotations

import pytest

from bootkit.isp import protocol as P
from bootkit.isp.errors import IspError, IspInputError
from bootkit.isp.link import SYNC_TRIES, EmulatedLink, IspLink
from bootkit.isp.target import EmulatedAvr


class DeadLink(IspLink):
    """Nothing on the wires: MISO pulled up, every byte reads 0xFF."""

    def __init__(self):
        self.resets: list[bool] = []
        self.sent: list[bytes] = []

    def set_reset(self, active: bool) -> None:
        self.resets.append(active)

    def transact(self, cmd: bytes) -> bytes:
        self.sent.append(cmd)
        return b"\xff\xff\xff\xff"


class Recording(EmulatedLink):
    def __init__(self, target):
        super().__init__(target)
        self.sent: list[bytes] = []

    def transact(self, cmd: bytes) -> bytes:
        self.sent.append(bytes(cmd))
        return super().transact(cmd)


def test_connect_gives_up_after_avrdudes_tries_with_a_reset_pulse_between():
    link = DeadLink()
    with pytest.raises(IspError) as err:
        link.connect()
    message = str(err.value)
    assert "target does not answer programming enable" in message and "check wiring, power, clock" in message
    assert "\n" not in message
    assert link.sent == [P.programming_enable()] * SYNC_TRIES
    # a pulse after every failed try, then RESET released for good
    assert link.resets.count(False) == SYNC_TRIES + 1 and link.resets[-1] is False


def test_connect_succeeds_after_a_few_tries():
    class LateTarget(EmulatedAvr):
        """Answers only from the third Programming Enable on (a slow clock start)."""

        tries = 0

        def spi(self, frame):
            if bytes(frame) == P.programming_enable():
                self.tries += 1
                if self.tries < 3:
                    return b"\x00\x00\x00\x00"
            return super().spi(frame)

    target = LateTarget("attiny85")
    link = EmulatedLink(target)
    link.connect()
    assert target.tries == 3 and target.programming
    link.disconnect()
    assert not target.programming


def test_bulk_operations_round_trip():
    with EmulatedLink(EmulatedAvr("atmega328p")) as link:
        link.connect()
        assert link.read_signature() == b"\x1e\x95\x0f"
        link.write_page("flash", 128, bytes(range(128)), page_size=128)
        assert link.read_memory("flash", 127, 3) == b"\xff\x00\x01"
        link.write_page("flash", 257, b"\x10\x11\x12", page_size=128)  # odd start and length
        assert link.read_memory("flash", 256, 6) == b"\xff\x10\x11\x12\xff\xff"
        link.write_page("eeprom", 6, b"\xaa\xbb", page_size=4)  # the second half of a page
        link.write_page("eeprom", 9, b"\xcc", page_size=1)
        assert link.read_memory("eeprom", 4, 6) == b"\xff\xff\xaa\xbb\xff\xcc"
        assert link.read_fuses() == {"lfuse": 0x62, "hfuse": 0xD9, "efuse": 0xFF, "lock": 0xFF}
        link.write_fuse("lfuse", 0xFF)
        link.write_fuse("lock", 0xFC)
        assert link.read_fuses()["lfuse"] == 0xFF and link.read_fuses()["lock"] == 0xFC
        link.chip_erase()
        assert link.read_memory("flash", 128, 4) == b"\xff" * 4 and link.read_fuses()["lock"] == 0xFF


def test_above_128_kib_reads_and_writes_load_the_extended_address():
    target = EmulatedAvr("atmega2560")
    link = Recording(target)
    link.connect()
    link.write_page("flash", 0x20000, b"\x5a" * 256, page_size=256)
    assert P.load_extended_address(1) in link.sent
    assert target.memory.peek(0x20000, 256) == b"\x5a" * 256 and target.memory.peek(0, 2) == b"\xff\xff"
    # the target still holds extended address 1: a read of the lower half must load 0 first
    assert link.read_memory("flash", 0, 2) == b"\xff\xff"
    assert link.read_memory("flash", 0x1FFFE, 4) == b"\xff\xff\x5a\x5a"


def test_without_a_chip_the_link_reads_the_fuses_the_signature_names():
    link = EmulatedLink(EmulatedAvr("attiny85"))
    link.chip = None
    link.connect()
    assert set(link.read_fuses()) == {"lfuse", "hfuse", "efuse", "lock"}


def test_bad_requests_are_input_errors_before_anything_is_sent():
    link = Recording(EmulatedAvr("attiny85"))
    link.connect()
    link.sent.clear()
    with pytest.raises(IspInputError, match="crosses a 64-byte page boundary"):
        link.write_page("flash", 60, bytes(8), page_size=64)
    with pytest.raises(IspInputError, match="unknown memory 'sram'"):
        link.read_memory("sram", 0, 1)
    with pytest.raises(IspInputError, match="unknown fuse 'xfuse'"):
        link.write_fuse("xfuse", 0)
    with pytest.raises(IspInputError, match="not a byte"):
        link.write_fuse("lfuse", 0x100)
    assert link.sent == []


def test_a_target_that_stays_busy_is_an_isp_error(monkeypatch):
    import bootkit.isp.link as link_module

    monkeypatch.setattr(link_module, "BUSY_TIMEOUT", 0.01)

    class Stuck(EmulatedLink):
        def transact(self, cmd):
            answer = super().transact(cmd)
            return answer[:3] + b"\x01" if cmd[0] == P.POLL_RDY else answer

    link = Stuck(EmulatedAvr("attiny85"))
    link.connect()
    with pytest.raises(IspError, match="target stays busy"):
        link.chip_erase()
