# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The release and release_info modules end to end through AnsibleModule."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile

import pytest
from ansible.module_utils.testing import patch_module_args
from ansible_collections.safedeploy.fleet.plugins.modules import release, release_info

COLLECTIONS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                           "build", "collections")


def run(capsys, module, args):
    with patch_module_args(args), pytest.raises(SystemExit) as info:
        module.main()
    out = json.loads(capsys.readouterr().out)
    out["_rc"] = info.value.code
    return out


@pytest.fixture
def artifact(tmp_path):
    src = tmp_path / "demoapp-1.0.tar.gz"
    with tarfile.open(src, "w:gz") as tar:
        data = b"1.0\n"
        member = tarfile.TarInfo("VERSION")
        member.size = len(data)
        tar.addfile(member, io.BytesIO(data))
    return str(src), "sha256:" + hashlib.sha256(src.read_bytes()).hexdigest()


def test_activate_then_info(capsys, tmp_path, artifact):
    root = str(tmp_path / "app")
    src, checksum = artifact
    args = {"path": root, "version": "1.0", "src": src, "checksum": checksum, "state": "active",
            "actor": "ci", "_ansible_diff": True}
    res = run(capsys, release, args)
    assert res["_rc"] == 0 and res["changed"] is True
    assert {"version", "current", "previous_current", "last_good", "rollback_candidate", "pruned",
            "release_path", "sha256"} <= set(res)
    assert res["diff"]["after"]["current"] == "1.0"
    again = run(capsys, release, args)
    assert again["_rc"] == 0 and again["changed"] is False

    good = run(capsys, release, {"path": root, "version": "1.0", "state": "good"})
    assert good["changed"] and good["last_good"] == "1.0" and "diff" not in good

    state = run(capsys, release_info, {"path": root})
    assert state["_rc"] == 0 and state["changed"] is False and state["exists"] is True
    assert state["current"] == "1.0" and state["last_good"] == "1.0"
    assert state["releases"][0]["verdict"] == "good"
    assert state["history"][0]["by"] == "ci"


def test_skip_becomes_an_ansible_warning(capsys, tmp_path, artifact, monkeypatch):
    # Record module.warn() calls directly: ansible's warning list is process
    # global, and its output format changed in 2.19.
    warned = []
    monkeypatch.setattr(release.AnsibleModule, "warn", lambda self, msg: warned.append(msg))
    src = artifact[0]
    res = run(capsys, release, {"path": str(tmp_path / "app"), "version": "1.0", "src": src,
                                "checksum": "skip"})
    assert res["_rc"] == 0 and res["changed"]
    assert len(warned) == 1 and "checksum verification skipped" in warned[0]


def test_check_mode(capsys, tmp_path, artifact):
    src, checksum = artifact
    root = tmp_path / "app"
    res = run(capsys, release, {"path": str(root), "version": "1.0", "src": src, "checksum": checksum,
                                "state": "active", "_ansible_check_mode": True})
    assert res["_rc"] == 0 and res["changed"] and res["current"] == "1.0"
    assert not root.exists()


@pytest.mark.parametrize(
    "args, error, text",
    [
        ({"version": "1.0;reboot"}, "VersionError", "'1.0;reboot'"),
        ({"version": "1.0", "checksum": "sha1:abc"}, "ChecksumFormatError", "'sha1:abc'"),
        ({"version": "1.0", "state": "good"}, "ReleaseNotFoundError", "'1.0'"),
        ({"version": "1.0", "keep": 1}, "InvalidParameterError", "keep"),
    ],
)
def test_failures_name_the_value(capsys, tmp_path, args, error, text):
    res = run(capsys, release, dict(args, path=str(tmp_path / "app")))
    assert res["_rc"] == 1 and res["failed"] is True
    assert res["error"] == error and text in res["msg"]


def test_info_missing_root_is_not_an_error(capsys, tmp_path):
    res = run(capsys, release_info, {"path": str(tmp_path / "none")})
    assert res["_rc"] == 0 and res["exists"] is False and res["history"] == []


def test_module_runs_as_a_script(tmp_path, artifact):
    """The way Ansible runs it on a target: python -m with a JSON args file."""
    src, checksum = artifact
    args = tmp_path / "args.json"
    args.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {
        "path": str(tmp_path / "app"), "version": "1.0", "src": src, "checksum": checksum,
        "state": "active"}}))
    env = dict(os.environ, PYTHONPATH=COLLECTIONS)
    proc = subprocess.run(
        [sys.executable, "-m", "ansible_collections.safedeploy.fleet.plugins.modules.release", str(args)],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = json.loads(proc.stdout)
    assert res["changed"] and res["current"] == "1.0"
    assert os.readlink(tmp_path / "app" / "current") == "releases/1.0"
