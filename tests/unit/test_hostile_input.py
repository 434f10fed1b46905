# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Hostile input, end to end through the modules and the roles' checks.

test_archive.py and test_release.py cover the archive reader and the release
store one function at a time; here every hostile input goes in the way a
user's play sends it (a module's arguments, a role's variables), and each
test asserts the two things that matter: a clear error naming the bad value,
and nothing changed (the store byte for byte, HAProxy's servers, the lock
directory, the paths an archive tried to reach).
"""

from __future__ import annotations

import gzip
import hashlib
import importlib
import json
import os
import re
import subprocess
import sys

import pytest
import yaml
from ansible_collections.safedeploy.fleet.plugins.module_utils import _lock, _release
from ansible_collections.safedeploy.fleet.plugins.module_utils._haproxy import HAProxyClient
from ansible_collections.safedeploy.fleet.plugins.modules import (
    deploy_lock,
    haproxy_map,
    haproxy_server,
    haproxy_weights,
    release,
    release_info,
)
from haproxy_fixture import HAPROXY, Backend, HAProxy, run_module
from test_archive import MIB, member, tar_bytes
from test_release import snapshot

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# -- the release module: hostile archives ---------------------------------------


@pytest.fixture
def host(tmp_path):
    """A host whose store has 1.0 current and good, and a place outside it to watch."""
    root = tmp_path / "opt" / "demoapp"
    root.parent.mkdir()
    good = tmp_path / "demoapp-1.0.tar.gz"
    good.write_bytes(tar_bytes([member("VERSION", data=b"1.0\n")], "gz"))
    base = {"path": str(root), "version": "1.0", "actor": "test"}
    failed, result = run_module(release, dict(base, src=str(good), checksum=sha(good.read_bytes()), state="active"))
    assert not failed, result
    failed, result = run_module(release, dict(base, state="good"))
    assert not failed, result
    outside = tmp_path / "outside"
    outside.mkdir()
    return root, outside


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def hostile_archives(outside):
    """name -> (archive bytes, text the error must contain)."""
    depth = "../" * 6  # from releases/.tmp-*/ well above tmp_path
    good_gz = tar_bytes([member("big", data=os.urandom(200_000))], "gz")
    return {
        "traversal": (
            tar_bytes([member("VERSION", data=b"2.0"), member(f"{depth}escaped", data=b"x")], "gz"),
            f"archive member '{depth}escaped' contains a '..' component",
        ),
        "absolute path": (
            tar_bytes([member(f"{outside}/abs", data=b"x")], "gz"),
            f"archive member '{outside}/abs' has an absolute path",
        ),
        "symlink out, absolute": (
            tar_bytes([member("out", "symlink", linkname=str(outside))]),
            f"archive member 'out' is a symlink to the absolute path '{outside}', outside the release",
        ),
        "symlink out, relative": (
            tar_bytes([member("bin", "dir"), member("bin/up", "symlink", linkname="../../..")]),
            "archive member 'bin/up' is a symlink to '../../..', which resolves outside the release",
        ),
        "write through a symlink": (
            tar_bytes([member("d", "symlink", linkname=str(outside)), member("d/pwned", data=b"x")]),
            "archive member 'd' is a symlink to the absolute path",
        ),
        "hard link out, absolute": (
            tar_bytes([member("passwd", "hardlink", linkname="/etc/passwd")]),
            "archive member 'passwd' is a hard link to the absolute path '/etc/passwd', outside the release",
        ),
        "hard link out, relative": (
            tar_bytes([member("passwd", "hardlink", linkname="../../../etc/passwd")]),
            "archive member 'passwd' is a hard link to '../../../etc/passwd', which contains a '..' component",
        ),
        "character device": (tar_bytes([member("dev/null", "chr")]), "archive member 'dev/null' is a character device"),
        "block device": (tar_bytes([member("dev/sda", "blk")]), "archive member 'dev/sda' is a block device"),
        "FIFO": (tar_bytes([member("run/pipe", "fifo")]), "archive member 'run/pipe' is a FIFO"),
        "decompression bomb": (
            tar_bytes([member("zeros", data=b"\0" * (3 * MIB))], "gz"),
            "archive unpacks to more than max_unpacked_bytes=1048576 bytes (limit reached at member 'zeros')",
        ),
        "truncated": (good_gz[: len(good_gz) // 2], "archive is truncated or corrupt"),
        "not an archive": (gzip.compress(b"#!/bin/sh\nrm -rf /\n"), "archive is truncated or corrupt"),
    }


CASES = sorted(hostile_archives("/x"))


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("check_mode", [False, True], ids=["run", "check"])
def test_release_module_refuses_hostile_archives_and_changes_nothing(tmp_path, host, case, check_mode):
    root, outside = host
    raw, expected = hostile_archives(outside)[case]
    src = tmp_path / "demoapp-2.0.tar.gz"
    src.write_bytes(raw)
    before = snapshot(str(root))
    failed, result = run_module(
        release,
        {"path": str(root), "version": "2.0", "src": str(src), "checksum": sha(raw), "state": "active",
         "max_unpacked_bytes": MIB, "actor": "test"},
        check_mode=check_mode,
    )
    assert failed, result
    assert result["msg"].startswith(f"refusing to unpack {src} for version '2.0': "), result["msg"]
    assert expected in result["msg"], result["msg"]
    assert result["error"] == "UnpackError"
    # Nothing changed: current, history, releases (no temp dir left), and
    # nothing appeared where the archive tried to write.
    assert snapshot(str(root)) == before
    assert os.listdir(outside) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demoapp-1.0.tar.gz", "demoapp-2.0.tar.gz", "opt",
                                                          "outside"]


def test_release_module_refuses_a_wrong_checksum_before_reading_the_archive(tmp_path, host):
    root, outside = host
    raw, _ignored = hostile_archives(outside)["traversal"]
    src = tmp_path / "demoapp-2.0.tar.gz"
    src.write_bytes(raw)
    wrong = sha(b"what was published")
    before = snapshot(str(root))
    failed, result = run_module(release, {"path": str(root), "version": "2.0", "src": str(src), "checksum": wrong,
                                          "state": "active"})
    assert failed
    assert result["msg"] == (f"checksum mismatch for src={str(src)!r}: expected {wrong}, got {sha(raw)}")
    assert snapshot(str(root)) == before and os.listdir(outside) == []


# -- names: versions, paths, lock names ------------------------------------------

HOSTILE_NAMES = ["", " ", "..", "../x", "a/b", "/abs", "1.0/../../etc", "1..2", "1.0;rm -rf /", "$(id)", "`id`",
                 "1.0 && reboot", "1 0", "1.0\n", "1.0|cat", "a>b", "x*", "-rf", ".hidden"]
# A shorter list for the preflight role, whose cases are one play each.
SOME_HOSTILE_NAMES = ["", "..", "../x", "a/b", "1.0;rm -rf /", "$(id)", "1 0", "1.0\n", "1..2"]


@pytest.mark.parametrize("version", HOSTILE_NAMES)
def test_release_module_refuses_hostile_versions(tmp_path, host, version):
    root, _outside = host
    before = snapshot(str(root))
    for state in ("present", "active", "good", "absent"):
        failed, result = run_module(release, {"path": str(root), "version": version, "state": state})
        assert failed and repr(version) in result["msg"] and result["error"] == "VersionError", result
    assert snapshot(str(root)) == before


@pytest.mark.parametrize("path", ["relative/app", "/opt/../etc", "/opt/demoapp/..", "/opt/x/../../etc/demoapp",
                                  "/opt/demo\napp", ""])
def test_release_modules_refuse_hostile_store_paths(tmp_path, path):
    failed, result = run_module(release, {"path": path, "version": "1.0", "state": "present"})
    assert failed and repr(path) in result["msg"], result
    failed, result = run_module(release_info, {"path": path})
    assert failed and repr(path) in result["msg"], result


@pytest.mark.parametrize("name", [n for n in HOSTILE_NAMES if n != "1..2"]
                         + ["demoapp-fleet\n", "demoapp/../../etc/cron.d/x"])
def test_deploy_lock_refuses_hostile_names_and_creates_nothing(tmp_path, name):
    locks = tmp_path / "locks"
    failed, result = run_module(deploy_lock, {"name": name, "path": str(locks), "run_id": "r1"})
    assert failed, result
    assert repr(name) in result["msg"], result["msg"]
    assert not locks.exists()


@pytest.mark.parametrize("path", ["locks", "./locks", "", "/var/lib/safedeploy/locks\n"])
def test_deploy_lock_refuses_a_path_every_run_would_see_differently(tmp_path, monkeypatch, path):
    # Relative to the module's temporary working directory, each run would hold its own lock.
    monkeypatch.chdir(tmp_path)
    failed, result = run_module(deploy_lock, {"name": "demoapp-fleet", "path": path, "run_id": "r1"})
    assert failed and repr(path) in result["msg"], result
    assert os.listdir(tmp_path) == []


def test_lock_names_with_a_trailing_newline_are_not_a_second_lock():
    # 'demoapp-fleet\n' would be a different lock file: two runs would both "hold the lock".
    with pytest.raises(_lock.LockNameError, match=r"'demoapp-fleet\\n'"):
        _lock.validate_name("demoapp-fleet\n")
    with pytest.raises(_release.VersionError, match=r"'2.0.0\\n'"):
        _release.validate_version("2.0.0\n")


# -- HAProxy: names that do not exist, or try to inject a command ----------------


@pytest.fixture(scope="module")
def pools():
    made = Backend("one"), Backend("two")
    yield made
    for backend in made:
        backend.close()


@pytest.fixture
def lb(tmp_path, pools):
    one, two = pools
    map_file = tmp_path / "live_pool.map"
    map_file.write_text("demoapp blue\n")
    body = f"""
