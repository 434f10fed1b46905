# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A small client for the HAProxy runtime API (the "stats socket" CLI).

Python standard library only: this runs on the load-balancer host (modules are
delegated to it). Nothing here imports from a module.

One command per connection: HAProxy answers a non-interactive command and
closes the connection, so a command is "connect, send, read until EOF".
The socket is either a UNIX socket path or ``tcp://host:port``.

Errors are specific exception classes (all subclasses of :class:`HAProxyError`)
whose messages name the wrong value: the backend, the server, the map, the
socket, the level.

The file can also be run as a script (``python3 _haproxy.py save-state ...``):
the haproxy role uses that to dump ``show servers state`` into the
server-state-file right before a reload, without socat and without a second
client implementation.
"""

from __future__ import annotations

import csv
import io
import os
import socket
import sys
import tempfile
import time

DEFAULT_SOCKET = "/run/haproxy/admin.sock"
DEFAULT_TIMEOUT = 5.0
MAX_WEIGHT = 256
POLL_INTERVAL = 0.25

ADMIN_STATES = ("ready", "drain", "maint")

# The per-server fields of `show stat` that haproxy_info returns and _lbstats
# analyses. Counters only grow while the process lives (a reload starts them
# again at 0); gauges are values of the moment: scur/qcur sessions and queued
# requests now, slim the server's maxconn (None when it has none), rtime /
# qtime / ttime HAProxy's moving means in milliseconds.
STAT_COUNTERS = (
    "hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx", "hrsp_other",
    "econ", "eresp", "srv_abrt", "cli_abrt", "wretr", "wredis", "stot",
)
STAT_GAUGES = ("scur", "qcur", "slim", "rtime", "qtime", "ttime")

# srv_op_state values of `show servers state` (enum srv_state).
OP_STATES = {0: "DOWN", 1: "STARTING", 2: "UP", 3: "STOPPING"}

# srv_admin_state bits of `show servers state` (enum srv_admin).
ADMF_FMAINT = 0x01
ADMF_IMAINT = 0x02
ADMF_CMAINT = 0x04
ADMF_FDRAIN = 0x08
ADMF_IDRAIN = 0x10
ADMF_RMAINT = 0x20
ADMF_HMAINT = 0x40
ADMF_MAINT = ADMF_FMAINT | ADMF_IMAINT | ADMF_CMAINT | ADMF_RMAINT | ADMF_HMAINT
ADMF_DRAIN = ADMF_FDRAIN | ADMF_IDRAIN

SERVERS_STATE_VERSION = "1"


class HAProxyError(Exception):
    """Base class of every error raised by this client."""


class HAProxyConnectionError(HAProxyError):
    """The runtime API socket cannot be reached, or it timed out."""


class HAProxyPermissionError(HAProxyError):
    """The socket's level is too low for the command (not ``level admin``)."""


class HAProxySocketPermissionError(HAProxyConnectionError):
    """The socket file cannot be opened: its owner, group or mode keep this user out."""


class HAProxyCommandError(HAProxyError):
    """HAProxy refused or did not understand a command."""


class HAProxyResponseError(HAProxyError):
    """HAProxy answered something this client cannot parse."""


class BackendNotFoundError(HAProxyError):
    """No backend of that name."""


class ServerNotFoundError(HAProxyError):
    """No server of that name in the backend."""


class MapNotFoundError(HAProxyError):
    """The runtime does not know that map."""


class HAProxyFileError(HAProxyError):
    """A file (map file, server-state-file) is missing or cannot be written."""


class MapFileError(HAProxyFileError):
    """The map file is missing or cannot be read or written."""


class HAProxyValueError(HAProxyError, ValueError):
    """An argument (state, weight, key, value, socket) has a wrong value."""


class HAProxyTimeoutError(HAProxyError):
    """Waiting for a server (drained, up) took longer than allowed."""

    def __init__(self, message, server=None, waited=0.0):
        super().__init__(message)
        self.server = server
        self.waited = waited


