# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import json
import multiprocessing
import os
import threading
import time

import pytest
from ansible_collections.safedeploy.fleet.plugins.module_utils._lock import (
    DeployLock,
    LockCorruptError,
    LockHeldError,
    LockNameError,
    LockNotOwnedError,
    LockOptionError,
    describe_holder,
    normalize_owner,
    validate_name,
)

NAME = "demoapp-production"


class FakeClock:
    """Clock + sleep pair; ``on_sleep`` lets a test act while 'waiting'."""

    def __init__(self, start=1_700_000_000.0):
        self.now = start
        self.slept = []
        self.on_sleep = None

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.now += seconds
        if self.on_sleep:
            self.on_sleep(self)


def alice():
    return normalize_owner(user="alice", controller="awx-node-1", pid="4242", awx_job_id="57")


def bob():
    return normalize_owner(user="bob", controller="laptop", pid="999")


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def lockdir(tmp_path):
    return str(tmp_path / "locks")


def make(lockdir, clock, name=NAME):
    return DeployLock(lockdir, name, clock=clock, sleep=clock.sleep, hostname="lb1")


def test_take_free_lock_writes_record(lockdir, clock):
    res = make(lockdir, clock).acquire("run-a", owner=alice(), ttl=600)
    assert res.changed and res.acquired
    assert not res.stale_takeover and res.previous_holder is None
    with open(os.path.join(lockdir, NAME + ".lock")) as fh:
        record = json.load(fh)
    assert record["name"] == NAME
    assert record["run_id"] == "run-a"
    assert record["owner"]["user"] == "alice"
    assert record["owner"]["awx_job_id"] == "57"
    assert record["host"] == "lb1"
    assert record["acquired_at_epoch"] == clock.now
    assert record["expires_at_epoch"] == clock.now + 600
    assert record["acquired_at"] == "2023-11-14T22:13:20Z"
    assert record["expires_at"] == "2023-11-14T22:23:20Z"
    assert res.holder == record


def test_second_run_fails_naming_holder(lockdir, clock):
    make(lockdir, clock).acquire("run-a", owner=alice(), ttl=600)
    clock.now += 60
    with pytest.raises(LockHeldError) as info:
        make(lockdir, clock).acquire("run-b", owner=bob())
    msg = str(info.value)
    for part in ("demoapp-production", "alice", "awx-node-1", "pid 4242", "AWX job 57", "run-a",
                 "since 2023-11-14T22:13:20Z", "expires 2023-11-14T22:23:20Z", "in 540s"):
        assert part in msg, (part, msg)
    assert info.value.holder["run_id"] == "run-a"
    assert clock.slept == []  # wait=0 fails at once


def test_wait_then_fail_after_wait(lockdir, clock):
    make(lockdir, clock).acquire("run-a", owner=alice(), ttl=600)
    start = clock.now
    with pytest.raises(LockHeldError) as info:
        make(lockdir, clock).acquire("run-b", owner=bob(), wait=5)
    assert "gave up after waiting 5s" in str(info.value)
    assert clock.now - start == pytest.approx(5)


def test_wait_then_succeed_when_released(lockdir, clock):
    make(lockdir, clock).acquire("run-a", owner=alice(), ttl=600)

    def release_on_third_sleep(c):
        if len(c.slept) == 3:
            make(lockdir, c).release("run-a")

    clock.on_sleep = release_on_third_sleep
    res = make(lockdir, clock).acquire("run-b", owner=bob(), wait=30)
    assert res.changed and res.acquired
    assert res.holder["run_id"] == "run-b"
    assert not res.stale_takeover
    assert len(clock.slept) == 3


def test_wait_with_real_clock_and_thread(lockdir):
    first = DeployLock(lockdir, NAME, poll_interval=0.05)
    first.acquire("run-a", owner=alice())

    def later():
        time.sleep(0.3)
        DeployLock(lockdir, NAME).release("run-a")

    thread = threading.Thread(target=later)
    thread.start()
    started = time.monotonic()
    res = DeployLock(lockdir, NAME, poll_interval=0.05).acquire("run-b", owner=bob(), wait=10)
    thread.join()
    assert res.acquired and res.holder["run_id"] == "run-b"
    assert time.monotonic() - started < 5


def test_wait_until_lock_expires_then_takeover(lockdir, clock):
    make(lockdir, clock).acquire("run-a", owner=alice(), ttl=10)
    res = make(lockdir, clock).acquire("run-b", owner=bob(), wait=60)
    assert res.acquired and res.stale_takeover
    assert clock.now - 1_700_000_000.0 >= 10


