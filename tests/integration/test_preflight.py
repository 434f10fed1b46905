"""preflight on the lab: passes on a healthy fleet, fails before anything changes."""

from __future__ import annotations

import os
import sys

from conftest import REPO, ansible_playbook, lab_cli, recap

PLAYBOOK = os.path.join(REPO, "tests", "integration", "playbooks", "preflight.yml")
BAD_SUM = "sha256:" + "0" * 64


def flat(result) -> str:
    """The output with every run of whitespace made one space (YAML output wraps)."""
    return " ".join(result.stdout.split())


def preflight(check: bool = False, **extra):
    return ansible_playbook(PLAYBOOK, extra_vars={"deploy_version": "1.0.0", **extra}, check=check)


def lb_view(lab) -> dict:
    """What a deploy could change on the LB: each server's admin state and weight."""
    return {name: (s["admin_state"], s["weight"]) for name, s in lab.haproxy_servers().items()}


def set_server_state(lab, name: str, state: str) -> None:
    sys.path.insert(0, os.path.join(REPO, "build", "collections"))
    from ansible_collections.safedeploy.fleet.plugins.module_utils import _haproxy

    _haproxy.HAProxyClient(lab.admin_socket()).set_state("demoapp", name, state)


def assert_failed_without_change(result, lab, before: dict, *messages: str) -> None:
    assert result.returncode != 0, result.stdout
    text = flat(result)
    for message in messages:
        assert message in text, text[-3000:]
    assert all(stats["changed"] == 0 for stats in recap(result.stdout).values()), result.stdout
    assert lb_view(lab) == before


def test_passes_on_a_healthy_fleet_and_prints_the_plan(fresh_lab):
    before = lb_view(fresh_lab)
    for check in (True, False):
        result = preflight(check=check)
        assert result.returncode == 0, result.stdout
        text = flat(result)
        assert "Rolling plan: 6 hosts in 6 batches (backend of 6 servers; at most 1 out of rotation)" in text
        for number, host in enumerate(["web1", "web2", "web3", "web4", "web5", "web6"], start=1):
            assert f"batch {number}/6 1 host {host}" in text, text
        assert "preflight_plan: - - web1 - - web2" in text
        assert all(stats["changed"] == 0 for stats in recap(result.stdout).values())
        assert lb_view(fresh_lab) == before
        print(f"preflight (check={check}) took {result.elapsed:.1f} s")
        assert result.elapsed < 30


def test_bigger_batches_within_capacity(lab):
    result = preflight(preflight_serial=[2], preflight_max_unavailable=2)
    assert result.returncode == 0, result.stdout
    assert "Rolling plan: 6 hosts in 3 batches" in flat(result)


def test_fails_on_a_bad_version_string(lab):
    before = lb_view(lab)
    result = preflight(deploy_version="1.0 bad;rm", deploy_artifact_checksum=BAD_SUM)
    assert_failed_without_change(
        result,
        lab,
        before,
        'deploy_version "1.0 bad;rm" is not a valid version string: it must match ^[A-Za-z0-9][A-Za-z0-9._+-]*$',
    )


def test_fails_on_a_bad_app_name(lab):
    before = lb_view(lab)
    result = preflight(deploy_app="../etc")
    assert_failed_without_change(result, lab, before, 'deploy_app "../etc" is not a valid application name')


def test_fails_on_a_checksum_mismatch(lab):
    before = lb_view(lab)
    result = preflight(deploy_artifact_checksum=BAD_SUM)
    assert_failed_without_change(
        result, lab, before, "checksum mismatch: the artifact", f"but deploy_artifact_checksum is {BAD_SUM}"
    )


def test_fails_on_a_missing_artifact(lab):
    before = lb_view(lab)
    result = preflight(deploy_artifact="/nonexistent/demoapp-1.0.0.tar.gz", deploy_artifact_checksum=BAD_SUM)
    assert_failed_without_change(
        result,
        lab,
        before,
        "the artifact /nonexistent/demoapp-1.0.0.tar.gz of demoapp 1.0.0 does not exist on the controller",
    )


