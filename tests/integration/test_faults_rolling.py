"""Faults injected while playbooks/deploy.yml rolls 2.0.0 out on the lab, under 100 req/s.

Issue 7's fault-injection suite (docs/reliability.md lists every fault with
its test). Each test breaks one thing while a deploy runs in the background,
then asserts what a user relies on: the traffic recorder's failed requests,
the HAProxy server states, the version and the release history on every
host, and that a re-run converges.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import INVENTORY, REPO, ansible_playbook, failed_requests, lab_cli
from test_rolling import assert_all_up, lock_path

# Fault injection: long runs, in make test-extended (not make test).
pytestmark = pytest.mark.extended

DEPLOY = os.path.join(REPO, "playbooks", "deploy.yml")
HAPROXY = os.path.join(REPO, "tests", "integration", "playbooks", "haproxy.yml")
# Short verification; no metric analysis between batches (its own tests are in test_analysis.py).
FAST = {"release_liveness_seconds": 2, "rolling_analysis": False}
HOSTS = ["web1", "web2", "web3", "web4", "web5", "web6"]


class Deploy:
    """ansible-playbook deploy.yml in the background, in its own process group."""

    def __init__(self, tmp_path, playbook: str = DEPLOY, **extra):
        self.log = tmp_path / f"deploy-{time.monotonic_ns()}.log"
        self._out = open(self.log, "w")  # noqa: SIM115 - closed in finish()/kill()
        self.proc = subprocess.Popen(
            [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", INVENTORY, playbook,
             "-e", json.dumps(extra)],
            cwd=REPO, stdout=self._out, stderr=subprocess.STDOUT, text=True, start_new_session=True,
            env={**os.environ, "ANSIBLE_CONFIG": os.path.join(REPO, "ansible.cfg"), "ANSIBLE_FORCE_COLOR": "0"})

    def wait_for(self, condition, what: str, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.proc.poll() is None, f"the deploy ended before {what}:\n{self.output()[-3000:]}"
            assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s"
            time.sleep(0.05)

    def output(self) -> str:
        if not self._out.closed:
            self._out.flush()
        return self.log.read_text()

    def kill(self) -> None:
        """SIGKILL to ansible-playbook and every worker of it, as an OOM killer or a lost node would."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._out.close()

    def finish(self, timeout: float = 600) -> tuple[int, str]:
        self.proc.wait(timeout=timeout)
        self._out.close()
        return self.proc.returncode, self.output()


def flat(text: str) -> str:
    return " ".join(text.split())


def admin_state(lab, server: str) -> str:
    return lab.haproxy_servers()[server]["admin_state"]


def on_host(lab, host: str, path: str) -> str:
    """A path inside a running lab host, read from the lab machine (no SSH round trip)."""
    return f"/proc/{lab.leader(host)}/root{path}"


def current_on(lab, host: str) -> str | None:
    try:
        return os.path.basename(os.readlink(on_host(lab, host, "/opt/demoapp/current")))
    except OSError:
        return None


def histories(lab, hosts=HOSTS) -> dict[str, dict]:
    return {h: lab.history(h) for h in hosts}


def assert_on(lab, version: str, hosts=HOSTS) -> None:
    """Each host runs ``version``, its last activation is it and its verdict is good."""
    for host in hosts:
        assert lab.version_on(host) == version, host
        history = lab.history(host)
        assert history["history"][-1]["version"] == version, (host, history["history"][-3:])
        assert history["releases"][version]["verdict"] == "good", (host, history["releases"])


def assert_converged(lab, run: subprocess.CompletedProcess, version: str = "2.0.0") -> None:
    """A re-run finished the rollout: every host on ``version`` (good), in rotation, lock released."""
    assert run.returncode == 0, run.stdout[-4000:]
    assert f"rolled out {version}" in run.stdout
    assert_on(lab, version)
    assert_all_up(lab)
    assert not os.path.exists(lock_path(lab))


def rerun() -> subprocess.CompletedProcess:
    """What the operator does after a fault: run it again, putting stranded servers back."""
    return ansible_playbook(DEPLOY, extra_vars={"deploy_version": "2.0.0", "preflight_restore_stranded": True,
                                                **FAST})


# 1. A host powered off mid-batch ------------------------------------------------


def power_off_when_drained(lab, deploy: Deploy, host: str) -> str:
    """Power ``host`` off once the deploy has drained it; the deploy must then end failed, naming it."""
    deploy.wait_for(lambda: admin_state(lab, host) == "drain", f"{host} drained")
    lab_cli("kill", host)
    rc, out = deploy.finish()
    assert rc != 0, out[-3000:]
    assert f"fatal: [{host}]: UNREACHABLE!" in out, out[-3000:]
    return out


