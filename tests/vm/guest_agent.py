"""Command agent that runs inside the test VM (stdlib only, started with -S).

The initramfs copies this file to /run/bootkit/ in the guest and starts it
in the chroot of the host's root (shared read-only over 9p) with the host's
own Python interpreter. It talks to the host over a virtio-serial port, one
request per line (JSON) in, one framed reply per request out:

    \\n@@BOOTKIT-AGENT@@ {"id": ..., ...}\\n

The port is a dedicated channel, so the kernel console (ttyS0) never mixes
in; the marker only lets the host skip any partial garbage. Command output
is captured to files in the guest's tmpfs and sent back base64-encoded, so
it is binary-safe and a chatty command can never deadlock a pipe.
"""

import base64
import errno
import json
import os
import signal
import subprocess
import sys
import time

MARKER = b"@@BOOTKIT-AGENT@@ "
OUTDIR = "/tmp/.bootkit-agent"


class Port:
    def __init__(self, path):
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        self.buf = b""

    def readline(self):
        while b"\n" not in self.buf:
            try:
                chunk = os.read(self.fd, 65536)
            except InterruptedError:
                continue
            if not chunk:
                # virtio-serial reads 0 while the host side is not (yet)
                # connected: wait instead of treating it as end of input.
                time.sleep(0.05)
                continue
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line

    def send(self, obj):
        data = b"\n" + MARKER + json.dumps(obj).encode() + b"\n"
        while data:
            try:
                n = os.write(self.fd, data)
            except OSError as e:
                if e.errno in (errno.EAGAIN, errno.EINTR, errno.ENOTCONN):
                    time.sleep(0.05)
                    continue
                raise
            data = data[n:]


def b64(data):
    return base64.b64encode(data).decode("ascii")


def read_file(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


class Agent:
    def __init__(self, port, config):
        self.port = port
        self.env = config["env"]
        self.seq = 0
        self.bg = {}  # handle -> (Popen, out path, err path)
        os.makedirs(OUTDIR, exist_ok=True)

    def _spawn(self, req, tag):
        self.seq += 1
        base = os.path.join(OUTDIR, "%s-%d" % (tag, self.seq))
        env = dict(self.env)
        env.update(req.get("env") or {})
        cmd = req["cmd"]
        argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        if req.get("input") is not None:
            with open(base + ".in", "wb") as f:
                f.write(base64.b64decode(req["input"]))
            stdin = open(base + ".in", "rb")
        else:
            stdin = subprocess.DEVNULL
        out = open(base + ".out", "wb")
        err = open(base + ".err", "wb")
        try:
            proc = subprocess.Popen(
                argv, stdin=stdin, stdout=out, stderr=err, env=env,
                cwd=req.get("cwd") or "/", start_new_session=True)
        finally:
            out.close()
            err.close()
            if stdin is not subprocess.DEVNULL:
                stdin.close()
        return proc, base

    @staticmethod
    def _kill_group(proc, sig=signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except OSError:
            pass

    def _collect(self, base, remove=True):
        out, err = read_file(base + ".out"), read_file(base + ".err")
        if remove:
            for ext in (".out", ".err", ".in"):
                try:
                    os.unlink(base + ext)
                except OSError:
                    pass
        return {"stdout": b64(out), "stderr": b64(err)}

    def op_run(self, req):
        t0 = time.monotonic()
        try:
            proc, base = self._spawn(req, "run")
        except OSError as e:
            return {"rc": 127, "stdout": "", "stderr": b64(str(e).encode()),
                    "timed_out": False, "duration": 0.0}
        timed_out = False
        try:
            proc.wait(timeout=req.get("timeout"))
        except subprocess.TimeoutExpired:
            timed_out = True
            self._kill_group(proc)
            proc.wait()
        # Kill what the command left behind in its session (a backgrounded
        # child that still holds the output files open, for instance).
        self._kill_group(proc)
        reply = {"rc": proc.returncode, "timed_out": timed_out,
                 "duration": time.monotonic() - t0}
        reply.update(self._collect(base))
        return reply

    def op_bg(self, req):
        proc, base = self._spawn(req, "bg")
        self.bg[self.seq] = (proc, base)
        return {"handle": self.seq, "pid": proc.pid}

    def op_bgpoll(self, req):
        proc, base = self.bg[req["handle"]]
        reply = {"rc": proc.poll()}
        if req.get("output"):
            reply.update(self._collect(base, remove=False))
        return reply

    def op_bgstop(self, req):
        proc, base = self.bg.pop(req["handle"])
        killed = False
        if proc.poll() is None:
            self._kill_group(proc, req.get("signal", signal.SIGTERM))
            try:
                proc.wait(timeout=req.get("timeout", 10))
            except subprocess.TimeoutExpired:
                killed = True
                self._kill_group(proc)
                proc.wait()
        self._kill_group(proc)
        reply = {"rc": proc.returncode, "killed": killed}
        reply.update(self._collect(base))
        return reply

    def op_hello(self, req):
        return {"uname": os.uname().release, "pid": os.getpid()}

    def serve(self):
        self.port.send({"id": 0, "op": "ready", "uname": os.uname().release,
                        "uptime": read_file("/proc/uptime").split()[0].decode()})
        while True:
            line = self.port.readline().strip()
            if not line:
                continue
            try:
                req = json.loads(line)
            except ValueError:
                continue
            op = req.get("op")
            if op == "shutdown":
                for proc, _ in self.bg.values():
                    self._kill_group(proc)
                self.port.send({"id": req.get("id"), "ok": True})
                return
            handler = getattr(self, "op_" + str(op), None)
            try:
                if handler is None:
                    raise ValueError("unknown op %r" % (op,))
                reply = handler(req)
                reply["ok"] = True
            except Exception as e:  # report, never die: the VM is shared
                reply = {"ok": False, "error": "%s: %s" % (type(e).__name__, e)}
            reply["id"] = req.get("id")
            self.port.send(reply)


def main():
    port_path, config_path = sys.argv[1], sys.argv[2]
    with open(config_path) as f:
        config = json.load(f)
    Agent(Port(port_path), config).serve()


if __name__ == "__main__":
    main()
