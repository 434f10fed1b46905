# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The release store on one host.

Layout under the application root (see docs / DESIGN.md)::

    <root>/releases/<version>/           unpacked artifact
    <root>/current -> releases/<version>  relative symlink, switched atomically
    <root>/shared/                       files that survive releases
    <root>/.safedeploy/history.json      releases, verdicts, every activation
    <root>/.safedeploy/lock              flock()ed by every writer

Standard library only (runs on target hosts, Python 3.9+). Errors are
ReleaseError subclasses whose message names the offending value.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import fcntl
import grp
import hashlib
import hmac
import json
import os
import pwd
import re
import shutil
import socket
import stat
import tempfile
import time
from datetime import datetime, timezone

from ansible_collections.safedeploy.fleet.plugins.module_utils._files import fsync_dir, write_json_atomic
from ansible_collections.safedeploy.fleet.plugins.module_utils._archive import (
    ArchiveError,
    extract,
)

HISTORY_FORMAT = 1
DEFAULT_KEEP = 5
DEFAULT_MAX_UNPACKED_BYTES = 1024 ** 3
LOCK_TIMEOUT = 300.0
# Bounds the history file; releases keep their own records regardless.
MAX_HISTORY_ENTRIES = 1000
STATES = ("present", "active", "good", "bad", "absent")
VERDICTS = ("pending", "good", "bad")

VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
MAX_VERSION_LENGTH = 128
CHECKSUM_RE = re.compile(r"^sha256:([0-9a-fA-F]{64})$")
CHECKSUM_SKIP = "skip"
# Prefix of work directories inside releases/; never a valid version.
TMP_PREFIX = ".tmp-"


# -- errors -------------------------------------------------------------------


class ReleaseError(Exception):
    """Root of every error raised by the release store."""


class InvalidParameterError(ReleaseError):
    """A parameter has an unacceptable value."""


class VersionError(InvalidParameterError):
    pass


class ChecksumFormatError(InvalidParameterError):
    pass


class SharedPathError(InvalidParameterError):
    pass


class ChecksumRequiredError(InvalidParameterError):
    pass


class ArtifactError(ReleaseError):
    """The artifact (src) is missing or unreadable."""


class ChecksumMismatchError(ReleaseError):
    pass


class UnpackError(ReleaseError):
    """The archive was refused or could not be unpacked; ``__cause__`` says why."""


class ReleaseConflictError(ReleaseError):
    """The version exists on disk with different (or unknown) content."""


class ReleaseNotFoundError(ReleaseError):
    pass


class ProtectedReleaseError(ReleaseError):
    """Removing this release would remove the current or last good one."""


class StoreLayoutError(ReleaseError):
    """Something under the application root is not what the store expects."""


class HistoryError(ReleaseError):
    """history.json is unreadable or malformed."""


class LockTimeoutError(ReleaseError):
    pass


# -- parameter validation -----------------------------------------------------


def validate_version(version) -> str:
    if not isinstance(version, str) or not version:
        raise VersionError(f"version must be a non-empty string, got {version!r}")
    if len(version) > MAX_VERSION_LENGTH:
        raise VersionError(
            f"version {version!r} is longer than {MAX_VERSION_LENGTH} characters"
        )
    if not VERSION_RE.fullmatch(version):
        raise VersionError(
            f"version {version!r} is not allowed: it must match {VERSION_RE.pattern} (letters, digits and . _ + -, "
            "starting with a letter or digit)"
        )
    # Dots are allowed (1.2.3) but nothing that reads as a path step.
    if ".." in version:
        raise VersionError(f"version {version!r} is not allowed: it contains '..'")
    return version


def parse_checksum(checksum):
    """'sha256:<hex>' -> lower-case hex; 'skip' -> None."""
    if checksum == CHECKSUM_SKIP:
        return None
    match = CHECKSUM_RE.fullmatch(checksum or "") if isinstance(checksum, str) else None
    if not match:
        raise ChecksumFormatError(
            f"checksum {checksum!r} is malformed: expected 'sha256:' followed by 64 hex digits, "
            "or the literal 'skip'"
        )
    return match.group(1).lower()


