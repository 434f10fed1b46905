#!/usr/bin/python
# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: release
short_description: Unpack, activate, judge and prune releases of an application on one host
version_added: 0.1.0
author:
  - safedeploy.fleet contributors (@safedeploy)
description:
  - Manages the release store of one application on the target host. Under O(path) it keeps
    C(releases/<version>/) (unpacked artifacts), C(current) (a relative symlink to the active
    release), C(shared/) (files that survive releases) and C(.safedeploy/history.json) (every
    unpack, activation and verdict).
  - "Artifacts are tar archives (optionally gzip, bzip2 or xz compressed) already on the target.
    The sha256 checksum is verified before the archive is opened. Members with absolute paths,
    C(..) components, symlinks or hard links that resolve outside the release, device nodes and
    FIFOs are refused, as is an archive whose content adds up to more than O(max_unpacked_bytes)
    (counted while reading, not taken from the headers) or that is truncated or corrupt."
  - The archive is unpacked into a temporary directory beside C(releases/) and renamed into place
    only when complete; on any failure the temporary directory is removed and C(current) is left
    untouched. An existing release is never replaced - the same version with different content is
    an error.
  - Activation is atomic - a new symlink is created and renamed over C(current) - and is recorded in
    the history with its sha256, time (UTC), actor and verdict (V(pending) until the version is
    marked V(good) or V(bad)).
  - After an activation the oldest releases beyond O(keep) are removed, but never the current
    release, the last good release nor the rollback candidate (the newest release marked good
    that is not current and is still on disk).
  - Every writer holds an exclusive lock on C(.safedeploy/lock), so concurrent runs on the same
    host cannot lose history entries.
extends_documentation_fragment:
  - safedeploy.fleet.attributes
attributes:
  check_mode:
    support: full
    details:
      - The checksum is verified and the archive is read and checked in full, but nothing is
        written, not even the lock file.
  diff_mode:
    support: full
    details:
      - Shows the C(current) release and the releases on disk before and after, and for
        O(state=good) or O(state=bad) the verdict of O(version).
options:
  path:
    description:
      - Root directory of the application, for example C(/opt/demoapp).
      - Created (with C(releases/), C(shared/) and C(.safedeploy/)) when a release is unpacked.
    type: path
    required: true
  version:
    description:
      - The release to act on. Becomes the directory name C(releases/<version>).
      - Must match C(^[A-Za-z0-9][A-Za-z0-9._+-]*$), must not contain C(..) and must be at most 128
        characters long; anything else (path separators, spaces, shell metacharacters) is refused.
    type: str
    required: true
  src:
    description:
      - Path of the artifact on the target host (C(.tar.gz), C(.tgz) or C(.tar)).
      - Needed with O(state=present) or O(state=active) when the release is not unpacked yet.
      - If the release already exists and O(src) is given, the artifact's sha256 must equal the
        one recorded when it was unpacked, otherwise the module fails.
    type: path
  checksum:
    description:
      - Expected checksum of O(src), as C(sha256:) followed by 64 hexadecimal digits.
      - Required to unpack O(src). The literal V(skip) unpacks without verification and adds a warning.
    type: str
  state:
    description:
      - V(present) - the release is unpacked, but not made current.
      - V(active) - the release is unpacked and C(current) points to it; older releases are pruned.
      - V(good) or V(bad) - record the verdict on the (already unpacked) release, with time and actor.
      - V(absent) - remove the release directory. Refused for the current release, the last good
        release and the rollback candidate.
    type: str
    choices: [present, active, good, bad, absent]
    default: present
  keep:
    description:
      - How many releases to keep on disk after an activation, counting the protected ones (current,
        last good, rollback candidate), which are kept even if that means keeping more.
      - Directories under C(releases/) that this module did not unpack are never pruned.
    type: int
    default: 5
  shared_paths:
    description:
      - Paths relative to the release that become symlinks to C(<path>/shared/<p>) when the release
        is unpacked. If C(shared/<p>) does not exist yet it is seeded with what the artifact has at
        C(<p>), or created as an empty directory.
      - Absolute paths and paths containing C(..) are refused.
    type: list
    elements: str
    default: []
  max_unpacked_bytes:
    description:
      - Largest total size of the unpacked content, in bytes. Larger archives are refused.
    type: int
    default: 1073741824
  actor:
    description:
      - Who is acting, recorded in the history as C(by).
      - Defaults to the environment variable C(SAFEDEPLOY_ACTOR) on the target, or else
        C(<SUDO_USER or USER>@<hostname>).
    type: str
  owner:
    description:
      - Owner (name or uid) of the unpacked tree and of directories created under C(shared/).
      - Applied when the release is unpacked.
    type: str
  group:
    description:
      - Group (name or gid) of the unpacked tree and of directories created under C(shared/).
      - Applied when the release is unpacked.
    type: str
