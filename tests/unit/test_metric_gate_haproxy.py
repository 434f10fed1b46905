# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""metric_gate provider haproxy: in-process on written samples, then end to end by ansible-playbook
(haproxy_info in a loop over two real HAProxy processes, the haproxy_sample filter, metric_gate)."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from ansible_collections.safedeploy.fleet.plugins.modules import metric_gate
from haproxy_fixture import Backend, HAProxy, run_module

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK_BIN = Path(sys.executable).parent / "ansible-playbook"


def counters(**numbers):
    return {"hrsp_2xx": 0, "hrsp_5xx": 0, "econ": 0, "eresp": 0, "rtime": 3, "scur": 0, **numbers}


def samples(new_now, base_now=None):
    start = {"lb1": {"error": None, "process": {"pid": 1}, "servers": {
        "app/web1": counters(), "app/web2": counters()}}}
    now = {"lb1": {"error": None, "process": {"pid": 1}, "servers": {
        "app/web1": new_now, "app/web2": base_now or counters(hrsp_2xx=500)}}}
    return start, now


def gate(**args):
    return run_module(metric_gate, {"provider": "haproxy", **args})


def test_pass_without_url():
    start, now = samples(counters(hrsp_2xx=300))
    failed, result = gate(haproxy_start=start, haproxy_now=now, canary=["web1"], stable=["web2"])
    assert not failed, result
    assert result["verdict"] == "pass" and result["changed"] is False and result["requests"] == 300
    assert [m["name"] for m in result["metrics"]] == ["error_rate", "latency", "saturation"]
    assert result["window_restarted"] == [] and result["groups"]["new"]["servers"] == ["app/web1"]


def test_fail_fails_the_task_unless_fail_on_is_empty():
    start, now = samples(counters(hrsp_2xx=240, hrsp_5xx=60))
    failed, result = gate(haproxy_start=start, haproxy_now=now, canary=["web1"], stable=["web2"])
    assert failed and result["verdict"] == "fail" and result["failed_metrics"] == ["error_rate"]
    assert result["msg"].startswith("metric gate: fail: error_rate = 20% is above the maximum 1%")
    failed, result = gate(haproxy_start=start, haproxy_now=now, canary=["web1"], stable=["web2"], fail_on=[])
    assert not failed and result["verdict"] == "fail"


def test_thresholds_and_check_mode():
    start, now = samples(counters(hrsp_2xx=240, hrsp_5xx=60))
    failed, result = run_module(metric_gate, {"provider": "haproxy", "haproxy_start": start, "haproxy_now": now,
                                              "canary": ["app/web1"], "thresholds": {"error_rate_max": 25}},
                                check_mode=True)
    assert not failed and result["verdict"] == "pass", result


@pytest.mark.parametrize(("args", "message"), [
    ({}, "provider is haproxy but all of the following are missing: haproxy_start, haproxy_now"),
    ({"haproxy_start": {}, "haproxy_now": {}, "canary": ["web1"], "metrics": [{"name": "x", "query": "y", "max": 1}]},
     "metrics is for the prometheus and web providers"),
    ({"haproxy_start": {"lb1": {"servers": {"app/web2": {}}}}, "haproxy_now": {"lb1": {"servers": {"app/web2": {}}}},
      "canary": ["web1"]}, "canary: no server 'web1' on any load balancer read (servers: app/web2)"),
    ({"haproxy_start": {}, "haproxy_now": {}, "canary": ["web1"], "thresholds": {"p99": 3}}, "unknown threshold(s) p99"),
])
def test_errors(args, message):
    failed, result = gate(**args)
    assert failed and message in result["msg"], result["msg"]


def test_prometheus_still_needs_url():
    failed, result = run_module(metric_gate, {"app": "demoapp", "canary": ["web1"]})
    assert failed and "provider is prometheus but all of the following are missing: url" in result["msg"]


# ---------------------------------------------------------------- end to end

