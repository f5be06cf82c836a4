"""Several control transfers per round trip (UsbipBackend.ctrl_transfers) keep USB semantics.

The DFU host hands DNLOAD and the GETSTATUS that follows it to the USB/IP
client together, and, to a device that finishes each block within its
GETSTATUS (OK, dfuDNLOAD-IDLE, bwPollTimeout 0), the next blocks too
without waiting for their replies.  These tests hold that to the
in-process bus: the device sees the same requests in the same order, every
error stays with the transfer that caused it, a device that asks for a
wait gets nothing ahead (or, if it asks only later, the download starts
over one block at a time and still ends right), and ``bootkit flash
--usbip`` ends with the same one-line error, exit status and flash
contents as ``--emulate`` when the device refuses a DNLOAD (a STALL at the
request: FLIP into the bootloader region or past the end, a transfer
larger than wTransferSize) or a block (GETSTATUS reports errADDRESS past
the end of a smaller chip, at the end or in the middle of a round trip's
blocks).
"""

from __future__ import annotations

import errno
import random
import time

import pytest
import usb.core
import usb.util

from bootkit.classes.dfu import host
from bootkit.classes.dfu.device import DfuEngine
from bootkit.classes.dfu.protocol import CLRSTATUS, DNLOAD, GETSTATUS, State, Status, StatusReply
from bootkit.cli import main
from bootkit.emulator import Emulator
from bootkit.formats import Image, save
from bootkit.samples import sample_image
from bootkit.transports import usbip_client
from bootkit.transports.usbip import USBIP_DIR_IN, USBIP_DIR_OUT
from bootkit.transports.virtual import VirtualBus, get_backend
from bootkit.usb.descriptors import DeviceInfo, Endpoint, Interface
from bootkit.usb.device import Device, Function

OUT, IN = 0x21, 0xA1


class Echo(Function):
    """Bulk OUT data comes back on bulk IN; IN NAKs while nothing is queued."""

    def __init__(self):
        super().__init__()
        self.queue = bytearray()

    def interfaces(self, speed="full"):
        return [Interface(0, 0xFF, 0, 0, endpoints=[Endpoint(1, "out", "bulk"), Endpoint(1, "in", "bulk")])]

    def ep_out(self, ep, data):
        self.queue += data

    def ep_in(self, ep, max_length):
        if not self.queue:
            return None
        chunk, self.queue[:max_length] = bytes(self.queue[:max_length]), b""
        return chunk


def payload(n: int, seed) -> bytes:
    rng = random.Random(f"pipeline:{seed}")
    return bytes(rng.getrandbits(8) for _ in range(n))


@pytest.fixture
def served(usbip_servers):
    """Serve targets on a background thread; stopped at the end."""
    return lambda *targets: usbip_servers(list(targets))


def dfu_device(backend):
    dev = usb.core.find(backend=backend, bDeviceClass=0)
    assert dev is not None
    dev.set_configuration()
    usb.util.claim_interface(dev, 0)
    return dev


# --------------------------------------------------------------------------
# the backend call


def test_each_transfer_keeps_its_own_result_and_error(served):
    em = Emulator("stm32f411", "dfu", options={"dialect": "dfu", "transfer_size": 1024})
    server = served(em.target)
    backend = usbip_client.UsbipBackend(port=server.port)
    dev = dfu_device(backend)
    # a DNLOAD longer than wTransferSize stalls; the GETSTATUS queued behind it still runs
    done, status = backend.ctrl_transfers(dev, [(OUT, DNLOAD, 0, 0, bytes(2048), 1000), (IN, GETSTATUS, 0, 0, 6, 1000)])
    assert isinstance(done, usb.core.USBError) and done.errno == errno.EPIPE
    st = StatusReply.unpack(status)
    assert (st.bStatus, st.bState) == (Status.errUNKNOWN, State.dfuERROR)
    # both succeed: the count written, the data read
    cleared, status = backend.ctrl_transfers(dev, [(OUT, CLRSTATUS, 0, 0, b"", 1000), (IN, GETSTATUS, 0, 0, 6, 1000)])
    assert cleared == 0 and StatusReply.unpack(status).bState == State.dfuIDLE
    done, status = backend.ctrl_transfers(dev, [(OUT, DNLOAD, 0, 0, bytes(100), None), (IN, GETSTATUS, 0, 0, 6, None)])
    assert done == 100 and StatusReply.unpack(status).bState == State.dfuDNLOAD_IDLE
    backend.close()


