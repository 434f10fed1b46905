#!/usr/bin/env python3
# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Benchmark: three ways to roll a release out, side by side on one lab.

  (a) naive        bench/rollout/naive.yml: serial + restart, LB left alone
  (b) haproxy      bench/rollout/haproxy_module.yml: community.general.haproxy
                   disabled (drain: true, wait) -> update -> wait_for port ->
                   enabled (wait for UP)
  (c) safedeploy   playbooks/deploy.yml (rolling, role defaults)

Every cell: ``lab.py reset`` (fleet back to its baseline release), live
traffic through the load balancer at --rate req/s from just before the
deploy until --tail seconds after it ended (tests/lab/traffic.py), then the
fleet's state: the version each host runs and the servers HAProxy has UP.

    .venv/bin/python bench/rollout/run.py            # every cell (~25 min)
    .venv/bin/python bench/rollout/run.py --quick    # 2.0.0 only, (a) vs (c)

The lab is the one named by LAB_NAME / LAB_SUBNET / LAB_BRIDGE /
LAB_STATE_DIR / LAB_INVENTORY (default: the default lab). It is brought up
if needed and taken down at the end if this run brought it up (--keep-lab
keeps it).
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import platform
import subprocess
import sys
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.dirname(HERE))
from readme_section import write_section  # noqa: E402
LAB_DIR = os.path.join(REPO, "tests", "lab")
sys.path.insert(0, LAB_DIR)
sys.path.insert(0, os.path.join(REPO, "build", "collections"))

import lab as labmod  # noqa: E402
import labconfig  # noqa: E402
from traffic import TrafficRecorder  # noqa: E402

METHODS = {
    "a": ("(a) serial + restart", os.path.join(HERE, "naive.yml")),
    "b": ("(b) community.general.haproxy drain", os.path.join(HERE, "haproxy_module.yml")),
    "c": ("(c) safedeploy.fleet deploy.yml", os.path.join(REPO, "playbooks", "deploy.yml")),
}
LONG_PATH = "/sleep?ms=2000"
README_BEGIN = "<!-- bench:rollout:begin (written by bench/rollout/run.py) -->"
README_END = "<!-- bench:rollout:end -->"


def cells(quick: bool) -> list[dict]:
    """What to run: one cell per (scenario, method), methods interleaved per scenario."""
    # scenario, release the fleet starts on, release deployed, traffic path,
    # HAProxy retry-on (None: the lab's, from roles/haproxy defaults)
    scenarios = [("good", "1.0.0", "2.0.0", "/", None)]
    methods = ("a", "c") if quick else ("a", "b", "c")
    if not quick:
        scenarios += [("never-ready", "1.0.0", "2.1.0-never-ready", "/", None),
                      ("errors", "1.0.0", "2.1.0-errors", "/", None),
                      ("long requests", "1.0.0", "2.0.0", LONG_PATH, None),
                      ("nograceful", "2.0.0-nograceful", "2.0.0", LONG_PATH, None),
                      ("nograceful-no-retry", "2.0.0-nograceful", "2.0.0", LONG_PATH, "conn-failure")]
    return [{"scenario": s, "baseline": b, "version": v, "path": p, "retry_on": r, "method": m}
            for s, b, v, p, r in scenarios for m in methods]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def lab_cli(*args: str, env: dict | None = None) -> float:
    started = time.monotonic()
    result = subprocess.run([sys.executable, os.path.join(LAB_DIR, "lab.py"), *args],
                            env={**os.environ, **(env or {})}, text=True,
                            capture_output=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"lab.py {' '.join(args)} failed:\n{result.stderr}")
    return time.monotonic() - started


def ensure_lab() -> tuple:
    """The lab the LAB_* variables name, brought up (on 1.0.0) unless it is up as wanted.

    Returns (its LabConfig, whether this call brought it up: the caller takes it down then)."""
    wanted = labconfig.LabConfig.from_env()
    state = labmod.load_state()
    started_here = state is None or state["config"] != wanted.to_dict()
    if started_here:
        log(f"lab: bringing up {wanted.app_count} app hosts{'' if wanted.monitoring else ' without monitoring'} "
            f"({labmod.STATE_DIR})")
        lab_cli("up", env={"LAB_BASELINE": "1.0.0"})
    return labconfig.LabConfig.from_dict(labmod.load_state()["config"]), started_here


