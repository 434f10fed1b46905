#!/usr/bin/env python3
# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Benchmark: no false abort of a good release by the analyses, on a lab with no Prometheus (issue 14).

The lab is brought up with LAB_MONITORING=0 (forced here): no Prometheus, no
deploy_metrics_url, so the rolling and canary analyses use their default
provider, `haproxy` (HAProxy's per-server counters over its runtime API).
Every run deploys the good release 2.0.0 from ``lab.py reset`` (1.0.0
everywhere) with 100 req/s through the LB (tests/lab/traffic.py) from 1 s
before the deploy until --tail s after it, and an inconclusive verdict aborts:

  rolling  playbooks/deploy.yml, rolling_analysis on (the default), the lab
           inventory's rolling_analysis_wait (5 s), rolling_analysis_interval 2,
           rolling_analysis_on_inconclusive abort
  canary   deploy_strategy=canary, 1/10/50 % with a watched pause and an
           analysis after each (CANARY_STEPS), canary_analysis_interval 5,
           canary_on_inconclusive abort; the rest of the fleet rolled as
           tests/integration/test_canary.py's FAST settings do

A run that aborts is a false abort: its reason (the tail of its output) is
printed and the bench goes on.

    .venv/bin/python bench/analysis/run.py                # 10 rolling deploys, then 10 canaries
    .venv/bin/python bench/analysis/run.py --quick        # 1 of each; prints only, never fails

The lab is the one named by LAB_NAME / LAB_SUBNET / LAB_BRIDGE / LAB_STATE_DIR /
LAB_INVENTORY (default: the default lab). It is brought up (again, without
monitoring) unless it is already up as wanted, and taken down at the end if
this run brought it up (--keep-lab keeps it).

Exit status (not with --quick): 1 when a run was aborted or failed otherwise.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time

os.environ["LAB_MONITORING"] = "0"  # before the lab modules and lab.py read it
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.dirname(HERE))
from readme_section import write_section  # noqa: E402
from rollout.run import ansible_version, describe_versions, ensure_lab, fleet_state, lab_cli, reset  # noqa: E402

import lab as labmod  # noqa: E402  (tests/lab, put on sys.path by rollout.run)
import labconfig  # noqa: E402
from traffic import TrafficRecorder  # noqa: E402

DEPLOY = os.path.join(REPO, "playbooks", "deploy.yml")
GOOD = "2.0.0"
README_BEGIN = "<!-- bench:analysis:begin (written by bench/analysis/run.py) -->"
README_END = "<!-- bench:analysis:end -->"
VERDICT_MARKERS = ("ROLLING ANALYSIS:", "CANARY ANALYSIS", "CANARY WATCH")
CANARY_STEPS = [{"weight": 1}, {"pause": 20}, {"analysis": {"min_requests": 10}},
                {"weight": 10}, {"pause": 15}, {"analysis": {}},
                {"weight": 50}, {"pause": 15}, {"analysis": {}}]
# tests/integration/test_canary.py's FAST: the canary judged the release, the rest is rolled without analysis
CANARY_FAST = {"release_liveness_seconds": 2, "rolling_serial": [2], "rolling_max_unavailable": 2,
               "rolling_analysis": False}
EXTRA_VARS = {
    "rolling": {"deploy_version": GOOD, "rolling_analysis_on_inconclusive": "abort",
                "rolling_analysis_interval": 2, "release_liveness_seconds": 2},
    "canary": {"deploy_strategy": "canary", "deploy_version": GOOD, "canary_steps": CANARY_STEPS,
               "canary_analysis_interval": 5, "canary_on_inconclusive": "abort", **CANARY_FAST},
}
# what the run prints when it stops: deploy.yml's failure for rolling, the canary role's abort
ABORT_MARKERS = {"rolling": f"The rollout of {GOOD} stopped: ", "canary": "CANARY ABORTED: "}
# where the reason ends and the account of the undo begins
REASON_END = re.compile(r" (?:Canary weights were set to 0|Every host it had updated|Hosts already updated)")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def verdict_lines(output: str) -> list[str]:
    """The analysis verdict messages, each joined from the lines the YAML callback wrapped it over."""
    lines = output.splitlines()
    verdicts = []
    for i, line in enumerate(lines):
        if any(marker in line for marker in VERDICT_MARKERS):
            indent = len(line) - len(line.lstrip())
            parts = [line.strip()]
            for following in lines[i + 1:]:
                if not following.strip() or len(following) - len(following.lstrip()) <= indent:
                    break
                parts.append(following.strip())
            message = " ".join(parts).removeprefix("msg: ")
            # a single-quoted YAML scalar doubles its quotes
            verdicts.append(message[1:-1].replace("''", "'") if message.startswith("'") else message)
    return verdicts


