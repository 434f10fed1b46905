#!/usr/bin/python
# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: deploy_lock
short_description: Take, hold, refresh and release a deployment lock per application and fleet
version_added: 0.1.0
author:
  - safedeploy.fleet contributors (@safedeploy)
description:
  - Keeps one lock per application and fleet in a file on the target host, so that two
    deployments (for example two scheduled AWX jobs) never change the same fleet at once.
    The playbooks hold it on the first load balancer host.
  - The lock file C(<path>/<name>.lock) is JSON and records the lock name, the O(run_id), the
    owner (user, controller, pid, AWX job id and any extra owner fields), when it was
    acquired and when it expires (ISO-8601 UTC and epoch seconds).
  - Every change of the lock file is made under an exclusive C(flock) on C(<path>/<name>.guard)
    and written with an atomic rename, so two runs taking the lock at the same moment cannot
    both win.
  - A lock held by another run that has not expired makes the task wait up to O(wait) seconds
    and then fail with a message naming the holder. An expired lock is taken over with a
    warning naming the stale holder.
  - The module runs on the target host and cannot see the controller's environment; pass
    O(user), O(controller), O(pid) and O(awx_job_id) from the playbook (for example from the
    C(awx_job_id) extra var AWX sets, or the C(AWX_JOB_ID) environment variable through the C(env) lookup).
extends_documentation_fragment:
  - safedeploy.fleet.attributes
attributes:
  check_mode:
    support: full
    details:
      - Reports whether the lock would be taken, renewed, refreshed or released, and who holds it;
        touches nothing (no directory, guard or lock file is created). A lock held by another run
        is reported with a warning instead of waiting and failing.
  diff_mode:
    support: full
    details:
      - Shows the lock record before and after.
