# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""plugins/module_utils/_metrics.py: templates, thresholds, verdicts, providers (fake Prometheus on loopback)."""

from __future__ import annotations

import math
import re
import socket

import pytest
from ansible_collections.safedeploy.fleet.plugins.module_utils import _metrics as m
from metrics_fixture import FakePrometheus

VALUES = m.template_values(["web1"], ["web2", "web3"], "15s", "2.0.0", "demoapp")

# Substrings of the default queries, canary (web1) and baseline (web2|web3).
SUCCESS = 'code!~"5.."'
LATENCY = "histogram_quantile"
SAT_CANARY = 'requests_in_flight{instance=~"web1"}'
SAT_STABLE = 'requests_in_flight{instance=~"web2|web3"}'
REQUESTS = "increase("


def healthy(**over):
    answers = {REQUESTS: 500, SUCCESS: 100, LATENCY: 12.5, SAT_CANARY: 0.2, SAT_STABLE: 0.1}
    answers.update(over)
    return answers


def closed_port():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def run_default(answers, min_requests=20, **http):
    with FakePrometheus(answers) as prom:
        provider = m.make_provider("prometheus", prom.url, m.HTTPSettings(timeout=5, **http))
        result = m.analyse(provider, m.default_metrics(), VALUES, m.DEFAULT_REQUESTS_QUERY, min_requests)
    return result, prom


# ---------------------------------------------------------------- templates
def test_promql_regex_escapes_and_joins():
    assert m.promql_regex(["web1", "web2"]) == "web1|web2"
    # a dot is a regex special: escaped, and the backslash doubled for the PromQL string
    assert m.promql_regex(["10.0.0.1:8080"]) == "10\\\\.0\\\\.0\\\\.1:8080"
    assert m.promql_regex(['a"b']) == 'a\\"b'
    assert m.promql_regex([]) == ""


def test_render_replaces_only_known_placeholders():
    query = 'sum(rate(x{instance=~"${canary}",path=~"/a$"}[${window}])) / ${stable}'
    out = m.render(query, VALUES)
    assert out == 'sum(rate(x{instance=~"web1",path=~"/a$"}[15s])) / web2|web3'
    assert m.render("${canary_list} ${stable_list} ${version} ${app}", VALUES) == "web1 web2,web3 2.0.0 demoapp"
    with pytest.raises(m.MetricsConfigError, match=r"unknown placeholder \$\{canarie\}"):
        m.render("x{i=~\"${canarie}\"}", VALUES)


def test_swap_to_baseline():
    assert m.swap_to_baseline('a{i=~"${canary}"} ${canary_list}') == 'a{i=~"${stable}"} ${stable_list}'


@pytest.mark.parametrize("window", ["15s", "1m", "1m30s", "500ms", "2h"])
def test_window_accepts_durations(window):
    assert m.check_window(window) == window


@pytest.mark.parametrize("window", ["", "1 m", "fifteen", "15", "-1m", "1m; drop"])
def test_window_refuses_the_rest(window):
    with pytest.raises(m.MetricsConfigError, match="window must be a Prometheus duration"):
        m.check_window(window)


# ---------------------------------------------------------------- metric specs
def test_normalize_fills_baseline_query():
    spec = m.normalize_metric({"name": "cpu", "query": 'rate(c{i=~"${canary}"}[1m])', "max_vs_baseline": 1.2})
    assert spec["baseline_query"] == 'rate(c{i=~"${stable}"}[1m])'
    assert spec["baseline_tolerance"] == 0.0