def test_an_unplugged_device_fails_every_transfer_with_enodev(served):
    target = Emulator("stm32f411", "dfu", options={"dialect": "dfu"}).target
    server = served(target)
    backend = usbip_client.UsbipBackend(port=server.port)
    dev = dfu_device(backend)
    target.device = None
    target.generation += 1
    time.sleep(0.1)
    results = backend.ctrl_transfers(dev, [(OUT, DNLOAD, 0, 0, bytes(64), 1000), (IN, GETSTATUS, 0, 0, 6, 1000)])
    assert [getattr(r, "errno", None) for r in results] == [errno.ENODEV, errno.ENODEV]


def test_a_timed_out_batch_unlinks_every_waiting_urb(served):
    server = served(Device(DeviceInfo(0x1209, 0x0001), [Echo()]))
    session = usbip_client.Session("127.0.0.1", server.port, "1-1")
    session.control(0x00, 9, 1, 0, b"")  # SET_CONFIGURATION 1
    results = session.submit_many([(1, USBIP_DIR_IN, b"", 64, bytes(8)), (1, USBIP_DIR_IN, b"", 64, bytes(8))], 100)
    assert all(isinstance(r, usb.core.USBTimeoutError) for r in results)
    # neither unlinked URB swallows what comes next
    assert session.submit_many([(1, USBIP_DIR_OUT, b"abc", 0, bytes(8)), (1, USBIP_DIR_IN, b"", 64, bytes(8))],
                               1000) == [3, b"abc"]
    session.close()


class ManyAlternates(Function):
    """One interface with 40 alternate settings: a configuration descriptor of 369 bytes."""

    def interfaces(self, speed="full"):
        return [Interface(0, 0xFF, 0, 0, alternate=a) for a in range(40)]


def test_descriptors_read_in_one_round_trip_or_two_when_long(served):
    short = Device(DeviceInfo(0x1209, 0x0001), [Echo()])
    long = Device(DeviceInfo(0x1209, 0x0002), [ManyAlternates()])
    assert len(short.configuration_descriptor()) < 255 < len(long.configuration_descriptor())
    server = served(short, long)
    backend = usbip_client.UsbipBackend(port=server.port)
    for dev, device in zip(sorted(usb.core.find(find_all=True, backend=backend), key=lambda d: d.idProduct),
                           (short, long)):
        _, configs = backend._fetch(dev._ctx.dev)
        assert configs == [device.configuration_descriptor()]
        assert len(list(dev[0].interfaces())) == (1 if device is short else 40)
    backend.close()


def test_pipeline_false_sends_one_transfer_per_round_trip(served):
    assert usbip_client.UsbipBackend(port=1, pipeline=False).ctrl_transfers is None
    em = Emulator("stm32f411", "dfu", options={"dialect": "dfu"})
    server = served(em.target)
    backend = usbip_client.UsbipBackend(port=server.port, pipeline=False)
    image = sample_image("stm32f411", 3000, 0, 0)
    assert host.flash(image, backend, dialect="dfu", chip="stm32f411", progress=False).verified
    backend.close()


# --------------------------------------------------------------------------
# what the device sees, and what the command line says


@pytest.fixture
def requests_seen(monkeypatch):
    seen = []
    real = DfuEngine.request

    def recording(self, bRequest, wValue, wLength, data):
        seen.append((bRequest, wValue, wLength))
        return real(self, bRequest, wValue, wLength, data)

    monkeypatch.setattr(DfuEngine, "request", recording)
    return seen


