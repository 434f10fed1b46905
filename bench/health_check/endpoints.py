#!/usr/bin/env python3
# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""N health endpoints on 127.0.0.1:BASE..BASE+N-1, served by one asyncio process.

Every port answers ``GET /healthz`` with 200, ``{"status": "ok", "port": P}``
and ``X-App-Version: 2.0.0`` (HTTP/1.1, keep-alive honoured).  Prints
``READY <base> <count>`` on stdout once every port listens, and on SIGTERM
prints ``REQUESTS <total> <ports that were hit>`` and exits.

    python3 endpoints.py --count 500 [--base 21000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import socket
import sys

VERSION = "2.0.0"


def bind_range(count, base=None, attempts=50):
    """Listening sockets on ``count`` consecutive free loopback ports."""
    for _ in range(attempts):
        start = base if base is not None else random.randrange(20000, 32000 - count)
        sockets = []
        try:
            for port in range(start, start + count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
                sock.listen(128)
                sock.setblocking(False)
            return start, sockets
        except OSError:
            for sock in sockets:
                sock.close()
            if base is not None:
                raise
    raise SystemExit(f"no range of {count} free ports found")


class Stats:
    total = 0
    ports: set = set()  # noqa: RUF012 - one process, one instance


async def handle(reader, writer, port):
    body = json.dumps({"status": "ok", "port": port}).encode()
    try:
        while True:
            request_line = await reader.readline()
            if not request_line:
                break
            keep_alive = request_line.rstrip().endswith(b"HTTP/1.1")
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b"\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value.strip() or 0)
                elif name == "connection":
                    keep_alive = value.strip().lower() == "keep-alive" or (
                        keep_alive and value.strip().lower() != "close")
            if length:
                await reader.readexactly(length)
            Stats.total += 1
            Stats.ports.add(port)
            head = (
                "HTTP/1.1 200 OK\r\n"
                "Content-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n"
                f"X-App-Version: {VERSION}\r\n"
                f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
            if not keep_alive:
                break
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def main(count, base):
    start, sockets = bind_range(count, base)
    servers = []
    for offset, sock in enumerate(sockets):
        port = start + offset
        servers.append(await asyncio.start_server(
            lambda r, w, p=port: handle(r, w, p), sock=sock, backlog=128))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"READY {start} {count}", flush=True)
    await stop.wait()
    for server in servers:
        server.close()
    print(f"REQUESTS {Stats.total} {len(Stats.ports)}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--base", type=int)
    args = parser.parse_args()
    asyncio.run(main(args.count, args.base))
    sys.exit(0)
