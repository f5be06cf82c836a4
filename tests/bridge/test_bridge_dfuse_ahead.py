"""The DfuSe back-end's link: few round trips, the requests of a one-by-one host, and
errors of what went behind reported, never a false success (issue 23 items 2, 3 and 5).

A DfuSe device answers every block's GETSTATUS with dfuDNBUSY; our emulator (and a
device that programs RAM) with bwPollTimeout 0, and the next GETSTATUS with
dfuDNLOAD-IDLE.  Once the back-end's device has answered so, the memory sends the
blocks of a batch, its Set Address, its Erase commands, a read's Set Address, ABORT and
UPLOADs, and the leave, several per round trip (DfuClient.download_session), with the
same requests in the same order as one by one.  Erase commands go behind, as writes
do: a failed one is the error of the next call, and the manifest waits for all of it.
"""

from __future__ import annotations

import pytest

from bootkit.classes.dfu.device import DfuEngine
from bootkit.classes.dfu.memory import DfuseMemory
from bootkit.classes.dfu.protocol import ABORT, DNLOAD, GETSTATUS, UPLOAD
from bootkit.cli import main
from bootkit.emulator import Emulator
from bootkit.formats import Image, save
from bootkit.memory import get_chip
from bootkit.memory.backends import BackendEraseFault, BackendFault, UsbSelection
from bootkit.memory.core import EraseFault
from bootkit.transports import usbip_client

CHIP = get_chip("stm32f411")
SECTORS = [0x08000000, 0x08004000, 0x08008000, 0x0800C000, 0x08010000]  # 4 x 16 KiB, 64 KiB: 128 KiB


def data_of(n: int, seed: int = 5) -> bytes:
    return bytes((i * 31 + seed + (i >> 11)) & 0xFF for i in range(n))


@pytest.fixture
def requests_seen(monkeypatch):
    """(bRequest, wValue, wLength) of every DFU request the emulated devices get, in order."""
    seen = []
    real = DfuEngine.request

    def recording(self, bRequest, wValue, wLength, data=b""):
        seen.append((bRequest, wValue, wLength))
        return real(self, bRequest, wValue, wLength, data)

    monkeypatch.setattr(DfuEngine, "request", recording)
    return seen


@pytest.fixture
def round_trips(monkeypatch):
    """How many times the USB/IP client wrote URBs and waited for their replies."""
    count = [0]
    real = usbip_client.Session.submit_many

    def counted(self, urbs, timeout_ms=None):
        count[0] += 1
        return real(self, urbs, timeout_ms)

    monkeypatch.setattr(usbip_client.Session, "submit_many", counted)
    return count


def back_end(usbip_servers, pipeline: bool = True):
    back = Emulator(CHIP, "dfu", options={"dialect": "dfuse"})
    server = usbip_servers([back.target])
    memory = DfuseMemory(usbip_client.UsbipBackend("127.0.0.1", server.port, pipeline=pipeline), UsbSelection(), CHIP)
    return back, memory


def update(memory: DfuseMemory, data: bytes, step: int = 2048) -> None:
    """What a DFU front does with its host's blocks: erase the sectors, program block by block."""
    for s in SECTORS:
        memory.erase(s)
    for off in range(0, len(data), step):
        memory.program(CHIP.flash_start + off, data[off:off + step])
    memory.flush()


def test_the_back_end_gets_a_batch_per_round_trip_and_the_one_by_one_requests(usbip_servers, requests_seen,
                                                                              round_trips):
    """128 KiB: 5 Erase commands, then 4 batches of 16 blocks from one Set Address (AN3156:
    one per contiguous run).  One by one (a backend that sends one request per round trip)
    that is 2 round trips per command or block; here the first Erase alone (its replies say
    the device is busy for no time), then one round trip per command or batch, the first
    batch in two (the Set Address and 16 blocks: 17 requests ahead, AHEAD_BLOCKS is 16).
    The device sees exactly the requests the one-by-one host sends it."""
    data = data_of(128 * 1024)
    seen = {}
    for pipeline in (False, True):
        back, memory = back_end(usbip_servers, pipeline)
        try:
            requests_seen.clear()
            round_trips[0] = 0
            update(memory, data)
            seen[pipeline] = (list(requests_seen), round_trips[0])
            assert back.memory.flash_bytes()[:len(data)] == data
        finally:
            memory.close()
            back.close()
    one_by_one, ahead = seen[False], seen[True]
    assert ahead[0] == one_by_one[0]
    blocks = 64 + 1 + 5  # data blocks, one Set Address, Erase commands
    assert [r for r in ahead[0] if r[0] == DNLOAD] and sum(r[0] == DNLOAD for r in ahead[0]) == blocks
    # each DNLOAD: dfuDNBUSY (bwPollTimeout 0), then dfuDNLOAD-IDLE: two GETSTATUS
    assert sum(r[0] == GETSTATUS for r in ahead[0]) == 2 * blocks
    assert one_by_one[1] >= 2 * blocks
    assert ahead[1] == 2 + 4 + 2 + 3, ahead[1]


