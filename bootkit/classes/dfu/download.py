"""DFU downloads with DNLOADs sent ahead of their replies (the pipelined download).

DNLOAD and its GETSTATUS in one round trip, and several blocks in one round trip, on a
backend that can (bootkit's USB/IP client, ``ctrl_transfers``); on any other backend,
dfu-util's one request at a time.  :class:`~bootkit.classes.dfu.client.DfuClient`
calls these for its ``dnload_status`` and ``download_session``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterator

import usb.core

from .protocol import (
    DNLOAD,
    GETSTATUS,
    State,
    Status,
    StatusReply,
)

if TYPE_CHECKING:
    from .client import DfuClient

OUT_CLASS_INTF = 0x21
IN_CLASS_INTF = 0xA1


Blocks = list[tuple[int, bytes, str]]  # (block number, data, what to call the block in an error)


def dnload_status(client: DfuClient, block: int, data: bytes) -> StatusReply:
    """DNLOAD, then the GETSTATUS that follows every DNLOAD (DFU 1.1 section 6.1: the
    device leaves dfuDNLOAD-SYNC only on DFU_GETSTATUS).

    On a backend with ``ctrl_transfers`` both go in one round trip: the
    device gets the same two requests in the same order, and a failed
    DNLOAD is reported as DNLOAD's failure, with the status that GETSTATUS
    read (or, if that failed too, a new GETSTATUS), as when the two go one
    by one.
    """
    if client.pipelined is None:
        client.dnload(block, data)
        return client.get_status()
    return _dnload_reply(client, block, *client.pipelined(client.dev, _dnload_pair(client, block, data)))


def _dnload_pair(client: DfuClient, block: int, data: bytes) -> list[tuple]:
    return [(OUT_CLASS_INTF, DNLOAD, block & 0xFFFF, client.intf, data, client.timeout),
            (IN_CLASS_INTF, GETSTATUS, 0, client.intf, 6, client.timeout)]


def _dnload_reply(client: DfuClient, block: int, done, status) -> StatusReply:
    """A DNLOAD's and its GETSTATUS's results from ``ctrl_transfers``, as :func:`dnload_status` gives them."""
    if isinstance(done, usb.core.USBError):
        raise client.failure(f"DNLOAD block {block}", done,
                             None if isinstance(status, usb.core.USBError) else status) from None
    if isinstance(status, usb.core.USBError):
        raise status
    return StatusReply.unpack(bytes(status))


def download_session(client: DfuClient, blocks: Blocks, done: Callable[[int], object] = lambda n: None) -> None:
    """DNLOAD every block of a download that starts in dfuIDLE, each to the end of its GETSTATUS polling.

    ``done(n)`` is called as each block's n bytes are finished.  One by one
    this is ``client.dnload_and_wait`` per block, as dfu-util does.

    On a backend with ``ctrl_transfers`` (bootkit's USB/IP client, where
    a round trip is a network's, not a bus's), a device that finished a
    block within its GETSTATUS - OK, dfuDNLOAD-IDLE and bwPollTimeout 0,
    nothing for the host to wait for (DFU 1.1 section 6.1.2) - gets the
    next blocks without waiting for their replies: up to client.AHEAD_BLOCKS
    DNLOAD + GETSTATUS pairs per round trip.  A device that runs the block
    on that GETSTATUS and answers dfuDNBUSY with bwPollTimeout 0 (a DfuSe
    device: ST's ROM and our emulator report dfuDNBUSY for every block,
    AN3156) is polled again at once by the one-by-one host; when that second
    GETSTATUS said OK, dfuDNLOAD-IDLE, bwPollTimeout 0, the device finishes
    blocks "busy for no time", and the next blocks go ahead as DNLOAD and
    two GETSTATUS each.  While it keeps finishing blocks so, it sees exactly
    the requests, in the order, that the one-by-one host sends.  A device
    that answers so is an emulated one or programs RAM; real flash asks for
    a wait on the first block, and then nothing goes ahead.

    The first reply that is anything else is handled as one by one, and
    from then on nothing goes ahead: an error is that block's error (the
    DNLOADs behind it reach a device in dfuERROR, which refuses them and
    writes nothing).  A wait, with requests already sent behind it, means
    those reached a busy device, which refuses every request but
    GETSTATUS (DFU 1.1 A.2.4); so the host brings the device back to
    dfuIDLE and downloads the whole session again, one block at a time
    (plain DFU has no addresses: a download can only start over; a DfuSe
    session that starts with its Set Address command sets it again).
    """
    waited = False  # the device asked for a wait once: nothing ahead from then on
    polls = client.ahead_polls  # what an earlier session of this client learned
    ahead = client.pipelined is not None and polls is not None
    counted = 0  # blocks given to done(): not again after a restart
    i = 0
    while i < len(blocks):
        batch = _ahead(client, blocks, i) if ahead else blocks[i:i + 1]
        sent = polls if ahead and polls else 1
        restart = False
        for k, replies in enumerate(_dnload_batch(client, batch, sent)):
            _, data, what = batch[k]
            last = k == len(batch) - 1
            st = replies[0]
            if sent == 1 and busy_for_no_time(st) and not waited and last:
                # one by one: the next GETSTATUS at once (bwPollTimeout 0), which says whether
                # the device finishes blocks busy for no time
                st = client.get_status()
                if finished_at_once(st):
                    polls = 2
            elif sent == 1 and finished_at_once(st):
                polls = polls or 1
            elif sent == 2:
                second = replies[1]  # its second GETSTATUS, sent with it
                answered = isinstance(second, StatusReply)
                if busy_for_no_time(st):
                    st = second if answered else None  # None: refused, as a wait with requests behind it
                elif last and st.bStatus == Status.OK and st.bState != State.dfuERROR and not finished_at_once(st):
                    # a wait, and only its own second GETSTATUS went early: answered with the
                    # time left, the wait goes on from there (as one by one); refused, start over
                    st = second if answered and second.bStatus == Status.OK and second.bState != State.dfuERROR \
                        else None
            if st is None or not finished_at_once(st):
                waited = True
                polls = client.ahead_polls = None
                behind = not last or (sent == 2 and st is replies[0])
                if st is None or (behind and st.bStatus == Status.OK and st.bState != State.dfuERROR):
                    client.make_idle()  # requests sent behind it reached a busy device: start over
                    restart = True
                    break
                client.wait_while_busy(what, st)  # its own error, or nothing sent behind it: as one by one
            if i >= counted:
                done(len(data))
                counted = i + 1
            i += 1
        if restart:
            i = 0
        ahead = client.pipelined is not None and not waited and polls is not None
        if ahead:
            client.ahead_polls = polls


def _dnload_batch(client: DfuClient, batch: Blocks, polls: int = 1) -> Iterator[list]:
    """Each block's DNLOAD then ``polls`` GETSTATUS (as :func:`dnload_status` for the first), several
    blocks in one round trip: per block, its GETSTATUS replies (a StatusReply, or the USBError a
    GETSTATUS after the first failed with).  A failed DNLOAD or first GETSTATUS raises, as one by one."""
    if len(batch) == 1 and polls == 1 or client.pipelined is None:
        for block, data, _ in batch:
            yield [dnload_status(client, block, data)]
        return
    status = (IN_CLASS_INTF, GETSTATUS, 0, client.intf, 6, client.timeout)
    results = client.pipelined(client.dev, [t for block, data, _ in batch
                                            for t in _dnload_pair(client, block, data) + [status] * (polls - 1)])
    step = 1 + polls
    for k, (block, _, _) in enumerate(batch):
        first = _dnload_reply(client, block, results[step * k], results[step * k + 1])
        yield [first] + [r if isinstance(r, usb.core.USBError) else StatusReply.unpack(bytes(r))
                         for r in results[step * k + 2:step * (k + 1)]]


def _ahead(client: DfuClient, blocks: Blocks, i: int) -> Blocks:
    """The blocks from i on to send in one round trip: AHEAD_BLOCKS, at most AHEAD_BYTES (one at least)."""
    batch: Blocks = []
    size = 0
    for item in blocks[i:i + client.AHEAD_BLOCKS]:
        size += len(item[1])
        if batch and size > client.AHEAD_BYTES:
            break
        batch.append(item)
    return batch


def finished_at_once(st: StatusReply) -> bool:
    return st.bStatus == Status.OK and st.bState == State.dfuDNLOAD_IDLE and st.bwPollTimeout == 0


def busy_for_no_time(st: StatusReply) -> bool:
    """dfuDNBUSY with nothing to wait (the one-by-one host's next GETSTATUS follows at once)."""
    return st.bStatus == Status.OK and st.bState == State.dfuDNBUSY and st.bwPollTimeout == 0
