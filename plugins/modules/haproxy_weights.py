#!/usr/bin/python
# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: haproxy_weights
short_description: Send a share of a backend's traffic to its canary servers by setting every server's weight
version_added: 0.1.0
author:
  - safedeploy.fleet contributors (@safedeploy)
description:
  - Turns "O(percent) % of the traffic to the canary servers" into HAProxy weights (integers 0..256) for the
    canary and the stable servers of one backend and sets them through the runtime API, in one call.
  - Not every share can be reached exactly; the module picks the closest pair of weights (preferring a stable
    weight near O(base_weight)) and returns the share actually reached, RV(achieved_percent).
  - V(0) gives the canary servers weight 0 and the stable ones O(base_weight); with O(reset=true) every canary and
    stable server gets O(base_weight) (the backend back to normal).
  - The weights are changed in an order that never gives the canary more than the larger of the old and the
    new share in between (canary servers going to 0 first, then the changes that lower the share, then those that
    raise it) and raises weights before lowering any, which HAProxy's C(roundrobin) needs to keep sending every
    server its share right after the change.
  - Weights only; the servers' states (ready, drain, maint) are not touched. A drained server keeps the weight
    it is given and takes traffic at that weight once it is put back to ready.
  - Run it on the load balancer (C(delegate_to)); it needs only Python's standard library there. O(socket) must be
    at C(level admin).
extends_documentation_fragment:
  - safedeploy.fleet.attributes
  - safedeploy.fleet.haproxy_socket
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
options:
  backend:
    description: The backend.
    type: str
    required: true
  canary:
    description: The canary servers of O(backend).
    type: list
    elements: str
    required: true
  stable:
    description: The stable servers. Default - every other non-backup server of O(backend).
    type: list
    elements: str
  percent:
    description: The share of the traffic for the canary servers, 0 to 100. Required unless O(reset=true).
    type: float
  reset:
    description: Every canary and stable server back to O(base_weight).
    type: bool
    default: false
  base_weight:
    description: The usual weight of a server (what O(reset) restores, what 0 % gives the stable servers).
    type: int
    default: 100
  max_weight:
    description: The highest weight to use (HAProxy allows 256).
    type: int
    default: 256
  max_error:
    description: Fail when the closest reachable share is more than this many percentage points off O(percent).
    type: float
seealso:
  - module: safedeploy.fleet.haproxy_server
"""

EXAMPLES = r"""
- name: Ten percent of the traffic to web1
  safedeploy.fleet.haproxy_weights:
    backend: demoapp
    canary: [web1]
    percent: 10
  delegate_to: lb1
  register: step

- name: Say which share was reached
  ansible.builtin.debug:
    msg: "canary share {{ step.achieved_percent }} % (weights {{ step.canary_weight }}/{{ step.stable_weight }})"

- name: Back to normal
  safedeploy.fleet.haproxy_weights:
    backend: demoapp
    canary: [web1]
    reset: true
  delegate_to: lb1
"""

RETURN = r"""
canary_weight:
  description: The weight given to each canary server.
  returned: always
  type: int
  sample: 55
stable_weight:
  description: The weight given to each stable server.
  returned: always
  type: int
  sample: 99
