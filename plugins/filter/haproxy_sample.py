# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: haproxy_sample
short_description: Turn haproxy_info results from every load balancer into one sample for metric_gate
version_added: 0.2.0
author:
  - safedeploy.fleet contributors (@safedeploy)
description:
  - Takes what a loop of M(safedeploy.fleet.haproxy_info) registered (one result per load balancer) and returns
    the sample M(safedeploy.fleet.metric_gate) reads with C(provider=haproxy),
    a mapping of load balancer name to C(error), C(process) and C(servers) (C(backend/server) to its counters).
  - The load balancer of a result is its loop item when that is a string (a C(loop) over the load balancers'
    names, delegated to each), else the host it was delegated to, else the name given in O(names).
  - A failed result (run the loop with C(failed_when) false) becomes an entry with only C(error), its C(kind) the
    module's C(error_kind) and its C(msg); an unreachable host becomes kind V(unreachable); a skipped one is
    left out. The analysis then names that load balancer and says why it could not judge.
positional: _input
options:
  _input:
    description: The registered result of a haproxy_info loop (or a list of results).
    type: raw
    required: true
  names:
    description: The load balancers' names, one per result, when the results do not say it themselves.
    type: list
    elements: str
"""

EXAMPLES = r"""
- name: Read every load balancer
  safedeploy.fleet.haproxy_info:
    backends: [demoapp]
  delegate_to: "{{ item }}"
  loop: "{{ groups['lb'] }}"
  failed_when: false
  register: lb_reads

- name: Keep the sample taken when the new version took traffic
  ansible.builtin.set_fact:
    analysis_start: "{{ lb_reads | safedeploy.fleet.haproxy_sample }}"
"""

RETURN = r"""
_value:
  description: The sample, one entry per load balancer.
  type: dict
  sample:
    lb1: {error: null, process: {pid: 4711, uptime_sec: 86400},
          servers: {demoapp/web1: {hrsp_2xx: 1880, hrsp_5xx: 12, econ: 0, eresp: 1, rtime: 4, scur: 1}}}
    lb2: {error: {kind: connection, msg: "cannot connect to HAProxy runtime API /run/haproxy/admin.sock: ..."}}
"""

from ansible.errors import AnsibleFilterError  # noqa: E402
from ansible_collections.safedeploy.fleet.plugins.module_utils._lbstats import (  # noqa: E402
    LBStatsConfigError,
    sample_from_results,
)


def haproxy_sample(registered, names=None):
    try:
        return sample_from_results(registered, names)
    except LBStatsConfigError as exc:
        raise AnsibleFilterError(str(exc)) from exc


class FilterModule:
    def filters(self):
        return {"haproxy_sample": haproxy_sample}