notes:
  - Rollback means activating RV(rollback_candidate) - the newest release marked good that is not
    current - never the previous directory by modification time.
  - Requires only the Python standard library on the target.
seealso:
  - module: safedeploy.fleet.release_info
"""

EXAMPLES = r"""
- name: Unpack 2.1.0 without switching to it
  safedeploy.fleet.release:
    path: /opt/demoapp
    version: 2.1.0
    src: /var/tmp/demoapp-2.1.0.tar.gz
    checksum: sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
    shared_paths:
      - logs
      - config/local.yml
    owner: demoapp
    group: demoapp
    state: present

- name: Make 2.1.0 current, keeping 3 releases on disk
  safedeploy.fleet.release:
    path: /opt/demoapp
    version: 2.1.0
    state: active
    keep: 3
  register: release

- name: Health checks passed - remember 2.1.0 as good
  safedeploy.fleet.release:
    path: /opt/demoapp
    version: 2.1.0
    state: good
    actor: "{{ awx_user_name | default(lookup('env', 'USER')) }}"

- name: Health checks failed - mark it bad and go back to the last good release
  when: release.rollback_candidate is not none
  block:
    - name: Mark 2.1.0 bad
      safedeploy.fleet.release:
        path: /opt/demoapp
        version: 2.1.0
        state: bad

    - name: Activate the rollback candidate
      safedeploy.fleet.release:
        path: /opt/demoapp
        version: "{{ release.rollback_candidate }}"
        state: active

- name: Remove an old release by hand
  safedeploy.fleet.release:
    path: /opt/demoapp
    version: 1.9.0
    state: absent
"""

RETURN = r"""
version:
  description: The version acted on.
  returned: always
  type: str
  sample: 2.1.0
current:
  description: The version C(current) points to after this task (or would, in check mode); V(null) if none.
  returned: always
  type: str
  sample: 2.1.0
previous_current:
  description: The version C(current) pointed to before this task; V(null) if none.
  returned: always
  type: str
  sample: 2.0.3
last_good:
  description: The most recently activated version whose verdict is good; V(null) if none.
  returned: always
  type: str
  sample: 2.0.3
rollback_candidate:
  description:
    - The newest release whose verdict is good, that is not current and is still on disk - the one
      a rollback activates. V(null) if there is none. Never a release marked bad.
  returned: always
  type: str
  sample: 2.0.3
pruned:
  description: Versions removed (or that would be removed, in check mode) after the activation.
  returned: always
  type: list
  elements: str
  sample: [1.9.0, 1.9.1]
release_path:
  description: Directory of O(version) under C(releases/).
  returned: always
  type: str
  sample: /opt/demoapp/releases/2.1.0
sha256:
  description: The sha256 of the artifact O(version) was unpacked from, as recorded; V(null) if unknown.
  returned: always
  type: str
  sample: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
warnings:
  description:
    - Warnings, for example that the checksum was skipped or that a release marked bad was activated.
  returned: when there are any
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402 - after the docs, by convention
from ansible_collections.safedeploy.fleet.plugins.module_utils._release import (  # noqa: E402
    DEFAULT_KEEP,
    DEFAULT_MAX_UNPACKED_BYTES,
    STATES,
    ReleaseError,
    apply,
)


def argument_spec():
    return {
        "path": {"type": "path", "required": True},
        "version": {"type": "str", "required": True},
        "src": {"type": "path"},
        "checksum": {"type": "str"},
        "state": {"type": "str", "default": "present", "choices": list(STATES)},
        "keep": {"type": "int", "default": DEFAULT_KEEP},
        "shared_paths": {"type": "list", "elements": "str", "default": []},
        "max_unpacked_bytes": {"type": "int", "default": DEFAULT_MAX_UNPACKED_BYTES},
        "actor": {"type": "str"},
        "owner": {"type": "str"},
        "group": {"type": "str"},
    }


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    p = module.params
    try:
        result = apply(
            p["path"],
            p["version"],
            state=p["state"],
            src=p["src"],
            checksum=p["checksum"],
            keep=p["keep"],
            shared_paths=p["shared_paths"],
            max_unpacked_bytes=p["max_unpacked_bytes"],
            actor=p["actor"],
            owner=p["owner"],
            group=p["group"],
            check_mode=module.check_mode,
        )
    except ReleaseError as exc:
        module.fail_json(msg=str(exc), version=p["version"], error=type(exc).__name__)
    except OSError as exc:
        # Unexpected filesystem trouble (permissions, disk full): say where.
        module.fail_json(msg=f"release {p['version']!r} under {p['path']}: {exc}",
                         version=p["version"], error=type(exc).__name__)

    for warning in result.pop("warnings"):
        module.warn(warning)
    diff = result.pop("diff")
    if module._diff:
        result["diff"] = diff
    module.exit_json(**result)


if __name__ == "__main__":
    main()
