# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A real HAProxy on loopback for the unit tests, plus tiny HTTP backends.

Every HAProxy started here runs in the foreground (``-db``) as a child of the
test process, on 127.0.0.1 ephemeral ports, with its admin socket in a temp
directory; it is stopped by its PID.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ansible.module_utils.testing import patch_module_args

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Backend:
    """An HTTP server: /ready -> 200, /slow holds the request until release().

    For the counter tests: /status/NNN answers NNN, /sleep/MS answers 200
    after MS milliseconds, /reset resets the connection (RST) without an answer.
    """

    def __init__(self, name):
        self.name = name
        self.gate = threading.Event()
        self.in_slow = threading.Event()
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_GET(self):
                if self.path.startswith("/slow"):
                    backend.in_slow.set()
                    backend.gate.wait(30)
                if self.path.startswith("/reset"):
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True
                    return
                status = 200
                if self.path.startswith("/status/"):
                    status = int(self.path.split("/")[2])
                elif self.path.startswith("/sleep/"):
                    time.sleep(int(self.path.split("/")[2]) / 1000)
                body = backend.name.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass  # clients (health checks, aborted tests) hang up; not interesting

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def release(self):
        self.gate.set()

    def close(self):
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()


class HAProxy:
    """One HAProxy process (and its successors after reloads)."""

    def __init__(self, tmpdir, body, global_extra=""):
        self.dir = str(tmpdir)
        self.sock = os.path.join(self.dir, "admin.sock")
        self.user_sock = os.path.join(self.dir, "user.sock")
        self.oper_sock = os.path.join(self.dir, "oper.sock")
        self.state_file = os.path.join(self.dir, "server-state")
        self.tcp_port = free_port()
        self.front_port = free_port()
        self.cfg = os.path.join(self.dir, "haproxy.cfg")
        with open(self.cfg, "w") as handle:
            handle.write(
                "global\n"
                f"  stats socket {self.sock} mode 600 level admin\n"
                f"  stats socket {self.user_sock} mode 600 level user\n"
                f"  stats socket {self.oper_sock} mode 600 level operator\n"
                f"  stats socket ipv4@127.0.0.1:{self.tcp_port} level admin\n"
                f"  server-state-file {self.state_file}\n"
                f"{global_extra}"
                "defaults\n"
                "  mode http\n"
                "  timeout connect 1s\n  timeout client 30s\n  timeout server 30s\n"
                "  load-server-state-from-file global\n" + body.replace("FRONT_PORT", str(self.front_port))
            )
        self.procs = []
        self._start([])

    def _start(self, extra):
        proc = subprocess.Popen(
            [HAPROXY, "-db", "-q", "-f", self.cfg, *extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.procs.append(proc)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"haproxy exited: {proc.stderr.read().decode()}")
            if self._answers():
                return proc
            time.sleep(0.02)
        raise RuntimeError("haproxy did not come up")

    def _answers(self):
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(1)
                sock.connect(self.sock)
                sock.sendall(b"show info\n")
                data = b""
                while True:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            pid = str(self.procs[-1].pid).encode()
            return b"Pid: " + pid + b"\n" in data
        except OSError:
            return False

    @property
    def pid(self):
        return self.procs[-1].pid

    def reload(self):
        """Start a new process that takes over from the current one (-sf)."""
        old = self.procs[-1]
        self._start(["-sf", str(old.pid)])
        try:
            old.wait(5)
        except subprocess.TimeoutExpired:
            old.kill()

    def cli(self, command, path=None):
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(3)
            sock.connect(path or self.sock)
            sock.sendall(command.encode() + b"\n")
            data = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        return data.decode()

    def get(self, path="/", timeout=5):
        url = f"http://127.0.0.1:{self.front_port}{path}"
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.read().decode()

    def stop(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if proc.stderr:
                proc.stderr.close()


def run_module(module, args, check_mode=False, diff=False):
    """Run a module's main() in-process; return (failed, result)."""
    full = dict(args)
    full["_ansible_check_mode"] = check_mode
    full["_ansible_diff"] = diff
    out = io.StringIO()
    with patch_module_args(full), contextlib.redirect_stdout(out):
        try:
            module.main()
        except SystemExit:
            pass
    result = json.loads(out.getvalue())
    return bool(result.get("failed")), result
