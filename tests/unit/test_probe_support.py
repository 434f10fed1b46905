# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Scripted local HTTP(S) servers for the probe tests (no tests here)."""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Reply:
    status: int = 200
    body: object = field(default_factory=lambda: {"status": "ok"})
    headers: dict = field(default_factory=dict)
    delay: float = 0.0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, *args):  # keep pytest output quiet
        pass

    def _serve(self):
        server = self.server
        length = int(self.headers.get("Content-Length") or 0)
        body_in = self.rfile.read(length) if length else b""
        with server.lock:
            server.count += 1
            number = server.count
            server.requests.append({"method": self.command, "path": self.path,
                                    "headers": dict(self.headers), "body": body_in})
        reply = server.script(number) if callable(server.script) else server.script
        if reply.delay:
            time.sleep(reply.delay)
        body = reply.body
        if not isinstance(body, (bytes, str)):
            body = json.dumps(body)
            reply.headers.setdefault("Content-Type", "application/json")
        if isinstance(body, str):
            body = body.encode()
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = _serve
    do_POST = _serve
    do_HEAD = _serve


class ScriptedServer:
    """``script`` is a Reply or ``callable(request_number) -> Reply``."""

    def __init__(self, script=None, tls_context=None):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.script = script if script is not None else Reply()
        self.httpd.count = 0
        self.httpd.requests = []
        self.httpd.lock = threading.Lock()
        if tls_context is not None:
            self.httpd.socket = tls_context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.scheme = "https" if tls_context is not None else "http"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        self._alive = True

    @property
    def url(self):
        return f"{self.scheme}://127.0.0.1:{self.port}/healthz"

    @property
    def count(self):
        return self.httpd.count

    @property
    def requests(self):
        return self.httpd.requests

    def kill(self):
        """Stop answering: the port is closed, so connections are refused."""
        if self._alive:
            self._alive = False
            self.httpd.shutdown()
            self.httpd.server_close()

    def kill_after(self, seconds):
        timer = threading.Timer(seconds, self.kill)
        timer.daemon = True
        timer.start()
        return timer

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()


def closed_port():
    """A loopback port with nothing listening on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_self_signed(directory):
    """(cert_path, key_path) of a self-signed cert for 127.0.0.1, made with openssl."""
    openssl = shutil.which("openssl")
    if not openssl:
        return None
    cert = directory / "cert.pem"
    key = directory / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    return cert, key


def server_tls_context(cert, key):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    return context