frontend f
  bind 127.0.0.1:FRONT_PORT
  use_backend app_%[str(demoapp),map({map_file})]
  default_backend app_blue
backend app_blue
  server s1 127.0.0.1:{one.port} weight 100
  server s2 127.0.0.1:{two.port} weight 100
backend app_green
  server s3 127.0.0.1:{two.port} weight 100
"""
    proxy = HAProxy(tmp_path, body)
    proxy.map_file = str(map_file)
    yield proxy
    proxy.stop()


def lb_view(lb) -> dict:
    """Everything these modules could change: every server's state and weight, the map at runtime and on disk."""
    client = HAProxyClient(lb.sock)
    servers = {(s["backend"], s["name"]): (s["admin_state"], s["weight"]) for s in client.list_servers()}
    with open(lb.map_file) as handle:
        return {"servers": servers, "map": client.show_map(lb.map_file), "map_file": handle.read()}


INJECTIONS = ["app_blue;disable server app_blue/s2", "app_blue/s1", "s1 s2", "app_blue\nshutdown sessions server"]


@pytest.mark.skipif(not os.path.exists(HAPROXY), reason="haproxy is not installed")
@pytest.mark.parametrize("check_mode", [False, True], ids=["run", "check"])
def test_haproxy_server_unknown_or_hostile_names_fail_and_change_nothing(lb, check_mode):
    before = lb_view(lb)
    cases = [
        ({"backend": "nope", "name": "s1"}, "has no backend 'nope'"),
        ({"backend": "app_blue", "name": "s9"}, "backend 'app_blue' has no server 's9'"),
        ({"backend": "app_green", "name": "s1"}, "backend 'app_green' has no server 's1'"),
        ({"backend": "", "name": "s1"}, "backend name must be a non-empty word"),
        ({"backend": "app_blue", "name": ""}, "server name must be a non-empty word"),
    ] + [({"backend": "app_blue", "name": bad}, f"got {bad!r}") for bad in INJECTIONS] + [
        ({"backend": bad, "name": "s1"}, f"got {bad!r}") for bad in INJECTIONS
    ]
    for args, expected in cases:
        for change in ({"state": "drain"}, {"state": "maint"}, {"state": "ready"}, {"weight": 0}, {}):
            failed, result = run_module(haproxy_server, {"socket": lb.sock, **change, **args}, check_mode=check_mode)
            assert failed and expected in result["msg"], (args, result)
    assert lb_view(lb) == before


