#!/usr/bin/env python3
"""The lab: a real fleet of systemd machines on one host.

    lab.py up | down | status | reset | kill HOST | start HOST | link HOST up|down

Every machine is ``systemd-nspawn --boot`` of one cached Debian root with
``--volatile=overlay`` (writes stay in memory), inside its own network
namespace wired to one bridge, reached by Ansible over SSH with a key made
for this lab.  Everything the lab creates is written to its state file the
moment it exists, and ``down`` removes exactly that, by name and PID, never
by pattern.

Environment: LAB_HOSTS (app hosts, default 6), LAB_LBS (load balancers,
default 1), LAB_LAYOUT (``rolling`` or ``blue_green``), LAB_MONITORING (``1``,
the default: mon1 runs Prometheus and the inventory sets deploy_metrics_url;
``0``: no monitoring host, no metrics URL), LAB_BASELINE (version
installed on the app hosts at boot, default 1.0.0, ``none`` for empty hosts),
LAB_STATE_DIR, LAB_CACHE_DIR, LAB_RECORD_DIR (when set, every lab brought up
or down is recorded there, so a check after a parallel test run can prove
that nothing of any lab is left).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import labconfig  # noqa: E402
import rootfs  # noqa: E402

STATE_DIR = os.environ.get("LAB_STATE_DIR", "/var/lib/safedeploy-lab")
STATE_FILE = os.path.join(STATE_DIR, "state.json")
KEY_FILE = os.path.join(STATE_DIR, "id_ed25519")
INVENTORY = os.environ.get("LAB_INVENTORY", os.path.join(HERE, "inventory.yml"))
RECORD_DIR = os.environ.get("LAB_RECORD_DIR", "")
REQUIRED_COMMANDS = {  # command -> Debian package that provides it
    "debootstrap": "debootstrap",
    "systemd-nspawn": "systemd-container",
    "ip": "iproute2",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "chroot": "coreutils",
}


class LabError(Exception):
    """A problem the operator must fix; printed without a traceback."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
    return result


