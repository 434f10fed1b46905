"""The release and rollback roles on the lab: good releases, bad ones caught
by each probe, history kept right, idempotence and check mode."""

from __future__ import annotations

import os

import pytest

from conftest import REPO, ansible_playbook, failed_requests, recap

RELEASE = os.path.join(REPO, "tests", "integration", "playbooks", "release.yml")
ROLLBACK = os.path.join(REPO, "playbooks", "rollback.yml")
FAST = {"release_liveness_seconds": 3}


def _verdicts(lab, host: str) -> dict[str, str]:
    return {v: r["verdict"] for v, r in lab.history(host)["releases"].items()}


@pytest.mark.extended  # in make test-extended since issue 14 added its no-Prometheus analyses: keeps make test within 20 minutes
def test_release_everywhere_then_rollback_keeps_history_right(fresh_lab, traffic):
    hosts = [h.name for h in fresh_lab.app_hosts]
    for version in ("1.0.0", "2.0.0"):
        run = ansible_playbook(RELEASE, extra_vars={"deploy_version": version, **FAST})
        assert run.returncode == 0, run.stdout[-3000:]
    assert {fresh_lab.version_on(h) for h in hosts} == {"2.0.0"}
    for host in hosts:
        assert _verdicts(fresh_lab, host) == {"1.0.0": "good", "2.0.0": "good"}

    mark = len(traffic.records)
    run = ansible_playbook(ROLLBACK)
    assert run.returncode == 0, run.stdout[-3000:]
    assert len(traffic.records) - mark > 500
    failed = failed_requests(traffic, mark)
    assert failed == [], failed[:5]

    for host in hosts:
        assert fresh_lab.version_on(host) == "1.0.0"
        history = fresh_lab.history(host)
        assert history["history"][-1]["version"] == "1.0.0"
        assert _verdicts(fresh_lab, host) == {"1.0.0": "good", "2.0.0": "bad"}
        assert fresh_lab.ssh(host, "readlink /opt/demoapp/current").stdout.strip() == "releases/1.0.0"
    assert all(s["healthy"] and s["admin_state"] == "ready"
               for s in fresh_lab.haproxy_servers().values())

    # 2.0.0 is bad now: a second rollback has nothing good to go to and says so.
    again = ansible_playbook(ROLLBACK, "--limit", "web1")
    assert again.returncode != 0
    assert "no release to roll back to" in again.stdout
    assert "2.0.0=bad" in again.stdout
    assert fresh_lab.version_on("web1") == "1.0.0"


def test_second_run_changes_nothing_and_check_mode_touches_nothing(fresh_lab):
    first = ansible_playbook(RELEASE, extra_vars={"deploy_version": "2.0.0", **FAST})
    assert first.returncode == 0, first.stdout[-3000:]
    second = ansible_playbook(RELEASE, extra_vars={"deploy_version": "2.0.0", **FAST})
    assert second.returncode == 0
    assert {h: s["changed"] for h, s in recap(second.stdout).items()} == {
        h.name: 0 for h in fresh_lab.app_hosts}

    before = {h.name: fresh_lab.history(h.name) for h in fresh_lab.app_hosts}
    listing = {h.name: fresh_lab.ssh(h.name, "ls -A /opt/demoapp/releases").stdout
               for h in fresh_lab.app_hosts}
    check = ansible_playbook(RELEASE, extra_vars={"deploy_version": "3.0.0"}, check=True)
    assert check.returncode == 0, check.stdout[-3000:]
    assert all(s["changed"] > 0 for s in recap(check.stdout).values())  # it says what would change
    for host in fresh_lab.app_hosts:
        assert fresh_lab.history(host.name) == before[host.name]
        assert fresh_lab.ssh(host.name, "ls -A /opt/demoapp/releases").stdout == listing[host.name]
        assert fresh_lab.version_on(host.name) == "2.0.0"


def _deploy_bad(lab, host: str, version: str, **extra) -> str:
    run = ansible_playbook(RELEASE, "--limit", host, extra_vars={"deploy_version": version, **extra})
    assert run.returncode != 0, f"{version} was not caught:\n{run.stdout[-3000:]}"
    assert lab.version_on(host) == "1.0.0"
    assert _verdicts(lab, host)[version] == "bad"
    assert f"The host is back on 1.0.0 (ready), and {version} is marked" in " ".join(run.stdout.split())
    return " ".join(run.stdout.split())


def test_never_ready_release_is_caught_and_host_restored(fresh_lab):
    out = _deploy_bad(fresh_lab, "web1", "2.1.0-never-ready", release_readiness_deadline=6)
    assert "readiness http://" in out and "status 503" in out


def test_degraded_release_is_caught_by_the_json_check(fresh_lab):
    out = _deploy_bad(fresh_lab, "web2", "2.1.0-degraded", release_readiness_deadline=5)
    assert "JSON check 'status' expected 'ok' got 'degraded'" in out.replace("''", "'")


def test_crashing_release_is_caught_by_the_liveness_watch(fresh_lab):
    # The crash flavour passes readiness and dies about 20 s after starting.
    out = _deploy_bad(fresh_lab, "web3", "2.1.0-crash", release_liveness_seconds=25)
    assert "liveness watch" in out and "during the liveness watch" in out