def start_and_rerun(lab, traffic, host: str) -> subprocess.CompletedProcess:
    """Boot ``host`` again (its /opt kept), re-run the deploy: it converges without a failed request."""
    lab_cli("start", host)
    mark = len(traffic.records)
    again = rerun()
    assert_converged(lab, again)
    assert failed_requests(traffic, mark) == []
    return again


def test_host_powered_off_in_a_batch_of_three_the_rest_goes_on(fresh_lab, traffic, tmp_path):
    """rolling_max_fail_percentage 50, batches of 3: one dead host of 3 (33 %) lets the rollout go on."""
    lab = fresh_lab
    deploy = Deploy(tmp_path, deploy_version="2.0.0", rolling_serial=3, rolling_max_unavailable="50%",
                    rolling_max_fail_percentage=50, **FAST)
    power_off_when_drained(lab, deploy, "web2")
    assert failed_requests(traffic) == []
    others = [h for h in HOSTS if h != "web2"]
    assert_on(lab, "2.0.0", others)  # the rest of the batch and the next batch were updated
    servers = lab.haproxy_servers()
    assert servers["web2"]["admin_state"] == "drain" and not servers["web2"]["healthy"]
    assert all(servers[h]["admin_state"] == "ready" and servers[h]["healthy"] for h in others), servers
    assert not os.path.exists(lock_path(lab)), "the run went on to its last play, which releases the lock"

    again = start_and_rerun(lab, traffic, "web2")
    assert "took over the stale lock" not in again.stdout


def test_host_powered_off_alone_in_its_batch_stops_the_run(fresh_lab, traffic, tmp_path):
    """Default batches of one: the dead host is the whole batch. Ansible alone would end the playbook
    there (no undo, lock left); deploy.yml's ignore_unreachable lets the rollout stop the documented way."""
    lab = fresh_lab
    before = histories(lab)
    deploy = Deploy(tmp_path, deploy_version="2.0.0", **FAST)
    out = power_off_when_drained(lab, deploy, "web2")
    assert failed_requests(traffic) == []
    assert not os.path.exists(lock_path(lab)), "the lock was released"
    # The rollout stopped the documented way: web1, updated by this run, was undone.
    text = flat(out)
    assert "The rollout of 2.0.0 stopped: 1 of 1 host(s) in the batch failed" in text, text[-3000:]
    assert lab.version_on("web1") == "1.0.0"
    assert lab.history("web1")["releases"]["2.0.0"]["verdict"] == "bad"
    for host in ("web3", "web4", "web5", "web6"):  # no further batch started
        assert lab.version_on(host) == "1.0.0"
        assert lab.history(host) == before[host]
    servers = lab.haproxy_servers()
    assert servers["web2"]["admin_state"] == "drain"
    assert all(s["admin_state"] == "ready" and s["healthy"] for n, s in servers.items() if n != "web2"), servers

    again = start_and_rerun(lab, traffic, "web2")
    assert "took over the stale lock" not in again.stdout


# 2. A host cut off the network mid-deploy -----------------------------------------


def test_host_cut_off_the_network_stops_the_rollout_and_undoes_its_batch(fresh_lab, traffic, tmp_path):
    """Batches 1, 2, 2, 1 and rolling_max_fail_percentage 0: web3 cut off in batch 2 stops the rollout;
    web1 and web2, updated by this run, go back to 1.0.0; the re-run after the link returns converges."""
    lab = fresh_lab
    before = histories(lab)
    deploy = Deploy(tmp_path, deploy_version="2.0.0", rolling_serial=[1, 2], rolling_max_unavailable=2, **FAST)
    try:
        deploy.wait_for(lambda: admin_state(lab, "web3") == "drain", "web3 drained")
        lab_cli("link", "web3", "down")
        rc, out = deploy.finish()
    finally:
        lab_cli("link", "web3", "up", check=False)
    text = flat(out)
    assert rc != 0, out[-3000:]
    assert "The rollout of 2.0.0 stopped: 1 of 2 host(s) in the batch failed" in text, text[-3000:]
    assert "Every host it had updated is back on its last good release" in text
    assert failed_requests(traffic) == []
    for host in ("web1", "web2"):
        assert lab.version_on(host) == "1.0.0"
        assert lab.history(host)["releases"]["2.0.0"]["verdict"] == "bad"
    for host in ("web4", "web5", "web6"):
        assert lab.version_on(host) == "1.0.0"
        assert lab.history(host) == before[host]
    servers = lab.haproxy_servers()
    assert servers["web3"]["admin_state"] == "drain", servers["web3"]
    assert all(s["admin_state"] == "ready" for n, s in servers.items() if n != "web3"), servers
    assert not os.path.exists(lock_path(lab))

    mark = len(traffic.records)
    # 2.0.0 is marked bad on web1 and web2 by the undo; deploying it again is the operator's choice.
    again = rerun()
    assert_converged(lab, again)
    assert failed_requests(traffic, mark) == []


