# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""haproxy_info against a real HAProxy, and the typed error kinds of _haproxy.py."""

from __future__ import annotations

import pytest
from ansible_collections.safedeploy.fleet.plugins.module_utils import _haproxy
from ansible_collections.safedeploy.fleet.plugins.modules import haproxy_info
from haproxy_fixture import Backend, HAProxy, free_port, run_module


@pytest.fixture(scope="module")
def backend():
    server = Backend("one")
    yield server
    server.close()


@pytest.fixture
def lb(tmp_path, backend):
    body = f"""
frontend f
  bind 127.0.0.1:FRONT_PORT
  default_backend app
backend app
  server s1 127.0.0.1:{backend.port} weight 10 maxconn 20
  server s2 127.0.0.1:{free_port()} weight 20 disabled
backend other
  server o1 127.0.0.1:{backend.port}
"""
    proxy = HAProxy(tmp_path, body)
    yield proxy
    proxy.stop()


def test_reads_state_weight_and_counters(lb):
    for _ignored in range(3):
        lb.get("/status/200")
    failed, result = run_module(haproxy_info, {"socket": lb.user_sock, "backends": ["app"]})
    assert not failed, result
    assert result["changed"] is False and result["backends"] == ["app"]
    assert result["process"]["pid"] == lb.pid and result["process"]["version"].startswith("2.")
    s1, s2 = result["servers"]
    assert (s1["backend"], s1["name"], s1["admin_state"], s1["operational_state"], s1["weight"]) == \
        ("app", "s1", "ready", "UP", 10)
    assert s1["hrsp_2xx"] == 3 and s1["slim"] == 20 and s1["econ"] == 0 and s1["stot"] == 3
    assert set(s1) == set(haproxy_info.SERVER_KEYS)
    assert (s2["name"], s2["admin_state"], s2["weight"], s2["slim"]) == ("s2", "maint", 20, None)


def test_every_backend_by_default_and_in_check_mode(lb):
    failed, result = run_module(haproxy_info, {"socket": lb.sock}, check_mode=True)
    assert not failed, result
    assert result["backends"] == ["app", "other"]
    assert [f"{s['backend']}/{s['name']}" for s in result["servers"]] == ["app/s1", "app/s2", "other/o1"]


@pytest.mark.parametrize(("args", "kind", "message"), [
    ({"backends": ["app", "nope", "gone"]}, "backend_not_found", "has no backend 'nope', 'gone' (its backends: app, other)"),
    ({"socket": "/nonexistent/admin.sock"}, "connection", "/nonexistent/admin.sock does not exist"),
    ({"socket": "http://127.0.0.1:1"}, "value", "only UNIX socket paths and tcp://host:port"),
    ({"backends": ["a b"]}, "value", "backend name must be a non-empty word"),
])
def test_errors_are_typed(lb, args, kind, message):
    failed, result = run_module(haproxy_info, {"socket": lb.sock, **args})
    assert failed and result["error_kind"] == kind
    assert message in result["msg"]


def test_tcp_closed_port_is_a_connection_error():
    failed, result = run_module(haproxy_info, {"socket": f"tcp://127.0.0.1:{free_port()}", "timeout": 1})
    assert failed and result["error_kind"] == "connection"


@pytest.mark.parametrize(("exc", "kind"), [
    (_haproxy.HAProxySocketPermissionError("no permission"), "permission"),
    (_haproxy.HAProxyPermissionError("level user"), "permission"),
    (_haproxy.HAProxyConnectionError("refused"), "connection"),
    (_haproxy.HAProxyTimeoutError("still 3 sessions"), "timeout"),
    (_haproxy.BackendNotFoundError("no backend"), "backend_not_found"),
    (_haproxy.ServerNotFoundError("no server"), "server_not_found"),
    (_haproxy.MapNotFoundError("no map"), "map_not_found"),
    (_haproxy.MapFileError("no file"), "file"),
    (_haproxy.HAProxyValueError("bad"), "value"),
    (_haproxy.HAProxyCommandError("unknown command"), "command"),
    (_haproxy.HAProxyResponseError("garbage"), "response"),
    (_haproxy.HAProxyError("other"), "error"),
])
def test_error_kind(exc, kind):
    assert _haproxy.error_kind(exc) == kind


def test_socket_permission_error_is_still_a_connection_error():
    # callers that caught HAProxyConnectionError for an unreadable socket still do
    assert issubclass(_haproxy.HAProxySocketPermissionError, _haproxy.HAProxyConnectionError)


def test_every_haproxy_module_shares_the_socket_options():
    import importlib

    spec = _haproxy.socket_argument_spec()
    for name in ("haproxy_info", "haproxy_server", "haproxy_weights", "haproxy_map"):
        module = importlib.import_module(f"ansible_collections.safedeploy.fleet.plugins.modules.{name}")
        assert "safedeploy.fleet.haproxy_socket" in module.DOCUMENTATION, name
        assert "\n  socket:" not in module.DOCUMENTATION and "\n  timeout:" not in module.DOCUMENTATION, name
        assert "socket_argument_spec" in vars(module), name
    assert spec == {"socket": {"type": "str", "default": "/run/haproxy/admin.sock"},
                    "timeout": {"type": "float", "default": 5.0}}
