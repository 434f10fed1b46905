# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The release store: unpack, activate, verdicts, pruning, check mode."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import threading

import pytest
from ansible_collections.safedeploy.fleet.plugins.module_utils import _release as rel
from ansible_collections.safedeploy.fleet.plugins.module_utils._archive import (
    ArchiveTooLargeError,
    CorruptArchiveError,
    UnsafeMemberError,
)
from ansible_collections.safedeploy.fleet.plugins.module_utils._release import (
    ChecksumFormatError,
    ChecksumMismatchError,
    ChecksumRequiredError,
    ProtectedReleaseError,
    ReleaseConflictError,
    ReleaseError,
    ReleaseNotFoundError,
    SharedPathError,
    StoreLayoutError,
    UnpackError,
    VersionError,
    apply,
    info,
)


def write_artifact(path, files, symlinks=None, compression="gz"):
    """Write a tar artifact; return (path, 'sha256:<hex>')."""
    with tarfile.open(path, "w:" + compression) as tar:
        for name, data in files.items():
            member = tarfile.TarInfo(name)
            member.size = len(data)
            member.mode = 0o644
            tar.addfile(member, io.BytesIO(data))
        for name, target in (symlinks or {}).items():
            member = tarfile.TarInfo(name)
            member.type = tarfile.SYMTYPE
            member.linkname = target
            tar.addfile(member)
    with open(path, "rb") as handle:
        return str(path), "sha256:" + hashlib.sha256(handle.read()).hexdigest()


@pytest.fixture
def root(tmp_path):
    return str(tmp_path / "app")


@pytest.fixture
def artifact(tmp_path):
    def make(version, files=None, **kwargs):
        files = files or {"bin/app": f"app {version}\n".encode(), "VERSION": version.encode()}
        return write_artifact(tmp_path / f"app-{version}-{len(os.listdir(tmp_path))}.tgz", files, **kwargs)
    return make


@pytest.fixture
def deploy(root, artifact):
    """Unpack and activate a version (optionally with a verdict)."""
    def run(version, verdict=None, **kwargs):
        src, checksum = artifact(version)
        kwargs.setdefault("actor", "tester")
        result = apply(root, version, "active", src=src, checksum=checksum, **kwargs)
        if verdict:
            apply(root, version, verdict, actor="tester")
        return result
    return run


def snapshot(top):
    """Everything observable about a tree: names, types, link targets, contents, modes."""
    state = {}
    if not os.path.lexists(top):
        return state
    for dirpath, dirnames, filenames in os.walk(top):
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if os.path.islink(path):
                value = ("link", os.readlink(path))
            elif os.path.isdir(path):
                value = ("dir", st.st_mode)
            else:
                with open(path, "rb") as handle:
                    value = ("file", st.st_mode, handle.read())
            state[os.path.relpath(path, top)] = value
    return state


def history(root):
    with open(os.path.join(root, ".safedeploy", "history.json")) as handle:
        return json.load(handle)


# -- version / parameter validation --------------------------------------------


@pytest.mark.parametrize("version", ["1.0", "2.1.0-rc.1", "v1_2+build.5", "20250131T0912", "A"])
def test_valid_versions(version):
    assert rel.validate_version(version) == version


@pytest.mark.parametrize(
    "version",
    ["", ".", "..", "../x", "a/b", "/abs", "a\\b", "1..2", ".hidden", "-rf", "_x",
     "1.0;rm -rf /", "1 0", " 1.0", "$(id)", "`id`", "1.0|cat", "a&b", "1.0\n", "x" * 129,
     "é1", "1.0*", "a>b"],
)
def test_invalid_versions_are_refused_with_the_value(root, version):
    with pytest.raises(VersionError) as info_:
        apply(root, version, "present")
    assert repr(version) in str(info_.value)
    assert not os.path.exists(root)


@pytest.mark.parametrize("checksum", ["", "abc", "sha256:123", "md5:" + "0" * 32,
                                      "sha256:" + "g" * 64, "sha256:" + "0" * 65, "SKIP"])