# --------------------------------------------------------------- state file
def load_state() -> dict | None:
    try:
        with open(STATE_FILE, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return None


def save_state(state: dict) -> None:
    os.makedirs(STATE_DIR, exist_ok=True)
    tmp = STATE_FILE + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(state, handle, indent=2)
    os.replace(tmp, STATE_FILE)


def record(state: dict, event: str) -> None:
    """Append what this lab created (names, PIDs) to LAB_RECORD_DIR, if set.

    One JSON line per event (``up`` with the objects, ``down`` with the time)
    in a file named after the lab's state folder, so several labs in one run
    never write the same file.
    """
    if not RECORD_DIR:
        return
    os.makedirs(RECORD_DIR, exist_ok=True)
    entry = {"event": event, "at": time.time(), "state_dir": STATE_DIR,
             "bridge": state.get("bridge"),
             "hosts": {name: {key: host.get(key) for key in ("netns", "veth", "pid")}
                       for name, host in state.get("hosts", {}).items()}}
    name = STATE_DIR.strip("/").replace("/", "_") + ".jsonl"
    with open(os.path.join(RECORD_DIR, name), "a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry) + "\n")


# --------------------------------------------------------------- preflight
def preflight_host() -> None:
    """Checks that need no lab state; run before anything is touched."""
    if os.geteuid() != 0:
        raise LabError("the lab must run as root: it creates network namespaces, "
                       "a bridge and systemd-nspawn machines (try: sudo make lab-up)")
    missing = sorted({pkg for cmd, pkg in REQUIRED_COMMANDS.items() if not shutil.which(cmd)})
    if missing:
        raise LabError("missing Debian packages: " + " ".join(missing)
                       + f" (install with: apt-get install -y {' '.join(missing)})")


def raise_inotify_limit(minimum: int = 1024) -> None:
    """Each booted machine's systemd takes ~7 inotify instances; the kernel
    default (128 per user, and every machine runs as root) runs out at
    about 18 machines, after which sshd silently fails to start."""
    path = "/proc/sys/fs/inotify/max_user_instances"
    try:
        with open(path, encoding="ascii") as handle:
            current = int(handle.read())
        if current < minimum:
            with open(path, "w", encoding="ascii") as handle:
                handle.write(str(minimum))
            log(f"lab: raised fs.inotify.max_user_instances from {current} to {minimum}")
    except OSError as exc:
        raise LabError(f"cannot raise fs.inotify.max_user_instances to {minimum}: {exc}") from exc


def preflight_network(config: labconfig.LabConfig) -> None:
    # The lab subnet and bridge must be ours alone: never share them.
    if os.path.exists(f"/sys/class/net/{config.bridge}"):
        raise LabError(f"a network interface named {config.bridge} already exists and "
                       "is not the lab's (no lab state records it); remove it or set LAB_BRIDGE")
    network = ipaddress.ip_network(config.subnet)
    addrs = json.loads(run("ip", "-j", "addr", "show").stdout or "[]")
    for link in addrs:
        for info in link.get("addr_info", []):
            if info.get("family") != "inet":
                continue
            if ipaddress.ip_address(info["local"]) in network:
                raise LabError(f"address {info['local']} on {link['ifname']} is already in the "
                               f"lab subnet {config.subnet}; set LAB_SUBNET to a free /24")


# --------------------------------------------------------------- network
def create_bridge(config: labconfig.LabConfig, state: dict) -> None:
    run("ip", "link", "add", config.bridge, "type", "bridge")
    state["bridge"] = config.bridge
    save_state(state)
    run("ip", "addr", "add", f"{config.gateway}/{config.prefixlen}", "dev", config.bridge)
    run("ip", "link", "set", config.bridge, "up")


def create_netns(config: labconfig.LabConfig, host: labconfig.Host, state: dict) -> None:
    entry = state["hosts"].setdefault(host.name, {})
    run("ip", "netns", "add", host.netns)
    entry["netns"] = host.netns
    save_state(state)
    run("ip", "link", "add", host.veth, "type", "veth", "peer", "name", "eth0",
        "netns", host.netns)
    entry["veth"] = host.veth
    save_state(state)
    run("ip", "link", "set", host.veth, "master", config.bridge, "up")
    run("ip", "-n", host.netns, "addr", "add", f"{host.ip}/{config.prefixlen}", "dev", "eth0")
    run("ip", "-n", host.netns, "link", "set", "eth0", "up")
    run("ip", "-n", host.netns, "link", "set", "lo", "up")


# --------------------------------------------------------------- machines
def host_dir(host: labconfig.Host) -> str:
    return os.path.join(STATE_DIR, "hosts", host.name)


def prepare_host_files(config: labconfig.LabConfig, host: labconfig.Host) -> list[str]:
    """Write the host's own files and return its nspawn bind options.

    Only a few folders are bound from the host (so tests and lab-reset can
    set them up in milliseconds); the rest of each machine is its own
    in-memory overlay.
    """
    base = host_dir(host)
    shutil.rmtree(base, ignore_errors=True)
    os.makedirs(base)
    binds = [f"--bind-ro={KEY_FILE}.pub:/root/.ssh/authorized_keys"]
    for src, dest in labconfig.write_host_files(config, host, base).items():
        binds.append(f"--bind={src}:{dest}")
    return binds


def start_machine(config: labconfig.LabConfig, host: labconfig.Host, state: dict,
                  root: str, binds: list[str]) -> None:
    log_path = os.path.join(STATE_DIR, "logs", f"{host.name}.log")
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    argv = ["systemd-nspawn", "--quiet", "-D", root, "--boot", "--register=no",
            "--keep-unit", "--volatile=overlay",
            f"--network-namespace-path=/run/netns/{host.netns}",
            f"--machine={host.name}", f"--hostname={host.name}", *binds,
            *[f"systemd.wants={unit}" for unit in host.units]]
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    state["hosts"][host.name]["pid"] = proc.pid
    save_state(state)


def machine_leader(pid: int) -> int | None:
    """The container's init: the child of its nspawn process."""
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as handle:
                children = handle.read().split()
            if children:
                return int(children[0])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def is_our_nspawn(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            argv = handle.read().split(b"\0")
    except OSError:
        return False
    return bool(argv) and argv[0].endswith(b"systemd-nspawn")


def stop_machine(pid: int | None, timeout: float = 10.0) -> None:
    """Power a machine off at once: kill its init, then its nspawn."""
    if not pid or not is_our_nspawn(pid):
        return
    leader = machine_leader(pid)
    if leader:
        # SIGKILL on a PID namespace's init ends every process inside it.
        try:
            os.kill(leader, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_our_nspawn(pid):
            break
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                break
        except ChildProcessError:
            pass
        time.sleep(0.05)
    else:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_port(ip: str, port: int, deadline: float) -> bool:
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((ip, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def wait_http(url: str, deadline: float) -> bool:
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def wait_ready(config: labconfig.LabConfig, hosts: list[labconfig.Host], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout

    def check(host: labconfig.Host) -> str | None:
        if not wait_port(host.ip, 22, deadline):
            return f"{host.name}: sshd on {host.ip}:22 did not answer"
        for url in host.ready_urls:
            if not wait_http(url, deadline):
                return f"{host.name}: {url} did not answer 200"
        return None

    with concurrent.futures.ThreadPoolExecutor(len(hosts) or 1) as pool:
        problems = [p for p in pool.map(check, hosts) if p]
    if problems:
        listing = "\n  ".join(problems)
        raise LabError(f"machines did not come up within {timeout:.0f}s:\n  {listing}\n(logs in {STATE_DIR}/logs)")


def haproxy_client(state: dict, lb: str):
    """The LB's runtime API, reached from the host through /proc/PID/root."""
    sys.path.insert(0, os.path.join(REPO, "build", "collections"))
    from ansible_collections.safedeploy.fleet.plugins.module_utils import _haproxy  # noqa: PLC0415

    leader = machine_leader(state["hosts"][lb]["pid"])
    return _haproxy.HAProxyClient(f"/proc/{leader}/root/run/haproxy/admin.sock", timeout=2)


def ssh_run(host: labconfig.Host, command: str) -> str:
    result = subprocess.run(["ssh", "-i", KEY_FILE, "-o", "StrictHostKeyChecking=no", "-o",
                             "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "BatchMode=yes",
                             "-o", "ConnectTimeout=5", f"root@{host.ip}", command],
                            capture_output=True, text=True, timeout=60, check=False)
    return result.stdout + result.stderr


def wait_servers_up(config: labconfig.LabConfig, state: dict, timeout: float = 60) -> None:
    """A fleet is ready when every LB health-checks every server UP."""
    if not labconfig.baseline():
        return
    deadline = time.monotonic() + timeout
    for lb in config.lb_hosts:
        down: list = []
        nudged = False
        while time.monotonic() < deadline:
            if not nudged and down and down[0].startswith("runtime API") and time.monotonic() > deadline - timeout / 2:
                # Seen a few times: haproxy.service failed at boot with "cannot bind
                # UNIX socket (No such file or directory) [/run/haproxy/admin.sock]":
                # /run/haproxy (the package's tmpfiles.d entry) was not there yet, and
                # systemd gave up after five quick restarts. Keep the evidence in the
                # lab log, create the folder, clear the failure and start it again.
                nudged = True
                evidence = ssh_run(lb, "systemctl status haproxy systemd-tmpfiles-setup --no-pager; "
                                       "journalctl -b -u haproxy --no-pager | tail -30")
                log(f"lab: {lb.name}: HAProxy's runtime API is not answering; starting it again "
                    f"(status saved in {STATE_DIR}/logs/{lb.name}-haproxy.txt)")
                with open(os.path.join(STATE_DIR, "logs", f"{lb.name}-haproxy.txt"), "a", encoding="utf-8") as handle:
                    handle.write(evidence)
                ssh_run(lb, "systemd-tmpfiles --create /usr/lib/tmpfiles.d/haproxy.conf; "
                            "systemctl reset-failed haproxy; systemctl restart haproxy")
            try:
                servers = haproxy_client(state, lb.name).list_servers()
                down = [f"{s['backend']}/{s['name']}" for s in servers if not s.get("healthy")]
            except Exception as exc:  # noqa: BLE001 - socket not there yet while booting
                down = [f"runtime API: {exc}"]
            if not down:
                break
            time.sleep(0.2)
        else:
            raise LabError(f"{lb.name}: servers not UP after {timeout:.0f} s: {', '.join(down)}")


def boot(config: labconfig.LabConfig, hosts: list[labconfig.Host], state: dict) -> None:
    root = rootfs.ensure_rootfs(log=log)
    for host in hosts:
        start_machine(config, host, state, root, prepare_host_files(config, host))
    wait_ready(config, hosts)
    wait_servers_up(config, state)


# --------------------------------------------------------------- commands
def ensure_key() -> None:
    if not os.path.exists(KEY_FILE) or not os.path.exists(KEY_FILE + ".pub"):
        os.makedirs(STATE_DIR, exist_ok=True)
        for path in (KEY_FILE, KEY_FILE + ".pub"):
            if os.path.exists(path):
                os.unlink(path)
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "safedeploy-lab", "-f", KEY_FILE)
    os.chmod(KEY_FILE, 0o600)


def cmd_up(config: labconfig.LabConfig) -> None:
    started = time.monotonic()
    preflight_host()
    if load_state() is not None:
        log("lab: removing what an earlier lab left behind")
        cmd_down(quiet=True)
    preflight_network(config)
    raise_inotify_limit(max(4096, 16 * len(config.hosts)))
    labconfig.ensure_artifacts()
    ensure_key()
    state = {"config": config.to_dict(), "bridge": None, "hosts": {},
             "started_at": time.time()}
    save_state(state)
    try:
        create_bridge(config, state)
        for host in config.hosts:
            create_netns(config, host, state)
        boot(config, config.hosts, state)
    except BaseException:
        log("lab: start failed; tearing down what was created")
        cmd_down(quiet=True)
        raise
    labconfig.write_inventory(config, INVENTORY, KEY_FILE)
    record(state, "up")
    elapsed = time.monotonic() - started
    log(f"lab: up in {elapsed:.1f} s: {len(config.app_hosts)} app hosts, "
        f"{len(config.lb_hosts)} load balancer(s), "
        f"{config.monitoring_host.name if config.monitoring_host else 'no monitoring'}; inventory {INVENTORY}")
    log(f"lab: load balancer {config.lb_url}  prometheus {config.prometheus_url or '- (LAB_MONITORING=0)'}")


def cmd_down(quiet: bool = False) -> None:
    state = load_state()
    if state is None:
        if not quiet:
            log("lab: nothing to remove (no lab state)")
        return
    hosts = state.get("hosts", {})
    record(state, "down")
    with concurrent.futures.ThreadPoolExecutor(max(len(hosts), 1)) as pool:
        list(pool.map(lambda e: stop_machine(e.get("pid")), hosts.values()))
    for entry in hosts.values():
        if entry.get("netns"):
            run("ip", "netns", "del", entry["netns"], check=False)
        if entry.get("veth") and os.path.exists(f"/sys/class/net/{entry['veth']}"):
            run("ip", "link", "del", entry["veth"], check=False)
    if state.get("bridge") and os.path.exists(f"/sys/class/net/{state['bridge']}"):
        run("ip", "link", "del", state["bridge"], check=False)
    shutil.rmtree(os.path.join(STATE_DIR, "hosts"), ignore_errors=True)
    os.unlink(STATE_FILE)
    if os.path.exists(INVENTORY):
        os.unlink(INVENTORY)
    if not quiet:
        log(f"lab: down ({len(hosts)} machines removed)")


def current_config() -> tuple[dict, labconfig.LabConfig]:
    state = load_state()
    if state is None:
        raise LabError("the lab is not up (run: make lab-up)")
    return state, labconfig.LabConfig.from_dict(state["config"])


def cmd_reset(names: list[str] | None = None) -> None:
    """Power-cycle machines: volatile roots and fresh host folders make them clean."""
    started = time.monotonic()
    state, config = current_config()
    hosts = [h for h in config.hosts if not names or h.name in names]
    unknown = set(names or []) - {h.name for h in config.hosts}
    if unknown:
        raise LabError(f"unknown lab host(s): {', '.join(sorted(unknown))}")
    with concurrent.futures.ThreadPoolExecutor(len(hosts)) as pool:
        list(pool.map(lambda h: stop_machine(state["hosts"][h.name].get("pid")), hosts))
    boot(config, hosts, state)
    record(state, "reset")
    # The inventory belongs to the checkout that asks: write it here too.
    labconfig.write_inventory(config, INVENTORY, KEY_FILE)
    log(f"lab: reset {len(hosts)} machine(s) in {time.monotonic() - started:.1f} s")


def cmd_kill(name: str) -> None:
    """Power a machine off as a crash would (for fault tests)."""
    state, config = current_config()
    if name not in state["hosts"]:
        raise LabError(f"unknown lab host: {name}")
    stop_machine(state["hosts"][name].get("pid"))
    state["hosts"][name]["pid"] = None
    save_state(state)


def cmd_start(name: str) -> None:
    """Boot a machine that was killed, keeping its /opt (like a disk would)."""
    state, config = current_config()
    host = config.host(name)
    if host is None:
        raise LabError(f"unknown lab host: {name}")
    entry = state["hosts"][name]
    if entry.get("pid") and is_our_nspawn(entry["pid"]):
        return
    binds = [f"--bind-ro={KEY_FILE}.pub:/root/.ssh/authorized_keys"]
    binds += [f"--bind={src}:{dest}" for src, dest in
              labconfig.host_binds(config, host, host_dir(host)).items()]
    start_machine(config, host, state, rootfs.ensure_rootfs(log=log), binds)
    record(state, "start")
    wait_ready(config, [host])


def cmd_link(name: str, updown: str) -> None:
    state, _config = current_config()
    entry = state["hosts"].get(name)
    if entry is None:
        raise LabError(f"unknown lab host: {name}")
    run("ip", "link", "set", entry["veth"], updown)


def cmd_status() -> int:
    state = load_state()
    if state is None:
        print("lab: down")
        return 1
    config = labconfig.LabConfig.from_dict(state["config"])
    problems = 0
    print(f"{'host':8} {'ip':14} {'pid':>8}  {'ssh':5} detail")
    for host in config.hosts:
        pid = state["hosts"].get(host.name, {}).get("pid")
        alive = bool(pid) and is_our_nspawn(pid)
        ssh = alive and wait_port(host.ip, 22, time.monotonic() + 1)
        detail = labconfig.describe(host) if ssh else "-"
        problems += 0 if ssh else 1
        print(f"{host.name:8} {host.ip:14} {pid or '-':>8}  {'up' if ssh else 'DOWN':5} {detail}")
    print(f"load balancer: {config.lb_url}   prometheus: {config.prometheus_url or '- (LAB_MONITORING=0)'}")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up")
    sub.add_parser("down")
    sub.add_parser("status")
    reset = sub.add_parser("reset")
    reset.add_argument("hosts", nargs="*")
    for name in ("kill", "start"):
        sub.add_parser(name).add_argument("host")
    link = sub.add_parser("link")
    link.add_argument("host")
    link.add_argument("updown", choices=["up", "down"])
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            cmd_up(labconfig.LabConfig.from_env())
        elif args.command == "down":
            cmd_down()
        elif args.command == "status":
            return cmd_status()
        elif args.command == "reset":
            cmd_reset(args.hosts)
        elif args.command == "kill":
            cmd_kill(args.host)
        elif args.command == "start":
            cmd_start(args.host)
        elif args.command == "link":
            cmd_link(args.host, args.updown)
    except (LabError, RuntimeError, ValueError) as exc:
        log(f"lab: error: {exc}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
