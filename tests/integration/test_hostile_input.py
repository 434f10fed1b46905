"""Hostile input on the lab: playbooks/deploy.yml and the release role refuse
each one with a clear message, before anything changes (issue 7).

One reset lab serves every case, because no case may change it: after each
run the test compares every app host's release store (current, history.json
byte for byte, releases/, nothing left in incoming/ or a temp dir, nothing
where an archive tried to write), HAProxy's servers (sampled every 0.2 s
during the run, so a drain that was undone still counts), the fleet lock and
the traffic recorder's failed requests with what they were before.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import json
import os
import pathlib
import tarfile
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import REPO, ansible_playbook, failed_requests, lab_cli
from test_rolling import LOCK_FILE, RotationSampler

DEPLOY = os.path.join(REPO, "playbooks", "deploy.yml")
RELEASE = os.path.join(REPO, "tests", "integration", "playbooks", "release.yml")
HOSTS = ["web1", "web2", "web3", "web4", "web5", "web6"]
MARKER = "sd-hostile"  # every file a hostile input tries to create is named so
# What a release store and the places around it look like, as one shell command.
STATE = (
    "cd /opt/demoapp && readlink current; sha256sum .safedeploy/history.json; "
    "ls -A releases; echo incoming:; ls -A .safedeploy/incoming 2>/dev/null; "
    f"echo escaped:; ls -d /tmp/{MARKER}* /{MARKER}* /opt/{MARKER}* /etc/{MARKER}* 2>/dev/null; true"
)


def flat(text: str) -> str:
    return " ".join(text.split())


def archive(members: list[tuple[str, str, bytes | str]]) -> bytes:
    """A .tar.gz laid out like tests/lab/build_artifacts.py's, plus hostile members."""
    source = pathlib.Path(REPO, "tests", "lab", "app", "demoapp.py").read_bytes()
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, kind, payload in [("demoapp.py", "file", source), *members]:
            info = tarfile.TarInfo(name)
            info.mtime, info.mode = 1704067200, 0o755
            if kind == "file":
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
            else:
                info.type = {"symlink": tarfile.SYMTYPE, "fifo": tarfile.FIFOTYPE}[kind]
                info.linkname = payload if kind == "symlink" else ""
                tar.addfile(info)
    return gzip.compress(raw.getvalue(), mtime=0)


def write(tmp_path, name: str, data: bytes) -> tuple[str, str]:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path), "sha256:" + hashlib.sha256(data).hexdigest()


class Fleet:
    """What a hostile input must not change, read from the lab."""

    def __init__(self, lab):
        self.lab = lab

    def stores(self) -> dict[str, str]:
        with ThreadPoolExecutor(len(HOSTS)) as pool:
            return dict(zip(HOSTS, pool.map(lambda host: self.lab.ssh(host, STATE).stdout, HOSTS)))

    def servers(self) -> dict[str, tuple]:
        return {name: (s["admin_state"], s["weight"], s["status"].split()[0])
                for name, s in self.lab.haproxy_servers().items()}

    def lock(self) -> str:
        return self.lab.ssh("lb1", f"ls {LOCK_FILE} 2>/dev/null; true").stdout.strip()


@pytest.fixture(scope="module")
def baseline(lab):
    """The lab reset once for the whole module; the state every case must leave as it was."""
    lab_cli("reset")
    lab.refresh()
    for leftover in (f"/tmp/{MARKER}-pwned",):
        if os.path.exists(leftover):
            os.unlink(leftover)
    fleet = Fleet(lab)
    before = {"stores": fleet.stores(), "servers": fleet.servers(), "lock": fleet.lock()}
    assert before["lock"] == ""
    assert {store.splitlines()[0] for store in before["stores"].values()} == {"releases/1.0.0"}
    assert {state[:2] for state in before["servers"].values()} == {("ready", 100)}, before["servers"]
    return fleet, before


