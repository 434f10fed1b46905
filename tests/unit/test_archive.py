# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Safe unpacking: every way an archive can try to escape or exhaust the host."""

from __future__ import annotations

import gzip
import io
import os
import tarfile

import pytest
from ansible_collections.safedeploy.fleet.plugins.module_utils._archive import (
    ArchiveError,
    ArchiveTooLargeError,
    CorruptArchiveError,
    UnsafeMemberError,
    extract,
)

MIB = 1024 * 1024


def member(name, kind="file", data=b"", linkname="", mode=None):
    info = tarfile.TarInfo(name)
    info.mtime = 1_700_000_000
    if kind == "file":
        info.size = len(data)
        info.mode = 0o644 if mode is None else mode
        return info, data
    info.type = {
        "dir": tarfile.DIRTYPE,
        "symlink": tarfile.SYMTYPE,
        "hardlink": tarfile.LNKTYPE,
        "chr": tarfile.CHRTYPE,
        "blk": tarfile.BLKTYPE,
        "fifo": tarfile.FIFOTYPE,
    }[kind]
    info.mode = 0o755 if mode is None else mode
    info.linkname = linkname
    return info, None


def tar_bytes(members, compression=""):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:" + compression) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def run(tmp_path, raw, max_bytes=MIB, scan=False):
    dest = None if scan else tmp_path / "dest"
    if dest is not None:
        dest.mkdir()
    return extract(io.BytesIO(raw), None if dest is None else str(dest), max_bytes)


GOOD = [
    member("bin", "dir"),
    member("bin/app", data=b"#!/bin/sh\necho hi\n", mode=0o755),
    member("./etc/app.conf", data=b"port=8080\n"),
    member("bin/run", "symlink", linkname="app"),
    member("etc/link-to-bin", "symlink", linkname="../bin"),
    member("etc/link-to-bin/through-link", data=b"x"),
    member("bin/app-hard", "hardlink", linkname="bin/app"),
    member("readonly", "dir", mode=0o555),
    member("readonly/file", data=b"r"),
]


@pytest.mark.parametrize("compression", ["", "gz", "bz2", "xz"])
def test_good_archive_unpacks_completely(tmp_path, compression):
    stats = run(tmp_path, tar_bytes(GOOD, compression))
    dest = tmp_path / "dest"
    assert stats["members"] == len(GOOD)
    assert (dest / "bin/app").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert os.stat(dest / "bin/app").st_mode & 0o777 == 0o755
    assert os.readlink(dest / "bin/run") == "app"
    # A file written through an in-archive symlink lands at the link's target.
    assert (dest / "bin/through-link").read_bytes() == b"x"
    assert os.stat(dest / "bin/app-hard").st_ino == os.stat(dest / "bin/app").st_ino
    assert (dest / "etc/app.conf").read_bytes() == b"port=8080\n"
    # Directory modes are applied last, and always leave the owner able to write.
    assert os.stat(dest / "readonly").st_mode & 0o777 == 0o755


def test_scan_only_writes_nothing(tmp_path):
    stats = run(tmp_path, tar_bytes(GOOD, "gz"), scan=True)
    assert stats["members"] == len(GOOD)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "members, expected",
    [
        ([member("/etc/passwd", data=b"x")], "absolute path"),
        ([member("../escape", data=b"x")], "'..'"),
        ([member("a/../../escape", data=b"x")], "'..'"),
        ([member("ok/../../../etc/cron.d/x", data=b"x")], "'..'"),
        ([member("evil", "symlink", linkname="/etc")], "absolute path '/etc'"),
        ([member("evil", "symlink", linkname="../../etc")], "outside the release"),
        ([member("a", "dir"), member("a/evil", "symlink", linkname="../..")], "outside the release"),
        # classic CVE-2007-4559 shape: link out, then write through it
        ([member("evil", "symlink", linkname="/tmp"), member("evil/pwn", data=b"x")], "absolute"),
        # '..' after a symlink goes to the parent of the link's target
        ([member("root", "symlink", linkname="."), member("out", "symlink", linkname="root/../etc")],
         "outside the release"),
        # a dangling link that a later member turns into an escape
        ([member("out", "symlink", linkname="x/../etc"), member("x", "symlink", linkname=".")],
         "outside the release"),
        ([member("hl", "hardlink", linkname="/etc/passwd")], "absolute path"),
        ([member("hl", "hardlink", linkname="../outside")], "'..'"),
        ([member("hl", "hardlink", linkname="not-in-archive")], "not a regular file"),
        ([member("l", "symlink", linkname="."), member("hl", "hardlink", linkname="l")],
         "not a regular file"),
        ([member("null", "chr")], "character device"),
        ([member("sda", "blk")], "block device"),
        ([member("pipe", "fifo")], "FIFO"),
        ([member("f", data=b"1"), member("f", "symlink", linkname="/etc/passwd")], "absolute"),
        ([member("f", data=b"1"), member("f", data=b"2")], "more than once"),
        ([member("loop", "symlink", linkname="loop")], "too many levels"),
        ([member("f", data=b"1"), member("f/g", data=b"2")], "not a directory"),
    ],
)
@pytest.mark.parametrize("scan", [False, True], ids=["extract", "scan"])
def test_unsafe_members_are_refused(tmp_path, members, expected, scan):
    with pytest.raises(UnsafeMemberError, match=expected.replace("(", r"\(")) as info:
        run(tmp_path, tar_bytes(members), scan=scan)
    assert "archive member" in str(info.value)
    # Nothing escaped to the parent of the destination.
    assert sorted(p.name for p in tmp_path.iterdir()) == ([] if scan else ["dest"])


