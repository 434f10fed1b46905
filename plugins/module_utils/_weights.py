# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Weight arithmetic for canary steps: "N % of traffic" -> HAProxy weights.

Python standard library only.

With ``n_c`` canary servers at weight ``w_c`` and ``n_s`` stable servers at
weight ``w_s`` in one HAProxy backend (weighted balancing such as
``roundrobin``), the canary share of traffic is::

    n_c * w_c / (n_c * w_c + n_s * w_s)

HAProxy weights are integers 0..256 and weight 0 means "no traffic", so
not every share can be hit exactly. ``canary_weights`` searches every
integer pair within ``1..max_weight`` for the one whose share is closest to
the requested one (exact rational arithmetic, no float ties), preferring,
among equally close pairs, a stable weight near ``base_weight`` (so stable
servers keep their usual weight when possible) and then a canary weight near
``base_weight``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

HAPROXY_MAX_WEIGHT = 256


class WeightError(ValueError):
    """Base class of every weight computation error."""


class WeightValueError(WeightError):
    """An input (percent, server counts, weights) is out of range."""


class WeightPrecisionError(WeightError):
    """The closest achievable share is further from the request than allowed."""


@dataclass(frozen=True)
class WeightPlan:
    canary_weight: int
    stable_weight: int
    achieved_percent: float
    requested_percent: float = 0.0
    n_canary: int = 0
    n_stable: int = 0

    @property
    def error(self):
        """achieved - requested, in percentage points."""
        return self.achieved_percent - self.requested_percent

    def as_dict(self):
        return {
            "canary_weight": self.canary_weight,
            "stable_weight": self.stable_weight,
            "achieved_percent": self.achieved_percent,
            "requested_percent": self.requested_percent,
            "n_canary": self.n_canary,
            "n_stable": self.n_stable,
        }


def _to_fraction(label, value):
    if isinstance(value, bool):
        raise WeightValueError(f"{label} must be a number, got {value!r}")
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise WeightValueError(f"{label} must be a finite number, got {value!r}")
        return Fraction(repr(value))
    if isinstance(value, str):
        text = value.strip()
        if text.endswith("%"):
            text = text[:-1].strip()
        try:
            return Fraction(text)
        except (ValueError, ZeroDivisionError):
            raise WeightValueError(f"{label} must be a number, got {value!r}") from None
    raise WeightValueError(f"{label} must be a number, got {value!r}")