# The error kinds modules return as ``error_kind``, most specific first, so
# that callers (roles, the haproxy_sample filter) never parse a message.
ERROR_KINDS = (
    (HAProxySocketPermissionError, "permission"),
    (HAProxyPermissionError, "permission"),
    (HAProxyTimeoutError, "timeout"),
    (HAProxyConnectionError, "connection"),
    (BackendNotFoundError, "backend_not_found"),
    (ServerNotFoundError, "server_not_found"),
    (MapNotFoundError, "map_not_found"),
    (HAProxyFileError, "file"),
    (HAProxyValueError, "value"),
    (HAProxyCommandError, "command"),
    (HAProxyResponseError, "response"),
)


def error_kind(exc):
    """The ``error_kind`` of an exception: ``connection``, ``permission``, ``backend_not_found`` ..."""
    for cls, kind in ERROR_KINDS:
        if isinstance(exc, cls):
            return kind
    return "error"


def socket_argument_spec():
    """The runtime API options every haproxy_* module takes (doc fragment safedeploy.fleet.haproxy_socket)."""
    return {
        "socket": {"type": "str", "default": DEFAULT_SOCKET},
        "timeout": {"type": "float", "default": DEFAULT_TIMEOUT},
    }


# --------------------------------------------------------------------------
# Transport
# --------------------------------------------------------------------------


def parse_socket_address(address):
    """Return ``(family, sockaddr)`` for a UNIX path or ``tcp://host:port``."""
    if not address or not isinstance(address, str):
        raise HAProxyValueError(f"socket must be a UNIX socket path or tcp://host:port, got {address!r}")
    if address.startswith("tcp://"):
        rest = address[len("tcp://") :]
        host, sep, port = rest.rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise HAProxyValueError(f"socket {address!r}: expected tcp://host:port with a port in 1..65535")
        return socket.AF_UNSPEC, (host, int(port))
    if "://" in address:
        raise HAProxyValueError(f"socket {address!r}: only UNIX socket paths and tcp://host:port are supported")
    return socket.AF_UNIX, address


def _escape_arg(word):
    """Escape a CLI argument: the CLI splits on spaces and ``;`` ends a command."""
    out = []
    for char in str(word):
        if char in "\\ ;\t":
            out.append("\\")
        out.append(char)
    return "".join(out)