@pytest.mark.parametrize("spec, error", [
    ({"query": "q", "max": 1}, "needs a name"),
    ({"name": "x", "max": 1}, "needs a query"),
    ({"name": "x", "query": "q"}, "at least one threshold"),
    ({"name": "x", "query": "q", "min": 5, "max": 1}, "min 5 is above max 1"),
    ({"name": "x", "query": "q", "max_vs_baseline": 0}, "must be > 0"),
    ({"name": "x", "query": "q", "max": "lots"}, "max must be a number"),
    ({"name": "x", "query": "q", "max": True}, "max must be a number"),
    ({"name": "x", "query": "q", "max": 1, "threshold": 3}, "unknown key"),
    ({"name": "x", "query": "q", "max_vs_baseline": 1, "baseline_tolerance": -1}, "baseline_tolerance must be >= 0"),
    ("nope", "must be a mapping"),
])
def test_normalize_refuses_bad_specs(spec, error):
    with pytest.raises(m.MetricsConfigError, match=error):
        m.normalize_metric(spec)


def test_normalize_metrics_refuses_empty_and_duplicates():
    with pytest.raises(m.MetricsConfigError, match="no metric"):
        m.normalize_metrics([])
    with pytest.raises(m.MetricsConfigError, match="unique: a"):
        m.normalize_metrics([{"name": "a", "query": "q", "max": 1}, {"name": "a", "query": "r", "max": 2}])


def test_default_metrics_are_valid_and_the_documented_thresholds():
    metrics = {x["name"]: x for x in m.normalize_metrics(m.default_metrics())}
    assert metrics["success_rate"]["min"] == 99
    assert metrics["latency_p99"]["max"] == 500
    assert metrics["saturation"]["max_vs_baseline"] == 1.5
    assert metrics["saturation"]["baseline_tolerance"] == 1
    for metric in metrics.values():
        rendered = m.render(metric["query"], VALUES)
        assert "${" not in rendered and 'instance=~"web1"' in rendered and "[15s]" in rendered
    assert 'instance=~"web2|web3"' in m.render(metrics["saturation"]["baseline_query"], VALUES)


# ---------------------------------------------------------------- evaluate
def metric(**spec):
    return m.normalize_metric({"name": "x", "query": "q", **spec})


@pytest.mark.parametrize("spec, value, baseline, verdict", [
    ({"min": 99}, 99.0, None, m.PASS),
    ({"min": 99}, 98.99, None, m.FAIL),
    ({"max": 500}, 500.0, None, m.PASS),
    ({"max": 500}, 500.1, None, m.FAIL),
    ({"min": 1, "max": 2}, 1.5, None, m.PASS),
    ({"max_vs_baseline": 1.5}, 1.5, 1.0, m.PASS),
    ({"max_vs_baseline": 1.5}, 1.51, 1.0, m.FAIL),
    ({"max_vs_baseline": 1.5, "baseline_tolerance": 1}, 2.5, 1.0, m.PASS),
    ({"max_vs_baseline": 1.5, "baseline_tolerance": 1}, 2.6, 1.0, m.FAIL),
    ({"max_vs_baseline": 1.5, "baseline_tolerance": 1}, 0.9, 0.0, m.PASS),
    ({"max": 5}, None, None, m.INCONCLUSIVE),
    ({"max": 5}, math.nan, None, m.INCONCLUSIVE),
    ({"max_vs_baseline": 2}, 1.0, None, m.INCONCLUSIVE),
    ({"max_vs_baseline": 2}, 1.0, math.nan, m.INCONCLUSIVE),
    # a fixed threshold already broken is a failure even without a baseline
    ({"max": 5, "max_vs_baseline": 2}, 9.0, None, m.FAIL),
])
def test_evaluate_metric(spec, value, baseline, verdict):
    assert m.evaluate_metric(metric(**spec), value, baseline)["verdict"] == verdict


def test_evaluate_reason_names_metric_value_and_threshold():
    out = m.evaluate_metric(m.normalize_metric({"name": "success_rate", "query": "q", "min": 99, "unit": "%"}), 80.25)
    assert out["reason"] == "success_rate = 80.25% is below the minimum 99%"
    out = m.evaluate_metric(m.normalize_metric({"name": "latency_p99", "query": "q", "max": 500, "unit": "ms"}), 912.0)
    assert out["reason"] == "latency_p99 = 912 ms is above the maximum 500 ms"
    out = m.evaluate_metric(metric(max_vs_baseline=1.5, baseline_tolerance=1), 4.0, 2.0)
    assert out["limit"] == 4.0 and out["verdict"] == m.PASS
    out = m.evaluate_metric(metric(max_vs_baseline=1.5, baseline_tolerance=1), 4.5, 2.0)
    assert "x = 4.5 is above 4, the baseline's 2 x 1.5 + 1" in out["reason"]