def test_stale_takeover_with_warning(lockdir, clock):
    make(lockdir, clock).acquire("run-a", owner=alice(), ttl=600)
    clock.now += 601
    res = make(lockdir, clock).acquire("run-b", owner=bob(), ttl=600)
    assert res.changed and res.acquired and res.stale_takeover
    assert res.previous_holder["run_id"] == "run-a"
    assert res.holder["run_id"] == "run-b"
    assert len(res.warnings) == 1
    assert "stale" in res.warnings[0] and "alice" in res.warnings[0] and "run-a" in res.warnings[0]
    assert make(lockdir, clock).read()["owner"]["user"] == "bob"


def test_same_run_id_is_idempotent(lockdir, clock):
    lock = make(lockdir, clock)
    first = lock.acquire("run-a", owner=alice(), ttl=600)
    clock.now += 30
    second = lock.acquire("run-a", owner=alice(), ttl=600)
    assert not second.changed and second.acquired
    assert second.holder == first.holder


def test_same_run_id_after_expiry_renews(lockdir, clock):
    lock = make(lockdir, clock)
    lock.acquire("run-a", owner=alice(), ttl=10)
    clock.now += 20
    res = lock.acquire("run-a", owner=alice(), ttl=10)
    assert res.changed and res.acquired and not res.stale_takeover
    assert res.holder["expires_at_epoch"] == clock.now + 10
    assert res.warnings


def test_force_takes_live_lock(lockdir, clock):
    make(lockdir, clock).acquire("run-a", owner=alice())
    res = make(lockdir, clock).acquire("run-b", owner=bob(), force=True)
    assert res.changed and res.forced_takeover and not res.stale_takeover
    assert res.previous_holder["run_id"] == "run-a"
    assert "alice" in res.warnings[0]


def test_release_own_lock(lockdir, clock):
    lock = make(lockdir, clock)
    lock.acquire("run-a", owner=alice())
    res = lock.release("run-a")
    assert res.changed and not res.acquired
    assert lock.read() is None
    assert not os.path.exists(lock.lock_file)


def test_release_missing_lock_is_no_change(lockdir, clock):
    res = make(lockdir, clock).release("run-a")
    assert not res.changed
    assert not os.path.exists(lockdir)


def test_release_by_other_run_refused(lockdir, clock):
    make(lockdir, clock).acquire("run-a", owner=alice())
    with pytest.raises(LockNotOwnedError) as info:
        make(lockdir, clock).release("run-b")
    assert "alice" in str(info.value) and "run-a" in str(info.value) and "run-b" in str(info.value)
    assert make(lockdir, clock).read()["run_id"] == "run-a"


def test_release_by_other_run_with_force(lockdir, clock):
    make(lockdir, clock).acquire("run-a", owner=alice())
    res = make(lockdir, clock).release("run-b", force=True)
    assert res.changed and res.previous_holder["run_id"] == "run-a"
    assert res.warnings
    assert make(lockdir, clock).read() is None


def test_release_needs_run_id_or_force(lockdir, clock):
    with pytest.raises(LockOptionError):
        make(lockdir, clock).release(None)
    make(lockdir, clock).acquire("run-a")
    assert make(lockdir, clock).release(None, force=True).changed


def test_refresh_extends_expiry(lockdir, clock):
    lock = make(lockdir, clock)
    first = lock.acquire("run-a", owner=alice(), ttl=600)
    clock.now += 500
    res = lock.refresh("run-a", ttl=600)
    assert res.changed and res.acquired
    assert res.holder["expires_at_epoch"] == clock.now + 600
    assert res.holder["acquired_at"] == first.holder["acquired_at"]
    assert res.holder["owner"] == first.holder["owner"]
    assert lock.read()["expires_at_epoch"] == clock.now + 600


def test_refresh_other_or_missing_refused(lockdir, clock):
    with pytest.raises(LockNotOwnedError, match="not held"):
        make(lockdir, clock).refresh("run-a")
    make(lockdir, clock).acquire("run-a", owner=alice())
    with pytest.raises(LockNotOwnedError, match="alice"):
        make(lockdir, clock).refresh("run-b")


