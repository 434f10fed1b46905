#!/usr/bin/env python3
"""Live traffic through the lab load balancer, recorded request by request.

Integration tests and benchmarks use it to prove that no request was lost
while a deploy ran:

    with TrafficRecorder("http://10.213.0.2/", rate=100) as rec:
        run_the_deploy()
    summary = rec.summary          # also returned by rec.stop()
    assert summary.failed == 0

or from the shell:

    python tests/lab/traffic.py --url http://10.213.0.2/ --rate 100 \
        --duration 10 [--out f.jsonl]

which prints the summary as JSON and exits 1 if any request failed.

A scheduler thread emits requests at a fixed rate to a small pool of worker
threads; each worker holds one keep-alive ``http.client`` connection and
reconnects when it has been closed. There are no retries: a request that fails
on a reused connection because the peer closed it counts as failed.

Each request becomes one record (and one JSON line in ``out``):
``{"seq", "t", "latency_ms", "status", "error", "version", "host"}`` where
``t`` is the wall-clock time the request started, ``status`` is the HTTP
status or null, ``error`` a short error kind or null, ``version`` and ``host``
the ``X-App-Version`` / ``X-App-Host`` response headers.

Only loopback (127.0.0.0/8) and the lab network (10.213.0.0/16) are allowed
as targets.
"""

import argparse
import http.client
import ipaddress
import json
import math
import queue
import socket
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from urllib.parse import urlsplit

MAX_RATE = 2000.0
MAX_DURATION = 3600.0
MAX_CONNECTIONS = 256
ALLOWED_NETWORKS = (ipaddress.ip_network("127.0.0.0/8"),
                    ipaddress.ip_network("10.213.0.0/16"))


def check_target(host, port=80):
    """Resolve host (IPv4 for names); raise ValueError unless every address
    is in the lab. Returns the sorted addresses."""
    try:
        ipaddress.ip_address(host)
        family = socket.AF_UNSPEC  # a literal address: checked as given
    except ValueError:
        family = socket.AF_INET    # a name: the lab is IPv4 only
    try:
        infos = socket.getaddrinfo(host, port, family=family, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise ValueError(f"cannot resolve {host!r}: {exc}") from exc
    addresses = sorted({info[4][0] for info in infos})
    for addr in addresses:
        ip = ipaddress.ip_address(addr.split("%")[0])
        if not any(ip in net for net in ALLOWED_NETWORKS):
            raise ValueError(
                f"refusing to send traffic to {addr} ({host}): only 127.0.0.0/8 "
                "and the lab network 10.213.0.0/16 are allowed")
    return addresses


def error_kind(exc):
    """A short, stable name for a request failure."""
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError):
        return "reset"
    if isinstance(exc, BrokenPipeError):
        return "broken_pipe"
    if isinstance(exc, (http.client.RemoteDisconnected,
                        http.client.IncompleteRead, http.client.BadStatusLine)):
        return "closed"
    if isinstance(exc, ConnectionAbortedError):
        return "aborted"
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"oserror_{exc.errno}"
    return type(exc).__name__


