# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The deploy_lock module end to end through AnsibleModule (no controller)."""

from __future__ import annotations

import json
import os

import pytest
from ansible.module_utils.testing import patch_module_args
from ansible_collections.safedeploy.fleet.plugins.modules import deploy_lock


def run(capsys, args):
    with patch_module_args(args), pytest.raises(SystemExit) as info:
        deploy_lock.main()
    out = json.loads(capsys.readouterr().out)
    out["_rc"] = info.value.code
    return out


@pytest.fixture
def base(tmp_path):
    return {"name": "demoapp-production", "path": str(tmp_path / "locks")}


def test_take_hold_release(capsys, base, monkeypatch):
    monkeypatch.delenv("AWX_JOB_ID", raising=False)
    monkeypatch.setenv("JOB_ID", "77")
    res = run(capsys, dict(base, run_id="r1", user="alice", controller="ctl", pid="42"))
    assert res["_rc"] == 0 and res["changed"] and res["acquired"]
    assert res["holder"]["owner"] == {"user": "alice", "controller": "ctl", "pid": "42", "awx_job_id": "77"}
    assert res["lock_file"] == os.path.join(base["path"], "demoapp-production.lock")

    again = run(capsys, dict(base, run_id="r1", user="alice"))
    assert again["_rc"] == 0 and not again["changed"] and again["acquired"]

    other = run(capsys, dict(base, run_id="r2", user="bob"))
    assert other["_rc"] == 1 and other["failed"]
    assert "alice" in other["msg"] and "ctl" in other["msg"] and "job 77" in other["msg"]
    assert other["holder"]["run_id"] == "r1"

    refused = run(capsys, dict(base, run_id="r2", state="absent"))
    assert refused["_rc"] == 1 and "alice" in refused["msg"]

    refreshed = run(capsys, dict(base, run_id="r1", state="refreshed", ttl=7200))
    assert refreshed["changed"] and refreshed["holder"]["ttl"] == 7200

    released = run(capsys, dict(base, run_id="r1", state="absent", _ansible_diff=True))
    assert released["changed"] and released["holder"] == {}
    assert released["diff"]["before"]["run_id"] == "r1" and released["diff"]["after"] == {}

    gone = run(capsys, dict(base, run_id="r1", state="absent"))
    assert gone["_rc"] == 0 and not gone["changed"]


def test_owner_string_and_dict(capsys, base):
    res = run(capsys, dict(base, run_id="r1", owner="nightly AWX schedule", controller="awx"))
    assert res["holder"]["owner"]["description"] == "nightly AWX schedule"
    assert res["holder"]["owner"]["controller"] == "awx"
    run(capsys, dict(base, run_id="r1", state="absent"))
    res = run(capsys, dict(base, run_id="r2", owner_info={"user": "carol", "ticket": "CHG-1"}))
    assert res["holder"]["owner"]["user"] == "carol" and res["holder"]["owner"]["ticket"] == "CHG-1"


def test_check_mode_creates_nothing(capsys, base):
    res = run(capsys, dict(base, run_id="r1", _ansible_check_mode=True, _ansible_diff=True))
    assert res["_rc"] == 0 and res["changed"] and res["acquired"]
    assert res["diff"]["before"] == {} and res["diff"]["after"]["run_id"] == "r1"
    assert not os.path.exists(base["path"])


def test_bad_name_and_missing_run_id(capsys, base):
    res = run(capsys, dict(base, name="../etc/passwd", run_id="r1"))
    assert res["_rc"] == 1 and "'../etc/passwd'" in res["msg"]
    res = run(capsys, dict(base))
    assert res["_rc"] == 1 and "run_id" in res["msg"]
    res = run(capsys, dict(base, state="absent"))
    assert res["_rc"] == 1 and "force" in res["msg"]
    res = run(capsys, dict(base, state="absent", force=True))
    assert res["_rc"] == 0 and not res["changed"]