requested_percent:
  description: O(percent) (with O(reset), the canary's share at equal weights).
  returned: always
  type: float
  sample: 10.0
achieved_percent:
  description: The canary share the weights give, when every canary and stable server is in rotation.
  returned: always
  type: float
  sample: 10.0
effective_percent:
  description:
    - The canary share counting only the servers in rotation now (ready, UP, weight above 0); null when none is.
  returned: always
  type: float
  sample: 10.0
canary:
  description: The canary servers.
  returned: always
  type: list
  elements: str
  sample: [web1]
stable:
  description: The stable servers.
  returned: always
  type: list
  elements: str
  sample: [web2, web3, web4, web5, web6]
servers:
  description: Per server, the weight before and after.
  returned: always
  type: dict
  sample: {web1: {before: 5, after: 55}, web2: {before: 99, after: 99}}
message:
  description: The change in words.
  returned: always
  type: str
  sample: "canary share 10% (requested 10%): weight 55 on web1, 99 on web2, web3, web4, web5, web6"
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.safedeploy.fleet.plugins.module_utils._haproxy import (  # noqa: E402
    HAProxyClient,
    HAProxyError,
    socket_argument_spec,
)
from ansible_collections.safedeploy.fleet.plugins.module_utils._weights import (  # noqa: E402
    WeightError,
    canary_weights,
    change_order,
    share_percent,
)


def _share(weights, canary, stable, servers=None):
    """Canary share from per-server weights (only the servers in ``servers`` if given)."""
    def counted(name):
        return servers is None or name in servers

    c = sum(weights[n] for n in canary if counted(n))
    s = sum(weights[n] for n in stable if counted(n))
    return None if c + s == 0 else 100.0 * c / (c + s)


def run(module):
    p = module.params
    client = HAProxyClient(p["socket"], p["timeout"])
    servers = {s["name"]: s for s in client.list_servers(p["backend"])}
    canary = list(dict.fromkeys(p["canary"]))
    if not canary:
        module.fail_json(msg="canary must name at least one server")
    missing = [n for n in canary + list(p["stable"] or []) if n not in servers]
    if missing:
        module.fail_json(msg=f"backend {p['backend']!r} has no server(s) {', '.join(missing)} "
                             f"(it has {', '.join(sorted(servers))})")
    if p["stable"] is None:
        stable = [n for n, s in servers.items() if n not in canary and not s["backup"]]
    else:
        stable = [n for n in dict.fromkeys(p["stable"]) if n not in canary]
    if p["reset"] and p["percent"] is not None:
        module.fail_json(msg="give either percent or reset: true, not both")
    if p["reset"]:
        if not 1 <= p["base_weight"] <= p["max_weight"]:
            module.fail_json(msg=f"base_weight must be between 1 and {p['max_weight']}, got {p['base_weight']}")
        w_c = w_s = p["base_weight"]
        requested = achieved = share_percent(w_c, w_s, len(canary), len(stable))
    else:
        if p["percent"] is None:
            module.fail_json(msg="give percent (0..100), or reset: true")
        plan = canary_weights(p["percent"], len(canary), len(stable), base_weight=p["base_weight"],
                              max_weight=p["max_weight"], max_error=p["max_error"])
        w_c, w_s = plan.canary_weight, plan.stable_weight
        requested, achieved = plan.requested_percent, plan.achieved_percent

    before = {n: servers[n]["weight"] for n in canary + stable}
    after = {**dict.fromkeys(canary, w_c), **dict.fromkeys(stable, w_s)}
    changed = before != after
    if changed:
        client.check_admin()
    order = change_order(before, after, canary)
    if changed and not module.check_mode:
        for name in order:
            if before[name] != after[name]:
                client.set_weight(p["backend"], name, after[name])
    in_rotation = {n for n, s in servers.items() if s["admin_state"] == "ready" and s["healthy"]}
    effective = _share(after, canary, stable, in_rotation)
    message = (f"canary share {achieved:.4g}% (requested {requested:.4g}%): weight {w_c} on {', '.join(canary)}"
               + (f", {w_s} on {', '.join(stable)}" if stable else ""))
    return {
        "changed": changed,
        "canary_weight": w_c,
        "stable_weight": w_s,
        "requested_percent": round(requested, 4),
        "achieved_percent": round(achieved, 4),
        "effective_percent": None if effective is None else round(effective, 4),
        "canary": canary,
        "stable": stable,
        "servers": {n: {"before": before[n], "after": after[n]} for n in canary + stable},
        "message": message,
        "diff": {"before": {n: before[n] for n in order}, "after": {n: after[n] for n in order},
                 "before_header": p["backend"], "after_header": p["backend"]},
    }


def main():
    module = AnsibleModule(
        argument_spec={
            **socket_argument_spec(),
            "backend": {"type": "str", "required": True},
            "canary": {"type": "list", "elements": "str", "required": True},
            "stable": {"type": "list", "elements": "str"},
            "percent": {"type": "float"},
            "reset": {"type": "bool", "default": False},
            "base_weight": {"type": "int", "default": 100},
            "max_weight": {"type": "int", "default": 256},
            "max_error": {"type": "float"},
        },
        supports_check_mode=True,
    )
    try:
        result = run(module)
    except (HAProxyError, WeightError) as exc:
        module.fail_json(msg=str(exc))
    if not module._diff:
        result.pop("diff")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
