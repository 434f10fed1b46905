"""Fixtures for tests on the lab: the fleet, live traffic, Ansible runs.

Each test process owns one lab.  Run alone, that is the lab the LAB_*
environment names (the default lab unless set); under pytest-xdist
(``-n N``) worker ``gwN`` owns lab ``wN`` on its own subnet, bridge and state
folder (labconfig.worker_env), so N labs run side by side.  Before each test
the process makes sure its lab has the layout the test asks for (marker
``lab``, default: the rolling layout of the LAB_* environment), bringing it up
or switching it only when needed; tests that change hosts ask for
``fresh_lab``, which power-cycles the machines back to the baseline in a few
seconds.  At the end the process takes down a lab it brought up (``LAB_KEEP=1``
keeps it).

Every lab brought up or down is recorded in LAB_RECORD_DIR (default
build/lab-records), which test_zz_lab_down checks after the run.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
LAB_DIR = os.path.join(REPO, "tests", "lab")
DURATIONS_FILE = os.path.join(HERE, "durations.json")
sys.path.insert(0, LAB_DIR)
sys.path.insert(0, os.path.join(REPO, "build", "collections"))

import labconfig  # noqa: E402

WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if WORKER:  # before lab.py is imported: it reads its state folder and inventory from these
    os.environ.update(labconfig.worker_env(WORKER))
os.environ.setdefault("LAB_RECORD_DIR", os.path.join(REPO, "build", "lab-records"))

import lab as labmod  # noqa: E402
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
        assert self.state, "lab is not up"
        self.config = labconfig.LabConfig.from_dict(self.state["config"])

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
                     timeout: float = 900, stdin=None) -> subprocess.CompletedProcess:
    """Run ansible-playbook the way a user would; return the completed process.

    ``stdin``: its standard input (default: the test's own)."""
    argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"),
            "-i", INVENTORY, playbook, *args]
    if extra_vars:
        argv += ["-e", json.dumps(extra_vars)]
    if check:
        argv.append("--check")
    started = time.monotonic()
    result = subprocess.run(argv, cwd=REPO, text=True, stdin=stdin, stdout=subprocess.PIPE,
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


def config_env(config: labconfig.LabConfig) -> dict[str, str]:
    """The LAB_* variables that make lab.py bring up ``config``."""
    return {"LAB_HOSTS": str(config.app_count), "LAB_LBS": str(config.lb_count), "LAB_LAYOUT": config.layout,
            "LAB_SUBNET": config.subnet, "LAB_BRIDGE": config.bridge, "LAB_NAME": config.name,
            "LAB_MONITORING": "1" if config.monitoring else "0"}


def wanted_config(item: pytest.Item | None = None) -> labconfig.LabConfig:
    """The lab a test needs: the LAB_* environment's, with the ``lab`` marker's changes
    (``@pytest.mark.lab(layout="blue_green", lb_count=2)``)."""
    config = labconfig.LabConfig.from_env()
    marker = item.get_closest_marker("lab") if item is not None else None
    return dataclasses.replace(config, **marker.kwargs) if marker else config


class LabSlot:
    """This test process's lab: brought up or switched to the layout each test needs."""

    def __init__(self) -> None:
        self.before = labmod.load_state()
        self.changed = False
        self.lab: Lab | None = None
        self.last_clean_module: str | None = None  # see pytest_runtest_setup

    def ensure(self, config: labconfig.LabConfig) -> Lab:
        state = labmod.load_state()
        # Through LabConfig: a state written before a field existed reads with its default.
        if (state is None or labconfig.LabConfig.from_dict(state["config"]) != config or not os.path.exists(INVENTORY)
                or not self.running(state, config)):
            lab_cli("up", env=config_env(config))
            self.changed = True
        if self.lab is None:
            self.lab = Lab()
        else:
            self.lab.refresh()
        return self.lab

    @staticmethod
    def running(state: dict, config: labconfig.LabConfig) -> bool:
        """What ``lab.py status`` checks (every machine's nspawn alive, its sshd
        answering), in this process: it runs before every test."""
        for host in config.hosts:
            pid = state["hosts"].get(host.name, {}).get("pid")
            if not pid or not labmod.is_our_nspawn(pid) or not labmod.wait_port(host.ip, 22, time.monotonic() + 1):
                return False
        return True

    def finish(self) -> None:
        if not self.changed or os.environ.get("LAB_KEEP"):
            return
        if self.before is None or WORKER:
            lab_cli("down", check=False)
        else:  # the lab this process found, as it was
            lab_cli("up", env=config_env(labconfig.LabConfig.from_dict(self.before["config"])), check=False)


_SLOT: LabSlot | None = None


def slot() -> LabSlot:
    global _SLOT  # noqa: PLW0603 - one lab per test process
    if _SLOT is None:
        _SLOT = LabSlot()
    return _SLOT


# Fixtures that power-cycle the lab themselves (and whose tests may leave it changed).
RESETTING_FIXTURES = {"fresh_lab", "bg"}


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Before any fixture of the test (a module fixture must see it too): the
    layout the test asks for, and, for a test that takes the lab as it is
    (``lab`` without ``fresh_lab``), the baseline, unless the test before it
    in this process was such a test of the same module. Run alone, a module's
    tests ran in file order after their neighbours; on a worker they run in
    the suite's order, after whatever test the worker had before."""
    if "lab" not in item.fixturenames and not any(m.name == "lab" for m in item.iter_markers()):
        return
    current = slot()
    current.ensure(wanted_config(item))
    if RESETTING_FIXTURES & set(item.fixturenames):
        current.last_clean_module = None
        return
    module = item.module.__name__
    if current.last_clean_module != module:
        lab_cli("reset")
        current.lab.refresh()
    current.last_clean_module = module


@pytest.fixture(scope="session")
def lab():
    """This process's lab; pytest_runtest_setup has given it each test's layout."""
    current = slot()
    yield current.lab or current.ensure(wanted_config())
    current.finish()


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
    config.addinivalue_line("markers", "lab(**changes): the lab layout the test needs, as LabConfig fields "
                                       "(layout, app_count, lb_count, monitoring); default: the LAB_* environment's")
    config.addinivalue_line("markers", "final: runs alone after every lab test (test_zz_lab_down); "
                                       "left out of a parallel (xdist) session")
    config.addinivalue_line("markers", "quiet: asserts a time bound that labs running beside it would break "
                                       "(the CPU is shared); left out of a parallel session, make runs it alone after")


# ----------------------------------------------------------------- ordering
def _expected_seconds() -> dict[str, float]:
    try:
        with open(DURATIONS_FILE, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return {}


def _group(item: pytest.Item) -> str | None:
    """Tests that need a layout other than the default run together on one
    worker (per module), so a worker switches layouts once, not per test."""
    marker = item.get_closest_marker("lab")
    if not marker:
        return None
    changes = ",".join(f"{k}={v}" for k, v in sorted(marker.kwargs.items()))
    return f"lab[{changes}]:{item.module.__name__}"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Longest work first (known durations, per group), the final check last.

    Under xdist the final lab-down check and the ``quiet`` tests are left out
    (make runs them alone after every worker has finished) and layout groups
    get an ``xdist_group`` mark
    for ``--dist loadgroup``.  The order is the same in every worker, as
    xdist requires.
    """
    parallel = bool(WORKER) or bool(getattr(config.option, "numprocesses", None))
    final = [item for item in items if item.get_closest_marker("final")]
    if parallel:
        alone = [item for item in items if item.get_closest_marker("final") or item.get_closest_marker("quiet")]
        if alone:
            config.hook.pytest_deselected(items=alone)
            items[:] = [item for item in items if item not in alone]
        final = []
    expected = _expected_seconds()
    units: dict[str, list[pytest.Item]] = collections.OrderedDict()
    for item in items:
        if item in final:
            continue
        group = _group(item)
        if group and parallel:
            item.add_marker(pytest.mark.xdist_group(group))
        units.setdefault(group or item.nodeid, []).append(item)
    cost = {key: sum(expected.get(i.nodeid, 30.0) for i in members) for key, members in units.items()}
    ordered = sorted(units, key=lambda key: (-cost[key], key))
    items[:] = [item for key in ordered for item in units[key]] + final


# ----------------------------------------------------------------- durations
_SECONDS: dict[str, float] = collections.defaultdict(float)


def pytest_runtest_logreport(report):
    if WORKER:  # the controller adds up what the workers report
        return
    _SECONDS[report.nodeid.split("@")[0]] += report.duration


def pytest_terminal_summary(terminalreporter):
    if WORKER or not _SECONDS:
        return
    # Merged with earlier sessions' figures: make runs the final check as a session of its own.
    path = os.path.join(REPO, "build", "test-durations.json")
    try:
        with open(path, encoding="utf-8") as handle:
            known = json.load(handle)
    except (FileNotFoundError, ValueError):
        known = {}
    known.update({nodeid: round(seconds, 1) for nodeid, seconds in _SECONDS.items()})
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(dict(sorted(known.items())), handle, indent=1)
    per_file: dict[str, float] = collections.defaultdict(float)
    for nodeid, seconds in _SECONDS.items():
        per_file[nodeid.split("::")[0]] += seconds
    terminalreporter.section("slowest test files (setup + call + teardown, summed over their tests)")
    for path, seconds in sorted(per_file.items(), key=lambda kv: -kv[1])[:10]:
        terminalreporter.write_line(f"{seconds:8.1f} s  {path}")
    terminalreporter.write_line(f"{sum(per_file.values()):8.1f} s  in all, over {len(_SECONDS)} tests; "
                                "per test: build/test-durations.json")
