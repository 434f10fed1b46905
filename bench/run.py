#!/usr/bin/env python3
# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Every benchmark of safedeploy.fleet: `make bench` and `make bench-quick`.

    .venv/bin/python bench/run.py            # everything; tables into bench/README.md
    .venv/bin/python bench/run.py --quick    # short forms, figures printed, no timing failures
    .venv/bin/python bench/run.py --only lab_up,rollout

Steps (each its own script, runnable alone):

  health_check  bench/health_check/run.py   one health_check task vs an uri loop (loopback only)
  lab_up        bench/lab_up/run.py         lab up / reset / down, 6 and 24 app hosts, 5 reps
  rollout       bench/rollout/run.py        (a) serial restart vs (b) community.general.haproxy
                                            vs (c) deploy.yml, under 100 req/s, same lab
  canary        bench/canary/run.py         deploy_strategy=canary under 100 req/s: (a) 2.1.0-errors
                                            aborted, its first to last response; (b) 2.0.0 promoted,
                                            wall time vs the sum of the pauses; 5 runs each, medians
  scale         bench/scale/run.py          rolling deploy at 25 % batches on 6 and 24 hosts: wall / floor,
                                            controller CPU per host, rollback / deploy, a 100 MB artifact
                                            to 24 hosts twice (bytes served, hosts copied to); 3 reps
  analysis      bench/analysis/run.py       no false abort: 2.0.0 by 10 rolling deploys and 10 canaries under
                                            100 req/s, analyses on HAProxy's counters (its lab has no Prometheus:
                                            LAB_MONITORING=0, so it brings the lab up again without mon1)

The lab steps use the lab named by LAB_NAME / LAB_SUBNET / LAB_BRIDGE /
LAB_STATE_DIR / LAB_INVENTORY (the default lab when unset). They take that
lab down and up again, and leave it down. To bench beside a lab you keep
using, point them at a second one, e.g.

    LAB_NAME=b LAB_SUBNET=10.213.3.0/24 LAB_BRIDGE=sdlabb \\
    LAB_STATE_DIR=/var/lib/safedeploy-lab-b LAB_INVENTORY=/var/lib/safedeploy-lab-b/inventory.yml make bench

Rollout (b) needs community.general, which is NOT a dependency of the
collection: it comes from PyPI's `ansible` package (bench/requirements.txt),
installed here into build/bench-venv when missing. Only its collections are
used; every playbook runs with the project's own ansible-core (.venv).

