# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""plugins/module_utils/_lbstats.py: the analysis of HAProxy's per-server counters.

The arithmetic on written counters first (one failure kind at a time, two
load balancers, a reload, an unreadable load balancer, min_requests, the
thresholds), then on counters read from a real HAProxy (haproxy_fixture).
"""

from __future__ import annotations

import http.client
import math

import pytest
from ansible_collections.safedeploy.fleet.plugins.module_utils import _lbstats as lbs
from ansible_collections.safedeploy.fleet.plugins.module_utils._haproxy import STAT_COUNTERS, STAT_GAUGES
from ansible_collections.safedeploy.fleet.plugins.modules import haproxy_info
from haproxy_fixture import Backend, HAProxy, free_port, run_module


def server(**numbers):
    counters = dict.fromkeys(STAT_COUNTERS + STAT_GAUGES, 0)
    counters["slim"] = None
    counters.update(numbers)
    return counters


def lb(servers, pid=100, uptime=1000):
    return {"error": None, "process": {"pid": pid, "uptime_sec": uptime}, "servers": servers}


def down(kind="connection", msg="cannot connect to HAProxy runtime API /run/haproxy/admin.sock: refused"):
    return {"error": {"kind": kind, "msg": msg}}


def metric(result, name):
    return next(m for m in result["metrics"] if m["name"] == name)


# ---------------------------------------------------------------- error rate, one failure kind at a time
# Deltas as HAProxy 2.6 counts them (measured against a real one, see the end of this file).


def test_a_500_is_one_answer_and_one_error():
    assert lbs.error_counts(server(hrsp_2xx=99, hrsp_5xx=1)) == (100, 1)


def test_a_refused_connection_is_one_request_and_one_error():
    # HAProxy answers the client 503 itself: in the backend's hrsp_5xx, not the server's
    assert lbs.error_counts(server(hrsp_2xx=99, econ=1)) == (100, 1)


def test_a_reset_before_the_answer_is_one_request_and_one_error():
    # no status line from the server: no hrsp_*, one eresp (HAProxy answers 502)
    assert lbs.error_counts(server(hrsp_2xx=99, eresp=1)) == (100, 1)


def test_an_answer_cut_off_after_its_status_line_counts_once():
    # the 200 is in hrsp_2xx, and the abort in eresp and srv_abrt
    assert lbs.error_counts(server(hrsp_2xx=100, eresp=1, srv_abrt=1)) == (100, 1)
    # a 500 cut off: in hrsp_5xx and in eresp, still one request and one error
    assert lbs.error_counts(server(hrsp_5xx=1, eresp=1, srv_abrt=1)) == (1, 1)


def test_every_kind_together_and_the_rate():
    delta = server(hrsp_1xx=0, hrsp_2xx=880, hrsp_3xx=40, hrsp_4xx=60, hrsp_5xx=10, hrsp_other=0,
                   econ=4, eresp=6, srv_abrt=2, wretr=9, wredis=3, cli_abrt=7)
    requests, errors = lbs.error_counts(delta)
    # 990 answers + 4 refused + 4 resets before an answer; 10 + 4 + 6 errors
    assert (requests, errors) == (998, 20)
    assert lbs.error_rate(requests, errors) == pytest.approx(2.004, abs=1e-3)
    # client aborts and retries are not the server's failures
    assert lbs.error_counts(server(hrsp_2xx=10, cli_abrt=5, wretr=5, wredis=1)) == (10, 0)
    assert lbs.error_rate(0, 0) is None


# ---------------------------------------------------------------- latency from rtime


def test_old_weight_in_both_regimes():
    assert lbs.old_weight(0, 100) == 0
    assert lbs.old_weight(100, 400) == 0.25  # exact mean while n1 <= 512
    a = 1 - 1 / 512
    assert lbs.old_weight(1000, 1100) == pytest.approx(a ** 100)
    assert lbs.old_weight(256, 612) == pytest.approx(0.5 * a ** 100)
    assert lbs.old_weight(100, 100) == 1


def test_window_latency_recovers_the_window_mean():
    a = 1 - 1 / 512
    # 5000 answers at 10 ms, then 300 at 40 ms: HAProxy shows 10 * a^300 + 40 * (1 - a^300)
    w = a ** 300
    r1 = 10 * w + 40 * (1 - w)
    window = lbs.window_latency(5000, 10, 5300, r1)
    assert window["estimate"] == pytest.approx(40)
    assert window["share"] == pytest.approx(1 - w)
    assert window["low"] < 40 < window["high"]
    # exact means while the server has served fewer than 512
    window = lbs.window_latency(100, 10, 300, (100 * 10 + 200 * 25) / 300)
    assert window["estimate"] == pytest.approx(25)
    assert lbs.window_latency(100, 10, 100, 10) is None


# ---------------------------------------------------------------- the analysis


def rolling_samples(new_now, base_now, new_start=None, base_start=None):
    """lb1 in front of web1 (new) and web2, web3 (baseline)."""
    base_start = base_start or server()
    start = {"lb1": lb({"app/web1": new_start or server(), "app/web2": base_start, "app/web3": dict(base_start)})}
    now = {"lb1": lb({"app/web1": new_now, "app/web2": base_now, "app/web3": dict(base_now)})}
    return start, now


def test_healthy_release_passes_with_the_shape_of_metrics_analyse():
    start, now = rolling_samples(server(hrsp_2xx=200, rtime=4, scur=1), server(hrsp_2xx=200, rtime=4, scur=1))
    result = lbs.analyse(start, now, ["web1"], ["web2", "web3"])
    assert result["verdict"] == "pass", result["message"]
    assert set(result) >= {"verdict", "message", "failed_metrics", "metrics", "requests", "provider_error"}
    assert [m["name"] for m in result["metrics"]] == ["error_rate", "latency", "saturation"]
    for record in result["metrics"]:
        assert set(record) >= {"name", "value", "baseline", "limit", "verdict", "reason", "query"}
    assert result["requests"] == 200 and result["failed_metrics"] == [] and result["window_restarted"] == []
    assert result["groups"]["new"]["servers"] == ["app/web1"]
    assert result["groups"]["baseline"]["servers"] == ["app/web2", "app/web3"]


@pytest.mark.parametrize("failure", [{"hrsp_5xx": 20}, {"econ": 20}, {"eresp": 20}],
                         ids=["500", "refused", "reset"])
def test_each_failure_kind_fails_the_error_rate(failure):
    start, now = rolling_samples(server(hrsp_2xx=180, **failure), server(hrsp_2xx=200))
    result = lbs.analyse(start, now, ["web1"], ["web2", "web3"])
    record = metric(result, "error_rate")
    assert record["value"] == pytest.approx(10.0)
    assert record["baseline"] == 0 and record["limit"] == pytest.approx(0.5)
    assert result["verdict"] == "fail" and result["failed_metrics"] == ["error_rate"]
    assert "error_rate = 10% is above the maximum 1%" in result["message"]


def test_two_load_balancers_are_summed():
    start = {"lb1": lb({"app/web1": server(hrsp_2xx=1000, hrsp_5xx=5)}),
             "lb2": lb({"app/web1": server(hrsp_2xx=50)})}
    now = {"lb1": lb({"app/web1": server(hrsp_2xx=1100, hrsp_5xx=6)}),
           "lb2": lb({"app/web1": server(hrsp_2xx=348, hrsp_5xx=1, econ=1)})}
    result = lbs.analyse(start, now, ["app/web1"], min_requests=0)
    # (1 + 1 + 1) / (101 + 300) = 0.75 %
    assert result["requests"] == 401
    assert metric(result, "error_rate")["value"] == pytest.approx(300 / 401)
    assert result["verdict"] == "pass", result["message"]
    group = result["groups"]["new"]
    assert (group["answers"], group["errors"], group["hrsp_5xx"], group["econ"]) == (400, 3, 2, 1)


def test_a_reload_mid_window_restarts_that_load_balancer():
    start = {"lb1": lb({"app/web1": server(hrsp_2xx=5000, hrsp_5xx=10)}, pid=100),
             "lb2": lb({"app/web1": server(hrsp_2xx=4000)}, pid=200)}
    # lb1 reloaded: its counters began again; lb2 went on
    now = {"lb1": lb({"app/web1": server(hrsp_2xx=90, hrsp_5xx=10)}, pid=100),
           "lb2": lb({"app/web1": server(hrsp_2xx=4100)}, pid=200)}
    result = lbs.analyse(start, now, ["web1"])
    assert result["window_restarted"] == ["lb1"]
    assert result["load_balancers"]["lb1"]["restarted"] is True
    assert "hrsp_2xx" in result["load_balancers"]["lb1"]["reason"]
    assert result["load_balancers"]["lb2"] == {"read": True, "restarted": False, "reason": None}
    # lb1's now values are its delta: 100 + 100 requests, 10 errors
    assert result["requests"] == 200
    assert metric(result, "error_rate")["value"] == pytest.approx(5.0)
    assert result["verdict"] == "fail"
    assert "window restarted on lb1" in result["message"]


def test_a_new_pid_restarts_the_window_even_when_counters_grew():
    start = {"lb1": lb({"app/web1": server(hrsp_2xx=10)}, pid=100)}
    now = {"lb1": lb({"app/web1": server(hrsp_2xx=300, hrsp_5xx=1)}, pid=101)}
    result = lbs.analyse(start, now, ["web1"])
    assert result["window_restarted"] == ["lb1"] and "100 was replaced by 101" in result["load_balancers"]["lb1"]["reason"]
    assert result["requests"] == 301


@pytest.mark.parametrize("moment", ["start", "now"])
def test_an_unreadable_load_balancer_makes_it_inconclusive_naming_it(moment):
    good_start = {"lb1": lb({"app/web1": server()}), "lb2": lb({"app/web1": server()})}
    good_now = {"lb1": lb({"app/web1": server(hrsp_2xx=500)}), "lb2": lb({"app/web1": server(hrsp_2xx=500)})}
    if moment == "start":
        good_start["lb2"] = down("permission", "no permission to open HAProxy runtime API socket /run/haproxy/admin.sock")
    else:
        good_now["lb2"] = down()
    result = lbs.analyse(good_start, good_now, ["web1"])
    assert result["verdict"] == "inconclusive"
    assert f"lb2 ({moment}): " in result["message"]
    assert ("permission: no permission" if moment == "start" else "connection: cannot connect") in result["message"]
    assert result["load_balancers"]["lb2"]["read"] is False and result["load_balancers"]["lb1"]["read"] is True
    # lb1 is still measured and reported
    assert result["requests"] == 500


def test_a_load_balancer_missing_from_one_sample_is_unreadable():
    start = {"lb1": lb({"app/web1": server()})}
    now = {"lb1": lb({"app/web1": server(hrsp_2xx=100)}), "lb2": lb({"app/web1": server(hrsp_2xx=100)})}
    result = lbs.analyse(start, now, ["web1"])
    assert result["verdict"] == "inconclusive" and "lb2 (start): not in the sample" in result["message"]


def test_too_few_requests_is_inconclusive_never_a_pass():
    start, now = rolling_samples(server(hrsp_2xx=19), server(hrsp_2xx=200))
    result = lbs.analyse(start, now, ["web1"], ["web2", "web3"], min_requests=20)
    assert result["verdict"] == "inconclusive" and "too few requests" in result["message"]
    assert "19 in the window, min_requests is 20" in result["message"]
    # a bad one that the missing requests could still bring under the limits: measured anyway, still inconclusive
    start, now = rolling_samples(server(hrsp_2xx=4, hrsp_5xx=1), server(hrsp_2xx=200))
    result = lbs.analyse(start, now, ["web1"], ["web2", "web3"], {"error_rate_max": 10.0, "error_rate_over_baseline": 5.0},
                         min_requests=20)
    assert result["verdict"] == "inconclusive" and "measured anyway: error_rate = 20%" in result["message"]
    # nothing at all
    start, now = rolling_samples(server(), server(hrsp_2xx=200))
    assert lbs.analyse(start, now, ["web1"], ["web2", "web3"])["verdict"] == "inconclusive"


def test_errors_that_settle_the_first_min_requests_fail_before_there_are_enough():
    # a 1 % canary step: 1 of its first 4 requests failed; over min_requests 20 that is at least 5 % > 1 %
    start, now = rolling_samples(server(hrsp_2xx=3, hrsp_5xx=1), server(hrsp_2xx=400))
    result = lbs.analyse(start, now, ["web1"], ["web2", "web3"], min_requests=20)
    assert result["verdict"] == "fail" and result["failed_metrics"] == ["error_rate"]
    record = metric(result, "error_rate")
    assert record["settled_early"] is True and record["value"] == pytest.approx(25.0) and record["value_low"] == pytest.approx(5.0)
    assert ("1 of the new servers' first 4 requests failed, so their first 20 (min_requests) fail at least 5% "
            "whatever the other 16 answer: at least 5% is above the maximum 1%; at least 5% is above 0.5%") in result["message"]
    # a refused connection or a reset counts the same
    for failure in ({"econ": 1}, {"eresp": 1}):
        start, now = rolling_samples(server(hrsp_2xx=2, **failure), server(hrsp_2xx=400))
        assert lbs.analyse(start, now, ["web1"], ["web2", "web3"], min_requests=20)["verdict"] == "fail"
    # against the baseline only: the baseline fails 10 % itself, so 1 in 20 (5 %) settles nothing
    off = {"error_rate_max": None}
    start, now = rolling_samples(server(hrsp_2xx=3, hrsp_5xx=1), server(hrsp_2xx=360, hrsp_5xx=40))
    assert lbs.analyse(start, now, ["web1"], ["web2", "web3"], off, min_requests=20)["verdict"] == "inconclusive"
    # no error yet: inconclusive, never a pass
    start, now = rolling_samples(server(hrsp_2xx=4), server(hrsp_2xx=400))
    assert lbs.analyse(start, now, ["web1"], ["web2", "web3"], min_requests=20)["verdict"] == "inconclusive"
    # an unreadable load balancer is inconclusive whatever the errors
    start, now = rolling_samples(server(hrsp_2xx=3, hrsp_5xx=1), server(hrsp_2xx=400))
    now["lb2"], start["lb2"] = down(), lb({})
    assert lbs.analyse(start, now, ["web1"], ["web2", "web3"], min_requests=20)["verdict"] == "inconclusive"


def test_relative_error_rate_against_the_baseline():
    off = {"error_rate_max": None}
    # baseline 2 %: the new servers may have 2.5 %
    start, now = rolling_samples(server(hrsp_2xx=976, hrsp_5xx=24), server(hrsp_2xx=980, hrsp_5xx=20))
    result = lbs.analyse(start, now, ["web1"], ["web2", "web3"], off)
    record = metric(result, "error_rate")
    assert record["baseline"] == pytest.approx(2.0) and record["limit"] == pytest.approx(2.5)
    assert record["verdict"] == "pass"
    start, now = rolling_samples(server(hrsp_2xx=970, hrsp_5xx=30), server(hrsp_2xx=980, hrsp_5xx=20))
    result = lbs.analyse(start, now, ["web1"], ["web2", "web3"], off)
    assert result["verdict"] == "fail" and "the baseline's 2% x 1 + 0.5" in result["message"]
    # and the absolute 1 % still applies by default
    result = lbs.analyse(start, now, ["web1"], ["web2", "web3"])
    assert "above the maximum 1%" in metric(result, "error_rate")["reason"]


def test_without_baseline_only_absolute_thresholds_apply():
    start = {"lb1": lb({"app/web1": server()})}
    now = {"lb1": lb({"app/web1": server(hrsp_2xx=991, hrsp_5xx=9, rtime=40, scur=300)})}
    result = lbs.analyse(start, now, ["web1"])
    assert result["verdict"] == "pass", result["message"]
    # saturation has no absolute bound by default: not judged without a baseline
    assert [m["name"] for m in result["metrics"]] == ["error_rate", "latency"]
    assert all("max_vs_baseline" not in m for m in result["metrics"])
    now["lb1"]["servers"]["app/web1"]["hrsp_5xx"] = 11
    assert lbs.analyse(start, now, ["web1"])["verdict"] == "fail"
    result = lbs.analyse(start, now, ["web1"], thresholds={"error_rate_max": 2, "latency_max": 30})
    assert result["failed_metrics"] == ["latency"] and "above the maximum 30 ms" in result["message"]


def test_latency_relative_to_the_baseline():
    a = 1 - 1 / 512
    w = a ** 1000
    slow = 5 * w + 60 * (1 - w)  # 1000 answers at 60 ms after 5 ms ones
    start, now = rolling_samples(server(hrsp_2xx=4000, rtime=5), server(hrsp_2xx=4000, rtime=5),
                                 server(hrsp_2xx=3000, rtime=5), server(hrsp_2xx=3000, rtime=5))
    now["lb1"]["servers"]["app/web1"] = server(hrsp_2xx=4000, rtime=math.ceil(slow))
    result = lbs.analyse(start, now, ["web1"], ["web2", "web3"])
    record = metric(result, "latency")
    assert record["value"] == pytest.approx(60, abs=1.5)
    # the baseline over the same window, at the upper end of its range: 5 + w / (1 - w) ms
    assert record["baseline"] == pytest.approx(5 + w / (1 - w), abs=1e-3)
    assert record["limit"] == pytest.approx(1.5 * (5 + w / (1 - w)) + 5, abs=1e-3)
    assert record["verdict"] == "fail" and result["failed_metrics"] == ["latency"]
    assert record["window_share"] == pytest.approx(1 - w, abs=1e-3)
    # the same release as the baseline: pass
    now["lb1"]["servers"]["app/web1"] = server(hrsp_2xx=4000, rtime=6)
    assert metric(lbs.analyse(start, now, ["web1"], ["web2", "web3"]), "latency")["verdict"] == "pass"


def test_latency_is_compared_with_the_baseline_over_the_same_window():
    # The whole fleet slowed down during the window (5 -> 40 ms): the baseline's
    # gauges say 17 ms (a limit of 30.5 ms), their window says 42 ms. A good release passes.
    a = 1 - 1 / 512
    w = a ** 200
    gauge = math.ceil(5 * w + 40 * (1 - w))
    start, now = rolling_samples(server(hrsp_2xx=4200, rtime=gauge), server(hrsp_2xx=4200, rtime=gauge),
                                 server(hrsp_2xx=4000, rtime=5), server(hrsp_2xx=4000, rtime=5))
    result = lbs.analyse(start, now, ["web1"], ["web2", "web3"])
    record = metric(result, "latency")
    assert gauge == 17 and record["baseline"] > 40 and record["verdict"] == "pass", record["reason"]
    # and a release slower than the slowed-down fleet still fails
    slow = math.ceil(5 * w + 150 * (1 - w))
    now["lb1"]["servers"]["app/web1"] = server(hrsp_2xx=4200, rtime=slow)
    assert metric(lbs.analyse(start, now, ["web1"], ["web2", "web3"]), "latency")["verdict"] == "fail"


def test_latency_with_few_answers_is_judged_at_the_lower_end():
    # 20 answers after 5000: the window is 4 % of the gauge; 1 ms of rounding is 26 ms of estimate
    start, now = rolling_samples(server(hrsp_2xx=20, rtime=3), server(hrsp_2xx=200, rtime=3),
                                 server(hrsp_2xx=5000 - 20, rtime=3))
    now["lb1"]["servers"]["app/web1"] = server(hrsp_2xx=5000, rtime=4)
    record = metric(lbs.analyse(start, now, ["web1"], ["web2", "web3"]), "latency")
    assert record["value_low"] <= 5 < 20 < record["value"] < record["value_high"]
    assert record["verdict"] == "pass" and "(at least " in record["reason"]
    assert "the 20 answers of the window are 4% of HAProxy's moving mean" in record["reason"]


def test_saturation_and_queue():
    start, now = rolling_samples(server(hrsp_2xx=500), server(hrsp_2xx=500))
    now["lb1"]["servers"]["app/web1"].update(scur=30, qcur=12, slim=30)
    now["lb1"]["servers"]["app/web2"].update(scur=4)
    now["lb1"]["servers"]["app/web3"].update(scur=6)
    result = lbs.analyse(start, now, ["web1"], ["web2", "web3"])
    saturation, queue = metric(result, "saturation"), metric(result, "queue")
    assert (saturation["value"], saturation["baseline"], saturation["limit"]) == (30, 5, 12.5)
    assert saturation["verdict"] == "fail"
    assert queue["value"] == 12 and queue["max"] == 5 and queue["verdict"] == "fail"
    assert result["groups"]["new"]["maxconn_usage"] == 100
    assert sorted(result["failed_metrics"]) == ["queue", "saturation"]


def test_servers_by_name_in_several_backends_and_by_backend():
    start = {"lb1": lb({"app/web1": server(), "api/web1": server(), "app/web2": server()})}
    now = {"lb1": lb({"app/web1": server(hrsp_2xx=100), "api/web1": server(hrsp_2xx=50, hrsp_5xx=50),
                      "app/web2": server(hrsp_2xx=100)})}
    assert lbs.analyse(start, now, ["web1"])["requests"] == 200
    assert lbs.analyse(start, now, ["web1"], backends=["app"])["requests"] == 100
    assert lbs.analyse(start, now, ["app/web1"])["verdict"] == "pass"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"new_servers": ["web9"]}, "canary: no server 'web9' on any load balancer read (servers: app/web1, app/web2)"),
    ({"new_servers": ["web1"], "baseline_servers": ["app/web1"]}, "cannot be both new (canary) and baseline"),
    ({"new_servers": []}, "nothing to judge"),
    ({"new_servers": ["a/b/c"]}, "a server is 'backend/server' or a server name"),
    ({"new_servers": ["web1"], "thresholds": {"error_rate": 1}}, "unknown threshold(s) error_rate; known:"),
    ({"new_servers": ["web1"], "thresholds": {"latency_vs_baseline": 0}}, "threshold latency_vs_baseline must be > 0, got 0"),
    ({"new_servers": ["web1"], "thresholds": {"queue_max": "many"}}, "threshold queue_max must be a number, got 'many'"),
])
def test_configuration_errors_name_the_bad_value(kwargs, message):
    start = {"lb1": lb({"app/web1": server(), "app/web2": server()})}
    with pytest.raises(lbs.MetricsConfigError) as info:  # LBStatsConfigError is one
        lbs.analyse(start, start, **kwargs)
    assert message in str(info.value)


@pytest.mark.parametrize(("sample", "message"), [
    ([], "haproxy_start must be a mapping"),
    ({"lb1": {"servers": []}}, "haproxy_start['lb1'].servers must be a mapping"),
    ({"lb1": {"servers": {"web1": {}}}}, "server keys are 'backend/server', got 'web1'"),
    ({"lb1": {"servers": {"app/web1": {"hrsp_2xx": -1}}}}, "['app/web1'].hrsp_2xx must be a whole number >= 0, got -1"),
])
def test_malformed_samples_are_refused(sample, message):
    with pytest.raises(lbs.LBStatsConfigError) as info:
        lbs.analyse(sample, {}, ["web1"])
    assert message in str(info.value)


# ---------------------------------------------------------------- samples from registered results


def test_sample_from_a_registered_loop():
    ok = {"item": "lb1", "changed": False, "process": {"pid": 7, "uptime_sec": 9},
          "servers": [{"backend": "app", "name": "web1", "admin_state": "ready", **server(hrsp_2xx=3, slim=10)}]}
    failed = {"item": "lb2", "failed": True, "error_kind": "backend_not_found", "msg": "HAProxy has no backend 'app'"}
    unreachable = {"_ansible_delegated_vars": {"ansible_delegated_host": "lb3"}, "unreachable": True,
                   "msg": "Failed to connect to the host via ssh"}
    skipped = {"item": "lb4", "skipped": True}
    # failed_when: false: failed is false, the module's error_kind and msg are there
    ignored = {"item": "lb5", "failed": False, "failed_when_result": False, "error_kind": "connection",
               "msg": "HAProxy runtime API socket /run/haproxy/admin.sock does not exist"}
    sample = lbs.sample_from_results({"results": [ok, failed, unreachable, skipped, ignored]})
    assert sorted(sample) == ["lb1", "lb2", "lb3", "lb5"]
    assert sample["lb5"]["error"]["kind"] == "connection"
    assert sample["lb1"]["error"] is None and sample["lb1"]["process"] == {"pid": 7, "uptime_sec": 9}
    assert sample["lb1"]["servers"]["app/web1"]["hrsp_2xx"] == 3 and sample["lb1"]["servers"]["app/web1"]["slim"] == 10
    assert "admin_state" not in sample["lb1"]["servers"]["app/web1"]
    assert sample["lb2"] == {"error": {"kind": "backend_not_found", "msg": "HAProxy has no backend 'app'"}}
    assert sample["lb3"]["error"]["kind"] == "unreachable"
    assert lbs.check_sample(sample)["lb2"]["error"]["kind"] == "backend_not_found"
    # one result, named
    assert list(lbs.sample_from_results(ok | {"item": None}, names=["lbX"])) == ["lbX"]
    with pytest.raises(lbs.LBStatsConfigError, match="a single result needs"):
        lbs.sample_from_results({k: v for k, v in ok.items() if k != "item"})


# ---------------------------------------------------------------- counters read from a real HAProxy


@pytest.fixture(scope="module")
def backends():
    pair = Backend("new"), Backend("old")
    yield pair
    for backend in pair:
        backend.close()


BODY = """
frontend f
  bind 127.0.0.1:FRONT_PORT
  use_backend dead if {{ path_beg /dead }}
  default_backend app
