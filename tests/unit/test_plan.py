# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import itertools

import pytest
from ansible.executor.playbook_executor import PlaybookExecutor
from ansible_collections.safedeploy.fleet.plugins.module_utils._plan import (
    CapacityRefusedError,
    CapacityValueError,
    HostListError,
    PlanError,
    SerialValueError,
    format_plan,
    max_failures_tolerated,
    max_unavailable_to_int,
    plan_batches,
    serial_batches,
    would_abort,
)

# -- Ansible's own batching, as the reference ---------------------------------


class _FakeInventory:
    def __init__(self, hosts):
        self._hosts = hosts

    def get_hosts(self, pattern, order=None):
        return list(self._hosts)


class _FakePlay:
    def __init__(self, serial):
        self.hosts = "all"
        self.order = None
        self.serial = serial


def ansible_batches(hosts, serial):
    """Run ansible-core's PlaybookExecutor._get_serialized_batches on a fake play."""
    executor = PlaybookExecutor.__new__(PlaybookExecutor)
    executor._inventory = _FakeInventory(hosts)
    if serial is None:
        serial_list = []
    elif isinstance(serial, list):
        serial_list = serial
    else:
        serial_list = [serial]
    return executor._get_serialized_batches(_FakePlay(serial_list))


SERIALS = [
    None, [], 1, 2, 3, 5, 7, 100, 0, -1, "1", "2",
    "0%", "1%", "10%", "20%", "25%", "30%", "33%", "50%", "66%", "99%", "100%", "150%", "-50%",
    [1], [1, 2], [1, "25%"], [1, 5, 10], ["10%", "50%"], [1, "30%", "100%"], [2, 0], [1, -1],
    ["1%", 2, "20%"], [3, 2, 1], ["50%", 1],
]
HOST_COUNTS = [1, 2, 3, 4, 5, 6, 7, 10, 13, 24, 50, 101]


@pytest.mark.parametrize("n_hosts", HOST_COUNTS)
@pytest.mark.parametrize("serial", SERIALS, ids=repr)
def test_serial_batches_match_ansible(n_hosts, serial):
    hosts = [f"web{i:03d}" for i in range(1, n_hosts + 1)]
    assert serial_batches(hosts, serial) == ansible_batches(hosts, serial)


def test_serial_batches_match_ansible_exhaustive_small():
    items = [1, 2, 3, "10%", "34%", "50%", "100%", 0]
    for n_hosts in range(1, 12):
        hosts = [f"h{i}" for i in range(n_hosts)]
        for length in (1, 2, 3):
            for combo in itertools.product(items, repeat=length):
                serial = list(combo)
                assert serial_batches(hosts, serial) == ansible_batches(hosts, serial), (n_hosts, serial)


def test_serial_examples():
    hosts = [f"web{i}" for i in range(1, 11)]
    assert serial_batches(hosts, [1, "30%"]) == [
        ["web1"], ["web2", "web3", "web4"], ["web5", "web6", "web7"], ["web8", "web9", "web10"]]
    assert serial_batches(hosts, "5%") == [[h] for h in hosts]  # rounds down to 0 -> at least 1
    assert serial_batches(hosts, None) == [hosts]
    assert serial_batches(hosts, 0) == [hosts]
    assert serial_batches([], 2) == []
    # duplicates dropped, order kept
    assert serial_batches(["a", "b", "a", "c"], 2) == [["a", "b"], ["c"]]


@pytest.mark.parametrize("bad", ["12.5%", "abc", "%", 2.5, True, {"a": 1}, ["1", "x"]])
def test_bad_serial_values_refused(bad):
    with pytest.raises(SerialValueError) as info:
        serial_batches(["a", "b"], bad)
    shown = bad[1] if isinstance(bad, list) else bad
    assert repr(shown) in str(info.value)


@pytest.mark.parametrize("bad", ["web1", None, [1, 2], ["ok", ""]])
def test_bad_host_lists_refused(bad):
    with pytest.raises(HostListError):
        serial_batches(bad, 1)


