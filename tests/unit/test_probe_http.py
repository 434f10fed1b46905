# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The probe engine against real HTTP(S) servers on 127.0.0.1."""

from __future__ import annotations

import time

import pytest
from ansible_collections.safedeploy.fleet.plugins.module_utils._probe import (
    ProbeSpec,
    RetryPolicy,
    failure_message,
    probe_once,
    run_probes,
    summarize,
)
from test_probe_support import (
    Reply,
    ScriptedServer,
    closed_port,
    make_self_signed,
    server_tls_context,
)

FAST = {"interval": 0.05, "deadline": 3}


def check(urls, policy=None, concurrency=8, **spec_kw):
    spec_kw.setdefault("timeout", 2)
    spec = ProbeSpec(**spec_kw).validate()
    policy = (policy or RetryPolicy(**FAST)).validate()
    return run_probes(urls if isinstance(urls, list) else [urls], spec, policy, concurrency=concurrency)


@pytest.fixture
def server():
    servers = []

    def factory(script=None, tls_context=None):
        srv = ScriptedServer(script, tls_context)
        servers.append(srv)
        return srv

    yield factory
    for srv in servers:
        srv.kill()


def test_503_then_200_with_success_threshold(server):
    srv = server(lambda n: Reply(503) if n <= 2 else Reply(200, headers={"X-App-Version": "2.0.0"}))
    (state,) = check(srv.url, RetryPolicy(interval=0.05, deadline=3, success_threshold=2))
    assert state.healthy is True
    assert state.attempts == 4 and state.consecutive_successes == 2
    assert state.last_status == 200 and state.version == "2.0.0" and state.reason == ""


def test_degraded_json_names_expression_expected_and_actual(server):
    srv = server(Reply(200, {"status": "degraded", "checks": {"db": False}}))
    (state,) = check(srv.url, RetryPolicy(interval=0.05, deadline=0.3),
                     json_checks={"status": "ok", "checks.db": True})
    assert state.healthy is False
    assert "JSON check 'status' expected 'ok' got 'degraded'" in state.reason
    assert "JSON check 'checks.db' expected true got false" in state.reason
    assert "not healthy within deadline 0.3 s" in state.reason


def test_failure_threshold_exits_early_not_at_deadline(server):
    srv = server(Reply(503))
    began = time.monotonic()
    (state,) = check(srv.url, RetryPolicy(interval=0.05, deadline=30, failure_threshold=3))
    assert time.monotonic() - began < 2
    assert state.healthy is False and state.attempts == 3 and srv.count == 3
    assert state.reason == "status 503 (expected 200) (3 consecutive failures, failure_threshold 3)"


def test_deadline_is_respected(server):
    srv = server(Reply(500))
    began = time.monotonic()
    (state,) = check(srv.url, RetryPolicy(interval=0.1, deadline=0.5))
    took = time.monotonic() - began
    assert 0.3 < took < 2.5
    assert state.healthy is False and 4 <= state.attempts <= 6


def test_connection_refused():
    url = f"http://127.0.0.1:{closed_port()}/healthz"
    (state,) = check(url, RetryPolicy(interval=0.05, deadline=5, failure_threshold=2))
    assert state.healthy is False and state.last_status is None
    assert state.reason.startswith("connection refused")


def test_timeout_and_latency_bound(server):
    slow = server(Reply(200, delay=0.6))
    (state,) = check(slow.url, RetryPolicy(interval=0, deadline=0), timeout=0.2)
    assert state.healthy is False and state.reason.startswith("timeout after 0.2 s")
    (state,) = check(slow.url, RetryPolicy(interval=0, deadline=0), max_latency_ms=300)
    assert state.healthy is False and state.last_status == 200
    assert state.reason.startswith("latency ") and "ms > 300 ms" in state.reason
    assert state.latency_ms >= 600


def test_expected_headers_and_body_contains(server):
    srv = server(Reply(200, "status=READY", {"X-App-Version": "1.9.0"}))
    (state,) = check(srv.url, RetryPolicy(interval=0, deadline=0),
                     expected_headers={"X-App-Version": "2.0.0"}, body_contains="READY")
    assert state.healthy is False and state.version == "1.9.0"
    assert state.reason.startswith("header X-App-Version expected '2.0.0' got '1.9.0'")
    (state,) = check(srv.url, RetryPolicy(interval=0, deadline=0),
                     expected_headers={"x-app-version": "1.9.0"}, body_contains="READY")
    assert state.healthy is True


