#!/usr/bin/python
# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: haproxy_info
short_description: Read every server's state, weight and traffic counters from HAProxy's runtime API
version_added: 0.2.0
author:
  - safedeploy.fleet contributors (@safedeploy)
description:
  - Reads, through the HAProxy runtime API (C(show info), C(show servers state), C(show stat)), every server of
    the given backends - its administrative and operational state, its weight - and the C(show stat) counters
    a release is judged on - answers by status class, connection and response errors, retries,
    redispatches, sessions, queue, and the moving means of response, queue and total time.
  - Changes nothing; any socket level will do (C(level user) is enough).
  - One run reads one HAProxy. Run it on each load balancer (C(delegate_to) in a loop) and turn the registered
    results into one sample with the P(safedeploy.fleet.haproxy_sample#filter) filter, the input of
    M(safedeploy.fleet.metric_gate) with C(provider=haproxy).
  - On an error the task fails with RV(error_kind) - V(connection), V(permission), V(backend_not_found),
    V(value), V(response) or V(command) - as well as the message, so a caller (a loop with C(failed_when=false))
    never has to parse text.
  - Counters start again at 0 when HAProxy reloads; RV(process) tells one process from the next.
extends_documentation_fragment:
  - safedeploy.fleet.attributes
  - safedeploy.fleet.haproxy_socket
attributes:
  check_mode:
    support: full
    details: It only reads, so it runs in check mode too.
  diff_mode:
    support: none
options:
  backends:
    description:
      - The backends to read. A backend this HAProxy does not have is an error (V(backend_not_found)).
      - Empty - every backend.
    type: list
    elements: str
    default: []
notes:
  - C(rtime), C(qtime) and C(ttime) are not counters but HAProxy's moving means over about the last 1024
    requests of the server (exact means until it has served 512). See docs/analysis-haproxy.md for what
    the analysis does with them.
seealso:
  - module: safedeploy.fleet.metric_gate
  - module: safedeploy.fleet.haproxy_server
  - name: HAProxy statistics fields (CSV format)
    description: The meaning of every C(show stat) field.
    link: https://docs.haproxy.org/2.6/management.html#9.1
"""

EXAMPLES = r"""
- name: Read the demoapp backend on lb1
  safedeploy.fleet.haproxy_info:
    backends: [demoapp]
  delegate_to: lb1
  register: lb_read

- name: Read every load balancer, never failing, and make one sample of it
  safedeploy.fleet.haproxy_info:
    backends: [demoapp]
  delegate_to: "{{ item }}"
  loop: "{{ groups['lb'] }}"
  failed_when: false
  register: lb_reads

- name: The sample, for metric_gate (provider haproxy)
  ansible.builtin.set_fact:
    analysis_start: "{{ lb_reads | safedeploy.fleet.haproxy_sample }}"
"""

RETURN = r"""
servers:
  description: One entry per server of the backends read, in HAProxy's order.
  returned: success
  type: list
  elements: dict
  contains:
    backend:
      description: The backend.
      type: str
    name:
      description: The server's name in the backend.
      type: str
    admin_state:
      description: V(ready), V(drain) or V(maint).
      type: str
    operational_state:
      description: What HAProxy reports (C(UP), C(DOWN), C(MAINT), C(DRAIN), C(NOLB), ...); C(no check) is C(UP).
      type: str
    weight:
      description: The current weight.
      type: int
    healthy:
      description: UP by a passed health check (or not checked).
      type: bool
    hrsp_1xx:
      description: Answers of the server with a 1xx status (and likewise C(hrsp_2xx) ... C(hrsp_5xx), C(hrsp_other)).
      type: int
    econ:
      description: Requests given up because no connection to the server could be made (after the retries).
      type: int
    eresp:
      description: Response errors - the server closed or reset the connection, timed out, or broke off an answer
        (C(srv_abrt) is counted here too).
      type: int
    srv_abrt:
      description: Answers the server broke off after their status line (also in C(eresp) and C(hrsp_*)).
      type: int
    cli_abrt:
      description: Transfers the client broke off (not a failure of the server).
      type: int
    wretr:
      description: Connection attempts retried.
      type: int
    wredis:
      description: Requests sent to another server after failing on this one.
      type: int
    stot:
      description: Connections made to the server.
      type: int
    scur:
      description: Sessions on the server now.
      type: int
    qcur:
      description: Requests queued for the server now (only with a C(maxconn)).
      type: int
    slim:
      description: The server's C(maxconn), null without one.
      type: int
    rtime:
      description: Moving mean of the response time (to the answer's headers) in ms.
      type: int
    qtime:
      description: Moving mean of the time spent queued in ms.
      type: int
    ttime:
      description: Moving mean of the whole session time in ms.
      type: int
  sample:
    - {backend: demoapp, name: web1, admin_state: ready, operational_state: UP, weight: 100, healthy: true,
       hrsp_1xx: 0, hrsp_2xx: 1880, hrsp_3xx: 0, hrsp_4xx: 3, hrsp_5xx: 12, hrsp_other: 0, econ: 0, eresp: 1,
       srv_abrt: 0, cli_abrt: 2, wretr: 0, wredis: 0, stot: 1896, scur: 1, qcur: 0, slim: null, rtime: 4,
       qtime: 0, ttime: 5}
process:
  description: The HAProxy process that answered; a different C(pid) means a reload (its counters started at 0).
  returned: success
  type: dict
  sample: {pid: 4711, uptime_sec: 86400, version: 2.6.12-1+deb12u4}
backends:
  description: The backends read (every backend that has servers when O(backends) is empty).
  returned: success
  type: list
  elements: str
  sample: [demoapp]
error_kind:
  description:
    - Why the read failed - V(connection) (no socket, refused, timed out), V(permission) (the socket file
      cannot be opened), V(backend_not_found), V(value) (a malformed option), V(response) or V(command)
      (HAProxy answered something unexpected).
  returned: failure
  type: str
  sample: connection
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.safedeploy.fleet.plugins.module_utils._haproxy import (  # noqa: E402
    STAT_COUNTERS,
    STAT_GAUGES,
    HAProxyClient,
    HAProxyError,
    error_kind,
    socket_argument_spec,
)

# What each server entry holds: who it is, its state, and its show stat numbers.
SERVER_KEYS = ("backend", "name", "admin_state", "operational_state", "weight", "healthy") + STAT_COUNTERS + STAT_GAUGES


def run(module):
    p = module.params
    client = HAProxyClient(p["socket"], p["timeout"])
    process = client.process_info()
    servers = client.server_stats(p["backends"])
    return {
        "changed": False,
        "servers": [{key: server[key] for key in SERVER_KEYS} for server in servers],
        "process": process,
        "backends": list(p["backends"]) or list(dict.fromkeys(s["backend"] for s in servers)),
    }


def main():
    module = AnsibleModule(
        argument_spec={
            **socket_argument_spec(),
            "backends": {"type": "list", "elements": "str", "default": []},
        },
        supports_check_mode=True,
    )
    try:
        result = run(module)
    except HAProxyError as exc:
        module.fail_json(msg=str(exc), error_kind=error_kind(exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