def test_malformed_checksum(root, artifact, checksum):
    src = artifact("1.0")[0]
    with pytest.raises(ChecksumFormatError, match="malformed") as info_:
        apply(root, "1.0", "active", src=src, checksum=checksum)
    assert repr(checksum) in str(info_.value)
    assert not os.path.exists(root)


@pytest.mark.parametrize("paths", [["/etc"], ["../up"], ["a/../../b"], [""], ["."], ["a", "a/b"]])
def test_bad_shared_paths(root, artifact, paths):
    src, checksum = artifact("1.0")
    with pytest.raises(SharedPathError):
        apply(root, "1.0", "active", src=src, checksum=checksum, shared_paths=paths)


@pytest.mark.parametrize("keep", [0, 1, -3, True])
def test_keep_must_be_at_least_two(root, keep):
    with pytest.raises(ReleaseError, match="keep must be"):
        apply(root, "1.0", "present", keep=keep)


def test_relative_path_refused():
    with pytest.raises(ReleaseError, match="absolute"):
        apply("opt/app", "1.0", "present")


def test_default_actor(monkeypatch):
    assert rel.default_actor({"SAFEDEPLOY_ACTOR": "awx:job/42", "USER": "x"}) == "awx:job/42"
    assert rel.default_actor({"SUDO_USER": "alice", "USER": "root"}).startswith("alice@")
    assert rel.default_actor({"USER": "bob"}).startswith("bob@")


# -- unpack and activate --------------------------------------------------------


def test_unpack_and_activate_layout(root, artifact):
    src, checksum = artifact("1.0")
    result = apply(root, "1.0", "active", src=src, checksum=checksum, actor="alice@ctl")
    assert result["changed"] is True
    assert result["current"] == "1.0" and result["previous_current"] is None
    assert result["release_path"] == os.path.join(root, "releases", "1.0")
    assert result["sha256"] == checksum.split(":")[1]
    assert result["warnings"] == []
    # Relative symlink, so the tree can be moved or bind-mounted.
    assert os.readlink(os.path.join(root, "current")) == "releases/1.0"
    with open(os.path.join(root, "current", "VERSION")) as handle:
        assert handle.read() == "1.0"
    assert os.path.isdir(os.path.join(root, "shared"))
    hist = history(root)
    entry = hist["history"][-1]
    assert entry["version"] == "1.0" and entry["by"] == "alice@ctl" and entry["verdict"] == "pending"
    assert entry["sha256"] == result["sha256"] and entry["activated_at"].endswith("Z")
    assert hist["releases"]["1.0"]["unpacked_by"] == "alice@ctl"
    assert not [n for n in os.listdir(os.path.join(root, "releases")) if n.startswith(".")]


def test_present_does_not_activate(root, artifact, deploy):
    deploy("1.0")
    src, checksum = artifact("1.1")
    result = apply(root, "1.1", "present", src=src, checksum=checksum)
    assert result["changed"] and result["current"] == "1.0"
    assert os.readlink(os.path.join(root, "current")) == "releases/1.0"
    assert os.path.isdir(os.path.join(root, "releases", "1.1"))
    # ...and activating it later needs no src.
    result = apply(root, "1.1", "active")
    assert result["changed"] and result["previous_current"] == "1.0"


def test_idempotent(root, artifact):
    src, checksum = artifact("1.0")
    first = apply(root, "1.0", "active", src=src, checksum=checksum)
    before = snapshot(root)
    again = apply(root, "1.0", "active", src=src, checksum=checksum)
    assert first["changed"] and not again["changed"]
    assert again["current"] == again["previous_current"] == "1.0"
    assert apply(root, "1.0", "present", src=src, checksum=checksum)["changed"] is False
    assert apply(root, "1.0", "active")["changed"] is False
    after = snapshot(root)
    assert len(history(root)["history"]) == 1
    # Only the (rewritten-identically or untouched) history may differ; nothing else.
    assert {k: v for k, v in before.items() if "history" not in k} == \
        {k: v for k, v in after.items() if "history" not in k}


