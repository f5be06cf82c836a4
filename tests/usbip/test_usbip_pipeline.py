"""Several control transfers per round trip (UsbipBackend.ctrl_transfers) keep USB semantics.

The DFU host hands DNLOAD and the GETSTATUS that follows it to the USB/IP
client together.  These tests hold that to the in-process bus: the device
sees the same requests in the same order, every error stays with the
transfer that caused it, and ``bootkit flash --usbip`` ends with the same
one-line error, exit status and flash contents as ``--emulate`` when the
device refuses a DNLOAD (a STALL at the request: FLIP into the bootloader
region or past the end, a transfer larger than wTransferSize) or a block
(GETSTATUS reports errADDRESS past the end of a smaller chip).
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


def test_a_stall_whose_queued_getstatus_failed_too_asks_again(served):
    """A host controller may give back the URBs queued behind a STALL with an error."""
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
    # FLIP programs at the DNLOAD itself: the device stalls it (LUFA's errTARGET / errADDRESS)
    ("flip-into-the-bootloader", "atmega32u4", "flip", ["--chip", "at90usb1286"], [(0x6F00, 0x400)]),
    ("flip-past-the-end", "atmega32u4", "flip", ["--chip", "at90usb1286"], [(0x7F00, 0x1400)]),
    # a DNLOAD longer than wTransferSize: stalled with errUNKNOWN
    ("dfu-over-wTransferSize", "stm32f411", "dfu", ["--transfer-size", "2048"], [(0x08000000, 5000)]),
    ("dfuse-over-wTransferSize", "stm32f411", "dfuse", ["--transfer-size", "4096"], [(0x08000000, 5000)]),
    # plain DFU past the end of a smaller chip: GETSTATUS reports errADDRESS after some blocks
    ("dfu-past-the-end", "stm32f103c8", "dfu", ["--chip", "stm32f411"], [(0x08000000, 70000)]),
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