def test_a_read_is_one_round_trip_per_read_ahead(usbip_servers, round_trips):
    """A host reading 128 KiB 2 KiB at a time (a DFU front's UPLOADs): Set Address, ABORT,
    16 UPLOADs and ABORT in one round trip per 32 KiB, the next 32 KiB read while the front
    serves these."""
    data = data_of(128 * 1024, seed=9)
    back, memory = back_end(usbip_servers)
    try:
        update(memory, data)
        round_trips[0] = 0
        got = b"".join(memory.read(CHIP.flash_start + off, 2048) for off in range(0, len(data), 2048))
        assert got == data
        assert round_trips[0] <= len(data) // (16 * 2048) + 1, round_trips[0]  # + the read ahead past the end
    finally:
        memory.close()
        back.close()


def test_a_read_after_writes_sees_what_was_written_in_the_requests_order(usbip_servers, requests_seen):
    """The read's Set Address + ABORT + UPLOADs go after the last batch (flushed first), and it
    ends in dfuIDLE (ABORT): the leave after it is accepted."""
    data = data_of(40 * 1024, seed=3)
    back, memory = back_end(usbip_servers)
    try:
        for s in SECTORS[:3]:
            memory.erase(s)
        memory.program(CHIP.flash_start, data)
        requests_seen.clear()
        assert memory.read(CHIP.flash_start + 100, 1000) == data[100:1100]
        kinds = [r[0] for r in requests_seen]
        assert kinds.index(UPLOAD) > max(i for i, k in enumerate(kinds) if k == DNLOAD and requests_seen[i][2] > 5)
        assert kinds[kinds.index(UPLOAD) - 1] == ABORT  # dfu-util's DfuSe upload: ABORT, then UPLOAD from block 2
        memory.manifest()
        assert memory.app_valid and back.memory.app_valid  # the device took the leave: its flash says so
    finally:
        memory.close()
        back.close()


def failing_erase(back: Emulator, sector: int) -> None:
    real = back.memory.erase

    def erase(address):
        if address == sector:
            raise EraseFault(f"0x{address:X}: erase failed", address)
        return real(address)

    back.memory.erase = erase


def test_an_erase_behind_that_fails_is_the_next_calls_error_and_manifest_is_refused(usbip_servers, requests_seen):
    """The Erase command goes behind (the front's host hears "done" before the device is): the
    device's errERASE is the BackendEraseFault of the next call, nothing goes to the device
    after it, and the manifest (here straight after the failed erase) never leaves."""
    back, memory = back_end(usbip_servers)
    failing_erase(back, SECTORS[1])
    try:
        memory.erase(SECTORS[0])
        assert memory.erase(SECTORS[1]) == 0.0  # behind: not known yet
        with pytest.raises(BackendEraseFault, match="errERASE"):
            memory.manifest()
        assert not memory.app_valid
        assert DNLOAD not in [r[0] for r in requests_seen if r[2] == 0]  # no zero-length DNLOAD: no leave
        assert not back.memory.app_valid
        # and as the error of a later program
        memory.erase(SECTORS[1])
        with pytest.raises(BackendEraseFault):
            memory.flush()
            memory.program(SECTORS[1], b"\x00" * 2048)
            memory.flush()
        assert not memory.app_valid
    finally:
        memory.close()
        back.close()


