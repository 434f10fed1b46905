# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The fleet lock names the AWX job that holds it.

playbooks/tasks/lock.yml run by ansible-playbook on localhost (no lab): AWX
passes awx_job_id / tower_job_id, awx_user_name and awx_job_template_name as
extra vars; they must end up in the lock record and in the message another
run gets when the lock is held.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml
from ansible_collections.safedeploy.fleet.plugins.module_utils._lock import describe_holder

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LOCK_TASKS = os.path.join(ROOT, "playbooks", "tasks", "lock.yml")


@pytest.fixture
def lock_run(tmp_path, monkeypatch):
    for name in ("AWX_JOB_ID", "JOB_ID"):
        monkeypatch.delenv(name, raising=False)
    locks = tmp_path / "locks"
    playbook = tmp_path / "lock.yml"
    playbook.write_text(yaml.safe_dump([{
        "name": "Take the fleet lock",
        "hosts": "localhost",
        "gather_facts": False,
        "vars": {"deploy_app": "demoapp", "deploy_fleet": "prod", "deploy_version": "2.0.0",
                 "deploy_lock_path": str(locks)},
        "tasks": [{"name": "Lock", "ansible.builtin.import_tasks": LOCK_TASKS}],
    }]))
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               USER="alice")

    def run(*extra_vars):
        args = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,",
                "-c", "local", "-e", f"ansible_python_interpreter={sys.executable}", str(playbook)]
        for extra in extra_vars:
            args += ["-e", json.dumps(extra)]
        proc = subprocess.run(args, env=env, cwd=str(tmp_path), capture_output=True, text=True,
                              check=False, timeout=120)
        record_file = locks / "demoapp-prod.lock"
        record = json.loads(record_file.read_text()) if record_file.exists() else None
        return proc, record

    run.lock_file = locks / "demoapp-prod.lock"
    return run


def test_awx_job_id_names_the_holder(lock_run):
    proc, record = lock_run({"awx_job_id": 4711, "awx_user_name": "carol",
                             "awx_job_template_name": "Deploy prod"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    owner = record["owner"]
    assert owner["awx_job_id"] == "4711" and owner["user"] == "carol"
    assert owner["awx_job_template"] == "Deploy prod" and owner["version"] == "2.0.0"
    assert "AWX job 4711 'Deploy prod'" in describe_holder(record)

    # The holder ran on another AWX node, so it is not taken over as a dead
    # local run: the next job fails with a message naming the job.
    record["owner"]["controller"] = "awx-node-2"
    lock_run.lock_file.write_text(json.dumps(record))
    proc, after = lock_run({"awx_job_id": 4712})
    assert proc.returncode == 2, proc.stdout
    assert "held by user carol on controller awx-node-2" in proc.stdout
    assert "AWX job 4711 'Deploy prod'" in proc.stdout
    assert after["run_id"] == record["run_id"]


def test_tower_job_id_and_takeover_keep_the_job(lock_run):
    proc, first = lock_run({"tower_job_id": 99})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert first["owner"]["awx_job_id"] == "99" and first["owner"]["user"] == "alice"
    # The first ansible-playbook has exited: the next run on this controller
    # takes its lock over, and records its own job id.
    proc, second = lock_run({"awx_job_id": 100})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "took over the stale lock" in proc.stdout
    assert "no longer runs, AWX job 99)" in " ".join(proc.stdout.split())
    assert second["run_id"] != first["run_id"] and second["owner"]["awx_job_id"] == "100"


def test_no_awx_no_job_in_the_owner(lock_run):
    proc, record = lock_run()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert record["owner"]["awx_job_id"] is None and record["owner"]["user"] == "alice"
    assert "AWX job" not in describe_holder(record)
