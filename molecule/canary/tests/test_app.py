"""After the canary deploy: every app host on 2.0.0 (current -> it, verdict good, serving it),
and the canary host took it first, ahead of the rest by at least the steps' pauses."""

from __future__ import annotations

import json
import os
from datetime import datetime

import testinfra
import testinfra.utils.ansible_runner

INVENTORY = os.path.dirname(os.environ["MOLECULE_INVENTORY_FILE"])
RUNNER = testinfra.utils.ansible_runner.AnsibleRunner(INVENTORY)
testinfra_hosts = RUNNER.get_hosts("app")
VERSION = "2.0.0"
PAUSES = 3 + 8 + 6  # the pause steps of converge.yml's canary_steps, in seconds


def _history(host) -> dict:
    return json.loads(host.file("/opt/demoapp/.safedeploy/history.json").content_string)


def _activated(history: dict) -> datetime:
    return datetime.fromisoformat(history["releases"][VERSION]["activated_at"].replace("Z", "+00:00"))


def test_the_fleet_has_a_canary_and_stable_hosts():
    assert len(testinfra_hosts) >= 2


def test_new_version_is_current_and_good(host):
    assert host.file("/opt/demoapp/current").linked_to == f"/opt/demoapp/releases/{VERSION}"
    history = _history(host)
    assert history["releases"][VERSION]["verdict"] == "good"
    assert history["history"][-1]["version"] == VERSION


def test_service_active_and_serving_the_new_version(host):
    assert host.service("demoapp").is_running
    out = host.check_output("python3 -c \"import urllib.request as u; "
                            "print(u.urlopen('http://127.0.0.1:8080/', timeout=5).headers['X-App-Version'])\"")
    assert out.strip() == VERSION


def test_the_canary_host_went_first_by_the_length_of_the_steps(host):
    # canary_hosts: 1 picks the first app host; the others are rolled only after the promotion.
    canary = testinfra.get_host(f"ansible://{testinfra_hosts[0]}?ansible_inventory={INVENTORY}")
    lead = (_activated(_history(host)) - _activated(_history(canary))).total_seconds()
    if host.backend.get_hostname() == testinfra_hosts[0]:
        assert lead == 0
    else:
        assert lead >= PAUSES, f"{host.backend.get_hostname()} took {VERSION} only {lead} s after the canary"