PLAYBOOK = """
- hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{{{ ansible_playbook_python }}}}"
    lbs:
      - {{name: lb1, socket: "{lb1}"}}
      - {{name: lb2, socket: "{lb2}"}}
      - {{name: lb3, socket: "{tmp}/no-such.sock"}}
  tasks:
    - name: read every load balancer as the new version takes traffic
      safedeploy.fleet.haproxy_info:
        socket: "{{{{ item.socket }}}}"
        backends: [app]
      loop: "{{{{ lbs }}}}"
      failed_when: false
      register: lb_start

    - name: say the start sample is taken
      ansible.builtin.file:
        path: "{tmp}/started"
        state: touch
        mode: "0600"

    - name: let it take traffic
      ansible.builtin.wait_for:
        path: "{tmp}/traffic-done"
        timeout: 60

    - name: read them again
      safedeploy.fleet.haproxy_info:
        socket: "{{{{ item.socket }}}}"
        backends: [app]
      loop: "{{{{ lbs }}}}"
      failed_when: false
      register: lb_now

    - name: judge the new server on the two load balancers that answer
      safedeploy.fleet.metric_gate:
        provider: haproxy
        haproxy_start: "{{{{ lb_start.results[:2] | safedeploy.fleet.haproxy_sample }}}}"
        haproxy_now: "{{{{ lb_now.results[:2] | safedeploy.fleet.haproxy_sample }}}}"
        backends: [app]
        canary: [new]
        stable: [old]
        min_requests: 10
        fail_on: []
      register: judged

    - name: the same with every load balancer, one of them unreadable
      safedeploy.fleet.metric_gate:
        provider: haproxy
        haproxy_start: "{{{{ lb_start | safedeploy.fleet.haproxy_sample }}}}"
        haproxy_now: "{{{{ lb_now | safedeploy.fleet.haproxy_sample }}}}"
        canary: [app/new]
        stable: [app/old]
        min_requests: 10
      ignore_errors: true
      register: unreadable

    - name: save the results
      ansible.builtin.copy:
        dest: "{tmp}/results.json"
        content: "{{{{ {{'judged': judged, 'unreadable': unreadable,
                      'sample': lb_now | safedeploy.fleet.haproxy_sample}} | to_json }}}}"
        mode: "0600"
"""

BODY = """
frontend f
  bind 127.0.0.1:FRONT_PORT
  default_backend app
backend app
  use-server new if { path_beg /status }
  use-server old if { path / }
  server new 127.0.0.1:NEW_PORT
  server old 127.0.0.1:OLD_PORT
"""


@pytest.mark.skipif(not PLAYBOOK_BIN.exists(), reason="ansible-playbook is not installed next to this Python")
def test_end_to_end_two_load_balancers(tmp_path):
    new, old = Backend("new"), Backend("old")
    body = BODY.replace("NEW_PORT", str(new.port)).replace("OLD_PORT", str(old.port))
    (tmp_path / "lb1").mkdir()
    (tmp_path / "lb2").mkdir()
    lbs = []
    try:
        lbs.extend([HAProxy(tmp_path / "lb1", body), HAProxy(tmp_path / "lb2", body)])
    except RuntimeError:
        for proxy in lbs:
            proxy.stop()
        new.close()
        old.close()
        raise
    # the new server answers 500 to one request in five, the old one never
    paths = ["/status/200"] * 4 + ["/status/500"] + ["/"] * 5
    playbook = tmp_path / "play.yml"
    playbook.write_text(PLAYBOOK.format(lb1=lbs[0].user_sock, lb2=lbs[1].user_sock, tmp=tmp_path))

    def traffic():
        # between the two samples: once the play has taken the first, before it takes the second
        started = tmp_path / "started"
        deadline = time.monotonic() + 120
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        for _round in range(2):
            for proxy in lbs:
                for path in paths:
                    conn = http.client.HTTPConnection("127.0.0.1", proxy.front_port, timeout=5)
                    conn.request("GET", path)
                    conn.getresponse().read()
                    conn.close()
        (tmp_path / "traffic-done").write_text("done")

    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_LOCALHOST_WARNING": "false",
           "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false", "ANSIBLE_NOCOLOR": "1"}
    try:
        proc = subprocess.Popen([str(PLAYBOOK_BIN), "-i", "localhost,", str(playbook)], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        sender = threading.Thread(target=traffic, daemon=True)
        sender.start()
        out, _ignored = proc.communicate(timeout=180)
        sender.join(10)
    finally:
        for proxy in lbs:
            proxy.stop()
        new.close()
        old.close()
    assert proc.returncode == 0, out[-4000:]
    results = json.loads((tmp_path / "results.json").read_text())

    judged = results["judged"]
    assert judged["verdict"] == "fail" and judged["failed_metrics"] == ["error_rate"], judged["message"]
    assert judged["requests"] == 20 and judged["metrics"][0]["value"] == 20.0
    assert judged["groups"]["baseline"]["requests"] == 20
    assert sorted(judged["load_balancers"]) == ["lb1", "lb2"]

    unreadable = results["unreadable"]
    assert unreadable["failed"] is True and unreadable["verdict"] == "inconclusive"
    assert "lb3 (start): connection:" in unreadable["msg"] and "no-such.sock does not exist" in unreadable["msg"]
    assert results["sample"]["lb3"]["error"]["kind"] == "connection"
    assert set(results["sample"]["lb1"]["servers"]) == {"app/new", "app/old"}
