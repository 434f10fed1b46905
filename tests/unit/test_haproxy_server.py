# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""haproxy_server and the server side of _haproxy.py, against a real HAProxy."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import urllib.error

import pytest
from ansible_collections.safedeploy.fleet.plugins.module_utils import _haproxy
from ansible_collections.safedeploy.fleet.plugins.module_utils._haproxy import (
    BackendNotFoundError,
    HAProxyClient,
    HAProxyConnectionError,
    HAProxyPermissionError,
    HAProxyTimeoutError,
    HAProxyValueError,
    ServerNotFoundError,
)
from ansible_collections.safedeploy.fleet.plugins.modules import haproxy_server
from haproxy_fixture import Backend, HAProxy, free_port, run_module

CHECK = "check inter 100ms fall 1 rise 1"


@pytest.fixture(scope="module")
def backends():
    pair = Backend("one"), Backend("two")
    yield pair
    for backend in pair:
        backend.close()


@pytest.fixture
def lb(tmp_path, backends):
    one, two = backends
    one.gate.clear()
    one.in_slow.clear()
    dead = free_port()
    body = f"""
frontend f
  bind 127.0.0.1:FRONT_PORT
  default_backend app
backend app
  option httpchk GET /ready
  use-server s1 if {{ path_beg /slow }}
  server s1 127.0.0.1:{one.port} {CHECK} weight 10
  server s2 127.0.0.1:{two.port} {CHECK} weight 10
backend lonely
  option httpchk GET /ready
  server s1 127.0.0.1:{one.port} {CHECK} weight 10
  server dead 127.0.0.1:{dead} {CHECK} weight 10
  server bk 127.0.0.1:{two.port} {CHECK} weight 10 disabled
"""
    proxy = HAProxy(tmp_path, body)
    client = HAProxyClient(proxy.sock)
    wait_for(lambda: client.get_server("lonely", "dead")["operational_state"] == "DOWN")
    yield proxy
    proxy.stop()
    one.release()


