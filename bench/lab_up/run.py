#!/usr/bin/env python3
# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Benchmark: how long the lab takes to come up, reset and go down.

For each fleet size (LAB_HOSTS), REPS times: ``lab.py up`` (the Debian root
already cached), ``lab.py reset`` (every machine power-cycled back to the
baseline), ``lab.py down``; wall time of each command as a user runs it
(process start to exit). Prints the medians; the budget is lab-up <= 20 s
for the default 6 app hosts + lb1 + mon1.

    .venv/bin/python bench/lab_up/run.py                   # 6 and 24 hosts, 5 reps
    .venv/bin/python bench/lab_up/run.py --sizes 6 --reps 1

The lab is the one named by LAB_NAME / LAB_SUBNET / LAB_BRIDGE /
LAB_STATE_DIR / LAB_INVENTORY: a lab already up under those names is taken
down first, and the lab is down at the end.
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

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.dirname(HERE))
from readme_section import write_section  # noqa: E402
LAB = os.path.join(REPO, "tests", "lab", "lab.py")
BUDGET_UP_S = 20.0
README_BEGIN = "<!-- bench:lab_up:begin (written by bench/lab_up/run.py) -->"
README_END = "<!-- bench:lab_up:end -->"


def timed(command: str, hosts: int) -> tuple[float, float | None]:
    """Run lab.py COMMAND; (wall seconds, the seconds lab.py itself reports)."""
    env = {**os.environ, "LAB_HOSTS": str(hosts), "LAB_BASELINE": "1.0.0", "LAB_LAYOUT": "rolling"}
    started = time.monotonic()
    result = subprocess.run([sys.executable, LAB, command], env=env, capture_output=True, text=True, check=False)
    took = time.monotonic() - started
    if result.returncode != 0:
        subprocess.run([sys.executable, LAB, "down"], env=env, capture_output=True, check=False)
        raise SystemExit(f"lab.py {command} ({hosts} hosts) failed:\n{result.stderr}")
    match = re.search(r"(?:up|reset \d+ machine\(s\)) in ([\d.]+) s", result.stderr)
    return took, float(match.group(1)) if match else None


def markdown(data: dict) -> str:
    meta = data["meta"]
    lines = [
        f"Measured {meta['date']} on {meta['machine']}, root cached, {meta['reps']} repetition(s) "
        f"of up → reset → down per size; load average {meta['load_before'][0]:.1f} before, "
        f"{meta['load_after'][0]:.1f} after (other labs were running).",
        "",
        "| fleet | `lab.py up` median (min–max) | `lab.py reset` median (min–max) | `lab.py down` median (min–max) |",
        "|---|---|---|---|",
    ]
    for size in data["sizes"]:
        row = data["results"][str(size)]
        cells = []
        for command in ("up", "reset", "down"):
            values = row[command]
            cells.append(f"{statistics.median(values):.1f} s ({min(values):.1f}–{max(values):.1f})")
        lines.append(f"| {size} app + lb1 + mon1 | {' | '.join(cells)} |")
    six = data["results"].get("6")
    if six:
        up = statistics.median(six["up"])
        verdict = "within" if up <= BUDGET_UP_S else "OVER"
        lines += ["", f"Budget: lab-up ≤ {BUDGET_UP_S:.0f} s for 6 app hosts: median {up:.1f} s, **{verdict}** budget."]
    return "\n".join(lines) + "\n"


def write_readme(path: str, text: str) -> None:
    write_section(path, README_BEGIN, README_END, text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="6,24", help="comma-separated LAB_HOSTS values (default 6,24)")
    parser.add_argument("--reps", type=int, default=5, help="repetitions per size (default 5)")
    parser.add_argument("--json", default=os.path.join(REPO, "build", "bench", "lab_up.json"))
    parser.add_argument("--readme", help="write the table into this README between the lab_up markers")
    parser.add_argument("--no-fail-on-timing", action="store_true",
                        help="exit 0 even when lab-up is over the budget")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    # A lab left up under these names is replaced by the first `up` anyway.
    subprocess.run([sys.executable, LAB, "down"], capture_output=True, check=False)
    data = {"meta": {"date": datetime.date.today().isoformat(),
                     "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
                     "load_before": os.getloadavg(), "reps": args.reps,
                     "lab_state_dir": os.environ.get("LAB_STATE_DIR", "/var/lib/safedeploy-lab"),
                     "budget_up_s": BUDGET_UP_S},
            "sizes": sizes, "results": {}}
    for size in sizes:
        row = {"up": [], "reset": [], "down": [], "up_reported": [], "reset_reported": []}
        for rep in range(1, args.reps + 1):
            for command in ("up", "reset", "down"):
                took, reported = timed(command, size)
                row[command].append(round(took, 2))
                if reported is not None:
                    row[f"{command}_reported"].append(reported)
            print(f"  {size} hosts, rep {rep}: up {row['up'][-1]:.1f} s, reset {row['reset'][-1]:.1f} s, "
                  f"down {row['down'][-1]:.1f} s", file=sys.stderr, flush=True)
        data["results"][str(size)] = row
    data["meta"]["load_after"] = os.getloadavg()
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2)
    table = markdown(data)
    print(table)
    if args.readme:
        write_readme(args.readme, table)
    six = data["results"].get("6")
    if six and statistics.median(six["up"]) > BUDGET_UP_S and not args.no_fail_on_timing:
        print(f"lab-up median over the {BUDGET_UP_S:.0f} s budget", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