options:
  name:
    description:
      - Name of the lock, usually C(<app>-<fleet>), for example C(demoapp-production).
      - Must match C(^[A-Za-z0-9][A-Za-z0-9._-]*$).
    type: str
    required: true
  path:
    description:
      - Directory that holds the lock files. Created (mode 0755) when the lock is first taken.
      - Must be absolute (a relative path would name a different directory in every run).
    type: path
    default: /var/lib/safedeploy/locks
  state:
    description:
      - V(present) takes the lock, or keeps holding it when this O(run_id) already holds it.
      - V(absent) releases the lock. Releasing a lock that does not exist changes nothing.
      - V(refreshed) extends the expiry of a lock this O(run_id) holds to now + O(ttl).
    type: str
    choices: [present, absent, refreshed]
    default: present
  run_id:
    description:
      - Unique identifier of this run (for example the AWX job id plus a timestamp, or a UUID made
        once at the start of the play).
      - Releasing or refreshing only works with the O(run_id) that took the lock, unless O(force=true).
      - Required for O(state=present) and O(state=refreshed), and for O(state=absent) unless O(force=true).
    type: str
  owner:
    description:
      - Free-form description of this run, recorded in the lock file.
      - A string is recorded as C(description); a dictionary is recorded as is.
      - O(user), O(controller), O(pid) and O(awx_job_id) override keys of the same name.
    type: raw
    aliases: [owner_info]
  user:
    description:
      - User who started the run (on the controller). Defaults to the O(owner) key C(user), then
        to the user the module runs as on the target.
    type: str
  controller:
    description:
      - Host name of the controller (or AWX node) running the play.
    type: str
  pid:
    description:
      - Process id of the C(ansible-playbook) process on the controller.
    type: str
  awx_job_id:
    description:
      - AWX / Automation Platform job id. AWX passes it to every job as the extra var C(awx_job_id)
        (C(tower_job_id) on older releases); C(playbooks/tasks/lock.yml) passes that, else C(AWX_JOB_ID)
        or C(JOB_ID) from the controller's environment.
      - Messages about the lock name the holder's job as C(AWX job <id>), followed by the owner key
        C(awx_job_template) (the job template's name) when the O(owner) dictionary has it.
      - When not given, the module looks at C(AWX_JOB_ID) and C(JOB_ID) in its own environment,
        which only helps with a local connection.
    type: str
  ttl:
    description:
      - Seconds from now until the lock counts as stale and may be taken over by another run.
      - Used by O(state=present) and O(state=refreshed).
    type: int
    default: 3600
  wait:
    description:
      - Seconds to wait for a lock held by another run to be released or to expire.
      - V(0) fails at once.
    type: int
    default: 0
  force:
    description:
      - With O(state=present) or O(state=refreshed), take over a live lock held by another run.
      - With O(state=absent), release a lock held by another run.
      - Also replaces an unreadable lock file.
      - Each forced action is reported with a warning naming the previous holder.
    type: bool
    default: false
notes:
  - The lock is advisory; it only protects against other runs that use this module with the same
    O(name) and O(path) on the same host.
seealso:
  - name: Ansible serial keyword
    description: Rolling batches the lock protects.
    link: https://docs.ansible.com/ansible/latest/playbook_guide/playbooks_strategies.html
"""

EXAMPLES = r"""
- name: Take the deploy lock on the first load balancer
  safedeploy.fleet.deploy_lock:
    name: "{{ deploy_app }}-{{ deploy_fleet }}"
    run_id: "{{ deploy_run_id }}"
    user: "{{ lookup('env', 'USER') | default('unknown', true) }}"
    controller: "{{ lookup('pipe', 'hostname') }}"
    awx_job_id: "{{ awx_job_id | default(lookup('env', 'AWX_JOB_ID'), true) }}"
    ttl: 3600
    wait: 300
  delegate_to: "{{ groups['lb'][0] }}"
  run_once: true

- name: Keep holding it during a long canary
  safedeploy.fleet.deploy_lock:
    name: demoapp-production
    run_id: "{{ deploy_run_id }}"
    state: refreshed
    ttl: 3600

- name: Release it
  safedeploy.fleet.deploy_lock:
    name: demoapp-production
    run_id: "{{ deploy_run_id }}"
    state: absent

- name: Break a lock left behind by a crashed run (operator action)
  safedeploy.fleet.deploy_lock:
    name: demoapp-production
    state: absent
    force: true
"""

RETURN = r"""
acquired:
  description: Whether this run holds the lock after the task (or would, in check mode).
  returned: always
  type: bool
  sample: true
holder:
  description:
    - The lock record after the task (or the one that would be written, in check mode).
    - When the lock is held by another run (failure, or check mode), that run's record.
    - Empty after a release.
  returned: always
  type: dict
  sample:
    name: demoapp-production
    run_id: awx-4711-20240501T120000
    owner:
      user: alice
      controller: awx-node-1
      pid: "12345"
      awx_job_id: "4711"
    host: lb1
    ttl: 3600
    acquired_at: "2024-05-01T12:00:00Z"
    acquired_at_epoch: 1714564800.0
    expires_at: "2024-05-01T13:00:00Z"
    expires_at_epoch: 1714568400.0
stale_takeover:
  description: Whether an expired lock of another run was taken over.
  returned: always
  type: bool
  sample: false
forced_takeover:
  description: Whether a live lock of another run was taken over because of O(force=true).
  returned: always
  type: bool
  sample: false
previous_holder:
  description: The record of the run whose lock was taken over or forcibly released; empty otherwise.
  returned: always
  type: dict
  sample: {}
lock_file:
  description: Path of the lock file.
  returned: always
  type: str
  sample: /var/lib/safedeploy/locks/demoapp-production.lock
msg:
  description: What happened, in words.
  returned: always
  type: str
  sample: deploy lock demoapp-production taken
"""

import getpass
import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.safedeploy.fleet.plugins.module_utils._lock import (
    DeployLock,
    LockError,
    LockHeldError,
    LockNotOwnedError,
    normalize_owner,
)


def _default_user():
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # pragma: no cover - no passwd entry, no LOGNAME
        return None


def build_owner(params):
    fields = {key: params.get(key) for key in ("user", "controller", "pid", "awx_job_id")}
    owner = normalize_owner(params.get("owner"), **fields)
    if not owner.get("user"):
        owner["user"] = _default_user()
    if not owner.get("awx_job_id"):
        owner["awx_job_id"] = os.environ.get("AWX_JOB_ID") or os.environ.get("JOB_ID") or None
    return owner


def main():
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "path": {"type": "path", "default": "/var/lib/safedeploy/locks"},
            "state": {"type": "str", "default": "present", "choices": ["present", "absent", "refreshed"]},
            "run_id": {"type": "str"},
            "owner": {"type": "raw", "aliases": ["owner_info"]},
            "user": {"type": "str"},
            "controller": {"type": "str"},
            "pid": {"type": "str"},
            "awx_job_id": {"type": "str"},
            "ttl": {"type": "int", "default": 3600},
            "wait": {"type": "int", "default": 0},
            "force": {"type": "bool", "default": False},
        },
        required_if=[
            ("state", "present", ["run_id"]),
            ("state", "refreshed", ["run_id"]),
        ],
        supports_check_mode=True,
    )
    params = module.params
    base = {"changed": False, "acquired": False, "holder": {}, "stale_takeover": False,
            "forced_takeover": False, "previous_holder": {}}
    try:
        lock = DeployLock(params["path"], params["name"])
        base["lock_file"] = lock.lock_file
        state = params["state"]
        if state == "absent" and not params["run_id"] and not params["force"]:
            module.fail_json(msg="state=absent needs run_id (the run that took the lock) or force=true", **base)
        owner = build_owner(params)
        if state == "present":
            result = lock.acquire(params["run_id"], owner=owner, ttl=params["ttl"], wait=params["wait"],
                                  force=params["force"], check_mode=module.check_mode)
        elif state == "refreshed":
            result = lock.refresh(params["run_id"], ttl=params["ttl"], owner=owner, force=params["force"],
                                  check_mode=module.check_mode)
        else:
            result = lock.release(params["run_id"], force=params["force"], check_mode=module.check_mode)
    except (LockHeldError, LockNotOwnedError) as exc:
        base["holder"] = exc.holder or {}
        module.fail_json(msg=str(exc), **base)
    except LockError as exc:
        module.fail_json(msg=str(exc), **base)

    for warning in result.warnings:
        module.warn(warning)
    out = dict(base)
    out.update(
        changed=result.changed,
        acquired=result.acquired,
        holder=result.holder or {},
        stale_takeover=result.stale_takeover,
        forced_takeover=result.forced_takeover,
        previous_holder=result.previous_holder or {},
        msg=result.msg,
    )
    if module._diff:
        out["diff"] = {"before": result.before or {}, "after": result.after or {},
                       "before_header": lock.lock_file, "after_header": lock.lock_file}
    module.exit_json(**out)


if __name__ == "__main__":
    main()
