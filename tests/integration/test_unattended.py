"""Unattended runs (issue 16): a pause that waits for a person is refused, before anything
changes, when nobody can answer it - under AWX / ansible-runner, or without a terminal.

Without this check ``ansible.builtin.pause`` returns at once when ansible-playbook has no
terminal (blue_green_pause: true would switch the live pool with nobody's approval), and
under AWX's pseudo-terminal it waits until the job times out.
"""

from __future__ import annotations

import os
import subprocess
import sys

import ansible_runner
import pytest

from conftest import REPO, ansible_playbook
from test_blue_green import BG_LAYOUT, BLUE, FAST, GREEN, assert_live, bg, bg_lab, histories  # noqa: F401
from test_runner import _private_data_dir

DEPLOY = os.path.join(REPO, "playbooks", "deploy.yml")
REFUSED = ("blue_green: blue_green_pause is true (the switch waits for a person's approval), "
           "but nobody can answer it in this run ({why}). Set blue_green_pause to false and run "
           "blue_green_phase=prepare, an approval (an AWX workflow approval node), then blue_green_phase=switch.")
LOCK = "/var/lib/safedeploy/locks/demoapp-fleet.lock"

pytestmark = [BG_LAYOUT]


def flat(output: str) -> str:
    return " ".join(output.split())


def assert_nothing_changed(lab, before: dict) -> None:
    assert histories(lab) == before, "a release store changed"
    assert {lab.version_on(h) for h in BLUE + GREEN} == {"1.0.0"}
    assert_live(lab, "blue")
    assert lab.ssh("lb1", f"test -e {LOCK}", check=False).returncode == 1, "the fleet lock was taken"


def test_blue_green_pause_is_refused_without_a_terminal(bg):  # noqa: F811 - fixture of test_blue_green
    before = histories(bg)
    run = ansible_playbook(DEPLOY, extra_vars={"deploy_version": "2.0.0", "blue_green_pause": True, **FAST},
                           stdin=subprocess.DEVNULL)
    out = flat(run.stdout)
    assert run.returncode != 0, out[-3000:]
    assert REFUSED.format(why="ansible-playbook has no terminal on its standard input") in out, out[-3000:]
    assert_nothing_changed(bg, before)


@pytest.mark.parametrize("job_var", ["AWX_JOB_ID", "JOB_ID"])
def test_blue_green_pause_is_refused_under_ansible_runner(bg, tmp_path, job_var):  # noqa: F811
    before = histories(bg)
    envvars = {"ANSIBLE_CONFIG": os.path.join(REPO, "ansible.cfg"),
               "ANSIBLE_COLLECTIONS_PATH": os.path.join(REPO, "build", "collections"),
               "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
               "SAFEDEPLOY_REPORT_DIR": str(tmp_path / "reports"),
               job_var: "4242"}
    pdd = _private_data_dir(tmp_path, bg.inventory,
                            {"deploy_version": "2.0.0", "blue_green_pause": True, **FAST}, envvars)
    run = ansible_runner.run(private_data_dir=pdd, playbook="deploy.yml", quiet=True, timeout=300)
    out = flat(run.stdout.read())
    assert run.status == "failed" and run.rc != 0, out[-3000:]
    assert REFUSED.format(why="AWX job 4242") in out, out[-3000:]
    assert_nothing_changed(bg, before)