def test_a_dfu_front_reports_the_back_ends_failed_erase_and_never_leaves(usbip_servers, tmp_path, capsys):
    """Through a DFU front: its host's Erase is answered before the back-end erased; the
    back-end's errERASE comes back as the front's errERASE at a later request, the flash
    fails (exit 1, one line), and the back-end is not told to leave."""
    back, memory = back_end(usbip_servers)
    failing_erase(back, SECTORS[2])
    front = Emulator(CHIP, "dfu", options={"dialect": "dfuse"}, backend=memory)
    s2 = usbip_servers([front.target])
    fw = tmp_path / "fw.hex"
    save(Image([(CHIP.flash_start, data_of(100 * 1024))]), fw)
    try:
        code = main(["flash", str(fw), "--via", "dfu", "--usbip", f"127.0.0.1:{s2.port}", "--no-progress"])
        err = capsys.readouterr().err.strip()
        assert code == 1 and len(err.splitlines()) == 1, err
        assert "errERASE" in err, err
        assert not memory.app_valid and not back.memory.app_valid
    finally:
        front.close()
        back.close()


def test_a_read_ahead_that_a_change_overtook_is_dropped(usbip_servers, monkeypatch):
    """The writer thread reads the next 32 KiB ahead while the front programs there: what it
    read is older than the change and must never be served afterwards."""
    import threading
    import time

    old, new = data_of(64 * 1024, seed=1), data_of(16 * 1024, seed=2)
    back, memory = back_end(usbip_servers)
    real_upload = memory._upload

    started = threading.Event()

    def slow_upload(d, address, want):
        if threading.current_thread() is memory._writer:
            started.set()
            time.sleep(0.3)  # the front's program comes while it is under way
        return real_upload(d, address, want)

    try:
        update(memory, old)  # 128 KiB erased, the first 64 KiB programmed
        monkeypatch.setattr(memory, "_upload", slow_upload)
        # read 32 KiB from 32 KiB on; the writer reads the erased 32 KiB after it ahead
        assert memory.read(CHIP.flash_start + 32 * 1024, 2048) == old[32 * 1024:34 * 1024]
        assert started.wait(10)
        memory.program(CHIP.flash_start + 64 * 1024, new)
        assert memory.read(CHIP.flash_start + 64 * 1024, 2048) == new[:2048]
        assert back.memory.flash_bytes()[64 * 1024:80 * 1024] == new
    finally:
        memory.close()
        back.close()


def test_what_was_queued_behind_a_failure_is_dropped_not_a_later_error(usbip_servers, monkeypatch):
    """The target dies under a write batch while an Erase waits behind it: the failure is the
    error of the next call, and the Erase is dropped with it.  Sent later it would meet the
    dead target again, and that stale failure would be the first error of the retry, once
    the target is back."""
    import threading
    import time

    back = Emulator(CHIP, "dfu", options={"dialect": "dfuse"})
    server = usbip_servers([back.target])
    port = server.port
    memory = DfuseMemory(usbip_client.UsbipBackend("127.0.0.1", port), UsbSelection(), CHIP)
    go = threading.Event()
    real_write = memory._write_batch

    def held_write(at, data):
        go.wait(10)
        real_write(at, data)

    monkeypatch.setattr(memory, "_write_batch", held_write)
    raised = threading.Event()
    real_get = memory._queue.get

    def get(*args, **kw):  # the writer takes the Erase behind the failed batch only after the failure was raised
        job = real_get(*args, **kw)
        if job is not None and job[:2] == ("erase", SECTORS[2]):
            raised.wait(1)
        return job

    monkeypatch.setattr(memory._queue, "get", get)
    data = data_of(64 * 1024)
    again = None
    try:
        memory.erase(SECTORS[0])
        memory.erase(SECTORS[1])
        memory.program(CHIP.flash_start, data[:32 * 1024])  # a batch: to the writer, held
        memory.erase(SECTORS[2])  # waits behind it
        server.close()  # the target goes away (its connection too)
        go.set()
        deadline = time.monotonic() + 10
        while memory._failed is None and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(BackendFault) as failed:
            memory.program(CHIP.flash_start + 32 * 1024, data[32 * 1024:])
        raised.set()
        assert "DfuSe target" in str(failed.value)
        memory._queue.join()  # whatever the writer still had is over
        # the target is back on the same port: the retry works from its first call
        back2 = Emulator(CHIP, "dfu", options={"dialect": "dfuse"})
        again = usbip_servers([back2.target], port=port)
        monkeypatch.setattr(memory, "_write_batch", real_write)
        update(memory, data)
        assert back2.memory.flash_bytes()[:len(data)] == data
    finally:
        memory.close()
        back.close()
        if again is not None:
            back2.close()
