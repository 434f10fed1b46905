#!/usr/bin/env python3
"""Ansible inventory script: the lab's inventory, as Molecule's scenarios see it.

Molecule passes its scenario inventory *directory* to ansible-playbook and to
testinfra; the shared config links this script into that directory as
``hosts``, so every scenario talks to the fleet that ``tests/lab/lab.py up``
described in ``$LAB_INVENTORY`` (default ``tests/lab/inventory.yml``).  It is
read at every run, so the link can exist before the lab does: while the lab
is down the inventory is simply empty.

Standard library only (the lab writes its inventory as JSON, which is YAML).
"""

from __future__ import annotations

import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
DEFAULT_INVENTORY = os.path.join(REPO, "tests", "lab", "inventory.yml")


def load(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        return {}
    try:
        return json.loads(text)
    except ValueError:
        import yaml  # only if someone hand-wrote a YAML inventory  # noqa: PLC0415

        return yaml.safe_load(text) or {}


def convert(inventory: dict) -> dict:
    """YAML-inventory layout (all: hosts/vars/children) -> script layout."""
    groups: dict = {}
    hostvars: dict = {}

    def walk(name: str, group: dict) -> None:
        entry = groups.setdefault(name, {"hosts": [], "vars": {}, "children": []})
        for host, variables in (group.get("hosts") or {}).items():
            if host not in entry["hosts"]:
                entry["hosts"].append(host)
            hostvars.setdefault(host, {}).update(variables or {})
        entry["vars"].update(group.get("vars") or {})
        for child, child_group in (group.get("children") or {}).items():
            if child not in entry["children"]:
                entry["children"].append(child)
            walk(child, child_group or {})

    for name, group in inventory.items():
        walk(name, group or {})
    groups["_meta"] = {"hostvars": hostvars}
    return groups


def main(argv: list[str]) -> int:
    data = convert(load(os.environ.get("LAB_INVENTORY") or DEFAULT_INVENTORY))
    if len(argv) > 2 and argv[1] == "--host":
        json.dump(data["_meta"]["hostvars"].get(argv[2], {}), sys.stdout)
    else:
        json.dump(data, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