backend app
  balance roundrobin
  use-server new if {{ path_beg /status }} || {{ path_beg /reset }} || {{ path_beg /sleep }}
  use-server old if {{ path / }}
  server new 127.0.0.1:{new}
  server old 127.0.0.1:{old}
backend dead
  retries 1
  server gone 127.0.0.1:{dead}
"""


@pytest.fixture
def two_lbs(tmp_path, backends):
    new, old = backends
    body = BODY.format(new=new.port, old=old.port, dead=free_port())
    (tmp_path / "lb1").mkdir()
    (tmp_path / "lb2").mkdir()
    pair = {"lb1": HAProxy(tmp_path / "lb1", body), "lb2": HAProxy(tmp_path / "lb2", body)}
    yield pair
    for proxy in pair.values():
        proxy.stop()


def read(lbs_by_name):
    """One sample, the way a role builds it: haproxy_info on each LB, then the filter's function."""
    results = []
    for name, proxy in lbs_by_name.items():
        failed, result = run_module(haproxy_info, {"socket": proxy.user_sock, "backends": ["app", "dead"]})
        assert not failed, result
        results.append({**result, "item": name})
    return lbs.sample_from_results({"results": results})


def send(proxy, paths):
    codes = []
    for path in paths:
        conn = http.client.HTTPConnection("127.0.0.1", proxy.front_port, timeout=5)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            codes.append(response.status)
        finally:
            conn.close()
    return codes


