#!/usr/bin/env python3
"""Molecule's handle on the lab, used by the shared create and destroy playbooks.

    lab_ctl.py ensure  MARKER   create: make sure the lab is up with the layout asked for
    lab_ctl.py release MARKER   destroy: take the lab down if this scenario brought it up

``ensure`` keeps a lab that is already up when ``lab.py status`` says every
machine answers and its recorded configuration (hosts, LBs, layout, subnet,
bridge, name) is the one the LAB_* environment asks for; otherwise it runs
``lab.py up`` (which first removes an earlier lab in the same LAB_STATE_DIR)
and writes MARKER: the state directory and the ``started_at`` of the lab it
started.  ``release`` runs ``lab.py down`` only when MARKER names the lab that
is up now (same state dir, same ``started_at``), so a lab somebody else
started is never taken down, and MOLECULE_KEEP_LAB=1 keeps even our own.
MOLECULE_LAB_RESET=1 makes ``ensure`` power-cycle a kept lab back to its
baseline (``lab.py reset``).

Prints one JSON line: {"changed": bool, "msg": str}.  Honours every LAB_*
variable lab.py does (LAB_NAME, LAB_SUBNET, LAB_BRIDGE, LAB_STATE_DIR,
LAB_INVENTORY, LAB_HOSTS, LAB_LBS, LAB_LAYOUT, LAB_MONITORING, LAB_BASELINE).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
LAB_DIR = os.path.join(REPO, "tests", "lab")
LAB_PY = os.path.join(LAB_DIR, "lab.py")
sys.path.insert(0, LAB_DIR)

import lab as labmod  # noqa: E402
import labconfig  # noqa: E402


def truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def lab_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, LAB_PY, *args], text=True, capture_output=True,
                          env={**os.environ, **(env or {})})


def must(result: subprocess.CompletedProcess, what: str) -> None:
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        raise SystemExit(f"lab_ctl: {what} failed (exit {result.returncode})")


def read_state(state_dir: str) -> dict | None:
    try:
        with open(os.path.join(state_dir, "state.json"), encoding="utf-8") as handle:
            return json.load(handle)
    except (FileNotFoundError, ValueError):
        return None


def ensure(marker: str) -> dict:
    wanted = labconfig.LabConfig.from_env().to_dict()
    state = labmod.load_state()
    # Through LabConfig: a state written before a field existed reads with its default.
    current = labconfig.LabConfig.from_dict(state["config"]).to_dict() if state and state.get("config") else None
    if state is not None and current == wanted and lab_cli("status").returncode == 0:
        if not os.path.exists(labmod.INVENTORY):
            # Up, but started with another LAB_INVENTORY: write ours.
            labconfig.write_inventory(labconfig.LabConfig.from_dict(state["config"]),
                                      labmod.INVENTORY, labmod.KEY_FILE)
        if truthy("MOLECULE_LAB_RESET"):
            must(lab_cli("reset"), "lab.py reset")
            return {"changed": True, "msg": f"lab in {labmod.STATE_DIR} was up: reset to its baseline"}
        return {"changed": False, "msg": f"lab in {labmod.STATE_DIR} is up with this layout: kept "
                                         "(not ours: destroy will leave it up)"}
    why = "down" if state is None else (
        "up with another configuration" if current != wanted else "not answering")
    must(lab_cli("up"), "lab.py up")
    state = labmod.load_state() or {}
    os.makedirs(os.path.dirname(os.path.abspath(marker)), exist_ok=True)
    with open(marker, "w", encoding="utf-8") as handle:
        json.dump({"state_dir": labmod.STATE_DIR, "inventory": labmod.INVENTORY,
                   "started_at": state.get("started_at"), "config": state.get("config")}, handle)
    return {"changed": True, "msg": f"lab in {labmod.STATE_DIR} was {why}: brought up (ours)"}


def release(marker: str) -> dict:
    try:
        with open(marker, encoding="utf-8") as handle:
            owned = json.load(handle)
    except (FileNotFoundError, ValueError):
        return {"changed": False, "msg": "this scenario did not bring the lab up: left as it is"}
    if truthy("MOLECULE_KEEP_LAB"):
        return {"changed": False, "msg": f"MOLECULE_KEEP_LAB set: lab in {owned['state_dir']} left up"}
    state = read_state(owned["state_dir"])
    os.unlink(marker)
    if state is None or state.get("started_at") != owned.get("started_at"):
        return {"changed": False, "msg": f"the lab this scenario started in {owned['state_dir']} "
                                         "is gone or was replaced: left as it is"}
    must(lab_cli("down", env={"LAB_STATE_DIR": owned["state_dir"], "LAB_INVENTORY": owned["inventory"]}),
         "lab.py down")
    return {"changed": True, "msg": f"lab in {owned['state_dir']} taken down"}


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in ("ensure", "release"):
        sys.stderr.write(__doc__)
        return 2
    result = (ensure if argv[1] == "ensure" else release)(argv[2])
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
