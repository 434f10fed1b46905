#!/usr/bin/env python3
# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Benchmark: the canary strategy (playbooks/deploy.yml, deploy_strategy=canary), under live traffic.

  (a) abort    2.1.0-errors (20 % of user requests answered 500) as the canary:
               time from the bad version's first response through the load
               balancer to its last one after the abort, against the issue's
               bound: one analysis interval (the pauses are watched) + 5 s
  (b) promote  2.0.0: wall time of the canary (canary host drained -> every
               weight back to normal after the last analysis) against the sum of
               its configured pauses: overhead = wall - pauses, and wall / pauses

Every run: ``lab.py reset`` (1.0.0 everywhere), 100 req/s through the LB
(tests/lab/traffic.py) from 1 s before the deploy until --tail s after it, and
HAProxy's weights and states sampled every 0.2 s. Runs alternate (a), (b);
figures are medians over --runs runs of each, every run listed in the JSON.

    .venv/bin/python bench/canary/run.py            # 5 runs of each (~25 min on a loaded 2-core machine)
    .venv/bin/python bench/canary/run.py --quick    # 1 run of each, shorter steps; prints, never fails on timing

The lab is the one named by LAB_NAME / LAB_SUBNET / LAB_BRIDGE / LAB_STATE_DIR /
LAB_INVENTORY (default: the default lab). It is brought up if needed and taken
down at the end if this run brought it up (--keep-lab keeps it).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.dirname(HERE))
from readme_section import write_section  # noqa: E402
from rollout.run import ansible_version, ensure_lab, fleet_state, lab_cli, reset  # noqa: E402

import lab as labmod  # noqa: E402  (tests/lab, put on sys.path by rollout.run)
import labconfig  # noqa: E402
from traffic import TrafficRecorder  # noqa: E402

DEPLOY = os.path.join(REPO, "playbooks", "deploy.yml")
BAD = "2.1.0-errors"
GOOD = "2.0.0"
README_BEGIN = "<!-- bench:canary:begin (written by bench/canary/run.py) -->"
README_END = "<!-- bench:canary:end -->"
# The bound: traffic back on stable within one analysis interval + 5 s of the bad version first taking traffic.
SLACK_S = 5.0
ANALYSIS_INTERVAL = 5


def steps(kind: str, quick: bool) -> list[dict]:
    """canary_steps of one run: (a) abort at the first analysis, (b) 1/10/50 % with an analysis after each."""
    pause = 10 if quick else 15
    if kind == "abort":
        return [{"weight": 10}, {"pause": pause}, {"analysis": {"window": f"{pause}s"}},
                {"weight": 50}, {"pause": pause}, {"analysis": {"window": f"{pause}s"}}]
    return [{"weight": 1}, {"pause": pause}, {"analysis": {"window": f"{pause}s", "min_requests": 5}},
            {"weight": 10}, {"pause": pause}, {"analysis": {"window": f"{pause}s"}},
            {"weight": 50}, {"pause": pause}, {"analysis": {"window": f"{pause}s"}}]