def reset(baseline: str) -> float:
    """lab.py reset, tried twice: a machine that fails to boot once under load must not end the bench."""
    try:
        return lab_cli("reset", env={"LAB_BASELINE": baseline})
    except SystemExit as exc:
        log(f"    lab.py reset failed once, trying again: {str(exc).strip().splitlines()[-1]}")
        return lab_cli("reset", env={"LAB_BASELINE": baseline})


def set_retry_on(config: labconfig.LabConfig, retry_on: str) -> None:
    """Replace HAProxy's `retry-on` on every LB (until the next reset) and reload it.

    The lab's HAProxy (roles/haproxy defaults) retries GETs on another server
    when a connection fails or a response is cut (`retry-on conn-failure
    empty-response response-timeout`, `option redispatch`), which hides a cut
    request from the client. `conn-failure` alone is HAProxy's behaviour
    without a retry-on line.
    """
    for lb in config.lb_hosts:
        path = os.path.join(labmod.host_dir(lb), "haproxy", "haproxy.cfg")
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines(keepends=True)
        changed = [f"    retry-on {retry_on}\n" if line.strip().startswith("retry-on ") else line for line in lines]
        if changed == lines:
            raise SystemExit(f"{path}: no retry-on line to replace")
        with open(path, "w", encoding="utf-8") as handle:
            handle.writelines(changed)
        subprocess.run(["ssh", "-i", labmod.KEY_FILE, "-o", "StrictHostKeyChecking=no", "-o",
                        "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "BatchMode=yes",
                        f"root@{lb.ip}", "haproxy -c -q -f /etc/haproxy/haproxy.cfg && systemctl reload haproxy"],
                       check=True, timeout=60)
    time.sleep(1.0)
    labmod.wait_servers_up(config, labmod.load_state())


def bench_collections() -> str | None:
    """site-packages of build/bench-venv, where the `ansible` package put community.general."""
    for path in sorted(glob.glob(os.path.join(REPO, "build", "bench-venv", "lib", "python3*", "site-packages"))):
        if os.path.exists(os.path.join(path, "ansible_collections", "community", "general",
                                       "plugins", "modules", "haproxy.py")):
            return path
    return None


def community_general_version(path: str) -> str:
    try:
        with open(os.path.join(path, "ansible_collections", "community", "general", "MANIFEST.json"),
                  encoding="utf-8") as handle:
            return json.load(handle)["collection_info"]["version"]
    except (OSError, KeyError, ValueError):
        return "?"


def fleet_state(config: labconfig.LabConfig) -> dict:
    """What every app host runs (asked over HTTP) and what HAProxy has in rotation."""
    versions = {}
    for host in config.app_hosts:
        # /healthz: the errors flavour fails only user requests, never-ready only /ready.
        try:
            with urllib.request.urlopen(f"http://{host.ip}:{labconfig.APP_PORT}/healthz", timeout=3) as resp:
                versions[host.name] = resp.headers.get("X-App-Version") or "?"
        except urllib.error.HTTPError as exc:  # it answered: an error status still names the version
            versions[host.name] = exc.headers.get("X-App-Version") or f"HTTP {exc.code}"
        except Exception as exc:  # noqa: BLE001 - any other failure means "not answering"
            versions[host.name] = f"not answering ({exc.__class__.__name__})"
    servers = {}
    try:
        state = labmod.load_state()
        for server in labmod.haproxy_client(state, config.lb_hosts[0].name).list_servers():
            servers[server["name"]] = {"admin_state": server["admin_state"], "status": server["status"],
                                       "in_rotation": server["in_rotation"]}
    except Exception as exc:  # noqa: BLE001 - report, do not crash the bench
        servers = {"error": str(exc)}
    return {"versions": versions, "servers": servers}


