#!/usr/bin/env python3
"""make demo: a rolling deploy of demoapp 2.0.0 onto the lab, under traffic.

Boots the lab (or power-cycles it back to 1.0.0 everywhere), sends 100
requests/s through the load balancer for the whole run, rolls 2.0.0 out with
playbooks/deploy.yml and prints what happened: hosts, versions, requests
sent and failed, duration.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import lab  # noqa: E402
import labconfig  # noqa: E402
from traffic import TrafficRecorder  # noqa: E402

VERSION = os.environ.get("DEMO_VERSION", "2.0.0")


def main() -> int:
    state = lab.load_state()
    wanted = labconfig.LabConfig.from_env()
    if state is None or state["config"] != wanted.to_dict():
        lab.cmd_up(wanted)
    else:
        lab.cmd_reset()
    config = labconfig.LabConfig.from_dict(lab.load_state()["config"])

    print(f"\n== demo: rolling deploy of demoapp {VERSION} onto {len(config.app_hosts)} hosts "
          f"behind {config.lb_url}, under 100 req/s of traffic\n", flush=True)
    recorder = TrafficRecorder(config.lb_url, rate=100, duration=1800,
                               out=os.path.join(REPO, "build", "demo-traffic.jsonl"))
    recorder.start()
    started = time.monotonic()
    run = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"),
                          "-i", lab.INVENTORY, os.path.join(REPO, "playbooks", "deploy.yml"),
                          "-e", json.dumps({"deploy_version": VERSION})],
                         cwd=REPO, env={**os.environ, "ANSIBLE_CONFIG": os.path.join(REPO, "ansible.cfg")})
    deploy_seconds = time.monotonic() - started
    time.sleep(3)  # traffic after the deploy, too
    summary = recorder.stop()

    print("\n== result")
    print(f"deploy.yml exit status: {run.returncode}   duration: {deploy_seconds:.1f} s")
    for host in config.app_hosts:
        try:
            with urllib.request.urlopen(f"http://{host.ip}:{labconfig.APP_PORT}/", timeout=2) as resp:
                version = resp.headers.get("X-App-Version")
        except OSError as exc:
            version = f"not answering ({exc})"
        print(f"  {host.name:6} {host.ip:14} {version}")
    print(f"requests sent through the load balancer: {summary.total}")
    print(f"requests failed: {summary.failed} {summary.errors or ''}")
    print(f"answered by version: {summary.versions}")
    print(f"latency p50 {summary.latency_p50_ms} ms, p99 {summary.latency_p99_ms} ms")
    print("(the lab stays up: make lab-status, make lab-down)")
    return 0 if run.returncode == 0 and summary.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
