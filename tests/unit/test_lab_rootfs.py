"""The lab's cached root is trusted only when complete and of the current recipe.

debootstrap and chroot are replaced by small scripts on PATH that build a
tiny tree, so the rebuild logic itself runs for real in milliseconds.
"""

from __future__ import annotations

import importlib
import os
import stat
import sys

import pytest

LAB = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lab")

FAKE_DEBOOTSTRAP = """#!/bin/sh
# fake debootstrap: last argument but one is the target (mirror may follow)
for a in "$@"; do case "$a" in /*) target="$a";; esac; done
mkdir -p "$target/etc/ssh/sshd_config.d" "$target/root"
echo built > "$target/built-by-fake"
echo "$@" >> "$(dirname "$target")/debootstrap-calls"
"""
FAKE_CHROOT = "#!/bin/sh\nexit 0\n"


@pytest.fixture
def rootfs(tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name, body in (("debootstrap", FAKE_DEBOOTSTRAP), ("chroot", FAKE_CHROOT)):
        path = bindir / name
        path.write_text(body)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    monkeypatch.setenv("LAB_CACHE_DIR", str(tmp_path / "cache"))
    sys.path.insert(0, LAB)
    module = importlib.reload(importlib.import_module("rootfs"))
    yield module
    sys.path.remove(LAB)


def calls(rootfs) -> int:
    path = os.path.join(rootfs.CACHE_DIR, "debootstrap-calls")
    return len(open(path).readlines()) if os.path.exists(path) else 0


def test_builds_once_and_then_trusts_the_cache(rootfs):
    path = rootfs.ensure_rootfs(log=lambda m: None)
    assert rootfs.is_complete(path)
    assert calls(rootfs) == 1
    assert rootfs.ensure_rootfs(log=lambda m: None) == path
    assert calls(rootfs) == 1


def test_half_built_root_is_rebuilt_not_trusted(rootfs):
    half = rootfs.rootfs_path()
    os.makedirs(os.path.join(half, "usr"))  # a crash half-way: no marker
    open(os.path.join(half, "usr", "leftover"), "w").close()
    messages = []
    rootfs.ensure_rootfs(log=messages.append)
    assert any("incomplete" in m for m in messages)
    assert not os.path.exists(os.path.join(half, "usr", "leftover"))
    assert os.path.exists(os.path.join(half, "built-by-fake"))
    assert calls(rootfs) == 1


def test_root_of_an_older_recipe_is_rebuilt(rootfs):
    path = rootfs.ensure_rootfs(log=lambda m: None)
    with open(os.path.join(path, rootfs.MARKER), "w") as handle:
        handle.write("0000000000000000\n")
    assert not rootfs.is_complete(path)
    rootfs.ensure_rootfs(log=lambda m: None)
    assert rootfs.is_complete(path)
    assert calls(rootfs) == 2


def test_leftover_staging_folders_are_removed(rootfs):
    os.makedirs(rootfs.CACHE_DIR)
    stale = rootfs.rootfs_path() + ".partial-12345"
    os.makedirs(stale)
    rootfs.ensure_rootfs(log=lambda m: None)
    assert not os.path.exists(stale)


def test_failed_debootstrap_leaves_nothing_and_says_why(rootfs, tmp_path):
    failing = tmp_path / "bin" / "debootstrap"
    failing.write_text("#!/bin/sh\necho 'E: Couldn't download packages' >&2\nexit 1\n")
    with pytest.raises(RuntimeError, match="debootstrap failed"):
        rootfs.ensure_rootfs(log=lambda m: None)
    assert not os.path.exists(rootfs.rootfs_path())
    assert not [e for e in os.listdir(rootfs.CACHE_DIR) if ".partial-" in e]