# -- capacity guard -----------------------------------------------------------

SIX = [f"web{i}" for i in range(1, 7)]


def test_plan_within_capacity():
    plan = plan_batches(SIX, serial=1)
    assert plan.batches == [[h] for h in SIX]
    assert plan.batch_sizes == [1] * 6
    assert plan.max_unavailable_count == 1  # 25% of 6 = 1.5 -> 1
    assert plan.backend_size == 6
    assert plan.as_dict()["out_of_rotation"] == [[h] for h in SIX]


def test_plan_refused_names_batch_servers_and_limit():
    with pytest.raises(CapacityRefusedError) as info:
        plan_batches(SIX, serial=[1, 1, 4], max_unavailable="25%", max_unavailable_name="rolling_max_unavailable")
    assert str(info.value) == (
        "batch 3 would take 4 of 6 servers out of rotation (web3, web4, web5, web6); "
        "rolling_max_unavailable allows 1 (25%)")
    assert info.value.batch_number == 3
    assert info.value.out == ["web3", "web4", "web5", "web6"]
    assert info.value.allowed == 1
    assert info.value.batches[2] == ["web3", "web4", "web5", "web6"]


def test_plan_refused_with_integer_limit():
    with pytest.raises(CapacityRefusedError, match=r"batch 1 would take 3 of 6 .*max_unavailable allows 2$"):
        plan_batches(SIX, serial="50%", max_unavailable=2)


def test_percent_limit_of_backend_not_hosts():
    # 4 hosts in the play, 20 servers in the backend: 25% of 20 = 5
    hosts = ["a", "b", "c", "d"]
    plan = plan_batches(hosts, serial=4, backend_size=20)
    assert plan.max_unavailable_count == 5
    assert plan.batches == [hosts]


def test_last_server_guard():
    with pytest.raises(CapacityRefusedError, match="at least one server must stay in rotation"):
        plan_batches(["web1", "web2"], serial=2, max_unavailable="100%")
    with pytest.raises(CapacityRefusedError, match="batch 1 would take 1 of 1 servers"):
        plan_batches(["solo"], serial=1, max_unavailable=1)
    # no serial at all: one batch of everything
    with pytest.raises(CapacityRefusedError, match="at least one server must stay"):
        plan_batches(SIX, serial=None, max_unavailable=6)
    # 5 of 6 is fine when allowed
    assert plan_batches(SIX, serial=5, max_unavailable=5).batch_sizes == [5, 1]


def test_currently_down_counts():
    # web1 already down: batches of 1 take 2 out at once -> refused at 25% of 6
    with pytest.raises(CapacityRefusedError) as info:
        plan_batches(SIX, serial=1, currently_down=["web1"], max_unavailable_name="rolling_max_unavailable")
    # batch 1 is web1 itself: only 1 out
    assert info.value.batch_number == 2
    assert str(info.value) == (
        "batch 2 would take 2 of 6 servers out of rotation (web2; already down: web1); "
        "rolling_max_unavailable allows 1 (25%)")
    plan = plan_batches(SIX, serial=1, currently_down=["web1"], max_unavailable=2)
    assert plan.out_of_rotation[1] == ["web2", "web1"]


def test_currently_down_outside_play_and_last_server():
    # backend of 3, play touches 2, the third is down: no batch may take both
    with pytest.raises(CapacityRefusedError, match="3 of 3 servers.*at least one server must stay"):
        plan_batches(["a", "b"], serial=2, backend_size=3, currently_down=["c"], max_unavailable=3)
    # the third one down and serial 1: 2 of 3 out, 1 up
    plan = plan_batches(["a", "b"], serial=1, backend_size=3, currently_down=["c"], max_unavailable=2)
    assert plan.batches == [["a"], ["b"]]
    # all down but the batch: refuse
    with pytest.raises(CapacityRefusedError, match="at least one"):
        plan_batches(["a"], serial=1, backend_size=3, currently_down=["b", "c"], max_unavailable=3)


