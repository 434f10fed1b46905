"""preflight's fleet-scope check (roles/preflight/tasks/fleet_scope.yml): a run
that sees only part of the servers behind a backend (an AWX job slice,
--limit) is refused, naming the servers left out and why (issue 9).

The check's Jinja is rendered here as Ansible would, from the task file."""

from __future__ import annotations

import ast
import os

import jinja2
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TASKS = os.path.join(ROOT, "roles", "preflight", "tasks", "fleet_scope.yml")


def outside(play_hosts, backend_servers, inventory_servers, lbs=("lb1",)):
    """Render _preflight_fleet_outside for play hosts [(server, backend)] and
    {backend: [every server HAProxy has]}, as haproxy_weights returns them."""
    with open(TASKS, encoding="utf-8") as handle:
        tasks = yaml.safe_load(handle)
    assert_task = next(t for t in tasks if "ansible.builtin.assert" in t)
    template = assert_task["vars"]["_preflight_fleet_outside"]
    hosts = [{"server": s, "backend": b} for s, b in play_hosts]
    results = []
    for backend, servers in backend_servers.items():
        first = next(h for h in hosts if h["backend"] == backend)
        for lb in lbs:
            results.append({"item": [first, lb], "canary": [first["server"]],
                            "stable": [s for s in servers if s != first["server"]]})
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    text = env.from_string(template).render(
        _preflight_fleet_read={"results": results}, _preflight_hosts=hosts,
        _preflight_fleet_server_hosts=list(inventory_servers))
    return ast.literal_eval(text.strip())  # a list literal, as Ansible reads it back


FLEET = [f"web{i}" for i in range(1, 7)]


def test_the_whole_fleet_passes():
    assert outside([(h, "demoapp") for h in FLEET], {"demoapp": FLEET}, FLEET) == []


def test_a_limit_is_refused_naming_the_servers_left_out():
    out = outside([("web1", "demoapp"), ("web2", "demoapp")], {"demoapp": FLEET}, FLEET)
    assert out == ["demoapp on lb1 has 6 servers, this run has 2, left out by --limit or a slice: "
                   "web3, web4, web5, web6"]


def test_a_slice_sees_servers_its_inventory_does_not_have():
    # An AWX slice's inventory holds only the slice's hosts.
    out = outside([("web1", "demoapp"), ("web2", "demoapp")], {"demoapp": FLEET}, ["web1", "web2", "lb1"])
    assert out == ["demoapp on lb1 has 6 servers, this run has 2, not in this inventory: web3, web4, web5, web6"]


def test_each_backend_and_each_load_balancer_is_checked():
    hosts = [("a1", "api"), ("a2", "api"), ("w1", "web")]
    out = outside(hosts, {"api": ["a1", "a2"], "web": ["w1", "w2"]}, ["a1", "a2", "w1", "w2"], lbs=("lb1", "lb2"))
    assert out == ["web on lb1 has 2 servers, this run has 1, left out by --limit or a slice: w2",
                   "web on lb2 has 2 servers, this run has 1, left out by --limit or a slice: w2"]


def test_the_check_can_be_turned_off_on_purpose():
    with open(TASKS, encoding="utf-8") as handle:
        tasks = yaml.safe_load(handle)
    assert all(t["when"] == "not preflight_allow_partial_fleet | bool" for t in tasks)
    with open(os.path.join(ROOT, "roles", "preflight", "defaults", "main.yml"), encoding="utf-8") as handle:
        defaults = yaml.safe_load(handle)
    assert defaults["preflight_allow_partial_fleet"] == "{{ deploy_allow_partial_fleet | default(false) }}"
