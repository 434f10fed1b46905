#!/usr/bin/env python3
"""demoapp: the sample application the safedeploy.fleet lab deploys.

Standard library only, one file. It is unpacked by the ``release`` module into
``/opt/demoapp/releases/<version>/`` and started by systemd as
``python3 /opt/demoapp/current/demoapp.py``.

Everything it reports about itself (version, flavour, flavour parameters)
comes from ``release.json`` next to this file, resolved once at start through
``os.path.realpath(__file__)`` so a later switch of the ``current`` symlink
never changes what a running process claims to be.

Endpoints
  GET /              {"app","version","host","flavour"}
  GET /sleep?ms=N    answers after N ms (0 <= N <= 10000)
  GET /healthz       liveness: 200 {"status":"ok"}
  GET /ready         readiness: 200 {"status":"ok","version":...} once warmed
                     up, 503 {"status":"starting"} before, 503
                     {"status":"stopping"} after SIGTERM
  GET /metrics       Prometheus text exposition format
  anything else      404 JSON

Flavours (release.json "flavour"): good, never_ready, crash, errors, slow,
degraded, nograceful. See FLAVOURS below.
"""

import argparse
import json
import os
import random
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

HERE = os.path.dirname(os.path.realpath(__file__))
HOST = socket.gethostname()

FLAVOURS = ("good", "never_ready", "crash", "errors", "slow", "degraded",
            "nograceful")
DEFAULTS = {
    "app": "demoapp",
    "version": "0.0.0",
    "flavour": "good",
    "startup_seconds": 0.5,
    "grace_seconds": 15.0,
    "crash_after_seconds": 20.0,
    "error_ratio": 0.2,
    "slow_ratio": 0.05,
    "slow_seconds": 0.8,
}
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0)
MAX_SLEEP_MS = 10000
# Paths excluded from the request counter / histogram / in-flight gauge, so
# that metrics reflect user traffic and not probes or scrapes.
INTERNAL_PATHS = ("/metrics", "/healthz", "/ready")


def log(msg):
    sys.stderr.write(f"demoapp[{os.getpid()}]: {msg}\n")
    sys.stderr.flush()


def load_release(directory=HERE):
    path = os.path.join(directory, "release.json")
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, dict):
        raise TypeError(f"{path}: not a JSON object")
    conf = dict(DEFAULTS)
    conf.update(data)
    if conf["flavour"] not in FLAVOURS:
        raise ValueError(f"{path}: unknown flavour {conf['flavour']!r}")
    for key in ("startup_seconds", "grace_seconds", "crash_after_seconds",
                "error_ratio", "slow_ratio", "slow_seconds"):
        conf[key] = float(conf[key])
    conf["version"] = str(conf["version"])
    return conf


def _fmt(value):
    if value == float("inf"):
        return "+Inf"
    text = repr(float(value))
    return text.removesuffix(".0")