@pytest.mark.parametrize("dialect,chip_name", [("dfu", "stm32f411"), ("dfuse", "stm32f411"), ("flip", "atmega32u4")])
def test_the_device_sees_the_same_requests_as_in_process(served, requests_seen, dialect, chip_name):
    image = sample_image(chip_name, 5000, 0x2000, 77, seed=3)

    def flash(backend):
        requests_seen.clear()
        result = host.flash(image, backend, dialect=dialect, chip=chip_name, progress=False, leave=False)
        assert result.verified
        return list(requests_seen)

    bus = VirtualBus()
    Emulator(chip_name, "dfu", options={"dialect": dialect}).attach(bus)
    in_process = flash(get_backend(bus))
    server = served(Emulator(chip_name, "dfu", options={"dialect": dialect}).target)
    backend = usbip_client.UsbipBackend(port=server.port)
    assert flash(backend) == in_process
    assert (DNLOAD, 0 if dialect != "dfuse" else 2, 0) in {(r, v, 0) for r, v, _ in in_process}
    backend.close()


def test_a_stall_whose_queued_getstatus_failed_too_asks_again(served, monkeypatch):
    """A host controller may give back the URBs queued behind a STALL with an error."""
    # the device's own refusal of a DNLOAD longer than its wTransferSize is what is wanted
    # here: the host's check that refuses such a size before erasing is switched off
    monkeypatch.setattr(host.DfuClient, "check_transfer_size", lambda self: None)
    image = sample_image("stm32f411", 5000, 0x2000, 77, seed=5)

    def refusal(backend):
        with pytest.raises(host.DfuError) as exc:
            host.flash(image, backend, dialect="dfu", chip="stm32f411", progress=False, transfer_size=2048)
        return str(exc.value)

    bus = VirtualBus()
    Emulator("stm32f411", "dfu", options={"dialect": "dfu"}).attach(bus)
    expected = refusal(get_backend(bus))
    assert expected.startswith("DNLOAD block 0: device reports errUNKNOWN")
    server = served(Emulator("stm32f411", "dfu", options={"dialect": "dfu"}).target)
    backend = usbip_client.UsbipBackend(port=server.port)
    real = backend.ctrl_transfers

    def dropping(device, transfers):
        results = real(device, transfers)
        if isinstance(results[0], usb.core.USBError):
            results[1:] = [usb.core.USBError("Input/Output Error", -1, errno.EIO) for _ in results[1:]]
        return results

    backend.ctrl_transfers = dropping
    assert refusal(backend) == expected
    backend.close()


REFUSED = [
    # (each FLIP image starts with the reset vector at 0x0000: bootkit refuses an AVR image without it before
    # anything is sent, common.preflight)
    # FLIP programs at the DNLOAD itself: the device stalls it (LUFA's errTARGET / errADDRESS)
    ("flip-into-the-bootloader", "atmega32u4", "flip", ["--chip", "at90usb1286"], [(0x0000, 0x100), (0x6F00, 0x400)]),
    ("flip-past-the-end", "atmega32u4", "flip", ["--chip", "at90usb1286"], [(0x0000, 0x100), (0x7F00, 0x1400)]),
    # (a --transfer-size above the device's wTransferSize is refused before anything is sent:
    # tests/dfu/test_dfuse_transfer_size.py)
    # plain DFU past the end of a smaller chip: GETSTATUS reports errADDRESS after some blocks,
    # with 1024-byte blocks the last of a round trip's (block 64), with 1000-byte ones the first
    # (block 65: the blocks behind it in the same round trip reach a device in dfuERROR)
    ("dfu-past-the-end", "stm32f103c8", "dfu", ["--chip", "stm32f411"], [(0x08000000, 70000)]),
    ("dfu-past-the-end-mid-round-trip", "stm32f103c8", "dfu", ["--chip", "stm32f411", "--transfer-size", "1000"],
     [(0x08000000, 70000)]),
]