def test_same_version_different_content_is_refused(root, artifact):
    src, checksum = artifact("1.0")
    apply(root, "1.0", "active", src=src, checksum=checksum)
    before = snapshot(root)
    other_src, other_checksum = artifact("1.0", {"bin/app": b"something else"})
    with pytest.raises(ReleaseConflictError, match="never replaced"):
        apply(root, "1.0", "active", src=other_src, checksum=other_checksum)
    assert snapshot(root) == before


def test_untracked_release_dir_is_not_replaced(root, artifact):
    os.makedirs(os.path.join(root, "releases", "1.0"))
    src, checksum = artifact("1.0")
    with pytest.raises(ReleaseConflictError, match="never recorded"):
        apply(root, "1.0", "active", src=src, checksum=checksum)


def test_missing_release_without_src(root):
    with pytest.raises(ReleaseNotFoundError, match="'9.9'.*no src"):
        apply(root, "9.9", "active")


def test_missing_artifact_file(root, tmp_path):
    with pytest.raises(rel.ArtifactError, match="nope.tgz"):
        apply(root, "1.0", "active", src=str(tmp_path / "nope.tgz"), checksum="sha256:" + "0" * 64)


def test_checksum_required_to_unpack(root, artifact):
    src = artifact("1.0")[0]
    with pytest.raises(ChecksumRequiredError, match="checksum is required"):
        apply(root, "1.0", "active", src=src)
    assert not os.path.exists(os.path.join(root, "releases", "1.0"))


def test_checksum_skip_warns(root, artifact):
    src, checksum = artifact("1.0")
    result = apply(root, "1.0", "active", src=src, checksum="skip")
    assert result["changed"]
    assert len(result["warnings"]) == 1 and "skip" in result["warnings"][0]
    assert result["sha256"] == checksum.split(":")[1]  # still recorded


def test_checksum_mismatch_before_opening_archive(root, deploy, artifact, monkeypatch):
    deploy("1.0")
    before = snapshot(root)
    opened = []
    monkeypatch.setattr(rel, "extract", lambda *a, **k: opened.append(a))
    src = artifact("1.1")[0]
    wrong = "sha256:" + "ab" * 32
    with pytest.raises(ChecksumMismatchError) as info_:
        apply(root, "1.1", "active", src=src, checksum=wrong)
    assert "ab" * 32 in str(info_.value) and src in str(info_.value)
    assert opened == []  # the archive was never opened as an archive
    assert snapshot(root) == before


@pytest.mark.parametrize(
    "files, symlinks, cause",
    [
        ({"ok": b"1", "../escape": b"x"}, None, UnsafeMemberError),
        ({"ok": b"1"}, {"evil": "/etc"}, UnsafeMemberError),
        ({"big": b"\0" * 5000}, None, ArchiveTooLargeError),
    ],
)
def test_failed_unpack_leaves_nothing_and_current_untouched(root, deploy, artifact, tmp_path,
                                                            files, symlinks, cause):
    deploy("1.0")
    before = snapshot(root)
    src, checksum = artifact("1.1", files, symlinks=symlinks)
    with pytest.raises(UnpackError, match="refusing to unpack") as info_:
        apply(root, "1.1", "active", src=src, checksum=checksum, max_unpacked_bytes=4096)
    assert isinstance(info_.value.__cause__, cause)
    assert snapshot(root) == before  # no temp dir, no release, same current, same history
    assert not os.path.exists(tmp_path / "escape")