def _esc(value):
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class State:
    """Process-wide state shared by the handler threads."""

    def __init__(self, conf):
        self.conf = conf
        self.version = conf["version"]
        self.flavour = conf["flavour"]
        self.started = time.time()
        self.started_mono = time.monotonic()
        self.stopping = False
        self.lock = threading.Lock()
        # connection socket -> busy (True while a request is being handled)
        self.conns = {}
        self.busy = 0
        self.requests = {}  # status code (str) -> count
        self.bucket_counts = [0] * (len(BUCKETS) + 1)
        self.duration_sum = 0.0
        self.duration_count = 0
        self.user_in_flight = 0
        self.rng = random.Random()

    def ready(self):
        if self.stopping:
            return 503, {"status": "stopping"}
        if self.flavour == "never_ready":
            return 503, {"status": "starting"}
        if time.monotonic() - self.started_mono < self.conf["startup_seconds"]:
            return 503, {"status": "starting"}
        if self.flavour == "degraded":
            return 200, {"status": "degraded", "version": self.version}
        return 200, {"status": "ok", "version": self.version}

    def observe(self, code, seconds):
        with self.lock:
            key = str(code)
            self.requests[key] = self.requests.get(key, 0) + 1
            self.duration_sum += seconds
            self.duration_count += 1
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    self.bucket_counts[i] += 1
                    break
            else:
                self.bucket_counts[-1] += 1

    def metrics(self):
        v = _esc(self.version)
        with self.lock:
            requests = dict(self.requests)
            buckets = list(self.bucket_counts)
            dsum, dcount = self.duration_sum, self.duration_count
            in_flight = self.user_in_flight
        out = [
            "# HELP demoapp_requests_total User requests answered, by status code.",
            "# TYPE demoapp_requests_total counter",
        ]
        for code in sorted(requests):
            out.append(f'demoapp_requests_total{{code="{code}",version="{v}"}} '
                       f"{requests[code]}")
        out += [
            "# HELP demoapp_request_duration_seconds User request duration.",
            "# TYPE demoapp_request_duration_seconds histogram",
        ]
        cumulative = 0
        for bound, count in zip(BUCKETS + (float("inf"),), buckets):
            cumulative += count
            out.append(f'demoapp_request_duration_seconds_bucket{{version="{v}",'
                       f'le="{_fmt(bound)}"}} {cumulative}')
        out.append(f'demoapp_request_duration_seconds_sum{{version="{v}"}} {_fmt(dsum)}')
        out.append(f'demoapp_request_duration_seconds_count{{version="{v}"}} {dcount}')
        times = os.times()
        out += [
            "# HELP demoapp_requests_in_flight User requests being served.",
            "# TYPE demoapp_requests_in_flight gauge",
            f"demoapp_requests_in_flight {in_flight}",
            "# HELP demoapp_build_info Release running in this process.",
            "# TYPE demoapp_build_info gauge",
            f'demoapp_build_info{{version="{v}",flavour="{_esc(self.flavour)}"}} 1',
            "# HELP process_cpu_seconds_total Total user and system CPU time.",
            "# TYPE process_cpu_seconds_total counter",
            f"process_cpu_seconds_total {_fmt(round(times.user + times.system, 6))}",
            "# HELP process_start_time_seconds Start time since the epoch.",
            "# TYPE process_start_time_seconds gauge",
            f"process_start_time_seconds {_fmt(round(self.started, 3))}",
        ]
        return "\n".join(out) + "\n"


