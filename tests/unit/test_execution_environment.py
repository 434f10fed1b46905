# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""AWX readiness: the execution environment definitions.

``ansible-builder create`` (no container engine needed) turns
execution-environment.yml into a build context; the test checks the context
carries the collection and its requirements, pinned as in requirements.txt,
and then runs the context's own introspection script (what the image build
runs) on the collection installed from that context: it must find requests,
jmespath and the SSH client through meta/execution-environment.yml.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml
from bindep.depends import Depends
from galaxy_build import ROOT, build_collection, install_collection, run, tool

# Imported by plugins/ but not in Python's standard library: each must be
# covered by meta/ee-requirements.txt (urllib3 comes with requests).
PROVIDED_BY = {"requests": "requests", "urllib3": "requests", "jmespath": "jmespath"}


def pins():
    """name -> exact version from the checkout's requirements.txt."""
    found = {}
    with open(os.path.join(ROOT, "requirements.txt"), encoding="utf-8") as handle:
        for line in handle:
            match = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)", line.strip())
            if match:
                found[match.group(1).lower()] = match.group(2)
    return found


def requirement_names(lines):
    names = []
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(re.split(r"[<>=!~\[; ]", line, maxsplit=1)[0].lower())
    return names


def test_collection_declares_its_runtime_dependencies():
    with open(os.path.join(ROOT, "meta", "execution-environment.yml"), encoding="utf-8") as handle:
        meta = yaml.safe_load(handle)
    deps = meta["dependencies"]
    with open(os.path.join(ROOT, deps["python"]), encoding="utf-8") as handle:
        python = requirement_names(handle)
    assert sorted(python) == ["jmespath", "requests"]

    third_party = set()
    for dirpath, _dirs, files in os.walk(os.path.join(ROOT, "plugins")):
        for name in files:
            if name.endswith(".py"):
                with open(os.path.join(dirpath, name), encoding="utf-8") as handle:
                    tree = ast.parse(handle.read())
                for node in ast.walk(tree):
                    if isinstance(node, ast.Import):
                        tops = [alias.name.split(".")[0] for alias in node.names]
                    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                        tops = [node.module.split(".")[0]]
                    else:
                        continue
                    third_party.update(top for top in tops if top not in sys.stdlib_module_names
                                       and top not in ("ansible", "ansible_collections"))
    assert third_party <= set(PROVIDED_BY), f"plugins import {sorted(third_party - set(PROVIDED_BY))}, " \
                                            "which meta/ee-requirements.txt does not provide"
    assert {PROVIDED_BY[name] for name in third_party} <= set(python)

    with open(os.path.join(ROOT, deps["system"]), encoding="utf-8") as handle:
        bindep = Depends(handle.read())
    assert [rule[0] for rule in bindep.active_rules(["platform:rpm", "platform:redhat"])] == ["openssh-clients"]
    assert [rule[0] for rule in bindep.active_rules(["platform:dpkg", "platform:debian"])] == ["openssh-client"]


@pytest.fixture(scope="module")
def context(tmp_path_factory):
    """``ansible-builder create`` of execution-environment.yml, as `make ee` lays it out."""
    work = tmp_path_factory.mktemp("ee")
    shutil.copy(os.path.join(ROOT, "execution-environment.yml"), work)
    shutil.copytree(os.path.join(ROOT, "meta"), work / "meta")
    (work / "build" / "ee").mkdir(parents=True)
    tarball = build_collection(work / "build")
    shutil.copy(tarball, work / "build" / "ee" / "safedeploy-fleet.tar.gz")
    proc = run([tool("ansible-builder"), "create", "--file", "execution-environment.yml",
                "--context", "context", "--output-filename", "Containerfile"], cwd=work)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "No matches" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    return work


def test_builder_create_pins_what_we_test_with(context):
    containerfile = (context / "context" / "Containerfile").read_text()
    versions = pins()
    assert re.search(r'^ARG EE_BASE_IMAGE="quay\.io/centos/centos:stream9"$', containerfile, re.M)
    refs = re.search(r'^ARG ANSIBLE_INSTALL_REFS="(.*)"$', containerfile, re.M).group(1).split()
    assert refs == [f"ansible-core=={versions['ansible-core']}", f"ansible-runner=={versions['ansible-runner']}"]
    # the collection goes in through the galaxy stage, the requirements through introspection
    assert "COPY _build /build" in containerfile
    assert "ansible-galaxy collection install $ANSIBLE_GALAXY_CLI_COLLECTION_OPTS -r requirements.yml" in containerfile
    assert "introspect.py introspect --user-pip=requirements.txt" in containerfile

    build = context / "context" / "_build"
    python = (build / "requirements.txt").read_text().split()
    assert python == [f"requests=={versions['requests']}", f"jmespath=={versions['jmespath']}"]
    galaxy = yaml.safe_load((build / "requirements.yml").read_text())
    assert galaxy == {"collections": [{"name": "/build/collections/safedeploy-fleet.tar.gz", "type": "file"}]}
    assert (build / "collections" / "safedeploy-fleet.tar.gz").is_file()


def test_image_build_introspection_finds_the_collection_requirements(context):
    build = context / "context" / "_build"
    installed = install_collection(build / "collections" / "safedeploy-fleet.tar.gz",
                                   context / "collections", context)
    assert os.path.isfile(os.path.join(installed, "meta", "execution-environment.yml"))
    # the same command the builder stage of the Containerfile runs
    proc = subprocess.run(
        [sys.executable, str(build / "scripts" / "introspect.py"), "introspect",
         f"--user-pip={build / 'requirements.txt'}",
         f"--write-pip={context / 'pip.txt'}", f"--write-bindep={context / 'bindep.txt'}",
         str(context / "collections")],
        capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    python = (context / "pip.txt").read_text().splitlines()
    assert "requests>=2.25  # from collection safedeploy.fleet" in python
    assert "jmespath>=1.0  # from collection safedeploy.fleet" in python
    system = (context / "bindep.txt").read_text().splitlines()
    assert "openssh-clients [platform:rpm]  # from collection safedeploy.fleet" in system
    # the checkout's requirements.txt (development pins) must not leak into images
    assert not [line for line in python if line.startswith(("ansible-lint", "molecule", "pytest"))]