@pytest.mark.parametrize(
    "files, symlinks, checksum, error",
    [
        ({"ok": b"1", "../escape": b"x"}, None, None, UnpackError),
        ({"ok": b"1"}, {"evil": "/etc"}, None, UnpackError),
        ({"big": b"\0" * 5000}, None, None, UnpackError),
        ({"ok": b"1"}, None, "sha256:" + "0" * 64, rel.ChecksumMismatchError),
        ({"ok": b"1"}, None, False, rel.ChecksumRequiredError),
    ],
    ids=["traversal", "symlink-out", "too-large", "wrong-checksum", "no-checksum"],
)
@pytest.mark.parametrize("prepared", [[], [".safedeploy", ".safedeploy/incoming"]], ids=["no-root", "incoming-only"])
def test_a_refused_artifact_creates_nothing_of_a_new_store(root, artifact, files, symlinks, checksum, error, prepared):
    # A fresh host: no store yet, or only the folder the release role copies artifacts into.
    for folder in prepared:
        os.makedirs(os.path.join(root, folder))
    before = sorted(os.path.relpath(os.path.join(d, n), root) for d, dirs, names in os.walk(root) for n in dirs + names)
    src, good = artifact("1.1", files, symlinks=symlinks)
    kwargs = {} if checksum is False else {"checksum": checksum or good}
    with pytest.raises(error):
        apply(root, "1.1", "active", src=src, max_unpacked_bytes=4096, **kwargs)
    after = sorted(os.path.relpath(os.path.join(d, n), root) for d, dirs, names in os.walk(root) for n in dirs + names)
    assert after == before and os.path.exists(root) == bool(prepared)


