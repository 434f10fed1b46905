# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Build the collection with ansible-galaxy and install the tarball elsewhere.

Used by test_collection_build.py and test_execution_environment.py: both
need the tarball a user (or ansible-builder) gets, not the checkout.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)


def tool(name):
    """Path of an ansible command line tool next to the test's Python."""
    return os.path.join(BIN, name)


def isolated_env(collections_path, config_dir):
    """Environment in which Ansible sees only ``collections_path``.

    An empty ansible.cfg in ``config_dir`` replaces the checkout's (which
    points at build/collections, the link to this checkout).
    """
    config = os.path.join(config_dir, "ansible.cfg")
    if not os.path.exists(config):
        with open(config, "w", encoding="utf-8") as handle:
            handle.write("[defaults]\n")
    env = {key: value for key, value in os.environ.items() if not key.startswith("ANSIBLE_")}
    env.update(
        ANSIBLE_CONFIG=config,
        ANSIBLE_COLLECTIONS_PATH=collections_path,
        ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false",
        ANSIBLE_LOCAL_TEMP=os.path.join(config_dir, "tmp"),
        ANSIBLE_NOCOLOR="1",
        PATH=BIN + os.pathsep + env.get("PATH", ""),
    )
    return env


def run(args, env=None, cwd=None, timeout=120):
    """Run a command, return the CompletedProcess (text), never raise on rc."""
    return subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, check=False)


def build_collection(out_dir):
    """``ansible-galaxy collection build`` of the checkout into ``out_dir``; the tarball's path."""
    proc = run([tool("ansible-galaxy"), "collection", "build", "--force", "--output-path", str(out_dir), ROOT],
               cwd=out_dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    tarballs = glob.glob(os.path.join(str(out_dir), "safedeploy-fleet-*.tar.gz"))
    assert len(tarballs) == 1, tarballs
    return tarballs[0]


def install_collection(tarball, collections_path, config_dir):
    """``ansible-galaxy collection install -p`` of a tarball; the installed collection's directory."""
    proc = run([tool("ansible-galaxy"), "collection", "install", "--force", "-p", str(collections_path), str(tarball)],
               env=isolated_env(str(collections_path), str(config_dir)), cwd=config_dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    installed = os.path.join(str(collections_path), "ansible_collections", "safedeploy", "fleet")
    assert os.path.isfile(os.path.join(installed, "MANIFEST.json")), proc.stdout
    return installed