def _check_int(label, value, minimum, maximum=None):
    if isinstance(value, bool) or not isinstance(value, int):
        raise WeightValueError(f"{label} must be an integer, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        if maximum is None:
            raise WeightValueError(f"{label} must be >= {minimum}, got {value!r}")
        raise WeightValueError(f"{label} must be between {minimum} and {maximum}, got {value!r}")
    return value


def share_percent(canary_weight, stable_weight, n_canary, n_stable):
    """The canary share of traffic, in percent, for the given weights."""
    total = n_canary * canary_weight + n_stable * stable_weight
    if total == 0:
        raise WeightValueError("all weights are 0: no server would get traffic")
    return float(Fraction(100 * n_canary * canary_weight, total))


def canary_weights(percent, n_canary, n_stable, base_weight=100, max_weight=HAPROXY_MAX_WEIGHT,
                   max_error=None):
    """Weights that send ``percent`` % of the traffic to the canary servers.

    :param percent: requested canary share, 0..100 (int, float or "N"/"N%").
    :param n_canary: number of canary servers (>= 1 unless percent is 0).
    :param n_stable: number of stable servers (>= 1 unless percent is 100).
    :param base_weight: the usual weight (1..max_weight); used for 0 % (stable
        at base, canary 0), 100 % (canary at base, stable 0) and to break ties.
    :param max_weight: highest weight to use (1..256, HAProxy's limit).
    :param max_error: if set, raise WeightPrecisionError when the achieved
        share is more than this many percentage points off.
    :returns: WeightPlan(canary_weight, stable_weight, achieved_percent, ...)

    A percent > 0 never gives the canary weight 0, and a percent < 100 never
    gives the stable servers weight 0.
    """
    requested = _to_fraction("percent", percent)
    if requested < 0 or requested > 100:
        raise WeightValueError(f"percent must be between 0 and 100, got {percent!r}")
    n_canary = _check_int("n_canary", n_canary, 0)
    n_stable = _check_int("n_stable", n_stable, 0)
    max_weight = _check_int("max_weight", max_weight, 1, HAPROXY_MAX_WEIGHT)
    base_weight = _check_int("base_weight", base_weight, 1, max_weight)
    if max_error is not None:
        max_error = _to_fraction("max_error", max_error)
        if max_error < 0:
            raise WeightValueError(f"max_error must be >= 0, got {max_error!r}")

    if requested > 0 and n_canary == 0:
        raise WeightValueError(f"percent {percent} needs at least one canary server, got n_canary=0")
    if requested < 100 and n_stable == 0:
        raise WeightValueError(f"percent {percent} needs at least one stable server, got n_stable=0")

    def plan(w_c, w_s, achieved):
        return WeightPlan(canary_weight=w_c, stable_weight=w_s, achieved_percent=float(achieved),
                          requested_percent=float(requested), n_canary=n_canary, n_stable=n_stable)

    if requested == 0:
        return plan(0, base_weight, Fraction(0))
    if requested == 100:
        return plan(base_weight, 0, Fraction(100))

    # share = n_c*w_c / (n_c*w_c + n_s*w_s) = p  <=>  w_c = w_s * p*n_s / ((1-p)*n_c)
    p = requested / 100
    ratio = p * n_stable / ((1 - p) * n_canary)
    # For a given stable weight the share grows with the canary weight, so the
    # best canary weight is the floor or the ceiling of the ideal one, clamped
    # to 1..max_weight. Trying both for every stable weight is an exhaustive
    # search of all pairs.
    best_key = None
    best = None
    for w_s in range(1, max_weight + 1):
        ideal = ratio * w_s
        low = ideal.numerator // ideal.denominator
        for w_c in sorted({min(max(low, 1), max_weight), min(max(low + 1, 1), max_weight)}):
            achieved = Fraction(100 * n_canary * w_c, n_canary * w_c + n_stable * w_s)
            key = (abs(achieved - requested), abs(w_s - base_weight), abs(w_c - base_weight), w_s, w_c)
            if best_key is None or key < best_key:
                best_key = key
                best = (w_c, w_s, achieved)
    w_c, w_s, achieved = best
    if max_error is not None and abs(achieved - requested) > max_error:
        raise WeightPrecisionError(
            f"cannot send {percent}% of traffic to {n_canary} canary server(s) against {n_stable} stable "
            f"server(s) with weights 1..{max_weight}: closest is {float(achieved):.4f}% (canary weight {w_c}, "
            f"stable weight {w_s}), more than {float(max_error)} points off")
    return plan(w_c, w_s, achieved)


def achievable_range(n_canary, n_stable, max_weight=HAPROXY_MAX_WEIGHT):
    """Smallest and largest canary share (percent) reachable with weights 1..max_weight."""
    n_canary = _check_int("n_canary", n_canary, 1)
    n_stable = _check_int("n_stable", n_stable, 1)
    max_weight = _check_int("max_weight", max_weight, 1, HAPROXY_MAX_WEIGHT)
    low = Fraction(100 * n_canary, n_canary + n_stable * max_weight)
    high = Fraction(100 * n_canary * max_weight, n_canary * max_weight + n_stable)
    return float(low), float(high)


def change_order(before, after, canary):
    """The order in which to set the servers' weights, going from ``before`` to ``after``.

    :param before: server name -> current weight.
    :param after: server name -> wanted weight (the same names).
    :param canary: the canary server names; every other name is a stable server.
    :returns: every name of ``after``: the ones whose weight changes, in the
        order to change them, then the unchanged ones.

    The order is:

    1. canary servers going to weight 0 (an abort takes the canary out of
       the traffic before anything else),
    2. stable servers going up, then 3. canary servers going down (both
       lower the canary share),
    4. canary servers going up, then 5. stable servers going down (both
       raise it).

    So, between the weight calls, the canary's share never exceeds the larger
    of its old and new share (steps 1-3 only lower it; after step 4 the canary
    has its new total against at least the stable servers' new total), and,
    apart from canary servers leaving at weight 0, no weight goes down before
    every weight that goes up has gone up, so the backend's total weight never
    dips below both its old and its new total on the way. (Only when some
    canary servers go up and others down, which a canary started from equal
    weights never does, are the canary decreases put before the increases:
    the share bound comes first.)

    The second property is what HAProxy's ``roundrobin`` (fwrr) needs. A
    server whose weight changes while the backend's total weight is lower than
    at the start of the current round-robin window may be moved to the next
    window and get no request until the current one ends, and a window lasts
    16 x (sum of the weights) requests (8000-9600 with six servers near 100,
    80-96 s at 100 req/s). Lowering the stable servers one by one before
    raising the canary (the 10 % -> 50 % step: 99 -> 51 on five stable
    servers, then 55 -> 255 on the canary) did exactly that to the last stable
    server(s) changed in about half of the runs: the lab measured 55.6 % (and
    62 %) on the canary instead of 50 % for a whole step.
    """
    canary = set(canary)
    changed = [n for n in after if before.get(n) != after[n]]

    def rank(name):
        old, new = before.get(name) or 0, after[name]
        is_canary = name in canary
        if is_canary and new == 0:
            group = 0
        elif new > old:
            group = 3 if is_canary else 1
        else:
            group = 2 if is_canary else 4
        # within a group, the biggest change first (the total moves the most soonest)
        return group, -abs(new - old)

    order = sorted(changed, key=rank)
    return order + [n for n in after if n not in order]
