"""The analyses with no metrics server: HAProxy's own counters (issue 14).

The lab here has no monitoring host (``@pytest.mark.lab(monitoring=False)``):
no Prometheus, no deploy_metrics_url in the inventory, so every analysis uses
its default provider, ``haproxy``: it reads the load balancers' per-server
counters when the new version starts taking traffic and again at each check,
and judges the new servers against the others (error rate <= 1 % and <= theirs
+ 0.5 points, mean response time <= 1.5 x theirs + 5 ms, ...).

Lab settings, stated here: 6 app hosts behind lb1, 100 req/s through it (each
server takes about 16 req/s).

Rolling: serial [1, 25%], release_liveness_seconds 2, rolling_analysis_wait
5 s watched every 2 s (rolling_analysis_interval; at least 80 answers of web1
to pass, rolling_analysis_min_requests 20; 12 s for 2.1.0-slow: 5 % of its
answers take 0.8 s, and 190 answers hold about 9 of them),
rolling_analysis_on_inconclusive abort (so only a FAIL
verdict, or too little traffic, could stop it - the test asserts FAIL). The
plain run it is measured against is bench/rollout/naive.yml: the same batches,
the release unpacked and the service restarted, the load balancer left alone.

Canary: canary_steps 1 % (about 1 request a second to web1) with a 40-s pause
watched every 5 s (canary_analysis_interval), min_requests 20.

Blue/green: see BG_NO_PROMETHEUS below.
"""

from __future__ import annotations

import os

import pytest

from conftest import REPO, ansible_playbook, failed_requests, is_ok
from test_analysis import running, slow_between, stopped_after_the_first_batch
from test_blue_green import BLUE, FAST as BG_FAST, GREEN, assert_live, bg, bg_lab, failed, live_traffic  # noqa: F401
from test_canary import FAST as CANARY_FAST, WeightSampler, assert_all_up_at_base_weight, flat

pytestmark = [pytest.mark.lab(monitoring=False)]

DEPLOY = os.path.join(REPO, "playbooks", "deploy.yml")
PLAIN = os.path.join(REPO, "bench", "rollout", "naive.yml")
SETTINGS = {"release_liveness_seconds": 2, "rolling_analysis_wait": 5, "rolling_analysis_interval": 2,
            "rolling_analysis_on_inconclusive": "abort"}
EXPECTED = ["since the batch was back in rotation (HAProxy counters of lb1, check ",
            "fail: error_rate = ", "is above the maximum 1%"]
# Issue 14 asks for at most 5 % of the plain run's bad requests.
MAX_SHARE = 0.05
# The windows: the plain run + 90 s. The plain restart of six hosts takes 9-34 s,
# the run with the analysis (first batch, stop, undo) 30-90 s beside other labs.
TAIL = 90


def no_prometheus(lab) -> None:
    assert lab.config.monitoring is False and lab.config.host("mon1") is None
    with open(lab.inventory, encoding="utf-8") as handle:
        text = handle.read()
    assert "deploy_metrics_url" not in text and '"monitoring"' not in text


def test_haproxy_analysis_stops_the_errors_release_after_the_first_batch(fresh_lab, traffic):
    no_prometheus(fresh_lab)
    stopped_after_the_first_batch(fresh_lab, traffic, "2.1.0-errors", SETTINGS, settle=2, expected=EXPECTED,
                                  label="20 % 500s, no Prometheus: HAProxy's counters", max_share=MAX_SHARE,
                                  plain_playbook=PLAIN, tail=TAIL)


def test_haproxy_analysis_stops_the_errors5_release_after_the_first_batch(fresh_lab, traffic):
    no_prometheus(fresh_lab)
    stopped_after_the_first_batch(fresh_lab, traffic, "2.1.0-errors5", SETTINGS, settle=2, expected=EXPECTED,
                                  label="5 % 500s, no Prometheus: HAProxy's counters", max_share=MAX_SHARE,
                                  plain_playbook=PLAIN, tail=TAIL)


def test_haproxy_analysis_stops_the_slow_release_on_latency(fresh_lab, traffic):
    no_prometheus(fresh_lab)
    stopped_after_the_first_batch(fresh_lab, traffic, "2.1.0-slow", {**SETTINGS, "rolling_analysis_wait": 12}, settle=2,
                                  expected=["since the batch was back in rotation (HAProxy counters of lb1, check ",
                                            "fail: latency = ", "HAProxy's moving mean"],
                                  label="5 % of answers take 0.8 s, no Prometheus: HAProxy's counters",
                                  max_share=MAX_SHARE, plain_playbook=PLAIN, bad_between=slow_between,
                                  bad_name="slow (>= 500 ms) or failed", tail=TAIL)


INTERVAL = 5
ONE_PERCENT_WATCHED = [{"weight": 1}, {"pause": 40}, {"analysis": {}},
                       {"weight": 10}, {"pause": 20}, {"analysis": {}}]