def extra_vars(kind: str, quick: bool) -> dict:
    return {
        "deploy_strategy": "canary", "deploy_version": BAD if kind == "abort" else GOOD,
        "canary_steps": steps(kind, quick), "release_liveness_seconds": 2,
        # after the promotion the other five hosts are rolled in two batches; the canary's
        # analyses already judged the release, so none between the batches
        "rolling_serial": [3], "rolling_max_unavailable": 3, "rolling_analysis": False,
        # timed pauses are watched: the gate runs every interval during each
        "canary_analysis_interval": ANALYSIS_INTERVAL,
    }


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Sampler:
    """HAProxy's servers (weight, admin state, health) on the first LB every 0.2 s."""

    def __init__(self, config: labconfig.LabConfig):
        self.client = labmod.haproxy_client(labmod.load_state(), config.lb_hosts[0].name)
        self.samples: list[tuple[float, dict]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                servers = self.client.list_servers()
                self.samples.append((time.time(), {s["name"]: (s["weight"], s["admin_state"], s["healthy"])
                                                   for s in servers}))
            except Exception:  # noqa: BLE001 - the socket may refuse one call under load; the next sample counts
                pass
            time.sleep(0.2)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def first(samples, after: float, test) -> float | None:
    return next((t for t, servers in samples if t >= after and test(servers)), None)


def canary_spans(samples, canary: str) -> list[tuple[int, int, float, float]]:
    """(canary weight, stable weight, first, last sample) of each run of samples where the canary is
    ready at a canary weight (not 100) and every stable server has the same weight."""
    spans: list[list] = []
    previous = None
    for t, servers in samples:
        weight, state, _healthy = servers[canary]
        stable = {w for name, (w, _s, _h) in servers.items() if name != canary}
        key = (weight, min(stable)) if state == "ready" and len(stable) == 1 and weight != 100 else None
        if key is not None and key == previous:
            spans[-1][3] = t
        elif key is not None:
            spans.append([*key, t, t])
        previous = key
    return [tuple(span) for span in spans]


def abort_figures(records, samples, canary: str, pause: float, started: float) -> dict:
    bad = sorted((r for r in records if r["version"] == BAD), key=lambda r: r["t"])
    if not bad:
        return {"bad_requests": 0}
    first_response = min(r["t"] + (r["latency_ms"] or 0) / 1000 for r in bad)
    last_response = max(r["t"] + (r["latency_ms"] or 0) / 1000 for r in bad)
    weight_zero = first(samples, first_response, lambda s: s[canary][0] == 0)
    exposure = last_response - first_response
    return {
        "bad_requests": len(bad), "bad_failed": sum(1 for r in bad if not 200 <= (r["status"] or 0) < 300),
        "exposure_s": round(exposure, 2), "bound_s": pause + SLACK_S, "within_bound": exposure <= pause + SLACK_S,
        "to_weight_0_s": None if weight_zero is None else round(weight_zero - first_response, 2),
        "first_bad_after_start_s": round(first_response - started, 2),
    }


def promote_figures(records, samples, canary: str, pauses: float, output: str) -> dict:
    drained = first(samples, 0, lambda s: s[canary][1] == "drain")
    spans = canary_spans(samples, canary)
    promoted = None
    if drained is not None and spans:
        promoted = first(samples, spans[-1][3], lambda s: all(w == 100 and st == "ready" for w, st, _h in s.values()))
    shares = []
    reported = [line for line in output.splitlines() if "CANARY STEP" in line and "reached" in line]
    for wc, ws, t0, t1 in spans:
        window = [r for r in records if t0 + 1.0 <= r["t"] < t1 - 0.5 and r["version"]]
        if len(window) >= 100:
            shares.append({"weights": f"{wc}/{ws}", "measured_percent": round(100 * sum(r["version"] == GOOD for r in window)
                                                                           / len(window), 2),
                           "requests": len(window)})
    wall = None if drained is None or promoted is None else promoted - drained
    return {
        "canary_wall_s": None if wall is None else round(wall, 2), "pauses_s": pauses,
        "overhead_s": None if wall is None else round(wall - pauses, 2),
        "ratio": None if wall is None else round(wall / pauses, 2),
        "steps_reported": [line.split("msg: ")[-1].strip(" '") for line in reported], "shares": shares,
    }


def run_one(kind: str, index: int, config: labconfig.LabConfig, args, logdir: str) -> dict:
    name = f"{kind}-{index}"
    reset_s = reset("1.0.0")
    canary = config.app_hosts[0].name
    variables = extra_vars(kind, args.quick)
    pauses = float(sum(s["pause"] for s in variables["canary_steps"] if "pause" in s))
    bound_base = variables["canary_analysis_interval"]  # the bound is one analysis interval + SLACK_S
    argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", labmod.INVENTORY, DEPLOY,
            "-e", json.dumps(variables)]
    env = {**os.environ, "ANSIBLE_CONFIG": os.path.join(REPO, "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_FORCE_COLOR": "0"}
    recorder = TrafficRecorder(config.lb_url, rate=args.rate, duration=3600,
                               out=os.path.join(logdir, f"{name}.traffic.jsonl"))
    log(f"--- {name}: 1.0.0 -> {variables['deploy_version']}, canary {canary}, "
        f"steps {json.dumps(variables['canary_steps'])}")
    with Sampler(config) as sampler:
        recorder.start()
        time.sleep(1.0)
        started = time.time()
        proc = subprocess.run(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, check=False)
        ended = time.time()
        time.sleep(args.tail)
        summary = recorder.stop()
    with open(os.path.join(logdir, f"{name}.ansible.log"), "w", encoding="utf-8") as out:
        out.write(proc.stdout)
    flat = " ".join(proc.stdout.split())
    result = {
        "kind": kind, "run": index, "version": variables["deploy_version"], "rc": proc.returncode,
        "steps": variables["canary_steps"], "deploy_wall_s": round(ended - started, 2), "reset_s": round(reset_s, 2),
        "requests": summary.total, "failed": summary.failed, "errors": summary.errors,
        "served_versions": summary.versions, "after": fleet_state(config),
    }
    if kind == "abort":
        result.update(abort_figures(recorder.records, sampler.samples, canary, bound_base, started))
        reason = flat.split("CANARY ABORTED: ", 1)[1][:400] if "CANARY ABORTED: " in flat else ""
        result["aborted_on"] = next((m for m in ("success_rate", "latency_p99", "saturation")
                                     if reason.startswith("analysis failed at step") and f"{m} = " in reason), None)
        log(f"    rc {proc.returncode}, aborted on {result['aborted_on']}; {BAD} answered from its first to its last "
            f"response for {result.get('exposure_s')} s (bound {bound_base} + {SLACK_S:g} s), weight 0 "
            f"{result.get('to_weight_0_s')} s after its first response; {result.get('bad_requests')} requests "
            f"({result.get('bad_failed')} of them 500); left {sorted(set(result['after']['versions'].values()))}")
    else:
        result.update(promote_figures(recorder.records, sampler.samples, canary, pauses, proc.stdout))
        result["promoted"] = "CANARY PROMOTED" in flat
        log(f"    rc {proc.returncode}, promoted {result['promoted']}: canary {result['canary_wall_s']} s for "
            f"{pauses:g} s of pauses (overhead {result['overhead_s']} s, x{result['ratio']}); deploy.yml "
            f"{result['deploy_wall_s']} s; failed {summary.failed}/{summary.total}; shares {result['shares']}")
    return result


def median(values):
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 2) if values else None


