# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The order haproxy_weights changes weights in (_weights.change_order).

Two promises: between the weight calls the canary never gets more than the
larger of its old and new share, and no weight goes down before every weight
that goes up has gone up (HAProxy's roundrobin otherwise parks a server whose
weight changes while the total is low until the end of its window: one stable
server got nothing for a whole 50 % step on the lab, 55.6 % on the canary).
The last test shows the second one on a real HAProxy.
"""

from __future__ import annotations

import http.client
import random
from fractions import Fraction

import pytest
from ansible_collections.safedeploy.fleet.plugins.module_utils._haproxy import HAProxyClient
from ansible_collections.safedeploy.fleet.plugins.module_utils._weights import canary_weights, change_order
from ansible_collections.safedeploy.fleet.plugins.modules import haproxy_weights
from haproxy_fixture import HAPROXY, Backend, HAProxy, run_module

STABLE = ["web2", "web3", "web4", "web5", "web6"]


def plan_weights(percent):
    """web1's and the stable servers' weights for ``percent`` % on web1 (as haproxy_weights sets them)."""
    plan = canary_weights(percent, 1, len(STABLE))
    return {"web1": plan.canary_weight, **dict.fromkeys(STABLE, plan.stable_weight)}


def share(weights, canary):
    c = sum(w for n, w in weights.items() if n in canary)
    total = sum(weights.values())
    return None if total == 0 else Fraction(100 * c, total)


def prefixes(before, after, order):
    """The weights after each call of the order."""
    now = dict(before)
    for name in order:
        if now[name] != after[name]:
            now[name] = after[name]
            yield name, dict(now)


def check_promises(before, after, canary):
    order = change_order(before, after, canary)
    assert sorted(order) == sorted(after)
    changed = [n for n in order if before[n] != after[n]]
    assert order[:len(changed)] == changed, "changed servers first, then the unchanged ones"
    bound = max(s for s in (share(before, canary), share(after, canary)) if s is not None)
    lowest_total = min(sum(before.values()), sum(after.values()))
    # the share bound comes first when some canary servers go up and others down
    canary_both_ways = len({(after[n] > before[n]) - (after[n] < before[n]) for n in canary} - {0}) > 1
    seen_decrease = False
    for name, weights in prefixes(before, after, order):
        current = share(weights, canary)
        assert current is None or current <= bound, (name, weights)
        leaving = name in canary and after[name] == 0
        if after[name] < before[name] and not leaving:
            seen_decrease = True
        elif after[name] > before[name] and not canary_both_ways:
            assert not seen_decrease, f"{name} goes up after a weight went down: {order}"
        if not canary_both_ways and not any(after[n] == 0 and n in canary for n in after):
            assert sum(weights.values()) >= lowest_total, (name, weights)
    return order


def test_ten_to_fifty_raises_the_canary_before_lowering_the_stable_servers():
    # 55/99 -> 255/51: the step that starved a stable server when the stable ones went first
    order = check_promises(plan_weights(10), plan_weights(50), ["web1"])
    assert order == ["web1", *STABLE]


def test_abort_takes_the_canary_out_first():
    order = check_promises(plan_weights(10), plan_weights(0), ["web1"])
    assert order[0] == "web1"


def test_promote_from_fifty_raises_the_stable_servers_first():
    before = plan_weights(50)
    after = dict.fromkeys(before, 100)
    assert check_promises(before, after, ["web1"]) == [*STABLE, "web1"]


def test_the_canary_steps_of_the_role():
    steps = [None, 1, 10, 50, 0, "reset"]
    for old, new in zip(steps, steps[1:]):
        before = dict.fromkeys(["web1", *STABLE], 100) if old is None else plan_weights(old)
        after = dict.fromkeys(before, 100) if new == "reset" else plan_weights(new)
        check_promises(before, after, ["web1"])


def test_unchanged_servers_come_last_and_nothing_changes_when_equal():
    weights = plan_weights(10)
    assert change_order(weights, dict(weights), ["web1"]) == list(weights)


@pytest.mark.parametrize("seed", range(200))
def test_promises_hold_for_any_weights(seed):
    rng = random.Random(seed)
    n_canary, n_stable = rng.randint(1, 3), rng.randint(1, 5)
    names = [f"c{i}" for i in range(n_canary)] + [f"s{i}" for i in range(n_stable)]
    canary = names[:n_canary]
    before = {n: rng.choice([0, rng.randint(1, 256)]) for n in names}
    percent = rng.choice([0, 1, 5, 10, 25, 50, 75, 99])
    plan = canary_weights(percent, n_canary, n_stable, base_weight=rng.randint(1, 256))
    after = {n: plan.canary_weight if n in canary else plan.stable_weight for n in names}
    check_promises(before, after, canary)


# --- on a real HAProxy -------------------------------------------------------

pytestmark_real = pytest.mark.skipif(not HAPROXY or not __import__("os").path.exists(HAPROXY),
                                     reason="haproxy is not installed")


@pytest.fixture
def six_servers(tmp_path):
    backend = Backend("b")
    servers = "\n".join(f"  server {n} 127.0.0.1:{backend.port} weight 100" for n in ["web1", *STABLE])
    proxy = HAProxy(tmp_path, f"""
frontend f
  bind 127.0.0.1:FRONT_PORT
  default_backend app
backend app
  balance roundrobin
{servers}
""")
    yield proxy
    proxy.stop()
    backend.close()


def picks(proxy):
    """How many times HAProxy's balancing picked each server so far."""
    return {r["svname"]: int(r["lbtot"]) for r in HAProxyClient(proxy.sock).show_stat()
            if r.get("pxname") == "app" and r["svname"] not in ("FRONTEND", "BACKEND")}


def send(proxy, count):
    conn = http.client.HTTPConnection("127.0.0.1", proxy.front_port, timeout=5)
    try:
        for _ignored in range(count):
            conn.request("GET", "/ready")
            response = conn.getresponse()
            response.read()
            assert response.status == 200
    finally:
        conn.close()


@pytestmark_real
def test_every_stable_server_keeps_its_share_right_after_the_ten_to_fifty_step(six_servers):
    """10 % -> 50 % again and again, at every phase of HAProxy's round-robin window.

    Small weights (max_weight 30, base 20: 10/18 then 30/6) keep a window at
    16 x 100 requests, so 12 steps at changing phases take a few thousand
    requests. Every stable server must be picked right after each 50 % step.
    """
    args = {"socket": six_servers.sock, "backend": "app", "canary": ["web1"], "stable": STABLE,
            "max_weight": 30, "base_weight": 20}
    for trial in range(12):
        failed, ten = run_module(haproxy_weights, {**args, "percent": 10})
        assert not failed and (ten["canary_weight"], ten["stable_weight"]) == (10, 18), ten
        send(six_servers, 97 + 61 * trial)  # a different phase of the window each time
        failed, fifty = run_module(haproxy_weights, {**args, "percent": 50})
        assert not failed and (fifty["canary_weight"], fifty["stable_weight"]) == (30, 6), fifty
        before = picks(six_servers)
        send(six_servers, 120)  # two 50 % rounds of 60 picks
        after = picks(six_servers)
        got = {n: after[n] - before[n] for n in after}
        assert all(got[n] > 0 for n in STABLE), f"trial {trial}: a stable server got nothing: {got}"
        assert abs(100 * got["web1"] / sum(got.values()) - 50) <= 10, f"trial {trial}: {got}"