def wait_for(predicate, timeout=5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached")


def mod(lb, check_mode=False, diff=False, **args):
    args.setdefault("socket", lb.sock)
    return run_module(haproxy_server, args, check_mode=check_mode, diff=diff)


def hold_slow_request(lb):
    """Open a request that stays on s1 until the backend is released."""
    result = {}

    def worker():
        try:
            result["body"] = lb.get("/slow", timeout=20)
        except (urllib.error.URLError, OSError) as exc:
            result["error"] = exc

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    return thread, result


# -- client ------------------------------------------------------------------


def test_get_server_and_list(lb):
    client = HAProxyClient(lb.sock)
    server = client.get_server("app", "s1")
    assert server["backend"] == "app" and server["name"] == "s1"
    assert server["operational_state"] == "UP"
    assert server["admin_state"] == "ready"
    assert server["weight"] == 10 and server["initial_weight"] == 10
    assert server["current_sessions"] == 0
    assert server["check_status"].startswith("L7OK")
    assert server["addr"].startswith("127.0.0.1:")
    names = [(s["backend"], s["name"]) for s in client.list_servers()]
    assert ("app", "s2") in names and ("lonely", "dead") in names
    assert [s["name"] for s in client.list_servers("lonely")] == ["s1", "dead", "bk"]
    assert client.get_server("lonely", "bk")["admin_state"] == "maint"
    assert client.show_info()["Pid"] == str(lb.pid)
    assert client.check_admin() == "admin"


def test_tcp_socket(lb):
    client = HAProxyClient(f"tcp://127.0.0.1:{lb.tcp_port}")
    assert client.get_server("app", "s2")["operational_state"] == "UP"
    failed, result = mod(
        lb,
        socket=f"tcp://127.0.0.1:{lb.tcp_port}",
        backend="app",
        name="s2",
        state="drain",
    )
    assert not failed and result["after"]["admin_state"] == "drain"


def test_unknown_backend_and_server(lb):
    client = HAProxyClient(lb.sock)
    with pytest.raises(BackendNotFoundError, match="'nope'"):
        client.get_server("nope", "s1")
    with pytest.raises(ServerNotFoundError, match="backend 'app' has no server 's9'"):
        client.get_server("app", "s9")
    with pytest.raises(BackendNotFoundError, match="'nope'"):
        client.set_state("nope", "s1", "drain")
    with pytest.raises(ServerNotFoundError, match="'s9'"):
        client.set_weight("app", "s9", 3)
    failed, result = mod(lb, backend="nope", name="s1", state="drain")
    assert failed and "'nope'" in result["msg"]
    failed, result = mod(lb, backend="app", name="s9", state="ready")
    assert failed and "'s9'" in result["msg"]


def test_bad_socket_and_values(tmp_path):
    with pytest.raises(HAProxyConnectionError, match="does not exist"):
        HAProxyClient(str(tmp_path / "none.sock")).show_info()
    with pytest.raises(HAProxyValueError, match="tcp://host:port"):
        HAProxyClient("tcp://localhost")
    with pytest.raises(HAProxyValueError, match="'udp://x:1'"):
        HAProxyClient("udp://x:1")
    for bad in (257, "300", "abc", "-1", "5.5%", True):
        with pytest.raises(HAProxyValueError, match="weight"):
            _haproxy.parse_weight(bad)
    assert _haproxy.resolve_weight("50%", 10) == 5
    assert _haproxy.resolve_weight("33%", 100) == 33
    assert _haproxy.resolve_weight(0, 100) == 0


def test_non_admin_socket(lb):
    with pytest.raises(HAProxyPermissionError, match="level 'user'"):
        HAProxyClient(lb.user_sock).check_admin()
    with pytest.raises(HAProxyPermissionError, match="level 'operator'"):
        HAProxyClient(lb.oper_sock).check_admin()
    with pytest.raises(HAProxyPermissionError, match="permission denied"):
        HAProxyClient(lb.user_sock).set_state("app", "s1", "drain")
    failed, result = mod(lb, socket=lb.user_sock, backend="app", name="s1", state="drain")
    assert failed and "level 'user'" in result["msg"] and "level admin" in result["msg"]
    # reading is fine at user level
    failed, result = mod(lb, socket=lb.user_sock, backend="app", name="s1")
    assert not failed and not result["changed"]


# -- states and weights -------------------------------------------------------


def test_state_changes_idempotent_with_diff(lb):
    failed, result = mod(lb, diff=True, backend="app", name="s1", state="drain")
    assert not failed and result["changed"]
    assert result["before"]["admin_state"] == "ready" and result["after"]["admin_state"] == "drain"
    assert result["after"]["operational_state"] == "DRAIN"
    assert result["diff"]["before"]["admin_state"] == "ready"
    assert result["drained"] is True
    failed, result = mod(lb, backend="app", name="s1", state="drain")
    assert not failed and not result["changed"]
    failed, result = mod(lb, backend="app", name="s1", state="maint")
    assert result["changed"] and result["after"]["operational_state"] == "MAINT"
    failed, result = mod(lb, backend="app", name="s1", state="ready", wait=True)
    assert not failed and result["changed"]
    assert result["after"] == {
        "operational_state": "UP",
        "admin_state": "ready",
        "weight": 10,
        "current_sessions": 0,
    }


def test_weights_absolute_and_percent(lb):
    failed, result = mod(lb, backend="app", name="s1", weight=3)
    assert not failed and result["changed"] and result["after"]["weight"] == 3
    failed, result = mod(lb, backend="app", name="s1", weight="3")
    assert not result["changed"]
    failed, result = mod(lb, backend="app", name="s1", weight="50%")
    assert result["changed"] and result["after"]["weight"] == 5 and result["initial_weight"] == 10
    failed, result = mod(lb, backend="app", name="s1", weight="50%")
    assert not result["changed"]
    assert "5 (initial 10)" in lb.cli("get weight app/s1")
    failed, result = mod(lb, backend="app", name="s1", weight=300)
    assert failed and "300" in result["msg"]
    failed, result = mod(lb, backend="app", name="s1", weight="2600%")
    assert failed and "2600%" in result["msg"]


def test_check_mode_changes_nothing(lb):
    failed, result = mod(
        lb,
        check_mode=True,
        diff=True,
        backend="app",
        name="s1",
        state="maint",
        weight=1,
        wait=True,
    )
    assert not failed and result["changed"]
    assert result["after"]["admin_state"] == "maint" and result["after"]["weight"] == 1
    server = HAProxyClient(lb.sock).get_server("app", "s1")
    assert server["admin_state"] == "ready" and server["weight"] == 10


# -- the last-UP guard ----------------------------------------------------------


def test_last_up_server_guard(lb):
    for args in (
        {"state": "drain"},
        {"state": "maint"},
        {"weight": 0},
        {"weight": "0%"},
    ):
        failed, result = mod(lb, backend="lonely", name="s1", **args)
        assert failed, args
        assert "last server of backend 'lonely'" in result["msg"] and "allow_last" in result["msg"]
        assert "dead DOWN/ready" in result["msg"]
    assert HAProxyClient(lb.sock).get_server("lonely", "s1")["admin_state"] == "ready"
    # check mode is guarded too
    failed, result = mod(lb, check_mode=True, backend="lonely", name="s1", state="drain")
    assert failed
    # a DOWN server may always be taken out
    failed, result = mod(lb, backend="lonely", name="dead", state="maint")
    assert not failed and result["changed"]
    failed, result = mod(lb, backend="lonely", name="s1", state="drain", allow_last=True)
    assert not failed and result["after"]["admin_state"] == "drain"
    # with another server in rotation, draining is fine
    failed, result = mod(lb, backend="app", name="s1", state="drain")
    assert not failed
    failed, result = mod(lb, backend="app", name="s2", state="drain")
    assert failed and "last server of backend 'app'" in result["msg"]


# -- waiting -----------------------------------------------------------------------


def test_drain_waits_for_sessions(lb, backends):
    one = backends[0]
    thread, outcome = hold_slow_request(lb)
    assert one.in_slow.wait(5)
    assert HAProxyClient(lb.sock).get_server("app", "s1")["current_sessions"] == 1
    threading.Timer(1.0, one.release).start()
    failed, result = mod(lb, backend="app", name="s1", state="drain", wait=True, drain_timeout=10)
    assert not failed, result
    assert result["before"]["current_sessions"] == 1
    assert result["drained"] is True and result["after"]["current_sessions"] == 0
    assert 0.7 <= result["waited"] < 5 and result["drain_timed_out"] is False
    thread.join(5)
    assert outcome.get("body") == "one"  # the held request completed, not cut


def test_drain_timeout_fails(lb, backends):
    one = backends[0]
    hold_slow_request(lb)
    assert one.in_slow.wait(5)
    failed, result = mod(lb, backend="app", name="s1", state="drain", wait=True, drain_timeout=0.5)
    assert failed and "still has 1 session(s)" in result["msg"] and "app/s1" in result["msg"]
    assert result["changed"] and result["after"]["admin_state"] == "drain"
    assert result["waited"] >= 0.5
    with pytest.raises(HAProxyTimeoutError):
        HAProxyClient(lb.sock).wait_drained("app", "s1", 0.2)


def test_drain_timeout_maint(lb, backends):
    one = backends[0]
    hold_slow_request(lb)
    assert one.in_slow.wait(5)
    failed, result = mod(
        lb,
        backend="app",
        name="s1",
        state="drain",
        wait=True,
        drain_timeout=0.5,
        on_drain_timeout="maint",
    )
    assert not failed and result["changed"]
    assert result["after"]["admin_state"] == "maint" and result["drained"] is False
    assert result["drain_timed_out"] is True


def test_wait_up_timeout_on_dead_server(lb):
    mod(lb, backend="lonely", name="dead", state="maint")
    failed, result = mod(lb, backend="lonely", name="dead", state="ready", wait=True, up_timeout=0.5)
    assert failed and "lonely/dead is " in result["msg"] and "L4CON" in result["msg"]
    failed, result = mod(lb, backend="lonely", name="dead", state="ready", wait=True, wait_up=False)
    assert not failed


# -- server-state-file across a reload ----------------------------------------------


def test_state_file_keeps_drain_across_reload(lb):
    client = HAProxyClient(lb.sock)
    mod(lb, backend="app", name="s1", state="drain")
    mod(lb, backend="app", name="s2", weight="50%")
    script = _haproxy.__file__
    subprocess.run(
        [
            sys.executable,
            script,
            "save-state",
            "--socket",
            lb.sock,
            "--file",
            lb.state_file,
        ],
        check=True,
        capture_output=True,
    )
    assert os.path.exists(lb.state_file)
    old_pid = lb.pid
    lb.reload()
    assert lb.pid != old_pid and client.show_info()["Pid"] == str(lb.pid)
    assert client.get_server("app", "s1")["admin_state"] == "drain"
    assert client.get_server("app", "s2")["weight"] == 5
    assert lb.get("/") == "two"  # traffic flows, and not to the drained server


def test_save_state_missing_ok(tmp_path):
    script = _haproxy.__file__
    args = [
        sys.executable,
        script,
        "save-state",
        "--socket",
        str(tmp_path / "x.sock"),
        "--file",
        str(tmp_path / "s"),
    ]
    assert subprocess.run(args, check=False, capture_output=True).returncode == 1
    assert subprocess.run([*args, "--missing-ok"], check=False, capture_output=True).returncode == 0
    assert not (tmp_path / "s").exists()