def test_symlinks_inside_are_allowed(tmp_path):
    raw = tar_bytes([
        member("a/b", "dir"),
        member("a/b/up", "symlink", linkname=".."),
        member("a/b/up/c", data=b"c"),
        member("top", "symlink", linkname="a/b/../.."),
    ])
    run(tmp_path, raw)
    assert (tmp_path / "dest/a/c").read_bytes() == b"c"


def test_bomb_single_member_over_limit(tmp_path):
    raw = tar_bytes([member("zeros", data=b"\0" * (2 * MIB))], "gz")
    assert len(raw) < 20_000  # it is a bomb: tiny compressed, big unpacked
    with pytest.raises(ArchiveTooLargeError, match="max_unpacked_bytes=1048576"):
        run(tmp_path, raw, max_bytes=MIB)


def test_bomb_many_members_add_up(tmp_path):
    raw = tar_bytes([member(f"f{i}", data=b"\0" * 300_000) for i in range(5)], "gz")
    with pytest.raises(ArchiveTooLargeError, match="'f3'"):
        run(tmp_path, raw, max_bytes=MIB)


def test_size_counted_while_reading_not_from_header(tmp_path, monkeypatch):
    # A member whose reader delivers more than its header claims (as sparse
    # members do) is limited by what arrives, not by the header.
    raw = tar_bytes([member("small-header", data=b"x" * 10)])
    monkeypatch.setattr(tarfile.TarFile, "extractfile", lambda self, m: io.BytesIO(b"y" * 5000))
    with pytest.raises(ArchiveTooLargeError, match="small-header"):
        run(tmp_path, raw, max_bytes=1000)


def test_limit_exactly_reached_is_fine(tmp_path):
    run(tmp_path, tar_bytes([member("a", data=b"x" * 1000)]), max_bytes=1000)


def test_truncated_gzip(tmp_path):
    raw = tar_bytes([member("big", data=os.urandom(200_000))], "gz")
    with pytest.raises(CorruptArchiveError, match="truncated or corrupt"):
        run(tmp_path, raw[: len(raw) // 2])


def test_truncated_plain_tar_mid_member(tmp_path):
    raw = tar_bytes([member("a", data=b"a" * 1000), member("b", data=b"b" * 5000)])
    with pytest.raises(CorruptArchiveError):
        run(tmp_path, raw[: 512 + 1024 + 512 + 100])


def test_truncated_plain_tar_inside_a_header(tmp_path):
    # tarfile alone stops quietly here and reports one member.
    raw = tar_bytes([member("a", data=b"a" * 1000), member("b", data=b"b")])
    with pytest.raises(CorruptArchiveError, match="end-of-archive marker"):
        run(tmp_path, raw[: 512 + 1024 + 100])


def test_truncated_plain_tar_at_a_member_boundary(tmp_path):
    raw = tar_bytes([member("a", data=b"a" * 1000), member("b", data=b"b")])
    with pytest.raises(CorruptArchiveError, match="end-of-archive marker"):
        run(tmp_path, raw[: 512 + 1024])


def test_gzip_of_a_truncated_tar(tmp_path):
    raw = tar_bytes([member("a", data=b"a" * 1000), member("b", data=b"b")])
    with pytest.raises(CorruptArchiveError):
        run(tmp_path, gzip.compress(raw[: 512 + 1024 + 200]))


@pytest.mark.parametrize("raw", [b"", b"not a tar archive at all" * 40, b"\x1f\x8b\x08garbage"])
def test_not_an_archive(tmp_path, raw):
    with pytest.raises(CorruptArchiveError):
        run(tmp_path, raw)


def test_destination_must_be_empty(tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "leftover").write_text("x")
    with pytest.raises(ArchiveError, match="empty directory"):
        extract(io.BytesIO(tar_bytes(GOOD)), str(dest), MIB)


def test_setuid_bits_are_dropped(tmp_path):
    run(tmp_path, tar_bytes([member("suid", data=b"x", mode=0o4755)]))
    assert os.stat(tmp_path / "dest/suid").st_mode & 0o7777 == 0o755
