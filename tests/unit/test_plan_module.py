# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The batch_plan module end to end through AnsibleModule (no controller)."""

from __future__ import annotations

import json

import pytest
from ansible.module_utils.testing import patch_module_args
from ansible_collections.safedeploy.fleet.plugins.modules import batch_plan

SIX = [f"web{i}" for i in range(1, 7)]


def run(capsys, args):
    with patch_module_args(args), pytest.raises(SystemExit) as info:
        batch_plan.main()
    out = json.loads(capsys.readouterr().out)
    out["_rc"] = info.value.code
    return out


def test_plan_ok(capsys):
    res = run(capsys, {"hosts": SIX, "serial": [1, "50%"], "max_unavailable": 3, "max_fail_percentage": 34,
                       "_ansible_check_mode": True})
    assert res["_rc"] == 0 and not res["changed"]
    assert res["batches"] == [["web1"], ["web2", "web3", "web4"], ["web5", "web6"]]
    assert res["batch_sizes"] == [1, 3, 2]
    assert res["max_unavailable_count"] == 3
    assert res["tolerated_failures"] == [0, 1, 0]
    assert res["plan"].splitlines()[0].startswith("Rolling plan: 6 hosts in 3 batches")


def test_plan_refused(capsys):
    res = run(capsys, {"hosts": SIX, "serial": [1, 1, 4], "max_unavailable_name": "rolling_max_unavailable"})
    assert res["_rc"] == 1
    assert res["msg"] == ("batch 3 would take 4 of 6 servers out of rotation (web3, web4, web5, web6); "
                          "rolling_max_unavailable allows 1 (25%)")
    assert res["refused_batch"] == 3
    assert res["batch_sizes"] == [1, 1, 4]


def test_serial_as_strings_from_templating(capsys):
    res = run(capsys, {"hosts": SIX, "serial": "2", "max_unavailable": "2"})
    assert res["batch_sizes"] == [2, 2, 2]


def test_bad_serial(capsys):
    res = run(capsys, {"hosts": SIX, "serial": "twelve"})
    assert res["_rc"] == 1 and "'twelve'" in res["msg"]