Exit status: non-zero when a step fails; in the full run also when lab-up is
over its 20 s budget. --quick never fails on timing.
"""

from __future__ import annotations

import argparse
import glob
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
OUT = os.path.join(REPO, "build", "bench")
BENCH_VENV = os.path.join(REPO, "build", "bench-venv")
README = os.path.join(HERE, "README.md")
STEPS = ("health_check", "lab_up", "rollout", "canary", "scale", "analysis")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def community_general_present() -> bool:
    return bool(glob.glob(os.path.join(BENCH_VENV, "lib", "python3*", "site-packages", "ansible_collections",
                                       "community", "general", "plugins", "modules", "haproxy.py")))


def ensure_bench_venv() -> None:
    """build/bench-venv with bench/requirements.txt (community.general via PyPI's `ansible`)."""
    if community_general_present():
        return
    log(f"bench: installing bench/requirements.txt into {os.path.relpath(BENCH_VENV, REPO)} "
        "(community.general for rollout (b); a few minutes, once)")
    python = os.path.join(BENCH_VENV, "bin", "python")
    if not os.path.exists(python):
        subprocess.run([sys.executable, "-m", "venv", BENCH_VENV], check=True)
    subprocess.run([python, "-m", "pip", "install", "-q", "-r", os.path.join(HERE, "requirements.txt")],
                   check=True)
    if not community_general_present():
        raise SystemExit("bench: community.general is still missing after installing bench/requirements.txt")


def step(name: str, argv: list[str]) -> int:
    log(f"\n=== bench {name}: {' '.join(os.path.relpath(a, REPO) if a.startswith(REPO) else a for a in argv)}")
    started = time.monotonic()
    rc = subprocess.run([sys.executable, *argv], cwd=REPO, check=False).returncode
    log(f"=== bench {name}: rc {rc} in {time.monotonic() - started:.0f} s")
    return rc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="short forms: health_check --quick, lab_up 1 rep of 6 hosts, rollout 2.0.0 (a) vs (c), "
                             "canary 1 run of each, scale 6 hosts 1 rep with a 5 MB artifact, "
                             "analysis 1 rolling deploy and 1 canary")
    parser.add_argument("--only", help=f"comma-separated steps ({', '.join(STEPS)})")
    parser.add_argument("--no-readme", action="store_true", help="do not write the tables into bench/README.md")
    args = parser.parse_args()
    steps = [s.strip() for s in args.only.split(",")] if args.only else list(STEPS)
    unknown = set(steps) - set(STEPS)
    if unknown:
        parser.error(f"unknown step(s): {', '.join(sorted(unknown))}")
    out = os.path.join(OUT, "quick") if args.quick else OUT  # a quick run never overwrites the full figures
    os.makedirs(out, exist_ok=True)
    readme = [] if args.quick or args.no_readme else ["--readme", README]
    lab = os.environ.get("LAB_STATE_DIR", "/var/lib/safedeploy-lab")
    log(f"bench: {'quick' if args.quick else 'full'} run of {', '.join(steps)}; lab {lab}; results in "
        f"{os.path.relpath(out, REPO)}/")

    failures = []
    if "health_check" in steps:
        argv = [os.path.join(HERE, "health_check", "run.py"), "--json", os.path.join(out, "health_check.json")]
        if step("health_check", argv + (["--quick"] if args.quick else [])):
            failures.append("health_check")
    if "lab_up" in steps:
        argv = [os.path.join(HERE, "lab_up", "run.py"), "--json", os.path.join(out, "lab_up.json"), *readme]
        argv += ["--sizes", "6", "--reps", "1", "--no-fail-on-timing"] if args.quick else []
        rc = step("lab_up", argv)
        if rc:
            failures.append("lab_up (over the 20 s budget)" if rc == 3 else "lab_up")
    if "rollout" in steps:
        if not args.quick:
            ensure_bench_venv()
        argv = [os.path.join(HERE, "rollout", "run.py"), "--json", os.path.join(out, "rollout.json"), *readme]
        if step("rollout", argv + (["--quick"] if args.quick else [])):
            failures.append("rollout")
    if "canary" in steps:
        argv = [os.path.join(HERE, "canary", "run.py"), "--json", os.path.join(out, "canary.json"), *readme]
        if step("canary", argv + (["--quick"] if args.quick else [])):
            failures.append("canary (a run did not abort or promote as it should)")
    if "scale" in steps:
        argv = [os.path.join(HERE, "scale", "run.py"), "--json", os.path.join(out, "scale.json"), *readme]
        argv += ["--sizes", "6", "--reps", "1", "--artifact-mb", "5"] if args.quick else []
        if step("scale", argv):
            failures.append("scale (a playbook failed, or the artifact was served or copied more than once)")
    if "analysis" in steps:
        argv = [os.path.join(HERE, "analysis", "run.py"), "--json", os.path.join(out, "analysis.json"), *readme]
        if step("analysis", argv + (["--quick"] if args.quick else [])):
            failures.append("analysis (2.0.0 was aborted, or a run failed)")
    if failures:
        log(f"\nbench: FAILED: {', '.join(failures)}")
        return 1
    log(f"\nbench: done; JSON figures in {os.path.relpath(out, REPO)}/"
        + ("" if readme == [] else "; tables written into bench/README.md"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
