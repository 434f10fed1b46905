# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""history.json: locking, atomic writes, concurrent writers, damaged files."""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os
import tarfile

import pytest
from ansible_collections.safedeploy.fleet.plugins.module_utils import _release as rel
from ansible_collections.safedeploy.fleet.plugins.module_utils._release import (
    HistoryError,
    LockTimeoutError,
    ReleaseStore,
    apply,
)

WRITERS = 20


def _append_activations(root, worker, count, barrier):
    store = ReleaseStore(root)
    barrier.wait()
    for i in range(count):
        with store.locked(timeout=60):
            hist = store.load_history()
            rel.record_activation(hist, f"w{worker}-{i}", "0" * 64, f"worker-{worker}", None)
            store.save_history(hist)


def _unpack(root, version, src, checksum, barrier):
    barrier.wait()
    apply(root, version, "present", src=src, checksum=checksum, actor=f"proc-{version}")


def _run_all(target, argsets):
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(len(argsets))
    procs = [ctx.Process(target=target, args=(*args, barrier)) for args in argsets]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
    assert [p.exitcode for p in procs] == [0] * len(procs)


def _load(root):
    with open(os.path.join(root, ".safedeploy", "history.json")) as handle:
        return json.load(handle)  # must be valid JSON


def test_concurrent_writers_lose_nothing(tmp_path):
    root = str(tmp_path / "app")
    ReleaseStore(root).ensure_layout()
    _run_all(_append_activations, [(root, w, 5) for w in range(WRITERS)])
    hist = _load(root)
    versions = [entry["version"] for entry in hist["history"]]
    assert len(versions) == WRITERS * 5
    assert set(versions) == {f"w{w}-{i}" for w in range(WRITERS) for i in range(5)}
    assert hist["seq"] == WRITERS * 5 * 2  # unpack + activation each
    # No temp files left beside it.
    assert sorted(os.listdir(os.path.join(root, ".safedeploy"))) == ["history.json", "lock"]


def test_concurrent_module_runs_record_every_release(tmp_path):
    root = str(tmp_path / "app")
    argsets = []
    for i in range(WRITERS):
        src = tmp_path / f"a{i}.tar"
        with tarfile.open(src, "w") as tar:
            data = f"release {i}".encode()
            member = tarfile.TarInfo("VERSION")
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
        checksum = "sha256:" + hashlib.sha256(src.read_bytes()).hexdigest()
        argsets.append((root, f"1.{i}", str(src), checksum))
    _run_all(_unpack, argsets)
    hist = _load(root)
    assert sorted(hist["releases"]) == sorted(f"1.{i}" for i in range(WRITERS))
    assert sorted(r["order"] for r in hist["releases"].values()) == list(range(1, WRITERS + 1))
    assert sorted(os.listdir(os.path.join(root, "releases"))) == sorted(hist["releases"])


def test_lock_times_out_with_a_clear_error(tmp_path):
    root = str(tmp_path / "app")
    store = ReleaseStore(root)
    store.ensure_layout()
    with store.locked():
        # flock() locks belong to the open file, so a second open conflicts
        # even inside this process.
        with pytest.raises(LockTimeoutError, match=r"\.safedeploy/lock"):
            apply(root, "1.0", "absent", lock_timeout=0.2)


def test_corrupt_history_is_reported_not_overwritten(tmp_path):
    root = str(tmp_path / "app")
    store = ReleaseStore(root)
    store.ensure_layout()
    with open(store.history_path, "w") as handle:
        handle.write('{"releases": {"1.0": ')
    with pytest.raises(HistoryError, match="not valid JSON"):
        apply(root, "1.0", "good")
    with pytest.raises(HistoryError, match="not valid JSON"):
        rel.info(root)
    with open(store.history_path) as handle:
        assert handle.read() == '{"releases": {"1.0": '


@pytest.mark.parametrize("content", ['[]', '{"releases": []}', '{"releases": {}, "history": {}}'])
def test_wrong_shape_history(tmp_path, content):
    store = ReleaseStore(str(tmp_path / "app"))
    store.ensure_layout()
    with open(store.history_path, "w") as handle:
        handle.write(content)
    with pytest.raises(HistoryError, match="expected structure"):
        store.load_history()


def test_newer_format_is_refused(tmp_path):
    store = ReleaseStore(str(tmp_path / "app"))
    store.ensure_layout()
    with open(store.history_path, "w") as handle:
        json.dump({"format": 99, "releases": {}, "history": []}, handle)
    with pytest.raises(HistoryError, match="format 99"):
        store.load_history()


def test_save_is_atomic_on_failure(tmp_path, monkeypatch):
    store = ReleaseStore(str(tmp_path / "app"))
    store.ensure_layout()
    store.save_history(rel.empty_history())
    with open(store.history_path) as handle:
        before = handle.read()

    def broken_dump(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(rel.json, "dump", broken_dump)
    with pytest.raises(OSError):
        store.save_history({"releases": {"x": {}}, "history": []})
    with open(store.history_path) as handle:
        assert handle.read() == before
    assert sorted(os.listdir(store.meta_dir)) == ["history.json"]


def test_history_is_bounded():
    hist = rel.empty_history()
    for i in range(rel.MAX_HISTORY_ENTRIES + 50):
        rel.record_activation(hist, "1.0" if i % 2 else "2.0", "0" * 64, "t", None)
    assert len(hist["history"]) == rel.MAX_HISTORY_ENTRIES
    assert set(hist["releases"]) == {"1.0", "2.0"}


def test_verdict_applies_to_the_same_content_only():
    hist = rel.empty_history()
    rel.record_unpack(hist, "1.0", "a" * 64, "t")
    rel.record_activation(hist, "1.0", "a" * 64, "t", None)
    rel.record_removal(hist, "1.0")
    # Same version number, new content after removal: old log entries keep their verdict.
    rel.record_unpack(hist, "1.0", "b" * 64, "t")
    rel.record_activation(hist, "1.0", "b" * 64, "t", None)
    rel.record_verdict(hist, "1.0", "bad", "t")
    assert [e["verdict"] for e in hist["history"]] == ["pending", "bad"]


def test_last_good_is_newest_activated_good():
    hist = rel.empty_history()
    for v in ["1", "2"]:
        rel.record_unpack(hist, v, None, "t")
    rel.record_activation(hist, "2", None, "t", None)
    rel.record_activation(hist, "1", None, "t", "2")
    rel.record_unpack(hist, "3", None, "t")  # newest by unpack order, never activated
    for v in ["2", "1", "3"]:
        rel.record_verdict(hist, v, "good", "t")
    assert rel.last_good(hist) == "1"  # only activated releases count
    assert rel.rollback_candidate(hist, "1", {"1", "2"}) == "2"
    assert rel.rollback_candidate(hist, "1", {"1", "2", "3"}) == "3"
    rel.record_verdict(hist, "3", "bad", "t")
    assert rel.rollback_candidate(hist, "1", {"1", "2", "3"}) == "2"
    rel.record_verdict(hist, "2", "bad", "t")
    assert rel.rollback_candidate(hist, "1", {"1", "2", "3"}) is None
