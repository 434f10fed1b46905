# Copyright: (c) 2026, safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: human_gate
short_description: Can a person answer a prompt in this run
version_added: 0.2.0
author:
  - safedeploy.fleet contributors (@safedeploy)
description:
  - Says whether a pause that waits for a person (C(ansible.builtin.pause) with a prompt) can be answered in this run,
    and why not.
  - Not answerable under AWX, Automation Platform or ansible-runner (C(AWX_JOB_ID) or C(JOB_ID) in the controller's
    environment) - the prompt would wait on the job's pseudo-terminal until it times out; use an approval node of a
    workflow between the strategy's phases instead.
  - Not answerable when ansible-playbook's standard input is not a terminal (cron, CI, C(< /dev/null)) -
    C(ansible.builtin.pause) then returns at once, as if the person had agreed.
  - The strategy roles check it before anything changes (the private role C(_common), entry point C(human_gate)).
options: {}
"""

EXAMPLES = r"""
- name: Refuse a run whose approval nobody could give
  ansible.builtin.assert:
    that: lookup('safedeploy.fleet.human_gate').answerable
    fail_msg: "nobody can answer the approval prompt in this run ({{ lookup('safedeploy.fleet.human_gate').reason }})"
"""

RETURN = r"""
_raw:
  description: One dictionary.
  type: list
  elements: dict
  contains:
    answerable:
      description: Whether a person can answer a prompt in this run.
      type: bool
    reason:
      description: Why - C(AWX job 42), C(ansible-playbook has no terminal on its standard input), C(a terminal (/dev/pts/0)).
      type: str
    job:
      description: The AWX or ansible-runner job id, or an empty string.
      type: str
"""

import os

from ansible.plugins.lookup import LookupBase
from ansible_collections.safedeploy.fleet.plugins.plugin_utils._operator import controller_stdin, who_can_answer


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        return [who_can_answer(os.environ, controller_stdin())]
