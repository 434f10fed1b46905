# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A deployment lock per application and fleet, kept in a file on one host.

Python standard library only: this runs on the target host.

The lock record lives in ``<directory>/<name>.lock`` (JSON). Every
read-modify-write of it happens while holding an exclusive ``fcntl.flock`` on
a companion guard file ``<directory>/<name>.guard`` (never replaced, so all
processes lock the same inode); the record itself is written to a temporary
file and moved into place with ``os.replace``, so readers never see half a
record. Taking a free lock, taking over a stale one, refreshing and releasing
are therefore atomic with respect to each other.

The clock and the sleep function are injectable so the logic can be tested
without waiting.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from ansible_collections.safedeploy.fleet.plugins.module_utils._files import fsync_dir, write_json_atomic

LOCK_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
LOCK_NAME_MAX = 200
RECORD_VERSION = 1
OWNER_FIELDS = ("user", "controller", "pid", "awx_job_id")


class LockError(Exception):
    """Base class of every deploy lock error."""


class LockNameError(LockError, ValueError):
    """The lock name is not acceptable."""


class LockOptionError(LockError, ValueError):
    """An option (ttl, wait, run_id, ...) has a wrong value."""


class LockCorruptError(LockError):
    """The lock file exists but cannot be read as a lock record."""


class LockHeldError(LockError):
    """The lock is held by another run (and did not become free in time)."""

    def __init__(self, message, holder):
        super().__init__(message)
        self.holder = holder


class LockNotOwnedError(LockError):
    """Release or refresh of a lock that belongs to another run (or to nobody)."""

    def __init__(self, message, holder=None):
        super().__init__(message)
        self.holder = holder


@dataclass
class LockResult:
    changed: bool = False
    acquired: bool = False
    holder: dict | None = None
    stale_takeover: bool = False
    forced_takeover: bool = False
    previous_holder: dict | None = None
    before: dict | None = None
    after: dict | None = None
    warnings: list = field(default_factory=list)
    msg: str = ""


def validate_name(name):
    """Return ``name`` if it is a valid lock name, else raise LockNameError."""
    if not isinstance(name, str) or not name:
        raise LockNameError(f"lock name must be a non-empty string, got {name!r}")
    if len(name) > LOCK_NAME_MAX:
        raise LockNameError(f"lock name {name!r} is longer than {LOCK_NAME_MAX} characters")
    # fullmatch: '$' alone would let a trailing newline through (a second lock file).
    if not LOCK_NAME_RE.fullmatch(name):
        raise LockNameError(
            f"lock name {name!r} is invalid: it must match {LOCK_NAME_RE.pattern} (letters, digits, '.', '_', '-'; "
            "starting with a letter or digit)"
        )
    return name


def iso_utc(epoch):
    """ISO-8601 UTC timestamp (seconds precision, ``Z`` suffix) of an epoch."""
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: UP017 (targets may be < 3.11)


def normalize_owner(owner=None, **fields):
    """Build the owner dict of a lock record.

    ``owner`` may be None, a string (kept as ``description``) or a dict (its
    keys are kept). Keyword ``fields`` (user, controller, pid, awx_job_id, ...)
    override what ``owner`` says when they are not None.
    """
    if owner is None:
        result = {}
    elif isinstance(owner, str):
        result = {"description": owner} if owner else {}
    elif isinstance(owner, dict):
        result = {str(k): v for k, v in owner.items()}
    else:
        raise LockOptionError(
            f"owner must be a string or a dict, got {type(owner).__name__} {owner!r}"
        )
    for key, value in fields.items():
        if value is not None and value != "":
            result[key] = value
    for key in OWNER_FIELDS:
        result.setdefault(key, None)
    return result


def describe_holder(record, now=None):
    """One line naming who holds a lock and until when."""
    if not record:
        return "nobody"
    owner = record.get("owner") or {}
    parts = ["user %s" % (owner.get("user") or "unknown")]
    parts.append("on controller %s" % (owner.get("controller") or "unknown"))
    extra = []
    if owner.get("pid") not in (None, ""):
        extra.append("pid {}".format(owner["pid"]))
    if owner.get("awx_job_id") not in (None, ""):
        job = "AWX job {}".format(owner["awx_job_id"])
        if owner.get("awx_job_template"):
            job += " '{}'".format(owner["awx_job_template"])
        extra.append(job)
    extra.append("run_id {}".format(record.get("run_id")))
    if owner.get("description"):
        extra.append(str(owner["description"]))
    text = "{} ({})".format(" ".join(parts), ", ".join(extra))
    text += " since {}".format(record.get("acquired_at", "unknown"))
    expires_at = record.get("expires_at", "unknown")
    expires_epoch = record.get("expires_at_epoch")
    if now is not None and isinstance(expires_epoch, (int, float)):
        delta = round(expires_epoch - now)
        if delta >= 0:
            text += f", expires {expires_at} (in {delta}s)"
        else:
            text += f", expired {expires_at} ({-delta}s ago)"
    else:
        text += f", expires {expires_at}"
    return text