def run_hostile(baseline, traffic, playbook: str, *args: str, **extra):
    """Run the playbook; assert it failed and changed nothing; return its flattened output."""
    fleet, before = baseline
    mark = len(traffic.records)
    with RotationSampler(fleet.lab) as sampler:
        run = ansible_playbook(playbook, *args, extra_vars=extra)
    text = flat(run.stdout)
    assert run.returncode != 0, run.stdout[-3000:]
    assert sampler.samples and sampler.max_out == 0, [s for s in sampler.samples if s[1]][:5]  # nobody drained
    assert fleet.servers() == before["servers"]
    assert fleet.stores() == before["stores"]
    assert fleet.lock() == "", "the fleet lock was left behind"
    assert not os.path.exists(f"/tmp/{MARKER}-pwned")
    assert failed_requests(traffic, mark) == []
    print(f"{playbook.rsplit('/', 1)[-1]} {json.dumps(extra)[:80]}: failed in {run.elapsed:.1f} s, "
          f"{len(traffic.records) - mark} requests, none failed")
    return text, run


def test_socket_of_the_runtime_api_is_not_world_accessible(lab):
    mode = lab.ssh("lb1", "stat -c '%a %U %G %F' /run/haproxy/admin.sock").stdout.split()
    assert mode[:3] == ["660", "root", "haproxy"] and mode[3] == "socket", mode
    refused = lab.ssh("lb1", "runuser -u nobody -- python3 -c \"import socket; "
                             "socket.socket(socket.AF_UNIX).connect('/run/haproxy/admin.sock')\"", check=False)
    assert refused.returncode != 0 and "PermissionError" in refused.stderr, refused.stderr


def test_deploy_refuses_a_traversal_archive_before_the_lock_holder_drains_anything(baseline, traffic, tmp_path):
    # The checksum is right: only reading the archive through shows what it would do.
    escape = "../" * 8 + f"tmp/{MARKER}-escaped"
    src, checksum = write(tmp_path, "demoapp-9.9.9.tar.gz", archive([(escape, "file", b"pwned\n")]))
    text, _run = run_hostile(baseline, traffic, DEPLOY, deploy_version="9.9.9", deploy_artifact=src,
                             deploy_artifact_checksum=checksum)
    assert (f"the artifact {src} of demoapp 9.9.9 is not safe to unpack, no host was changed: refusing to unpack "
            f"{src} for version '9.9.9': archive member '{escape}' contains a '..' component") in text, text[-2000:]
    # It got past the lock, and released it.
    assert "Lock | Take the fleet lock demoapp-fleet" in text and "Unlock | Release the fleet lock" in text


def test_deploy_refuses_a_wrong_checksum(baseline, traffic, tmp_path):
    src, checksum = write(tmp_path, "demoapp-2.0.0.tar.gz",
                          pathlib.Path(REPO, "build", "artifacts", "demoapp-2.0.0.tar.gz").read_bytes())
    published = "sha256:" + hashlib.sha256(b"what the release notes say").hexdigest()
    text, _run = run_hostile(baseline, traffic, DEPLOY, deploy_version="2.0.0", deploy_artifact=src,
                             deploy_artifact_checksum=published)
    assert (f"checksum mismatch: the artifact {src} has {checksum} but deploy_artifact_checksum is {published}"
            in text), text[-2000:]


@pytest.mark.parametrize("version", ["2.0.0/../../../etc", f"2.0.0;touch /tmp/{MARKER}-pwned",
                                     f"$(touch /tmp/{MARKER}-pwned)"])
def test_deploy_refuses_hostile_versions_before_taking_the_lock(baseline, traffic, version):
    text, _run = run_hostile(baseline, traffic, DEPLOY, deploy_version=version,
                             deploy_artifact_checksum="sha256:" + "0" * 64)
    assert f"deploy_version {json.dumps(version)} is not a valid version string" in text, text[-2000:]
    assert "Take the fleet lock" not in text


def test_deploy_without_a_load_balancer_group_fails_clearly(baseline, traffic, tmp_path):
    # An inventory layered over the lab's that points the strategy at a group that does not exist.
    override = tmp_path / "override.yml"
    override.write_text("all:\n  vars:\n    deploy_lb_group: haproxy_lbs\n")
    text, _run = run_hostile(baseline, traffic, DEPLOY, "-i", str(override), deploy_version="2.0.0")
    assert "the strategy needs a load balancer: inventory group 'haproxy_lbs' is empty or missing" in text, text[-2000:]
    assert "Take the fleet lock" not in text


