"""The lab is a real fleet: separate machines, a real LB, real traffic."""

from __future__ import annotations

import os
import subprocess
import time

from conftest import LAB_DIR, lab_cli

import lab as labmod
from traffic import TrafficRecorder


def test_traffic_through_haproxy_reaches_every_host_without_failure(fresh_lab):
    summary = TrafficRecorder(fresh_lab.lb_url, rate=200, max_requests=1200, duration=30).run()
    assert summary.total >= 1200
    assert summary.failed == 0, summary.errors
    hosts = summary.hosts
    assert set(hosts) == {h.name for h in fresh_lab.app_hosts}, hosts
    # Round robin over six healthy servers: each gets a fair share.
    fair = summary.total / len(hosts)
    assert all(count > fair * 0.5 for count in hosts.values()), hosts
    assert set(summary.versions) == {"1.0.0"}


def test_hosts_are_separate_machines(lab):
    web1, web2 = lab.app_hosts[0], lab.app_hosts[1]
    # Own IP address on its own interface.
    for host in (web1, web2):
        out = lab.ssh(host.name, "ip -4 -o addr show dev eth0").stdout
        assert f" {host.ip}/" in out
        assert lab.ssh(host.name, "hostname").stdout.strip() == host.name
    # Own filesystem: a file written on web1 is absent on web2.
    marker = f"/root/marker-{time.time_ns()}"
    lab.ssh(web1.name, f"echo web1 > {marker}")
    assert lab.ssh(web1.name, f"cat {marker}").stdout.strip() == "web1"
    assert lab.ssh(web2.name, f"test -e {marker}", check=False).returncode == 1
    assert not os.path.exists(marker)
    # systemd is PID 1 and the system is running.
    assert lab.ssh(web1.name, "cat /proc/1/comm").stdout.strip() == "systemd"
    state = lab.ssh(web1.name, "systemctl is-system-running", check=False).stdout.strip()
    assert state in ("running", "degraded"), state
    assert lab.ssh(web1.name, "systemctl is-active demoapp").stdout.strip() == "active"
    # Reachable only over SSH: sshd and the app are the only listeners, and
    # the machines are not registered with machined (no machinectl shell).
    listening = lab.ssh(web1.name, "ss -Htln").stdout
    ports = {line.split()[3].rsplit(":", 1)[1] for line in listening.splitlines()}
    assert ports == {"22", "8080"}, listening
    assert "--register=no" in open(f"/proc/{lab.state['hosts']['web1']['pid']}/cmdline").read().replace("\0", " ")


def test_reset_gives_clean_hosts_in_seconds(lab):
    lab.ssh("web1", "touch /root/dirty && mkdir -p /opt/demoapp/releases/junk")
    started = time.monotonic()
    lab_cli("reset")
    elapsed = time.monotonic() - started
    assert lab.ssh("web1", "test -e /root/dirty", check=False).returncode == 1
    assert lab.ssh("web1", "test -e /opt/demoapp/releases/junk", check=False).returncode == 1
    assert lab.version_on("web1") == "1.0.0"
    assert elapsed < 30, f"reset took {elapsed:.1f} s"


def test_lab_refuses_to_run_without_root_and_changes_nothing(lab):
    before = labmod.load_state()
    result = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                             "/usr/bin/python3", os.path.join(LAB_DIR, "lab.py"), "up"],
                            text=True, capture_output=True)
    assert result.returncode == 2
    assert "must run as root" in result.stderr
    assert labmod.load_state() == before
    assert lab_cli("status", check=False).returncode == 0


def test_lab_names_missing_debian_packages(lab, tmp_path):
    # A PATH without debootstrap and nspawn, as on a machine that lacks them.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("ip", "ssh", "ssh-keygen", "chroot"):
        real = subprocess.run(["which", tool], capture_output=True, text=True).stdout.strip()
        os.symlink(real, bindir / tool)
    result = lab_cli("up", env={"PATH": str(bindir)}, check=False)
    assert result.returncode == 2
    assert "debootstrap" in result.stderr and "systemd-container" in result.stderr
    assert lab_cli("status", check=False).returncode == 0  # the running lab is untouched


def test_lab_refuses_a_subnet_already_in_use(lab, tmp_path):
    iface = "sdtaken0"
    subprocess.run(["ip", "link", "add", iface, "type", "bridge"], check=True)
    try:
        subprocess.run(["ip", "addr", "add", "10.214.0.7/24", "dev", iface], check=True)
        result = lab_cli("up", env={"LAB_SUBNET": "10.214.0.0/24", "LAB_BRIDGE": "sdlabt0",
                                    "LAB_STATE_DIR": str(tmp_path)}, check=False)
        assert result.returncode == 2
        assert "10.214.0.7" in result.stderr and "already in the lab subnet" in result.stderr
        assert not os.path.exists("/sys/class/net/sdlabt0")
        assert not os.path.exists(tmp_path / "state.json")
    finally:
        subprocess.run(["ip", "link", "del", iface], check=False)
