"""Canary releases on the lab (the canary role, driven like deploy.yml), under 100 req/s of traffic.

The steps are shorter than the defaults (windows of 12-20 s; Prometheus scrapes
every second). At 1 % and 100 req/s the canary gets about one request a second,
so the 1 % analysis uses a low min_requests (5 in 15 s) and the tests that must
catch a bad release start at 10 %, where a 15 s window holds ~150 requests:
20 % of 500s cannot hide there (P(no 500 in 150) ~ 1e-15).
"""

from __future__ import annotations

import collections
import os
import re
import sys
import threading
import time

import pytest

from conftest import REPO, ansible_playbook, failed_requests

sys.path.insert(0, os.path.join(REPO, "tests", "lab"))

DEPLOY = os.path.join(REPO, "playbooks", "deploy.yml")
FAST = {"release_liveness_seconds": 2, "rolling_serial": [2], "rolling_max_unavailable": 2, "rolling_analysis": False}
STEP_RE = re.compile(r"CANARY STEP (\d+): weight (\d+(?:\.\d+)?) % requested, reached ([0-9.]+) % "
                     r"\(canary weight (\d+) on web1, stable weight (\d+) on")


class WeightSampler:
    """Samples HAProxy every 0.2 s: web1's and web2's weights and web1's admin state."""

    def __init__(self, lab, on_sample=None):
        self.lab = lab
        self.samples: list[tuple[float, int, int, str]] = []
        self.out_of_rotation: list[tuple[float, list[str]]] = []
        self.on_sample = on_sample
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                servers = self.lab.haproxy_servers()
                sample = (time.time(), servers["web1"]["weight"], servers["web2"]["weight"],
                          servers["web1"]["admin_state"])
                self.samples.append(sample)
                self.out_of_rotation.append((sample[0], sorted(n for n, s in servers.items() if not s["in_rotation"])))
                if self.on_sample:
                    self.on_sample(sample)
            except Exception:  # noqa: BLE001 - the socket may refuse one call under load
                pass
            time.sleep(0.2)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def interval(self, canary_weight: int, stable_weight: int) -> tuple[float, float] | None:
        """The longest run of samples with these weights and web1 ready."""
        best, start, last = None, None, None
        for t, wc, ws, state in self.samples + [(float("inf"), -1, -1, "")]:
            if wc == canary_weight and ws == stable_weight and state == "ready":
                start = t if start is None else start
                last = t
            elif start is not None:
                if best is None or last - start > best[1] - best[0]:
                    best = (start, last)
                start = None
        return best


def weights(lab) -> dict[str, int]:
    return {n: s["weight"] for n, s in lab.haproxy_servers().items()}


def assert_all_up_at_base_weight(lab):
    """Every server ready at weight 100 now, and UP by its health check (a check may lag under load)."""
    servers = lab.haproxy_servers()
    assert {n: (s["admin_state"], s["weight"]) for n, s in servers.items()} == dict.fromkeys(servers, ("ready", 100))
    deadline = time.monotonic() + 15
    while True:
        unhealthy = {n: (s["status"], s["check_status"]) for n, s in lab.haproxy_servers().items() if not s["healthy"]}
        if not unhealthy:
            return
        assert time.monotonic() < deadline, unhealthy
        time.sleep(0.5)


# The pauses are watched: the gate runs every ANALYSIS_INTERVAL s during each.
ANALYSIS_INTERVAL = 5


def run_canary(version, steps, **extra):
    return ansible_playbook(DEPLOY, extra_vars={"deploy_strategy": "canary", "deploy_version": version, "canary_steps": steps,
                                                "canary_analysis_window": "15s", "canary_analysis_interval": ANALYSIS_INTERVAL,
                                                **FAST, **extra})


def flat(output: str) -> str:
    return " ".join(output.split())


GOOD_STEPS = [
    {"weight": 1}, {"pause": 15}, {"analysis": {"window": "15s", "min_requests": 5}},
    {"weight": 10}, {"pause": 20}, {"analysis": {"window": "15s"}},
    {"weight": 50}, {"pause": 20}, {"analysis": {"window": "15s"}},
]
BAD_STEPS = [{"weight": 10}, {"pause": 15}, {"analysis": {"window": "15s"}},
             {"weight": 50}, {"pause": 15}, {"analysis": {"window": "15s"}}]


def test_good_canary_is_promoted_and_the_shares_are_what_the_run_said(fresh_lab, traffic):
    with WeightSampler(fresh_lab) as sampler:
        run = run_canary("2.0.0", GOOD_STEPS)
    out = flat(run.stdout)
    assert run.returncode == 0, run.stdout[-5000:]
    assert "CANARY PROMOTED" in out
    assert out.count("CANARY ANALYSIS") == 3 and out.count(": PASS - pass:") == 3, out[-3000:]
    assert failed_requests(traffic) == []
    hosts = [h.name for h in fresh_lab.app_hosts]
    assert {h: fresh_lab.version_on(h) for h in hosts} == dict.fromkeys(hosts, "2.0.0")
    assert_all_up_at_base_weight(fresh_lab)

    reported = STEP_RE.findall(out)
    assert [float(r[1]) for r in reported] == [1, 10, 50], reported
    figures = []
    for _, requested, reached, w_c, w_s in reported:
        span = sampler.interval(int(w_c), int(w_s))
        assert span, f"the weights {w_c}/{w_s} of the {requested} % step were never seen"
        t0, t1 = span[0] + 1.0, span[1] - 0.5  # away from the edges of the step
        records = [r for r in traffic.records if t0 <= r["t"] < t1 and r["version"]]
        measured = 100.0 * sum(r["version"] == "2.0.0" for r in records) / len(records)
        figures.append((requested, float(reached), round(measured, 2), len(records), round(t1 - t0, 1)))
        print(f"step {requested} %: requests per host:", sorted(collections.Counter(r["host"] for r in records).items()))
        assert len(records) > 800, figures
        # (haproxy_weights raises weights before it lowers any: lowering the stable
        # servers first could starve one for a whole roundrobin cycle, 55.6 % at 50 %.)
        assert abs(measured - float(reached)) <= 3.0, figures
    print("canary shares (requested %, reported %, measured %, requests, seconds):", figures)