def markdown(results: list[dict], meta: dict) -> str:
    aborts = [r for r in results if r["kind"] == "abort"]
    promotes = [r for r in results if r["kind"] == "promote"]
    lines = [
        f"Measured {meta['date']} on {meta['machine']} (load average {meta['load_before'][0]:.0f} before, "
        f"{meta['load_after'][0]:.0f} after); {meta['ansible']}; {meta['hosts']} app hosts behind one HAProxy, "
        f"canary {meta['canary']}; {meta['rate']:g} req/s through the LB from 1 s before each deploy until "
        f"{meta['tail']:g} s after it; {len(aborts)} + {len(promotes)} runs, alternating; medians (all runs in "
        f"`build/bench/canary.json`). Command: `.venv/bin/python {meta['command']}`"
        + (f" ({meta['note']})" if meta.get("note") else "") + ".",
        "",
        f"**(a) abort of {BAD}** (steps `{json.dumps(aborts[0]['steps']) if aborts else '-'}`):",
        "",
        "| | median | runs |",
        "|---|---|---|",
    ]

    def row(label, key, rs, unit=" s"):
        values = [r.get(key) for r in rs]
        shown = ", ".join("-" if v is None else f"{v:g}" for v in values)
        med = median(values)
        lines.append(f"| {label} | {'-' if med is None else f'{med:g}{unit}'} | {shown} |")

    row(f"{BAD}'s first to last response through the LB", "exposure_s", aborts)
    if aborts:
        bound = aborts[0]["bound_s"]
        within = sum(1 for r in aborts if r.get("within_bound"))
        lines.append(f"| bound: one analysis interval ({bound - SLACK_S:g} s, pauses watched) + {SLACK_S:g} s "
                     f"| {bound:g} s | met in {within} of {len(aborts)} |")
    row("first response to canary weight 0 (sampled every 0.2 s)", "to_weight_0_s", aborts)
    row(f"requests answered by {BAD}", "bad_requests", aborts, unit="")
    row(f"{BAD} answers that were 500", "bad_failed", aborts, unit="")
    lines.append(f"| aborted at the first analysis, on | {', '.join(sorted({str(r.get('aborted_on')) for r in aborts}))} "
                 f"| canary host back on {', '.join(sorted({v for r in aborts for v in r['after']['versions'].values()}))} |")
    lines += [
        "",
        f"**(b) promotion of {GOOD}** (steps `{json.dumps(promotes[0]['steps']) if promotes else '-'}`):",
        "",
        "| | median | runs |",
        "|---|---|---|",
    ]
    row("canary wall time (canary host drained → every weight back to 100)", "canary_wall_s", promotes)
    if promotes:
        lines.append(f"| sum of the configured pauses | {promotes[0]['pauses_s']:g} s | |")
    row("overhead = wall − pauses", "overhead_s", promotes)
    row("wall / pauses", "ratio", promotes, unit="")
    row("whole deploy.yml run (pre-checks, lock, canary, rest rolled in 2 batches)", "deploy_wall_s", promotes)
    row("failed requests", "failed", promotes, unit="")
    for step in ("5/99", "55/99", "255/51"):
        measured = [next((s["measured_percent"] for s in r["shares"] if s["weights"] == step), None) for r in promotes]
        shown = ", ".join("-" if v is None else f"{v:g}" for v in measured)
        med = median(measured)
        lines.append(f"| {GOOD}'s measured share at weights {step} | {'-' if med is None else f'{med:g} %'} "
                     f"| {shown} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 run of each, 10-s pauses; never fails on timing")
    parser.add_argument("--runs", type=int, help="runs of each of (a) and (b) (default 5, --quick 1)")
    parser.add_argument("--only", choices=["abort", "promote"], help="one of the two")
    parser.add_argument("--rate", type=float, default=100.0, help="requests/s through the LB (default 100)")
    parser.add_argument("--tail", type=float, default=5.0, help="seconds of traffic after each deploy (default 5)")
    parser.add_argument("--json", default=os.path.join(REPO, "build", "bench", "canary.json"))
    parser.add_argument("--readme", help="write the tables into this README between the canary markers")
    parser.add_argument("--keep-lab", action="store_true", help="leave the lab up at the end")
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing: print (and with --readme write) the tables of the runs in --json")
    args = parser.parse_args()
    if args.report_only:
        with open(args.json, encoding="utf-8") as handle:
            saved = json.load(handle)
        table = markdown(saved["results"], saved["meta"])
        print(table)
        if args.readme:
            write_section(args.readme, README_BEGIN, README_END, table)
        return 0
    runs = args.runs or (1 if args.quick else 5)
    kinds = [args.only] if args.only else ["abort", "promote"]

    config, started_here = ensure_lab()
    logdir = os.path.join(os.path.dirname(os.path.abspath(args.json)), "canary-logs")
    os.makedirs(logdir, exist_ok=True)
    meta = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "load_before": os.getloadavg(), "ansible": ansible_version(), "hosts": len(config.app_hosts),
        "canary": config.app_hosts[0].name, "rate": args.rate, "tail": args.tail, "quick": args.quick,
        "lab_state_dir": labmod.STATE_DIR,
        "command": "bench/canary/run.py" + (" --quick" if args.quick else "") + (f" --runs {args.runs}" if args.runs else ""),
    }
    results: list[dict] = []
    try:
        for index in range(1, runs + 1):
            for kind in kinds:
                results.append(run_one(kind, index, config, args, logdir))
                meta["load_after"] = os.getloadavg()
                with open(args.json, "w", encoding="utf-8") as handle:
                    json.dump({"meta": meta, "results": results}, handle, indent=2)
    finally:
        if started_here and not args.keep_lab:
            lab_cli("down")
    table = markdown(results, meta)
    print(table)
    if args.readme:
        write_section(args.readme, README_BEGIN, README_END, table)
    log(f"results: {args.json}; ansible logs and traffic records: {logdir}")
    broken = [f"{r['kind']}-{r['run']}" for r in results
              if (r["kind"] == "abort" and (r["rc"] == 0 or r.get("aborted_on") is None))
              or (r["kind"] == "promote" and (r["rc"] != 0 or not r.get("promoted") or r["failed"]))]
    if broken:
        log(f"canary bench: runs that did not behave ({', '.join(broken)}): see {logdir}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
