# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A large demoapp artifact and an HTTP server on the loopback that counts
what it sends: the artifact-distribution bench and its integration test.

The artifact has the format of tests/lab/build_artifacts.py (demoapp.py,
release.json) plus ``payload.bin``, random bytes, so gzip cannot shrink it.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import sys
import threading

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tests", "lab"))
import build_artifacts  # noqa: E402


def make_artifact(out_dir: str, version: str, size_mb: int) -> tuple[str, str]:
    """Write demoapp-VERSION.tar.gz of about SIZE_MB MB into out_dir (kept when it is
    already there); return (path, sha256 hex)."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, build_artifacts.artifact_name(version))
    if not os.path.exists(path):
        with open(build_artifacts.APP_SOURCE, "rb") as handle:
            source = handle.read()
        release = build_artifacts.release_json("2.0.0").replace(b'"2.0.0"', f'"{version}"'.encode())
        data = build_artifacts.build_archive({
            "demoapp.py": (source, 0o755),
            "release.json": (release, 0o644),
            "payload.bin": (os.urandom(size_mb * 1024 * 1024), 0o644),
        })
        tmp = path + ".tmp"
        with open(tmp, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return path, digest.hexdigest()


class _CountingHandler(http.server.SimpleHTTPRequestHandler):
    def copyfile(self, source, outputfile):
        counter = self.server.sent  # type: ignore[attr-defined]
        for chunk in iter(lambda: source.read(1 << 20), b""):
            outputfile.write(chunk)
            with counter["lock"]:
                counter["bytes"] += len(chunk)
        with counter["lock"]:
            counter["requests"] += 1

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        pass


class ArtifactServer:
    """Serve DIRECTORY on 127.0.0.1 (a free port) in a thread; .sent says
    how many bytes and files were sent."""

    def __init__(self, directory: str):
        handler = functools.partial(_CountingHandler, directory=directory)
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.sent = {"bytes": 0, "requests": 0, "lock": threading.Lock()}
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def sent(self) -> dict:
        return {"bytes": self.httpd.sent["bytes"], "requests": self.httpd.sent["requests"]}

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def __enter__(self) -> ArtifactServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