def run_cell(cell: dict, config: labconfig.LabConfig, args, collections: str | None, logdir: str) -> dict:
    name = f"{cell['scenario']}-{cell['method']}".replace(" ", "_")
    label, playbook = METHODS[cell["method"]]
    reset_s = reset(cell["baseline"])
    if cell.get("retry_on"):
        set_retry_on(config, cell["retry_on"])
    before = fleet_state(config)
    long_requests = cell["path"] != "/"
    env = {**os.environ, "ANSIBLE_CONFIG": os.path.join(REPO, "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_FORCE_COLOR": "0"}
    if cell["method"] == "b":
        env["ANSIBLE_COLLECTIONS_PATH"] = os.pathsep.join([os.path.join(REPO, "build", "collections"), collections])
    argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", labmod.INVENTORY,
            playbook, "-e", json.dumps({"deploy_version": cell["version"]})]
    recorder = TrafficRecorder(config.lb_url, rate=args.rate, duration=3600, path=cell["path"],
                               timeout=10.0 if long_requests else 2.0,
                               connections=256 if long_requests else 8,
                               out=os.path.join(logdir, f"{name}.traffic.jsonl"))
    log(f"--- {cell['scenario']}: {cell['baseline']} -> {cell['version']}, {label}, traffic {cell['path']}")
    recorder.start()
    time.sleep(1.0)  # traffic flowing before the deploy starts
    deploy_start = time.time()
    with open(os.path.join(logdir, f"{name}.ansible.log"), "w", encoding="utf-8") as out:
        proc = subprocess.run(argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, check=False)
    deploy_end = time.time()
    time.sleep(args.tail)
    summary = recorder.stop()
    records = recorder.records
    failed = [r for r in records if r["error"] or not 200 <= (r["status"] or 0) < 300]
    after = fleet_state(config)
    result = {
        **cell, "label": label, "rc": proc.returncode, "run": args.run_id,
        "wall_s": round(deploy_end - deploy_start, 2), "reset_s": round(reset_s, 2),
        "requests": summary.total, "failed": summary.failed, "not_sent": summary.not_sent,
        "failed_during_deploy": sum(1 for r in failed if r["t"] < deploy_end),
        "failed_after_deploy": sum(1 for r in failed if r["t"] >= deploy_end),
        "errors": summary.errors, "latency_p50_ms": summary.latency_p50_ms,
        "latency_p99_ms": summary.latency_p99_ms, "served_versions": summary.versions,
        "before": before, "after": after,
    }
    log(f"    rc {proc.returncode}, {result['wall_s']} s, failed {summary.failed}/{summary.total} "
        f"({result['failed_during_deploy']} during, {result['failed_after_deploy']} after) {summary.errors}; "
        f"left: {describe_versions(after)}; UP {describe_servers(after)}")
    return result


def describe_versions(state: dict) -> str:
    counts: dict[str, list[str]] = {}
    for host, version in state["versions"].items():
        counts.setdefault(version, []).append(host)
    if len(counts) == 1:
        version, hosts = next(iter(counts.items()))
        return f"all {len(hosts)}: {version}"
    parts = sorted(counts.items(), key=lambda kv: -len(kv[1]))
    return ", ".join(f"{v} ×{len(h)}" + (f" ({', '.join(h)})" if len(h) <= 2 else "") for v, h in parts)


def describe_servers(state: dict) -> str:
    servers = state["servers"]
    if "error" in servers:
        return f"? ({servers['error']})"
    up = [n for n, s in servers.items() if s["in_rotation"]]
    out = [f"{n} {s['admin_state'] if s['admin_state'] != 'ready' else s['status']}"
           for n, s in servers.items() if not s["in_rotation"]]
    return f"{len(up)}/{len(servers)}" + (f" ({', '.join(out)})" if out else "")


def markdown(results: list[dict], meta: dict) -> str:
    lines = [
        f"Measured {meta['date']} on {meta['machine']}; {meta['ansible']}; community.general "
        f"{meta['community_general']}; {meta['hosts']} app hosts behind one HAProxy, batches "
        f"`rolling_serial` {meta['serial']} for all three; traffic {meta['rate']:g} req/s through the LB "
        f"from 1 s before each deploy until {meta['tail']:g} s after it; "
        + ("one run, cells interleaved." if len(meta.get("runs", [])) <= 1 else
           "; ".join(f"run {i} started {run}" for i, run in enumerate(meta["runs"], 1))
           + "; the (a), (b), (c) cells of one scenario always come from the same run, interleaved."),
        "",
        "| release (traffic) | rollout | failed requests (during / after deploy) | deploy wall time "
        "| playbook | versions left | servers in rotation |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        notes = ([] if r["path"] == "/" else [f"`{r['path']}`"]) + (
            [f"HAProxy `retry-on {r['retry_on']}`"] if r.get("retry_on") else [])
        traffic = f" ({', '.join(notes)})" if notes else ""
        if len(meta.get("runs", [])) > 1:
            traffic += f" [run {meta['runs'].index(r['run']) + 1}]"
        release = f"{r['baseline']} → {r['version']}{traffic}"
        errors = ", ".join(f"{k} {v}" for k, v in sorted(r["errors"].items()))
        failed = f"**{r['failed']}** of {r['requests']}"
        if r["failed"]:
            failed += f" ({r['failed_during_deploy']} / {r['failed_after_deploy']}; {errors})"
        lines.append(f"| {release} | {r['label']} | {failed} | {r['wall_s']:.1f} s "
                     f"| {'ok' if r['rc'] == 0 else 'failed (rc ' + str(r['rc']) + ')'} "
                     f"| {describe_versions(r['after'])} | {describe_servers(r['after'])} |")
    return "\n".join(lines) + "\n"


