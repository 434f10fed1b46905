#!/usr/bin/python
# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: haproxy_map
short_description: Set or remove an HAProxy map entry at runtime and persist it to the map file
version_added: 0.1.0
author:
  - safedeploy.fleet contributors (@safedeploy)
description:
  - Sets (adds or changes) or removes one entry of an HAProxy map through the runtime API, so the change
    takes effect immediately without a reload.
  - With O(persist=true) (the default) the map file gets the same change, written atomically (temporary
    file in the same directory, then rename; mode and owner kept), so the next reload or restart keeps it.
    Comments, blank lines and the other entries of the file are kept as they are.
  - This is the blue/green switch, for example a C(use_backend) line whose backend name comes from the map
    through HAProxy's C(map) converter, with an entry C(app blue).
  - Run it on the load balancer (usually with C(delegate_to)); it needs only Python's standard library there.
extends_documentation_fragment:
  - safedeploy.fleet.attributes
  - safedeploy.fleet.haproxy_socket
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
options:
  map:
    description:
      - The map, as the runtime knows it, that is the map file path exactly as written in haproxy.cfg
        (see C(show map)). A map unknown to the runtime is an error.
      - With O(persist=true) this is also the file written; it must exist.
    type: str
    required: true
  key:
    description: The key (one word, no whitespace). Keys are compared exactly, not as patterns.
    type: str
    required: true
  value:
    description: The value; required when O(state=present). One line, no leading or trailing whitespace.
    type: str
  state:
    description:
      - V(present) sets O(key) to O(value) (adding it if missing).
      - V(absent) removes O(key); removing a key that is not there changes nothing.
    type: str
    choices: [present, absent]
    default: present
  persist:
    description: Also write the change to the map file so that it survives a reload.
    type: bool
    default: true
notes:
  - A change is reported when either the runtime or the file (with O(persist=true)) differs from what is wanted,
    so a file that drifted from the runtime is repaired.
seealso:
  - module: safedeploy.fleet.haproxy_server
"""

EXAMPLES = r"""
- name: Switch live traffic to the green pool
  safedeploy.fleet.haproxy_map:
    map: /etc/haproxy/maps/live_pool.map
    key: demoapp
    value: green
  delegate_to: lb1

- name: Point the preview port at the idle (blue) pool
  safedeploy.fleet.haproxy_map:
    map: /etc/haproxy/maps/live_pool.map
    key: demoapp_preview
    value: blue
  delegate_to: lb1

- name: Remove an entry at runtime only
  safedeploy.fleet.haproxy_map:
    socket: tcp://127.0.0.1:9999
    map: /etc/haproxy/maps/live_pool.map
    key: old_app
    state: absent
    persist: false
  delegate_to: lb1
"""

RETURN = r"""
before:
  description: The runtime value of O(key) before the change, C(null) if it was absent.
  returned: always
  type: str
  sample: blue
after:
  description: The runtime value of O(key) after the change (predicted in check mode), C(null) if absent.
  returned: always
  type: str
  sample: green
file_before:
  description: The value of O(key) in the map file before the change, C(null) if absent or if O(persist=false).
  returned: always
  type: str
  sample: blue
persisted:
  description: Whether the map file was (or, in check mode, would be) rewritten.
  returned: always
  type: bool
  sample: true
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.safedeploy.fleet.plugins.module_utils._haproxy import (  # noqa: E402
    HAProxyClient,
    HAProxyError,
    atomic_write,
    edit_map_text,
    map_file_value,
    read_map_file,
    socket_argument_spec,
    validate_map_entry,
)


def run(module):
    p = module.params
    map_name, key, state = p["map"], p["key"], p["state"]
    value = p["value"] if state == "present" else None
    validate_map_entry(key, value if value is not None else "")

    client = HAProxyClient(p["socket"], p["timeout"])
    before = client.get_map_value(map_name, key)  # raises if the runtime does not know the map
    file_text = file_before = None
    new_text = None
    if p["persist"]:
        file_text = read_map_file(map_name)  # raises if the file is missing
        file_before = map_file_value(file_text, key)
        new_text = edit_map_text(file_text, key, value)

    runtime_change = before != value
    file_change = p["persist"] and new_text != file_text
    result = {
        "changed": runtime_change or file_change,
        "before": before,
        "after": value,
        "file_before": file_before,
        "persisted": bool(file_change),
    }
    if module.check_mode:
        return result

    if runtime_change:
        if value is None:
            client.del_map_value(map_name, key)
        else:
            client.set_map_value(map_name, key, value)
    if file_change:
        atomic_write(map_name, new_text)
    result["after"] = client.get_map_value(map_name, key)
    return result


def _diff_text(key, value):
    return "" if value is None else f"{key} {value}\n"


def main():
    module = AnsibleModule(
        argument_spec={
            **socket_argument_spec(),
            "map": {"type": "str", "required": True},
            "key": {"type": "str", "required": True, "no_log": False},
            "value": {"type": "str"},
            "state": {
                "type": "str",
                "choices": ["present", "absent"],
                "default": "present",
            },
            "persist": {"type": "bool", "default": True},
        },
        required_if=[("state", "present", ("value",))],
        supports_check_mode=True,
    )
    try:
        result = run(module)
    except HAProxyError as exc:
        module.fail_json(msg=str(exc))
    if module._diff:
        key = module.params["key"]
        result["diff"] = {
            "before_header": f"{module.params['map']} (runtime)",
            "after_header": f"{module.params['map']} (runtime)",
            "before": _diff_text(key, result["before"]),
            "after": _diff_text(key, result["after"]),
        }
    module.exit_json(**result)


if __name__ == "__main__":
    main()