def test_real_haproxy_500s_refused_and_resets(two_lbs):
    start = read(two_lbs)
    # lb1: new answers 30 x 200 and 10 x 500; old 40 x 200
    assert send(two_lbs["lb1"], ["/status/200"] * 30 + ["/status/500"] * 10 + ["/"] * 40).count(500) == 10
    # lb2: new 40 x 200, 5 resets (HAProxy answers 502); old 40 x 200; 3 requests to a closed port (503)
    codes = send(two_lbs["lb2"], ["/status/200"] * 40 + ["/reset"] * 5 + ["/"] * 40 + ["/dead"] * 3)
    assert codes.count(502) == 5 and codes.count(503) == 3
    now = read(two_lbs)

    lb2_new = now["lb2"]["servers"]["app/new"]
    assert lb2_new["hrsp_5xx"] == 0 and lb2_new["eresp"] >= 5  # HAProxy's own 502s are not the server's answers
    assert now["lb2"]["servers"]["dead/gone"]["econ"] == 3 and now["lb2"]["servers"]["dead/gone"]["hrsp_5xx"] == 0

    result = lbs.analyse(start, now, ["app/new"], ["app/old"])
    group = result["groups"]["new"]
    resets = lb2_new["eresp"]  # HAProxy 2.6 may count one reset more than once (per read error)
    assert group["answers"] == 80 and group["requests"] == 80 + resets
    assert group["errors"] == 10 + resets
    assert metric(result, "error_rate")["value"] == pytest.approx(100 * (10 + resets) / (80 + resets))
    assert metric(result, "error_rate")["baseline"] == 0
    assert result["groups"]["baseline"]["requests"] == 80
    assert result["verdict"] == "fail" and result["failed_metrics"] == ["error_rate"]

    refused = lbs.analyse(start, now, ["dead/gone"], min_requests=1)
    assert refused["requests"] == 3 and metric(refused, "error_rate")["value"] == 100