@pytest.mark.skipif(not os.path.exists(HAPROXY), reason="haproxy is not installed")
def test_haproxy_weights_unknown_or_hostile_names_fail_and_change_nothing(lb):
    before = lb_view(lb)
    cases = [
        ({"backend": "nope", "canary": ["s1"]}, "has no backend 'nope'"),
        ({"backend": "app_blue", "canary": ["s9"]}, "backend 'app_blue' has no server(s) s9 (it has s1, s2)"),
        ({"backend": "app_blue", "canary": ["s1"], "stable": ["s3"]}, "has no server(s) s3"),
        ({"backend": "app_blue", "canary": []}, "canary must name at least one server"),
        ({"backend": "app_blue", "canary": ["s1;set weight app_blue/s2 0"]}, "has no server(s) s1;set weight"),
        ({"backend": "app_blue;set weight app_blue/s2 0", "canary": ["s1"]}, "has no backend 'app_blue;set weight"),
        ({"backend": "", "canary": ["s1"]}, "has no backend ''"),
    ]
    for args, expected in cases:
        for check_mode in (False, True):
            failed, result = run_module(haproxy_weights, {"socket": lb.sock, "percent": 50, **args},
                                        check_mode=check_mode)
            assert failed and expected in result["msg"], (args, result)
    assert lb_view(lb) == before


