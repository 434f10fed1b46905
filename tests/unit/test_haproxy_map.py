# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""haproxy_map and the map side of _haproxy.py, against a real HAProxy."""

from __future__ import annotations

import os
import stat

import pytest

from ansible_collections.safedeploy.fleet.plugins.module_utils import _haproxy
from ansible_collections.safedeploy.fleet.plugins.module_utils._haproxy import (
    HAProxyClient,
    HAProxyValueError,
    MapFileError,
    MapNotFoundError,
)
from ansible_collections.safedeploy.fleet.plugins.modules import haproxy_map
from haproxy_fixture import Backend, HAProxy, run_module

MAP_TEXT = "# which pool serves live traffic\ndemoapp blue\n\nother_app x\n"


@pytest.fixture(scope="module")
def pools():
    pair = Backend("blue"), Backend("green")
    yield pair
    for backend in pair:
        backend.close()


@pytest.fixture
def lb(tmp_path, pools):
    blue, green = pools
    map_file = tmp_path / "live_pool.map"
    map_file.write_text(MAP_TEXT)
    os.chmod(map_file, 0o640)
    body = f"""
frontend f
  bind 127.0.0.1:FRONT_PORT
  use_backend demoapp_%[str(demoapp),map({map_file})]
  default_backend demoapp_blue
backend demoapp_blue
  server b1 127.0.0.1:{blue.port}
backend demoapp_green
  server g1 127.0.0.1:{green.port}
"""
    proxy = HAProxy(tmp_path, body)
    proxy.map_file = str(map_file)
    yield proxy
    proxy.stop()


def mod(lb, check_mode=False, diff=False, **args):
    args.setdefault("socket", lb.sock)
    args.setdefault("map", lb.map_file)
    return run_module(haproxy_map, args, check_mode=check_mode, diff=diff)


def test_client_reads_maps(lb):
    client = HAProxyClient(lb.sock)
    assert lb.map_file in client.list_maps()
    assert client.show_map(lb.map_file) == [("demoapp", "blue"), ("other_app", "x")]
    assert client.get_map_value(lb.map_file, "demoapp") == "blue"
    assert client.get_map_value(lb.map_file, "nope") is None
    assert client.get_map(lb.map_file, "demoapp") == "blue"
    assert client.get_map(lb.map_file, "nope") is None
    with pytest.raises(MapNotFoundError, match="/no/such.map"):
        client.show_map("/no/such.map")


def test_switch_and_persist(lb):
    assert lb.get("/") == "blue"
    failed, result = mod(lb, diff=True, key="demoapp", value="green")
    assert not failed and result["changed"] and result["persisted"]
    assert result["before"] == "blue" and result["after"] == "green"
    assert result["file_before"] == "blue"
    assert result["diff"]["before"] == "demoapp blue\n"
    assert result["diff"]["after"] == "demoapp green\n"
    assert lb.get("/") == "green"
    text = open(lb.map_file).read()
    assert text == MAP_TEXT.replace("demoapp blue", "demoapp green")  # comments and order kept
    assert stat.S_IMODE(os.stat(lb.map_file).st_mode) == 0o640
    assert not [f for f in os.listdir(os.path.dirname(lb.map_file)) if f.endswith(".tmp")]
    failed, result = mod(lb, key="demoapp", value="green")
    assert not failed and not result["changed"] and not result["persisted"]


def test_add_remove_and_absent_missing(lb):
    failed, result = mod(lb, key="demoapp_preview", value="green")
    assert result["changed"] and result["before"] is None and result["after"] == "green"
    assert "demoapp_preview green\n" in open(lb.map_file).read()
    failed, result = mod(lb, key="demoapp_preview", state="absent")
    assert result["changed"] and result["before"] == "green" and result["after"] is None
    assert "demoapp_preview" not in open(lb.map_file).read()
    assert HAProxyClient(lb.sock).get_map_value(lb.map_file, "demoapp_preview") is None
    failed, result = mod(lb, key="demoapp_preview", state="absent")
    assert not failed and not result["changed"] and not result["persisted"]


def test_values_with_spaces_and_semicolons(lb):
    failed, result = mod(lb, key="odd", value="a b;c\\d")
    assert not failed and result["after"] == "a b;c\\d"
    assert HAProxyClient(lb.sock).get_map_value(lb.map_file, "odd") == "a b;c\\d"
    assert "odd a b;c\\d\n" in open(lb.map_file).read()


def test_persist_false_and_file_drift(lb):
    failed, result = mod(lb, key="demoapp", value="green", persist=False)
    assert result["changed"] and not result["persisted"]
    assert "demoapp blue" in open(lb.map_file).read()
    # runtime already right, file drifted: persisting repairs the file
    failed, result = mod(lb, key="demoapp", value="green")
    assert result["changed"] and result["persisted"] and result["before"] == "green"
    assert "demoapp green" in open(lb.map_file).read()


def test_check_mode_changes_nothing(lb):
    failed, result = mod(lb, check_mode=True, diff=True, key="demoapp", value="green")
    assert not failed and result["changed"] and result["persisted"]
    assert result["after"] == "green"
    assert HAProxyClient(lb.sock).get_map_value(lb.map_file, "demoapp") == "blue"
    assert open(lb.map_file).read() == MAP_TEXT


def test_errors(lb, tmp_path):
    failed, result = mod(lb, map=str(tmp_path / "unknown.map"), key="a", value="b")
    assert failed and "unknown.map" in result["msg"] and "does not know map" in result["msg"]
    failed, result = mod(lb, key="two words", value="b")
    assert failed and "'two words'" in result["msg"]
    failed, result = mod(lb, key="demoapp")
    assert failed and "value" in result["msg"]
    os.unlink(lb.map_file)
    failed, result = mod(lb, key="demoapp", value="green")
    assert failed and "does not exist" in result["msg"] and lb.map_file in result["msg"]
    # nothing was changed at runtime when the file is missing
    assert HAProxyClient(lb.sock).get_map_value(lb.map_file, "demoapp") == "blue"
    with pytest.raises(MapFileError):
        _haproxy.read_map_file(lb.map_file)
    with pytest.raises(HAProxyValueError, match="single line"):
        _haproxy.validate_map_entry("k", "a\nb")


def test_map_survives_reload(lb):
    failed, result = mod(lb, key="demoapp", value="green")
    assert not failed and lb.get("/") == "green"
    old = lb.pid
    lb.reload()
    assert lb.pid != old
    assert HAProxyClient(lb.sock).get_map_value(lb.map_file, "demoapp") == "green"
    assert lb.get("/") == "green"


def test_edit_map_text_pure():
    text = "# c\na 1\nb 2\na 3\n"
    assert _haproxy.edit_map_text(text, "a", "9") == "# c\na 9\nb 2\n"
    assert _haproxy.edit_map_text(text, "a", None) == "# c\nb 2\n"
    assert _haproxy.edit_map_text("x 1", "y", "2") == "x 1\ny 2\n"
    assert _haproxy.map_file_value(text, "b") == "2"
    assert _haproxy.map_file_value(text, "#") is None