def test_watch_catches_a_crash_after_becoming_healthy(server):
    srv = server(Reply(200))
    srv.kill_after(0.4)
    began = time.monotonic()
    (state,) = check(srv.url, RetryPolicy(interval=0.05, deadline=3, watch_seconds=5))
    assert time.monotonic() - began < 2.5  # ended at the crash, not after the watch
    assert state.healthy is False and state.attempts > 3
    # refused once the port is closed; reset or closed when the close hits a
    # connection that was already accepted
    assert state.last_status is None
    assert state.reason.split(" (")[0] in (
        "connection refused", "connection reset", "connection closed without a response")
    assert "(during the liveness watch" in state.reason


def test_watch_passes_for_a_stable_endpoint(server):
    srv = server(Reply(200))
    began = time.monotonic()
    (state,) = check(srv.url, RetryPolicy(interval=0.1, deadline=3, watch_seconds=0.5, failure_threshold=2))
    assert 0.45 < time.monotonic() - began < 2.5
    assert state.healthy is True and 5 <= state.attempts <= 8


def test_headers_are_sent_and_method_body(server):
    srv = server(Reply(200))
    (state,) = check(srv.url, RetryPolicy(interval=0, deadline=0), method="POST", body={"ping": 1},
                     headers={"Authorization": "Bearer s3cret", "X-Trace": "t1"})
    assert state.healthy is True
    request = srv.requests[0]
    assert request["method"] == "POST" and request["body"] == b'{"ping": 1}'
    assert request["headers"]["Authorization"] == "Bearer s3cret"
    assert "s3cret" not in repr(state.as_dict())


def test_redirect_not_followed_by_default(server):
    target = server(Reply(200))
    redirect = server(Reply(302, "", {"Location": target.url}))
    (state,) = check(redirect.url, RetryPolicy(interval=0, deadline=0))
    assert state.healthy is False and state.reason.startswith("status 302")
    (state,) = check(redirect.url, RetryPolicy(interval=0, deadline=0), follow_redirects=True)
    assert state.healthy is True


def test_probes_run_concurrently(server):
    servers = [server(Reply(200, delay=0.3)) for _index in range(30)]
    began = time.monotonic()
    states = check([s.url for s in servers], RetryPolicy(interval=0.05, deadline=5), concurrency=30)
    took = time.monotonic() - began
    assert all(s.healthy for s in states)
    assert took < 3.0, f"30 x 0.3 s probes took {took:.2f} s: not concurrent (serially: 9 s)"


def test_mixed_fleet_summary_and_message(server):
    good = [server(Reply(200)) for _index in range(3)]
    bad = server(Reply(503))
    refused = f"http://127.0.0.1:{closed_port()}/healthz"
    states = check([g.url for g in good] + [bad.url, refused],
                   RetryPolicy(interval=0.05, deadline=3, failure_threshold=2))
    summary = summarize(states, "60%")
    assert summary["healthy"] is True and summary["healthy_count"] == 3 and summary["min_healthy"] == 3
    summary = summarize(states)
    assert summary["healthy"] is False
    message = failure_message(summary)
    assert message.startswith("2 of 5 endpoints unhealthy (3 healthy, 5 needed): ")
    assert f"{bad.url}: status 503 (expected 200)" in message
    assert f"{refused}: connection refused" in message


# ---------------------------------------------------------------- TLS

@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    files = make_self_signed(tmp_path_factory.mktemp("tls"))
    if files is None:
        pytest.skip("openssl is not installed")
    return files


def test_tls_verification_is_on_by_default(server, tls_files):
    cert, key = tls_files
    srv = server(Reply(200), tls_context=server_tls_context(cert, key))
    assert srv.url.startswith("https://")
    (state,) = check(srv.url, RetryPolicy(interval=0, deadline=0))
    assert state.healthy is False
    assert state.reason.startswith("TLS error: certificate verify failed (not healthy within deadline 0 s, 1 attempt)")


@pytest.mark.filterwarnings("ignore:Unverified HTTPS request")
def test_tls_with_ca_path_or_without_verification(server, tls_files):
    cert, key = tls_files
    srv = server(Reply(200), tls_context=server_tls_context(cert, key))
    (state,) = check(srv.url, RetryPolicy(interval=0, deadline=0), ca_path=str(cert))
    assert state.healthy is True, state.reason
    (state,) = check(srv.url, RetryPolicy(interval=0, deadline=0), validate_certs=False)
    assert state.healthy is True, state.reason


def test_probe_once_real_session(server):
    import requests

    srv = server(Reply(200, headers={"X-App-Version": "3.1.4"}))
    result = probe_once(requests.Session(), srv.url, ProbeSpec().validate())
    assert result.ok and result.status == 200 and result.version == "3.1.4"
    assert result.latency_ms is not None and result.latency_ms >= 0