@pytest.mark.skipif(not os.path.exists(HAPROXY), reason="haproxy is not installed")
def test_haproxy_map_unknown_or_hostile_names_fail_and_change_nothing(lb, tmp_path):
    before = lb_view(lb)
    other = tmp_path / "other.map"
    other.write_text("demoapp blue\n")
    cases = [
        ({"map": str(other), "key": "demoapp", "value": "green"}, "does not know map"),
        ({"map": lb.map_file + ";clear map " + lb.map_file, "key": "demoapp", "value": "green"}, "does not know map"),
        ({"map": lb.map_file, "key": "demoapp;del map", "value": "green"}, "'demoapp;del map'"),
        ({"map": lb.map_file, "key": "demo app", "value": "green"}, "'demo app'"),
        ({"map": lb.map_file, "key": "", "value": "green"}, "map key must be a non-empty string"),
        ({"map": lb.map_file, "key": "demoapp", "value": "green\nother x"}, "single line"),
    ]
    for args, expected in cases:
        for check_mode in (False, True):
            failed, result = run_module(haproxy_map, {"socket": lb.sock, **args}, check_mode=check_mode)
            assert failed and expected in result["msg"], (args, result)
    assert lb_view(lb) == before
    assert other.read_text() == "demoapp blue\n"


# -- the roles' own checks, run by Ansible ----------------------------------------

RELEASE_OK = {"release_app": "demoapp", "release_version": "2.0.0", "release_root": "/opt/demoapp",
              "release_service_name": "demoapp", "release_artifact": "/srv/artifacts/demoapp-2.0.0.tar.gz",
              "release_artifact_checksum": "sha256:" + "a" * 64}
PREFLIGHT_OK = {"deploy_app": "demoapp", "deploy_version": "2.0.0", "deploy_artifact": "/srv/demoapp-2.0.0.tar.gz",
                "deploy_artifact_checksum": "sha256:" + "a" * 64, "deploy_lb_group": "lb",
                "deploy_lb_backend": "demoapp"}
HAPROXY_OK = {"haproxy_stats_socket_mode": "660", "haproxy_stats_socket_group": "haproxy",
              "haproxy_stats_tcp_enabled": False, "haproxy_stats_tcp_bind": "127.0.0.1:9999",
              "haproxy_stats_tcp_level": "admin"}

