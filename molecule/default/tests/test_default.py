"""Verify the default scenario on every lab host (testinfra, ansible connection)."""

from __future__ import annotations

import os

import testinfra.utils.ansible_runner

MARKER = "/etc/safedeploy-molecule"


def test_inventory_is_the_whole_fleet():
    """Guard: with an empty inventory every host test would silently not run."""
    inventory = os.path.dirname(os.environ["MOLECULE_INVENTORY_FILE"])
    runner = testinfra.utils.ansible_runner.AnsibleRunner(inventory)
    assert {"lb1", "mon1", "web1"} <= set(runner.get_hosts("all"))
    for group in ("app", "lb", "monitoring"):
        assert runner.get_hosts(group), f"group {group} is empty"


def test_systemd_is_pid1(host):
    assert host.file("/proc/1/comm").content_string.strip() == "systemd"
    assert host.file("/run/systemd/system").is_directory


def test_python3(host):
    assert host.exists("python3")
    assert host.run("python3 -c 'import sys; print(sys.version_info[0])'").stdout.strip() == "3"


def test_marker(host):
    marker = host.file(MARKER)
    assert marker.is_file
    assert marker.mode == 0o644
    assert f"host={host.backend.get_hostname()}" in marker.content_string.splitlines()