def _bad_canary(lab, traffic, version):
    with WeightSampler(lab):
        run = run_canary(version, BAD_STEPS)
    out = flat(run.stdout)
    assert run.returncode != 0, out[-3000:]
    # The first check of the watched pause (step 2) that has enough canary requests fails.
    assert "CANARY ABORTED: analysis failed at step 2 (10.0 % of the traffic)" in out, out[-3000:]
    # never reached the second weight step
    assert "CANARY STEP 4" not in out
    assert lab.version_on("web1") == "1.0.0"
    assert lab.history("web1")["releases"][version]["verdict"] == "bad"
    assert {lab.version_on(h.name) for h in lab.app_hosts} == {"1.0.0"}
    assert_all_up_at_base_weight(lab)
    summary = {"first": traffic.records and min(r["t"] for r in traffic.records if r["version"] == version),
               "last": max(r["t"] for r in traffic.records if r["version"] == version)}
    return out, summary["last"] - summary["first"]


# In make test-extended: make test shows the same abort at a 1 % step without
# Prometheus (test_analysis_haproxy.py).
@pytest.mark.extended
@pytest.mark.quiet  # back on stable within 10 s of the first bad answer: 10.6 s once beside three labs
def test_errors_canary_is_aborted_at_the_first_analysis(fresh_lab, traffic):
    out, exposure = _bad_canary(fresh_lab, traffic, "2.1.0-errors")
    assert "success_rate = " in out and "is below the minimum 99%" in out
    # Traffic fully back on stable within one analysis interval + 5 s of the
    # bad version's first response (the pause is 15 s; the watch cuts it short).
    print(f"2.1.0-errors took traffic for {exposure:.1f} s (pause 15 s, checks every {ANALYSIS_INTERVAL} s)")
    assert exposure <= ANALYSIS_INTERVAL + 5, exposure


def test_slow_canary_is_aborted_on_latency(fresh_lab, traffic):
    out, exposure = _bad_canary(fresh_lab, traffic, "2.1.0-slow")
    assert "latency_p99 = " in out and "is above the maximum 500 ms" in out
    assert failed_requests(traffic) == []
    print(f"2.1.0-slow took traffic for {exposure:.1f} s")


def test_prometheus_down_is_inconclusive_and_aborts(fresh_lab, traffic):
    stopped = threading.Event()

    def stop_prometheus(sample):
        # once the canary takes 10 % of the traffic: canary weight 55, stable 99
        if not stopped.is_set() and sample[1] == 55 and sample[3] == "ready":
            stopped.set()
            fresh_lab.ssh("mon1", "systemctl stop prometheus")

    try:
        with WeightSampler(fresh_lab, on_sample=stop_prometheus):
            run = run_canary("2.0.0", BAD_STEPS)
    finally:
        fresh_lab.ssh("mon1", "systemctl start prometheus", check=False)
    out = flat(run.stdout)
    assert stopped.is_set()
    assert run.returncode != 0
    assert "CANARY ANALYSIS at 10.0 %: INCONCLUSIVE" in out, out[-3000:]
    assert ("CANARY ABORTED: analysis INCONCLUSIVE at step 3 (10.0 % of the traffic), aborted because "
            "canary_on_inconclusive is abort") in out
    assert "unreachable" in out
    assert fresh_lab.version_on("web1") == "1.0.0"
    assert failed_requests(traffic) == []
    assert_all_up_at_base_weight(fresh_lab)


def test_check_mode_prints_the_steps_and_changes_nothing(fresh_lab):
    # A fresh lab: on a worker the test before this one may have left the fleet on 2.0.0.
    lab = fresh_lab
    before = weights(lab)
    # canary_phase=start: the steps only (the promotion's rolling part has its own check-mode tests)
    run = ansible_playbook(DEPLOY, extra_vars={"deploy_strategy": "canary", "deploy_version": "2.0.0", "canary_phase": "start", **FAST},
                           check=True)
    out = flat(run.stdout)
    assert run.returncode == 0, run.stdout[-4000:]
    for step, requested, reached in ((1, 1, "1.0"), (4, 10, "10.0"), (7, 50, "50.0")):
        assert f"CANARY STEP {step}: weight {requested} % requested, would reach {reached} %" in out
    assert "would run the analysis over 1m" in out
    assert "CANARY PROMOTED" not in out
    assert weights(lab) == before
    assert {lab.version_on(h.name) for h in lab.app_hosts} == {"1.0.0"}