class HAProxyClient:
    """The runtime API of one HAProxy process."""

    def __init__(self, address=DEFAULT_SOCKET, timeout=DEFAULT_TIMEOUT):
        self.address = address
        self.timeout = float(timeout)
        if self.timeout <= 0:
            raise HAProxyValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        self._family, self._sockaddr = parse_socket_address(address)

    # -- raw -----------------------------------------------------------------

    def _connect(self):
        try:
            if self._family == socket.AF_UNIX:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(self.timeout)
                sock.connect(self._sockaddr)
                return sock
            return socket.create_connection(self._sockaddr, timeout=self.timeout)
        except FileNotFoundError as exc:
            raise HAProxyConnectionError(
                f"HAProxy runtime API socket {self.address} does not exist (is HAProxy running "
                f"with 'stats socket {self.address} level admin'?)"
            ) from exc
        except PermissionError as exc:
            raise HAProxySocketPermissionError(
                f"no permission to open HAProxy runtime API socket {self.address} "
                f"(run as root or as a member of the socket's group)"
            ) from exc
        except TimeoutError as exc:
            raise HAProxyConnectionError(
                f"timed out after {self.timeout:g}s connecting to HAProxy runtime API {self.address}"
            ) from exc
        except OSError as exc:
            raise HAProxyConnectionError(f"cannot connect to HAProxy runtime API {self.address}: {exc}") from exc

    def raw(self, command):
        """Send one command, return HAProxy's whole answer as text."""
        if "\n" in command or "\r" in command:
            raise HAProxyValueError(f"a runtime API command must be one line, got {command!r}")
        sock = self._connect()
        try:
            sock.sendall(command.encode("utf-8") + b"\n")
            chunks = []
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                chunks.append(data)
        except TimeoutError as exc:
            raise HAProxyConnectionError(
                f"timed out after {self.timeout:g}s waiting for HAProxy ({self.address}) "
                f"to answer {' '.join(command.split()[0:3])!r}"
            ) from exc
        except OSError as exc:
            raise HAProxyConnectionError(
                f"HAProxy runtime API {self.address} failed during {command!r}: {exc}"
            ) from exc
        finally:
            sock.close()
        return b"".join(chunks).decode("utf-8", errors="replace")

    def command(self, command):
        """Send one command; raise on the generic refusals; return the answer."""
        answer = self.raw(command)
        stripped = answer.strip()
        if stripped.startswith("Permission denied"):
            raise HAProxyPermissionError(
                f"HAProxy refused {command.split(' ', 3)[:3]} on {self.address}: permission denied; "
                f"the socket needs 'level admin'"
            )
        if stripped.startswith("Unknown command"):
            raise HAProxyCommandError(
                f"HAProxy on {self.address} does not accept {command.split(' ', 3)[:3]} (unknown command); "
                f"the socket may not be at 'level admin', or this HAProxy is too old"
            )
        return answer

    # -- info ----------------------------------------------------------------

    def cli_level(self):
        """The level of this socket: ``admin``, ``operator`` or ``user``."""
        answer = self.command("show cli level").strip()
        if answer not in ("admin", "operator", "user"):
            raise HAProxyResponseError(f"unexpected answer to 'show cli level' on {self.address}: {answer[:80]!r}")
        return answer

    def check_admin(self):
        """Raise :class:`HAProxyPermissionError` unless the socket is ``level admin``."""
        level = self.cli_level()
        if level != "admin":
            raise HAProxyPermissionError(
                f"HAProxy runtime API socket {self.address} is at level {level!r}, but changing server "
                f"state and weight needs 'level admin' (stats socket ... level admin)"
            )
        return level

    def show_info(self):
        """``show info`` as a dict of strings."""
        info = {}
        for line in self.command("show info").splitlines():
            key, sep, value = line.partition(":")
            if sep:
                info[key.strip()] = value.strip()
        if "Version" not in info:
            raise HAProxyResponseError(f"unexpected answer to 'show info' on {self.address}")
        return info

    # -- servers -------------------------------------------------------------

    def show_servers_state(self, backend=None):
        """``show servers state [backend]`` parsed (format version 1): list of dicts."""
        cmd = "show servers state" + (f" {_escape_arg(backend)}" if backend else "")
        answer = self.command(cmd)
        if answer.strip().startswith("Can't find backend"):
            raise BackendNotFoundError(f"HAProxy ({self.address}) has no backend {backend!r}")
        return parse_servers_state(answer)

    def show_stat(self):
        """``show stat`` parsed: list of dicts keyed by the CSV header names."""
        return parse_stat_csv(self.command("show stat"))

    def process_info(self):
        """Who answers: ``{"pid", "uptime_sec", "version"}`` (a reload changes the pid)."""
        info = self.show_info()
        return {"pid": _int(info.get("Pid"), None), "uptime_sec": _int(info.get("Uptime_sec"), None),
                "version": info.get("Version")}

    def server_stats(self, backends=None):
        """Every server of ``backends`` (default: every backend): state, weight and counters.

        Each item is :func:`_merge_server`'s view plus the fields of
        :data:`STAT_COUNTERS` and :data:`STAT_GAUGES` as integers. Raises
        :class:`BackendNotFoundError` naming every backend this HAProxy lacks.
        """
        wanted = list(backends or ())
        for backend in wanted:
            _require_name("backend", backend)
        states = self.show_servers_state()
        stats = {(r.get("pxname"), r.get("svname")): r for r in self.show_stat()}
        if wanted:
            known = sorted({px for px, sv in stats if sv == "BACKEND"})
            missing = [b for b in wanted if b not in known]
            if missing:
                raise BackendNotFoundError(
                    f"HAProxy ({self.address}) has no backend {', '.join(repr(b) for b in missing)} "
                    f"(its backends: {', '.join(known) or 'none'})"
                )
        servers = []
        for state in states:
            if wanted and state.get("be_name") not in wanted:
                continue
            stat = stats.get((state.get("be_name"), state.get("srv_name")))
            server = _merge_server(state, stat)
            server.update(stat_numbers(stat or {}))
            servers.append(server)
        return servers

    def _server_stat(self, backend, name):
        for row in self.show_stat():
            if row.get("pxname") == backend and row.get("svname") == name:
                return row
        return None

    def list_servers(self, backend=None):
        """Every server (of one backend, or of all), merged from servers state and stat."""
        states = self.show_servers_state(backend)
        stats = {(r.get("pxname"), r.get("svname")): r for r in self.show_stat()}
        if backend is not None and not any(r.get("pxname") == backend for r in stats.values()):
            raise BackendNotFoundError(f"HAProxy ({self.address}) has no backend {backend!r}")
        return [_merge_server(state, stats.get((state["be_name"], state["srv_name"]))) for state in states]

    def get_server(self, backend, name):
        """One server; raise if the backend or the server does not exist."""
        _require_name("backend", backend)
        _require_name("server", name)
        for server in self.list_servers(backend):
            if server["name"] == name:
                return server
        raise ServerNotFoundError(f"HAProxy ({self.address}) backend {backend!r} has no server {name!r}")

    def set_state(self, backend, name, state):
        """``set server B/S state ready|drain|maint``."""
        if state not in ADMIN_STATES:
            raise HAProxyValueError(f"state must be one of {', '.join(ADMIN_STATES)}, got {state!r}")
        answer = self.command(f"set server {_escape_arg(backend)}/{_escape_arg(name)} state {state}")
        _check_server_answer(answer, backend, name, self.address, f"state {state}")

    def set_weight(self, backend, name, weight):
        """``set weight B/S N`` or ``N%`` (percentage of the configured weight)."""
        kind, number = parse_weight(weight)
        arg = f"{number}%" if kind == "percent" else str(number)
        answer = self.command(f"set weight {_escape_arg(backend)}/{_escape_arg(name)} {arg}")
        _check_server_answer(answer, backend, name, self.address, f"weight {arg}")

    def wait_drained(self, backend, name, timeout, interval=POLL_INTERVAL):
        """Poll ``scur`` until the server has no current sessions; return seconds waited."""
        start = time.monotonic()
        while True:
            row = self._server_stat(backend, name)
            if row is None:
                self.get_server(backend, name)  # raises the precise not-found error
                raise ServerNotFoundError(f"HAProxy ({self.address}) backend {backend!r} has no server {name!r}")
            scur = _int(row.get("scur"))
            waited = time.monotonic() - start
            if scur == 0:
                return waited
            if waited >= timeout:
                raise HAProxyTimeoutError(
                    f"server {backend}/{name} still has {scur} session(s) after {timeout:g}s of draining",
                    server=self.get_server(backend, name),
                    waited=waited,
                )
            time.sleep(interval)

    def wait_up(self, backend, name, timeout, interval=POLL_INTERVAL):
        """Poll until the server is UP by a passed health check; return seconds waited.

        HAProxy puts a server leaving ``maint`` straight back UP before its
        first check ("UP 1/2" once that fails), so UP alone proves nothing:
        the status must be exactly ``UP`` with a successful last check
        (``L4OK``/``L6OK``/``L7OK``...), or ``no check`` for unchecked servers.
        """
        start = time.monotonic()
        while True:
            server = self.get_server(backend, name)
            waited = time.monotonic() - start
            if server["healthy"]:
                return waited
            if waited >= timeout:
                raise HAProxyTimeoutError(
                    f"server {backend}/{name} is {server['status'] or server['operational_state']} (check: "
                    f"{server['check_status'] or 'none'}) after waiting {timeout:g}s for it to be UP",
                    server=server,
                    waited=waited,
                )
            time.sleep(interval)

    def save_servers_state(self, path):
        """Write ``show servers state`` to ``path`` atomically (for server-state-file)."""
        answer = self.command("show servers state")
        parse_servers_state(answer)  # refuse to write something HAProxy would not load
        content = answer.rstrip("\n") + "\n"
        mode = None
        try:
            mode = os.stat(path).st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o644
        return atomic_write(path, content, default_mode=mode)

    # -- maps ----------------------------------------------------------------

    def list_maps(self):
        """``show map``: the map files the runtime knows, as a list of paths."""
        maps = []
        for line in self.command("show map").splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            # "2 (/etc/haproxy/maps/x.map) pattern loaded from file ..."
            start, end = line.find("("), line.find(")")
            if start != -1 and end > start:
                maps.append(line[start + 1 : end])
        return maps

    def show_map(self, map_name):
        """All entries of a map as a list of ``(key, value)`` in runtime order."""
        answer = self.command(f"show map {_escape_arg(map_name)}")
        _check_map_answer(answer, map_name, self.address)
        entries = []
        for line in answer.splitlines():
            if not line.strip():
                continue
            parts = line.split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("0x"):
                raise HAProxyResponseError(f"unexpected line in 'show map {map_name}': {line[:80]!r}")
            entries.append((parts[1], parts[2] if len(parts) > 2 else ""))
        return entries

    def get_map_value(self, map_name, key):
        """The value stored for exactly ``key`` (not a pattern match), or ``None``."""
        for entry_key, value in self.show_map(map_name):
            if entry_key == key:
                return value
        return None

    def get_map(self, map_name, sample):
        """``get map``: what a lookup of ``sample`` returns (pattern match), or ``None``."""
        answer = self.command(f"get map {_escape_arg(map_name)} {_escape_arg(sample)}")
        _check_map_answer(answer, map_name, self.address)
        return parse_get_map(answer)

    def set_map_value(self, map_name, key, value):
        """Set ``key`` to ``value`` (add it if missing); return the previous value or ``None``."""
        validate_map_entry(key, value)
        previous = self.get_map_value(map_name, key)
        if previous is None:
            answer = self.command(f"add map {_escape_arg(map_name)} {_escape_arg(key)} {_escape_arg(value)}")
        else:
            answer = self.command(f"set map {_escape_arg(map_name)} {_escape_arg(key)} {_escape_arg(value)}")
        _check_map_answer(answer, map_name, self.address)
        if answer.strip():
            raise HAProxyCommandError(
                f"HAProxy ({self.address}) refused to set {key!r} in map {map_name}: {answer.strip()}"
            )
        return previous

    def del_map_value(self, map_name, key):
        """Remove ``key``; return the previous value or ``None`` if it was absent."""
        validate_map_entry(key, "")
        previous = self.get_map_value(map_name, key)
        if previous is None:
            return None
        answer = self.command(f"del map {_escape_arg(map_name)} {_escape_arg(key)}")
        _check_map_answer(answer, map_name, self.address)
        if answer.strip():
            raise HAProxyCommandError(
                f"HAProxy ({self.address}) refused to delete {key!r} from map {map_name}: {answer.strip()}"
            )
        return previous


