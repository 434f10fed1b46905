"""Artifact distribution on the lab (issue 9): an artifact given as a URL is
downloaded once on the controller, copied to every host with its checksum,
and not copied again to a host that already has it.

The release role's fetch step alone (bench/scale/distribute.yml) on every
app host, twice, with a ~5 MB incompressible artifact served over HTTP on
the loopback by a server that counts what it sends.
"""

from __future__ import annotations

import os
import re
import sys

import pytest
from conftest import REPO, ansible_playbook

sys.path.insert(0, os.path.join(REPO, "bench", "scale"))
from artifact import ArtifactServer, make_artifact  # noqa: E402

# Issue 9 material (artifact distribution): in make test-extended, not make test.
pytestmark = pytest.mark.extended

DISTRIBUTE = os.path.join(REPO, "bench", "scale", "distribute.yml")
VERSION = "9.5.0"
INCOMING = f"/opt/demoapp/.safedeploy/incoming/demoapp-{VERSION}.tar.gz"


@pytest.fixture
def clean_incoming(lab):
    yield
    for host in lab.app_hosts:
        lab.ssh(host.name, f"rm -f {INCOMING}", check=False)


def copied(run) -> int:
    match = re.search(r"COPY_CHANGED=(\d+)", run.stdout)
    assert match, run.stdout[-3000:]
    return int(match.group(1))


def test_downloaded_once_copied_once_per_host(lab, tmp_path, clean_incoming):
    path, sha = make_artifact(str(tmp_path / "served"), VERSION, 5)
    size = os.path.getsize(path)
    assert size > 5 * 1024 * 1024  # random payload: gzip did not shrink it
    hosts = [h.name for h in lab.app_hosts]
    with ArtifactServer(str(tmp_path / "served")) as server:
        extra = {"release_artifact": server.url(os.path.basename(path)), "release_artifact_checksum": f"sha256:{sha}",
                 "release_download_dir": str(tmp_path / "download"), "release_version": VERSION}
        first = ansible_playbook(DISTRIBUTE, extra_vars=extra)
        assert first.returncode == 0, first.stdout[-3000:]
        after_first = server.sent
        second = ansible_playbook(DISTRIBUTE, extra_vars=extra)
        assert second.returncode == 0, second.stdout[-3000:]
        after_second = server.sent

    # Downloaded once, by the controller, for every host.
    assert after_first == {"bytes": size, "requests": 1}
    assert copied(first) == len(hosts)
    for host in hosts:
        assert lab.ssh(host, f"sha256sum {INCOMING}").stdout.split()[0] == sha
    # The second run downloads nothing and copies nothing.
    assert after_second == after_first
    assert copied(second) == 0