def test_real_haproxy_reload_in_the_middle_of_a_window(two_lbs):
    send(two_lbs["lb1"], ["/status/200"] * 60)
    start = read(two_lbs)
    send(two_lbs["lb1"], ["/status/200"] * 10)
    two_lbs["lb1"].reload()
    send(two_lbs["lb1"], ["/status/200"] * 18 + ["/status/500"] * 2)
    send(two_lbs["lb2"], ["/status/200"] * 20)
    now = read(two_lbs)
    assert now["lb1"]["process"]["pid"] != start["lb1"]["process"]["pid"]
    result = lbs.analyse(start, now, ["app/new"])
    assert result["window_restarted"] == ["lb1"]
    # lb1 counts only since the reload (20), lb2 its delta (20)
    assert result["requests"] == 40 and metric(result, "error_rate")["value"] == pytest.approx(5.0)
    assert result["verdict"] == "fail" and "window restarted on lb1" in result["message"]


def test_real_haproxy_latency_of_the_window(two_lbs):
    proxy = two_lbs["lb1"]
    send(proxy, ["/status/200"] * 30 + ["/"] * 30)
    start = read(two_lbs)
    send(proxy, ["/sleep/40"] * 25 + ["/"] * 25)
    now = read(two_lbs)
    result = lbs.analyse(start, now, ["app/new"], ["app/old"], min_requests=10)
    record = metric(result, "latency")
    # 30 fast answers then 25 at 40 ms: the gauge shows the mix, the estimate the window
    # (no upper bound on either: a loaded machine makes every answer slower)
    assert now["lb1"]["servers"]["app/new"]["rtime"] < record["value"]
    assert record["value"] >= 38 and record["value_low"] > record["limit"]
    assert record["verdict"] == "fail"
