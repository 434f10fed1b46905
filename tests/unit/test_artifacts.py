"""tests/lab/build_artifacts.py: reproducible demoapp release artifacts."""

import hashlib
import http.client
import importlib.util
import json
import os
import re
import subprocess
import sys
import tarfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(ROOT, "tests", "lab", "build_artifacts.py")
APP = os.path.join(ROOT, "tests", "lab", "app", "demoapp.py")

_spec = importlib.util.spec_from_file_location("lab_build_artifacts", BUILD)
build_artifacts = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build_artifacts)

EXPECTED = {
    "1.0.0": "good",
    "2.0.0": "good",
    "3.0.0": "good",
    "2.1.0-never-ready": "never_ready",
    "2.1.0-crash": "crash",
    "2.1.0-errors": "errors",
    "2.1.0-errors5": "errors",
    "2.1.0-slow": "slow",
    "2.1.0-degraded": "degraded",
    "2.0.0-nograceful": "nograceful",
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("artifacts")
    return str(out), build_artifacts.build_all(str(out))


def sha256(path):
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def test_index_and_names(built):
    out, index = built
    assert {v: e["flavour"] for v, e in index.items()} == EXPECTED
    names = sorted(f for f in os.listdir(out))
    expected = sorted([f"demoapp-{v}.tar.gz" for v in EXPECTED]
                      + [f"demoapp-{v}.tar.gz.sha256" for v in EXPECTED]
                      + ["index.json"])
    assert names == expected
    with open(os.path.join(out, "index.json")) as fh:
        assert json.load(fh) == index
    for version, entry in index.items():
        assert entry["file"] == f"demoapp-{version}.tar.gz"
        path = os.path.join(out, entry["file"])
        assert sha256(path) == entry["sha256"]
        with open(path + ".sha256") as fh:
            assert fh.read() == f"{entry['sha256']}  {entry['file']}\n"


def test_sha256_files_verify_with_sha256sum(built):
    out, _ignored = built
    files = sorted(f for f in os.listdir(out) if f.endswith(".sha256"))
    proc = subprocess.run(["sha256sum", "-c", *files], cwd=out, check=False,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_archive_content(built):
    out, index = built
    with open(APP, "rb") as fh:
        source = fh.read()
    for version, entry in index.items():
        with tarfile.open(os.path.join(out, entry["file"])) as tar:
            members = tar.getmembers()
            assert [m.name for m in members] == ["demoapp.py", "release.json"]
            for m in members:
                assert m.isfile()
                assert (m.uid, m.gid) == (0, 0)
                assert m.mtime == build_artifacts.MTIME
            assert members[0].mode == 0o755 and members[1].mode == 0o644
            assert tar.extractfile("demoapp.py").read() == source
            release = json.load(tar.extractfile("release.json"))
        assert release["app"] == "demoapp"
        assert release["version"] == version
        assert release["flavour"] == EXPECTED[version]
    with tarfile.open(os.path.join(out, "demoapp-2.1.0-errors.tar.gz")) as tar:
        assert json.load(tar.extractfile("release.json"))["error_ratio"] == 0.2
    with tarfile.open(os.path.join(out, "demoapp-2.1.0-errors5.tar.gz")) as tar:
        assert json.load(tar.extractfile("release.json"))["error_ratio"] == 0.05
    with tarfile.open(os.path.join(out, "demoapp-2.1.0-slow.tar.gz")) as tar:
        release = json.load(tar.extractfile("release.json"))
        assert (release["slow_ratio"], release["slow_seconds"]) == (0.05, 0.8)


def test_gzip_header_has_no_timestamp_or_name(built):
    out, index = built
    with open(os.path.join(out, index["2.0.0"]["file"]), "rb") as fh:
        header = fh.read(10)
    assert header[:2] == b"\x1f\x8b"
    assert header[4:8] == b"\x00\x00\x00\x00"  # MTIME
    assert not header[3] & 0x08  # no FNAME


def test_reproducible_across_runs(built, tmp_path):
    out, index = built
    again = build_artifacts.build_all(str(tmp_path / "again"))
    assert again == index
    for entry in index.values():
        with open(os.path.join(out, entry["file"]), "rb") as a, \
                open(str(tmp_path / "again" / entry["file"]), "rb") as b:
            assert a.read() == b.read()


def test_identical_content_is_not_rewritten(tmp_path):
    out = str(tmp_path / "a")
    build_artifacts.build_all(out)
    old = 1_000_000_000
    for name in os.listdir(out):
        os.utime(os.path.join(out, name), (old, old))
    build_artifacts.build_all(out)
    for name in os.listdir(out):
        assert os.stat(os.path.join(out, name)).st_mtime == old, name
    # a changed file is rewritten
    target = os.path.join(out, "demoapp-1.0.0.tar.gz")
    with open(target, "wb") as fh:
        fh.write(b"corrupt")
    build_artifacts.build_all(out)
    assert os.stat(target).st_mtime != old
    assert not [n for n in os.listdir(out) if n.startswith(".tmp-")]


def test_cli(tmp_path):
    out = tmp_path / "cli"
    proc = subprocess.run([sys.executable, BUILD, "--out", str(out)], check=False,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == len(EXPECTED)
    assert (out / "index.json").exists()


def test_artifact_runs(built, tmp_path):
    """Unpack an artifact like the release module would, and run it."""
    out, index = built
    dest = tmp_path / "releases" / "2.1.0-degraded"
    dest.mkdir(parents=True)
    with tarfile.open(os.path.join(out, index["2.1.0-degraded"]["file"])) as tar:
        tar.extractall(dest, filter="data")
    proc = subprocess.Popen([sys.executable, str(dest / "demoapp.py"), "--port", "0",
                             "--bind", "127.0.0.1"],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        m = re.search(r":(\d+) from", proc.stderr.readline())
        assert m
        conn = http.client.HTTPConnection("127.0.0.1", int(m.group(1)), timeout=5)
        conn.request("GET", "/")
        resp = conn.getresponse()
        assert resp.getheader("X-App-Version") == "2.1.0-degraded"
        assert json.loads(resp.read())["flavour"] == "degraded"
        conn.close()
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
