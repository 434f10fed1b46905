# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""safedeploy.fleet.metric_gate run end to end by ansible-playbook against a fake Prometheus."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from metrics_fixture import FakePrometheus

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK_BIN = Path(sys.executable).parent / "ansible-playbook"
TOKEN = "s3cret-prom-token"
PASSWORD = "s3cret-basic-pw"

PLAYBOOK = """
- hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{{{ ansible_playbook_python }}}}"
  tasks:
    - name: a healthy canary, default analysis, bearer token, check mode
      safedeploy.fleet.metric_gate:
        url: "{good}"
        app: demoapp
        canary: [web1]
        stable: [web2, web3]
        window: 15s
        bearer_token: "{token}"
      check_mode: true
      register: pass_result

    - name: a canary answering 500s, task fails by default
      safedeploy.fleet.metric_gate:
        url: "{errors}"
        app: demoapp
        canary: [web1]
        stable: [web2, web3]
        window: 15s
        username: ops
        password: "{password}"
      ignore_errors: true
      register: fail_result

    - name: the same, verdict only
      safedeploy.fleet.metric_gate:
        url: "{errors}"
        app: demoapp
        canary: [web1]
        stable: [web2, web3]
        window: 15s
        fail_on: []
      register: verdict_result

    - name: Prometheus down, inconclusive
      safedeploy.fleet.metric_gate:
        url: "{dead}"
        app: demoapp
        canary: [web1]
        stable: [web2]
        timeout: 2
      ignore_errors: true
      register: down_result

    - name: own metric, web provider
      safedeploy.fleet.metric_gate:
        provider: web
        url: "{good}/stats?h=${{canary_list}}"
        canary: [web1]
        requests_query: canary.requests
        min_requests: 10
        metrics:
          - name: error_rate
            query: canary.errors
            max: 1
            unit: "%"
      register: web_result

    - name: default analysis without app
      safedeploy.fleet.metric_gate:
        url: "{good}"
        canary: [web1]
      ignore_errors: true
      register: noapp_result

    - name: a bad window
      safedeploy.fleet.metric_gate:
        url: "{good}"
        app: demoapp
        canary: [web1]
        window: soon
      ignore_errors: true
      register: window_result

    - name: save the results
      ansible.builtin.copy:
        dest: "{results}"
        content: "{{{{ {{'pass': pass_result, 'fail': fail_result, 'verdict': verdict_result,
                      'down': down_result, 'web': web_result, 'noapp': noapp_result,
                      'window': window_result}} | to_json }}}}"
        mode: "0600"
"""

HEALTHY = {"increase(": 400, 'code!~"5.."': 100, "histogram_quantile": 20,
           'requests_in_flight{instance=~"web1"}': 0.1, 'requests_in_flight{instance=~"web2|web3"}': 0.1}


def closed_port():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


@pytest.mark.skipif(not PLAYBOOK_BIN.exists(), reason="ansible-playbook is not installed next to this Python")
def test_module_end_to_end(tmp_path):
    good = FakePrometheus(HEALTHY, json_doc={"canary": {"requests": 50, "errors": 0.5}})
    errors = FakePrometheus({**HEALTHY, 'code!~"5.."': 79.5})
    results = tmp_path / "results.json"
    playbook = tmp_path / "play.yml"
    with good, errors:
        playbook.write_text(PLAYBOOK.format(good=good.url, errors=errors.url, dead=f"http://127.0.0.1:{closed_port()}",
                                            token=TOKEN, password=PASSWORD, results=results))
        env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_LOCALHOST_WARNING": "false",
               "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false", "ANSIBLE_NOCOLOR": "1"}
        proc = subprocess.run([str(PLAYBOOK_BIN), "-vvv", "-i", "localhost,", str(playbook)], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=180, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    tasks = json.loads(results.read_text())

    # secrets reach the provider and never the output
    assert TOKEN not in out and PASSWORD not in out
    assert "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER" in out
    assert {r["headers"].get("authorization") for r in good.requests if r["path"] == "/api/v1/query"} == {
        f"Bearer {TOKEN}"}
    assert {r["headers"].get("authorization") for r in errors.requests} >= {"Basic b3BzOnMzY3JldC1iYXNpYy1wdw=="}

    passed = tasks["pass"]
    assert passed.get("failed") is not True and passed["changed"] is False
    assert passed["verdict"] == "pass" and passed["requests"] == 400
    assert [m["verdict"] for m in passed["metrics"]] == ["pass", "pass", "pass"]
    assert 'instance=~"web1"' in passed["metrics"][0]["query"] and "[15s]" in passed["metrics"][0]["query"]

    failed = tasks["fail"]
    assert failed["failed"] is True and failed["verdict"] == "fail"
    assert failed["msg"] == "metric gate: fail: success_rate = 79.5% is below the minimum 99%"
    assert failed["failed_metrics"] == ["success_rate"]
    verdict = tasks["verdict"]
    assert verdict.get("failed") is not True
    assert verdict["verdict"] == "fail" and verdict["metrics"][0]["value"] == 79.5

    down = tasks["down"]
    assert down["failed"] is True and down["verdict"] == "inconclusive"
    assert "unreachable" in down["msg"] and "Connection refused" in down["msg"]

    web = tasks["web"]
    assert web["verdict"] == "pass" and web["requests"] == 50 and web["metrics"][0]["value"] == 0.5
    assert any(r["path"] == "/stats" for r in good.requests)

    assert tasks["noapp"]["failed"] is True and "the default analysis needs app" in tasks["noapp"]["msg"]
    assert tasks["window"]["failed"] is True and "window must be a Prometheus duration" in tasks["window"]["msg"]