def test_truncated_artifact_leaves_nothing(root, deploy, tmp_path):
    deploy("1.0")
    before = snapshot(root)
    good = write_artifact(tmp_path / "full.tgz", {"data": os.urandom(100_000)})[0]
    with open(good, "rb") as handle:
        raw = handle.read()
    cut = tmp_path / "cut.tgz"
    cut.write_bytes(raw[: len(raw) // 2])
    checksum = "sha256:" + hashlib.sha256(cut.read_bytes()).hexdigest()
    with pytest.raises(UnpackError) as info_:
        apply(root, "1.1", "active", src=str(cut), checksum=checksum)
    assert isinstance(info_.value.__cause__, CorruptArchiveError)
    assert snapshot(root) == before


def test_failure_after_extraction_removes_temp_dir(root, deploy, artifact, monkeypatch):
    deploy("1.0")
    before = snapshot(root)

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(rel, "_chown_tree", boom)
    src, checksum = artifact("1.1")
    with pytest.raises(OSError, match="No space"):
        apply(root, "1.1", "active", src=src, checksum=checksum, owner="0")
    assert snapshot(root) == before


def test_stale_temp_dirs_are_cleaned(root, deploy, artifact):
    deploy("1.0")
    stale = os.path.join(root, "releases", ".tmp-1.1-deadbeef")
    os.makedirs(os.path.join(stale, "half"))
    os.symlink("releases/1.0", os.path.join(root, "current.tmp-cafe"))
    deploy("1.1")
    assert not os.path.exists(stale)
    assert not os.path.lexists(os.path.join(root, "current.tmp-cafe"))


def test_shared_paths(root, artifact):
    src, checksum = artifact("1.0", {"bin/app": b"x", "config/app.yml": b"default: 1\n"})
    apply(root, "1.0", "active", src=src, checksum=checksum,
          shared_paths=["logs", "config/app.yml", "var/run/"])
    release = os.path.join(root, "releases", "1.0")
    assert os.readlink(os.path.join(release, "logs")) == "../../shared/logs"
    assert os.path.isdir(os.path.join(root, "shared", "logs"))
    # Seeded from the artifact the first time, then kept.
    with open(os.path.join(root, "current", "config", "app.yml")) as handle:
        assert handle.read() == "default: 1\n"
    assert os.path.islink(os.path.join(release, "config", "app.yml"))
    assert os.path.islink(os.path.join(release, "var", "run"))
    with open(os.path.join(root, "shared", "config", "app.yml"), "w") as handle:
        handle.write("edited\n")
    src, checksum = artifact("1.1", {"config/app.yml": b"default: 2\n"})
    apply(root, "1.1", "active", src=src, checksum=checksum, shared_paths=["config/app.yml"])
    with open(os.path.join(root, "current", "config", "app.yml")) as handle:
        assert handle.read() == "edited\n"


def test_owner_and_group(root, artifact):
    if os.geteuid() != 0:
        pytest.skip("chown needs root")
    src, checksum = artifact("1.0")
    apply(root, "1.0", "active", src=src, checksum=checksum, owner="65534", group="65534",
          shared_paths=["logs"])
    st = os.stat(os.path.join(root, "releases", "1.0", "bin", "app"))
    assert (st.st_uid, st.st_gid) == (65534, 65534)
    assert os.stat(os.path.join(root, "shared", "logs")).st_uid == 65534


def test_unknown_owner(root, artifact):
    src, checksum = artifact("1.0")
    with pytest.raises(ReleaseError, match="owner 'no-such-user-xyz'"):
        apply(root, "1.0", "active", src=src, checksum=checksum, owner="no-such-user-xyz")


def test_current_that_is_a_directory_is_not_clobbered(root, artifact):
    os.makedirs(os.path.join(root, "current"))
    src, checksum = artifact("1.0")
    with pytest.raises(StoreLayoutError, match="not a symlink"):
        apply(root, "1.0", "active", src=src, checksum=checksum)
    assert os.path.isdir(os.path.join(root, "current"))


# -- atomic activation ------------------------------------------------------------


def test_activation_is_atomic(root, deploy):
    deploy("1.0")
    deploy("1.1")
    current = os.path.join(root, "current")
    seen, errors, stop = set(), [], threading.Event()

    def reader():
        while not stop.is_set():
            try:
                seen.add(os.readlink(current))
            except OSError as exc:  # a missing current would show up here
                errors.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(60):
            apply(root, "1.1" if i % 2 else "1.0", "active", actor="flipper")
    finally:
        stop.set()
        thread.join()
    assert errors == []
    assert seen <= {"releases/1.0", "releases/1.1"}
    assert not [n for n in os.listdir(root) if n.startswith("current.")]
    assert len(history(root)["history"]) == 62


def test_switch_uses_rename_over_current(root, deploy, monkeypatch):
    deploy("1.0")
    deploy("1.1")
    calls = []
    real_replace = os.replace

    def spy(src, dst):
        calls.append((os.path.basename(src), os.path.basename(dst), os.path.islink(src)))
        return real_replace(src, dst)

    monkeypatch.setattr(rel.os, "replace", spy)
    apply(root, "1.0", "active")
    link_calls = [c for c in calls if c[1] == "current"]
    assert len(link_calls) == 1 and link_calls[0][0].startswith("current.tmp-") and link_calls[0][2]


# -- verdicts, last_good, rollback_candidate ------------------------------------


def test_verdicts_are_recorded_with_time_and_actor(root, deploy):
    deploy("1.0")
    result = apply(root, "1.0", "good", actor="carol")
    assert result["changed"] and result["last_good"] == "1.0"
    assert apply(root, "1.0", "good", actor="carol")["changed"] is False
    apply(root, "1.0", "bad", actor="dave")
    rec = history(root)["releases"]["1.0"]
    assert rec["verdict"] == "bad"
    assert [(v["verdict"], v["by"]) for v in rec["verdicts"]] == [("good", "carol"), ("bad", "dave")]
    assert all(v["at"].endswith("Z") for v in rec["verdicts"])
    assert history(root)["history"][-1]["verdict"] == "bad"


def test_verdict_on_unknown_version(root, deploy):
    deploy("1.0")
    with pytest.raises(ReleaseNotFoundError, match="'7.0'"):
        apply(root, "7.0", "good")


def test_rollback_candidate_is_newest_good_not_current(root, deploy):
    deploy("1.0", "good")
    deploy("1.1", "good")
    result = deploy("1.2")
    assert result["rollback_candidate"] == "1.1" and result["last_good"] == "1.1"
    apply(root, "1.1", "bad")
    state = info(root)
    assert state["rollback_candidate"] == "1.0" and state["last_good"] == "1.0"


def test_rollback_candidate_never_bad(root, deploy):
    deploy("1.0", "bad")
    deploy("1.1", "bad")
    result = deploy("1.2", "bad")
    assert result["rollback_candidate"] is None
    assert info(root)["rollback_candidate"] is None and info(root)["last_good"] is None


def test_rollback_candidate_ignores_mtime(root, deploy):
    deploy("1.0", "good")
    deploy("1.1", "bad")
    deploy("1.2")
    # The bad release's directory is the most recently touched one.
    os.utime(os.path.join(root, "releases", "1.1"))
    assert info(root)["rollback_candidate"] == "1.0"


def test_rollback_candidate_must_be_on_disk(root, deploy):
    deploy("1.0", "good")
    deploy("1.1", "good")
    deploy("1.2", "good")
    # 1.1 is the rollback candidate; an operator removes it by hand.
    import shutil
    shutil.rmtree(os.path.join(root, "releases", "1.1"))
    assert info(root)["rollback_candidate"] == "1.0"


def test_rollback_is_an_activation(root, deploy):
    deploy("1.0", "good")
    deploy("1.1", "bad")
    candidate = info(root)["rollback_candidate"]
    result = apply(root, candidate, "active", actor="rollback")
    assert result["current"] == "1.0" and result["previous_current"] == "1.1"
    entry = history(root)["history"][-1]
    assert entry["version"] == "1.0" and entry["verdict"] == "good" and entry["previous"] == "1.1"


def test_activating_a_bad_release_warns(root, deploy):
    deploy("1.0", "bad")
    deploy("1.1")
    result = apply(root, "1.0", "active")
    assert any("bad" in w for w in result["warnings"])


# -- pruning ------------------------------------------------------------------------


def test_prune_keeps_newest(root, deploy):
    for v in ["1", "2", "3", "4"]:
        result = deploy(v)
    assert result["pruned"] == []
    result = deploy("5", keep=3)
    assert result["pruned"] == ["1", "2"]
    assert sorted(os.listdir(os.path.join(root, "releases"))) == ["3", "4", "5"]
    assert history(root)["releases"]["1"]["removed_at"]


def test_prune_keeps_current_newest_good_and_rollback_candidate(root, deploy):
    deploy("1.0", "good")   # old, good -> the rollback candidate
    deploy("1.1", "bad")
    deploy("1.2", "bad")
    deploy("1.3", "bad")
    result = deploy("1.4", keep=2)
    # keep=2: current + rollback candidate; nothing else survives.
    assert result["rollback_candidate"] == "1.0"
    assert sorted(result["pruned"]) == ["1.1", "1.2", "1.3"]
    assert sorted(os.listdir(os.path.join(root, "releases"))) == ["1.0", "1.4"]


def test_prune_after_rollback_keeps_the_newer_good_one(root, deploy):
    deploy("1.0", "good")
    deploy("2.0", "good")
    deploy("3.0", "bad")
    # Roll back to 1.0 (say 2.0 is known incompatible): current=1.0,
    # newest good not current = 2.0; 3.0 is older than both by activation.
    result = apply(root, "1.0", "active", keep=2)
    assert result["current"] == "1.0" and result["rollback_candidate"] == "2.0"
    assert result["pruned"] == ["3.0"]
    assert sorted(os.listdir(os.path.join(root, "releases"))) == ["1.0", "2.0"]


def test_prune_leaves_untracked_dirs_alone(root, deploy):
    deploy("1")
    os.makedirs(os.path.join(root, "releases", "handmade"))
    for v in ["2", "3", "4"]:
        deploy(v, keep=2)
    assert sorted(os.listdir(os.path.join(root, "releases"))) == ["3", "4", "handmade"]


def test_absent(root, deploy):
    deploy("1.0", "good")
    deploy("1.1")
    deploy("1.2", "good")
    deploy("1.3")
    with pytest.raises(ProtectedReleaseError, match="current"):
        apply(root, "1.3", "absent")
    with pytest.raises(ProtectedReleaseError, match="last good"):
        apply(root, "1.2", "absent")
    result = apply(root, "1.1", "absent")
    assert result["changed"] and not os.path.exists(os.path.join(root, "releases", "1.1"))
    assert apply(root, "1.1", "absent")["changed"] is False
    assert apply(root, "1.0", "absent")["changed"] is True  # good, but neither newest nor candidate
    assert apply(str(os.path.join(root, "nowhere")), "1.0", "absent")["changed"] is False


def test_absent_refuses_rollback_candidate(root, deploy):
    deploy("1.0", "good")
    deploy("1.1", "good")
    deploy("1.2", "good")  # last good is current; 1.1 is what a rollback restores
    with pytest.raises(ProtectedReleaseError, match="rollback"):
        apply(root, "1.1", "absent")


# -- check mode and diff ------------------------------------------------------------


def test_check_mode_on_a_new_host_touches_nothing(root, artifact):
    src, checksum = artifact("1.0")
    result = apply(root, "1.0", "active", src=src, checksum=checksum, check_mode=True)
    assert result["changed"] and result["current"] == "1.0"
    assert result["diff"] == {"before": {"current": None, "releases": []},
                              "after": {"current": "1.0", "releases": ["1.0"]}}
    assert not os.path.exists(root)


def test_check_mode_touches_nothing(root, deploy, artifact):
    for v in ["1", "2", "3"]:
        deploy(v)
    before = snapshot(root)
    src, checksum = artifact("4")
    result = apply(root, "4", "active", src=src, checksum=checksum, keep=2, check_mode=True)
    assert result["changed"] and result["pruned"] == ["1", "2"]
    assert result["previous_current"] == "3" and result["current"] == "4"
    assert apply(root, "3", "good", check_mode=True)["changed"]
    assert apply(root, "1", "absent", check_mode=True)["changed"]
    assert apply(root, "1", "active", check_mode=True)["changed"]
    assert snapshot(root) == before


def test_check_mode_still_validates_the_artifact(root, artifact):
    src, checksum = artifact("1.0", {"../x": b"x"})
    with pytest.raises(UnpackError):
        apply(root, "1.0", "active", src=src, checksum=checksum, check_mode=True)
    with pytest.raises(ChecksumMismatchError):
        apply(root, "1.0", "active", src=src, checksum="sha256:" + "0" * 64, check_mode=True)
    assert not os.path.exists(root)


def test_diff_for_verdict(root, deploy):
    deploy("1.0")
    result = apply(root, "1.0", "good")
    assert result["diff"]["before"]["verdict"] == "pending"
    assert result["diff"]["after"]["verdict"] == "good"


# -- release_info ---------------------------------------------------------------


def test_info_missing_root(tmp_path):
    state = info(str(tmp_path / "none"))
    assert state["exists"] is False and state["releases"] == [] and state["current"] is None


def test_info(root, deploy):
    deploy("1.0", "good")
    deploy("1.1")
    os.makedirs(os.path.join(root, "releases", "manual"))
    state = info(root)
    assert state["exists"] and state["current"] == "1.1"
    assert state["last_good"] == "1.0" and state["rollback_candidate"] == "1.0"
    assert [r["version"] for r in state["releases"]] == ["1.1", "1.0", "manual"]
    first = state["releases"][0]
    assert set(first) >= {"version", "path", "sha256", "verdict", "unpacked_at"}
    assert first["verdict"] == "pending" and first["current"] is True
    assert state["releases"][2]["sha256"] is None
    assert [h["version"] for h in state["history"]] == ["1.0", "1.1"]


def test_info_current_outside_store(root, deploy):
    deploy("1.0")
    os.unlink(os.path.join(root, "current"))
    os.symlink("/srv/elsewhere", os.path.join(root, "current"))
    state = info(root)
    assert state["current"] is None and "/srv/elsewhere" in state["warnings"][0]
