"""Blue/green through deploy.yml and rollback.yml on the lab's blue/green
layout (web1-3 = blue, web4-6 = green, two load balancers), with 100 req/s
through lb1's live route for the whole of each test.

The tests ask for the layout they need (marker ``lab``: LAB_LAYOUT=blue_green,
LAB_LBS=2); conftest switches this test process's lab to it before the test.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest
from conftest import REPO, Lab, ansible_playbook, lab_cli

import lab as labmod
import labconfig
from traffic import TrafficRecorder, is_ok

DEPLOY = os.path.join(REPO, "playbooks", "deploy.yml")
ROLLBACK = os.path.join(REPO, "playbooks", "rollback.yml")
HAPROXY = os.path.join(REPO, "tests", "integration", "playbooks", "haproxy.yml")
MAP = "/etc/haproxy/maps/live_pool.map"
BLUE, GREEN = ["web1", "web2", "web3"], ["web4", "web5", "web6"]
FAST = {"deploy_strategy": "blue_green", "release_liveness_seconds": 2, "blue_green_watch_seconds": 2}


# The lab layout every blue/green test needs (conftest's ``lab`` marker).
BG_LAYOUT = pytest.mark.lab(app_count=6, lb_count=2, layout="blue_green")
pytestmark = BG_LAYOUT


@pytest.fixture
def bg_lab(lab):
    return lab


@pytest.fixture
def bg(bg_lab):
    """Power-cycled back to the baseline: 1.0.0 everywhere, blue live on both LBs."""
    lab_cli("reset")
    bg_lab.refresh()
    return bg_lab


@pytest.fixture
def live_traffic(bg, tmp_path):
    recorder = TrafficRecorder(bg.lb_url, rate=100, duration=1800, out=str(tmp_path / "traffic.jsonl"))
    recorder.start()
    yield recorder
    recorder.stop()


def runtime_map(lab: Lab, lb: str) -> dict[str, str]:
    from ansible_collections.safedeploy.fleet.plugins.module_utils import _haproxy

    return dict(_haproxy.HAProxyClient(lab.admin_socket(lb)).show_map(MAP))


def file_map(lab: Lab, lb: str) -> dict[str, str]:
    text = lab.ssh(lb, f"cat {MAP}").stdout
    return dict(line.split() for line in text.splitlines() if line.strip() and not line.startswith("#"))


def assert_live(lab: Lab, pool: str) -> None:
    idle = "green" if pool == "blue" else "blue"
    for lb in ("lb1", "lb2"):
        assert runtime_map(lab, lb) == {"demoapp": pool, "demoapp_preview": idle}, lb
        assert file_map(lab, lb) == {"demoapp": pool, "demoapp_preview": idle}, lb


def failed(records: list[dict]) -> list[dict]:
    return [r for r in records if not is_ok(r)]


def histories(lab: Lab) -> dict:
    return {h: lab.history(h) for h in BLUE + GREEN}


@pytest.mark.quiet  # the switch back within 5 s of rollback.yml's start: not beside other labs
def test_check_then_switch_to_green_then_reload_then_switch_back(bg, live_traffic):
    # --check: says which pool would become live, changes nothing.
    before = histories(bg)
    check = ansible_playbook(DEPLOY, extra_vars={"deploy_version": "2.0.0", **FAST}, check=True)
    assert check.returncode == 0, check.stdout[-4000:]
    assert "CHECK MODE: green would become live on lb1, lb2" in " ".join(check.stdout.split())
    assert histories(bg) == before
    assert_live(bg, "blue")

    # The switch: green gets 2.0.0 while blue serves everyone, then every LB switches.
    run = ansible_playbook(DEPLOY, extra_vars={"deploy_version": "2.0.0", **FAST})
    switched_at = time.time()
    assert run.returncode == 0, run.stdout[-4000:]
    records = live_traffic.records
    assert failed(records) == []
    assert_live(bg, "green")
    assert {h: bg.version_on(h) for h in GREEN} == dict.fromkeys(GREEN, "2.0.0")
    assert {h: bg.version_on(h) for h in BLUE} == dict.fromkeys(BLUE, "1.0.0"), "the old pool keeps running"
    first_new = min(r["t"] for r in records if r["version"] == "2.0.0")
    last_old = max(r["t"] for r in records if r["version"] == "1.0.0")
    # Before the switch only 1.0.0 was served, after it only 2.0.0.
    assert not [r for r in records if r["version"] == "2.0.0" and r["t"] < first_new]
    assert last_old - first_new < 1.0, f"1.0.0 still answered {last_old - first_new:.3f} s after the first 2.0.0"
    print(f"\nswitch blue->green: {len(records)} requests, 0 failed; last 1.0.0 answer "
          f"{(last_old - first_new) * 1000:.0f} ms after the first 2.0.0 one; "
          f"deploy.yml took {run.elapsed:.1f} s and ended {switched_at - first_new:.1f} s after the first 2.0.0 answer")

    # A reload of HAProxy (a config change through the haproxy role) keeps green live.
    mark = len(live_traffic.records)
    extra = {**labconfig.haproxy_vars(bg.config), "haproxy_timeout_client": "31s", "haproxy_install": False}
    reload = ansible_playbook(HAPROXY, extra_vars=extra)
    assert reload.returncode == 0, reload.stdout[-3000:]
    assert "timeout client 31s" in bg.ssh("lb2", "cat /etc/haproxy/haproxy.cfg").stdout
    time.sleep(1)
    after_reload = live_traffic.records[mark:]
    assert_live(bg, "green")
    # Every answer after the reload still comes from green. (The reload itself
    # closes idle keep-alive client connections of the old HAProxy worker -
    # the haproxy role's concern, not the switch's - so failures are only shown.)
    assert {r["version"] for r in after_reload if r["version"]} == {"2.0.0"}
    reload_failures = failed(after_reload)
    print(f"haproxy reload after the switch: {len(reload_failures)} of {len(after_reload)} requests failed "
          f"({sorted({r['error'] or r['status'] for r in reload_failures}, key=str)}), green stayed live")

    # rollback.yml: back to blue in seconds, no host touched.
    before = histories(bg)
    mark = len(live_traffic.records)
    started = time.time()
    back = ansible_playbook(ROLLBACK)
    assert back.returncode == 0, back.stdout[-4000:]
    time.sleep(1)
    records = live_traffic.records[mark:]
    assert failed(records) == []
    assert_live(bg, "blue")
    last_green = max(r["t"] for r in records if r["version"] == "2.0.0")
    assert all(r["version"] == "1.0.0" for r in records if r["t"] > last_green)
    print(f"switch back green->blue: rollback.yml took {back.elapsed:.1f} s, only 1.0.0 answers "
          f"{last_green - started:.2f} s after it started, 0 failed of {len(records)}")
    assert last_green - started <= 5.0
    assert histories(bg) == before, "a blue/green rollback touches no host"
    assert {h: bg.version_on(h) for h in GREEN} == dict.fromkeys(GREEN, "2.0.0"), "green stays warm"


def test_degraded_release_on_the_idle_pool_is_never_switched_to(bg, live_traffic):
    run = ansible_playbook(DEPLOY, extra_vars={"deploy_version": "2.1.0-degraded", "release_readiness_deadline": 5,
                                               **FAST})
    assert run.returncode != 0
    out = " ".join(run.stdout.split())
    assert "2.1.0-degraded failed on the idle pool green" in out
    assert "degraded" in out.split("failed on the idle pool green", 1)[1]
    assert "Nothing was switched: blue (1.0.0) still serves every request" in out
    assert failed(live_traffic.records) == []
    assert {r["version"] for r in live_traffic.records} == {"1.0.0"}, "the live pool never saw it"
    assert_live(bg, "blue")
    for host in GREEN:  # the release role put each idle host back on its last good release
        assert bg.version_on(host) == "1.0.0"
        assert bg.history(host)["releases"]["2.1.0-degraded"]["verdict"] == "bad"
    assert bg.ssh("lb1", "test -e /var/lib/safedeploy/locks/demoapp-fleet.lock", check=False).returncode == 1


def test_switch_failing_on_the_second_lb_leaves_both_on_the_old_pool(bg, live_traffic):
    # AWX-style phases: prepare (deploy + verify green, no switch) ...
    prepare = ansible_playbook(DEPLOY, extra_vars={"deploy_version": "2.0.0", "blue_green_phase": "prepare", **FAST})
    assert prepare.returncode == 0, prepare.stdout[-4000:]
    assert_live(bg, "blue")
    assert {bg.version_on(h) for h in GREEN} == {"2.0.0"}
    assert {r["version"] for r in live_traffic.records} == {"1.0.0"}

    # ... then the switch, while lb2's map file cannot be replaced (immutable:
    # the runtime change succeeds there, persisting it fails).
    map_on_host = os.path.join(labmod.STATE_DIR, "hosts", "lb2", "haproxy", "maps", "live_pool.map")
    subprocess.run(["chattr", "+i", map_on_host], check=True)
    try:
        switch = ansible_playbook(DEPLOY, extra_vars={"deploy_version": "2.0.0", "blue_green_phase": "switch", **FAST})
    finally:
        subprocess.run(["chattr", "-i", map_on_host], check=True)
    assert switch.returncode != 0
    out = " ".join(switch.stdout.split())
    assert "the switch from blue to green failed: lb2:" in out
    assert "Every load balancer (lb1, lb2) is back on blue" in out
    assert_live(bg, "blue")
    assert failed(live_traffic.records) == []

    # ... and abort: green goes back to its last good release; blue was never touched.
    abort = ansible_playbook(DEPLOY, extra_vars={"deploy_version": "2.0.0", "blue_green_phase": "abort", **FAST})
    assert abort.returncode == 0, abort.stdout[-4000:]
    assert {bg.version_on(h) for h in GREEN} == {"1.0.0"}
    assert bg.history("web4")["releases"]["2.0.0"]["verdict"] == "bad"
    assert {bg.version_on(h) for h in BLUE} == {"1.0.0"}
    assert_live(bg, "blue")
    assert failed(live_traffic.records) == []
