# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Safe unpacking of an untrusted tar archive (plain, gzip, bzip2 or xz).

Standard library only: this runs on target hosts (Python 3.9+), which have
neither tarfile's extraction filters (3.12+) nor anything else to lean on.

The archive is read once, as a stream. Every member is checked against a
model of the tree built so far (which member paths are directories, files
and symlinks) before anything is written, so a symlink planted by an
earlier member cannot redirect a later one outside the destination. The
destination must be a fresh empty directory; the caller renames it into
place only when :func:`extract` returns.

With ``dest=None`` the same checks run and the data is read and counted but
nothing is written: that is how check mode validates an artifact.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import stat
import tarfile
import zlib

from ansible_collections.safedeploy.fleet.plugins.module_utils._files import fsync_dir

__all__ = [
    "ArchiveError",
    "ArchiveTooLargeError",
    "CorruptArchiveError",
    "UnsafeMemberError",
    "extract",
]

_CHUNK = 1024 * 1024
# Symlink chains longer than this are refused rather than followed forever.
_MAX_LINK_HOPS = 40


class ArchiveError(Exception):
    """Root of the errors raised while reading or unpacking an archive."""


class UnsafeMemberError(ArchiveError):
    """A member would write outside the destination or is a forbidden type."""


class ArchiveTooLargeError(ArchiveError):
    """The uncompressed content exceeds the allowed total."""


class CorruptArchiveError(ArchiveError):
    """The archive is truncated, corrupt or not a tar archive."""


class _Tree:
    """What the archive has created so far, by normalised relative path.

    Resolving paths against this model (instead of the filesystem) lets the
    scan-only mode make exactly the same decisions as a real extraction. It
    follows symlinks and '..' the way the kernel does: '..' after a symlink
    goes to the parent of the link's target, not back to the link's parent.
    """

    def __init__(self) -> None:
        # relpath -> "dir" | "file" | ("link", linkname)
        self.entries: dict = {"": "dir"}

    def resolve(self, path: str, member: str, follow_last: bool = True) -> str:
        """Return the physical relative path of ``path`` (relative to the root).

        Raises UnsafeMemberError if resolution leaves the root.
        """
        parts = [p for p in path.split("/") if p not in ("", ".")]
        resolved: list = []
        hops = 0
        while parts:
            part = parts.pop(0)
            if part == "..":
                if not resolved:
                    raise UnsafeMemberError(
                        f"archive member {member!r}: {path!r} resolves outside the release"
                    )
                resolved.pop()
                continue
            candidate = "/".join(resolved + [part])
            entry = self.entries.get(candidate)
            is_last = not parts
            if isinstance(entry, tuple) and (follow_last or not is_last):
                hops += 1
                if hops > _MAX_LINK_HOPS:
                    raise UnsafeMemberError(
                        f"archive member {member!r}: too many levels of symbolic links"
                    )
                # A relative link target is relative to the link's directory,
                # which is exactly what has been resolved so far.
                parts = [p for p in entry[1].split("/") if p not in ("", ".")] + parts
                continue
            if entry == "file" and not is_last:
                raise UnsafeMemberError(
                    f"archive member {member!r}: {candidate!r} is a file, not a directory"
                )
            resolved.append(part)
        return "/".join(resolved)

    def check_links(self) -> None:
        """Every symlink in the finished tree must resolve inside it.

        Checked again at the end because a later member can change where an
        earlier, dangling link points (e.g. ``l -> x/../etc`` then ``x -> .``).
        """
        for rel, entry in self.entries.items():
            if isinstance(entry, tuple):
                _check_link(self, rel, entry[1], rel)


def _check_link(tree: _Tree, rel: str, linkname: str, member: str) -> None:
    if not linkname:
        raise UnsafeMemberError(f"archive member {member!r} is a symlink with an empty target")
    if linkname.startswith("/"):
        raise UnsafeMemberError(
            f"archive member {member!r} is a symlink to the absolute path {linkname!r}, outside the release"
        )
    parent = posixpath.dirname(rel)
    try:
        tree.resolve(posixpath.join(parent, linkname) if parent else linkname, member)
    except UnsafeMemberError as exc:
        if "too many levels" in str(exc):
            raise
        raise UnsafeMemberError(
            f"archive member {member!r} is a symlink to {linkname!r}, which resolves outside the release"
        ) from None