def validate_shared_paths(paths) -> list:
    result = []
    for raw in paths or []:
        if not isinstance(raw, str) or not raw.strip("/ "):
            raise SharedPathError(f"shared_paths entry {raw!r} is empty")
        if raw.startswith("/"):
            raise SharedPathError(
                f"shared_paths entry {raw!r} must be relative to the release, not absolute"
            )
        parts = [p for p in raw.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise SharedPathError(f"shared_paths entry {raw!r} must not contain '..'")
        if not parts:
            raise SharedPathError(f"shared_paths entry {raw!r} names the release itself")
        norm = "/".join(parts)
        if norm not in result:
            result.append(norm)
    # A path nested in another shared path would be created through its link.
    for a in result:
        for b in result:
            if a != b and b.startswith(a + "/"):
                raise SharedPathError(
                    f"shared_paths entries {a!r} and {b!r} overlap; list only {a!r}"
                )
    return result


def validate_keep(keep) -> int:
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 2:
        raise InvalidParameterError(
            "keep must be an integer of at least 2 (the current release and one to "
            f"roll back to), got {keep!r}"
        )
    return keep


def validate_max_bytes(max_bytes) -> int:
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
        raise InvalidParameterError(
            f"max_unpacked_bytes must be a positive integer, got {max_bytes!r}"
        )
    return max_bytes


def default_actor(environ=None) -> str:
    """SAFEDEPLOY_ACTOR, else the (sudo-invoking) user at this host."""
    env = os.environ if environ is None else environ
    if env.get("SAFEDEPLOY_ACTOR"):
        return env["SAFEDEPLOY_ACTOR"]
    user = env.get("SUDO_USER") or env.get("USER") or env.get("LOGNAME")
    if not user:
        try:
            user = pwd.getpwuid(os.getuid()).pw_name
        except KeyError:
            user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _resolve_ids(owner, group):
    uid = gid = -1
    if owner not in (None, ""):
        try:
            uid = int(owner) if str(owner).isdigit() else pwd.getpwnam(owner).pw_uid
        except KeyError:
            raise InvalidParameterError(f"owner {owner!r} does not exist on this host") from None
    if group not in (None, ""):
        try:
            gid = int(group) if str(group).isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise InvalidParameterError(f"group {group!r} does not exist on this host") from None
    return uid, gid


# -- history ------------------------------------------------------------------


def empty_history() -> dict:
    return {"format": HISTORY_FORMAT, "seq": 0, "releases": {}, "history": []}


def _check_history_shape(data, path):
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("releases"), dict)
        or not isinstance(data.get("history"), list)
        or not isinstance(data.get("seq", 0), int)
    ):
        raise HistoryError(
            f"history file {path} does not have the expected structure "
            "(an object with 'releases' and 'history'); move it aside to start afresh"
        )
    if data.get("format", HISTORY_FORMAT) > HISTORY_FORMAT:
        raise HistoryError(
            f"history file {path} has format {data.get('format')!r}, newer than this "
            f"collection understands ({HISTORY_FORMAT})"
        )
    data.setdefault("format", HISTORY_FORMAT)
    data.setdefault("seq", 0)
    return data


def _next_seq(hist) -> int:
    hist["seq"] = int(hist.get("seq", 0)) + 1
    return hist["seq"]


def record_unpack(hist, version, sha256, actor, now=None):
    now = now or utc_now()
    hist["releases"][version] = {
        "sha256": sha256,
        "unpacked_at": now,
        "unpacked_by": actor,
        "order": _next_seq(hist),
        "activated_at": None,
        "activation_order": None,
        "verdict": "pending",
        "verdicts": [],
        "removed_at": None,
    }


def record_activation(hist, version, sha256, actor, previous, now=None):
    now = now or utc_now()
    rec = hist["releases"].get(version)
    if rec is None or rec.get("removed_at"):
        # A release put on disk by hand: adopt it, content unknown.
        record_unpack(hist, version, sha256, actor, now)
        rec = hist["releases"][version]
    seq = _next_seq(hist)
    rec["order"] = seq
    rec["activation_order"] = seq
    rec["activated_at"] = now
    hist["history"].append(
        {
            "version": version,
            "sha256": rec.get("sha256"),
            "activated_at": now,
            "by": actor,
            "previous": previous,
            "verdict": rec.get("verdict", "pending"),
        }
    )
    del hist["history"][:-MAX_HISTORY_ENTRIES]


