"""Fixtures of the bridge tests: a front personality in front of a real memory (issue 23)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from bootkit.transports.usbip import UsbipServer


@pytest.fixture
def usbip_servers():
    """``start(targets)``: a UsbipServer on 127.0.0.1 (a free port, background thread), closed at the end."""
    running = []

    def start(targets, **kw):
        server = UsbipServer(targets, ("127.0.0.1", kw.pop("port", 0)), log=None, **kw).start()
        running.append(server)
        return server

    yield start
    for server in running:
        server.close()


SERVING = re.compile(r"^serving .* on (\S+)\. Ctrl-C to stop\.$")


class Served:
    """``bootkit serve ...`` in a child process (so it can be killed); USB/IP unless the
    arguments name another transport."""

    def __init__(self, args: list[str], cwd):
        if "--transport" not in args:
            args = [*args, "--transport", "usbip"]
        self.port = 0
        self.where = ""
        self.proc = subprocess.Popen([sys.executable, "-m", "bootkit", "serve", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd)
        seen = []
        assert self.proc.stdout is not None
        for line in self.proc.stdout:  # the ready line; no fixed wait (a loaded machine starts slowly)
            seen.append(line)
            m = SERVING.match(line.strip())
            if m:
                self.where = m[1]  # 127.0.0.1:PORT (usbip) or /dev/pts/N (pty)
                if m[1].startswith("127.0.0.1:"):
                    self.port = int(m[1].rpartition(":")[2])
                return
        self.proc.wait()
        raise AssertionError(f"serve did not start: {''.join(seen)}")

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> str:
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=60)
        return out


@pytest.fixture
def served(tmp_path):
    """``start(*args)``: a `bootkit serve` child process on USB/IP; all stopped at the end."""
    procs: list[Served] = []

    def start(*args: str) -> Served:
        s = Served(list(args), tmp_path)
        procs.append(s)
        return s

    yield start
    for s in procs:
        if s.proc.poll() is None:
            s.kill()