def test_check_mode_touches_nothing(lockdir, clock):
    lock = make(lockdir, clock)
    res = lock.acquire("run-a", owner=alice(), check_mode=True)
    assert res.changed and res.acquired
    assert not os.path.exists(lockdir)
    assert lock.release("run-a", check_mode=True).changed is False

    lock.acquire("run-a", owner=alice())
    before = sorted(os.listdir(lockdir))
    with open(lock.lock_file) as fh:
        content = fh.read()
    mtime = os.stat(lock.lock_file).st_mtime_ns

    held = make(lockdir, clock).acquire("run-b", owner=bob(), wait=100, check_mode=True)
    assert not held.changed and not held.acquired
    assert held.holder["run_id"] == "run-a"
    assert "alice" in held.msg and held.warnings
    assert clock.slept == []  # no waiting in check mode

    same = lock.acquire("run-a", check_mode=True)
    assert not same.changed and same.acquired

    rel = lock.release("run-a", check_mode=True)
    assert rel.changed
    ref = lock.refresh("run-a", ttl=10, check_mode=True)
    assert ref.changed
    clock.now += 4000
    stale = make(lockdir, clock).acquire("run-b", owner=bob(), check_mode=True)
    assert stale.changed and stale.stale_takeover and stale.previous_holder["run_id"] == "run-a"
    with pytest.raises(LockNotOwnedError):
        make(lockdir, clock).release("run-b", check_mode=True)

    assert sorted(os.listdir(lockdir)) == before
    with open(lock.lock_file) as fh:
        assert fh.read() == content
    assert os.stat(lock.lock_file).st_mtime_ns == mtime


@pytest.mark.parametrize("name", ["", "-lead", ".hidden", "a/b", "../etc", "a b", "x" * 201, "über", "a\nb"])
def test_bad_names_refused(name, lockdir, clock):
    with pytest.raises(LockNameError) as info:
        DeployLock(lockdir, name)
    assert repr(name)[:40] in str(info.value) or name == "x" * 201


@pytest.mark.parametrize("name", ["demoapp-production", "a", "A1._-", "9lives"])
def test_good_names(name):
    assert validate_name(name) == name


def test_bad_options(lockdir, clock):
    lock = make(lockdir, clock)
    with pytest.raises(LockOptionError, match="ttl"):
        lock.acquire("run-a", ttl=0)
    with pytest.raises(LockOptionError, match="wait"):
        lock.acquire("run-a", wait=-1)
    with pytest.raises(LockOptionError, match="run_id"):
        lock.acquire("")
    with pytest.raises(LockOptionError, match="owner"):
        lock.acquire("run-a", owner=42)


def test_corrupt_lock_file(lockdir, clock):
    os.makedirs(lockdir)
    path = os.path.join(lockdir, NAME + ".lock")
    with open(path, "w") as fh:
        fh.write("{not json")
    with pytest.raises(LockCorruptError, match=NAME + ".lock"):
        make(lockdir, clock).acquire("run-a")
    res = make(lockdir, clock).acquire("run-a", force=True)
    assert res.acquired and res.warnings


def test_owner_normalization():
    assert normalize_owner("nightly job")["description"] == "nightly job"
    owner = normalize_owner({"user": "x", "team": "web"}, user="alice", pid=None)
    assert owner["user"] == "alice" and owner["team"] == "web" and owner["pid"] is None
    text = describe_holder({"run_id": "r", "owner": owner, "acquired_at": "A", "expires_at": "B",
                            "expires_at_epoch": 100.0}, now=130.0)
    assert "expired B (30s ago)" in text


def _contender(lockdir, run_id, barrier, queue):
    barrier.wait()
    try:
        DeployLock(lockdir, NAME).acquire(run_id, owner={"user": run_id}, ttl=600)
        queue.put((run_id, "won"))
    except LockHeldError as exc:
        queue.put((run_id, "lost:" + exc.holder["run_id"]))


def test_concurrent_takers_exactly_one_wins(tmp_path):
    lockdir = str(tmp_path / "locks")
    ctx = multiprocessing.get_context("fork")
    count = 12
    barrier = ctx.Barrier(count)
    queue = ctx.Queue()
    procs = [ctx.Process(target=_contender, args=(lockdir, f"run-{i}", barrier, queue)) for i in range(count)]
    for proc in procs:
        proc.start()
    results = [queue.get(timeout=30) for _ignored in procs]
    for proc in procs:
        proc.join(timeout=30)
    winners = [run for run, outcome in results if outcome == "won"]
    assert len(winners) == 1, results
    losers = [outcome for _ignored, outcome in results if outcome != "won"]
    assert all(outcome == "lost:" + winners[0] for outcome in losers)
    assert DeployLock(lockdir, NAME).read()["run_id"] == winners[0]
    leftovers = [f for f in os.listdir(lockdir) if f.endswith(".tmp")]
    assert leftovers == []
