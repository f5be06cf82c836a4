"""Fixtures the USB/IP tests share."""

from __future__ import annotations

import pytest

from bootkit.transports.usbip import UsbipServer


@pytest.fixture
def usbip_servers():
    """Start UsbipServers on 127.0.0.1 (background threads); all closed at the end.

    ``start(targets, log=None, **kw)`` (targets: a list, or a dict by bus id)
    returns the started server."""
    running = []

    def start(targets, *, log=None, **kw):
        server = UsbipServer(targets, ("127.0.0.1", 0), log=log, **kw).start()
        running.append(server)
        return server

    yield start
    for server in running:
        server.close()
