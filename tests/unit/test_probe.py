# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Pure parts of the probe engine: evaluation, state machine, scheduler with
a fake clock and a fake session.  No network."""

from __future__ import annotations

import threading

import pytest
from ansible_collections.safedeploy.fleet.plugins.module_utils._probe import (
    EndpointState,
    ProbeConfigError,
    ProbeResult,
    ProbeSpec,
    RetryPolicy,
    evaluate_response,
    failure_message,
    masked_headers,
    redact_url,
    request_kwargs,
    required_healthy,
    run_probes,
    sensitive_values,
    summarize,
    unique_urls,
    values_match,
)


def spec(**kw):
    return ProbeSpec(**kw).validate()


# ---------------------------------------------------------------- evaluation

def test_status_pass_and_fail():
    assert evaluate_response(spec(), 200, {}, b"", 1) == []
    assert evaluate_response(spec(), 503, {}, b"", 1) == ["status 503 (expected 200)"]
    assert evaluate_response(spec(expected_status=[200, 204]), 500, {}, b"", 1) == [
        "status 500 (expected one of 200, 204)"]


def test_json_checks_match_mismatch_and_missing():
    s = spec(json_checks={"status": "ok", "checks.db": True, "replicas": 3})
    good = b'{"status": "ok", "checks": {"db": true}, "replicas": 3}'
    assert evaluate_response(s, 200, {}, good, 1) == []
    bad = b'{"status": "degraded", "checks": {}, "replicas": 3}'
    reasons = evaluate_response(s, 200, {}, bad, 1)
    assert "JSON check 'status' expected 'ok' got 'degraded'" in reasons
    assert "JSON check 'checks.db' expected true got null (missing)" in reasons
    assert len(reasons) == 2


def test_json_checks_not_json():
    reasons = evaluate_response(spec(json_checks={"status": "ok"}), 200, {}, b"<html>", 1)
    assert len(reasons) == 1
    assert reasons[0].startswith("body is not JSON")
    assert "'status'" in reasons[0]


def test_json_check_bad_expression_is_a_config_error():
    with pytest.raises(ProbeConfigError, match=r"'status\[' is not a valid JMESPath"):
        spec(json_checks={"status[": "ok"})


@pytest.mark.parametrize(("expected", "actual", "ok"), [
    ("ok", "ok", True),
    ("3", 3, True),
    (3, "3", True),
    ("true", True, True),
    (True, True, True),
    (True, 1, False),
    (1, True, False),
    ("ok", None, False),
    ([1, 2], [1, 2], True),
    ({"a": 1}, {"a": 2}, False),
])
def test_values_match(expected, actual, ok):
    assert values_match(expected, actual) is ok


def test_body_contains_headers_latency():
    s = spec(body_contains="READY", expected_headers={"x-app-version": "2.0.0"}, max_latency_ms=500)
    assert evaluate_response(s, 200, {"X-App-Version": "2.0.0"}, b"all READY", 20) == []
    reasons = evaluate_response(s, 200, {"X-App-Version": "1.9.0"}, b"starting", 900)
    assert reasons == [
        "latency 900 ms > 500 ms",
        "header x-app-version expected '2.0.0' got '1.9.0'",
        "body does not contain 'READY'",
    ]
    assert evaluate_response(s, 200, {}, b"READY", 1) == ["header x-app-version expected '2.0.0' but it is missing"]


@pytest.mark.parametrize(("kw", "message"), [
    ({"expected_status": [99]}, "between 100 and 599, got 99"),
    ({"expected_status": []}, "at least one status code"),
    ({"timeout": 0}, "timeout must be a number of seconds greater than 0, got 0"),
    ({"client_key": "/k.pem"}, "client_key='/k.pem' is set but client_cert is not"),
    ({"method": "GE T"}, "method must be an HTTP method name"),
])
def test_spec_validation_names_value(kw, message):
    with pytest.raises(ProbeConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        spec(**kw)


@pytest.mark.parametrize(("kw", "message"), [
    ({"success_threshold": 0}, "success_threshold must be at least 1, got 0"),
    ({"interval": -1}, "interval must be greater than or equal to 0, got -1"),
    ({"failure_threshold": -2}, "failure_threshold must be greater than or equal to 0, got -2"),
])
def test_policy_validation(kw, message):
    with pytest.raises(ProbeConfigError, match=message):
        RetryPolicy(**kw).validate()


def test_request_kwargs_tls_and_body():
    kw = request_kwargs(spec())
    assert kw["verify"] is True and kw["allow_redirects"] is False and kw["timeout"] == 5.0
    assert request_kwargs(spec(ca_path="/ca.pem"))["verify"] == "/ca.pem"
    assert request_kwargs(spec(validate_certs=False, ca_path="/ca.pem"))["verify"] is False
    assert request_kwargs(spec(client_cert="/c.pem", client_key="/k.pem"))["cert"] == ("/c.pem", "/k.pem")
    assert request_kwargs(spec(body={"a": 1}))["json"] == {"a": 1}
    assert request_kwargs(spec(body="x=1"))["data"] == b"x=1"
    assert request_kwargs(spec(use_proxy=False))["proxies"]["http"] is None


# ---------------------------------------------------------------- helpers

def test_min_healthy():
    assert required_healthy(None, 10) == 10
    assert required_healthy("50%", 5) == 3
    assert required_healthy("100%", 7) == 7
    assert required_healthy("0%", 7) == 0
    assert required_healthy(4, 10) == 4
    assert required_healthy("4", 10) == 4
    with pytest.raises(ProbeConfigError, match="min_healthy=11 is more than the 10 endpoint"):
        required_healthy(11, 10)
    with pytest.raises(ProbeConfigError, match="got 'half'"):
        required_healthy("half", 10)
    with pytest.raises(ProbeConfigError, match="at most 100%"):
        required_healthy("150%", 10)


def test_masking_helpers():
    headers = {"Authorization": "Bearer s3cr3t-token", "X-Trace": "abc", "X-Auth-Token": "t0k3n"}
    assert masked_headers(headers) == {"Authorization": "********", "X-Trace": "abc", "X-Auth-Token": "********"}
    values = sensitive_values(headers, ["http://u:pw123@h/x", "http://h/y"])
    assert {"Bearer s3cr3t-token", "s3cr3t-token", "t0k3n", "pw123"} <= values
    assert "abc" not in values
    assert redact_url("http://u:pw123@h:80/x?q=1") == "http://u:********@h:80/x?q=1"
    assert redact_url("http://h/x") == "http://h/x"


def test_unique_urls_and_validation():
    assert unique_urls(["http://a/x", " http://a/x", "https://b/"]) == ["http://a/x", "https://b/"]
    with pytest.raises(ProbeConfigError, match="got 'ftp://a/'"):
        unique_urls(["ftp://a/"])
    with pytest.raises(ProbeConfigError, match="invalid port"):
        unique_urls(["http://a:99999/"])


# ---------------------------------------------------------------- state machine

def feed(policy, outcomes, start=0.0, duration=0.01):
    """Feed ``outcomes`` (True/False/(ok, reason)) at their due times; return state."""
    state = EndpointState("http://h/", policy, start)
    when = start
    for outcome in outcomes:
        ok, reason = (outcome, "" if outcome else "status 503 (expected 200)") if isinstance(outcome, bool) \
            else outcome
        nxt = state.record(ProbeResult(ok=ok, started=when, finished=when + duration,
                                       status=200 if ok else 503, reason=reason))
        if nxt is None:
            break
        when = nxt
    return state


def test_success_threshold_needs_consecutive_passes():
    policy = RetryPolicy(interval=1, deadline=60, success_threshold=3)
    state = feed(policy, [True, True, False, True, True, True, True])
    assert state.healthy is True and state.attempts == 6
    assert state.consecutive_successes == 3


def test_failure_threshold_ends_early():
    policy = RetryPolicy(interval=1, deadline=60, success_threshold=2, failure_threshold=3)
    state = feed(policy, [False, True, False, False, False, True])
    assert state.healthy is False and state.attempts == 5
    assert state.reason == "status 503 (expected 200) (3 consecutive failures, failure_threshold 3)"


def test_deadline_without_failure_threshold():
    policy = RetryPolicy(interval=2, deadline=7)
    state = feed(policy, [False] * 100)
    # attempts at 0, 2, 4, 6; the next (8) would start after the deadline
    assert state.healthy is False and state.attempts == 4
    assert "not healthy within deadline 7 s, 4 attempts" in state.reason
    assert state.reason.startswith("status 503")


def test_deadline_zero_means_one_try():
    assert feed(RetryPolicy(interval=1, deadline=0), [False, True]).attempts == 1
    assert feed(RetryPolicy(interval=1, deadline=0), [True]).healthy is True


def test_deadline_while_flapping_names_last_failure():
    policy = RetryPolicy(interval=1, deadline=4, success_threshold=3)
    state = feed(policy, [True, False, True, True])
    assert state.healthy is False
    assert "only 2 of 3 consecutive passes" in state.reason
    assert "last failure: status 503" in state.reason


def test_watch_passes_when_no_failure():
    policy = RetryPolicy(interval=1, deadline=10, watch_seconds=5)
    state = feed(policy, [True] * 20)
    assert state.healthy is True
    # 1 to become healthy, then probes at 1.01, 2.01 ... up to and including 5.01
    assert state.attempts == 7


def test_watch_catches_crash_with_threshold_zero_as_one():
    policy = RetryPolicy(interval=1, deadline=10, watch_seconds=30, failure_threshold=0)
    state = feed(policy, [False, True, True, True, (False, "connection refused"), True])
    assert state.healthy is False and state.attempts == 5
    assert state.reason.startswith("connection refused (during the liveness watch")
    assert "1 consecutive failure)" in state.reason


def test_watch_tolerates_fewer_failures_than_threshold():
    policy = RetryPolicy(interval=1, deadline=10, watch_seconds=6, failure_threshold=2)
    state = feed(policy, [True, False, True, False, True, True, True, True, True])
    assert state.healthy is True
    state = feed(policy, [True, True, False, False, True])
    assert state.healthy is False and "2 consecutive failures" in state.reason


# ---------------------------------------------------------------- scheduler

class FakeClock:
    def __init__(self):
        self.now = 1000.0
        self.lock = threading.Lock()

    def __call__(self):
        with self.lock:
            return self.now

    def sleep(self, seconds):
        with self.lock:
            self.now += max(0.0, seconds)


class FakeResponse:
    def __init__(self, status, body=b'{"status": "ok"}', headers=None):
        self.status_code = status
        self.content = body
        self.headers = headers or {}


class FakeSession:
    """Per-URL scripts: list of statuses (or exceptions) consumed in order."""

    def __init__(self, scripts):
        self.scripts = {url: list(items) for url, items in scripts.items()}
        self.calls = []
        self.lock = threading.Lock()

    def request(self, method, url, **kwargs):
        with self.lock:
            self.calls.append((method, url, kwargs))
            script = self.scripts[url]
            item = script.pop(0) if len(script) > 1 else script[0]
        if isinstance(item, Exception):
            raise item
        return FakeResponse(item, headers={"X-App-Version": "2.0.0"})


def test_run_probes_with_fake_clock_and_session():
    clock = FakeClock()
    session = FakeSession({
        "http://a/": [503, 503, 200],
        "http://b/": [200],
        "http://c/": [ConnectionRefusedError("[Errno 111] Connection refused")],
    })
    policy = RetryPolicy(interval=1, deadline=5, failure_threshold=3).validate()
    states = run_probes(["http://a/", "http://b/", "http://c/"], spec(), policy, concurrency=2,
                        session=session, clock=clock, sleep=clock.sleep)
    a, b, c = states
    assert (a.healthy, a.attempts, a.version) == (True, 3, "2.0.0")
    assert (b.healthy, b.attempts) == (True, 1)
    assert (c.healthy, c.attempts) == (False, 3)
    assert c.reason.startswith("connection refused (3 consecutive failures")
    # the fake clock only advanced by the intervals slept: two for a and c
    assert clock.now - 1000.0 == pytest.approx(2.0)
    summary = summarize(states, None, 0, 1)
    assert summary["healthy"] is False and summary["healthy_count"] == 2
    assert summary["unhealthy_count"] == 1 and summary["elapsed"] == 1
    assert failure_message(summary).startswith(
        "1 of 3 endpoints unhealthy (2 healthy, 3 needed): http://c/: connection refused")
    assert summarize(states, "60%")["healthy"] is True


def test_failure_message_lists_ten_and_counts_the_rest():
    states = []
    for i in range(13):
        state = EndpointState(f"http://h{i}/", RetryPolicy(), 0)
        state._finish(False, 1, "status 503 (expected 200)")
        states.append(state)
    message = failure_message(summarize(states))
    assert message.count("status 503") == 10
    assert message.endswith("; and 3 more")
    assert "http://h9/" in message and "http://h10/" not in message
