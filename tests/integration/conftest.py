"""Fixtures for tests on the lab: the fleet, live traffic, Ansible runs.

The session brings the lab up once (unless one is already up with the
layout it needs) and takes it down at the end if it started it.  Tests that
change hosts ask for ``fresh_lab``, which power-cycles the machines back to
the baseline in a few seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
LAB_DIR = os.path.join(REPO, "tests", "lab")
sys.path.insert(0, LAB_DIR)
sys.path.insert(0, os.path.join(REPO, "build", "collections"))

import lab as labmod  # noqa: E402
import labconfig  # noqa: E402
from traffic import TrafficRecorder, is_ok  # noqa: E402

INVENTORY = labmod.INVENTORY


def lab_cli(*args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, os.path.join(LAB_DIR, "lab.py"), *args],
                            env={**os.environ, **(env or {})}, text=True,
                            capture_output=True)
    if check and result.returncode != 0:
        raise AssertionError(f"lab.py {' '.join(args)} failed:\n{result.stderr}")
    return result


class Lab:
    """The running lab, as tests see it."""

    def __init__(self) -> None:
        self.state = labmod.load_state()
        assert self.state, "lab is not up"
        self.config = labconfig.LabConfig.from_dict(self.state["config"])
        self.inventory = INVENTORY
        self.key = labmod.KEY_FILE

    @property
    def app_hosts(self) -> list[labconfig.Host]:
        return self.config.app_hosts

    @property
    def lb_url(self) -> str:
        return self.config.lb_url

    def refresh(self) -> None:
        self.state = labmod.load_state()

    def leader(self, name: str) -> int:
        self.refresh()
        pid = self.state["hosts"][name]["pid"]
        leader = labmod.machine_leader(pid)
        assert leader, f"{name} is not running"
        return leader

    def ssh(self, host: str, command: str, check: bool = True) -> subprocess.CompletedProcess:
        ip = self.config.host(host).ip
        result = subprocess.run(
            ["ssh", "-i", self.key, "-o", "StrictHostKeyChecking=no", "-o",
             "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "BatchMode=yes",
             "-o", "ConnectTimeout=5", f"root@{ip}", command],
            text=True, capture_output=True, timeout=60)
        if check and result.returncode != 0:
            raise AssertionError(f"ssh {host} {command!r} failed: {result.stderr}")
        return result

    def admin_socket(self, lb: str = "lb1") -> str:
        """The LB's runtime API socket, reached from the host through /proc."""
        return f"/proc/{self.leader(lb)}/root/run/haproxy/admin.sock"

    def haproxy_servers(self, lb: str = "lb1") -> dict[str, dict]:
        from ansible_collections.safedeploy.fleet.plugins.module_utils import _haproxy

        client = _haproxy.HAProxyClient(self.admin_socket(lb))
        return {s["name"]: s for s in client.list_servers()}

    def history(self, host: str, app: str = "demoapp") -> dict:
        out = self.ssh(host, f"cat /opt/{app}/.safedeploy/history.json").stdout
        return json.loads(out)

    def version_on(self, host: str) -> str:
        """The version the host's app says it runs, asked on the host itself."""
        return self.ssh(host, "python3 -c \"import urllib.request as u; print(u.urlopen("
                              "'http://127.0.0.1:8080/', timeout=5).headers['X-App-Version'])\""
                        ).stdout.strip()


def failed_requests(traffic, since: int = 0) -> list[dict]:
    """The recorded requests that failed (error, timeout or non-2xx), from record ``since`` on."""
    return [r for r in traffic.records[since:] if not is_ok(r)]


def ansible_playbook(playbook: str, *args: str, extra_vars: dict | None = None,
                     check: bool = False, env: dict | None = None,
                     timeout: float = 900) -> subprocess.CompletedProcess:
    """Run ansible-playbook the way a user would; return the completed process."""
    argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"),
            "-i", INVENTORY, playbook, *args]
    if extra_vars:
        argv += ["-e", json.dumps(extra_vars)]
    if check:
        argv.append("--check")
    started = time.monotonic()
    result = subprocess.run(argv, cwd=REPO, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, timeout=timeout,
                            env={**os.environ, "ANSIBLE_CONFIG": os.path.join(REPO, "ansible.cfg"),
                                 "ANSIBLE_FORCE_COLOR": "0", **(env or {})})
    result.elapsed = time.monotonic() - started
    return result


def recap(output: str) -> dict[str, dict[str, int]]:
    """Parse PLAY RECAP into {host: {ok, changed, failed, ...}}."""
    stats: dict[str, dict[str, int]] = {}
    in_recap = False
    for line in output.splitlines():
        if line.startswith("PLAY RECAP"):
            in_recap, stats = True, {}
            continue
        if in_recap and ":" in line and "=" in line:
            host, _, rest = line.partition(":")
            stats[host.strip()] = {k: int(v) for k, v in
                                   (item.split("=") for item in rest.split())}
    return stats


def _wanted_config() -> dict:
    return labconfig.LabConfig.from_env().to_dict()


@pytest.fixture(scope="session")
def lab():
    state = labmod.load_state()
    started_here = False
    # A lab brought up from another checkout wrote its inventory there: up again.
    if (state is None or state["config"] != _wanted_config() or not os.path.exists(INVENTORY)
            or lab_cli("status", check=False).returncode):
        lab_cli("up")
        started_here = True
    yield Lab()
    if started_here and not os.environ.get("LAB_KEEP"):
        lab_cli("down", check=False)


@pytest.fixture
def fresh_lab(lab):
    """Every machine power-cycled back to the baseline (1.0.0 on app hosts)."""
    lab_cli("reset")
    lab.refresh()
    return lab


@pytest.fixture
def traffic(lab, tmp_path):
    """Live traffic through the load balancer at 100 req/s for the whole test."""
    recorder = TrafficRecorder(lab.lb_url, rate=100, duration=1800,
                               out=str(tmp_path / "traffic.jsonl"))
    recorder.start()
    yield recorder
    recorder.stop()


def pytest_configure(config):
    config.addinivalue_line("markers", "extended: long lab tests (fault injection and more) run by "
                                       "`make test-extended`, not by `make test`")


def pytest_collection_modifyitems(config, items):
    """lab-down's own test tears the lab down, so it runs after all others."""
    items.sort(key=lambda item: "test_zz_lab_down" in item.nodeid)
