"""A canary step that waits for a human ({pause: {}}), with and without someone to answer.

ansible.builtin.pause does not wait when ansible-playbook has no terminal (it
warns and goes on), and under AWX (a pseudo-terminal nobody types into) it
waits until the job times out; either way a human gate would pass unapproved
or hang. The canary role stops such a run before anything changes, and at the
gate itself goes on only when "go" is typed.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

import pytest
from conftest import INVENTORY, REPO

# Long (interactive gate on a pseudo-terminal): in make test-extended, not make test.
pytestmark = pytest.mark.extended

DEPLOY = os.path.join(REPO, "playbooks", "deploy.yml")
FAST = {"release_liveness_seconds": 2, "rolling_serial": [2], "rolling_max_unavailable": 2, "rolling_analysis": False}
GATED = [{"weight": 10}, {"pause": {}}, {"weight": 50}]


def deploy(extra: dict, answer: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """deploy.yml with no terminal (answer None), or on a pseudo-terminal (script) typing ``answer`` every second."""
    argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", INVENTORY, DEPLOY,
            "-e", json.dumps({"deploy_strategy": "canary", "deploy_version": "2.0.0", **FAST, **extra})]
    run_env = {**os.environ, "ANSIBLE_CONFIG": os.path.join(REPO, "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
               "ANSIBLE_FORCE_COLOR": "0", **(env or {})}
    for name in ("AWX_JOB_ID", "JOB_ID"):
        if env is None or name not in env:
            run_env.pop(name, None)
    if answer is None:
        return subprocess.run(argv, cwd=REPO, env=run_env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=600, check=False)
    # script(1) gives ansible-playbook a terminal; the shell loop types the answer until the run ends.
    typing = f"while sleep 1; do echo {shlex.quote(answer)}; done"
    command = f"{typing} | script -qefc {shlex.quote(shlex.join(argv))} /dev/null"
    return subprocess.run(["bash", "-c", command], cwd=REPO, env=run_env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600, check=False)


def flat(output: str) -> str:
    return " ".join(output.replace("\r", "").split())


def assert_untouched(lab):
    assert {lab.version_on(h.name) for h in lab.app_hosts} == {"1.0.0"}
    servers = lab.haproxy_servers()
    assert {n: (s["admin_state"], s["weight"]) for n, s in servers.items()} == dict.fromkeys(servers, ("ready", 100))


def test_without_a_terminal_it_stops_before_anything_changes(fresh_lab):
    run = deploy({"canary_steps": GATED})
    out = flat(run.stdout)
    assert run.returncode != 0, out[-3000:]
    assert ("canary_steps has a step that waits for a human ({pause: {}}), but nobody can answer it in this run "
            "(ansible-playbook has no terminal on its standard input)") in out, out[-3000:]
    assert "CANARY STEP" not in out
    assert_untouched(fresh_lab)
    # The lock was released: the same run under "AWX" stops at the same check, naming the job.
    run = deploy({"canary_steps": [{"weight": 10}, {"pause": 5}], "canary_on_inconclusive": "pause"},
                 env={"JOB_ID": "4242"})
    out = flat(run.stdout)
    assert run.returncode != 0, out[-3000:]
    assert "canary_on_inconclusive is pause (waits for a human), but nobody can answer it in this run (AWX job 4242)" in out
    assert_untouched(fresh_lab)


def test_at_the_gate_only_go_goes_on(fresh_lab):
    run = deploy({"canary_steps": GATED}, answer="no")
    out = flat(run.stdout)
    assert run.returncode != 0, out[-3000:]
    assert "CANARY STEP 1: weight 10 % requested, reached 10.0 %" in out
    assert 'CANARY ABORTED: the human gate at step 2 was answered "no", not "go"' in out, out[-3000:]
    assert "CANARY STEP 3" not in out
    assert fresh_lab.history("web1")["releases"]["2.0.0"]["verdict"] == "bad"
    assert_untouched(fresh_lab)

    # canary_phase=start: the steps only, the canary left at the last weight for a later promote or abort
    run = deploy({"canary_steps": GATED, "canary_phase": "start"}, answer="go")
    out = flat(run.stdout)
    assert run.returncode == 0, out[-3000:]
    assert "CANARY STEP 3: weight 50 % requested, reached 50.0 %" in out, out[-3000:]
    assert fresh_lab.version_on("web1") == "2.0.0"
    assert fresh_lab.haproxy_servers()["web1"]["weight"] == 255