class DeployLock:
    """A named lock in a directory.

    :param directory: where ``<name>.lock`` and ``<name>.guard`` live.
    :param name: the lock name (validated).
    :param clock: returns the current time as epoch seconds.
    :param sleep: sleeps the given seconds (used while waiting).
    :param poll_interval: seconds between attempts while waiting.
    :param hostname: recorded in the lock record (the host keeping the lock).
    """

    def __init__(self, directory, name, clock=time.time, sleep=time.sleep, poll_interval=1.0,
                 hostname=None):
        if not isinstance(directory, str) or not directory:
            raise LockOptionError(f"lock path must be a non-empty directory path, got {directory!r}")
        # A relative path would be resolved against the module's temporary
        # working directory: every run would hold a lock of its own.
        if not os.path.isabs(directory) or "\n" in directory or "\x00" in directory:
            raise LockOptionError(f"lock path must be an absolute directory path, got {directory!r}")
        self.name = validate_name(name)
        self.directory = directory
        self.lock_file = os.path.join(directory, name + ".lock")
        self.guard_file = os.path.join(directory, name + ".guard")
        self.clock = clock
        self.sleep = sleep
        if poll_interval <= 0:
            raise LockOptionError(f"poll_interval must be > 0, got {poll_interval!r}")
        self.poll_interval = poll_interval
        self.hostname = hostname if hostname is not None else socket.gethostname()

    # -- file level -------------------------------------------------------

    def read(self):
        """Return the current lock record, or None when there is no lock."""
        try:
            with open(self.lock_file, encoding="utf-8") as handle:
                text = handle.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise LockCorruptError(f"cannot read lock file {self.lock_file}: {exc}") from exc
        try:
            record = json.loads(text)
        except ValueError as exc:
            raise LockCorruptError(
                f"lock file {self.lock_file} is not valid JSON ({exc}); remove it or use force"
            ) from exc
        if not isinstance(record, dict) or not record.get("run_id") \
                or not isinstance(record.get("expires_at_epoch"), (int, float)):
            raise LockCorruptError(
                f"lock file {self.lock_file} is not a lock record (needs run_id and expires_at_epoch); "
                "remove it or use force"
            )
        return record

    def _read_for_update(self, force):
        try:
            return self.read()
        except LockCorruptError:
            if force:
                return {"run_id": None, "corrupt": True}
            raise

    def _write(self, record):
        write_json_atomic(self.lock_file, record, prefix="." + self.name + ".", suffix=".tmp")

    def _remove(self):
        try:
            os.unlink(self.lock_file)
        except FileNotFoundError:
            return False
        fsync_dir(self.directory)
        return True

    def _guard(self):
        """Context manager: exclusive flock on the guard file."""
        return _Guard(self.guard_file)

    def _ensure_directory(self):
        try:
            os.makedirs(self.directory, mode=0o755, exist_ok=True)
        except OSError as exc:
            raise LockError(f"cannot create lock directory {self.directory}: {exc}") from exc
        if not os.path.isdir(self.directory):
            raise LockError(f"lock path {self.directory} exists and is not a directory")

    # -- records ----------------------------------------------------------

    def _new_record(self, run_id, owner, ttl, now, acquired_at=None):
        acquired = now if acquired_at is None else acquired_at
        expires = now + ttl
        return {
            "version": RECORD_VERSION,
            "name": self.name,
            "run_id": run_id,
            "owner": owner,
            "host": self.hostname,
            "ttl": ttl,
            "acquired_at": iso_utc(acquired),
            "acquired_at_epoch": acquired,
            "expires_at": iso_utc(expires),
            "expires_at_epoch": expires,
            "refreshed_at": iso_utc(now),
            "refreshed_at_epoch": now,
        }

    @staticmethod
    def is_expired(record, now):
        return record.get("expires_at_epoch", 0) <= now

    # -- operations -------------------------------------------------------

    def acquire(self, run_id, owner=None, ttl=3600, wait=0, force=False, check_mode=False):
        """Take the lock (state=present).

        Free -> taken. Ours (same run_id) -> unchanged. Someone else's and
        expired -> taken over with a warning. Someone else's and live -> wait
        up to ``wait`` seconds for it to be released or to expire, then raise
        LockHeldError naming the holder; ``force`` takes it over at once.
        """
        _check_run_id(run_id)
        ttl = _check_seconds("ttl", ttl, minimum=1)
        wait = _check_seconds("wait", wait, minimum=0)
        owner = normalize_owner(owner)

        if check_mode:
            return self._acquire_check(run_id, owner, ttl, force)

        self._ensure_directory()
        deadline = self.clock() + wait
        while True:
            with self._guard():
                now = self.clock()
                current = self._read_for_update(force)
                result = self._try_take(current, run_id, owner, ttl, now, force)
                if result is not None:
                    return result
            # held by someone else and still valid
            remaining = deadline - self.clock()
            if remaining <= 0:
                now = self.clock()
                message = f"deploy lock {self.name} is held by {describe_holder(current, now)}"
                if wait:
                    message += f"; gave up after waiting {_fmt_seconds(wait)}s"
                message += f" (lock file {self.lock_file} on {self.hostname})"
                raise LockHeldError(message, current)
            self.sleep(min(self.poll_interval, remaining))

    def _try_take(self, current, run_id, owner, ttl, now, force):
        """Under the guard: return a LockResult, or None if held by another."""
        result = LockResult(before=current)
        if current is None:
            record = self._new_record(run_id, owner, ttl, now)
            self._write(record)
            result.changed = result.acquired = True
            result.holder = result.after = record
            result.msg = f"deploy lock {self.name} taken"
            return result
        if current.get("corrupt"):
            record = self._new_record(run_id, owner, ttl, now)
            self._write(record)
            result.changed = result.acquired = result.forced_takeover = True
            result.holder = result.after = record
            result.before = None
            result.warnings.append(f"deploy lock {self.name}: unreadable lock file {self.lock_file} replaced (force)")
            result.msg = f"deploy lock {self.name} taken (corrupt lock file replaced)"
            return result
        if current.get("run_id") == run_id:
            if not self.is_expired(current, now):
                result.acquired = True
                result.holder = result.after = current
                result.msg = f"deploy lock {self.name} already held by this run"
                return result
            record = self._new_record(run_id, owner, ttl, now,
                                      acquired_at=current.get("acquired_at_epoch"))
            self._write(record)
            result.changed = result.acquired = True
            result.holder = result.after = record
            result.warnings.append("deploy lock {}: this run's own lock had expired at {}; renewed".format(self.name, current.get("expires_at")))
            result.msg = f"deploy lock {self.name} renewed"
            return result
        expired = self.is_expired(current, now)
        if not expired and not force:
            return None
        record = self._new_record(run_id, owner, ttl, now)
        self._write(record)
        result.changed = result.acquired = True
        result.holder = result.after = record
        result.previous_holder = current
        if expired:
            result.stale_takeover = True
            result.warnings.append(f"deploy lock {self.name}: took over stale lock of {describe_holder(current, now)}")
            result.msg = f"deploy lock {self.name} taken over from a stale holder"
        else:
            result.forced_takeover = True
            result.warnings.append(f"deploy lock {self.name}: forcibly took over the live lock of {describe_holder(current, now)}")
            result.msg = f"deploy lock {self.name} forcibly taken over"
        return result

    def _acquire_check(self, run_id, owner, ttl, force):
        now = self.clock()
        try:
            current = self.read()
        except LockCorruptError as exc:
            if not force:
                raise
            current = None
            warn = f"{exc}; would be replaced (force)"
        else:
            warn = None
        result = LockResult(before=current)
        if warn:
            result.warnings.append(warn)
        if current is not None and current.get("run_id") == run_id and not self.is_expired(current, now):
            result.acquired = True
            result.holder = result.after = current
            result.msg = f"deploy lock {self.name} already held by this run"
            return result
        would = self._new_record(run_id, owner, ttl, now)
        if current is None or current.get("run_id") == run_id:
            result.changed = result.acquired = True
            result.holder = result.after = would
            result.msg = f"deploy lock {self.name} would be taken"
            return result
        if self.is_expired(current, now) or force:
            result.changed = result.acquired = True
            result.holder = result.after = would
            result.previous_holder = current
            if self.is_expired(current, now):
                result.stale_takeover = True
                result.warnings.append(f"deploy lock {self.name}: would take over stale lock of {describe_holder(current, now)}")
            else:
                result.forced_takeover = True
                result.warnings.append(f"deploy lock {self.name}: would forcibly take over the live lock of {describe_holder(current, now)}")
            result.msg = f"deploy lock {self.name} would be taken over"
            return result
        result.holder = result.after = current
        result.msg = f"deploy lock {self.name} is held by {describe_holder(current, now)}; a real run would wait or fail"
        result.warnings.append(result.msg)
        return result

    def release(self, run_id=None, force=False, check_mode=False):
        """Release the lock (state=absent).

        Missing -> unchanged. Ours -> removed. Someone else's ->
        LockNotOwnedError naming the holder, unless ``force``.
        """
        if run_id is not None:
            _check_run_id(run_id)
        elif not force:
            raise LockOptionError("run_id is required to release a lock (or use force)")
        if check_mode or not os.path.isdir(self.directory):
            current = self.read() if not force else self._safe_read()
            return self._release_decide(current, run_id, force, apply=False)
        with self._guard():
            current = self._read_for_update(force)
            return self._release_decide(current, run_id, force, apply=True)

    def _safe_read(self):
        try:
            return self.read()
        except LockCorruptError:
            return {"run_id": None, "corrupt": True}

    def _release_decide(self, current, run_id, force, apply):
        now = self.clock()
        result = LockResult(before=None if (current and current.get("corrupt")) else current)
        if current is None:
            result.msg = f"deploy lock {self.name} is not held"
            return result
        if current.get("run_id") != run_id and not current.get("corrupt"):
            if not force:
                raise LockNotOwnedError(
                    f"cannot release deploy lock {self.name}: it is held by {describe_holder(current, now)}, not by run_id {run_id}; use force to "
                    "release it anyway",
                    current,
                )
            result.previous_holder = current
            result.warnings.append(f"deploy lock {self.name}: forcibly released the lock of {describe_holder(current, now)}")
        if apply:
            self._remove()
        result.changed = True
        result.holder = None
        result.after = None
        result.msg = "deploy lock {} {}".format(self.name, "released" if apply else "would be released")
        return result

    def refresh(self, run_id, ttl=3600, owner=None, force=False, check_mode=False):
        """Extend the expiry of our lock (state=refreshed).

        Ours -> expires_at = now + ttl. Missing -> LockNotOwnedError.
        Someone else's -> LockNotOwnedError naming the holder, unless
        ``force`` (then it becomes ours).
        """
        _check_run_id(run_id)
        ttl = _check_seconds("ttl", ttl, minimum=1)
        owner = normalize_owner(owner)
        if check_mode or not os.path.isdir(self.directory):
            current = self.read() if not force else self._safe_read()
            return self._refresh_decide(current, run_id, ttl, owner, force, apply=False)
        with self._guard():
            current = self._read_for_update(force)
            return self._refresh_decide(current, run_id, ttl, owner, force, apply=True)

    def _refresh_decide(self, current, run_id, ttl, owner, force, apply):
        now = self.clock()
        if current is None:
            raise LockNotOwnedError(
                f"cannot refresh deploy lock {self.name}: it is not held (no {self.lock_file}); take it with state=present"
            )
        result = LockResult(before=None if current.get("corrupt") else current)
        ours = current.get("run_id") == run_id
        if not ours:
            if not force:
                raise LockNotOwnedError(
                    f"cannot refresh deploy lock {self.name}: it is held by {describe_holder(current, now)}, not by run_id {run_id}",
                    current,
                )
            result.previous_holder = None if current.get("corrupt") else current
            result.forced_takeover = True
            result.warnings.append(f"deploy lock {self.name}: forcibly took over the lock of {describe_holder(current, now)}")
            record = self._new_record(run_id, owner, ttl, now)
        else:
            if self.is_expired(current, now):
                result.warnings.append("deploy lock {}: this run's lock had expired at {}; refreshed".format(self.name, current.get("expires_at")))
            record = self._new_record(run_id, current.get("owner") or owner, ttl, now,
                                      acquired_at=current.get("acquired_at_epoch"))
            record["host"] = current.get("host", self.hostname)
        if apply:
            self._write(record)
        result.changed = True
        result.acquired = True
        result.holder = result.after = record
        result.msg = "deploy lock {} {} until {}".format(
            self.name, "refreshed" if apply else "would be refreshed", record["expires_at"])
        return result


class _Guard:
    def __init__(self, path):
        self.path = path
        self.fd = None

    def __enter__(self):
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise LockError(f"cannot open lock guard file {self.path}: {exc}") from exc
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX)
                break
            except OSError as exc:  # pragma: no cover - EINTR is retried by Python 3.5+
                if exc.errno != errno.EINTR:
                    os.close(self.fd)
                    raise LockError(f"cannot lock guard file {self.path}: {exc}") from exc
        return self

    def __exit__(self, *exc):
        try:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        finally:
            os.close(self.fd)
        return False


def _check_run_id(run_id):
    if not isinstance(run_id, str) or not run_id.strip():
        raise LockOptionError(f"run_id must be a non-empty string, got {run_id!r}")


def _check_seconds(label, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise LockOptionError(f"{label} must be a number of seconds, got {value!r}")
    if value < minimum:
        raise LockOptionError(f"{label} must be >= {minimum} seconds, got {value!r}")
    return value


def _fmt_seconds(value):
    return f"{int(value)}" if float(value).is_integer() else f"{value:.1f}"