def test_capacity_value_errors():
    with pytest.raises(CapacityValueError, match="backend_size 3 is smaller than the 6"):
        plan_batches(SIX, serial=1, backend_size=3)
    with pytest.raises(CapacityValueError, match="'150%'"):
        plan_batches(SIX, serial=1, max_unavailable="150%")
    with pytest.raises(CapacityValueError, match="allows no server"):
        plan_batches(SIX, serial=1, max_unavailable=0)
    with pytest.raises(CapacityValueError, match="'lots'"):
        plan_batches(SIX, serial=1, max_unavailable="lots")
    with pytest.raises(CapacityValueError):
        plan_batches(SIX, serial=1, backend_size="6")


@pytest.mark.parametrize("value,backend,expected", [
    ("25%", 6, 1), ("25%", 4, 1), ("25%", 3, 1), ("25%", 8, 2), ("50%", 7, 3), ("100%", 5, 5),
    ("0%", 10, 1), (2, 10, 2), ("3", 10, 3),
])
def test_max_unavailable_to_int(value, backend, expected):
    assert max_unavailable_to_int(value, backend) == expected


# -- max_fail_percentage ------------------------------------------------------

@pytest.mark.parametrize("batch_size,failed,pct,expected", [
    (10, 0, 0, False),
    (10, 1, 0, True),  # 0 tolerates no failure
    (10, 2, 20, False),  # exactly at the limit does not abort (strictly greater)
    (10, 3, 20, True),
    (4, 1, 25, False),
    (4, 2, 25, True),
    (3, 1, 33, True),  # 33.3% > 33%
    (3, 1, 34, False),
    (1, 0, 0, False),
    (5, 4, 100, False),
    (5, 5, 100, True),  # the whole batch failed: ansible-playbook stops anyway
    (1, 1, 100, True),
    (5, 5, None, True),  # no max_fail_percentage, whole batch failed
    (5, 4, None, False),
    (2, 1, 49.9, True),
    (2, 1, 50, False),
])
def test_would_abort(batch_size, failed, pct, expected):
    assert would_abort(batch_size, failed, pct) is expected


def test_would_abort_matches_ansible_formula():
    # the linear strategy: (failed / batch_size) > max_fail_percentage / 100.0
    for batch_size in range(1, 21):
        for failed in range(batch_size):
            for pct in range(101):
                expected = (failed / batch_size) > (pct / 100.0)
                assert would_abort(batch_size, failed, pct) is expected, (batch_size, failed, pct)


def test_would_abort_errors():
    with pytest.raises(PlanError, match="batch_size"):
        would_abort(0, 0, 10)
    with pytest.raises(PlanError, match="failed"):
        would_abort(3, 4, 10)
    with pytest.raises(PlanError, match="max_fail_percentage"):
        would_abort(3, 1, 120)


def test_max_failures_tolerated():
    assert max_failures_tolerated(10, 20) == 2
    assert max_failures_tolerated(10, 0) == 0
    assert max_failures_tolerated(10, None) == 9
    assert max_failures_tolerated(1, 50) == 0
    assert max_failures_tolerated(4, 100) == 3


# -- format -------------------------------------------------------------------

def test_format_plan():
    text = format_plan([["web1"], ["web2", "web3"], ["web4"]], currently_down=["web9"], backend_size=10,
                       max_unavailable_count=3)
    lines = text.splitlines()
    assert lines[0] == ("Rolling plan: 4 hosts in 3 batches (backend of 10 servers; at most 3 out of rotation; "
                        "already down: web9)")
    assert lines[1] == "  batch 1/3  1 host   web1  [1/4 done after]"
    assert lines[2] == "  batch 2/3  2 hosts  web2, web3  [3/4 done after]"
    assert lines[3] == "  batch 3/3  1 host   web4  [4/4 done after]"
    assert format_plan([["a"]]).splitlines()[0] == "Rolling plan: 1 host in 1 batch"