# 3. The LB runtime API unreachable ------------------------------------------------


def test_lb_runtime_api_unreachable_stops_before_anything_changes(fresh_lab, traffic):
    lab = fresh_lab
    before = histories(lab)
    releases = {h: lab.ssh(h, "ls -A /opt/demoapp/releases").stdout for h in HOSTS}
    # HAProxy keeps serving; only its runtime API socket is gone from where the deploy looks.
    lab.ssh("lb1", "mv /run/haproxy/admin.sock /run/haproxy/admin.sock.hidden")
    try:
        run = ansible_playbook(DEPLOY, extra_vars={"deploy_version": "2.0.0", **FAST})
    finally:
        lab.ssh("lb1", "mv /run/haproxy/admin.sock.hidden /run/haproxy/admin.sock")
    assert run.returncode != 0
    assert ("the HAProxy runtime API is not usable at level admin on 1 load balancer(s): lb1 (/run/haproxy/admin.sock)"
            in flat(run.stdout)), run.stdout[-3000:]
    for host in HOSTS:
        assert lab.history(host) == before[host]
        assert lab.ssh(host, "ls -A /opt/demoapp/releases").stdout == releases[host]
        assert lab.version_on(host) == "1.0.0"
    assert_all_up(lab)
    assert not os.path.exists(lock_path(lab)), "a failed pre-check releases the lock"
    assert failed_requests(traffic) == []


# 4. The controller killed ----------------------------------------------------------


def _drained(lab):
    return admin_state(lab, "web2") == "drain"


def _artifact_arrived(lab):
    return _drained(lab) and os.path.exists(on_host(lab, "web2", "/opt/demoapp/.safedeploy/incoming/demoapp-2.0.0.tar.gz"))


def _activated(lab):
    return _drained(lab) and current_on(lab, "web2") == "2.0.0"


KILL_POINTS = {"during_drain": _drained, "during_unpack": _artifact_arrived, "after_activate_before_enable": _activated}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_controller_killed_then_rerun_converges(fresh_lab, traffic, tmp_path, point):
    lab = fresh_lab
    deploy = Deploy(tmp_path, deploy_version="2.0.0", **{**FAST, "release_liveness_seconds": 5})
    deploy.wait_for(lambda: KILL_POINTS[point](lab), f"web2 reached {point}")
    deploy.kill()
    if point == "during_unpack":
        # What an unpack cut short leaves: a half-written temporary release folder.
        lab.ssh("web2", "mkdir -p /opt/demoapp/releases/.tmp-2.0.0-killed && "
                        "head -c 3000 /dev/urandom > /opt/demoapp/releases/.tmp-2.0.0-killed/demoapp.py")
    assert os.path.exists(lock_path(lab)), "the killed run's lock should still be there"
    assert admin_state(lab, "web2") == "drain"

    again = rerun()
    assert_converged(lab, again)
    assert "took over the stale lock" in again.stdout
    assert "left out of rotation" in again.stdout and "web2" in again.stdout
    assert lab.ssh("web2", "ls -A /opt/demoapp/releases").stdout.split() == ["1.0.0", "2.0.0"]
    assert failed_requests(traffic) == []


# 5. A full disk during unpack ----------------------------------------------------

FULL_DISK = (
    # The releases folder on a tmpfs with room for what it holds and a few KB, no more.
    "set -e; cp -a /opt/demoapp/releases /tmp/releases-copy; "
    "mount -t tmpfs -o size=24k,mode=0755 sd-full /opt/demoapp/releases; "
    "cp -a /tmp/releases-copy/. /opt/demoapp/releases/; df -k /opt/demoapp/releases | tail -1"
)


def test_full_disk_during_unpack_leaves_current_alone(fresh_lab, traffic):
    lab = fresh_lab
    before = histories(lab)
    lab.ssh("web2", FULL_DISK)
    run = ansible_playbook(DEPLOY, extra_vars={"deploy_version": "2.0.0", **FAST})
    text = flat(run.stdout)
    assert run.returncode != 0
    assert "No space left on device" in text, text[-3000:]
    assert "The rollout of 2.0.0 stopped: 1 of 1 host(s) in the batch failed" in text
    assert "Every host it had updated is back on its last good release" in text
    # web2: current untouched, no partial release, nothing recorded, back in rotation.
    assert current_on(lab, "web2") == "1.0.0"
    assert lab.ssh("web2", "ls -A /opt/demoapp/releases").stdout.split() == ["1.0.0"]
    assert lab.history("web2") == before["web2"]
    assert lab.version_on("web2") == "1.0.0"
    # web1 (the batch before) was undone; the others were never touched.
    assert lab.version_on("web1") == "1.0.0"
    assert lab.history("web1")["releases"]["2.0.0"]["verdict"] == "bad"
    for host in ("web3", "web4", "web5", "web6"):
        assert lab.history(host) == before[host]
    assert_all_up(lab)
    assert not os.path.exists(lock_path(lab))
    assert failed_requests(traffic) == []