def record_verdict(hist, version, verdict, actor, now=None):
    now = now or utc_now()
    rec = hist["releases"][version]
    rec["verdict"] = verdict
    rec.setdefault("verdicts", []).append({"verdict": verdict, "at": now, "by": actor})
    # Verdicts are per version (and content): keep the log entries in step.
    for entry in hist["history"]:
        if entry.get("version") == version and entry.get("sha256") == rec.get("sha256"):
            entry["verdict"] = verdict


def record_removal(hist, version, now=None):
    rec = hist["releases"].get(version)
    if rec is not None:
        rec["removed_at"] = now or utc_now()


def last_good(hist):
    """Newest-activated version whose verdict is good (on disk or not)."""
    good = [
        (rec["activation_order"], version)
        for version, rec in hist["releases"].items()
        if rec.get("verdict") == "good" and rec.get("activation_order") is not None
    ]
    return max(good)[1] if good else None


def rollback_candidate(hist, current, on_disk):
    """Newest (activation/unpack order) good release that is not current and is on disk."""
    good = [
        (rec.get("order", 0), version)
        for version, rec in hist["releases"].items()
        if rec.get("verdict") == "good"
        and version != current
        and version in on_disk
        and not rec.get("removed_at")
    ]
    return max(good)[1] if good else None


def newest_good_on_disk(hist, on_disk):
    return rollback_candidate(hist, None, on_disk)


def plan_prune(hist, on_disk, current, keep):
    """Versions to remove so that ``keep`` tracked releases stay.

    Never the current release, the newest good one, the last good one nor the
    rollback candidate; these count towards ``keep``. Untracked directories
    (not unpacked by this store) are left alone.
    """
    tracked = [
        v for v in on_disk
        if v in hist["releases"] and not hist["releases"][v].get("removed_at")
    ]
    protected = {current, last_good(hist), rollback_candidate(hist, current, on_disk),
                 newest_good_on_disk(hist, on_disk)}
    protected.discard(None)
    kept = [v for v in tracked if v in protected]
    newest_first = sorted(tracked, key=lambda v: hist["releases"][v].get("order", 0), reverse=True)
    for version in newest_first:
        if len(kept) >= keep:
            break
        if version not in kept:
            kept.append(version)
    return [v for v in newest_first if v not in kept][::-1]


# -- files --------------------------------------------------------------------


def _random_suffix():
    return os.urandom(4).hex()


def _remove_tree(path):
    """Rename away first so a half-deleted release never sits under its name."""
    parent = os.path.dirname(path)
    doomed = os.path.join(parent, f"{TMP_PREFIX}remove-{os.path.basename(path)}-{_random_suffix()}")
    os.rename(path, doomed)
    fsync_dir(parent)
    shutil.rmtree(doomed, ignore_errors=True)


def hash_fileobj(fileobj) -> str:
    digest = hashlib.sha256()
    for chunk in iter(lambda: fileobj.read(1024 * 1024), b""):
        digest.update(chunk)
    return digest.hexdigest()


