"""demoapp (tests/lab/app/demoapp.py) run as a real subprocess on loopback."""

import http.client
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
APP = os.path.join(ROOT, "tests", "lab", "app", "demoapp.py")
BUILD = os.path.join(ROOT, "tests", "lab", "build_artifacts.py")


class App:
    def __init__(self, proc, port):
        self.proc = proc
        self.port = port

    def conn(self, timeout=5):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def get(self, path, timeout=5):
        c = self.conn(timeout)
        try:
            c.request("GET", path)
            r = c.getresponse()
            body = r.read()
            return r.status, dict(r.getheaders()), body
        finally:
            c.close()

    def json(self, path):
        status, _ignored, body = self.get(path)
        return status, json.loads(body)

    def wait_ready(self, deadline=5.0):
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            status, _ignored, _ignored = self.get("/ready")
            if status == 200:
                return
            time.sleep(0.05)
        raise AssertionError("demoapp never became ready")

    def signal(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)


def write_release(directory, version="2.0.0", flavour="good", **params):
    os.makedirs(directory, exist_ok=True)
    shutil.copy(APP, os.path.join(directory, "demoapp.py"))
    data = {"app": "demoapp", "version": version, "flavour": flavour,
            "startup_seconds": 0.2}
    data.update(params)
    with open(os.path.join(directory, "release.json"), "w") as fh:
        json.dump(data, fh)
    return directory


def launch(script, env=None):
    proc = subprocess.Popen(
        [sys.executable, script, "--port", "0", "--bind", "127.0.0.1"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        env=dict(os.environ, **(env or {})))
    line = proc.stderr.readline()
    m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
    if not m:
        proc.kill()
        raise AssertionError(f"demoapp did not start: {line!r} {proc.stderr.read()!r}")
    return App(proc, int(m.group(1)))


@pytest.fixture
def start(tmp_path):
    apps = []

    def _start(flavour="good", version="2.0.0", env=None, **params):
        d = write_release(str(tmp_path / f"rel-{len(apps)}"), version, flavour, **params)
        app = launch(os.path.join(d, "demoapp.py"), env)
        apps.append(app)
        return app

    yield _start
    for app in apps:
        if app.proc.poll() is None:
            app.proc.kill()
        app.proc.wait()
        app.proc.stderr.close()


def parse_metrics(text):
    """Prometheus text format -> {(name, frozenset(labels)): value}."""
    out = {}
    line_re = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})? (\S+)$')
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = line_re.match(line)
        assert m, f"unparseable metrics line: {line!r}"
        labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m.group(3) or ""))
        out[(m.group(1), labels)] = float(m.group(4))
    return out


def metric(metrics, name, **labels):
    return metrics.get((name, frozenset(labels.items())))


# -- good ------------------------------------------------------------------------

def test_root_headers_and_health(start):
    app = start()
    status, headers, body = app.get("/")
    assert status == 200
    assert headers["X-App-Version"] == "2.0.0"
    assert headers["X-App-Host"] == socket.gethostname()
    assert int(headers["Content-Length"]) == len(body)
    assert json.loads(body) == {"app": "demoapp", "version": "2.0.0",
                                "host": socket.gethostname(), "flavour": "good"}
    assert app.json("/healthz") == (200, {"status": "ok"})
    status, headers, body = app.get("/nope")
    assert status == 404 and json.loads(body)["error"] == "not found"
    assert headers["X-App-Version"] == "2.0.0"


def test_readiness_after_warmup(start):
    app = start(startup_seconds=0.6)
    assert app.json("/ready") == (503, {"status": "starting"})
    assert app.get("/healthz")[0] == 200  # alive while warming up
    app.wait_ready()
    assert app.json("/ready") == (200, {"status": "ok", "version": "2.0.0"})


def test_sleep_endpoint(start):
    app = start()
    t0 = time.monotonic()
    status, _ignored, body = app.get("/sleep?ms=200")
    assert status == 200 and time.monotonic() - t0 >= 0.2
    assert json.loads(body)["slept_ms"] == 200
    assert app.get("/sleep?ms=10001")[0] == 400
    assert app.get("/sleep?ms=abc")[0] == 400


def test_keep_alive(start):
    app = start()
    c = app.conn()
    for _ignored in range(5):
        c.request("GET", "/")
        r = c.getresponse()
        r.read()
        assert r.status == 200 and not r.will_close
    local = c.sock.getsockname()
    c.request("GET", "/healthz")
    c.getresponse().read()
    assert c.sock.getsockname() == local  # same TCP connection
    c.close()