def _normalise_name(name: str) -> str:
    """Member name -> relative path without '.' parts; refuse absolute and '..'."""
    if not name or "\x00" in name:
        raise UnsafeMemberError(f"archive member with an empty or invalid name: {name!r}")
    if name.startswith("/"):
        raise UnsafeMemberError(f"archive member {name!r} has an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeMemberError(f"archive member {name!r} contains a '..' component")
    return "/".join(parts)


def _describe_type(member: tarfile.TarInfo) -> str:
    if member.ischr():
        return "a character device"
    if member.isblk():
        return "a block device"
    if member.isfifo():
        return "a FIFO"
    return f"an unsupported member type ({member.type!r})"


class _Extractor:
    def __init__(self, dest, max_bytes: int) -> None:
        self.dest = os.path.realpath(dest) if dest is not None else None
        self.max_bytes = max_bytes
        self.total = 0
        self.members = 0
        self.tree = _Tree()
        # Directory modes are applied last so a read-only directory in the
        # archive does not block writing its own content.
        self.dir_modes: dict = {}

    # -- helpers ---------------------------------------------------------

    def _real(self, rel: str) -> str:
        path = os.path.join(self.dest, rel) if rel else self.dest
        # Belt and braces: the model says it is inside; the filesystem must agree.
        parent = os.path.realpath(os.path.dirname(path)) if rel else self.dest
        if parent != self.dest and not parent.startswith(self.dest + os.sep):
            raise UnsafeMemberError(f"path {rel!r} resolves outside the destination")
        return path

    def _ensure_parents(self, rel: str, member: str) -> None:
        parent = posixpath.dirname(rel)
        if not parent:
            return
        missing = []
        while parent and parent not in self.tree.entries:
            missing.append(parent)
            parent = posixpath.dirname(parent)
        if parent and self.tree.entries.get(parent) != "dir":
            raise UnsafeMemberError(
                f"archive member {member!r}: {parent!r} is not a directory"
            )
        for path in reversed(missing):
            self.tree.entries[path] = "dir"
            if self.dest is not None:
                os.mkdir(self._real(path), 0o755)

    def _claim(self, rel: str, kind, member: str) -> None:
        existing = self.tree.entries.get(rel)
        if existing is not None:
            if existing == "dir" and kind == "dir":
                return
            # A second member with the same path is how "file, then symlink
            # with the same name" tricks work; there is no need for it.
            raise UnsafeMemberError(f"archive member {member!r} appears more than once")
        self.tree.entries[rel] = kind

    def _count(self, amount: int, member: str) -> None:
        self.total += amount
        if self.total > self.max_bytes:
            raise ArchiveTooLargeError(
                f"archive unpacks to more than max_unpacked_bytes={self.max_bytes} bytes "
                f"(limit reached at member {member!r})"
            )

    # -- member types ----------------------------------------------------

    def member(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        self.members += 1
        name = member.name
        rel = _normalise_name(name)
        if member.isdir():
            if not rel:
                return  # "./" itself
            rel = self._place(rel, name)
            self._claim(rel, "dir", name)
            if self.dest is not None:
                path = self._real(rel)
                if not os.path.isdir(path):
                    os.mkdir(path, 0o700)
            self.dir_modes[rel] = (member.mode & 0o777) | 0o700
            return
        if not rel:
            raise UnsafeMemberError(f"archive member {name!r} has no usable name")
        if member.isreg():
            self._file(tar, member, rel, name)
        elif member.issym():
            rel = self._place(rel, name)
            # The link's own (resolved) location decides where a relative
            # target points.
            _check_link(self.tree, rel, member.linkname, name)
            self._claim(rel, ("link", member.linkname), name)
            if self.dest is not None:
                os.symlink(member.linkname, self._real(rel))
        elif member.islnk():
            self._hardlink(member, rel, name)
        else:
            raise UnsafeMemberError(f"archive member {name!r} is {_describe_type(member)}")

    def _place(self, rel: str, name: str) -> str:
        """Resolve the parent of rel through earlier symlinks; create parents."""
        parent = posixpath.dirname(rel)
        base = posixpath.basename(rel)
        if parent:
            parent = self.tree.resolve(parent, name)
        placed = posixpath.join(parent, base) if parent else base
        self._ensure_parents(placed, name)
        return placed

    def _file(self, tar, member, rel, name) -> None:
        # Fail fast on the header's size, then count what actually arrives:
        # the header alone is not trusted.
        if self.total + member.size > self.max_bytes:
            self._count(member.size, name)
        rel = self._place(rel, name)
        self._claim(rel, "file", name)
        with _reading():
            source = tar.extractfile(member)
        fd = None
        if self.dest is not None:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
            fd = os.open(self._real(rel), flags, 0o600)
        try:
            while True:
                with _reading():
                    chunk = source.read(_CHUNK)
                if not chunk:
                    break
                self._count(len(chunk), name)
                if fd is not None:
                    view = memoryview(chunk)
                    while view:
                        written = os.write(fd, view)
                        view = view[written:]
            if fd is not None:
                os.fchmod(fd, member.mode & 0o777)
                os.fsync(fd)
        finally:
            if fd is not None:
                os.close(fd)
        if self.dest is not None:
            os.utime(self._real(rel), (member.mtime, member.mtime), follow_symlinks=False)

    def _hardlink(self, member, rel, name) -> None:
        linkname = member.linkname
        if linkname.startswith("/"):
            raise UnsafeMemberError(
                f"archive member {name!r} is a hard link to the absolute path {linkname!r}, outside the release"
            )
        if ".." in linkname.split("/"):
            raise UnsafeMemberError(
                f"archive member {name!r} is a hard link to {linkname!r}, which contains a '..' component"
            )
        target_rel = _normalise_name(linkname)
        if not target_rel:
            raise UnsafeMemberError(f"archive member {name!r} is a hard link to the root")
        target_rel = self.tree.resolve(target_rel, name)
        if self.tree.entries.get(target_rel) != "file":
            raise UnsafeMemberError(
                f"archive member {name!r} is a hard link to {member.linkname!r}, which is not a regular file "
                "earlier in the archive"
            )
        rel = self._place(rel, name)
        self._claim(rel, "file", name)
        if self.dest is not None:
            os.link(self._real(target_rel), self._real(rel), follow_symlinks=False)

    def finish(self) -> None:
        self.tree.check_links()
        if self.dest is None:
            return
        for rel in sorted(self.dir_modes, key=lambda p: p.count("/"), reverse=True):
            os.chmod(self._real(rel), self.dir_modes[rel])
        # Persist the directory entries too, not only the file contents.
        for dirpath, _dirs, _files in os.walk(self.dest):
            fsync_dir(dirpath)


@contextlib.contextmanager
def _reading():
    """Turn whatever tarfile and the decompressors raise into CorruptArchiveError.

    Only wraps reads of the archive, so a failing write (disk full,
    permissions) is still reported as what it is.
    """
    try:
        yield
    except ArchiveError:
        raise
    # TypeError: tarfile trips over some malformed gzip headers (Python 3.11).
    except (tarfile.TarError, EOFError, zlib.error, OSError, ValueError, TypeError) as exc:
        raise CorruptArchiveError(f"archive is truncated or corrupt: {exc}") from exc


def extract(fileobj, dest, max_bytes: int) -> dict:
    """Unpack the tar stream ``fileobj`` into the empty directory ``dest``.

    ``dest=None`` validates without writing. Returns ``{"members": n,
    "bytes": total}``. Raises UnsafeMemberError, ArchiveTooLargeError or
    CorruptArchiveError; on error the caller must discard ``dest``.
    """
    if dest is not None:
        st = os.lstat(dest)
        if not stat.S_ISDIR(st.st_mode) or os.listdir(dest):
            raise ArchiveError(f"destination {dest!r} must be an empty directory")
    extractor = _Extractor(dest, max_bytes)
    # Stream mode: each member is read once, in order; nothing seeks back.
    with _reading():
        tar = tarfile.open(fileobj=fileobj, mode="r|*")  # noqa: SIM115 - closed by "with tar"
    with tar:
        while True:
            with _reading():
                member = tar.next()
            if member is None:
                break
            extractor.member(tar, member)
        stream = tar.fileobj
        # tarfile stops quietly on a truncated header after the first
        # member; a complete archive ends with a full zero block.
        if hasattr(stream, "tell") and stream.tell() < tar.offset + tarfile.BLOCKSIZE:
            raise CorruptArchiveError(
                f"archive is truncated: it ends at byte {stream.tell()} without the "
                "end-of-archive marker"
            )
    extractor.finish()
    return {"members": extractor.members, "bytes": extractor.total}
