"""Runs last (see conftest): lab-down leaves nothing of the lab behind."""

from __future__ import annotations

import json
import os
import subprocess

from conftest import lab_cli

import lab as labmod


def _nspawn_pids() -> set[int]:
    pids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and labmod.is_our_nspawn(int(entry)):
            pids.add(int(entry))
    return pids


def test_lab_down_leaves_no_namespace_bridge_veth_or_machine(lab):
    state = labmod.load_state()
    pids = {h["pid"] for h in state["hosts"].values() if h.get("pid")}
    assert pids and pids <= _nspawn_pids()
    lab_cli("down")
    netns = subprocess.run(["ip", "-j", "netns", "list"], capture_output=True, text=True).stdout
    names = {n["name"] for n in json.loads(netns or "[]")}
    links = {link["ifname"] for link in json.loads(
        subprocess.run(["ip", "-j", "link"], capture_output=True, text=True).stdout)}
    for host in state["hosts"].values():
        assert host["netns"] not in names
        assert host["veth"] not in links
    assert state["bridge"] not in links
    assert not pids & _nspawn_pids(), "an nspawn process survived lab-down"
    assert not any(labmod.is_our_nspawn(p) for p in _nspawn_pids() if p in pids)
    assert labmod.load_state() is None
    assert not os.path.exists(labmod.INVENTORY)