def _open_artifact(src):
    if not src:
        raise ArtifactError("src is required to unpack a release")
    try:
        fileobj = open(src, "rb")  # noqa: SIM115 - the caller closes it (with ...)
    except OSError as exc:
        raise ArtifactError(f"cannot open artifact src={src!r}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(os.fstat(fileobj.fileno()).st_mode):
        fileobj.close()
        raise ArtifactError(f"artifact src={src!r} is not a regular file")
    return fileobj


class ReleaseStore:
    """Paths and primitive operations on one application root."""

    def __init__(self, root):
        if not root or not isinstance(root, str) or not os.path.isabs(root):
            raise InvalidParameterError(f"path must be an absolute directory, got {root!r}")
        if "\x00" in root or "\n" in root:
            raise InvalidParameterError(f"path {root!r} contains a NUL or newline character")
        if ".." in root.split("/"):
            raise InvalidParameterError(
                f"path {root!r} contains a '..' component: give the application root itself"
            )
        self.root = os.path.normpath(root)
        self.releases_dir = os.path.join(self.root, "releases")
        self.shared_dir = os.path.join(self.root, "shared")
        self.meta_dir = os.path.join(self.root, ".safedeploy")
        self.history_path = os.path.join(self.meta_dir, "history.json")
        self.lock_path = os.path.join(self.meta_dir, "lock")
        self.current_path = os.path.join(self.root, "current")

    def release_path(self, version):
        return os.path.join(self.releases_dir, version)

    def exists(self):
        return os.path.isdir(self.root)

    # -- reading --

    def read_current(self):
        """Return (version or None, warning or None)."""
        try:
            st = os.lstat(self.current_path)
        except FileNotFoundError:
            return None, None
        if not stat.S_ISLNK(st.st_mode):
            raise StoreLayoutError(
                f"{self.current_path} exists but is not a symlink; move it aside so the store can manage it"
            )
        target = os.readlink(self.current_path)
        norm = os.path.normpath(os.path.join(self.root, target))
        if os.path.dirname(norm) == self.releases_dir and VERSION_RE.fullmatch(os.path.basename(norm)):
            return os.path.basename(norm), None
        return None, f"{self.current_path} points to {target!r}, which is not a release of this store"

    def on_disk(self):
        try:
            names = os.listdir(self.releases_dir)
        except FileNotFoundError:
            return set()
        return {
            n for n in names
            if VERSION_RE.fullmatch(n) and os.path.isdir(os.path.join(self.releases_dir, n))
            and not os.path.islink(os.path.join(self.releases_dir, n))
        }

    def load_history(self):
        try:
            with open(self.history_path, "rb") as handle:
                raw = handle.read()
        except FileNotFoundError:
            return empty_history()
        try:
            data = json.loads(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise HistoryError(
                f"history file {self.history_path} is not valid JSON ({exc}); move it aside to start afresh"
            ) from None
        return _check_history_shape(data, self.history_path)

    # -- writing --

    def ensure_layout(self):
        for path in (self.root, self.releases_dir, self.shared_dir, self.meta_dir):
            try:
                os.mkdir(path, 0o755)
            except FileExistsError:
                if not os.path.isdir(path):
                    raise StoreLayoutError(f"{path} exists but is not a directory") from None

    @contextlib.contextmanager
    def locked(self, timeout=LOCK_TIMEOUT):
        """Exclusive flock on .safedeploy/lock, held for the whole block."""
        os.makedirs(self.meta_dir, 0o755, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                        raise
                    if time.monotonic() >= deadline:
                        raise LockTimeoutError(
                            f"could not lock {self.lock_path} within {timeout:.0f} seconds: another release run "
                            "holds it"
                        ) from None
                    time.sleep(0.05)
            yield
        finally:
            os.close(fd)  # closing drops the lock

    def save_history(self, data):
        """Write via a temp file + os.replace, so readers never see half a file."""
        write_json_atomic(self.history_path, data, prefix="history.json.tmp-")

    def switch_current(self, version):
        """Point current at releases/<version>: new symlink, then rename over."""
        if os.path.lexists(self.current_path) and not os.path.islink(self.current_path):
            raise StoreLayoutError(
                f"{self.current_path} exists but is not a symlink; refusing to replace it"
            )
        tmp = f"{self.current_path}.tmp-{_random_suffix()}"
        os.symlink(os.path.join("releases", version), tmp)
        try:
            os.replace(tmp, self.current_path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        fsync_dir(self.root)

    def remove_release(self, version):
        _remove_tree(self.release_path(version))

    def clean_stale_tmp(self):
        """Work files left by a killed run (we hold the lock, so none is live)."""
        removed = []
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(self.releases_dir):
                if name.startswith(TMP_PREFIX):
                    shutil.rmtree(os.path.join(self.releases_dir, name), ignore_errors=True)
                    removed.append(name)
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(self.root):
                full = os.path.join(self.root, name)
                if name.startswith("current.tmp-") and os.path.islink(full):
                    os.unlink(full)
                    removed.append(name)
        return removed

    def unpack(self, version, fileobj, max_bytes, shared_paths, uid=-1, gid=-1):
        """Unpack into releases/.tmp-<version>-<random>, then rename into place."""
        final = self.release_path(version)
        tmp = tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{version}-", dir=self.releases_dir)
        try:
            try:
                extract(fileobj, tmp, max_bytes)
            except ArchiveError as exc:
                raise UnpackError(
                    "refusing to unpack {} for version {!r}: {}".format(
                        getattr(fileobj, "name", "artifact"), version, exc)
                ) from exc
            for rel in shared_paths:
                self._link_shared(tmp, rel, uid, gid)
            os.chmod(tmp, 0o755)  # mkdtemp creates it 0700
            if uid != -1 or gid != -1:
                _chown_tree(tmp, uid, gid)
            if os.path.lexists(final):
                raise ReleaseConflictError(f"{final} appeared while unpacking; not replacing it")
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        fsync_dir(self.releases_dir)
        return final

    def _link_shared(self, release_dir, rel, uid, gid):
        """<release>/<rel> becomes a symlink to <root>/shared/<rel>.

        If shared/<rel> does not exist yet it is seeded with what the archive
        had at <rel> (moved there), or created as an empty directory.
        """
        inside = os.path.join(release_dir, rel)
        parent = os.path.dirname(inside)
        real_release = os.path.realpath(release_dir)
        os.makedirs(parent, 0o755, exist_ok=True)
        real_parent = os.path.realpath(parent)
        if real_parent != real_release and not real_parent.startswith(real_release + os.sep):
            raise SharedPathError(
                f"shared_paths entry {rel!r} passes through a symlink leading outside the release"
            )
        shared = os.path.join(self.shared_dir, rel)
        if os.path.islink(inside):
            # A link from the archive would point somewhere else once moved.
            os.unlink(inside)
        if not os.path.lexists(shared):
            os.makedirs(os.path.dirname(shared), 0o755, exist_ok=True)
            if os.path.lexists(inside):
                shutil.move(inside, shared)
            else:
                os.mkdir(shared, 0o755)
            if uid != -1 or gid != -1:
                _chown_tree(shared, uid, gid)
        elif os.path.isdir(inside):
            shutil.rmtree(inside)
        elif os.path.lexists(inside):
            os.unlink(inside)
        # Relative, so the app root can be moved or bind-mounted elsewhere;
        # the temp dir sits at the same depth as the final release dir.
        os.symlink(os.path.relpath(shared, os.path.dirname(inside)), inside)


def _chown_tree(top, uid, gid):
    os.chown(top, uid, gid, follow_symlinks=False)
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)


# -- the module's entry points -----------------------------------------------


def _snapshot(current, on_disk, verdict_of=None):
    snap = {"current": current, "releases": sorted(on_disk)}
    if verdict_of is not None:
        snap["verdict"] = verdict_of
    return snap


def apply(path, version, state="present", src=None, checksum=None, keep=DEFAULT_KEEP,
          shared_paths=None, max_unpacked_bytes=DEFAULT_MAX_UNPACKED_BYTES, actor=None,
          owner=None, group=None, check_mode=False, lock_timeout=LOCK_TIMEOUT):
    """Bring one version of the release store at ``path`` to ``state``.

    Returns the module result (changed, version, current, previous_current,
    last_good, rollback_candidate, pruned, release_path, sha256, warnings,
    diff). In check mode nothing on disk is touched, not even the lock file.
    """
    version = validate_version(version)
    if state not in STATES:
        raise InvalidParameterError("state must be one of {}, got {!r}".format(", ".join(STATES), state))
    keep = validate_keep(keep)
    max_unpacked_bytes = validate_max_bytes(max_unpacked_bytes)
    shared = validate_shared_paths(shared_paths)
    # False: no checksum given; None: 'skip'; else the expected hex digest.
    expected = parse_checksum(checksum) if checksum is not None else False
    actor = actor or default_actor()
    uid, gid = _resolve_ids(owner, group)
    store = ReleaseStore(path)

    if check_mode or (state in ("absent", "good", "bad") and not store.exists()):
        lock = contextlib.nullcontext()
    else:
        if state in ("present", "active"):
            if src and not os.path.isdir(store.releases_dir):
                # A store never used (a fresh host): nothing of it is created
                # before the artifact is accepted, checksum and every member.
                preverify(src, version, expected, max_unpacked_bytes)
            store.ensure_layout()
        lock = store.locked(lock_timeout)

    with lock:
        return _apply_locked(store, version, state, src, expected, keep, shared,
                             max_unpacked_bytes, actor, uid, gid, check_mode)


def _apply_locked(store, version, state, src, expected, keep, shared, max_bytes, actor,
                  uid, gid, check_mode):
    warnings = []
    hist = store.load_history()
    current, note = store.read_current()
    if note:
        warnings.append(note)
    on_disk = store.on_disk()
    rec = hist["releases"].get(version)
    if rec is not None and rec.get("removed_at") and version not in on_disk:
        rec = None
    before = _snapshot(current, on_disk, rec.get("verdict") if rec and state in ("good", "bad") else None)
    new = copy.deepcopy(hist)
    changed = False
    pruned = []
    sha256 = rec.get("sha256") if rec else None
    release_path = store.release_path(version)
    if not check_mode and store.exists():
        store.clean_stale_tmp()

    if state in ("present", "active"):
        if version in on_disk:
            if src:
                sha256 = _check_existing(store, version, rec, src, expected, warnings)
        else:
            if not src:
                raise ReleaseNotFoundError(
                    f"release {version!r} is not at {release_path} and no src was given to unpack it"
                )
            if expected is False:
                raise ChecksumRequiredError(
                    f"checksum is required to unpack src={src!r} (use 'sha256:<hex>', or 'skip' to "
                    "unpack an unverified artifact)"
                )
            with _open_artifact(src) as fileobj:
                sha256 = _verify(fileobj, src, expected, warnings)
                if check_mode:
                    try:
                        extract(fileobj, None, max_bytes)
                    except ArchiveError as exc:
                        raise UnpackError(
                            f"refusing to unpack {src} for version {version!r}: {exc}"
                        ) from exc
                else:
                    store.unpack(version, fileobj, max_bytes, shared, uid, gid)
            record_unpack(new, version, sha256, actor)
            on_disk = on_disk | {version}
            changed = True
            if not check_mode:
                store.save_history(new)

    if state == "active":
        new_rec = new["releases"].get(version)
        if new_rec and new_rec.get("verdict") == "bad":
            warnings.append(f"activating version {version!r} although its verdict is bad")
        if current != version:
            if not check_mode:
                store.switch_current(version)
            record_activation(new, version, sha256, actor, current)
            changed = True
        pruned = plan_prune(new, on_disk, version, keep)
        if pruned:
            changed = True
            for old in pruned:
                if not check_mode:
                    store.remove_release(old)
                record_removal(new, old)
            on_disk = on_disk - set(pruned)
        after_current = version
    elif state in ("good", "bad"):
        if version not in on_disk and rec is None:
            raise ReleaseNotFoundError(
                f"cannot mark version {version!r} {state}: it was never unpacked under {store.root}"
            )
        if rec is None:
            record_unpack(new, version, None, actor)  # adopt a hand-made release
        if new["releases"][version].get("verdict") != state:
            record_verdict(new, version, state, actor)
            changed = True
        after_current = current
    elif state == "absent":
        if version in on_disk:
            reason = None
            if version == current:
                reason = "it is the current release"
            elif version == last_good(hist):
                reason = "it is the last good release"
            elif version == rollback_candidate(hist, current, on_disk):
                reason = "it is the newest good release, the one a rollback would restore"
            if reason:
                raise ProtectedReleaseError(
                    f"refusing to remove release {version!r}: {reason} (activate another release or mark "
                    "it bad first)"
                )
            if not check_mode:
                store.remove_release(version)
            record_removal(new, version)
            on_disk = on_disk - {version}
            changed = True
        after_current = current
    else:
        after_current = current

    if changed and not check_mode and state != "present":
        store.save_history(new)

    final_rec = new["releases"].get(version) or {}
    after = _snapshot(after_current, on_disk,
                      final_rec.get("verdict") if state in ("good", "bad") else None)
    return {
        "changed": changed,
        "version": version,
        "current": after_current,
        "previous_current": current,
        "last_good": last_good(new),
        "rollback_candidate": rollback_candidate(new, after_current, on_disk),
        "pruned": pruned,
        "release_path": release_path,
        "sha256": sha256 or final_rec.get("sha256"),
        "warnings": warnings,
        "diff": {"before": before, "after": after},
    }


def preverify(src, version, expected, max_bytes):
    """Refuse an artifact before a new store is created: no checksum, a wrong one, or a member that
    would not unpack (the same checks as the unpack, nothing written)."""
    if expected is False:
        raise ChecksumRequiredError(
            f"checksum is required to unpack src={src!r} (use 'sha256:<hex>', or 'skip' to "
            "unpack an unverified artifact)"
        )
    with _open_artifact(src) as fileobj:
        _verify(fileobj, src, expected, [])
        try:
            extract(fileobj, None, max_bytes)
        except ArchiveError as exc:
            raise UnpackError(f"refusing to unpack {src} for version {version!r}: {exc}") from exc


def _verify(fileobj, src, expected, warnings):
    """Hash the artifact; compare before anything reads it as an archive."""
    actual = hash_fileobj(fileobj)
    fileobj.seek(0)
    if expected is None:
        warnings.append(
            f"checksum verification skipped (checksum=skip) for src={src!r}; its sha256 is {actual}"
        )
    elif not hmac.compare_digest(actual, expected):
        raise ChecksumMismatchError(
            f"checksum mismatch for src={src!r}: expected sha256:{expected}, got sha256:{actual}"
        )
    return actual


def _check_existing(store, version, rec, src, expected, warnings):
    """An already unpacked version may only be 'unpacked again' from identical bytes."""
    with _open_artifact(src) as fileobj:
        actual = _verify(fileobj, src, None if expected is False else expected, [])
    if expected is None:
        warnings.append(f"checksum verification skipped (checksum=skip) for src={src!r}")
    recorded = rec.get("sha256") if rec else None
    if recorded is None:
        raise ReleaseConflictError(
            f"release {version!r} already exists at {store.release_path(version)} but its sha256 "
            f"was never recorded, so it cannot be compared with src={src!r}; remove it or omit src"
        )
    if recorded != actual:
        raise ReleaseConflictError(
            f"release {version!r} already exists at {store.release_path(version)} with sha256 "
            f"{recorded}, but src={src!r} has sha256 {actual}; a release is never replaced, "
            "use a new version"
        )
    return actual


def info(path):
    """Read-only view of the store, for release_info."""
    store = ReleaseStore(path)
    if not store.exists():
        return {"exists": False, "current": None, "last_good": None,
                "rollback_candidate": None, "history": [], "releases": [], "warnings": []}
    hist = store.load_history()
    current, note = store.read_current()
    on_disk = store.on_disk()
    releases = []
    for version in on_disk:
        rec = hist["releases"].get(version) or {}
        releases.append({
            "version": version,
            "path": store.release_path(version),
            "sha256": rec.get("sha256"),
            "verdict": rec.get("verdict"),
            "unpacked_at": rec.get("unpacked_at"),
            "activated_at": rec.get("activated_at"),
            "current": version == current,
            "_order": rec.get("order", 0),
        })
    releases.sort(key=lambda r: (r["_order"], r["version"]), reverse=True)
    for entry in releases:
        del entry["_order"]
    return {
        "exists": True,
        "current": current,
        "last_good": last_good(hist),
        "rollback_candidate": rollback_candidate(hist, current, on_disk),
        "history": hist["history"],
        "releases": releases,
        "warnings": [note] if note else [],
    }
