# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The module reference cannot drift, and ansible-doc renders every module and role.

docs/modules is rendered by tools/module_docs.py from ``ansible-doc --json``;
this renders it again into a temporary folder and fails when the checked-in
pages differ (fix: ``make module-docs``).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODULES = sorted(name[:-3] for name in os.listdir(os.path.join(ROOT, "plugins", "modules"))
                 if name.endswith(".py") and not name.startswith("_"))
ROLES = sorted(name for name in os.listdir(os.path.join(ROOT, "roles"))
               if os.path.isfile(os.path.join(ROOT, "roles", name, "meta", "argument_specs.yml")))
BIN = os.path.dirname(sys.executable)
ENV = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_NOCOLOR="1")


def run(args):
    return subprocess.run(args, cwd=ROOT, env=ENV, capture_output=True, text=True, check=False, timeout=180)


def test_checked_in_reference_matches_the_modules(tmp_path):
    proc = run([sys.executable, os.path.join(ROOT, "tools", "module_docs.py"), "--out", str(tmp_path)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    fresh = sorted(os.listdir(tmp_path))
    assert fresh == sorted(["README.md"] + [f"{name}.md" for name in MODULES])
    checked_in = os.path.join(ROOT, "docs", "modules")
    assert sorted(os.listdir(checked_in)) == fresh, "docs/modules has pages of no module or lacks some: " \
                                                    "run `make module-docs`"
    stale = []
    for name in fresh:
        with open(os.path.join(checked_in, name), encoding="utf-8") as old, \
                open(tmp_path / name, encoding="utf-8") as new:
            if old.read() != new.read():
                stale.append(name)
    assert not stale, f"docs/modules/{stale} differ from the modules' documentation: run `make module-docs`"


def test_reference_pages_hold_each_section():
    for name in MODULES:
        with open(os.path.join(ROOT, "docs", "modules", f"{name}.md"), encoding="utf-8") as handle:
            page = handle.read()
        assert page.splitlines()[2] == f"# safedeploy.fleet.{name}"
        for section in ("## Synopsis", "## Parameters", "## Attributes", "## Examples", "## Return values"):
            assert f"\n{section}\n" in page, (name, section)
        assert "| Parameter | Type | Required | Default | Choices | Description |" in page
    with open(os.path.join(ROOT, "docs", "modules", "README.md"), encoding="utf-8") as handle:
        index = handle.read()
    for name in MODULES:
        assert f"| [{name}]({name}.md) |" in index


@pytest.mark.parametrize("module", MODULES)
def test_ansible_doc_renders_module(module):
    proc = run([os.path.join(BIN, "ansible-doc"), f"safedeploy.fleet.{module}"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() and "OPTIONS" in proc.stdout and "EXAMPLES" in proc.stdout
    assert "[WARNING]" not in proc.stderr and "[ERROR]" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("role", ROLES)
def test_ansible_doc_renders_role(role):
    proc = run([os.path.join(BIN, "ansible-doc"), "-t", "role", f"safedeploy.fleet.{role}"])
    assert proc.returncode == 0, proc.stderr
    assert f"safedeploy.fleet.{role}" in proc.stdout and "ENTRY POINT" in proc.stdout
    assert "options" in proc.stdout.lower()
    assert "[WARNING]" not in proc.stderr and "[ERROR]" not in proc.stderr, proc.stderr