ROLE_CASES = [
    # (role, tasks_from, variables over the valid ones, text of the failure or 'passed')
    ("release", "preflight.yml", {}, "passed"),
    ("preflight", "inputs.yml", {}, "passed"),
    ("haproxy", "preflight.yml", {}, "passed"),
    # No LB group in the inventory: clear, before anything else is looked at.
    ("preflight", "inputs.yml", {"deploy_lb_group": "haproxy_lbs"},
     "the strategy needs a load balancer: inventory group 'haproxy_lbs' is empty or missing"),
    ("preflight", "inputs.yml", {"deploy_lb_group": "nolb"},
     "the strategy needs a load balancer: inventory group 'nolb' is empty or missing"),
    ("haproxy", "preflight.yml", {"haproxy_stats_socket_mode": "666"}, 'haproxy_stats_socket_mode "666"'),
    ("haproxy", "preflight.yml", {"haproxy_stats_socket_mode": "0664"}, 'haproxy_stats_socket_mode "0664"'),
    ("haproxy", "preflight.yml", {"haproxy_stats_socket_mode": "777"}, 'haproxy_stats_socket_mode "777"'),
    ("haproxy", "preflight.yml", {"haproxy_stats_socket_mode": "0600"}, "passed"),
    ("haproxy", "preflight.yml", {"haproxy_stats_socket_group": "haproxy level admin"},
     'with group "haproxy level admin"'),
    ("haproxy", "preflight.yml", {"haproxy_stats_tcp_enabled": True, "haproxy_stats_tcp_bind": "0.0.0.0:9999"},
     'haproxy_stats_tcp_bind "0.0.0.0:9999" at level admin would let anyone who reaches that address drain'),
    ("haproxy", "preflight.yml", {"haproxy_stats_tcp_enabled": True, "haproxy_stats_tcp_bind": "10.0.0.5:9999",
                                  "haproxy_stats_tcp_level": "operator"}, 'haproxy_stats_tcp_bind "10.0.0.5:9999"'),
    ("haproxy", "preflight.yml", {"haproxy_stats_tcp_enabled": True, "haproxy_stats_tcp_bind": "0.0.0.0:9999",
                                  "haproxy_stats_tcp_level": "user"}, "passed"),
    ("haproxy", "preflight.yml", {"haproxy_stats_tcp_enabled": True}, "passed"),
    ("haproxy", "preflight.yml", {"haproxy_backends": [{"name": "demoapp", "servers": [
        {"name": "web1", "address": "10.0.0.1", "port": 8080}]}]}, "passed"),
    ("haproxy", "preflight.yml", {"haproxy_backends": [{"name": "demo app;x", "servers": [
        {"name": "web1 weight 0", "address": "10.0.0.1", "port": 8080}]}]},
     '"demo app;x", "web1 weight 0": HAProxy names may only hold letters'),
    ("haproxy", "preflight.yml", {"haproxy_backends": [{"name": "demoapp", "servers": [
        {"name": "web1\n  server evil 10.6.6.6:80", "address": "10.0.0.1", "port": 8080}]}]},
     '"web1\\n server evil 10.6.6.6:80": HAProxy names'),
]
for _bad in HOSTILE_NAMES:
    _shown = json.dumps(_bad)
    ROLE_CASES.append(
        ("release", "preflight.yml", {"release_version": _bad}, f"release: release_version {_shown} is not a valid"))
    if _bad in SOME_HOSTILE_NAMES:
        ROLE_CASES.append(
            ("preflight", "inputs.yml", {"deploy_version": _bad}, f"deploy_version {_shown} is not a valid version"))
    if _bad != "1..2":  # a harmless app name; a version must not contain '..' at all
        ROLE_CASES.append(
            ("release", "preflight.yml", {"release_app": _bad}, f"release: release_app {_shown} is not a valid"))
        if _bad in SOME_HOSTILE_NAMES:
            ROLE_CASES.append(
                ("preflight", "inputs.yml", {"deploy_app": _bad}, f"deploy_app {_shown} is not a valid application"))
ROLE_CASES += [
    ("release", "preflight.yml", {"release_root": bad}, f"release: release_root {json.dumps(bad)} must be")
    for bad in ["opt/demoapp", "/opt/../etc", "/opt/demo app", "/opt/$(id)", "/opt/x;y", "/opt/app\n", ""]
] + [
    ("release", "preflight.yml", {"release_service_name": bad}, f"release_service_name {json.dumps(bad)} must match")
    for bad in ["../../../etc/cron.d/x", "demo app", "demoapp;id", ""]
] + [
    ("release", "preflight.yml", {"release_artifact": bad}, f"release: artifact {json.dumps(bad)}")
    for bad in ["", "https://example.com/", "/srv/.."]
] + [
    ("release", "preflight.yml", {"release_artifact_checksum": bad}, f"checksum {json.dumps(bad)}")
    for bad in ["", "sha256:abc", "md5:" + "0" * 32, "sha256:" + "a" * 64 + "\n"]
] + [
    ("preflight", "inputs.yml", {"deploy_artifact_checksum": bad}, f"deploy_artifact_checksum {json.dumps(bad)}")
    for bad in ["sha256:abc", "sha256:" + "a" * 64 + "\n"]
] + [
    ("preflight", "inputs.yml", {"deploy_lb_backend": "demo app"},
     '1 host(s) have a backend or server name HAProxy cannot have (letters, digits, \'.\', \'_\', \'-\' and \':\' only): '
     'case'),
    ("preflight", "inputs.yml", {"deploy_lb_server": "web1;shutdown sessions server demoapp/web2"},
     'server "web1;shutdown sessions server demoapp/web2"'),
    ("preflight", "inputs.yml", {"deploy_lb_backend": "demoapp/web1"}, 'backend "demoapp/web1", server "case'),
    ("preflight", "inputs.yml", {"deploy_lb_backend": "demoapp\n"}, 'backend "demoapp\\n"'),
] + [
    ("release", "preflight.yml", {"release_max_unpacked_bytes": 0}, "release_max_unpacked_bytes >= 1 (got 0)"),
]

