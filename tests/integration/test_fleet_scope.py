"""A deploy that sees only part of the fleet behind the load balancer (what an
AWX job slice or a careless --limit looks like) is refused before anything
changes, unless deploy_allow_partial_fleet says it is meant (issue 9)."""

from __future__ import annotations

import os

import pytest
from conftest import REPO, ansible_playbook, failed_requests
from test_rolling import LOCK_FILE, RotationSampler

# In make test-extended, not make test (keeps make test under 30 min).
pytestmark = pytest.mark.extended

DEPLOY = os.path.join(REPO, "playbooks", "deploy.yml")


def fleet_state(lab) -> dict:
    return {
        "versions": {h.name: lab.version_on(h.name) for h in lab.app_hosts},
        "history": {h.name: lab.history(h.name) for h in lab.app_hosts},
        "servers": {n: (s["admin_state"], s["weight"]) for n, s in lab.haproxy_servers().items()},
        "lock": lab.ssh("lb1", f"ls {LOCK_FILE} 2>/dev/null; true").stdout.strip(),
    }


def test_a_limited_deploy_is_refused_and_changes_nothing(lab, traffic):
    before = fleet_state(lab)
    others = sorted(h.name for h in lab.app_hosts if h.name != "web1")
    with RotationSampler(lab) as sampler:
        run = ansible_playbook(DEPLOY, "--limit", "web1", extra_vars={"deploy_version": "2.0.0"})
    text = " ".join(run.stdout.split())
    assert run.returncode != 0, text[-3000:]
    assert "this run sees only part of the fleet behind the load balancer" in text, text[-3000:]
    assert (f"demoapp on lb1 has {len(lab.app_hosts)} servers, this run has 1, left out by --limit or a slice: "
            f"{', '.join(others)}") in text, text[-3000:]
    assert "deploy_allow_partial_fleet=true" in text
    assert sampler.max_out == 0, sampler.samples
    assert fleet_state(lab) == before
    assert failed_requests(traffic) == []
    assert traffic.records, "no traffic was recorded"
