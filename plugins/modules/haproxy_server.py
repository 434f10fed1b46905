#!/usr/bin/python
# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: haproxy_server
short_description: Set one HAProxy server's state and weight through the runtime API
version_added: 0.1.0
author:
  - safedeploy.fleet contributors (@safedeploy)
description:
  - Puts one server of an HAProxy backend in C(ready), C(drain) or C(maint) state and/or sets its weight,
    through the HAProxy runtime API (the C(stats socket)), on a UNIX socket or a TCP address.
  - With O(wait=true), waits until a drained server has no current sessions, and until a server put back
    to C(ready) is reported UP by its health check.
  - Refuses to take the last server of a backend that is UP and serving out of rotation (C(drain), C(maint)
    or weight 0) unless O(allow_last=true).
  - Without O(state) and O(weight) the module only reads the server's state (and waits, if asked).
  - Run it on the load balancer (usually with C(delegate_to)); it needs only Python's standard library there.
  - O(socket) must be at C(level admin) when O(state) or O(weight) is given.
  - Runtime changes are lost when HAProxy restarts unless a C(server-state-file) is used (the
    P(safedeploy.fleet.haproxy#role) role configures one and saves it before every reload).
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
    description: Name of the backend.
    type: str
    required: true
  name:
    description: Name of the server in O(backend).
    type: str
    required: true
    aliases: [server]
  state:
    description:
      - The administrative state wanted.
      - V(ready) puts the server in rotation, V(drain) stops sending it new connections (existing sessions
        and persistent clients keep going), V(maint) takes it out completely.
      - Omit it to leave the state as it is.
    type: str
    choices: [ready, drain, maint]
  weight:
    description:
      - The weight wanted, either an absolute integer between V(0) and V(256) or a percentage of the
        server's configured weight such as V(50%) (HAProxy computes C(configured * percent // 100)).
      - Omit it to leave the weight as it is.
    type: raw
  allow_last:
    description:
      - Allow taking the server out of rotation even if it is the last server of the backend that is UP,
        ready and with a weight above 0 (active or backup).
    type: bool
    default: false
  wait:
    description:
      - After setting V(drain) or V(maint), wait until the server has no current sessions
        (C(scur) of C(show stat)) for at most O(drain_timeout) seconds.
      - Also the default of O(wait_up).
    type: bool
    default: false
  drain_timeout:
    description: Seconds to wait for the server to have no sessions when O(wait=true).
    type: float
    default: 60
  on_drain_timeout:
    description:
      - What to do when the server still has sessions after O(drain_timeout).
      - V(fail) leaves the server in the state set and fails.
      - V(maint) puts the server in C(maint) state, warns, and succeeds with RV(drained=false).
    type: str
    choices: [fail, maint]
    default: fail
  wait_up:
    description:
      - After O(state=ready), wait until the server's health check reports it UP.
      - Defaults to the value of O(wait).
    type: bool
  up_timeout:
    description: Seconds to wait for the server to be UP when O(wait_up=true).
    type: float
    default: 60
notes:
  - One runtime API command per connection; the module polls C(show stat) every 0.25 s while waiting.
seealso:
  - module: safedeploy.fleet.haproxy_map
  - name: HAProxy runtime API
    description: The management guide of HAProxy 2.6.
    link: https://docs.haproxy.org/2.6/management.html#9.3
"""

EXAMPLES = r"""
- name: Drain web1 and wait until its sessions are gone
  safedeploy.fleet.haproxy_server:
    backend: demoapp
    name: web1
    state: drain
    wait: true
    drain_timeout: 30
  delegate_to: lb1

- name: Put web1 back and wait until the health check says UP
  safedeploy.fleet.haproxy_server:
    backend: demoapp
    name: web1
    state: ready
    wait: true
  delegate_to: lb1

- name: Give the canary 10 percent of its configured weight, over TCP
  safedeploy.fleet.haproxy_server:
    socket: tcp://127.0.0.1:9999
    backend: demoapp
    name: web3
    weight: "10%"
  delegate_to: lb1

- name: Drain, and fall back to maintenance if clients hang on
  safedeploy.fleet.haproxy_server:
    backend: demoapp
    name: web2
    state: drain
    wait: true
    drain_timeout: 20
    on_drain_timeout: maint
  delegate_to: lb1

- name: Read a server's state only (check that it exists)
  safedeploy.fleet.haproxy_server:
    backend: demoapp
    name: web1
  register: web1_state
  delegate_to: lb1
"""

RETURN = r"""
before:
  description: The server before the change.
  returned: always
  type: dict
  contains:
    operational_state:
      description:
        - What HAProxy reports (C(UP), C(DOWN), C(MAINT), C(DRAIN), C(NOLB), ...).
        - C(no check) is reported as C(UP).
      type: str
      sample: UP
    admin_state:
      description: The administrative state, V(ready), V(drain) or V(maint).
      type: str
      sample: ready
    weight:
      description: The current (user) weight.
      type: int
      sample: 100
    current_sessions:
      description: Current sessions on the server (C(scur)).
      type: int
      sample: 3
  sample: {operational_state: UP, admin_state: ready, weight: 100, current_sessions: 3}
after:
  description: The server after the change (in check mode, the predicted state).
  returned: always
  type: dict
  sample: {operational_state: DRAIN, admin_state: drain, weight: 100, current_sessions: 0}
drained:
  description: Whether the server ends out of rotation (C(drain) or C(maint)) with no current sessions.
  returned: always
  type: bool
  sample: true
waited:
  description: Seconds spent waiting (drain and up).
  returned: always
  type: float
  sample: 2.75
drain_timed_out:
  description: Whether the server still had sessions after O(drain_timeout) (with O(wait=true)).
  returned: always
  type: bool
  sample: false
initial_weight:
  description: The weight configured in haproxy.cfg (what percentages refer to).
  returned: always
  type: int
  sample: 100
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.safedeploy.fleet.plugins.module_utils._haproxy import (  # noqa: E402
    HAProxyClient,
    HAProxyError,
    HAProxyTimeoutError,
    resolve_weight,
    socket_argument_spec,
)

VIEW_KEYS = ("operational_state", "admin_state", "weight", "current_sessions")


def _view(server):
    return {key: server[key] for key in VIEW_KEYS}


def _predict(before, admin_state, weight):
    after = dict(before)
    after["admin_state"] = admin_state
    after["weight"] = weight
    if admin_state == "maint":
        after["operational_state"] = "MAINT"
    elif admin_state == "drain" and before["operational_state"] in (
        "UP",
        "DRAIN",
        "MAINT",
    ):
        after["operational_state"] = "DRAIN"
    elif admin_state == "ready" and before["operational_state"] in ("DRAIN", "MAINT"):
        after["operational_state"] = "UP" if before["operational_state"] == "DRAIN" else "DOWN"
    return after


def _last_up_message(backend, name, servers):
    others = ", ".join(
        f"{s['name']} {s['operational_state']}/{s['admin_state']}/weight {s['weight']}"
        for s in servers
        if s["name"] != name
    )
    return (
        f"refusing to take {backend}/{name} out of rotation: it is the last server of backend {backend!r} "
        f"that is UP, ready and with a weight above 0 (others: {others or 'none'}); "
        f"set allow_last: true to do it anyway"
    )


def run(module):
    p = module.params
    backend, name = p["backend"], p["name"]
    wait_up = p["wait"] if p["wait_up"] is None else p["wait_up"]
    client = HAProxyClient(p["socket"], p["timeout"])
    result = {
        "changed": False,
        "drained": False,
        "waited": 0.0,
        "drain_timed_out": False,
    }

    before = client.get_server(backend, name)
    result["initial_weight"] = before["initial_weight"]
    if p["state"] is not None or p["weight"] is not None:
        client.check_admin()

    want_state = p["state"] or before["admin_state"]
    want_weight = before["weight"] if p["weight"] is None else resolve_weight(p["weight"], before["initial_weight"])
    changed = want_state != before["admin_state"] or want_weight != before["weight"]

    takes_out = before["in_rotation"] and (want_state != "ready" or want_weight == 0)
    if takes_out and not p["allow_last"]:
        servers = client.list_servers(backend)
        if not any(s["in_rotation"] for s in servers if s["name"] != name):
            module.fail_json(
                msg=_last_up_message(backend, name, servers),
                before=_view(before),
                after=_view(before),
                **result,
            )

    result["before"] = _view(before)
    result["changed"] = changed

    if module.check_mode:
        after = _predict(before, want_state, want_weight)
        result["after"] = _view(after)
        result["drained"] = want_state != "ready" and after["current_sessions"] == 0
        return result

    if changed:
        if want_state == "ready":
            if want_weight != before["weight"]:
                client.set_weight(backend, name, want_weight)
            if want_state != before["admin_state"]:
                client.set_state(backend, name, want_state)
        else:
            if want_state != before["admin_state"]:
                client.set_state(backend, name, want_state)
            if want_weight != before["weight"]:
                client.set_weight(backend, name, want_weight)

    if p["wait"] and want_state in ("drain", "maint"):
        try:
            result["waited"] += client.wait_drained(backend, name, p["drain_timeout"])
        except HAProxyTimeoutError as exc:
            result["waited"] += exc.waited
            result["drain_timed_out"] = True
            if p["on_drain_timeout"] == "fail":
                result["after"] = _view(client.get_server(backend, name))
                module.fail_json(msg=str(exc), **result)
            if want_state != "maint":
                client.set_state(backend, name, "maint")
                result["changed"] = True
            module.warn(f"{exc}; server put in maint state (on_drain_timeout=maint)")
    elif wait_up and want_state == "ready":
        try:
            result["waited"] += client.wait_up(backend, name, p["up_timeout"])
        except HAProxyTimeoutError as exc:
            result["waited"] += exc.waited
            result["after"] = _view(exc.server or client.get_server(backend, name))
            module.fail_json(msg=str(exc), **result)

    after = client.get_server(backend, name)
    result["after"] = _view(after)
    result["drained"] = after["admin_state"] != "ready" and after["current_sessions"] == 0
    result["waited"] = round(result["waited"], 3)
    return result


def main():
    module = AnsibleModule(
        argument_spec={
            **socket_argument_spec(),
            "backend": {"type": "str", "required": True},
            "name": {"type": "str", "required": True, "aliases": ["server"]},
            "state": {"type": "str", "choices": ["ready", "drain", "maint"]},
            "weight": {"type": "raw"},
            "allow_last": {"type": "bool", "default": False},
            "wait": {"type": "bool", "default": False},
            "drain_timeout": {"type": "float", "default": 60},
            "on_drain_timeout": {
                "type": "str",
                "choices": ["fail", "maint"],
                "default": "fail",
            },
            "wait_up": {"type": "bool"},
            "up_timeout": {"type": "float", "default": 60},
        },
        supports_check_mode=True,
    )
    for option in ("drain_timeout", "up_timeout"):
        if module.params[option] < 0:
            module.fail_json(msg=f"{option} must be >= 0 seconds, got {module.params[option]}")
    try:
        result = run(module)
    except HAProxyError as exc:
        module.fail_json(msg=str(exc))
    if module._diff:
        result["diff"] = {
            "before_header": f"{module.params['backend']}/{module.params['name']}",
            "after_header": f"{module.params['backend']}/{module.params['name']}",
            "before": result["before"],
            "after": result["after"],
        }
    module.exit_json(**result)


if __name__ == "__main__":
    main()