def test_verdict_precedence():
    ok = {"name": "a", "verdict": m.PASS, "reason": "a ok"}
    bad = {"name": "b", "verdict": m.FAIL, "reason": "b = 3 is above the maximum 1"}
    unknown = {"name": "c", "verdict": m.INCONCLUSIVE, "reason": "c: no data for the canary"}
    assert m.verdict_of([ok], 100, 20)[0] == m.PASS
    assert m.verdict_of([ok, bad, unknown], 100, 20) == (m.FAIL, "fail: b = 3 is above the maximum 1", ["b"])
    assert m.verdict_of([ok, unknown], 100, 20)[0] == m.INCONCLUSIVE
    verdict, message, failed = m.verdict_of([ok, bad], 7, 20)
    assert (verdict, failed) == (m.INCONCLUSIVE, [])
    assert "too few requests" in message and "7 in the window, min_requests is 20" in message
    assert "measured anyway: b = 3" in message
    assert "no data in the window" in m.verdict_of([ok], None, 20)[1]
    assert m.verdict_of([ok], None, 0)[0] == m.PASS
    verdict, message, _ignored = m.verdict_of([], None, 0, provider_error="cannot reach x")
    assert verdict == m.INCONCLUSIVE and "unreachable" in message and "cannot reach x" in message


