# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

from fractions import Fraction

import pytest
from ansible_collections.safedeploy.fleet.plugins.module_utils._weights import (
    WeightPrecisionError,
    WeightValueError,
    achievable_range,
    canary_weights,
    share_percent,
)

FLEETS = [(1, 5), (2, 4), (3, 3), (1, 23)]
PERCENTS = [1, 10, 50, 100]


def exact_share(plan, n_c, n_s):
    return Fraction(100 * n_c * plan.canary_weight, n_c * plan.canary_weight + n_s * plan.stable_weight)


def best_error_brute_force(percent, n_c, n_s, max_weight):
    target = Fraction(str(percent))
    return min(
        abs(Fraction(100 * n_c * a, n_c * a + n_s * b) - target)
        for a in range(1, max_weight + 1)
        for b in range(1, max_weight + 1)
    )


@pytest.mark.parametrize("n_c,n_s", FLEETS)
@pytest.mark.parametrize("percent", PERCENTS)
def test_required_cases(percent, n_c, n_s):
    plan = canary_weights(percent, n_c, n_s)
    assert 0 <= plan.canary_weight <= 256 and 0 <= plan.stable_weight <= 256
    assert plan.canary_weight >= 1  # a positive percent never rounds to 0
    if percent == 100:
        assert plan.stable_weight == 0 and plan.achieved_percent == 100
    else:
        assert plan.stable_weight >= 1
    assert plan.achieved_percent == pytest.approx(share_percent(plan.canary_weight, plan.stable_weight, n_c, n_s))
    assert plan.achieved_percent == float(exact_share(plan, n_c, n_s))
    assert abs(plan.achieved_percent - percent) <= 0.5
    assert plan.requested_percent == percent


@pytest.mark.parametrize("n_c,n_s", FLEETS)
@pytest.mark.parametrize("percent", [1, 10, 50])
def test_these_are_exact(percent, n_c, n_s):
    # every required case below 100 % is hit exactly with weights in 1..256
    plan = canary_weights(percent, n_c, n_s)
    assert exact_share(plan, n_c, n_s) == percent


def test_one_percent_one_vs_five():
    plan = canary_weights(1, 1, 5)
    # 1*w_c / (1*w_c + 5*w_s) = 1/100  <=>  99*w_c = 5*w_s
    assert 99 * plan.canary_weight == 5 * plan.stable_weight
    assert (plan.canary_weight, plan.stable_weight) == (5, 99)


def test_prefers_base_weight_for_stable_when_exact():
    assert canary_weights(50, 3, 3).as_dict()["canary_weight"] == 100
    assert canary_weights(50, 3, 3).stable_weight == 100
    assert canary_weights(50, 2, 4).stable_weight == 100


@pytest.mark.parametrize("percent", [0.01, 0.3, 1, 2.5, 7, 10, 12.5, 33.3, 50, 66.7, 90, 97, 99, 99.9])
@pytest.mark.parametrize("n_c,n_s", [(1, 5), (2, 4), (3, 3), (1, 23), (4, 1), (1, 1), (7, 11)])
def test_optimal_against_brute_force(percent, n_c, n_s):
    plan = canary_weights(percent, n_c, n_s, max_weight=64, base_weight=32)
    assert abs(exact_share(plan, n_c, n_s) - Fraction(str(percent))) == best_error_brute_force(percent, n_c, n_s, 64)
    assert 1 <= plan.canary_weight <= 64 and 1 <= plan.stable_weight <= 64


@pytest.mark.parametrize("percent", [0.001, 0.01, 0.1, 0.5])
@pytest.mark.parametrize("n_c,n_s", FLEETS)
def test_tiny_percent_never_rounds_to_zero(percent, n_c, n_s):
    plan = canary_weights(percent, n_c, n_s)
    assert plan.canary_weight >= 1
    assert plan.achieved_percent > 0


def test_precision_limits_reported():
    low, high = achievable_range(1, 23)
    assert low == pytest.approx(100 / (1 + 23 * 256))
    assert high == pytest.approx(100 * 256 / (256 + 23))
    # 99.9 % with 1 canary against 23 stable servers cannot be reached
    plan = canary_weights(99.9, 1, 23)
    assert (plan.canary_weight, plan.stable_weight) == (256, 1)
    assert plan.achieved_percent == pytest.approx(high)
    assert plan.error < -8
    with pytest.raises(WeightPrecisionError, match=r"99.9% of traffic to 1 canary server\(s\) against 23"):
        canary_weights(99.9, 1, 23, max_error=1)
    # within tolerance: no error
    assert canary_weights(33.3, 1, 5, max_error=0.05).achieved_percent == pytest.approx(33.3, abs=0.05)


def test_zero_percent():
    plan = canary_weights(0, 1, 5)
    assert (plan.canary_weight, plan.stable_weight, plan.achieved_percent) == (0, 100, 0.0)
    assert canary_weights(0, 0, 5).stable_weight == 100


def test_hundred_percent():
    plan = canary_weights(100, 2, 4, base_weight=50)
    assert (plan.canary_weight, plan.stable_weight, plan.achieved_percent) == (50, 0, 100.0)
    assert canary_weights(100, 2, 0).canary_weight == 100


def test_string_percent():
    assert canary_weights("10%", 1, 5) == canary_weights(10, 1, 5)
    assert canary_weights("10", 1, 5).achieved_percent == 10


@pytest.mark.parametrize("kwargs,match", [
    ({"percent": -1}, "percent must be between 0 and 100, got -1"),
    ({"percent": 100.5}, "got 100.5"),
    ({"percent": "ten"}, "'ten'"),
    ({"percent": float("nan")}, "finite"),
    ({"percent": True}, "True"),
    ({"percent": 10, "n_stable": 0}, "needs at least one stable server"),
    ({"percent": 10, "n_canary": 0}, "needs at least one canary server"),
    ({"percent": 10, "n_canary": -1}, "n_canary must be >= 0, got -1"),
    ({"percent": 10, "n_stable": 1.5}, "n_stable must be an integer"),
    ({"percent": 10, "max_weight": 300}, "max_weight must be between 1 and 256, got 300"),
    ({"percent": 10, "max_weight": 0}, "max_weight must be between 1 and 256, got 0"),
    ({"percent": 10, "base_weight": 0}, "base_weight must be between 1 and 256, got 0"),
    ({"percent": 10, "base_weight": 200, "max_weight": 100}, "base_weight must be between 1 and 100, got 200"),
    ({"percent": 10, "max_error": -1}, "max_error must be >= 0"),
])
def test_validation(kwargs, match):
    args = {"n_canary": 1, "n_stable": 5}
    args.update(kwargs)
    with pytest.raises(WeightValueError, match=match.replace("(", r"\(").replace(")", r"\)")):
        canary_weights(**args)


def test_share_percent_all_zero():
    with pytest.raises(WeightValueError, match="all weights are 0"):
        share_percent(0, 0, 1, 5)


def test_max_weight_one():
    # only 1/1 is possible: the share is fixed by the server counts
    plan = canary_weights(10, 1, 5, base_weight=1, max_weight=1)
    assert (plan.canary_weight, plan.stable_weight) == (1, 1)
    assert plan.achieved_percent == pytest.approx(100 / 6)