# preflight reads the artifact through on the controller (the release module
# in check mode) before the lock holder drains anything. "{work}" is the
# directory the fixture writes these archives to.
_ESCAPE = "../" * 6 + "tmp/sd-hostile-escaped"
_GOOD = tar_bytes([member("demoapp.py", data=b"print('hi')\n")], "gz")
PREFLIGHT_ARCHIVES = {
    "good.tar.gz": (_GOOD, {}, "passed"),
    "traversal.tar.gz": (tar_bytes([member(_ESCAPE, data=b"x")], "gz"), {},
                         f"archive member '{_ESCAPE}' contains a '..' component"),
    "symlink.tar.gz": (tar_bytes([member("etc", "symlink", linkname="/etc"), member("etc/cron.d/x", data=b"x")]), {},
                       "archive member 'etc' is a symlink to the absolute path '/etc', outside the release"),
    "fifo.tar.gz": (tar_bytes([member("pipe", "fifo")]), {}, "archive member 'pipe' is a FIFO"),
    "device.tar.gz": (tar_bytes([member("sda", "blk")]), {}, "archive member 'sda' is a block device"),
    "bomb.tar.gz": (tar_bytes([member("zeros", data=b"\0" * (3 * MIB))], "gz"), {"deploy_max_unpacked_bytes": MIB},
                    "archive unpacks to more than max_unpacked_bytes=1048576 bytes (limit reached at member 'zeros')"),
    "truncated.tar.gz": (_GOOD[: len(_GOOD) // 2], {}, "archive is truncated or corrupt"),
}
for _name, (_data, _extra, _expected) in PREFLIGHT_ARCHIVES.items():
    _path = "{work}/" + _name
    ROLE_CASES.append(("preflight", "artifact.yml",
                       {"deploy_artifact": _path, "deploy_artifact_checksum": sha(_data), **_extra},
                       _expected if _expected == "passed" else
                       (f"the artifact {_path} of demoapp 2.0.0 is not safe to unpack, no host was changed: "
                        f"refusing to unpack {_path} for version '2.0.0': {_expected}")))
ROLE_CASES.append(("preflight", "artifact.yml",
                   {"deploy_artifact": "{work}/traversal.tar.gz", "deploy_artifact_checksum": sha(_GOOD)},
                   f"checksum mismatch: the artifact {{work}}/traversal.tar.gz has "
                   f"{sha(PREFLIGHT_ARCHIVES['traversal.tar.gz'][0])} but deploy_artifact_checksum is {sha(_GOOD)}"))

# One inventory host per case (its variables are the case's), all run by one
# ansible-playbook: the release and haproxy checks on every host at once;
# preflight's checks are run_once over the play's hosts, so each of its cases
# is a play of its own.
ROLE_PLAY = """
- name: The {role} role's checks on {hosts}
  hosts: {hosts}
  gather_facts: false
  tasks:
    - name: Run the checks, note the outcome
      block:
        - name: Checks
          ansible.builtin.include_role:
            name: safedeploy.fleet.{role}
            tasks_from: {tasks_from}
        - name: Passed
          ansible.builtin.set_fact:
            outcome: passed
      rescue:
        - name: Failed
          ansible.builtin.set_fact:
            outcome: "{{{{ ansible_failed_result.msg }}}}"
"""

WRITE_PLAY = """
- name: Write every outcome
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Write the outcomes
      ansible.builtin.copy:
        content: "{{ dict(groups['cases'] | zip(groups['cases'] | map('extract', hostvars, 'outcome'))) | to_json }}"
        dest: "{{ out }}"
        mode: "0644"
"""


@pytest.fixture(scope="module")
def role_outcomes(tmp_path_factory):
    """Run every ROLE_CASES entry through Ansible (one ansible-playbook for all)."""
    work = tmp_path_factory.mktemp("roles")
    plays = [ROLE_PLAY.format(role="release", tasks_from="preflight.yml", hosts="release"),
             ROLE_PLAY.format(role="haproxy", tasks_from="preflight.yml", hosts="haproxy")]
    plays += [ROLE_PLAY.format(role="preflight", tasks_from=case[1], hosts=f"case{number}")
              for number, case in enumerate(ROLE_CASES) if case[0] == "preflight"]
    for name, (data, _extra, _expected) in PREFLIGHT_ARCHIVES.items():
        (work / name).write_bytes(data)
    (work / "play.yml").write_text("".join(plays) + WRITE_PLAY)
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    groups = {"release": {}, "haproxy": {}, "preflight": {}}
    for number, (role, _tasks, overrides, _expected) in enumerate(ROLE_CASES):
        base = {"release": RELEASE_OK, "haproxy": {**HAPROXY_OK, "haproxy_install": False, "haproxy_backends": []},
                "preflight": PREFLIGHT_OK}
        overrides = {key: value.replace("{work}", str(work)) if isinstance(value, str) else value
                     for key, value in overrides.items()}
        groups[role][f"case{number}"] = {**local, **base[role], **overrides}
    # The lb group exists (holding one host), so only the cases that name
    # another group lack a load balancer.
    inventory = {"all": {"vars": {"out": str(work / "out.json")}, "children": {
        "cases": {"children": {name: {"hosts": hosts} for name, hosts in groups.items()}},
        "lb": {"hosts": {"lb1": local}},
        "localhost_group": {"hosts": {"localhost": local}},
    }}}
    (work / "inventory.json").write_text(json.dumps(inventory))
    result = subprocess.run(
        [os.path.join(ROOT, ".venv", "bin", "ansible-playbook"), "-i", str(work / "inventory.json"),
         "-f", "32", str(work / "play.yml")],
        cwd=ROOT, capture_output=True, text=True, check=False,
        env={**os.environ, "ANSIBLE_CONFIG": os.path.join(ROOT, "ansible.cfg")},
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-3000:]
    outcomes = json.loads((work / "out.json").read_text())
    return {int(name[len("case"):]): outcome.replace(str(work), "{work}") for name, outcome in outcomes.items()}


@pytest.mark.parametrize("number", range(len(ROLE_CASES)),
                         ids=[f"{c[0]}-{json.dumps(c[2])[:60]}" for c in ROLE_CASES])
def test_role_checks_refuse_hostile_input_with_a_clear_message(role_outcomes, number):
    role, _tasks, overrides, expected = ROLE_CASES[number]
    outcome = " ".join(role_outcomes[number].split())
    if expected == "passed":
        assert outcome == "passed", outcome
    else:
        assert expected in outcome, outcome


# -- secrets and TLS: every module's argument spec ----------------------------------

MODULES_DIR = os.path.join(ROOT, "plugins", "modules")
MODULE_NAMES = sorted(name[:-3] for name in os.listdir(MODULES_DIR) if name.endswith(".py") and name != "__init__.py")
# ansible-test's validate-modules rule, plus a few more words that mean a credential.
SECRET_NAME = re.compile(r"pass(?!ive)|secret|token|key|auth|credential|cookie|bearer", re.I)
# Options whose names look secret but are not, each with the reason.
NOT_SECRET = {
    ("haproxy_map", "key"): "the map key (an application name), shown in diffs",
    ("health_check", "client_key"): "the path of the client key file, not the key itself",
}


class _Captured(Exception):
    pass


def argument_spec_of(name, monkeypatch):
    """The argument spec a module hands to AnsibleModule, however main() builds it."""
    module = importlib.import_module(f"ansible_collections.safedeploy.fleet.plugins.modules.{name}")
    seen = {}

    def capture(*args, **kwargs):
        seen.update(kwargs.get("argument_spec") or args[0])
        raise _Captured

    monkeypatch.setattr(module, "AnsibleModule", capture)
    with pytest.raises(_Captured):
        module.main()
    return module, seen


def walk_spec(spec, prefix=""):
    for option, details in spec.items():
        yield prefix + option, details
        yield from walk_spec(details.get("options") or {}, prefix + option + ".")


def test_every_module_is_checked(monkeypatch):
    assert {"release", "metric_gate", "health_check", "haproxy_server", "deploy_lock"} <= set(MODULE_NAMES)
    for name in MODULE_NAMES:
        assert argument_spec_of(name, monkeypatch)[1], name


@pytest.mark.parametrize("name", MODULE_NAMES)
def test_secret_looking_options_are_no_log(name, monkeypatch):
    _module, spec = argument_spec_of(name, monkeypatch)
    for option, details in walk_spec(spec):
        if not SECRET_NAME.search(option.rsplit(".", 1)[-1]):
            continue
        if (name, option) in NOT_SECRET:
            # Deliberately not secret: said so explicitly, as validate-modules wants.
            assert details.get("no_log") is False, f"{name}: {option} ({NOT_SECRET[name, option]}) needs no_log: False"
        else:
            assert details.get("no_log") is True, f"{name}: option {option} looks secret but is not no_log"


def test_the_known_secrets_are_no_log(monkeypatch):
    # The allow-list cannot hide a real secret: these must be found and masked.
    _module, spec = argument_spec_of("metric_gate", monkeypatch)
    assert spec["bearer_token"]["no_log"] is True and spec["password"]["no_log"] is True
    for name, option in NOT_SECRET:
        assert option in argument_spec_of(name, monkeypatch)[1], (name, option)


@pytest.mark.parametrize("name", MODULE_NAMES)
def test_tls_verification_is_on_by_default(name, monkeypatch):
    module, spec = argument_spec_of(name, monkeypatch)
    documented = yaml.safe_load(module.DOCUMENTATION)["options"]
    speaks_http = "url" in spec or "urls" in spec
    if speaks_http:
        assert spec["validate_certs"] == {"type": "bool", "default": True}, name
        assert documented["validate_certs"]["default"] is True, name
    for option, details in walk_spec(spec):
        if "validate_certs" in option or "verify" in option:
            assert details.get("default") is True, f"{name}: {option} must default to true"


def test_roles_verify_tls_by_default():
    roles = os.path.join(ROOT, "roles")
    found = []
    for role in sorted(os.listdir(roles)):
        path = os.path.join(roles, role, "defaults", "main.yml")
        if not os.path.exists(path):
            continue
        with open(path) as handle:
            defaults = yaml.safe_load(handle) or {}
        for variable, value in defaults.items():
            if variable.endswith("validate_certs"):
                found.append(variable)
                assert value is True, f"roles/{role}: {variable} defaults to {value!r}"
    assert "release_validate_certs" in found
    for top in ("roles", "playbooks"):
        for dirpath, _dirs, files in os.walk(os.path.join(ROOT, top)):
            for file in files:
                if file.endswith((".yml", ".yaml")):
                    with open(os.path.join(dirpath, file)) as handle:
                        text = handle.read()
                    assert not re.search(r"validate_certs:\s*(false|no)\b", text, re.I), os.path.join(dirpath, file)


SECRET = "s3cr3t-Zq8L"


def test_metric_gate_never_echoes_secrets(monkeypatch):
    from ansible_collections.safedeploy.fleet.plugins.modules import metric_gate

    # Nothing listens on port 9: the gate is inconclusive and fails, echoing its arguments.
    args = {"url": f"http://prom:{SECRET}-pw@127.0.0.1:9/", "app": "demoapp", "timeout": 1, "canary": ["web1:8080"],
            "headers": {"Authorization": f"Bearer {SECRET}-hdr", "X-Api-Key": f"{SECRET}-key", "X-Trace": "visible"}}
    failed, result = run_module(metric_gate, args)
    text = json.dumps(result)
    assert failed and "inconclusive" in result["msg"], result
    assert SECRET not in text, text
    assert "visible" in text  # only secret-looking values are masked
    failed, result = run_module(metric_gate, {"url": "http://127.0.0.1:9/", "app": "demoapp", "timeout": 1, "canary": ["w"],
                                              "bearer_token": f"{SECRET}-token"})
    assert failed and SECRET not in json.dumps(result)
    failed, result = run_module(metric_gate, {"url": "http://127.0.0.1:9/", "app": "demoapp", "timeout": 1, "canary": ["w"],
                                              "username": "u", "password": f"{SECRET}-basic"})
    assert failed and SECRET not in json.dumps(result)


def test_health_check_never_echoes_secrets():
    from ansible_collections.safedeploy.fleet.plugins.modules import health_check

    args = {"url": f"http://probe:{SECRET}-pw@127.0.0.1:9/ready", "deadline": 0, "timeout": 1,
            "headers": {"Authorization": f"Bearer {SECRET}-hdr", "Cookie": f"session={SECRET}-cookie"}}
    failed, result = run_module(health_check, args)
    text = json.dumps(result)
    assert failed and SECRET not in text, text


# -- the haproxy role: the admin socket ----------------------------------------------


def test_admin_socket_is_group_only_in_the_rendered_config(tmp_path):
    import jinja2

    with open(os.path.join(ROOT, "roles", "haproxy", "defaults", "main.yml")) as handle:
        variables = yaml.safe_load(handle)
    text = jinja2.Environment(loader=jinja2.FileSystemLoader(os.path.join(ROOT, "roles", "haproxy", "templates")),
                              undefined=jinja2.StrictUndefined).get_template("haproxy.cfg.j2").render(**variables)
    sockets = [line.split() for line in text.splitlines() if line.strip().startswith("stats socket")]
    assert len(sockets) == 1, sockets  # the TCP API is off by default
    words = sockets[0]
    assert words[2] == "/run/haproxy/admin.sock"
    settings = dict(zip(words[3::2], words[4::2]))
    assert settings["level"] == "admin"
    assert settings["mode"] == "660" and int(settings["mode"], 8) & 0o007 == 0  # nothing for other users
    assert settings["group"] == "haproxy"
