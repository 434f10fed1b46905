#!/usr/bin/python
# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: batch_plan
short_description: Compute rolling batches like Ansible's serial and refuse plans that cost too much capacity
version_added: 0.1.0
author:
  - safedeploy.fleet contributors (@safedeploy)
description:
  - Splits an ordered list of hosts into batches exactly as C(ansible-playbook) does for a play's
    C(serial) keyword, so the plan can be shown and checked before anything changes.
  - O(serial) is an integer, a percentage string such as V(30%) or a list of them. Each list item
    is used for one batch in turn and the last one repeats. A percentage is of the number of
    hosts in O(hosts), rounded down but at least 1. A value of 0 or less, or no O(serial), puts
    all remaining hosts in one batch.
  - Capacity guard. A plan is refused (the task fails) when any batch would take more than
    O(max_unavailable) servers of the backend out of rotation, counting O(currently_down), or
    would leave no server of the backend in rotation.
  - Servers in O(currently_down) are counted as out of rotation during every batch.
  - Pure computation on the controller; it contacts no host. Run it with C(run_once) and
    C(delegate_to=localhost) or in a play on localhost.
extends_documentation_fragment:
  - safedeploy.fleet.attributes
attributes:
  check_mode:
    support: full
    details:
      - Computes the same plan as in a normal run; it never changes anything.
  diff_mode:
    support: none
options:
  hosts:
    description:
      - Host names of the play in the order Ansible runs them, for example V({{ ansible_play_hosts_all }}).
      - Duplicates are dropped, as Ansible does.
    type: list
    elements: str
    required: true
  serial:
    description:
      - The C(serial) value of the play, an integer, a percentage string or a list of them.
      - When not set, all hosts are in one batch.
    type: raw
  backend_size:
    description:
      - Number of servers in the load balancer backend.
      - Defaults to the number of distinct O(hosts).
      - Must be at least the number of distinct servers in O(hosts) and O(currently_down).
    type: int
  max_unavailable:
    description:
      - The most servers of the backend that may be out of rotation at once, as an integer or a
        percentage of O(backend_size) (rounded down, at least 1).
      - Must allow at least one server.
    type: raw
    default: 25%
  currently_down:
    description:
      - Servers of the backend that are already out of rotation (drained, in maintenance or down).
    type: list
    elements: str
    default: []
  max_unavailable_name:
    description:
      - How to call the limit in the refusal message, for example V(rolling_max_unavailable), so
        the message names the variable the user should change.
    type: str
    default: max_unavailable
  max_fail_percentage:
    description:
      - The play's C(max_fail_percentage); used to report in RV(tolerated_failures) how many hosts
        of each batch may fail before Ansible stops the play.
    type: float
seealso:
  - name: Ansible serial and max_fail_percentage
    description: The keywords whose arithmetic this module reproduces.
    link: https://docs.ansible.com/ansible/latest/playbook_guide/playbooks_strategies.html
"""

EXAMPLES = r"""
- name: Plan the rolling update and refuse it if it would cost too much capacity
  safedeploy.fleet.batch_plan:
    hosts: "{{ ansible_play_hosts_all }}"
    serial: [1, "25%"]
    max_unavailable: "{{ rolling_max_unavailable }}"
    max_unavailable_name: rolling_max_unavailable
    currently_down: "{{ lb_servers_down | default([]) }}"
  delegate_to: localhost
  run_once: true
  register: plan

- name: Show it
  ansible.builtin.debug:
    msg: "{{ plan.plan.splitlines() }}"
  run_once: true
"""

RETURN = r"""
batches:
  description: Host names per batch, in order. Also returned when the plan is refused.
  returned: always
  type: list
  elements: list
  sample: [["web1"], ["web2"], ["web3"], ["web4"]]
batch_sizes:
  description: Number of hosts in each batch.
  returned: always
  type: list
  elements: int
  sample: [1, 1, 1, 1]
max_unavailable_count:
  description: O(max_unavailable) as a number of servers.
  returned: always
  type: int
  sample: 1
backend_size:
  description: Number of servers in the backend used for the check.
  returned: always
  type: int
  sample: 4
out_of_rotation:
  description: Per batch, the servers out of rotation while it runs (the batch plus O(currently_down)).
  returned: success
  type: list
  elements: list
  sample: [["web1"], ["web2"], ["web3"], ["web4"]]
tolerated_failures:
  description:
    - Per batch, how many hosts may fail before Ansible stops the play, given O(max_fail_percentage)
      (and that a batch whose hosts all failed always stops it).
  returned: success
  type: list
  elements: int
  sample: [0, 0, 0, 0]
plan:
  description: The plan as text, one line per batch.
  returned: success
  type: str
  sample: |-
    Rolling plan: 4 hosts in 4 batches (backend of 4 servers; at most 1 out of rotation)
      batch 1/4  1 host   web1  [1/4 done after]
refused_batch:
  description: Number (1-based) of the first batch that breaks the capacity guard.
  returned: when the plan is refused
  type: int
  sample: 3
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.safedeploy.fleet.plugins.module_utils._plan import (
    CapacityRefusedError,
    PlanError,
    format_plan,
    max_failures_tolerated,
    plan_batches,
    serial_batches,
)


def main():
    module = AnsibleModule(
        argument_spec={
            "hosts": {"type": "list", "elements": "str", "required": True},
            "serial": {"type": "raw"},
            "backend_size": {"type": "int"},
            "max_unavailable": {"type": "raw", "default": "25%"},
            "currently_down": {"type": "list", "elements": "str", "default": []},
            "max_unavailable_name": {"type": "str", "default": "max_unavailable"},
            "max_fail_percentage": {"type": "float"},
        },
        supports_check_mode=True,
    )
    params = module.params
    try:
        plan = plan_batches(
            params["hosts"],
            serial=params["serial"],
            backend_size=params["backend_size"],
            max_unavailable=params["max_unavailable"],
            currently_down=params["currently_down"],
            max_unavailable_name=params["max_unavailable_name"],
        )
        tolerated = [max_failures_tolerated(size, params["max_fail_percentage"]) for size in plan.batch_sizes]
    except CapacityRefusedError as exc:
        module.fail_json(
            msg=str(exc),
            batches=exc.batches,
            batch_sizes=[len(b) for b in exc.batches],
            max_unavailable_count=exc.allowed,
            backend_size=exc.backend_size,
            refused_batch=exc.batch_number,
        )
    except PlanError as exc:
        batches = []
        try:
            batches = serial_batches(params["hosts"], params["serial"])
        except PlanError:
            pass
        module.fail_json(msg=str(exc), batches=batches, batch_sizes=[len(b) for b in batches],
                         max_unavailable_count=0, backend_size=params["backend_size"] or 0)

    result = plan.as_dict()
    result.update(
        changed=False,
        tolerated_failures=tolerated,
        plan=format_plan(plan.batches, currently_down=plan.currently_down, backend_size=plan.backend_size,
                         max_unavailable_count=plan.max_unavailable_count),
    )
    result.pop("currently_down", None)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
