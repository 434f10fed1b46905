"""HAProxy reloaded (through the haproxy role) in the middle of a canary and right
after a blue/green switch, under 100 req/s: weights, drains and the live pool
survive. The reload in the middle of a rolling update is in
test_faults_rolling.py; docs/reliability.md lists the whole suite.
"""

from __future__ import annotations

import threading

import pytest
from conftest import Lab, ansible_playbook, failed_requests, lab_cli
from test_blue_green import BG_LAYOUT, BLUE, GREEN, assert_live, runtime_map
from test_blue_green import FAST as BG_FAST
from test_canary import FAST as CANARY_FAST
from test_canary import WeightSampler, assert_all_up_at_base_weight
from test_faults_rolling import Deploy, HAPROXY, assert_on, histories

import labconfig
from traffic import TrafficRecorder

# Fault injection: long runs, in make test-extended (not make test).
pytestmark = pytest.mark.extended

CANARY_STEPS = [{"weight": 10}, {"pause": 25}, {"analysis": {"window": "15s"}}]


def reload_lbs(lab: Lab, timeout_client: str) -> None:
    """A config change on every LB through the haproxy role: state saved, graceful reload."""
    workers = {lb: lab.ssh(lb, "pgrep -f 'haproxy -Ws' | sort").stdout for lb in [h.name for h in lab.config.lb_hosts]}
    run = ansible_playbook(HAPROXY, extra_vars={**labconfig.haproxy_vars(lab.config), "haproxy_install": False,
                                                "haproxy_timeout_client": timeout_client})
    assert run.returncode == 0, run.stdout[-3000:]
    for lb, before in workers.items():
        assert f"timeout client {timeout_client}" in lab.ssh(lb, "cat /etc/haproxy/haproxy.cfg").stdout
        assert lab.ssh(lb, "pgrep -f 'haproxy -Ws' | sort").stdout != before, f"HAProxy on {lb} was not reloaded"


def test_haproxy_reload_mid_canary_keeps_the_weights(fresh_lab, traffic, tmp_path):
    lab = fresh_lab
    at_ten_percent = threading.Event()

    def watch(sample):  # canary weight 55 on web1, stable 99: the 10 % step is in place
        if sample[1] == 55 and sample[2] == 99 and sample[3] == "ready":
            at_ten_percent.set()

    with WeightSampler(lab, on_sample=watch):
        deploy = Deploy(tmp_path, deploy_strategy="canary", deploy_version="2.0.0", canary_steps=CANARY_STEPS,
                        canary_analysis_window="15s", **CANARY_FAST)
        deploy.wait_for(at_ten_percent.is_set, "the 10 % canary step")
        reload_lbs(lab, "34s")
        weights = {n: (s["admin_state"], s["weight"]) for n, s in lab.haproxy_servers().items()}
        rc, out = deploy.finish()
    assert weights == {"web1": ("ready", 55), **dict.fromkeys(["web2", "web3", "web4", "web5", "web6"], ("ready", 99))}
    assert rc == 0, out[-4000:]
    text = " ".join(out.split())
    assert "CANARY PROMOTED" in text, text[-3000:]
    assert text.count("CANARY ANALYSIS") == 1 and text.count(": PASS - pass:") == 1, text[-3000:]
    assert_on(lab, "2.0.0")
    assert_all_up_at_base_weight(lab)
    assert failed_requests(traffic) == []


# Blue/green: the test asks for the blue/green layout (conftest switches this
# test process's lab to it).


@pytest.fixture
def bg_lab_then_back(lab):
    return lab


@pytest.fixture
def bg_traffic(bg_lab_then_back, tmp_path):
    lab_cli("reset")
    bg_lab_then_back.refresh()
    recorder = TrafficRecorder(bg_lab_then_back.lb_url, rate=100, duration=1800, out=str(tmp_path / "traffic.jsonl"))
    recorder.start()
    yield recorder
    recorder.stop()


@BG_LAYOUT
def test_haproxy_reload_right_after_a_blue_green_switch_keeps_green_live(bg_lab_then_back, bg_traffic, tmp_path):
    lab = bg_lab_then_back
    assert_live(lab, "blue")
    before = histories(lab, BLUE)
    # A longer watch after the switch, so both reloads land inside it.
    deploy = Deploy(tmp_path, deploy_version="2.0.0", **{**BG_FAST, "blue_green_watch_seconds": 20,
                                                             "blue_green_analysis": False})
    deploy.wait_for(lambda: runtime_map(lab, "lb1")["demoapp"] == "green", "the switch to green", timeout=300)
    reload_lbs(lab, "35s")
    assert_live(lab, "green")
    rc, out = deploy.finish()
    assert rc == 0, out[-4000:]
    assert_live(lab, "green")
    assert_on(lab, "2.0.0", GREEN)
    for host in BLUE:  # the old pool stays warm on 1.0.0, untouched
        assert lab.version_on(host) == "1.0.0"
        assert lab.history(host) == before[host]
    for lb in [h.name for h in lab.config.lb_hosts]:
        servers = lab.haproxy_servers(lb)
        assert all(s["admin_state"] == "ready" and s["healthy"] for s in servers.values()), (lb, servers)
    assert failed_requests(bg_traffic) == []
