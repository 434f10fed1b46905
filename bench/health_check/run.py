#!/usr/bin/env python3
# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Benchmark: one safedeploy.fleet.health_check task vs an ansible.builtin.uri loop.

Starts N HTTP endpoints on 127.0.0.1 (N distinct ports, one asyncio process,
see endpoints.py), then runs, interleaved and REPS times each:

  noop          ansible-playbook with one debug task (start-up cost)
  health_check  one safedeploy.fleet.health_check task over the N URLs
  uri loop      ansible.builtin.uri looped over the same N URLs

All three are ansible-playbook against localhost with connection: local and
the same checks (status 200, JSON status == ok, X-App-Version == 2.0.0).
Prints the medians and the ratio.

    .venv/bin/python bench/health_check/run.py            # 500 endpoints, 3 reps
    .venv/bin/python bench/health_check/run.py --quick    # 100 endpoints, 1 rep
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def ansible_playbook():
    local = Path(sys.executable).parent / "ansible-playbook"
    found = str(local) if local.exists() else shutil.which("ansible-playbook")
    if not found:
        raise SystemExit("ansible-playbook not found; run with the project's venv: .venv/bin/python " + __file__)
    return found


def start_endpoints(count):
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "endpoints.py"), "--count", str(count)],
        stdout=subprocess.PIPE, text=True,
    )
    line = proc.stdout.readline().split()
    if len(line) != 3 or line[0] != "READY":
        proc.kill()
        raise SystemExit(f"endpoint server did not start: {line!r}")
    base = int(line[1])
    return proc, [f"http://127.0.0.1:{port}/healthz" for port in range(base, base + count)]


def stop_endpoints(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    match = re.search(r"REQUESTS (\d+) (\d+)", out or "")
    return (int(match.group(1)), int(match.group(2))) if match else (None, None)


def run_playbook(binary, playbook, vars_file, env, extra=()):
    began = time.perf_counter()
    proc = subprocess.run(
        [binary, "-i", "localhost,", "-e", f"@{vars_file}", *extra, str(HERE / playbook)],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False,
    )
    took = time.perf_counter() - began
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"{playbook} failed (rc {proc.returncode})")
    return took, proc.stdout


def ansible_version(binary):
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False).stdout
    return out.splitlines()[0] if out else "?"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500, help="endpoints (default 500)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each run (default 3)")
    parser.add_argument("--concurrency", type=int, default=64, help="health_check concurrency (default 64)")
    parser.add_argument("--quick", action="store_true", help="100 endpoints, 1 repetition")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    args = parser.parse_args()
    if args.quick:
        args.count, args.reps = 100, 1

    binary = ansible_playbook()
    env = dict(os.environ)
    env.update({
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_LOCALHOST_WARNING": "false",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false",
        "ANSIBLE_STDOUT_CALLBACK": "default",
    })
    proc, urls = start_endpoints(args.count)
    times = {"noop": [], "health_check": [], "uri": [], "module_elapsed": []}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-hc-") as tmp:
            vars_file = Path(tmp) / "vars.json"
            vars_file.write_text(json.dumps({"bench_urls": urls, "bench_concurrency": args.concurrency}))
            print(f"{args.count} endpoints on {urls[0]} .. {urls[-1]}; {args.reps} repetition(s)", flush=True)
            for rep in range(1, args.reps + 1):
                took, _ = run_playbook(binary, "noop.yml", vars_file, env)
                times["noop"].append(took)
                took, out = run_playbook(binary, "health_check.yml", vars_file, env)
                times["health_check"].append(took)
                match = re.search(r"BENCH_ELAPSED=([\d.]+) HEALTHY=(\d+)", out)
                if not match or int(match.group(2)) != args.count:
                    raise SystemExit("health_check did not report every endpoint healthy")
                times["module_elapsed"].append(float(match.group(1)))
                took, _ = run_playbook(binary, "uri_loop.yml", vars_file, env)
                times["uri"].append(took)
                print(f"  rep {rep}: noop {times['noop'][-1]:.2f} s, health_check {times['health_check'][-1]:.2f} s "
                      f"(module {times['module_elapsed'][-1]:.2f} s), uri loop {times['uri'][-1]:.2f} s", flush=True)
    finally:
        total, ports = stop_endpoints(proc)

    med = {key: statistics.median(values) for key, values in times.items()}
    ratio = med["uri"] / med["health_check"]
    task_ratio = (med["uri"] - med["noop"]) / max(1e-9, med["health_check"] - med["noop"])
    print()
    print(f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"{ansible_version(binary)}")
    print(f"Endpoint server answered {total} requests on {ports} distinct ports")
    print()
    print(f"| run ({args.count} endpoints, median of {args.reps}) | wall time |")
    print("|---|---|")
    print(f"| ansible-playbook start-up (one debug task) | {med['noop']:.2f} s |")
    print(f"| one `safedeploy.fleet.health_check` task | {med['health_check']:.2f} s "
          f"(module: {med['module_elapsed']:.2f} s) |")
    print(f"| `ansible.builtin.uri` loop | {med['uri']:.2f} s |")
    print(f"| ratio uri loop / health_check (whole playbook) | {ratio:.1f}x |")
    print(f"| ratio without start-up (task time only) | {task_ratio:.1f}x |")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "count": args.count, "reps": args.reps, "concurrency": args.concurrency,
            "times": times, "medians": med, "ratio": ratio, "task_ratio": task_ratio,
            "requests_served": total, "ports_hit": ports,
        }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