# --------------------------------------------------------------------------
# Parsers and helpers (pure functions)
# --------------------------------------------------------------------------


def _require_name(what, value):
    if not value or not isinstance(value, str) or any(c in value for c in " \t\n/;"):
        raise HAProxyValueError(f"{what} name must be a non-empty word without spaces, '/' or ';', got {value!r}")


def _int(value, default=0):
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def stat_numbers(row):
    """The counters and gauges of one ``show stat`` row as integers (``slim`` None when unset)."""
    numbers = {key: _int(row.get(key)) for key in STAT_COUNTERS + STAT_GAUGES}
    if not str(row.get("slim") or "").strip():
        numbers["slim"] = None
    return numbers


def _check_server_answer(answer, backend, name, address, what):
    text = answer.strip()
    if not text:
        return
    if text.startswith("No such backend"):
        raise BackendNotFoundError(f"HAProxy ({address}) has no backend {backend!r}")
    if text.startswith("No such server"):
        raise ServerNotFoundError(f"HAProxy ({address}) backend {backend!r} has no server {name!r}")
    raise HAProxyCommandError(f"HAProxy ({address}) refused to set {what} on {backend}/{name}: {text}")


def _check_map_answer(answer, map_name, address):
    if answer.strip().startswith("Unknown map identifier"):
        raise MapNotFoundError(
            f"HAProxy ({address}) does not know map {map_name!r}; use the map file path exactly as "
            f"written in haproxy.cfg (see 'show map')"
        )