def test_fails_when_the_plan_exceeds_capacity(lab):
    before = lb_view(lab)
    result = preflight(preflight_serial=[3])
    assert_failed_without_change(
        result,
        lab,
        before,
        "batch 1 would take 3 of 6 servers out of rotation (web1, web2, web3); preflight_max_unavailable allows",
    )


def test_fails_without_enough_disk(lab):
    before = lb_view(lab)
    result = preflight(preflight_min_free_mb=10**9)
    assert_failed_without_change(
        result, lab, before, "not enough free disk to unpack demoapp 1.0.0", "web1 has", "MB free on"
    )


def test_stranded_drained_server_fails_then_is_restored(fresh_lab):
    lab = fresh_lab
    set_server_state(lab, "web2", "drain")
    before = lb_view(lab)
    result = preflight()
    assert_failed_without_change(
        result,
        lab,
        before,
        "1 server(s) were left out of rotation, probably by an interrupted deploy: demoapp/web2 on lb1 is drain",
        "-e preflight_restore_stranded=true",
    )
    assert lab.haproxy_servers()["web2"]["admin_state"] == "drain"

    # Check mode with restore: reported, nothing changes.
    result = preflight(check=True, preflight_restore_stranded=True)
    assert result.returncode == 0, result.stdout
    assert lab.haproxy_servers()["web2"]["admin_state"] == "drain"

    result = preflight(preflight_restore_stranded=True)
    assert result.returncode == 0, result.stdout
    assert "putting them back in rotation" in flat(result)
    assert recap(result.stdout)["web2"]["changed"] == 1
    web2 = lab.haproxy_servers()["web2"]
    assert (web2["admin_state"], web2["operational_state"]) == ("ready", "UP")


def test_fails_on_an_unhealthy_host(fresh_lab):
    lab = fresh_lab
    lab.ssh("web3", "systemctl stop demoapp")
    before = lb_view(lab)
    result = preflight()
    assert_failed_without_change(
        result, lab, before, "the fleet is not healthy right now, 1 host(s) failed their readiness check: web3 ("
    )


def test_fails_when_a_runtime_api_is_unreachable(fresh_lab):
    lab = fresh_lab
    lab.ssh("lb1", "systemctl stop haproxy")
    result = preflight()
    assert result.returncode != 0
    text = flat(result)
    assert (
        "the HAProxy runtime API is not usable at level admin on 1 load balancer(s): lb1 (/run/haproxy/admin.sock)"
    ) in text
    assert all(stats["changed"] == 0 for stats in recap(result.stdout).values())
    lab.ssh("lb1", "systemctl start haproxy")


def test_fails_listing_unreachable_hosts(fresh_lab):
    lab = fresh_lab
    before = lb_view(lab)
    lab_cli("link", "web6", "down")
    try:
        result = preflight()
    finally:
        lab_cli("link", "web6", "up")
    assert_failed_without_change(result, lab, before, "1 host(s) cannot be reached: web6 (")


def test_fails_clearly_without_a_load_balancer(lab):
    before = lb_view(lab)
    result = preflight(deploy_lb_group="nolb")
    assert_failed_without_change(
        result, lab, before, "the strategy needs a load balancer: inventory group 'nolb' is empty or missing"
    )


def test_fails_when_a_server_is_missing_from_the_backend(lab):
    server = "web9"
    before = lb_view(lab)
    # web1's server is named web9 in this run: HAProxy has no such server.
    result = ansible_playbook(
        PLAYBOOK, "-e", "deploy_version=1.0.0", "-e", "target=web1", "-e", f"deploy_lb_server={server}"
    )
    assert_failed_without_change(
        result, lab, before, f"1 server(s) missing from the load balancers: demoapp/{server} on lb1"
    )