def test_version_read_once_through_realpath(tmp_path):
    """current -> releases/X: switching the link must not change a running
    process's identity; it reports the release it was started from."""
    r1 = write_release(str(tmp_path / "releases" / "1.0.0"), "1.0.0")
    r2 = write_release(str(tmp_path / "releases" / "2.0.0"), "2.0.0")
    current = tmp_path / "current"
    os.symlink(r1, current)
    app = launch(str(current / "demoapp.py"))
    try:
        assert app.get("/")[1]["X-App-Version"] == "1.0.0"
        tmp_link = tmp_path / "current.tmp"
        os.symlink(r2, tmp_link)
        os.replace(tmp_link, current)
        # a second process started through the new link sees 2.0.0 ...
        app2 = launch(str(current / "demoapp.py"))
        try:
            assert app2.get("/")[1]["X-App-Version"] == "2.0.0"
        finally:
            app2.proc.kill()
            app2.proc.wait()
            app2.proc.stderr.close()
        # ... while the first still is what it was started as.
        _ignored, body = app.json("/")
        assert body["version"] == "1.0.0"
    finally:
        app.proc.kill()
        app.proc.wait()
        app.proc.stderr.close()


def test_metrics(start):
    app = start()
    for _ignored in range(3):
        app.get("/")
    app.get("/missing")
    app.get("/healthz")
    app.get("/ready")
    app.get("/metrics")
    status, headers, body = app.get("/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    m = parse_metrics(body.decode())
    assert metric(m, "demoapp_requests_total", code="200", version="2.0.0") == 3
    assert metric(m, "demoapp_requests_total", code="404", version="2.0.0") == 1
    # health, readiness and scrapes are not user traffic
    assert metric(m, "demoapp_request_duration_seconds_count", version="2.0.0") == 4
    buckets = ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "0.75",
               "1", "2.5", "5", "+Inf"]
    values = [metric(m, "demoapp_request_duration_seconds_bucket",
                     version="2.0.0", le=b) for b in buckets]
    assert None not in values
    assert values == sorted(values) and values[-1] == 4
    assert metric(m, "demoapp_request_duration_seconds_sum", version="2.0.0") >= 0
    assert metric(m, "demoapp_requests_in_flight") == 0
    assert metric(m, "demoapp_build_info", version="2.0.0", flavour="good") == 1
    assert metric(m, "process_cpu_seconds_total") > 0
    assert abs(metric(m, "process_start_time_seconds") - time.time()) < 60
    app.get("/")
    m2 = parse_metrics(app.get("/metrics")[2].decode())
    assert metric(m2, "demoapp_requests_total", code="200", version="2.0.0") == 4


def test_metrics_in_flight(start):
    app = start()
    t = threading.Thread(target=app.get, args=("/sleep?ms=600",))
    t.start()
    time.sleep(0.25)
    m = parse_metrics(app.get("/metrics")[2].decode())
    assert metric(m, "demoapp_requests_in_flight") == 1
    t.join()


# -- flavours ------------------------------------------------------------------------

def test_never_ready(start):
    app = start("never_ready", "2.1.0-never-ready")
    time.sleep(0.4)
    assert app.get("/ready")[0] == 503
    status, headers, _ignored = app.get("/")
    assert status == 200 and headers["X-App-Version"] == "2.1.0-never-ready"
    assert app.get("/healthz")[0] == 200


def test_crash(start):
    app = start("crash", "2.1.0-crash", env={"DEMOAPP_CRASH_AFTER": "1.0"})
    app.wait_ready()
    assert app.get("/")[0] == 200
    assert app.proc.wait(timeout=5) == 1


def test_crash_default_from_release_json(start):
    app = start("crash", "2.1.0-crash", crash_after_seconds=0.6)
    assert app.proc.wait(timeout=5) == 1


def test_errors(start):
    app = start("errors", "2.1.0-errors", error_ratio=1.0)
    app.wait_ready()
    status, headers, _ignored = app.get("/")
    assert status == 500 and headers["X-App-Version"] == "2.1.0-errors"
    assert app.get("/healthz")[0] == 200
    assert app.get("/ready")[0] == 200
    m = parse_metrics(app.get("/metrics")[2].decode())
    assert metric(m, "demoapp_requests_total", code="500", version="2.1.0-errors") == 1


def test_errors_ratio(start):
    app = start("errors", "2.1.0-errors", error_ratio=0.5)
    codes = [app.get("/")[0] for _ignored in range(60)]
    assert set(codes) == {200, 500}