def parse_servers_state(text):
    """Parse ``show servers state`` (version 1): a list of dicts keyed by the header."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise HAProxyResponseError("empty answer to 'show servers state'")
    if lines[0].strip() != SERVERS_STATE_VERSION:
        raise HAProxyResponseError(
            f"unsupported 'show servers state' format version {lines[0].strip()[:40]!r} "
            f"(expected {SERVERS_STATE_VERSION})"
        )
    if len(lines) < 2 or not lines[1].startswith("#"):
        raise HAProxyResponseError("'show servers state' answer has no header line")
    header = lines[1].lstrip("#").split()
    rows = []
    for line in lines[2:]:
        if line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) < len(header):
            fields += [""] * (len(header) - len(fields))
        rows.append(dict(zip(header, fields)))
    return rows


def parse_stat_csv(text):
    """Parse ``show stat`` CSV: a list of dicts keyed by the header names."""
    if not text.startswith("# "):
        raise HAProxyResponseError(f"unexpected answer to 'show stat': {text[:80]!r}")
    body = text[2:]
    reader = csv.DictReader(io.StringIO(body))
    return [row for row in reader if row.get("pxname")]


def parse_get_map(text):
    """Parse ``get map`` output: the value when ``found=yes``, else ``None``."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    if "found=no" in line:
        return None
    if "found=yes" not in line:
        raise HAProxyResponseError(f"unexpected answer to 'get map': {line[:80]!r}")
    marker = 'value="'
    pos = line.find(marker)
    if pos == -1:
        return ""
    rest = line[pos + len(marker) :]
    end = rest.rfind('", type=')
    if end == -1:
        end = rest.rfind('"')
    return rest[:end]