def percentile(values, q):
    """Nearest-rank percentile of a list of numbers (None if empty)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def is_ok(record):
    status = record.get("status")
    return record.get("error") is None and status is not None and 200 <= status < 300


def share_between(records, t0, t1):
    """Fraction of answered requests per version among records that started
    in [t0, t1). Records without a version (failures) are not counted."""
    counts = {}
    for rec in records:
        version = rec.get("version")
        if version is None or not t0 <= rec["t"] < t1:
            continue
        counts[version] = counts.get(version, 0) + 1
    total = sum(counts.values())
    return {v: n / total for v, n in sorted(counts.items())} if total else {}


@dataclass
class Summary:
    total: int = 0
    ok: int = 0
    failed: int = 0
    errors: dict = field(default_factory=dict)       # kind -> count (http_5xx too)
    versions: dict = field(default_factory=dict)     # version -> answered count
    hosts: dict = field(default_factory=dict)        # host -> answered count
    per_second: list = field(default_factory=list)   # [{"second", "versions"}]
    first_seen: dict = field(default_factory=dict)   # version -> wall clock t
    last_seen: dict = field(default_factory=dict)    # version -> wall clock t
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    not_sent: int = 0  # scheduled but still queued when stop() was called
    started: float | None = None
    ended: float | None = None
    duration_s: float = 0.0
    achieved_rate: float = 0.0

    def to_dict(self):
        return asdict(self)

    def to_json(self, **kwargs):
        return json.dumps(self.to_dict(), sort_keys=True, **kwargs)


def summarize(records, started=None, ended=None):
    """Build a Summary from records (dicts as written to the JSON lines)."""
    records = sorted(records, key=lambda r: r["t"])
    s = Summary()
    if started is None:
        started = records[0]["t"] if records else time.time()
    if ended is None:
        ended = (max(r["t"] + (r["latency_ms"] or 0) / 1000.0 for r in records)
                 if records else started)
    s.started, s.ended = started, ended
    s.duration_s = round(max(0.0, ended - started), 3)
    per_second = {}
    latencies = []
    for rec in records:
        s.total += 1
        if is_ok(rec):
            s.ok += 1
            latencies.append(rec["latency_ms"])
        else:
            s.failed += 1
            kind = rec.get("error") or f"http_{rec.get('status')}"
            s.errors[kind] = s.errors.get(kind, 0) + 1
        version = rec.get("version")
        if version is not None:
            s.versions[version] = s.versions.get(version, 0) + 1
            s.first_seen.setdefault(version, rec["t"])
            s.last_seen[version] = rec["t"]
            second = int(rec["t"] - started)
            bucket = per_second.setdefault(second, {})
            bucket[version] = bucket.get(version, 0) + 1
        host = rec.get("host")
        if host is not None:
            s.hosts[host] = s.hosts.get(host, 0) + 1
    s.per_second = [{"second": sec, "versions": per_second[sec]}
                    for sec in sorted(per_second)]
    s.latency_p50_ms = percentile(latencies, 50)
    s.latency_p99_ms = percentile(latencies, 99)
    s.achieved_rate = round(s.total / s.duration_s, 2) if s.duration_s else 0.0
    return s


class TrafficRecorder:
    """Send GET requests at a fixed rate and record every one of them."""

    def __init__(self, url, rate=100.0, duration=None, max_requests=None,
                 out=None, timeout=2.0, connections=8, path="/"):
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"need an http:// URL, got {url!r}")
        rate = float(rate)
        if not 0 < rate <= MAX_RATE:
            raise ValueError(f"rate must be in (0, {MAX_RATE:g}] requests/s, got {rate}")
        if duration is not None and not 0 < float(duration) <= MAX_DURATION:
            raise ValueError(f"duration must be in (0, {MAX_DURATION:g}] s, got {duration}")
        if max_requests is not None and int(max_requests) < 1:
            raise ValueError("max_requests must be >= 1")
        if not 1 <= int(connections) <= MAX_CONNECTIONS:
            raise ValueError(f"connections must be in 1..{MAX_CONNECTIONS}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.addresses = check_target(self.host, self.port)
        # The request target: the URL's own path (and query) unless a
        # non-default ``path`` is given.
        url_target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.target = path if path != "/" else url_target
        self.host_header = parts.netloc
        self.url = url
        self.rate = rate
        self.duration = float(duration) if duration is not None else None
        self.max_requests = int(max_requests) if max_requests is not None else None
        self.out = out
        self.timeout = float(timeout)
        self.connections = int(connections)

        self._records = []
        self._lock = threading.Lock()
        self._jobs = queue.Queue()
        self._stop = threading.Event()
        self._done = threading.Event()
        self._threads = []
        self._fh = None
        self._started = None
        self._ended = None
        self.summary = None

    # -- public API ------------------------------------------------------------
    def start(self):
        if self._started is not None:
            raise RuntimeError("TrafficRecorder already started")
        if self.out:
            self._fh = open(self.out, "w", encoding="utf-8", buffering=1)  # noqa: SIM115
        self._started = time.time()
        for i in range(self.connections):
            t = threading.Thread(target=self._worker, name=f"traffic-worker-{i}",
                                 daemon=True)
            t.start()
            self._threads.append(t)
        self._scheduler = threading.Thread(target=self._schedule,
                                           name="traffic-scheduler", daemon=True)
        self._scheduler.start()
        return self

    def wait(self, timeout=None):
        """Block until duration / max_requests is reached (or stop()) and
        every scheduled request has been handed to a worker. True if so."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._done.wait(timeout):
            return False
        while not self._jobs.empty():
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def stop(self):
        """Stop scheduling, let requests already sent finish, return Summary."""
        if self._started is None:
            raise RuntimeError("TrafficRecorder not started")
        if self.summary is not None:
            return self.summary
        self._stop.set()
        self._scheduler.join()
        # Requests scheduled but not yet sent (the workers fell behind) are
        # not sent at all; they are reported as not_sent, not as failures.
        not_sent = 0
        while True:
            try:
                self._jobs.get_nowait()
            except queue.Empty:
                break
            not_sent += 1
        for _ in self._threads:
            self._jobs.put(None)
        for t in self._threads:
            t.join(self.timeout * 2 + 5)
        self._ended = time.time()
        with self._lock:
            if self._fh:
                self._fh.close()
                self._fh = None
        self.summary = summarize(self.records, self._started, self._ended)
        self.summary.not_sent = not_sent
        return self.summary

    def run(self):
        """start(), wait for duration / max_requests, stop()."""
        if self.duration is None and self.max_requests is None:
            raise ValueError("run() needs duration or max_requests")
        self.start()
        self.wait()
        return self.stop()

    @property
    def records(self):
        with self._lock:
            return sorted(self._records, key=lambda r: r["seq"])

    def share_between(self, t0, t1):
        return share_between(self.records, t0, t1)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    # -- internals ---------------------------------------------------------------
    def _schedule(self):
        t0 = time.monotonic()
        sent = 0
        interval = 1.0 / self.rate
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                elapsed = now - t0
                if self.duration is not None and elapsed >= self.duration:
                    break
                due = int(elapsed * self.rate) + 1
                if self.duration is not None:
                    due = min(due, math.ceil(self.duration * self.rate))
                if self.max_requests is not None:
                    due = min(due, self.max_requests)
                while sent < due:
                    self._jobs.put(sent)
                    sent += 1
                if self.max_requests is not None and sent >= self.max_requests:
                    break
                next_at = t0 + sent * interval
                self._stop.wait(max(0.0, min(next_at - time.monotonic(), 0.05)))
        finally:
            self._done.set()

    def _connect(self):
        # Connect to the address that was checked, not to a name that could
        # resolve differently later.
        return http.client.HTTPConnection(self.addresses[0], self.port,
                                          timeout=self.timeout)

    def _worker(self):
        conn = None
        while True:
            seq = self._jobs.get()
            if seq is None:
                break
            if conn is None:
                conn = self._connect()
            rec = {"seq": seq, "t": time.time(), "latency_ms": None, "status": None,
                   "error": None, "version": None, "host": None}
            start = time.monotonic()
            try:
                conn.request("GET", self.target,
                             headers={"Host": self.host_header,
                                      "User-Agent": "safedeploy-traffic"})
                resp = conn.getresponse()
                resp.read()
                rec["status"] = resp.status
                rec["version"] = resp.getheader("X-App-Version")
                rec["host"] = resp.getheader("X-App-Host")
                if resp.will_close:
                    conn.close()
                    conn = None
            except Exception as exc:  # noqa: BLE001 - every failure is recorded
                rec["error"] = error_kind(exc)
                conn.close()
                conn = None
            rec["latency_ms"] = round((time.monotonic() - start) * 1000.0, 3)
            self._record(rec)
        if conn is not None:
            conn.close()

    def _record(self, rec):
        with self._lock:
            self._records.append(rec)
            if self._fh:
                self._fh.write(json.dumps(rec, sort_keys=True) + "\n")


def load_records(path):
    """Read records back from a JSON-lines file."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def main(argv=None):
    parser = argparse.ArgumentParser(description="Record live traffic to a lab URL.")
    parser.add_argument("--url", required=True)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--max-requests", type=int)
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--path", default="/")
    parser.add_argument("--out", help="write one JSON line per request here")
    args = parser.parse_args(argv)
    try:
        rec = TrafficRecorder(args.url, rate=args.rate, duration=args.duration,
                              max_requests=args.max_requests, out=args.out,
                              timeout=args.timeout, connections=args.connections,
                              path=args.path)
    except ValueError as exc:
        parser.error(str(exc))
    rec.start()
    try:
        rec.wait()
    except KeyboardInterrupt:
        pass
    summary = rec.stop()
    print(summary.to_json(indent=2))
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
