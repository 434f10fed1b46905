"""Rolling updates through deploy.yml on the lab, under 100 req/s of traffic."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import INVENTORY, REPO, ansible_playbook, failed_requests

DEPLOY = os.path.join(REPO, "playbooks", "deploy.yml")
ROLLBACK = os.path.join(REPO, "playbooks", "rollback.yml")
LB_MEMBER = os.path.join(REPO, "tests", "integration", "playbooks", "lb_member_state.yml")
# rolling_analysis (on by default: the lab inventory sets deploy_metrics_url) adds a wait and a
# query per batch; test_analysis.py covers it, and the good-release test below keeps it on.
FAST = {"release_liveness_seconds": 2, "rolling_analysis": False}
LOCK_FILE = "/var/lib/safedeploy/locks/demoapp-fleet.lock"


class RotationSampler:
    """Samples HAProxy every 0.2 s: how many servers are out of rotation."""

    def __init__(self, lab):
        self.lab = lab
        self.samples: list[tuple[float, list[str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                servers = self.lab.haproxy_servers()
                # Out of rotation: drained/maint, or DOWN. ("UP 1/2" still gets traffic.)
                out = [n for n, s in servers.items()
                       if s["admin_state"] != "ready" or not s["status"].startswith("UP")]
                self.samples.append((time.time(), out))
            except Exception:  # noqa: BLE001 - a reload may briefly refuse the socket
                pass
            time.sleep(0.2)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    @property
    def max_out(self) -> int:
        return max((len(out) for _, out in self.samples), default=0)


def assert_all_up(lab, within: float = 15.0):
    """Every server ready and UP with a passed check, waiting up to ``within`` s.

    Right after an HAProxy reload the new process restores "UP" from the state
    file but has no check result yet; the first checks land within one interval.
    """
    deadline = time.monotonic() + within
    while True:
        servers = lab.haproxy_servers()
        if all(s["admin_state"] == "ready" and s["healthy"] for s in servers.values()):
            return
        assert time.monotonic() < deadline, {
            n: (s["admin_state"], s["status"], s["check_status"]) for n, s in servers.items()}
        time.sleep(0.5)


def lock_path(lab) -> str:
    return f"/proc/{lab.leader('lb1')}/root{LOCK_FILE}"


def test_rolling_good_release_drops_nothing(fresh_lab, traffic):
    with RotationSampler(fresh_lab) as sampler:
        # The defaults a user gets, metric analysis between the batches included.
        run = ansible_playbook(DEPLOY, extra_vars={"deploy_version": "2.0.0", **FAST, "rolling_analysis": True})
    assert run.returncode == 0, run.stdout[-4000:]
    judged = " ".join(run.stdout.split())
    assert "ROLLING ANALYSIS: PASS" in judged and "ROLLING ANALYSIS: FAIL" not in judged, run.stdout[-4000:]
    assert failed_requests(traffic) == []
    assert len(traffic.records) > 1000
    hosts = [h.name for h in fresh_lab.app_hosts]
    assert {h: fresh_lab.version_on(h) for h in hosts} == dict.fromkeys(hosts, "2.0.0")
    for host in hosts:
        history = fresh_lab.history(host)
        assert history["history"][-1]["version"] == "2.0.0"
        assert history["releases"]["2.0.0"]["verdict"] == "good"
    # rolling_max_unavailable 25 % of 6 servers: never more than one out.
    assert len(sampler.samples) > 50
    assert sampler.max_out == 1, [s for s in sampler.samples if len(s[1]) > 1][:3]
    assert_all_up(fresh_lab)
    assert "rolled out 2.0.0" in run.stdout
    assert not os.path.exists(lock_path(fresh_lab))

    # And back: rollback.yml drains each host first, so it drops nothing either.
    mark = len(traffic.records)
    back = ansible_playbook(ROLLBACK)
    assert back.returncode == 0, back.stdout[-4000:]
    assert failed_requests(traffic, mark) == []
    assert {fresh_lab.version_on(h) for h in hosts} == {"1.0.0"}
    assert_all_up(fresh_lab)


@pytest.mark.extended  # rolling_stage (opt-in): in make test-extended, to keep make test within 30 minutes
def test_staged_rollout_unpacks_everywhere_first_and_drops_nothing(fresh_lab, traffic):
    run = ansible_playbook(DEPLOY, extra_vars={"deploy_version": "2.0.0", "rolling_stage": True, **FAST})
    assert run.returncode == 0, run.stdout[-4000:]
    assert "Stage the release on every host before the first batch" in run.stdout
    assert failed_requests(traffic) == []
    hosts = [h.name for h in fresh_lab.app_hosts]
    assert {h: fresh_lab.version_on(h) for h in hosts} == dict.fromkeys(hosts, "2.0.0")
    releases = {h: fresh_lab.history(h)["releases"]["2.0.0"] for h in hosts}
    assert {h: r["verdict"] for h, r in releases.items()} == dict.fromkeys(hosts, "good")
    # Every host had 2.0.0 unpacked before the first one was activated.
    last_unpacked = max(r["unpacked_at"] for r in releases.values())
    first_activated = min(r["activated_at"] for r in releases.values())
    assert last_unpacked <= first_activated, releases
    assert_all_up(fresh_lab)
    assert not os.path.exists(lock_path(fresh_lab))


def test_never_ready_release_is_stopped_and_fleet_restored(fresh_lab, traffic):
    run = ansible_playbook(DEPLOY, extra_vars={"deploy_version": "2.1.0-never-ready",
                                               "release_readiness_deadline": 6, **FAST})
    assert run.returncode != 0
    out = " ".join(run.stdout.split())
    assert "The rollout of 2.1.0-never-ready stopped" in out
    assert "readiness" in out and "status 503" in out
    assert failed_requests(traffic) == []
    assert {fresh_lab.version_on(h.name) for h in fresh_lab.app_hosts} == {"1.0.0"}
    assert fresh_lab.history("web1")["releases"]["2.1.0-never-ready"]["verdict"] == "bad"
    assert_all_up(fresh_lab)


@pytest.mark.extended  # in make test-extended since issue 14 added its no-Prometheus analyses: keeps make test within 20 minutes
def test_failure_in_a_later_batch_undoes_the_hosts_already_updated(fresh_lab, traffic):
    # web4 cannot start any release (a drop-in that always fails), so the
    # rollout stops at its batch after web1..web3 were updated.
    fresh_lab.ssh("web4", "mkdir -p /etc/systemd/system/demoapp.service.d && printf "
                          "'[Service]\\nExecStartPre=/bin/false\\n' > "
                          "/etc/systemd/system/demoapp.service.d/broken.conf && systemctl daemon-reload")
    run = ansible_playbook(DEPLOY, extra_vars={"deploy_version": "2.0.0", "release_readiness_deadline": 5,
                                               "lb_member_up_timeout": 10, **FAST})
    assert run.returncode != 0
    out = " ".join(run.stdout.split())
    assert "stopped: 1 of 1 host(s) in the batch failed" in out or "The rollout of 2.0.0 stopped" in out
    assert "Every host it had updated is back on its last good release" in out
    for host in ("web1", "web2", "web3"):
        assert fresh_lab.version_on(host) == "1.0.0"
        assert fresh_lab.history(host)["releases"]["2.0.0"]["verdict"] == "bad"
    for host in ("web5", "web6"):  # never touched
        assert fresh_lab.version_on(host) == "1.0.0"
        assert "2.0.0" not in fresh_lab.history(host)["releases"]
    assert failed_requests(traffic) == []
    servers = fresh_lab.haproxy_servers()
    # web4 is down and stays out of rotation; every other server serves.
    assert {n for n, s in servers.items() if s["admin_state"] == "ready" and s["healthy"]} == {
        "web1", "web2", "web3", "web5", "web6"}


def _lb_state(lab, server: str, state: str) -> None:
    run = ansible_playbook(LB_MEMBER, extra_vars={"target": server, "lb_member_state": state})
    assert run.returncode == 0, run.stdout[-3000:]


def test_haproxy_reload_keeps_a_drained_server_drained(fresh_lab):
    _lb_state(fresh_lab, "web2", "drain")
    assert fresh_lab.haproxy_servers()["web2"]["admin_state"] == "drain"
    sys.path.insert(0, os.path.join(REPO, "tests", "lab"))
    import labconfig

    # A config change through the haproxy role: state saved, config checked, graceful reload.
    extra = {**labconfig.haproxy_vars(fresh_lab.config), "haproxy_timeout_client": "31s",
             "haproxy_install": False}
    old_pid = fresh_lab.ssh("lb1", "systemctl show -p MainPID --value haproxy").stdout.strip()
    run = ansible_playbook(os.path.join(REPO, "tests", "integration", "playbooks", "haproxy.yml"),
                           extra_vars=extra)
    assert run.returncode == 0, run.stdout[-3000:]
    assert "timeout client 31s" in fresh_lab.ssh("lb1", "cat /etc/haproxy/haproxy.cfg").stdout
    workers = fresh_lab.ssh("lb1", "pgrep -c -f 'haproxy -Ws'", check=False).stdout
    assert workers.strip(), "haproxy is not running after the reload"
    assert fresh_lab.ssh("lb1", "systemctl show -p MainPID --value haproxy").stdout.strip() == old_pid, \
        "a reload, not a restart"
    servers = fresh_lab.haproxy_servers()
    assert servers["web2"]["admin_state"] == "drain", servers["web2"]
    assert all(s["admin_state"] == "ready" for n, s in servers.items() if n != "web2")

    # Outside Ansible too: the role's systemd drop-in saves the state before
    # a bare reload or restart (web3 drained after the last save, so only a
    # fresh save keeps it out).
    _lb_state(fresh_lab, "web3", "drain")
    for command in ("systemctl reload haproxy", "systemctl restart haproxy"):
        fresh_lab.ssh("lb1", command)
        servers = fresh_lab.haproxy_servers()
        assert {n: s["admin_state"] for n, s in servers.items() if s["admin_state"] != "ready"} == \
            {"web2": "drain", "web3": "drain"}, (command, servers)
    _lb_state(fresh_lab, "web2", "ready")
    _lb_state(fresh_lab, "web3", "ready")
    assert_all_up(fresh_lab)


@pytest.mark.extended  # in make test-extended since issue 14 added its no-Prometheus analyses: keeps make test within 20 minutes
def test_second_run_stops_at_the_lock_and_first_completes(fresh_lab, traffic):
    first = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", INVENTORY, DEPLOY,
         "-e", json.dumps({"deploy_version": "2.0.0", **FAST})],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while not os.path.exists(lock_path(fresh_lab)):
        assert time.monotonic() < deadline, "the first run never took the lock"
        assert first.poll() is None, first.stdout.read()
        time.sleep(0.2)
    started = time.monotonic()
    second = ansible_playbook(DEPLOY, extra_vars={"deploy_version": "3.0.0"})
    second_took = time.monotonic() - started
    out_first = first.communicate(timeout=600)[0]
    assert second.returncode != 0
    assert "is held by" in second.stdout and "lb1" in second.stdout
    assert second_took < 10, f"the second run took {second_took:.1f} s to stop"
    assert first.returncode == 0, out_first[-4000:]
    assert {fresh_lab.version_on(h.name) for h in fresh_lab.app_hosts} == {"2.0.0"}
    assert failed_requests(traffic) == []
    assert_all_up(fresh_lab)


@pytest.mark.extended  # in make test-extended since issue 14 added its no-Prometheus analyses: keeps make test within 20 minutes
def test_killed_run_is_finished_by_the_next_one(fresh_lab, traffic):
    proc = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", INVENTORY, DEPLOY,
         "-e", json.dumps({"deploy_version": "2.0.0", "release_liveness_seconds": 5})],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    # Kill it (and its workers) mid-batch: once the second host is drained.
    deadline = time.monotonic() + 120
    while True:
        assert time.monotonic() < deadline, "the run never drained web2"
        assert proc.poll() is None, "the run ended before it could be killed"
        if fresh_lab.haproxy_servers()["web2"]["admin_state"] == "drain":
            break
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert os.path.exists(lock_path(fresh_lab)), "the killed run's lock should still be there"
    stranded = fresh_lab.haproxy_servers()["web2"]["admin_state"]
    assert stranded == "drain"

    # A plain re-run refuses: it reports the stranded server.
    refused = ansible_playbook(DEPLOY, extra_vars={"deploy_version": "2.0.0", **FAST})
    assert refused.returncode != 0
    assert "took over the stale lock" in refused.stdout
    assert "left out of rotation" in refused.stdout and "web2" in refused.stdout

    rerun = ansible_playbook(DEPLOY, extra_vars={"deploy_version": "2.0.0", "preflight_restore_stranded": True,
                                                 **FAST})
    assert rerun.returncode == 0, rerun.stdout[-4000:]
    assert {fresh_lab.version_on(h.name) for h in fresh_lab.app_hosts} == {"2.0.0"}
    assert failed_requests(traffic) == []
    assert_all_up(fresh_lab)


def test_check_mode_prints_the_plan_and_changes_nothing(fresh_lab):
    before = {h.name: fresh_lab.history(h.name) for h in fresh_lab.app_hosts}
    servers_before = {n: (s["admin_state"], s["weight"]) for n, s in fresh_lab.haproxy_servers().items()}
    run = ansible_playbook(DEPLOY, extra_vars={"deploy_version": "2.0.0"}, check=True)
    assert run.returncode == 0, run.stdout[-4000:]
    for batch, host in enumerate(["web1", "web2", "web3", "web4", "web5", "web6"], start=1):
        assert f"batch {batch}" in run.stdout.lower() and host in run.stdout
    for host in fresh_lab.app_hosts:
        assert fresh_lab.history(host.name) == before[host.name]
        assert fresh_lab.version_on(host.name) == "1.0.0"
    assert {n: (s["admin_state"], s["weight"]) for n, s in fresh_lab.haproxy_servers().items()} == servers_before
    assert not os.path.exists(lock_path(fresh_lab))


@pytest.mark.parametrize("bad", ["1.0 bad;rm", "../2.0.0", ""])
def test_bad_version_is_refused_before_anything_changes(fresh_lab, bad):
    run = ansible_playbook(DEPLOY, extra_vars={"deploy_version": bad,
                                               "deploy_artifact_checksum": "sha256:" + "0" * 64})
    assert run.returncode != 0
    assert "is not a valid version string" in run.stdout or "deploy_version" in run.stdout
    assert not os.path.exists(lock_path(fresh_lab))
    assert {fresh_lab.version_on(h.name) for h in fresh_lab.app_hosts} == {"1.0.0"}
