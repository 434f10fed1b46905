#!/usr/bin/env python3
# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Benchmark: scale and speed of a rolling deploy (issue 9).

For each fleet size (LAB_HOSTS), interleaved, REPS times:

  deploy    playbooks/deploy.yml 2.0.0 on a fresh lab (1.0.0), rolling_serial ['25%'],
            rolling_analysis false: wall time, wall / floor, controller CPU seconds
            (user+sys of ansible-playbook and every child it waited for) per host,
            and where the time goes (the deployment report's step timings)
  rollback  playbooks/rollback.yml right after, rollback_serial '25%' (the same batches):
            wall time and its ratio to the deploy's
  artifact  (largest size only) a SIZE_MB MB incompressible artifact served over HTTP on
            127.0.0.1 to every host by the release role's fetch step (bench/scale/distribute.yml),
            twice: bytes served, hosts copied to, wall time of each run

The floor of a batch is what the run cannot avoid (see floor()); wall / floor
should be <= 1.5 on 24 hosts. Never fails on timing: exit 1 only when a
playbook failed or the artifact was served or copied more often than once.

    .venv/bin/python bench/scale/run.py                         # 6 and 24 hosts, 3 reps, 100 MB
    .venv/bin/python bench/scale/run.py --sizes 6 --reps 1 --artifact-mb 5   # the quick form

The lab is the one named by LAB_NAME / LAB_SUBNET / LAB_BRIDGE / LAB_STATE_DIR /
LAB_INVENTORY; it is brought up at each size (taken down first), and left down.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
from artifact import ArtifactServer, make_artifact  # noqa: E402
from readme_section import write_section  # noqa: E402

LAB = os.path.join(REPO, "tests", "lab", "lab.py")
PLAYBOOK = os.path.join(REPO, ".venv", "bin", "ansible-playbook")
README_BEGIN = "<!-- bench:scale:begin (written by bench/scale/run.py) -->"
README_END = "<!-- bench:scale:end -->"
SERIAL = "25%"

# What a batch cannot avoid, from the settings the run uses (role defaults,
# the lab's haproxy.cfg and demoapp's release.json). Drain: the bench runs
# without client traffic, so no request is in flight when a server is drained
# and demoapp stops at once on SIGTERM (its 15 s grace is only used by
# requests in flight): 0 s. Under traffic it is the longest request in flight.
SETTINGS = {
    "app_startup_s": 0.5,                # demoapp startup_seconds (build_artifacts.COMMON)
    "readiness_success_threshold": 2,    # release_readiness_success_threshold
    "probe_interval_s": 0.5,             # release_probe_interval (and rollback_probe_interval)
    "liveness_watch_s": 10.0,            # release_liveness_seconds (deploy only; rollback has none)
    "haproxy_rise": 2,                   # haproxy_health_check_rise
    "haproxy_inter_s": 0.5,              # haproxy_health_check_inter
    "drain_s": 0.0,                      # no request in flight (no traffic)
}


def floor(batches: int, liveness: bool = True) -> dict:
    """Seconds per batch that no tool can cut, and their sum over the batches."""
    s = SETTINGS
    parts = {
        "drain": s["drain_s"],
        "start (app warm-up)": s["app_startup_s"],
        "readiness threshold": s["readiness_success_threshold"] * s["probe_interval_s"],
        "HAProxy rise to UP": s["haproxy_rise"] * s["haproxy_inter_s"],
    }
    if liveness:
        parts["liveness watch"] = s["liveness_watch_s"]
    per_batch = sum(parts.values())
    return {"parts": parts, "per_batch": per_batch, "batches": batches, "total": per_batch * batches}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def lab_env(size: int) -> dict:
    return {**os.environ, "LAB_HOSTS": str(size), "LAB_BASELINE": "1.0.0", "LAB_LAYOUT": "rolling", "LAB_KEEP": "1"}


def lab(command: str, size: int) -> None:
    result = subprocess.run([sys.executable, LAB, command], env=lab_env(size), capture_output=True, text=True,
                            check=False)
    if result.returncode != 0:
        raise SystemExit(f"lab.py {command} ({size} hosts) failed:\n{result.stderr}")


def inventory() -> str:
    return os.environ.get("LAB_INVENTORY", os.path.join(REPO, "tests", "lab", "inventory.yml"))


def run_playbook(playbook: str, size: int, extra: dict, report_dir: str, checkout: str = REPO) -> dict:
    """Run one playbook (of this checkout, or of --baseline's); wall seconds, controller CPU seconds, rc,
    the output."""
    env = {**lab_env(size), "ANSIBLE_CONFIG": os.path.join(checkout, "ansible.cfg"),
           "SAFEDEPLOY_REPORT_DIR": report_dir}
    argv = [PLAYBOOK, "-i", inventory(), playbook, "-e", json.dumps(extra)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    result = subprocess.run(argv, cwd=checkout, env=env, capture_output=True, text=True, check=False)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"rc": result.returncode, "wall": round(wall, 2), "cpu": round(cpu, 2), "stdout": result.stdout,
            "command": f"ansible-playbook -i $LAB_INVENTORY {os.path.relpath(playbook, checkout)} -e '{json.dumps(extra)}'"}


def report_figures(report_dir: str) -> dict:
    """Batches and the steps that took longest (summed over batches) from the deployment report
    (REPORT_DIR/latest.json, or a report's JSON file)."""
    path = report_dir if report_dir.endswith(".json") else os.path.join(report_dir, "latest.json")
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as handle:
        report = json.load(handle)
    steps = collections.defaultdict(float)
    counted = 0.0
    for section in report.get("sections", {}).values():
        for entry in section:
            name = re.sub(r" demoapp/web\d+$| on demoapp/web\d+$", "", entry["name"])[:60]
            steps[name] += entry.get("seconds") or 0.0
            counted += entry.get("seconds") or 0.0
    batches = [b["seconds"] for b in report.get("batches", [])]
    top = sorted(steps.items(), key=lambda kv: -kv[1])[:10]
    return {"seconds": report.get("seconds"), "batches": batches, "steps_total": round(counted, 1),
            "top_steps": [[name, round(sec, 1)] for name, sec in top], "per_batch": per_batch(report)}


def per_batch(report: dict) -> dict:
    """Mean seconds per batch of the steps the roles of other owners could batch: lb_member's (four
    haproxy_server calls delegated to each LB for each host, plus its input checks), the release role's
    health_check waits (readiness, liveness watch), and a run_once step of the same batches for scale."""
    sums = collections.defaultdict(float)
    count = collections.Counter()
    nbatches = max(len(report.get("batches", [])), 1)
    for section in report.get("sections", {}).values():
        for entry in section:
            if entry.get("batch") is None:
                continue
            sec = entry.get("seconds") or 0.0
            sums["all steps"] += sec
            if entry.get("role") == "lb_member":
                sums["lb_member, all"] += sec
                if entry.get("module") == "haproxy_server":
                    sums["lb_member, haproxy_server calls"] += sec
                    count["haproxy_server"] += 1
            if entry.get("module") == "health_check":
                sums["health_check (readiness + liveness)"] += sec
            if entry.get("module") == "deploy_lock":
                sums["run_once step (deploy_lock refresh)"] += sec
    out = {k: round(v / nbatches, 1) for k, v in sums.items()}
    out["batch wall"] = round(sum(b["seconds"] for b in report.get("batches", [])) / nbatches, 1)
    out["haproxy_server steps per batch"] = count["haproxy_server"] / nbatches
    return out


def distribute(size: int, size_mb: int, work: str) -> dict:
    """Serve a SIZE_MB artifact and fetch it onto every host twice."""
    artifacts = os.path.join(REPO, "build", "bench", "artifacts")
    path, sha = make_artifact(artifacts, f"9.{size_mb}.0", size_mb)
    download_dir = os.path.join(work, "download")
    # The release role does not create its download folder on the controller (yet).
    os.makedirs(download_dir, exist_ok=True)
    out = {"size_bytes": os.path.getsize(path), "runs": []}
    with ArtifactServer(artifacts) as server:
        extra = {"release_artifact": server.url(os.path.basename(path)), "release_artifact_checksum": f"sha256:{sha}",
                 "release_download_dir": download_dir, "release_version": f"9.{size_mb}.0"}
        for _ in range(2):
            sent_before = server.sent
            run = run_playbook(os.path.join(HERE, "distribute.yml"), size, extra, os.path.join(work, "reports"))
            match = re.search(r"COPY_CHANGED=(\d+)", run["stdout"])
            out["runs"].append({"rc": run["rc"], "wall": run["wall"], "cpu": run["cpu"],
                                "served_bytes": server.sent["bytes"] - sent_before["bytes"],
                                "served_files": server.sent["requests"] - sent_before["requests"],
                                "copied_to_hosts": int(match.group(1)) if match else None})
            out["command"] = ("ansible-playbook -i $LAB_INVENTORY bench/scale/distribute.yml -e release_artifact="
                              f"http://127.0.0.1:PORT/{os.path.basename(path)} -e release_artifact_checksum=sha256:SHA256 "
                              f"-e release_download_dir=DIR -e release_version=9.{size_mb}.0")
            if run["rc"] != 0:
                log(run["stdout"][-3000:])
    return out


def git_commit(checkout: str) -> str:
    result = subprocess.run(["git", "-C", checkout, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            check=False)
    return result.stdout.strip() or "?"


def baseline_cell(checkout: str, size: int, data: dict, deploy_extra: dict, rollback_extra: dict,
                  work: str) -> list[str]:
    """The same deploy and rollback with the --baseline checkout, on a fresh lab of the same size."""
    lab("down", size)
    lab("up", size)
    row = data["baseline"]["results"][str(size)]
    failures = []
    for name, playbook, extra in (("deploy", "deploy.yml", deploy_extra), ("rollback", "rollback.yml", rollback_extra)):
        run = run_playbook(os.path.join(checkout, "playbooks", playbook), size, extra,
                           os.path.join(work, "baseline-reports"), checkout=checkout)
        row[name].append({k: run[k] for k in ("rc", "wall", "cpu")})
        if run["rc"] != 0:
            failures.append(f"baseline {name} on {size} hosts (rc {run['rc']})")
            log(run["stdout"][-3000:])
    log(f"  {size} hosts, baseline {data['baseline']['commit']}: deploy {row['deploy'][-1]['wall']:.0f} s, "
        f"{row['deploy'][-1]['cpu']:.0f} CPU s; rollback {row['rollback'][-1]['wall']:.0f} s")
    return failures


def med(values):
    return statistics.median(values) if values else float("nan")


def markdown(data: dict) -> str:
    meta = data["meta"]
    lines = [
        f"Measured {meta['date']} on {meta['machine']}; {meta['reps']} repetition(s), sizes interleaved; load "
        f"average {meta['load_before'][0]:.1f} before, {meta['load_after'][0]:.1f} after.",
        "",
        f"Command: `{meta['command']}` (`make bench`; `make bench-quick` runs 6 hosts, 1 rep, a 5 MB artifact).",
        "Each deploy: `" + meta["deploy_command"] + "` on a fresh lab (1.0.0), then `" + meta["rollback_command"] + "`.",
        "",
        "**Floor** per batch (derived from the settings, nothing measured): "
        + ", ".join(f"{k} {v:g} s" for k, v in floor(1)["parts"].items())
        + f" = {floor(1)['per_batch']:g} s; the liveness watch (release_liveness_seconds) is counted, since the "
        "run is configured to wait for it. Drain is 0 s because the bench sends no traffic (under traffic it is "
        "the longest request in flight). Rollback floor: the same without the liveness watch "
        f"({floor(1, liveness=False)['per_batch']:g} s per batch).",
        "",
        "| hosts | batches | deploy wall median (min–max) | floor | wall / floor | CPU s (controller) | CPU s / host |"
        " rollback wall | rollback / deploy |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for size in data["sizes"]:
        row = data["results"][str(size)]
        walls = [r["wall"] for r in row["deploy"]]
        cpus = [r["cpu"] for r in row["deploy"]]
        rwalls = [r["wall"] for r in row["rollback"]]
        fl = floor(row["batches"])["total"]
        lines.append(
            f"| {size} | {row['batches']} | {med(walls):.0f} s ({min(walls):.0f}–{max(walls):.0f}) | {fl:.0f} s | "
            f"**{med(walls) / fl:.1f}×** | {med(cpus):.0f} | {med(cpus) / size:.2f} | {med(rwalls):.0f} s | "
            f"**{med(rwalls) / med(walls):.2f}×** |")
    sizes = data["sizes"]
    if len(sizes) >= 2:
        small, big = data["results"][str(sizes[0])], data["results"][str(sizes[-1])]
        per_small = med([r["cpu"] for r in small["deploy"]]) / sizes[0]
        per_big = med([r["cpu"] for r in big["deploy"]]) / sizes[-1]
        lines += ["", f"Controller CPU per host: {per_small:.2f} s at {sizes[0]} hosts, {per_big:.2f} s at "
                  f"{sizes[-1]} hosts (ratio {per_big / per_small:.2f}; 1.0 is linear growth of the total)."]
    big = data["results"][str(sizes[-1])]
    if big.get("report"):
        rep = big["report"]
        lines += ["", f"Where the time goes, {sizes[-1]} hosts (last run's deployment report; batch seconds "
                  f"{', '.join(f'{b:.0f}' for b in rep['batches'])}; seconds summed over the batches, per step):", "",
                  "| step | seconds |", "|---|---|"]
        lines += [f"| {name} | {sec:.1f} |" for name, sec in rep["top_steps"]]
        if rep.get("per_batch"):
            lines += ["", "Per batch (means over the batches of that run):", "", "| what | seconds per batch |",
                      "|---|---|"]
            lines += [f"| {name} | {value:g} |" for name, value in rep["per_batch"].items()]
    base = data.get("baseline")
    if base and any(base["results"][str(size)]["deploy"] for size in sizes):
        lines += ["", f"**Side by side** with the checkout of commit {base['commit']} (this run: {base['this_commit']}), "
                  "the same lab brought up fresh for each deploy, the two alternating in every cell:", "",
                  "| hosts | deploy wall, this | deploy wall, baseline | this / baseline | CPU s, this | CPU s, baseline |"
                  " rollback, this | rollback, baseline |", "|---|---|---|---|---|---|---|---|"]
        for size in sizes:
            this, then = data["results"][str(size)], base["results"][str(size)]
            if not then["deploy"]:
                continue
            walls, bwalls = [r["wall"] for r in this["deploy"]], [r["wall"] for r in then["deploy"]]
            lines.append(
                f"| {size} | {med(walls):.0f} s | {med(bwalls):.0f} s | **{med(walls) / med(bwalls):.2f}×** | "
                f"{med([r['cpu'] for r in this['deploy']]):.0f} | {med([r['cpu'] for r in then['deploy']]):.0f} | "
                f"{med([r['wall'] for r in this['rollback']]):.0f} s | {med([r['wall'] for r in then['rollback']]):.0f} s |")
    art = data.get("artifact")
    if art:
        lines += ["", f"**Artifact distribution**: {art['size_bytes'] / 1e6:.0f} MB (random payload, gzip cannot "
                  f"shrink it) served over HTTP on 127.0.0.1 to {art['hosts']} hosts by the release role's fetch "
                  f"step (`{art['command']}`):", "",
                  "| run | wall | bytes served by HTTP | hosts copied to |", "|---|---|---|---|"]
        for index, run in enumerate(art["runs"], 1):
            lines.append(f"| {index} | {run['wall']:.0f} s | {run['served_bytes'] / 1e6:.0f} MB "
                         f"({run['served_files']} download(s)) | {run['copied_to_hosts']} |")
    return "\n".join(lines) + "\n"


def save(data: dict, args) -> str:
    """Write the JSON and (with --readme) the README section; return the table. Called after every cell,
    so an interrupted run keeps what it measured."""
    if not args.render:
        data["meta"]["load_after"] = os.getloadavg()
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2)
    done = [s for s in data["sizes"] if data["results"][str(s)]["deploy"]]
    table = markdown({**data, "sizes": done}) if done else ""
    if args.readme and table:
        write_section(args.readme, README_BEGIN, README_END, table)
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="6,24", help="comma-separated LAB_HOSTS values (default 6,24)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions per size (default 3)")
    parser.add_argument("--artifact-mb", type=int, default=100, help="artifact size in MB (default 100; 0: skip)")
    parser.add_argument("--baseline", metavar="DIR",
                        help="also deploy and roll back with the checkout in DIR (e.g. a git worktree of an earlier "
                             "commit, with build/collections and build/artifacts), alternating with this one in every "
                             "cell: the same lab, side by side")
    parser.add_argument("--extra", default="{}", metavar="JSON",
                        help="more extra vars for this checkout's deploys, e.g. '{\"rolling_stage\": true}' "
                             "(not given to --baseline's)")
    parser.add_argument("--json", default=os.path.join(REPO, "build", "bench", "scale.json"))
    parser.add_argument("--readme", help="write the table into this README between the scale markers")
    parser.add_argument("--render", action="store_true", help="only print (and --readme) the table of --json")
    parser.add_argument("--report", help="with --render: the deployment report (JSON) to take the step timings from")
    args = parser.parse_args()
    if args.render:
        with open(args.json, encoding="utf-8") as handle:
            data = json.load(handle)
        if args.report:  # a kept deployment report of the largest size's last deploy
            data["results"][str(data["sizes"][-1])]["report"] = report_figures(args.report)
        print(save(data, args))
        return 0
    sizes = [int(s) for s in args.sizes.split(",")]
    deploy_extra = {"deploy_version": "2.0.0", "rolling_serial": [SERIAL], "rolling_analysis": False}
    this_extra = {**deploy_extra, **json.loads(args.extra)}
    rollback_extra = {"rollback_serial": SERIAL}
    data = {"meta": {"date": datetime.date.today().isoformat(),
                     "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
                     "load_before": os.getloadavg(), "reps": args.reps, "settings": SETTINGS,
                     "command": "python bench/scale/run.py " + " ".join(sys.argv[1:])},
            "sizes": sizes, "results": {str(s): {"deploy": [], "rollback": []} for s in sizes}}
    if args.baseline:
        data["baseline"] = {"checkout": args.baseline, "commit": git_commit(args.baseline), "this_commit": git_commit(REPO),
                            "results": {str(s): {"deploy": [], "rollback": []} for s in sizes}}
    failures = []
    with tempfile.TemporaryDirectory(prefix="sd-bench-scale-") as work:
        for rep in range(1, args.reps + 1):
            for size in sizes:
                lab("down", size)
                lab("up", size)
                row = data["results"][str(size)]
                deploy = run_playbook(os.path.join(REPO, "playbooks", "deploy.yml"), size, this_extra,
                                      os.path.join(work, "reports"))
                report = report_figures(os.path.join(work, "reports"))
                row["batches"] = len(report.get("batches", [])) or 4
                row["report"] = report
                rollback = run_playbook(os.path.join(REPO, "playbooks", "rollback.yml"), size, rollback_extra,
                                        os.path.join(work, "reports"))
                for name, run in (("deploy", deploy), ("rollback", rollback)):
                    row[name].append({k: run[k] for k in ("rc", "wall", "cpu")})
                    data["meta"][f"{name}_command"] = run["command"]
                    if run["rc"] != 0:
                        failures.append(f"{name} on {size} hosts (rc {run['rc']})")
                        log(run["stdout"][-3000:])
                if args.baseline:
                    failures += baseline_cell(args.baseline, size, data, deploy_extra, rollback_extra, work)
                log(f"  {size} hosts, rep {rep}: deploy {deploy['wall']:.0f} s wall ({deploy['wall'] / floor(row['batches'])['total']:.1f}× "
                    f"the floor), {deploy['cpu']:.0f} CPU s; rollback {rollback['wall']:.0f} s wall; "
                    f"load {os.getloadavg()[0]:.1f}")
                save(data, args)
                if rep == args.reps and size == sizes[-1] and args.artifact_mb > 0:
                    art = distribute(size, args.artifact_mb, work)
                    art["hosts"] = size
                    data["artifact"] = art
                    first, second = art["runs"]
                    log(f"  artifact {args.artifact_mb} MB to {size} hosts: run 1 {first['wall']:.0f} s, "
                        f"{first['served_bytes'] / 1e6:.0f} MB served, copied to {first['copied_to_hosts']}; "
                        f"run 2 {second['wall']:.0f} s, {second['served_bytes'] / 1e6:.0f} MB served, "
                        f"copied to {second['copied_to_hosts']}")
                    if (first["rc"] or second["rc"] or first["served_files"] != 1 or second["served_bytes"] != 0
                            or first["copied_to_hosts"] != size or second["copied_to_hosts"] != 0):
                        failures.append("artifact distribution (served or copied more than once, or failed)")
        lab("down", sizes[-1])
    print(save(data, args))
    if failures:
        log(f"bench scale: FAILED: {'; '.join(failures)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
