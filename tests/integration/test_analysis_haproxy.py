"""The rolling analysis with no metrics server: HAProxy's own counters (issue 14).

The lab here has no monitoring host (``@pytest.mark.lab(monitoring=False)``):
no Prometheus, no deploy_metrics_url in the inventory, so the rolling role's
analysis uses its default provider, ``haproxy``: it reads lb1's per-server
counters when the batch is back in rotation and again after
rolling_analysis_wait, and judges the updated hosts' servers against those not
yet updated (error rate <= 1 % and <= theirs + 0.5 points, ...).

Lab settings, stated here: 6 app hosts behind lb1, 100 req/s through it (each
server takes about 16 req/s), serial [1, 25%], release_liveness_seconds 2,
rolling_analysis_wait 5 s (the lab inventory's; at least 80 answers of web1 to
judge, rolling_analysis_min_requests 20), rolling_analysis_on_inconclusive
abort (so only a FAIL verdict, or too little traffic, could stop it - the test
asserts FAIL).
"""

from __future__ import annotations

import os
import time

import pytest

from conftest import REPO, ansible_playbook, lab_cli
from test_analysis import failed_between, flat, running, wait_until
from test_rolling import assert_all_up

pytestmark = pytest.mark.lab(monitoring=False)

DEPLOY = os.path.join(REPO, "playbooks", "deploy.yml")
SETTINGS = {"release_liveness_seconds": 2, "rolling_analysis_wait": 5, "rolling_analysis_on_inconclusive": "abort"}


def no_prometheus(lab) -> None:
    assert lab.config.monitoring is False and lab.config.host("mon1") is None
    with open(lab.inventory, encoding="utf-8") as handle:
        text = handle.read()
    assert "deploy_metrics_url" not in text and '"monitoring"' not in text


def stopped_after_the_first_batch(version: str, lab, traffic, error_share: str) -> None:
    hosts = [h.name for h in lab.app_hosts]
    no_prometheus(lab)

    # Plain serial first (rolling_analysis off): it rolls the release onto every host.
    plain_start = time.time()
    plain = ansible_playbook(DEPLOY, extra_vars={"deploy_version": version, "rolling_analysis": False, **SETTINGS})
    assert plain.returncode == 0, plain.stdout[-4000:]
    assert {h: running(lab, h) for h in hosts} == dict.fromkeys(hosts, version)
    assert "ROLLING ANALYSIS" not in plain.stdout
    # Both runs are observed over windows of the same length, from their start:
    # the plain run's duration + 30 s (the plain fleet keeps failing after it).
    observe = time.time() - plain_start + 30
    wait_until(plain_start + observe)
    plain_failed = failed_between(traffic, plain_start, plain_start + observe)

    # The same fleet back on 1.0.0 (power-cycled; traffic during the reset is in neither window).
    lab_cli("reset")
    lab.refresh()
    assert_all_up(lab)
    time.sleep(2)

    started = time.time()
    run = ansible_playbook(DEPLOY, extra_vars={"deploy_version": version, **SETTINGS})
    assert run.returncode != 0, run.stdout[-4000:]
    out = flat(run.stdout)
    assert f"ROLLING ANALYSIS: FAIL - web1 ({version}) against the 5 host(s) not yet updated" in out, out[-3000:]
    assert "since the batch was back in rotation (HAProxy counters of lb1)" in out, out[-3000:]
    assert f"The rollout of {version} stopped: the analysis of web1" in out, out[-3000:]
    assert "fail: error_rate = " in out and "is above the maximum 1%" in out, out[-3000:]
    assert "Every host it had updated is back on its last good release" in out
    # Stopped after the first batch: only web1 ever ran it, and it is marked bad there.
    assert {h: lab.version_on(h) for h in hosts} == dict.fromkeys(hosts, "1.0.0")
    assert lab.history("web1")["releases"][version]["verdict"] == "bad"
    assert lab.history("web1")["history"][-1]["version"] == "1.0.0"
    for host in hosts[1:]:
        assert version not in lab.history(host)["releases"], host
    assert_all_up(lab)
    assert run.elapsed < observe, f"the run with analysis took {run.elapsed:.0f} s, longer than the {observe:.0f} s window"
    wait_until(started + observe)
    analysis_failed = failed_between(traffic, started, started + observe)

    summary = (f"{version} ({error_share} 500s), no Prometheus: failed requests from deploy start to {observe:.0f} s "
               f"after it (plain run: {plain.elapsed:.0f} s, with analysis: {run.elapsed:.0f} s): with the haproxy "
               f"analysis {len(analysis_failed)}, plain serial {len(plain_failed)} "
               f"({100 * len(analysis_failed) / max(1, len(plain_failed)):.1f} %)")
    print("\n" + summary)
    assert plain_failed, summary
    assert len(analysis_failed) <= 0.05 * len(plain_failed), summary
    assert {r["version"] for r in analysis_failed} <= {version}, summary


def test_haproxy_analysis_stops_the_errors_release_after_the_first_batch(fresh_lab, traffic):
    stopped_after_the_first_batch("2.1.0-errors", fresh_lab, traffic, "20 %")


def test_haproxy_analysis_stops_the_errors5_release_after_the_first_batch(fresh_lab, traffic):
    stopped_after_the_first_batch("2.1.0-errors5", fresh_lab, traffic, "5 %")
