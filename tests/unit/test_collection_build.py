# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The collection as users get it: built with ansible-galaxy, installed from the tarball.

The installed copy is cut down to meta/, plugins/, roles/ and playbooks/;
with ANSIBLE_COLLECTIONS_PATH pointing only at it (and no checkout in
sight), module and role docs render, the deploy and rollback playbooks pass
a syntax check by their FQCN, a playbook imports them, and modules run.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tarfile

import pytest
import yaml
from galaxy_build import ROOT, build_collection, install_collection, isolated_env, run, tool

# What users need, and what must stay out of the tarball.
SHIPPED_DIRS = ("meta", "plugins", "roles", "playbooks", "docs")
SHIPPED_FILES = ("README.md", "CHANGELOG.md", "changelogs/changelog.yaml", "meta/runtime.yml",
                 "meta/execution-environment.yml", "meta/ee-requirements.txt", "meta/ee-bindep.txt",
                 "playbooks/deploy.yml", "playbooks/rollback.yml", "playbooks/tasks/lock.yml")
LEFT_OUT = ("tests/", "bench/", "build/", ".venv/", "molecule/", "tools/", ".git/", "changelogs/fragments/",
            ".ci/", "Makefile", "requirements.txt", "ansible.cfg", "execution-environment.yml")


def checkout_files(top):
    """Every file under ``top`` in the checkout (no caches), relative to the root."""
    found = set()
    for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, top)):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for name in filenames:
            if not name.endswith(".pyc"):
                found.add(os.path.relpath(os.path.join(dirpath, name), ROOT))
    return found


# What the installed copy is cut down to before it is used: the content
# directories and the install metadata ansible-galaxy wrote.
RUNTIME_ONLY = {"meta", "plugins", "roles", "playbooks", "MANIFEST.json", "FILES.json"}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    work = tmp_path_factory.mktemp("galaxy")
    tarball = build_collection(work)
    installed = install_collection(tarball, work / "collections", work)
    removed = sorted(set(os.listdir(installed)) - RUNTIME_ONLY)
    assert "docs" in removed and "README.md" in removed, removed
    for entry in removed:
        path = os.path.join(installed, entry)
        if os.path.isdir(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    return {"work": work, "tarball": tarball, "installed": installed,
            "env": isolated_env(str(work / "collections"), str(work))}


def test_tarball_holds_what_users_need_and_nothing_else(built):
    with tarfile.open(built["tarball"]) as tar:
        members = {m.name for m in tar.getmembers() if m.isfile()}
        manifest = json.load(tar.extractfile("MANIFEST.json"))
    galaxy = yaml.safe_load(open(os.path.join(ROOT, "galaxy.yml"), encoding="utf-8"))
    assert manifest["collection_info"]["namespace"] == "safedeploy"
    assert manifest["collection_info"]["name"] == "fleet"
    assert manifest["collection_info"]["version"] == galaxy["version"]
    assert os.path.basename(built["tarball"]) == f"safedeploy-fleet-{galaxy['version']}.tar.gz"

    missing = [path for path in SHIPPED_FILES if path not in members]
    assert not missing, f"the tarball lacks {missing}"
    for top in SHIPPED_DIRS:
        left_behind = sorted(checkout_files(top) - members)
        assert not left_behind, f"galaxy.yml build_ignore drops files users need: {left_behind}"
    leaked = sorted(m for m in members if m.startswith(LEFT_OUT) or m in LEFT_OUT)
    assert not leaked, f"the tarball holds development files: {leaked[:20]}"


def test_installed_copy_documents_every_module_and_role(built):
    env, installed = built["env"], built["installed"]
    modules = sorted(name[:-3] for name in os.listdir(os.path.join(installed, "plugins", "modules"))
                     if name.endswith(".py") and not name.startswith("_"))
    assert "batch_plan" in modules and "release" in modules
    proc = run([tool("ansible-doc"), "--json"] + [f"safedeploy.fleet.{name}" for name in modules],
               env=env, cwd=built["work"])
    assert proc.returncode == 0, proc.stderr
    docs = json.loads(proc.stdout)
    assert sorted(docs) == [f"safedeploy.fleet.{name}" for name in modules]
    for name, doc in docs.items():
        # resolved from the installed copy, not from the checkout
        assert doc["doc"]["filename"].startswith(installed), (name, doc["doc"]["filename"])
        assert doc["doc"]["options"] and doc["examples"].strip() and doc["return"], name

    roles = sorted(os.listdir(os.path.join(installed, "roles")))
    proc = run([tool("ansible-doc"), "-t", "role", "--json"] + [f"safedeploy.fleet.{name}" for name in roles],
               env=env, cwd=built["work"])
    assert proc.returncode == 0, proc.stderr
    assert sorted(json.loads(proc.stdout)) == [f"safedeploy.fleet.{name}" for name in roles]


def test_installed_playbooks_pass_syntax_check_by_fqcn(built):
    proc = run([tool("ansible-playbook"), "--syntax-check", "-i", "localhost,",
                "safedeploy.fleet.deploy", "safedeploy.fleet.rollback"], env=built["env"], cwd=built["work"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for playbook in ("deploy", "rollback"):
        # resolved to the installed copy
        assert f"playbook: {built['installed']}/playbooks/{playbook}.yml" in proc.stdout, proc.stdout


def test_installed_modules_run(built, tmp_path):
    app = tmp_path / "app"
    app.mkdir()
    playbook = tmp_path / "use.yml"
    playbook.write_text(yaml.safe_dump([{
        "name": "Use the installed collection",
        "hosts": "localhost",
        "gather_facts": False,
        "tasks": [
            {"name": "Plan batches", "register": "plan",
             "safedeploy.fleet.batch_plan": {"hosts": ["web1", "web2", "web3", "web4"], "serial": [1, "50%"], "max_unavailable": "50%"}},
            {"name": "Read an empty release store", "register": "info",
             "safedeploy.fleet.release_info": {"path": str(app)}},
            {"name": "Write what we got",
             "ansible.builtin.copy": {"dest": str(tmp_path / "out.json"),
                                      "content": "{{ {'plan': plan, 'info': info} | to_json }}",
                                      "mode": "0644"}},
        ],
    }]))
    proc = run([tool("ansible-playbook"), "-i", "localhost,", "-c", "local",
                "-e", f"ansible_python_interpreter={sys.executable}", str(playbook)],
               env=built["env"], cwd=built["work"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["plan"]["batches"] == [["web1"], ["web2", "web3"], ["web4"]]
    assert out["info"]["exists"] is True
    assert not out["info"]["current"] and not out["info"]["releases"] and not out["info"]["history"]


def test_site_project_imports_the_playbooks_by_fqcn(built, tmp_path):
    """An AWX project of its own (docs/awx.md): a playbook importing safedeploy.fleet.deploy."""
    site = tmp_path / "deploy.yml"
    site.write_text("---\n- name: Deploy\n  ansible.builtin.import_playbook: safedeploy.fleet.deploy\n"
                    "- name: Roll back\n  ansible.builtin.import_playbook: safedeploy.fleet.rollback\n")
    proc = run([tool("ansible-playbook"), "--list-tasks", "-i", "localhost,", str(site)],
               env=built["env"], cwd=built["work"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for play in ("The fleet lock and the pre-checks", "Rolling update, batch by batch"):
        assert play in proc.stdout, proc.stdout