def run_one(kind: str, index: int, config: labconfig.LabConfig, args, logdir: str) -> dict:
    name = f"{kind}-{index}"
    reset_s = reset("1.0.0")
    argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", labmod.INVENTORY, DEPLOY,
            "-e", json.dumps(EXTRA_VARS[kind])]
    env = {**os.environ, "ANSIBLE_CONFIG": os.path.join(REPO, "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_FORCE_COLOR": "0"}
    recorder = TrafficRecorder(config.lb_url, rate=args.rate, duration=3600,
                               out=os.path.join(logdir, f"{name}.traffic.jsonl"))
    log(f"--- {name}: 1.0.0 -> {GOOD}, {kind}")
    recorder.start()
    time.sleep(1.0)
    started = time.monotonic()
    proc = subprocess.run(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, check=False)
    wall = time.monotonic() - started
    time.sleep(args.tail)
    summary = recorder.stop()
    with open(os.path.join(logdir, f"{name}.ansible.log"), "w", encoding="utf-8") as out:
        out.write(proc.stdout)
    flat = " ".join(proc.stdout.split())
    aborted = ABORT_MARKERS[kind] in flat
    result = {
        "kind": kind, "run": index, "rc": proc.returncode, "wall_s": round(wall, 2), "reset_s": round(reset_s, 2),
        "aborted": aborted,
        "reason": REASON_END.split(flat.split(ABORT_MARKERS[kind], 1)[1], 1)[0][:600] if aborted else None,
        "verdicts": verdict_lines(proc.stdout),
        "requests": summary.total, "failed": summary.failed, "errors": summary.errors,
        "versions_after": fleet_state(config)["versions"], "load_after": round(os.getloadavg()[0], 1),
    }
    log(f"    rc {proc.returncode}, {result['wall_s']} s, aborted {aborted}, failed {summary.failed}/{summary.total}"
        f" {summary.errors or ''}; left {describe_versions({'versions': result['versions_after']})}")
    for line in result["verdicts"]:
        log(f"      {line}")
    if proc.returncode or aborted:
        tail = "\n".join(proc.stdout.splitlines()[-60:])
        log(f"    !!! {name} {'ABORTED' if aborted else 'FAILED'} (log {logdir}/{name}.ansible.log); "
            f"output tail:\n{tail}")
    return result


def median(values):
    return round(statistics.median(values), 2) if values else None


def summarize(results: list[dict], kind: str) -> dict:
    runs = [r for r in results if r["kind"] == kind]
    verdicts: dict[str, int] = {}
    for r in runs:
        for line in r["verdicts"]:
            word = next((w for w in ("PASS", "INCONCLUSIVE", "FAIL") if f": {w}" in line), "?")
            verdicts[word] = verdicts.get(word, 0) + 1
    return {
        "runs": len(runs), "false_aborts": sum(r["aborted"] for r in runs),
        "other_failures": sum(1 for r in runs if r["rc"] and not r["aborted"]),
        "median_wall_s": median([r["wall_s"] for r in runs]),
        "wall_s": [r["wall_s"] for r in runs],
        "requests": sum(r["requests"] for r in runs), "failed_requests": sum(r["failed"] for r in runs),
        "verdicts": verdicts,
    }


def markdown(results: list[dict], summary: dict, meta: dict) -> str:
    rolling, canary = summary["rolling"], summary["canary"]
    aborts = rolling["false_aborts"] + canary["false_aborts"]
    lines = [
        f"Measured {meta['date']} on {meta['machine']} (load average {meta['load_before'][0]:.0f} before, "
        f"{meta['load_after'][0]:.0f} after); {meta['ansible']}; {meta['hosts']} app hosts behind one HAProxy, "
        f"**no Prometheus** (`LAB_MONITORING=0`: provider `haproxy`); {meta['rate']:g} req/s through the LB from 1 s "
        f"before each deploy until {meta['tail']:g} s after it; `lab.py reset` (1.0.0) before each run. "
        f"Command: `.venv/bin/python {meta['command']}` (all runs in `{meta['json']}`).",
        "",
        f"**{aborts} false abort{'' if aborts == 1 else 's'} in {rolling['runs']} rolling deploys and "
        f"{canary['runs']} canaries** of {GOOD}"
        + (f"; {rolling['other_failures'] + canary['other_failures']} run(s) failed otherwise"
           if rolling["other_failures"] + canary["other_failures"] else "") + ".",
        "",
        "| | rolling (`deploy.yml`) | canary (`deploy_strategy=canary`) |",
        "|---|---|---|",
        f"| extra vars | `{json.dumps(EXTRA_VARS['rolling'])}` (and the lab's `rolling_analysis_wait: 5`) "
        f"| `{json.dumps(EXTRA_VARS['canary'])}` |",
        f"| runs | {rolling['runs']} | {canary['runs']} |",
        f"| false aborts (an inconclusive verdict aborts too) | **{rolling['false_aborts']}** "
        f"| **{canary['false_aborts']}** |",
        f"| median wall time of `deploy.yml` (all runs) | {rolling['median_wall_s']} s | {canary['median_wall_s']} s |",
        f"| wall time of every run | {', '.join(f'{w:g}' for w in rolling['wall_s'])} "
        f"| {', '.join(f'{w:g}' for w in canary['wall_s'])} |",
        f"| failed requests, all runs | {rolling['failed_requests']} of {rolling['requests']} "
        f"| {canary['failed_requests']} of {canary['requests']} |",
    ]
    verdicts = [", ".join(f"{k} ×{v}" for k, v in sorted(s["verdicts"].items())) or "-" for s in (rolling, canary)]
    lines.append(f"| verdict lines, all runs | {verdicts[0]} | {verdicts[1]} |")
    for r in results:
        if r["aborted"] or r["rc"]:
            lines.append(f"\n{r['kind']} run {r['run']} ({r['wall_s']:g} s, rc {r['rc']}) "
                         + (f"was aborted: {r['reason']}" if r["aborted"] else "failed: see its log"))
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rolling", type=int, default=10, help="rolling deploys (default 10)")
    parser.add_argument("--canary", type=int, default=10, help="canaries (default 10)")
    parser.add_argument("--quick", action="store_true", help="1 of each; prints only, never fails")
    parser.add_argument("--rate", type=float, default=100.0, help="requests/s through the LB (default 100)")
    parser.add_argument("--tail", type=float, default=5.0, help="seconds of traffic after each deploy (default 5)")
    parser.add_argument("--json", default=os.path.join(REPO, "build", "bench", "analysis.json"))
    parser.add_argument("--readme", help="write the table into this README between the analysis markers")
    parser.add_argument("--keep-lab", action="store_true", help="leave the lab up at the end")
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing: print (and with --readme write) the table of the runs in --json")
    args = parser.parse_args()
    if args.report_only:
        with open(args.json, encoding="utf-8") as handle:
            saved = json.load(handle)
        table = markdown(saved["results"], saved["summary"], saved["meta"])
        print(table)
        if args.readme:
            write_section(args.readme, README_BEGIN, README_END, table)
        return 0
    counts = {"rolling": 1, "canary": 1} if args.quick else {"rolling": args.rolling, "canary": args.canary}

    config, started_here = ensure_lab()
    logdir = os.path.join(os.path.dirname(os.path.abspath(args.json)), "analysis-logs")
    os.makedirs(logdir, exist_ok=True)
    meta = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "load_before": os.getloadavg(), "ansible": ansible_version(), "hosts": len(config.app_hosts),
        "rate": args.rate, "tail": args.tail, "quick": args.quick, "lab_state_dir": labmod.STATE_DIR,
        "command": "bench/analysis/run.py" + (" --quick" if args.quick else
                                              f" --rolling {args.rolling} --canary {args.canary}"),
        "extra_vars": EXTRA_VARS, "json": os.path.relpath(os.path.abspath(args.json), REPO),
    }
    results: list[dict] = []
    summary = {k: summarize(results, k) for k in counts}
    try:
        for kind, count in counts.items():
            for index in range(1, count + 1):
                results.append(run_one(kind, index, config, args, logdir))
                meta["load_after"] = os.getloadavg()
                summary = {k: summarize(results, k) for k in counts}
                with open(args.json, "w", encoding="utf-8") as handle:
                    json.dump({"meta": meta, "summary": summary, "results": results}, handle, indent=2)
    finally:
        if started_here and not args.keep_lab:
            lab_cli("down")
    table = markdown(results, summary, meta)
    print(table)
    if args.readme and not args.quick:
        write_section(args.readme, README_BEGIN, README_END, table)
    log(f"results: {args.json}; ansible logs and traffic records: {logdir}")
    bad = [f"{r['kind']}-{r['run']}" for r in results if r["aborted"] or r["rc"]]
    if bad:
        log(f"analysis bench: {GOOD} aborted or failed in {', '.join(bad)}: see {logdir}")
    return 1 if bad and not args.quick else 0


if __name__ == "__main__":
    sys.exit(main())