@pytest.mark.quiet  # a time bound: back on stable within one interval + 5 s of the first bad answer
def test_haproxy_canary_at_one_percent_is_aborted_at_the_first_failing_check(fresh_lab, traffic):
    no_prometheus(fresh_lab)
    version = "2.1.0-errors"
    with WeightSampler(fresh_lab):
        run = ansible_playbook(DEPLOY, extra_vars={"deploy_strategy": "canary", "deploy_version": version,
                                                   "canary_steps": ONE_PERCENT_WATCHED,
                                                   "canary_analysis_interval": INTERVAL, **CANARY_FAST})
    out = flat(run.stdout)
    assert run.returncode != 0, out[-3000:]
    # aborted in the watched pause (step 2), at the first check that failed; never reached 10 %
    assert "CANARY ABORTED: analysis failed at step 2 (" in out, out[-3000:]
    assert "check(s) into the pause: fail: error_rate" in out, out[-3000:]
    assert "CANARY STEP 4" not in out
    assert fresh_lab.version_on("web1") == "1.0.0"
    assert fresh_lab.history("web1")["releases"][version]["verdict"] == "bad"
    assert {fresh_lab.version_on(h.name) for h in fresh_lab.app_hosts} == {"1.0.0"}
    assert_all_up_at_base_weight(fresh_lab)

    served = [r for r in traffic.records if r["version"] == version]
    bad = [r for r in served if not is_ok(r)]
    assert bad, "2.1.0-errors never answered 500 through the load balancer"
    exposure = max(r["t"] for r in served) - min(r["t"] for r in bad)
    print(f"\n2.1.0-errors at 1 %: {len(served)} answers ({len(bad)} failed); the last came {exposure:.1f} s after "
          f"the first bad answer (checks every {INTERVAL} s)")
    assert exposure <= INTERVAL + 5, exposure
    # only the canary's own answers failed
    assert {r["version"] for r in failed_requests(traffic)} <= {version}


# Blue/green: lb1 and lb2, blue (web1-3) live, green (web4-6) idle, no Prometheus.
# The role sends 10 req/s to each load balancer's preview route for
# blue_green_analysis_wait (5 s, the lab inventory's): about 100 answers of green.
BG_NO_PROMETHEUS = pytest.mark.lab(app_count=6, lb_count=2, layout="blue_green", monitoring=False)


@BG_NO_PROMETHEUS
def test_haproxy_blue_green_errors_release_is_never_switched_to(bg, live_traffic):  # noqa: F811 - fixtures of test_blue_green
    no_prometheus(bg)
    version = "2.1.0-errors"
    run = ansible_playbook(DEPLOY, extra_vars={"deploy_version": version, "blue_green_analysis_on_inconclusive": "abort",
                                               **BG_FAST})
    out = flat(run.stdout)
    assert run.returncode != 0, out[-3000:]
    assert ("BLUE/GREEN ANALYSIS: FAIL - the idle pool green before the switch, on what it served through the preview "
            "route (web4, web5, web6, 2.1.0-errors) over the ") in out, out[-3000:]
    assert "s since the preview requests started (HAProxy counters of lb1, lb2), against the live pool blue" in out
    assert "fail: error_rate = " in out and "is above the maximum 1%" in out
    assert "Nothing was switched: blue (1.0.0) still serves every request" in out
    assert_live(bg, "blue")
    # the live route never answered with it, and nothing failed there
    assert {r["version"] for r in live_traffic.records} == {"1.0.0"}
    assert failed(live_traffic.records) == []
    assert {running(bg, h) for h in GREEN} == {version}, "the idle pool keeps it until blue_green_phase=abort"
    assert {bg.version_on(h) for h in BLUE} == {"1.0.0"}


@pytest.mark.extended  # the pass path; make test has the stop (above)
@BG_NO_PROMETHEUS
def test_haproxy_blue_green_good_release_is_judged_against_the_live_pool_and_switched(bg, live_traffic):  # noqa: F811
    no_prometheus(bg)
    run = ansible_playbook(DEPLOY, extra_vars={"deploy_version": "2.0.0", "blue_green_analysis_on_inconclusive": "abort",
                                               **BG_FAST})
    out = flat(run.stdout)
    assert run.returncode == 0, out[-3000:]
    assert "BLUE/GREEN ANALYSIS: PASS - the idle pool green before the switch" in out, out[-3000:]
    assert "against the live pool blue: pass: error_rate = 0%" in out, out[-3000:]
    assert "BLUE/GREEN ANALYSIS: PASS - the new live pool green after the switch" in out, out[-3000:]
    assert "s since the switch (HAProxy counters of lb1, lb2), absolute thresholds: pass" in out, out[-3000:]
    assert_live(bg, "green")
    assert failed(live_traffic.records) == []
    assert {bg.version_on(h) for h in GREEN} == {"2.0.0"}