def test_deploy_with_a_backend_that_does_not_exist_fails_clearly(baseline, traffic):
    text, _run = run_hostile(baseline, traffic, DEPLOY, deploy_version="2.0.0", deploy_lb_backend="nosuchbackend")
    assert "6 server(s) missing from the load balancers:" in text, text[-2000:]
    assert "nosuchbackend/web1 on lb1: HAProxy (/run/haproxy/admin.sock) has no backend 'nosuchbackend'" in text
    assert "Unlock | Release the fleet lock" in text


def test_release_role_on_a_host_refuses_hostile_artifacts_and_leaves_nothing(baseline, traffic, tmp_path):
    """The release role alone (no preflight): its own checks, then the release module on the host."""
    escape = "../" * 8 + f"tmp/{MARKER}-escaped"
    src, checksum = write(tmp_path, "demoapp-9.9.9.tar.gz", archive([(escape, "file", b"pwned\n")]))
    incoming = "/opt/demoapp/.safedeploy/incoming/demoapp-9.9.9.tar.gz"
    text, _run = run_hostile(baseline, traffic, RELEASE, "--limit", "web1", deploy_version="9.9.9",
                             deploy_artifact=src, deploy_artifact_checksum=checksum)
    assert (f"refusing to unpack {incoming} for version '9.9.9': archive member '{escape}' contains a '..' "
            "component") in text, text[-2000:]

    text, _run = run_hostile(baseline, traffic, RELEASE, "--limit", "web1", deploy_version="../../etc",
                             deploy_artifact=src, deploy_artifact_checksum=checksum)
    assert 'release: release_version "../../etc" is not a valid version' in text, text[-2000:]


@pytest.mark.parametrize("case", ["traversal", "wrong-checksum"])
def test_a_refused_artifact_leaves_a_new_hosts_app_root_as_it_was(baseline, traffic, tmp_path, case):
    """A host the collection never deployed to (its app root does not exist yet): nothing is created."""
    fresh = f"/srv/{MARKER}-fresh"
    escape = "../" * 8 + f"tmp/{MARKER}-escaped"
    src, checksum = write(tmp_path, "demoapp-9.9.9.tar.gz", archive([(escape, "file", b"pwned\n")]))
    if case == "wrong-checksum":
        checksum = "sha256:" + "0" * 64
    lab = baseline[0].lab
    assert lab.ssh("web1", f"test -e {fresh}", check=False).returncode == 1
    text, _run = run_hostile(baseline, traffic, RELEASE, "--limit", "web1", deploy_version="9.9.9",
                             deploy_artifact=src, deploy_artifact_checksum=checksum, deploy_app_root=fresh)
    expected = "contains a '..' component" if case == "traversal" else "checksum mismatch"
    assert expected in text, text[-2000:]
    left = lab.ssh("web1", f"ls -a {fresh} 2>&1; true").stdout
    assert "No such file or directory" in left, f"{fresh} on web1 after a refused artifact: {left}"


def test_deploy_reads_a_url_artifact_through_before_anything_is_drained(baseline, traffic, tmp_path):
    """A hostile archive behind a URL (release_download_on: controller, the default): preflight downloads it
    once on the controller and refuses it there, before the first host is drained."""
    escape = "../" * 8 + f"tmp/{MARKER}-escaped"
    _src, checksum = write(tmp_path, "demoapp-9.9.9.tar.gz", archive([(escape, "file", b"pwned\n")]))
    cache = tmp_path / "downloads"
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/demoapp-9.9.9.tar.gz"
        text, _run = run_hostile(baseline, traffic, DEPLOY, deploy_version="9.9.9", deploy_artifact=url,
                                 deploy_artifact_checksum=checksum, release_download_dir=str(cache))
    finally:
        server.shutdown()
    assert (f"the artifact {url} of demoapp 9.9.9 is not safe to unpack, no host was changed: "
            f"refusing to unpack {cache}/demoapp-9.9.9.tar.gz for version '9.9.9': archive member '{escape}' "
            "contains a '..' component") in text, text[-2000:]
    assert list(cache.iterdir()) == [], "the refused download stayed in the controller's download folder"