@pytest.mark.parametrize("pipeline", [True, False], ids=["pipelined", "one-by-one"])
@pytest.mark.parametrize("name,chip_name,dialect,options,segments", REFUSED, ids=[r[0] for r in REFUSED])
def test_a_refused_download_ends_like_in_process(tmp_path, capsys, monkeypatch, served, pipeline, name, chip_name,
                                                 dialect, options, segments):
    fw = tmp_path / "fw.hex"
    save(Image([(a, payload(n, a)) for a, n in segments]), fw)
    argv = ["flash", str(fw), "--via", "dfu", "--dialect", dialect] + options

    local = tmp_path / "local"
    local.mkdir()
    code = main(argv + ["--emulate", chip_name, "--image", str(local / "flash.bin")])
    expected = capsys.readouterr().err
    assert code == 1 and len(expected.strip().splitlines()) == 1, expected

    remote = tmp_path / "remote"
    remote.mkdir()
    em = Emulator(chip_name, "dfu", image=str(remote / "flash.bin"), options={"dialect": dialect})
    server = served(em.target)
    monkeypatch.setattr(usbip_client, "_backends", {})  # a fresh backend for this server's port
    monkeypatch.setattr(usbip_client, "get_backend",
                        lambda host, port: usbip_client.UsbipBackend(host, port, pipeline=pipeline))
    assert main(argv + ["--usbip", f"127.0.0.1:{server.port}"]) == 1
    assert capsys.readouterr().err == expected
    server.close()
    em.close()
    assert (remote / "flash.bin").read_bytes() == (local / "flash.bin").read_bytes()
    assert (remote / "flash.bin.state.json").read_text() == (local / "flash.bin.state.json").read_text()


# --------------------------------------------------------------------------
# blocks sent ahead of their replies (DfuClient.download_session)


def counting(backend) -> list[list[int]]:
    """Record the bRequests of each ctrl_transfers call (one round trip each)."""
    calls = []
    real = backend.ctrl_transfers

    def wrapped(device, transfers):
        calls.append([t[1] for t in transfers])
        return real(device, transfers)

    backend.ctrl_transfers = wrapped
    return calls


def session_blocks(size: int, transfer: int = 1024, seed: int = 9) -> tuple[bytes, list[tuple[int, bytes, str]]]:
    data = payload(size, seed)
    return data, [(n, data[off:off + transfer], f"block {n}") for n, off in enumerate(range(0, size, transfer))]


def flashed(em: Emulator, n: int) -> bytes:
    """The first n bytes of the emulated device's application area."""
    return em.memory.read(em.memory.layout.application_ranges("flash")[0][0], n)


def dfu_client(backend) -> host.DfuClient:
    c = host.DfuClient(host.find_interfaces(backend)[0])
    c.make_idle()
    return c