def test_full_disk_while_staging_stops_before_any_host_changes(fresh_lab, traffic):
    # rolling_stage: every host gets the release before the first batch, so a
    # host that cannot take it stops the run before anything is activated.
    lab = fresh_lab
    before = histories(lab)
    lab.ssh("web2", FULL_DISK)
    run = ansible_playbook(DEPLOY, extra_vars={"deploy_version": "2.0.0", "rolling_stage": True, **FAST})
    text = flat(run.stdout)
    assert run.returncode != 0
    assert "staging 2.0.0 failed before the first batch, so no host was drained or activated: web2:" in text, \
        text[-3000:]
    assert "No space left on device" in text
    # No host activated anything: same current, same activations, same verdicts.
    for host in HOSTS:
        assert current_on(lab, host) == "1.0.0", host
        after = lab.history(host)
        assert after["history"] == before[host]["history"], host
        assert after["releases"]["1.0.0"] == before[host]["releases"]["1.0.0"], host
    # web2: no partial release, nothing recorded; the others hold 2.0.0 unpacked, never activated.
    assert lab.ssh("web2", "ls -A /opt/demoapp/releases").stdout.split() == ["1.0.0"]
    assert lab.history("web2") == before["web2"]
    for host in ("web1", "web3", "web4", "web5", "web6"):
        staged = lab.history(host)["releases"]["2.0.0"]
        assert staged["verdict"] == "pending" and staged["activated_at"] is None, (host, staged)
    assert_all_up(lab)
    assert not os.path.exists(lock_path(lab))
    assert failed_requests(traffic) == []


# 6. HAProxy reloaded mid-deploy (mid-canary and after a blue/green switch: test_faults_reload.py) ----


def reload_haproxy(lab, timeout_client: str) -> None:
    """A config change through the haproxy role: server state saved, then a graceful reload."""
    sys.path.insert(0, os.path.join(REPO, "tests", "lab"))
    import labconfig

    old_workers = lab.ssh("lb1", "pgrep -f 'haproxy -Ws' | sort").stdout
    run = ansible_playbook(HAPROXY, extra_vars={**labconfig.haproxy_vars(lab.config), "haproxy_install": False,
                                                "haproxy_timeout_client": timeout_client})
    assert run.returncode == 0, run.stdout[-3000:]
    assert f"timeout client {timeout_client}" in lab.ssh("lb1", "cat /etc/haproxy/haproxy.cfg").stdout
    assert lab.ssh("lb1", "pgrep -f 'haproxy -Ws' | sort").stdout != old_workers, "HAProxy was not reloaded"


def test_haproxy_reload_mid_rolling_keeps_the_drained_host_out(fresh_lab, traffic, tmp_path):
    lab = fresh_lab
    # A longer liveness watch, so the reload lands while web3 is still drained.
    deploy = Deploy(tmp_path, deploy_version="2.0.0", **{**FAST, "release_liveness_seconds": 12})
    deploy.wait_for(lambda: admin_state(lab, "web3") == "drain", "web3 drained")
    reload_haproxy(lab, "33s")
    servers = lab.haproxy_servers()
    assert servers["web3"]["admin_state"] == "drain", servers["web3"]
    assert all(s["admin_state"] == "ready" for n, s in servers.items() if n != "web3"), servers
    rc, out = deploy.finish()
    assert rc == 0, out[-4000:]
    assert_on(lab, "2.0.0")
    assert_all_up(lab)
    assert failed_requests(traffic) == []


# 8. An app that passes readiness, then dies during the liveness watch ---------------


def test_release_dying_during_the_liveness_watch_is_rolled_back(fresh_lab, traffic):
    lab = fresh_lab
    before = histories(lab)
    run = ansible_playbook(DEPLOY, extra_vars={
        **FAST, "deploy_version": "2.1.0-crash", "release_liveness_seconds": 12,
        "release_unit_environment": {"DEMOAPP_CRASH_AFTER": "5"}})
    text = flat(run.stdout)
    assert run.returncode != 0
    assert "during the liveness watch" in text, text[-3000:]
    assert "The rollout of 2.1.0-crash stopped" in text
    assert lab.version_on("web1") == "1.0.0"
    history = lab.history("web1")
    assert history["releases"]["2.1.0-crash"]["verdict"] == "bad"
    assert history["history"][-1]["version"] == "1.0.0"
    for host in HOSTS[1:]:
        assert lab.history(host) == before[host]
        assert lab.version_on(host) == "1.0.0"
    assert_all_up(lab)
    assert not os.path.exists(lock_path(lab))
    assert failed_requests(traffic) == []
