# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""safedeploy.fleet.health_check run end to end by ansible-playbook."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_probe_support import Reply, ScriptedServer, closed_port

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK_BIN = Path(sys.executable).parent / "ansible-playbook"
SECRET = "s3cret-probe-token"

PLAYBOOK = """
- hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{{{ ansible_playbook_python }}}}"
  tasks:
    - name: healthy endpoint, secret header, in check mode
      safedeploy.fleet.health_check:
        url: "{good}"
        headers:
          Authorization: "Bearer {secret}"
          X-Trace: visible-trace
        json_checks:
          status: ok
        expected_headers:
          X-App-Version: "2.0.0"
        interval: 0.05
        deadline: 5
      check_mode: true
      register: ok_result

    - name: a fleet with a degraded and a dead endpoint
      safedeploy.fleet.health_check:
        urls:
          - "{good}"
          - "{degraded}"
          - "{dead}"
        json_checks:
          status: ok
        interval: 0.05
        deadline: 5
        failure_threshold: 2
      ignore_errors: true
      register: bad_result

    - name: the same fleet, 30% is enough and nothing fails
      safedeploy.fleet.health_check:
        urls: ["{good}", "{degraded}", "{dead}"]
        json_checks: {{status: ok}}
        interval: 0.05
        deadline: 0
        min_healthy: "30%"
      register: fleet_result

    - name: a wrong option value
      safedeploy.fleet.health_check:
        url: "{good}"
        min_healthy: half
      ignore_errors: true
      register: invalid_result

    - name: save the results
      ansible.builtin.copy:
        dest: "{results}"
        content: "{{{{ {{'ok': ok_result, 'bad': bad_result, 'fleet': fleet_result,
                      'invalid': invalid_result}} | to_json }}}}"
        mode: "0600"
"""


def run_playbook(tmp_path, **urls):
    playbook = tmp_path / "play.yml"
    results = tmp_path / "results.json"
    playbook.write_text(PLAYBOOK.format(secret=SECRET, results=results, **urls))
    env = dict(os.environ)
    env.update({
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_LOCALHOST_WARNING": "false",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false",
        "ANSIBLE_NOCOLOR": "1",
    })
    proc = subprocess.run(
        [str(PLAYBOOK_BIN), "-vvv", "-i", "localhost,", str(playbook)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr, json.loads(results.read_text())


@pytest.mark.skipif(not PLAYBOOK_BIN.exists(), reason="ansible-playbook is not installed next to this Python")
def test_module_end_to_end(tmp_path):
    good = ScriptedServer(Reply(200, {"status": "ok"}, {"X-App-Version": "2.0.0"}))
    degraded = ScriptedServer(Reply(200, {"status": "degraded"}, {"X-App-Version": "2.0.0"}))
    dead = f"http://127.0.0.1:{closed_port()}/healthz"
    try:
        stdout, tasks = run_playbook(tmp_path, good=good.url, degraded=degraded.url, dead=dead)
    finally:
        good.kill()
        degraded.kill()

    # the secret never leaves the module; the header name and harmless values may
    assert SECRET not in stdout
    assert good.requests[0]["headers"]["Authorization"] == f"Bearer {SECRET}"

    ok = tasks["ok"]
    assert ok.get("failed") is not True and ok["changed"] is False
    assert ok["healthy"] is True and ok["healthy_count"] == 1 and ok["unhealthy_count"] == 0
    (endpoint,) = ok["endpoints"]
    assert endpoint["url"] == good.url and endpoint["version"] == "2.0.0" and endpoint["last_status"] == 200
    assert set(endpoint) >= {"url", "healthy", "attempts", "consecutive_successes", "last_status",
                             "latency_ms", "reason", "version", "elapsed"}
    # -vvv prints the echoed module arguments: Authorization is masked there,
    # a harmless header is not
    assert "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER" in stdout
    assert "visible-trace" in stdout

    bad = tasks["bad"]
    assert bad["failed"] is True and bad["changed"] is False
    assert bad["healthy"] is False and bad["healthy_count"] == 1 and bad["unhealthy_count"] == 2
    assert bad["msg"].startswith("2 of 3 endpoints unhealthy (1 healthy, 3 needed): ")
    assert f"{degraded.url}: JSON check 'status' expected 'ok' got 'degraded'" in bad["msg"]
    assert f"{dead}: connection refused (2 consecutive failures" in bad["msg"]

    fleet = tasks["fleet"]
    assert fleet.get("failed") is not True
    assert fleet["healthy"] is True and fleet["min_healthy"] == 1
    assert [e["healthy"] for e in fleet["endpoints"]] == [True, False, False]

    invalid = tasks["invalid"]
    assert invalid["failed"] is True
    assert "min_healthy must be an integer or a percentage like '50%', got 'half'" in invalid["msg"]


def test_bearer_token_is_sent_and_never_logged_nor_returned(monkeypatch):
    # Ansible logs a module's arguments ("Invoked with ...", the journal) in
    # AnsibleModule(); only no_log options are masked there.
    from ansible.module_utils.basic import AnsibleModule
    from ansible_collections.safedeploy.fleet.plugins.modules import health_check
    from haproxy_fixture import run_module

    logged = []
    monkeypatch.setattr(AnsibleModule, "log", lambda self, msg, log_args=None: logged.append(msg))
    server = ScriptedServer(Reply(200, {"status": "ok"}, {}))
    try:
        failed, result = run_module(health_check, {"url": server.url, "bearer_token": SECRET, "deadline": 5,
                                                   "headers": {"X-Trace": "visible-trace"}})
    finally:
        server.kill()
    assert not failed, result
    assert server.requests[0]["headers"]["Authorization"] == f"Bearer {SECRET}"
    assert logged and any("Invoked with" in line for line in logged), logged
    assert all(SECRET not in line for line in logged), logged
    assert SECRET not in json.dumps(result)

    failed, result = run_module(health_check, {"url": server.url, "bearer_token": SECRET,
                                               "headers": {"authorization": "Basic x"}})
    assert failed and "bearer_token and an Authorization header" in result["msg"]