def test_a_device_that_finishes_blocks_at_once_gets_them_ahead(served, requests_seen):
    em = Emulator("stm32f411", "dfu", options={"dialect": "dfu", "transfer_size": 1024})
    server = served(em.target)
    backend = usbip_client.UsbipBackend(port=server.port)
    calls = counting(backend)
    data, blocks = session_blocks(40 * 1024 + 100)  # 41 blocks
    c = dfu_client(backend)
    done = []
    c.download_session(blocks, done.append)
    dnloads = [call.count(DNLOAD) for call in calls if DNLOAD in call]
    # block 0 alone (its reply says whether the device finishes blocks at once), then AHEAD_BLOCKS a round trip
    assert c.AHEAD_BLOCKS == 16 and dnloads == [1, 16, 16, 8]
    assert all(call == [DNLOAD, GETSTATUS] * (len(call) // 2) for call in calls if DNLOAD in call)
    assert done == [len(b[1]) for b in blocks]
    # exactly the one-by-one requests: DNLOAD n, GETSTATUS, for n = 0..40
    downloads = [r for r in requests_seen if r[0] in (DNLOAD, GETSTATUS)][-82:]
    assert downloads == [r for n, chunk, _ in blocks for r in ((DNLOAD, n, len(chunk)), (GETSTATUS, 0, 6))]
    assert flashed(em, len(data)) == data
    backend.close()


def test_the_round_trip_holds_at_most_ahead_bytes(served):
    em = Emulator("stm32f411", "dfu", options={"dialect": "dfu", "transfer_size": 4096})
    server = served(em.target)
    backend = usbip_client.UsbipBackend(port=server.port)
    calls = counting(backend)
    data, blocks = session_blocks(40 * 4096, 4096)
    c = dfu_client(backend)
    c.AHEAD_BYTES = 5 * 4096 + 1
    c.download_session(blocks)
    assert [call.count(DNLOAD) for call in calls if DNLOAD in call] == [1] + [5] * 7 + [4]
    assert flashed(em, len(data)) == data
    backend.close()


def busy_at(monkeypatch, calls: set[int], ms: int = 2) -> None:
    """The emulated devices ask for a wait of ``ms`` after the blocks whose GETSTATUS is call n (from 0)."""
    real = DfuEngine.poll_timeout_ms
    count = [0]

    def poll(self, kind, size=0):
        if kind == "manifest":
            return real(self, kind, size)
        count[0] += 1
        return ms if count[0] - 1 in calls else 0

    monkeypatch.setattr(DfuEngine, "poll_timeout_ms", poll)


def test_a_device_that_asks_for_a_wait_at_first_gets_nothing_ahead(served, monkeypatch):
    busy_at(monkeypatch, set(range(1000)), ms=1)
    em = Emulator("stm32f411", "dfu", options={"dialect": "dfu", "transfer_size": 1024})
    server = served(em.target)
    backend = usbip_client.UsbipBackend(port=server.port)
    calls = counting(backend)
    data, blocks = session_blocks(20 * 1024)
    dfu_client(backend).download_session(blocks)
    assert [call.count(DNLOAD) for call in calls if DNLOAD in call] == [1] * 20
    assert flashed(em, len(data)) == data
    backend.close()


@pytest.mark.parametrize("busy", [5, 16], ids=["in-the-middle", "last-of-a-round-trip"])
def test_a_device_that_asks_for_a_wait_later_ends_right(served, monkeypatch, requests_seen, busy):
    """Block ``busy`` is answered dfuDNBUSY: the DNLOADs sent behind it in the same round trip
    reach a busy device, which refuses them; the host clears the error and starts over, one by one.
    The last block of a round trip has nothing behind it: the host waits, as one by one."""
    busy_at(monkeypatch, {busy})
    em = Emulator("stm32f411", "dfu", options={"dialect": "dfu", "transfer_size": 1024})
    server = served(em.target)
    backend = usbip_client.UsbipBackend(port=server.port)
    calls = counting(backend)
    data, blocks = session_blocks(30 * 1024)
    done = []
    dfu_client(backend).download_session(blocks, done.append)
    assert done == [len(b[1]) for b in blocks]  # each block counted once, restart or not
    assert flashed(em, len(data)) == data
    starts = [i for i, r in enumerate(requests_seen) if r[:2] == (DNLOAD, 0)]
    dnloads = [call.count(DNLOAD) for call in calls if DNLOAD in call]
    if busy == 16:  # block 16 ends the round trip of blocks 1-16: no restart, the rest one by one
        assert len(starts) == 1 and dnloads == [1, 16] + [1] * 13
    else:
        assert len(starts) == 2 and CLRSTATUS in [r[0] for r in requests_seen[starts[0]:starts[1]]]
        assert dnloads == [1, 16] + [1] * 30  # then all 30 again, one by one
    backend.close()


def test_pipeline_false_sends_nothing_ahead(served, requests_seen):
    em = Emulator("stm32f411", "dfu", options={"dialect": "dfu", "transfer_size": 1024})
    server = served(em.target)
    backend = usbip_client.UsbipBackend(port=server.port, pipeline=False)
    data, blocks = session_blocks(8 * 1024)
    calls = []
    real = backend.ctrl_transfer

    def one(*args):
        calls.append(args[2])
        return real(*args)

    backend.ctrl_transfer = one
    dfu_client(backend).download_session(blocks)
    assert calls.count(DNLOAD) == 8 and calls.count(GETSTATUS) >= 8
    assert flashed(em, len(data)) == data
    backend.close()


# a DfuSe device: dfuDNBUSY with bwPollTimeout 0 at every block's GETSTATUS, then dfuDNLOAD-IDLE


def dfuse_session(size: int, address: int = 0x08000000, seed: int = 4) -> tuple[bytes, list[tuple[int, bytes, str]]]:
    """Set Address, then the blocks from 2 (AN3156), as DfuseMemory sends a batch."""
    data = payload(size, seed)
    blocks = [(0, bytes([0x21]) + address.to_bytes(4, "little"), "set address")]
    return data, blocks + [(2 + n, data[off:off + 2048], f"block {n}") for n, off in enumerate(range(0, size, 2048))]


def test_a_device_busy_for_no_time_gets_blocks_ahead_with_their_second_getstatus(served, requests_seen):
    """The Set Address alone (dfuDNBUSY, bwPollTimeout 0; the next GETSTATUS at once says
    dfuDNLOAD-IDLE: the device is busy for no time), then 16 blocks a round trip, each DNLOAD
    with both its GETSTATUS: the requests the one-by-one host sends, in order.  The client
    keeps what it learned: its next session goes ahead from its first request."""
    em = Emulator("stm32f411", "dfu", options={"dialect": "dfuse"})
    server = served(em.target)
    backend = usbip_client.UsbipBackend(port=server.port)
    calls = counting(backend)
    data, blocks = dfuse_session(40 * 2048)
    c = dfu_client(backend)
    requests_seen.clear()
    done = []
    c.download_session(blocks, done.append)
    assert done == [len(b[1]) for b in blocks]
    assert [call.count(DNLOAD) for call in calls if DNLOAD in call] == [1, 16, 16, 8]
    assert all(call == [DNLOAD, GETSTATUS, GETSTATUS] * (len(call) // 3) for call in calls[1:] if DNLOAD in call)
    assert requests_seen == [r for n, chunk, _ in blocks for r in ((DNLOAD, n, len(chunk)), (GETSTATUS, 0, 6),
                                                                   (GETSTATUS, 0, 6))]
    assert flashed(em, len(data)) == data
    assert c.ahead_polls == 2
    calls.clear()
    more, blocks = dfuse_session(8 * 2048, 0x08000000 + len(data), seed=5)
    c.download_session(blocks)
    assert [call.count(DNLOAD) for call in calls if DNLOAD in call] == [9]
    assert flashed(em, len(data) + len(more)) == data + more
    backend.close()


@pytest.mark.parametrize("busy", [6, 16], ids=["in-the-middle", "last-of-a-round-trip"])
def test_a_device_busy_for_no_time_that_asks_for_a_wait_later_ends_right(served, monkeypatch, requests_seen, busy):
    """Request ``busy`` (the Set Address is 0) answers dfuDNBUSY with a wait: the second GETSTATUS
    sent with it, and the blocks behind it, reached a busy device.  The host brings it back to
    dfuIDLE and sends the whole session again one by one, Set Address first; nothing is lost
    and nothing counted twice.  When it is the last of a round trip, only its own second
    GETSTATUS went early, and the device answered it with the time left: the host waits from
    there, as one by one, and sends the rest one by one."""
    from bootkit.classes.dfu.device import DfuSeEngine

    real = DfuSeEngine.poll_timeout_ms
    count = [0]

    def poll(self, kind, size=0):
        if kind == "manifest":
            return real(self, kind, size)
        count[0] += 1
        return 3 if count[0] - 1 == busy else real(self, kind, size)

    monkeypatch.setattr(DfuSeEngine, "poll_timeout_ms", poll)
    em = Emulator("stm32f411", "dfu", options={"dialect": "dfuse"})
    server = served(em.target)
    backend = usbip_client.UsbipBackend(port=server.port)
    calls = counting(backend)
    data, blocks = dfuse_session(30 * 2048)
    done = []
    c = dfu_client(backend)
    c.download_session(blocks, done.append)
    assert done == [len(b[1]) for b in blocks]  # each counted once, restart or not
    assert flashed(em, len(data)) == data
    set_addresses = [i for i, r in enumerate(requests_seen) if r[:2] == (DNLOAD, 0)]
    dnloads = [call.count(DNLOAD) for call in calls if DNLOAD in call]
    if busy == 16:  # request 16 ends the round trip of requests 1-16: no start over
        assert len(set_addresses) == 1 and dnloads == [1, 16] + [1] * 14
    else:
        assert len(set_addresses) == 2 and CLRSTATUS in [r[0] for r in requests_seen[set_addresses[0]:set_addresses[1]]]
        assert dnloads == [1, 16] + [1] * 31  # then all of it again, one by one
    assert c.ahead_polls is None  # it asked for a wait: nothing ahead in the next session either
    backend.close()
