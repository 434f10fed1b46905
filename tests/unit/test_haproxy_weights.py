# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""safedeploy.fleet.haproxy_weights against a real HAProxy on loopback, and traffic through it."""

from __future__ import annotations

import urllib.request

import pytest
from ansible_collections.safedeploy.fleet.plugins.module_utils._haproxy import HAProxyClient
from ansible_collections.safedeploy.fleet.plugins.modules import haproxy_weights
from haproxy_fixture import HAPROXY, Backend, HAProxy, run_module

pytestmark = pytest.mark.skipif(not HAPROXY or not __import__("os").path.exists(HAPROXY),
                                reason="haproxy is not installed")


@pytest.fixture(scope="module")
def backends():
    made = [Backend(f"b{i}") for i in range(4)]
    yield made
    for backend in made:
        backend.close()


@pytest.fixture
def lb(tmp_path, backends):
    servers = "\n".join(f"  server s{i} 127.0.0.1:{b.port} weight 100" for i, b in enumerate(backends))
    body = f"""
frontend f
  bind 127.0.0.1:FRONT_PORT
  default_backend app
backend app
  balance roundrobin
{servers}
  server spare 127.0.0.1:{backends[0].port} weight 100 backup
"""
    proxy = HAProxy(tmp_path, body)
    yield proxy
    proxy.stop()


def weights(lb):
    return {s["name"]: s["weight"] for s in HAProxyClient(lb.sock).list_servers("app")}


def mod(lb, check_mode=False, diff=False, **args):
    args.setdefault("socket", lb.sock)
    args.setdefault("backend", "app")
    return run_module(haproxy_weights, args, check_mode=check_mode, diff=diff)


def test_ten_percent_then_reset(lb):
    failed, result = mod(lb, canary=["s0"], percent=10)
    assert not failed, result
    assert result["changed"] is True
    # 1 canary against 3 stable: w_c / (w_c + 3 w_s) = 10 %, stable weight kept near 100
    assert result["achieved_percent"] == pytest.approx(10.0, abs=0.05)
    assert result["stable"] == ["s1", "s2", "s3"]  # the backup server is not a stable server
    assert weights(lb) == {"s0": result["canary_weight"], "s1": result["stable_weight"],
                           "s2": result["stable_weight"], "s3": result["stable_weight"], "spare": 100}
    assert result["effective_percent"] == pytest.approx(result["achieved_percent"])
    assert "canary share 10% (requested 10%)" in result["message"]

    failed, again = mod(lb, canary=["s0"], percent=10)
    assert not failed and again["changed"] is False

    failed, reset = mod(lb, canary=["s0"], reset=True, diff=True)
    assert not failed and reset["changed"] is True
    assert set(weights(lb).values()) == {100}
    assert reset["achieved_percent"] == 25.0
    assert reset["diff"]["after"] == {"s0": 100, "s1": 100, "s2": 100, "s3": 100}


def test_zero_and_one_percent(lb):
    failed, result = mod(lb, canary=["s0"], percent=0)
    assert not failed and weights(lb)["s0"] == 0 and result["achieved_percent"] == 0
    assert result["effective_percent"] == 0
    failed, result = mod(lb, canary=["s0"], percent=1)
    assert not failed
    assert result["achieved_percent"] == pytest.approx(1.0, abs=0.02)
    assert result["canary_weight"] >= 1


def test_share_is_what_haproxy_does(lb, backends):
    """Requests through HAProxy follow the weights (roundrobin is exact over a cycle)."""
    failed, result = mod(lb, canary=["s0", "s1"], percent=20)
    assert not failed
    total = result["canary_weight"] * 2 + result["stable_weight"] * 2
    hits = {}
    for _ignored in range(total):
        with urllib.request.urlopen(f"http://127.0.0.1:{lb.front_port}/ready", timeout=5) as resp:
            name = resp.read().decode()
            hits[name] = hits.get(name, 0) + 1
    canary_names = {backends[0].name, backends[1].name}
    canary_hits = sum(n for name, n in hits.items() if name in canary_names)
    assert canary_hits / total * 100 == pytest.approx(result["achieved_percent"], abs=2), hits


def test_check_mode_changes_nothing(lb):
    failed, result = mod(lb, check_mode=True, canary=["s0"], percent=50)
    assert not failed and result["changed"] is True
    assert set(weights(lb).values()) == {100}
    assert result["servers"]["s0"] == {"before": 100, "after": result["canary_weight"]}


def test_errors(lb):
    failed, result = mod(lb, canary=["nope"], percent=10)
    assert failed and "has no server(s) nope" in result["msg"]
    failed, result = mod(lb, canary=["s0"])
    assert failed and "give percent" in result["msg"]
    failed, result = mod(lb, canary=["s0"], percent=120)
    assert failed and "percent must be between 0 and 100" in result["msg"]
    failed, result = mod(lb, canary=["s0"], percent=0.01, max_error=0.001, max_weight=10, base_weight=5)
    assert failed and "cannot send" in result["msg"]
    failed, result = mod(lb, canary=["s0"], percent=10, reset=True)
    assert failed and "not both" in result["msg"]
    failed, result = mod(lb, backend="nobackend", canary=["s0"], percent=10)
    assert failed and "no backend" in result["msg"]