def write_readme(path: str, text: str) -> None:
    write_section(path, README_BEGIN, README_END, text)


def ansible_version() -> str:
    out = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "--version"],
                         capture_output=True, text=True, check=False).stdout
    return out.splitlines()[0].replace("[", "").replace("]", "") if out else "?"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2.0.0 only, (a) vs (c)")
    parser.add_argument("--rate", type=float, default=100.0, help="requests/s through the LB (default 100)")
    parser.add_argument("--tail", type=float, default=20.0, help="seconds of traffic after each deploy (default 20)")
    parser.add_argument("--only", help="comma-separated scenarios to run (good,never-ready,errors,"
                                       "long requests,nograceful,nograceful-no-retry)")
    parser.add_argument("--methods", help="comma-separated methods to run (a,b,c)")
    parser.add_argument("--json", default=os.path.join(REPO, "build", "bench", "rollout.json"))
    parser.add_argument("--readme", help="write the table into this README between the rollout markers")
    parser.add_argument("--merge", action="store_true",
                        help="keep the cells of the existing --json file that this run does not redo")
    parser.add_argument("--keep-lab", action="store_true", help="leave the lab up at the end")
    args = parser.parse_args()

    todo = cells(args.quick)
    if args.only:
        wanted = {s.strip() for s in args.only.split(",")}
        todo = [c for c in todo if c["scenario"] in wanted]
    if args.methods:
        todo = [c for c in todo if c["method"] in set(args.methods.split(","))]
    collections = bench_collections()
    if any(c["method"] == "b" for c in todo) and not collections:
        raise SystemExit("rollout (b) needs community.general: run bench/run.py (it installs it), or python3 "
                         "-m venv build/bench-venv && build/bench-venv/bin/pip install -r bench/requirements.txt")

    config, started_here = ensure_lab()
    logdir = os.path.join(os.path.dirname(os.path.abspath(args.json)), "rollout-logs")
    os.makedirs(logdir, exist_ok=True)
    meta = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "load_before": os.getloadavg(),
        "ansible": ansible_version(),
        "community_general": community_general_version(collections) if collections else "-",
        "hosts": len(config.app_hosts), "serial": "[1, '25%']", "rate": args.rate, "tail": args.tail,
        "lab_state_dir": labmod.STATE_DIR, "quick": args.quick,
    }
    args.run_id = time.strftime("%Y-%m-%d %H:%M")
    results, kept = [], []
    if args.merge and os.path.exists(args.json):
        with open(args.json, encoding="utf-8") as handle:
            previous = json.load(handle)
        redo = {(c["scenario"], c["method"]) for c in todo}
        kept = [r for r in previous["results"] if (r["scenario"], r["method"]) not in redo]
        for r in kept:
            r.setdefault("run", previous["meta"].get("run_id", previous["meta"]["date"]))
        meta["earlier_runs"] = previous["meta"].get("earlier_runs", []) + [previous["meta"]]
    meta["run_id"] = args.run_id
    meta["runs"] = list(dict.fromkeys([r["run"] for r in kept] + [args.run_id]))
    try:
        for cell in todo:
            results.append(run_cell(cell, config, args, collections, logdir))
            meta["load_after"] = os.getloadavg()
            with open(args.json, "w", encoding="utf-8") as handle:
                json.dump({"meta": meta, "results": kept + results}, handle, indent=2)
    finally:
        if started_here and not args.keep_lab:
            lab_cli("down")
    order = {(c["scenario"], c["method"]): i for i, c in enumerate(cells(args.quick))}
    results = sorted(kept + results, key=lambda r: order.get((r["scenario"], r["method"]), len(order)))
    table = markdown(results, meta)
    print(table)
    if args.readme:
        write_readme(args.readme, table)
    log(f"results: {args.json}; ansible logs and traffic records: {logdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