def admin_state_from_flags(flags):
    """``ready`` / ``drain`` / ``maint`` from srv_admin_state bits."""
    flags = _int(flags)
    if flags & ADMF_MAINT:
        return "maint"
    if flags & ADMF_DRAIN:
        return "drain"
    return "ready"


def operational_state_from_stat(status, op_state=None):
    """Normalise show stat's ``status`` (``UP``, ``UP 1/2``, ``no check``, ...)."""
    status = (status or "").strip()
    if not status:
        return OP_STATES.get(_int(op_state, -1), "UNKNOWN")
    if status.lower() == "no check":
        return "UP"
    return status.split()[0].upper()


HEALTHY_CHECKS = ("L4OK", "L6OK", "L7OK")


def is_healthy(status, check_status):
    """UP for sure: ``no check``, or exactly ``UP`` with a passed last check.

    ``UP 1/2`` (failing, going down) and ``UP`` before any check result are not.
    """
    if status.strip().lower() == "no check":
        return True
    # "* L7OK": a check is running right now; the last result is what counts.
    last_check = check_status.strip().lstrip("*").strip()
    return status.strip() == "UP" and last_check.startswith(HEALTHY_CHECKS)


def _merge_server(state, stat):
    stat = stat or {}
    server = {
        "backend": state.get("be_name"),
        "name": state.get("srv_name"),
        "operational_state": operational_state_from_stat(stat.get("status"), state.get("srv_op_state")),
        "status": (stat.get("status") or "").strip(),
        "admin_state": admin_state_from_flags(state.get("srv_admin_state")),
        "weight": _int(state.get("srv_uweight")),
        "initial_weight": _int(state.get("srv_iweight")),
        "current_sessions": _int(stat.get("scur")),
        "check_status": (stat.get("check_status") or "").strip(),
        "addr": stat.get("addr") or _addr(state),
        "backup": stat.get("bck") == "1",
    }
    server["healthy"] = is_healthy(server["status"], server["check_status"])
    server["in_rotation"] = server["healthy"] and server["admin_state"] == "ready" and server["weight"] > 0
    return server


def _addr(state):
    addr, port = state.get("srv_addr", ""), state.get("srv_port", "")
    return f"{addr}:{port}" if addr and port and port != "0" else addr


def parse_weight(weight):
    """``("absolute", N)`` for 0..256, ``("percent", P)`` for ``"P%"`` (0..100+)."""
    if isinstance(weight, bool):
        raise HAProxyValueError(f"weight must be an integer 0..{MAX_WEIGHT} or a percentage like '50%', got {weight!r}")
    if isinstance(weight, int):
        kind, text = "absolute", str(weight)
    else:
        text = str(weight).strip()
        kind = "absolute"
        if text.endswith("%"):
            kind, text = "percent", text[:-1].strip()
    if not text.isdigit():
        raise HAProxyValueError(f"weight must be an integer 0..{MAX_WEIGHT} or a percentage like '50%', got {weight!r}")
    number = int(text)
    if kind == "absolute" and number > MAX_WEIGHT:
        raise HAProxyValueError(f"weight must be between 0 and {MAX_WEIGHT}, got {weight!r}")
    return kind, number


