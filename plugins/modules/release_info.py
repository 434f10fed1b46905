#!/usr/bin/python
# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: release_info
short_description: Show the current, last good and rollback release of an application on one host
version_added: 0.1.0
author:
  - safedeploy.fleet contributors (@safedeploy)
description:
  - Reads the release store under O(path) that M(safedeploy.fleet.release) maintains and returns
    the current release, the last good one, the rollback candidate, the releases on disk and the
    activation history.
  - Read-only; takes no lock and writes nothing. A missing O(path) is not an error - RV(exists) is
    then V(false).
extends_documentation_fragment:
  - safedeploy.fleet.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
options:
  path:
    description: Root directory of the application, for example C(/opt/demoapp).
    type: path
    required: true
seealso:
  - module: safedeploy.fleet.release
"""

EXAMPLES = r"""
- name: Where can this host roll back to?
  safedeploy.fleet.release_info:
    path: /opt/demoapp
  register: store

- name: Roll back
  safedeploy.fleet.release:
    path: /opt/demoapp
    version: "{{ store.rollback_candidate }}"
    state: active
  when: store.rollback_candidate is not none

- name: Refuse to deploy onto a host whose current release is unknown
  ansible.builtin.assert:
    that: store.current is not none
    fail_msg: "{{ inventory_hostname }} has no current release under /opt/demoapp"
  when: store.exists
"""

RETURN = r"""
exists:
  description: Whether O(path) exists. When V(false) every other value is empty.
  returned: always
  type: bool
  sample: true
current:
  description: The version C(current) points to; V(null) if none (or if it points outside C(releases/)).
  returned: always
  type: str
  sample: 2.1.0
last_good:
  description: The most recently activated version whose verdict is good; V(null) if none.
  returned: always
  type: str
  sample: 2.0.3
rollback_candidate:
  description:
    - The newest release whose verdict is good, that is not current and is still on disk; V(null) if none.
  returned: always
  type: str
  sample: 2.0.3
releases:
  description: Releases on disk, newest (by activation or unpack) first.
  returned: always
  type: list
  elements: dict
  contains:
    version:
      description: The version.
      type: str
      sample: 2.1.0
    path:
      description: Its directory.
      type: str
      sample: /opt/demoapp/releases/2.1.0
    sha256:
      description: The sha256 of the artifact it was unpacked from; V(null) if it was not unpacked by the module.
      type: str
    verdict:
      description: V(pending), V(good) or V(bad); V(null) for directories the module did not unpack.
      type: str
      sample: good
    unpacked_at:
      description: When it was unpacked (ISO 8601, UTC).
      type: str
      sample: "2025-01-31T09:12:44Z"
    activated_at:
      description: When it was last activated (ISO 8601, UTC); V(null) if never.
      type: str
      sample: "2025-01-31T09:13:02Z"
    current:
      description: Whether it is the current release.
      type: bool
      sample: true
history:
  description: Every activation, oldest first (the last 1000 are kept).
  returned: always
  type: list
  elements: dict
  contains:
    version:
      description: The version activated.
      type: str
    sha256:
      description: The sha256 of its artifact.
      type: str
    activated_at:
      description: When (ISO 8601, UTC).
      type: str
    by:
      description: Who (the O(safedeploy.fleet.release#module:actor)).
      type: str
    previous:
      description: The version that was current before.
      type: str
    verdict:
      description: The version's verdict, V(pending) until it is marked good or bad.
      type: str
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402 - after the docs, by convention
from ansible_collections.safedeploy.fleet.plugins.module_utils._release import (  # noqa: E402
    ReleaseError,
    info,
)


def main():
    module = AnsibleModule(
        argument_spec={"path": {"type": "path", "required": True}},
        supports_check_mode=True,
    )
    try:
        result = info(module.params["path"])
    except ReleaseError as exc:
        module.fail_json(msg=str(exc), error=type(exc).__name__)
    except OSError as exc:
        module.fail_json(msg=f"reading the release store under {module.params['path']}: {exc}",
                         error=type(exc).__name__)
    for warning in result.pop("warnings"):
        module.warn(warning)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