STATE = None  # set in main()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "demoapp"
    sys_version = ""
    timeout = 75  # idle keep-alive connections are closed after this
    disable_nagle_algorithm = True  # no 40 ms delayed-ACK stall per response

    def version_string(self):
        return "demoapp/" + STATE.version

    # -- connection bookkeeping (for draining) --------------------------------
    def setup(self):
        super().setup()
        with STATE.lock:
            STATE.conns[self.connection] = False

    def finish(self):
        try:
            super().finish()
        finally:
            with STATE.lock:
                if STATE.conns.pop(self.connection, False):
                    STATE.busy -= 1

    def _set_busy(self, busy):
        with STATE.lock:
            if self.connection in STATE.conns and STATE.conns[self.connection] != busy:
                STATE.conns[self.connection] = busy
                STATE.busy += 1 if busy else -1

    def handle_one_request(self):
        # Same as BaseHTTPRequestHandler.handle_one_request, but marks the
        # connection busy from the moment a request line has arrived until
        # its response is written, so draining knows what is in flight.
        try:
            self.raw_requestline = self.rfile.readline(65537)
            if not self.raw_requestline:
                self.close_connection = True
                return
            self._set_busy(True)
            try:
                if len(self.raw_requestline) > 65536:
                    self.requestline = ""
                    self.request_version = ""
                    self.command = ""
                    self.send_error(414)
                    return
                if not self.parse_request():
                    return
                method = getattr(self, "do_" + self.command, None)
                if method is None:
                    self.send_error(501, f"Unsupported method ({self.command!r})")
                    return
                method()
                self.wfile.flush()
            finally:
                self._set_busy(False)
        except (TimeoutError, ConnectionError, OSError):
            self.close_connection = True

    def log_message(self, format, *args):
        pass  # no per-request logging (journald gets start/stop lines only)

    def send_response(self, code, message=None):
        super().send_response(code, message)
        self.send_header("X-App-Version", STATE.version)
        self.send_header("X-App-Host", HOST)
        if STATE.stopping:
            self.send_header("Connection", "close")
            self.close_connection = True

    # -- routing ---------------------------------------------------------------
    def _reply(self, code, payload, ctype="application/json", head=False):
        if isinstance(payload, (dict, list)):
            body = (json.dumps(payload, sort_keys=True) + "\n").encode()
        else:
            body = payload.encode() if isinstance(payload, str) else payload
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if not head:
            self.wfile.write(body)
        return code

    def do_HEAD(self):
        self.do_GET(head=True)

    def do_GET(self, head=False):
        parts = urlsplit(self.path)
        path = parts.path
        if path in INTERNAL_PATHS:
            self._internal(path, head)
            return
        start = time.monotonic()
        with STATE.lock:
            STATE.user_in_flight += 1
        code = 500
        try:
            code = self._user(path, parts.query, head)
        finally:
            with STATE.lock:
                STATE.user_in_flight -= 1
            STATE.observe(code, time.monotonic() - start)

    def _internal(self, path, head):
        if path == "/healthz":
            self._reply(200, {"status": "ok"}, head=head)
        elif path == "/ready":
            code, payload = STATE.ready()
            self._reply(code, payload, head=head)
        else:
            self._reply(200, STATE.metrics(),
                        ctype="text/plain; version=0.0.4; charset=utf-8", head=head)

    def _user(self, path, query, head):
        conf = STATE.conf
        if path == "/":
            if STATE.flavour == "errors" and STATE.rng.random() < conf["error_ratio"]:
                return self._reply(500, {"error": "injected failure",
                                         "version": STATE.version}, head=head)
            if STATE.flavour == "slow" and STATE.rng.random() < conf["slow_ratio"]:
                time.sleep(conf["slow_seconds"])
            return self._reply(200, {"app": conf["app"], "version": STATE.version,
                                     "host": HOST, "flavour": STATE.flavour}, head=head)
        if path == "/sleep":
            raw = parse_qs(query).get("ms", ["0"])[0]
            try:
                ms = int(raw)
            except ValueError:
                ms = -1
            if not 0 <= ms <= MAX_SLEEP_MS:
                return self._reply(400, {"error": "ms must be an integer in "
                                         f"0..{MAX_SLEEP_MS}"}, head=head)
            time.sleep(ms / 1000.0)
            return self._reply(200, {"slept_ms": ms, "version": STATE.version,
                                     "host": HOST}, head=head)
        return self._reply(404, {"error": "not found", "path": path}, head=head)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def drain(server, grace):
    """Stop accepting, let requests in flight finish, close idle keep-alive
    connections. Returns the number of requests still busy at the deadline."""
    deadline = time.monotonic() + grace
    server.shutdown()      # serve_forever returns within its poll interval
    server.server_close()  # listening socket closed: new connections refused
    while True:
        with STATE.lock:
            if STATE.busy == 0:
                # Nothing in flight: close idle keep-alive connections while
                # holding the lock, so no request can start in between.
                for conn in list(STATE.conns):
                    try:
                        conn.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                return 0
            busy = STATE.busy
        if time.monotonic() >= deadline:
            return busy
        time.sleep(0.02)


def main(argv=None):
    global STATE
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int,
                        default=int(os.environ.get("DEMOAPP_PORT", "8080")))
    parser.add_argument("--bind", default="0.0.0.0")
    args = parser.parse_args(argv)

    conf = load_release()
    if os.environ.get("DEMOAPP_CRASH_AFTER"):  # unit tests only
        conf["crash_after_seconds"] = float(os.environ["DEMOAPP_CRASH_AFTER"])
    STATE = State(conf)

    server = Server((args.bind, args.port), Handler)
    port = server.server_address[1]
    stop = threading.Event()
    signame = []

    def on_signal(signum, _frame):
        if STATE.flavour == "nograceful":
            log(f"version {STATE.version} got signal {signum}: "
                "exiting at once (nograceful)")
            os._exit(0)
        STATE.stopping = True  # readiness answers 503 from now on
        signame.append(signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    thread = threading.Thread(target=server.serve_forever,
                              kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    log(f"version {STATE.version} flavour {STATE.flavour} "
        f"listening on {args.bind}:{port} from {HERE}")

    crash_at = None
    if STATE.flavour == "crash":
        crash_at = STATE.started_mono + conf["crash_after_seconds"]
    while not stop.is_set():
        if crash_at is not None and time.monotonic() >= crash_at:
            log(f"version {STATE.version} crashing on purpose (flavour crash)")
            os._exit(1)
        stop.wait(0.1)

    t0 = time.monotonic()
    left = drain(server, conf["grace_seconds"])
    how = signame[0] if signame else "signal"
    log(f"version {STATE.version} stopped on {how} after "
        f"{time.monotonic() - t0:.2f}s drain, {left} request(s) cut off")
    return 0


if __name__ == "__main__":
    sys.exit(main())
