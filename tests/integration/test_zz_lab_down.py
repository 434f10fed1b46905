"""The final check, after every other lab test: nothing of any lab is left.

Run alone after a parallel (xdist) session (``make test-integration`` does:
conftest leaves these tests out of the parallel session), or last in a serial
one.  The first test takes its own lab down and looks for what it created;
the second reads LAB_RECORD_DIR, where lab.py recorded every lab it brought
up, reset or took down during the run (one per test worker, Molecule's), and
looks for every network namespace, veth, bridge and nspawn process those
labs ever had.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess

import pytest
from conftest import lab_cli

import lab as labmod

pytestmark = pytest.mark.final


def _nspawn_pids() -> set[int]:
    pids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and labmod.is_our_nspawn(int(entry)):
            pids.add(int(entry))
    return pids


def _nspawn_netns() -> dict[int, str]:
    """Every running systemd-nspawn: its network namespace path (which names its lab's host)."""
    found = {}
    for pid in _nspawn_pids():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                argv = handle.read().decode("utf-8", "replace").split("\0")
        except OSError:
            continue
        found[pid] = next((a.split("=", 1)[1] for a in argv if a.startswith("--network-namespace-path=")), "")
    return found


def _netns() -> set[str]:
    out = subprocess.run(["ip", "-j", "netns", "list"], capture_output=True, text=True).stdout
    return {n["name"] for n in json.loads(out or "[]")}


def _links() -> set[str]:
    out = subprocess.run(["ip", "-j", "link"], capture_output=True, text=True).stdout
    return {link["ifname"] for link in json.loads(out)}


def test_lab_down_leaves_no_namespace_bridge_veth_or_machine(lab):
    state = labmod.load_state()
    pids = {h["pid"] for h in state["hosts"].values() if h.get("pid")}
    assert pids and pids <= _nspawn_pids()
    lab_cli("down")
    names, links = _netns(), _links()
    for host in state["hosts"].values():
        assert host["netns"] not in names
        assert host["veth"] not in links
    assert state["bridge"] not in links
    assert not pids & _nspawn_pids(), "an nspawn process survived lab-down"
    assert labmod.load_state() is None
    assert not os.path.exists(labmod.INVENTORY)


def _records() -> dict[str, list[dict]]:
    records = {}
    for path in sorted(glob.glob(os.path.join(os.environ["LAB_RECORD_DIR"], "*.jsonl"))):
        with open(path, encoding="utf-8") as handle:
            records[os.path.basename(path)] = [json.loads(line) for line in handle if line.strip()]
    return records


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> float:
    return max(0.0, min(a[1], b[1]) - max(a[0], b[0]))


def test_every_lab_of_the_run_left_nothing():
    records = _records()
    assert records, f"no lab was recorded in {os.environ['LAB_RECORD_DIR']}: run the lab tests first"
    # A recorded PID counts only when that process is still the recorded host's nspawn: PIDs are
    # reused, and other labs (a benchmark's, another job's) may run on the machine.
    names, links, alive = _netns(), _links(), _nspawn_netns()
    left = []
    for lab_name, events in records.items():
        assert events[-1]["event"] == "down", f"{lab_name}: last recorded event is {events[-1]['event']!r}, not down"
        for event in events:
            if event["bridge"] in links:
                left.append(f"{lab_name}: bridge {event['bridge']}")
            for host, entry in event["hosts"].items():
                if entry.get("netns") in names:
                    left.append(f"{lab_name}: netns {entry['netns']}")
                if entry.get("veth") in links:
                    left.append(f"{lab_name}: veth {entry['veth']}")
                if entry.get("pid") in alive and os.path.basename(alive[entry["pid"]]) == entry.get("netns"):
                    left.append(f"{lab_name}: {host}'s nspawn process {entry['pid']}")
        assert not os.path.exists(os.path.join(events[-1]["state_dir"], "state.json")), lab_name
    assert not left, left
    # The run had labs up side by side, and they did not share names.
    spans = {name: (events[0]["at"], events[-1]["at"]) for name, events in records.items()}
    if os.environ.get("LAB_RECORDS_PARALLEL"):
        together = [(a, b) for a in spans for b in spans if a < b and _overlap(spans[a], spans[b]) > 0]
        assert together, f"no two labs were up at the same time: {spans}"
    bridges = [e["bridge"] for events in records.values() for e in events[:1]]
    assert len(set(bridges)) == len(bridges), bridges
    print(f"{len(records)} labs recorded, all gone: " + ", ".join(
        f"{name} ({spans[name][1] - spans[name][0]:.0f} s, {len(events)} events)" for name, events in records.items()))