def resolve_weight(weight, initial_weight):
    """The absolute weight HAProxy will set for ``weight`` given the configured weight."""
    kind, number = parse_weight(weight)
    if kind == "absolute":
        return number
    result = initial_weight * number // 100  # HAProxy's own integer arithmetic
    if result > MAX_WEIGHT:
        raise HAProxyValueError(
            f"weight {weight!r} of the configured weight {initial_weight} is {result}, above the maximum {MAX_WEIGHT}"
        )
    return result


def validate_map_entry(key, value):
    if not isinstance(key, str) or not key or any(c.isspace() for c in key):
        raise HAProxyValueError(f"map key must be a non-empty string without whitespace, got {key!r}")
    if not isinstance(value, str) or "\n" in value or "\r" in value:
        raise HAProxyValueError(f"map value must be a single line, got {value!r}")
    if value != value.strip():
        raise HAProxyValueError(f"map value must not start or end with whitespace, got {value!r}")


# --------------------------------------------------------------------------
# Map files
# --------------------------------------------------------------------------


def read_map_file(path):
    """The text of a map file; raise :class:`MapFileError` if it is missing."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError as exc:
        raise MapFileError(f"map file {path} does not exist (create it before using it in haproxy.cfg)") from exc
    except OSError as exc:
        raise MapFileError(f"cannot read map file {path}: {exc}") from exc


def _map_line_key(line):
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
        return None
    return stripped.split(None, 1)[0]


def map_file_value(text, key):
    """The value of ``key`` in map file text (first occurrence), or ``None``."""
    for line in text.splitlines():
        if _map_line_key(line) == key:
            parts = line.strip().split(None, 1)
            return parts[1].strip() if len(parts) > 1 else ""
    return None


def edit_map_text(text, key, value):
    """New map file text with ``key`` set to ``value`` (``None`` removes it).

    Comments, blank lines and other entries are kept as they are; the first
    line of ``key`` is replaced in place, any duplicate of it is dropped, and a
    new key is appended at the end.
    """
    out = []
    done = False
    for line in text.splitlines(keepends=True):
        if _map_line_key(line) == key:
            if value is not None and not done:
                out.append(f"{key} {value}\n")
            done = True
            continue
        out.append(line)
    if value is not None and not done:
        if out and not out[-1].endswith("\n"):
            out[-1] += "\n"
        out.append(f"{key} {value}\n")
    return "".join(out)


def atomic_write(path, content, default_mode=0o644):
    """Write ``content`` to ``path`` through a temporary file in the same directory.

    The existing file's mode and owner are kept. Returns True.
    """
    directory = os.path.dirname(os.path.abspath(path))
    try:
        current = os.stat(path)
    except FileNotFoundError:
        current = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise HAProxyFileError(f"cannot create a temporary file next to {path}: {exc}") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        if current is not None:
            os.chmod(tmp, current.st_mode & 0o7777)
            if (current.st_uid, current.st_gid) != (os.getuid(), os.getgid()):
                os.chown(tmp, current.st_uid, current.st_gid)
        else:
            os.chmod(tmp, default_mode)
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise HAProxyFileError(f"cannot write {path}: {exc}") from exc
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
    return True


# --------------------------------------------------------------------------
# Script entry point (used by the haproxy role before a reload)
# --------------------------------------------------------------------------


def main(argv=None):
    """``_haproxy.py save-state --socket S --file F [--missing-ok]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="_haproxy.py", description="HAProxy runtime API helper")
    sub = parser.add_subparsers(dest="action", required=True)
    save = sub.add_parser("save-state", help="dump 'show servers state' into a server-state-file")
    save.add_argument("--socket", default=DEFAULT_SOCKET)
    save.add_argument("--file", required=True)
    save.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT)
    save.add_argument(
        "--missing-ok",
        action="store_true",
        help="succeed without writing if HAProxy is not running",
    )
    args = parser.parse_args(argv)
    client = HAProxyClient(args.socket, args.timeout)
    try:
        client.save_servers_state(args.file)
    except HAProxyConnectionError as exc:
        if args.missing_ok:
            sys.stdout.write(f"not saved: {exc}\n")
            return 0
        sys.stderr.write(f"error: {exc}\n")
        return 1
    except HAProxyError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    sys.stdout.write(f"saved {args.file}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