def test_errors5_release_answers_500_to_about_5_percent(start):
    # the lab's 2.1.0-errors5 artifact: the errors flavour at 5 %, as build_artifacts writes it
    spec = importlib.util.spec_from_file_location("lab_build_artifacts", BUILD)
    build_artifacts = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_artifacts)
    flavour, params = build_artifacts.VERSIONS["2.1.0-errors5"]
    assert (flavour, params) == ("errors", {"error_ratio": 0.05})
    app = start(flavour, "2.1.0-errors5", **params)
    app.wait_ready()
    conn = app.conn()
    codes = []
    for _ignored in range(600):
        conn.request("GET", "/")
        response = conn.getresponse()
        response.read()
        codes.append(response.status)
    conn.close()
    assert set(codes) == {200, 500}
    # 30 expected; 6..90 is more than four standard deviations either side
    assert 6 <= codes.count(500) <= 90, codes.count(500)
    # probes never fail
    assert {app.get("/ready")[0], app.get("/healthz")[0]} == {200}


def test_slow(start):
    app = start("slow", "2.1.0-slow", slow_ratio=1.0, slow_seconds=0.3)
    t0 = time.monotonic()
    assert app.get("/")[0] == 200
    assert time.monotonic() - t0 >= 0.3
    t0 = time.monotonic()
    assert app.get("/healthz")[0] == 200
    assert time.monotonic() - t0 < 0.3
    m = parse_metrics(app.get("/metrics")[2].decode())
    assert metric(m, "demoapp_request_duration_seconds_bucket",
                  version="2.1.0-slow", le="0.25") == 0
    assert metric(m, "demoapp_request_duration_seconds_bucket",
                  version="2.1.0-slow", le="0.5") == 1


def test_degraded(start):
    app = start("degraded", "2.1.0-degraded")
    app.wait_ready()
    assert app.json("/ready") == (200, {"status": "degraded", "version": "2.1.0-degraded"})


def test_unknown_flavour_refuses_to_start(tmp_path):
    d = write_release(str(tmp_path / "x"), flavour="weird")
    proc = subprocess.run([sys.executable, os.path.join(d, "demoapp.py"), "--port", "0"],
                          check=False, capture_output=True, text=True, timeout=10)
    assert proc.returncode != 0 and "unknown flavour" in proc.stderr


# -- stopping ------------------------------------------------------------------------

def _background_get(app, path, result):
    try:
        result["response"] = app.get(path, timeout=10)
    except Exception as exc:  # noqa: BLE001
        result["error"] = exc


def test_sigterm_drains_in_flight_then_exits(start):
    app = start()
    app.wait_ready()
    idle = app.conn()
    idle.request("GET", "/")
    idle.getresponse().read()
    result = {}
    t = threading.Thread(target=_background_get, args=(app, "/sleep?ms=1200", result))
    t.start()
    time.sleep(0.3)
    t_term = time.monotonic()
    app.signal(signal.SIGTERM)
    time.sleep(0.2)
    # a request on an existing keep-alive connection: readiness is down, and
    # the connection is closed after the response
    idle.request("GET", "/ready")
    r = idle.getresponse()
    assert json.loads(r.read()) == {"status": "stopping"}
    assert r.status == 503
    assert r.getheader("Connection") == "close" and r.will_close
    idle.close()
    # no new connections
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", app.port), timeout=2).close()
    t.join()
    assert "error" not in result, result
    status, headers, _ignored = result["response"]
    assert status == 200 and headers["X-App-Version"] == "2.0.0"
    assert app.proc.wait(timeout=5) == 0
    assert time.monotonic() - t_term < 3  # idle keep-alive did not hold it up
    log = app.proc.stderr.read()
    assert "stopped on SIGTERM" in log


def test_sigint_same_as_sigterm(start):
    app = start()
    app.wait_ready()
    app.signal(signal.SIGINT)
    assert app.proc.wait(timeout=5) == 0


def test_grace_is_bounded(start):
    app = start(grace_seconds=0.5)
    app.wait_ready()
    result = {}
    t = threading.Thread(target=_background_get, args=(app, "/sleep?ms=5000", result))
    t.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    app.signal(signal.SIGTERM)
    assert app.proc.wait(timeout=5) == 0
    assert time.monotonic() - t0 < 2
    t.join()
    assert "error" in result  # cut off at the end of the grace period


def test_nograceful_drops_in_flight(start):
    app = start("nograceful", "2.0.0-nograceful")
    app.wait_ready()
    result = {}
    t = threading.Thread(target=_background_get, args=(app, "/sleep?ms=2000", result))
    t.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    app.signal(signal.SIGTERM)
    app.proc.wait(timeout=5)
    assert time.monotonic() - t0 < 1
    t.join()
    assert "error" in result, result
    assert isinstance(result["error"], (http.client.RemoteDisconnected,
                                        ConnectionResetError))
