"""lb_member on the lab: drain and ready a host on every LB under live traffic."""

from __future__ import annotations

import os
import time

from conftest import REPO, ansible_playbook, recap

PLAYBOOK = os.path.join(REPO, "tests", "integration", "playbooks", "lb_member_state.yml")


def flat(result) -> str:
    """The output with every run of whitespace made one space (YAML output wraps)."""
    return " ".join(result.stdout.split())


def run_state(state: str, check: bool = False, host: str = "web1", **extra):
    result = ansible_playbook(PLAYBOOK, extra_vars={"target": host, "lb_member_state": state, **extra}, check=check)
    assert result.returncode == 0, result.stdout
    return result


def changed(result, host: str = "web1") -> int:
    return recap(result.stdout)[host]["changed"]


def server(lab, name: str = "web1") -> dict:
    return lab.haproxy_servers()[name]


def test_drain_then_ready_under_traffic_four_ways(fresh_lab, traffic):
    lab = fresh_lab
    assert server(lab)["admin_state"] == "ready"

    # Drain: check mode predicts a change and changes nothing.
    result = run_state("drain", check=True)
    assert changed(result) >= 1
    assert server(lab)["admin_state"] == "ready"
    assert server(lab)["operational_state"] == "UP"

    # Real: DRAIN in HAProxy, no session left.
    result = run_state("drain")
    assert changed(result) >= 1
    drained_at = time.time()
    web1 = server(lab)
    assert (web1["admin_state"], web1["operational_state"]) == ("drain", "DRAIN")
    assert web1["current_sessions"] == 0

    # Idempotent, in check mode and for real.
    assert changed(run_state("drain", check=True)) == 0
    assert changed(run_state("drain")) == 0
    assert server(lab)["operational_state"] == "DRAIN"

    # No new request reached web1 once it was drained.
    time.sleep(1)
    late = [r for r in traffic.records if r["t"] > drained_at + 0.5]
    assert late, "no traffic recorded after the drain"
    assert not [r for r in late if r.get("host") == "web1"]

    # Ready: check mode changes nothing.
    result = run_state("ready", check=True)
    assert changed(result) >= 1
    assert server(lab)["operational_state"] == "DRAIN"

    # Real: UP again, and web1 serves again.
    result = run_state("ready")
    assert changed(result) >= 1
    readied_at = time.time()
    web1 = server(lab)
    assert (web1["admin_state"], web1["operational_state"]) == ("ready", "UP")
    assert changed(run_state("ready", check=True)) == 0
    assert changed(run_state("ready")) == 0
    time.sleep(1.5)
    assert [r for r in traffic.records if r["t"] > readied_at and r.get("host") == "web1"]

    summary = traffic.stop()
    assert summary.total > 0
    assert summary.failed == 0, summary.errors


def test_maint_then_ready(fresh_lab):
    lab = fresh_lab
    run_state("maint", host="web2")
    web2 = server(lab, "web2")
    assert (web2["admin_state"], web2["operational_state"]) == ("maint", "MAINT")
    assert changed(run_state("maint", host="web2"), "web2") == 0
    run_state("ready", host="web2")
    web2 = server(lab, "web2")
    assert (web2["admin_state"], web2["operational_state"]) == ("ready", "UP")


def rotation(lab) -> dict:
    """What a run could change: each server's admin state and weight (not its live counters)."""
    return {n: (s["admin_state"], s["weight"]) for n, s in lab.haproxy_servers().items()}


def test_fails_clearly_without_a_load_balancer(lab):
    before = rotation(lab)
    result = ansible_playbook(PLAYBOOK, extra_vars={"lb_member_state": "drain", "deploy_lb_group": "nolb"})
    assert result.returncode != 0
    assert "the strategy needs a load balancer: inventory group 'nolb' is empty or missing" in flat(result)
    assert rotation(lab) == before


def test_fails_clearly_without_a_state(lab):
    result = ansible_playbook(PLAYBOOK)
    assert result.returncode != 0
    assert "value of lb_member_state must be one of: drain, ready, maint, got: None" in flat(result)
