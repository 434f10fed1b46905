"""tests/lab/traffic.py: the live-traffic recorder, on loopback."""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAB = os.path.join(ROOT, "tests", "lab")
APP = os.path.join(LAB, "app", "demoapp.py")
TRAFFIC = os.path.join(LAB, "traffic.py")

_spec = importlib.util.spec_from_file_location("lab_traffic", TRAFFIC)
traffic = importlib.util.module_from_spec(_spec)
sys.modules["lab_traffic"] = traffic
_spec.loader.exec_module(traffic)
TrafficRecorder = traffic.TrafficRecorder


# -- helpers ---------------------------------------------------------------------------

@pytest.fixture
def demoapp(tmp_path):
    procs = []

    def _start(flavour="good", version="2.0.0", **params):
        d = tmp_path / f"app{len(procs)}"
        d.mkdir()
        shutil.copy(APP, d / "demoapp.py")
        release = {"app": "demoapp", "version": version, "flavour": flavour,
                   "startup_seconds": 0.0}
        release.update(params)
        (d / "release.json").write_text(json.dumps(release))
        proc = subprocess.Popen(
            [sys.executable, str(d / "demoapp.py"), "--port", "0", "--bind", "127.0.0.1"],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        procs.append(proc)
        m = re.search(r"listening on 127\.0\.0\.1:(\d+)", proc.stderr.readline())
        assert m, "demoapp did not start"
        return proc, f"http://127.0.0.1:{m.group(1)}/"

    yield _start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stderr.close()


class _Server:
    """A tiny HTTP/1.1 server that remembers each client connection."""

    def __init__(self, close_after_response=False):
        peers = self.peers = []
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_GET(self):
                with lock:
                    peers.append(self.client_address)
                body = b"ok\n"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("X-App-Version", "9.9.9")
                self.send_header("X-App-Host", "fake")
                self.end_headers()
                self.wfile.write(body)
                if close_after_response:
                    # close without announcing it (no "Connection: close")
                    self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


# -- validation ------------------------------------------------------------------------

@pytest.mark.parametrize(("url", "addr"), [("http://8.8.8.8/", "8.8.8.8"),
                                           ("http://10.214.0.1/", "10.214.0.1"),
                                           ("http://192.168.1.1:8080/", "192.168.1.1"),
                                           ("http://[::1]/", "::1")])
def test_refuses_non_lab_targets(url, addr):
    with pytest.raises(ValueError, match="refusing") as info:
        TrafficRecorder(url)
    assert addr in str(info.value)


@pytest.mark.parametrize("url", ["http://10.213.0.2/", "http://127.0.0.1:9/",
                                 "http://127.1.2.3/", "http://localhost:8080/x"])
def test_accepts_lab_targets(url):
    rec = TrafficRecorder(url)  # only constructed, nothing is sent
    assert rec.addresses


@pytest.mark.parametrize("kwargs", [{"rate": 2001}, {"rate": 0}, {"duration": 3601},
                                    {"duration": 0}, {"connections": 0},
                                    {"max_requests": 0}])
def test_bounds(kwargs):
    with pytest.raises(ValueError):
        TrafficRecorder("http://127.0.0.1:9/", **kwargs)


def test_refuses_non_http_url():
    with pytest.raises(ValueError):
        TrafficRecorder("https://127.0.0.1/")


def test_target_path():
    assert TrafficRecorder("http://127.0.0.1:9/").target == "/"
    assert TrafficRecorder("http://127.0.0.1:9").target == "/"
    assert TrafficRecorder("http://127.0.0.1:9/sleep?ms=5").target == "/sleep?ms=5"
    assert TrafficRecorder("http://127.0.0.1:9/", path="/healthz").target == "/healthz"


# -- live ------------------------------------------------------------------------------

def test_rate_is_respected_and_records_written(demoapp, tmp_path):
    _ignored, url = demoapp()
    out = tmp_path / "t.jsonl"
    t0 = time.monotonic()
    rec = TrafficRecorder(url, rate=50, duration=1.0, out=str(out))
    summary = rec.run()
    elapsed = time.monotonic() - t0
    assert 0.95 <= elapsed < 2.0
    assert summary.total == 50 and summary.ok == 50 and summary.failed == 0
    assert summary.errors == {}
    assert summary.versions == {"2.0.0": 50}
    assert sum(summary.hosts.values()) == 50
    records = rec.records
    assert len(records) == 50
    span = records[-1]["t"] - records[0]["t"]
    assert 0.85 <= span <= 1.15  # 49 intervals of 20 ms
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 50
    assert set(lines[0]) == {"seq", "t", "latency_ms", "status", "error",
                             "version", "host"}
    assert all(r["status"] == 200 and r["error"] is None for r in lines)
    assert traffic.load_records(str(out)) == lines
    assert summary.latency_p50_ms is not None
    assert summary.latency_p99_ms >= summary.latency_p50_ms
    assert sum(sum(s["versions"].values()) for s in summary.per_second) == 50
    assert summary.first_seen["2.0.0"] <= summary.last_seen["2.0.0"]


def test_max_requests_and_context_manager():
    with _Server() as srv, TrafficRecorder(srv.url, rate=500, max_requests=25) as rec:
        assert rec.wait(5)
    assert rec.summary.total == 25 and rec.summary.ok == 25
    assert rec.summary.versions == {"9.9.9": 25}
    assert rec.summary.hosts == {"fake": 25}


def test_keep_alive_connections_are_reused():
    with _Server() as srv:
        summary = TrafficRecorder(srv.url, rate=400, max_requests=60,
                                  connections=3).run()
        peers = set(srv.peers)
    assert summary.ok == 60
    assert len(srv.peers) == 60
    assert 1 <= len(peers) <= 3  # 60 requests over at most 3 TCP connections


def test_peer_closing_a_reused_connection_counts_as_failure():
    """No silent retries: when the server closes a keep-alive connection
    behind the client's back, the request sent on it is a failure."""
    with _Server(close_after_response=True) as srv:
        summary = TrafficRecorder(srv.url, rate=20, max_requests=4,
                                  connections=1).run()
    assert summary.total == 4
    assert summary.ok == 2 and summary.failed == 2
    assert set(summary.errors) <= {"closed", "reset", "broken_pipe"}
    assert sum(summary.errors.values()) == 2


def test_server_death_is_counted(demoapp, tmp_path):
    proc, url = demoapp()
    out = tmp_path / "t.jsonl"
    rec = TrafficRecorder(url, rate=100, duration=1.2, out=str(out), timeout=1.0)
    rec.start()
    time.sleep(0.5)
    proc.kill()
    proc.wait()
    rec.wait(5)
    summary = rec.stop()
    assert summary.ok > 20
    assert summary.failed > 40
    assert summary.total == summary.ok + summary.failed == 120
    assert len(out.read_text().splitlines()) == 120
    assert set(summary.errors) <= {"refused", "reset", "closed", "broken_pipe"}
    assert "refused" in summary.errors
    failed = [r for r in rec.records if r["error"]]
    assert all(r["status"] is None and r["version"] is None for r in failed)


def test_http_errors_are_failures(demoapp):
    _ignored, url = demoapp("errors", "2.1.0-errors", error_ratio=1.0)
    summary = TrafficRecorder(url, rate=200, max_requests=20).run()
    assert summary.total == 20 and summary.failed == 20 and summary.ok == 0
    assert summary.errors == {"http_500": 20}
    assert summary.versions == {"2.1.0-errors": 20}


def test_timeout_is_a_failure(demoapp):
    _ignored, url = demoapp()
    summary = TrafficRecorder(url, rate=100, max_requests=2, timeout=0.2,
                              path="/sleep?ms=1000").run()
    assert summary.failed == 2 and summary.errors == {"timeout": 2}


def test_summarize_and_share_between():
    records = []
    t0 = 1000.0
    for i in range(40):  # 10/s for 4 s: 1.0.0 for 2 s, then 2.0.0
        records.append({"seq": i, "t": t0 + i * 0.1, "latency_ms": float(i + 1),
                        "status": 200, "error": None,
                        "version": "1.0.0" if i < 20 else "2.0.0",
                        "host": f"h{i % 2}"})
    records.append({"seq": 40, "t": t0 + 4.0, "latency_ms": 5.0, "status": None,
                    "error": "refused", "version": None, "host": None})
    s = traffic.summarize(records, started=t0, ended=t0 + 4.1)
    assert (s.total, s.ok, s.failed) == (41, 40, 1)
    assert s.errors == {"refused": 1}
    assert s.versions == {"1.0.0": 20, "2.0.0": 20}
    assert s.hosts == {"h0": 20, "h1": 20}
    assert s.per_second[0] == {"second": 0, "versions": {"1.0.0": 10}}
    assert s.per_second[2] == {"second": 2, "versions": {"2.0.0": 10}}
    assert s.first_seen["2.0.0"] == pytest.approx(t0 + 2.0)
    assert s.last_seen["1.0.0"] == pytest.approx(t0 + 1.9)
    assert s.latency_p50_ms == 20.0 and s.latency_p99_ms == 40.0
    assert traffic.share_between(records, t0, t0 + 2) == {"1.0.0": 1.0}
    share = traffic.share_between(records, t0 + 1.5, t0 + 2.5)
    assert share == {"1.0.0": 0.5, "2.0.0": 0.5}
    assert traffic.share_between(records, t0 + 10, t0 + 11) == {}
    json.loads(s.to_json())


def test_cli(demoapp, tmp_path):
    _ignored, url = demoapp()
    out = tmp_path / "cli.jsonl"
    proc = subprocess.run([sys.executable, TRAFFIC, "--url", url, "--rate", "40",
                           "--duration", "0.5", "--out", str(out)],
                          check=False, capture_output=True, text=True, timeout=20)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["total"] == 20 and summary["failed"] == 0
    assert len(out.read_text().splitlines()) == 20


def test_cli_exit_1_on_failures():
    with _Server() as srv:
        port = srv.httpd.server_address[1]
    # the server is gone: every request is refused
    proc = subprocess.run([sys.executable, TRAFFIC, "--url", f"http://127.0.0.1:{port}/",
                           "--rate", "20", "--duration", "0.25"],
                          check=False, capture_output=True, text=True, timeout=20)
    assert proc.returncode == 1
    summary = json.loads(proc.stdout)
    assert summary["failed"] == summary["total"] == 5
    assert summary["errors"] == {"refused": 5}


def test_cli_refuses_outside_lab():
    proc = subprocess.run([sys.executable, TRAFFIC, "--url", "http://1.1.1.1/"],
                          check=False, capture_output=True, text=True, timeout=20)
    assert proc.returncode == 2 and "1.1.1.1" in proc.stderr


def test_natural_end_sends_every_scheduled_request(demoapp):
    _ignored, url = demoapp()
    # one connection, 50 ms per request, 100/s: the worker falls behind, but
    # every one of the max_requests is still sent before run() returns
    summary = TrafficRecorder(url, rate=100, max_requests=6, connections=1,
                              path="/sleep?ms=50").run()
    assert summary.total == 6 and summary.ok == 6 and summary.not_sent == 0


def test_early_stop_reports_not_sent(demoapp):
    _ignored, url = demoapp()
    rec = TrafficRecorder(url, rate=100, connections=1, path="/sleep?ms=300")
    with rec:
        time.sleep(0.2)
    s = rec.summary
    assert s.total >= 1 and s.failed == 0
    assert s.not_sent >= 10
    assert s.not_sent + s.total >= 20