# ---------------------------------------------------------------- parsing
def test_parse_prometheus():
    vector = {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "0.25"]}]}}
    assert m.parse_prometheus(vector) == 0.25
    assert m.parse_prometheus({"status": "success", "data": {"resultType": "scalar", "result": [1, "3"]}}) == 3.0
    with pytest.raises(m.NoData):
        m.parse_prometheus({"status": "success", "data": {"resultType": "vector", "result": []}})
    with pytest.raises(m.NoData):
        m.parse_prometheus({"status": "success", "data": {"resultType": "vector",
                                                          "result": [{"metric": {}, "value": [1, "NaN"]}]}})
    with pytest.raises(m.MetricsConfigError, match="returned 2 series"):
        m.parse_prometheus({"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {"instance": "a"}, "value": [1, "1"]}, {"metric": {"instance": "b"}, "value": [1, "2"]}]}}, "q")
    with pytest.raises(m.MetricsConfigError, match="returned a matrix"):
        m.parse_prometheus({"status": "success", "data": {"resultType": "matrix", "result": []}}, "q")
    with pytest.raises(m.ProviderError, match="parse error"):
        m.parse_prometheus({"status": "error", "error": "parse error"}, "q")


# ---------------------------------------------------------------- against a fake Prometheus
def test_default_analysis_passes_a_healthy_canary():
    result, prom = run_default(healthy())
    assert result["verdict"] == m.PASS, result["message"]
    assert result["requests"] == 500
    assert [x["name"] for x in result["metrics"]] == ["success_rate", "latency_p99", "saturation"]
    sat = result["metrics"][2]
    assert sat["value"] == 0.2 and sat["baseline"] == 0.1 and sat["limit"] == pytest.approx(1.15)
    queries = [r["query"] for r in prom.requests]
    assert any('instance=~"web2|web3"' in q for q in queries)
    assert all("${" not in q for q in queries)
    assert len(queries) == 5  # requests, success, latency, saturation canary + baseline


def test_errors_fail_on_success_rate():
    result, _ignored = run_default(healthy(**{SUCCESS: 80.4}))
    assert result["verdict"] == m.FAIL
    assert result["failed_metrics"] == ["success_rate"]
    assert "success_rate = 80.4% is below the minimum 99%" in result["message"]


def test_slow_fails_on_latency():
    result, _ignored = run_default(healthy(**{LATENCY: 937.5}))
    assert result["verdict"] == m.FAIL and result["failed_metrics"] == ["latency_p99"]
    assert "latency_p99 = 937.5 ms is above the maximum 500 ms" in result["message"]


def test_saturation_against_baseline():
    result, _ignored = run_default(healthy(**{SAT_CANARY: 4.0, SAT_STABLE: 1.0}))
    assert result["verdict"] == m.FAIL and result["failed_metrics"] == ["saturation"]
    assert "saturation = 4 requests is above 2.5 requests, the baseline's 1 requests x 1.5 + 1" in result["message"]


def test_too_few_requests_is_inconclusive():
    result, _ignored = run_default(healthy(**{REQUESTS: 3, SUCCESS: 66.7}))
    assert result["verdict"] == m.INCONCLUSIVE and result["failed_metrics"] == []
    assert "too few requests" in result["message"]
    assert result["metrics"][0]["verdict"] == m.FAIL  # still measured and reported


def test_no_data_is_inconclusive():
    result, _ignored = run_default({})
    assert result["verdict"] == m.INCONCLUSIVE
    result, _ignored = run_default(healthy(**{LATENCY: "NaN"}), min_requests=0)
    assert result["verdict"] == m.INCONCLUSIVE
    assert "latency_p99: no data for the canary" in result["message"]


def test_unreachable_provider_is_inconclusive():
    provider = m.make_provider("prometheus", f"http://127.0.0.1:{closed_port()}", m.HTTPSettings(timeout=2))
    result = m.analyse(provider, m.default_metrics(), VALUES, m.DEFAULT_REQUESTS_QUERY, 20)
    assert result["verdict"] == m.INCONCLUSIVE
    assert "unreachable" in result["message"] and "Connection refused" in result["message"]
    assert result["provider_error"]


def test_provider_error_answer_is_inconclusive():
    with FakePrometheus(healthy(), status=400) as prom:
        provider = m.make_provider("prometheus", prom.url, m.HTTPSettings(timeout=5))
        result = m.analyse(provider, m.default_metrics(), VALUES, m.DEFAULT_REQUESTS_QUERY, 20)
    assert result["verdict"] == m.INCONCLUSIVE
    assert "HTTP 400: parse error at char 3" in result["message"]


def test_several_series_is_a_config_error():
    with FakePrometheus({SUCCESS: [99, 100]}) as prom:
        provider = m.make_provider("prometheus", prom.url, m.HTTPSettings(timeout=5))
        with pytest.raises(m.MetricsConfigError, match="aggregate it"):
            m.analyse(provider, m.default_metrics(), VALUES, None, 0)


def test_bearer_token_and_basic_auth_are_sent():
    _ignored, prom = run_default(healthy(), bearer_token="tok-123")
    assert {r["headers"]["authorization"] for r in prom.requests} == {"Bearer tok-123"}
    _ignored, prom = run_default(healthy(), username="ann", password="pw")
    assert {r["headers"]["authorization"] for r in prom.requests} == {"Basic YW5uOnB3"}


def test_http_settings_checks():
    with pytest.raises(m.MetricsConfigError, match="either bearer_token or username"):
        m.HTTPSettings(bearer_token="t", username="u")
    with pytest.raises(m.MetricsConfigError, match="password needs a username"):
        m.HTTPSettings(password="p")
    with pytest.raises(m.MetricsConfigError, match="timeout"):
        m.HTTPSettings(timeout=0)
    assert m.HTTPSettings().context.verify_mode.name == "CERT_REQUIRED"
    assert m.HTTPSettings(validate_certs=False).context.verify_mode.name == "CERT_NONE"
    with pytest.raises(m.MetricsConfigError, match="http:// or https://"):
        m.HTTPSettings().get_json("file:///etc/passwd")


def test_https_with_an_unknown_certificate_is_refused(tmp_path):
    # A TLS server with a self-signed certificate: verified by default, so the
    # provider is unreachable (inconclusive), and the error says why.
    ssl = pytest.importorskip("ssl")
    import subprocess
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    key, cert = tmp_path / "k.pem", tmp_path / "c.pem"
    made = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                           "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                           "-addext", "subjectAltName=IP:127.0.0.1"], capture_output=True, check=False)
    if made.returncode:
        pytest.skip("openssl cannot make a certificate here")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            body = b'{"status":"success","data":{"resultType":"scalar","result":[1,"1"]}}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = HTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"https://127.0.0.1:{server.server_address[1]}"
        spec = [{"name": "one", "query": "q", "max": 5}]
        verified = m.analyse(m.make_provider("prometheus", url, m.HTTPSettings(timeout=5)), spec, VALUES)
        assert verified["verdict"] == m.INCONCLUSIVE
        assert re.search(r"CERTIFICATE_VERIFY_FAILED|certificate verify failed", verified["message"])
        trusted = m.analyse(m.make_provider("prometheus", url, m.HTTPSettings(timeout=5, ca_path=str(cert))),
                            spec, VALUES)
        assert trusted["verdict"] == m.PASS, trusted["message"]
        unverified = m.analyse(m.make_provider("prometheus", url, m.HTTPSettings(timeout=5, validate_certs=False)),
                               spec, VALUES)
        assert unverified["verdict"] == m.PASS
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------- web provider
DOC = {"canary": {"requests": 420, "error_percent": 0.4, "p99_ms": 180},
       "stable": {"p99_ms": 170}, "hosts": [{"name": "web1", "p99": 190}]}


def web_metrics(**over):
    metrics = [
        {"name": "error_rate", "query": "canary.error_percent", "max": 1},
        {"name": "latency_p99", "query": "canary.p99_ms", "baseline_query": "stable.p99_ms",
         "max": 500, "max_vs_baseline": 1.2},
    ]
    metrics[0].update(over)
    return metrics


def test_web_provider_reads_jmespath_and_fetches_once():
    with FakePrometheus(json_doc=DOC) as srv:
        provider = m.make_provider("web", srv.url + "/canary?hosts=${canary_list}",
                                   m.HTTPSettings(timeout=5))
        # the module renders the URL; here it is given rendered
        provider.base = m.render(provider.base, VALUES)
        result = m.analyse(provider, web_metrics(), VALUES, "canary.requests", 100)
        assert result["verdict"] == m.PASS, result["message"]
        assert result["requests"] == 420
        assert result["metrics"][1]["baseline"] == 170
        assert len(srv.requests) == 1 and srv.requests[0]["path"] == "/canary"

        provider = m.make_provider("web", srv.url, m.HTTPSettings(timeout=5))
        result = m.analyse(provider, web_metrics(max=0.1), VALUES, "canary.requests", 100)
        assert result["verdict"] == m.FAIL and "error_rate = 0.4 is above the maximum 0.1" in result["message"]

        provider = m.make_provider("web", srv.url, m.HTTPSettings(timeout=5))
        one = [{"name": "host_p99", "query": "hosts[?name=='web1'].p99", "max": 200}]
        assert m.analyse(provider, one, VALUES)["metrics"][0]["value"] == 190

        provider = m.make_provider("web", srv.url, m.HTTPSettings(timeout=5))
        missing = [{"name": "nothing", "query": "canary.nope", "max": 1}]
        assert m.analyse(provider, missing, VALUES)["verdict"] == m.INCONCLUSIVE

        provider = m.make_provider("web", srv.url, m.HTTPSettings(timeout=5))
        with pytest.raises(m.MetricsConfigError, match="bad JMESPath"):
            m.analyse(provider, [{"name": "bad", "query": "canary.[", "max": 1}], VALUES)


def test_unknown_provider():
    with pytest.raises(m.MetricsConfigError, match="provider must be one of"):
        m.make_provider("graphite", "http://x", m.HTTPSettings())
