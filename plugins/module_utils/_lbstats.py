# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Judging a release from HAProxy's own per-server counters (metric_gate ``provider: haproxy``).

Python standard library only; nothing here imports from a module. The verdict
logic is :mod:`_metrics`' (``evaluate_metric``, ``verdict_of``), so a result
has the shape of ``_metrics.analyse``'s and roles treat both providers alike.
docs/analysis-haproxy.md explains the same in prose.

Samples
    What every load balancer said at one moment::

        {lb_name: {"error": None | {"kind": str, "msg": str},
                   "process": {"pid": int, "uptime_sec": int} | None,
                   "servers": {"backend/server": {"hrsp_2xx": int, ..., "rtime": int}}}}

    :func:`sample_from_results` (the ``haproxy_sample`` filter) builds one from
    a loop of haproxy_info results. The judged period runs from a *start*
    sample (taken when the new version took traffic) to a *now* sample.

Counters and deltas
    Every number below is a delta ``now - start`` per load balancer and
    server, summed over the load balancers. A counter that went down on a load
    balancer (or a new ``process.pid``: HAProxy reloaded and its counters began
    again at 0) restarts that load balancer's window: its ``now`` values are
    the delta, and the result names it in ``window_restarted``.

Error rate, per group (new servers, baseline servers), in % ::

    answers  = hrsp_1xx + hrsp_2xx + hrsp_3xx + hrsp_4xx + hrsp_5xx + hrsp_other
    requests = answers + econ + max(0, eresp - srv_abrt)
    errors   = min(requests, hrsp_5xx + econ + eresp)

    A server's ``hrsp_*`` count only the answers whose status line came from
    the server; what HAProxy answers itself (503 when it cannot connect, 502
    on a reset, 504 on a timeout) is counted in the backend's ``hrsp_5xx``,
    never the server's. So a refused connection is one ``econ`` (once per
    request, after the retries), a reset or close before the status line one
    or more ``eresp`` with no ``hrsp_*``, and a reset after the status line
    (``srv_abrt``) one ``hrsp_*`` and one ``eresp``: that is why ``srv_abrt``
    is taken out of the requests, and the cap keeps a 5xx cut off in its body
    from counting twice. HAProxy 2.6 counts ``eresp`` per failed attempt, not
    per request: a reset retried by ``retry-on empty-response`` counts each
    attempt (the server failed each one), so the rate is the share of the work
    sent to the server that failed.

Latency, in ms
    ``rtime`` is a gauge: HAProxy's mean response time of the server, exact
    over its first 512 answers, then a moving mean in which an answer's weight
    decays by (1 - 1/512) per later answer ("the last 1024 requests" of the
    manual). It mixes answers from before the start; with ``n0``/``n1`` the
    answers before/now and ``r0``/``r1`` the gauges, the answers of the window
    make up ``1 - w`` of ``r1``, where ``w`` is ``n0 / n1`` while ``n1 <= 512``
    and ``min(n0, 512) / 512 * (1 - 1/512) ** (n1 - max(n0, 512))`` after.
    The window's own mean is then ``(r1 - w * r0) / (1 - w)``. HAProxy rounds
    the gauges up to whole ms, so the estimate is only known within
    ``[est - 1 / (1 - w), est + w / (1 - w)]``; with few answers that range is
    wide, and the thresholds are applied to its lower end: a latency *fail*
    means the window's mean was surely above the limit. The new group's value
    is the answers-weighted mean of its servers' estimates; the baseline's is
    the same estimate over the same window for the baseline servers, at the
    upper end of its range (their gauges lag: a slowdown of the whole fleet
    during the window, a busy controller or a noisy neighbour, shows in the
    new servers' window at once and in the baseline's gauge only slowly, and
    failed a good canary once on the lab). HAProxy 2.6 has no percentiles: a slow tail that
    leaves the mean alone goes unseen (use the prometheus provider for p99).

Saturation
    ``saturation`` is the new servers' sessions now (``scur``, summed over the
    load balancers) per server, against the baseline servers'. ``queue`` (only
    when a new server has a ``maxconn``, ``slim``) is the requests waiting for
    one of its connection slots (``qcur``) per such server.

Verdict
    ``_metrics.verdict_of``: inconclusive when a load balancer could not be
    read (at the start or now; the message names it and why), when the new
    servers had fewer than ``min_requests`` requests in the window (never a
    pass; but a fail when the errors seen already fail the error rate over
    ``min_requests`` requests, see :func:`settled_error_rate_fail`), or when a
    metric has no data; fail when a metric is outside its
    thresholds; pass otherwise. Without baseline servers (the last rolling
    batch, a whole new fleet) only the absolute thresholds apply.
"""

from __future__ import annotations

from ansible_collections.safedeploy.fleet.plugins.module_utils._haproxy import STAT_COUNTERS, STAT_GAUGES
from ansible_collections.safedeploy.fleet.plugins.module_utils._metrics import (
    FAIL,
    MetricsConfigError,
    _fmt,
    _number,
    evaluate_metric,
    verdict_of,
)

ANSWER_COUNTERS = ("hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx", "hrsp_other")
# HAProxy's TIME_STATS_SAMPLES: rtime is exact over this many answers, then a moving mean.
TIME_STATS_SAMPLES = 512
DEFAULT_MIN_REQUESTS = 20

# Each threshold may be set to None to turn its check off.
DEFAULT_THRESHOLDS = {
    # error rate of the new servers, in %: at most this ...
    "error_rate_max": 1.0,
    # ... and at most the baseline servers' error rate plus this many percentage points
    "error_rate_over_baseline": 0.5,
    # mean response time of the new servers in the window, in ms: at most this ...
    "latency_max": 500.0,
    # ... and at most the baseline servers' times this ratio plus latency_tolerance ms
    "latency_vs_baseline": 1.5,
    "latency_tolerance": 5.0,
    # sessions per new server now: at most the baseline's per server times this ratio plus the tolerance ...
    "saturation_vs_baseline": 1.5,
    "saturation_tolerance": 5.0,
    # ... and at most this many (no absolute bound by default)
    "saturation_max": None,
    # requests queued per new server that has a maxconn: at most this many
    "queue_max": 5.0,
}
_POSITIVE = ("latency_vs_baseline", "saturation_vs_baseline")

ERROR_RATE_FORMULA = (
    "100 * min(requests, hrsp_5xx + econ + eresp) / requests, "
    "requests = hrsp_1xx..hrsp_5xx + hrsp_other + econ + max(0, eresp - srv_abrt)"
)
LATENCY_FORMULA = "the window's mean response time, from rtime at the start and now (HAProxy's moving mean)"


class LBStatsConfigError(MetricsConfigError):
    """A sample, a server name or a threshold is wrongly given."""


# --------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------


def _count(label, value):
    number = _number(label, None if value == "" else value)
    if number is None:
        return 0
    if number < 0 or number != int(number):
        raise LBStatsConfigError(f"{label} must be a whole number >= 0, got {value!r}")
    return int(number)


def check_sample(sample, label="sample"):
    """A sample checked and normalised (missing counters are 0, ``slim`` None when unset)."""
    if not isinstance(sample, dict):
        raise LBStatsConfigError(f"{label} must be a mapping of load balancer -> {{error, servers}}, got {sample!r:.120}")
    out = {}
    for lb, entry in sample.items():
        where = f"{label}[{lb!r}]"
        if not isinstance(entry, dict):
            raise LBStatsConfigError(f"{where} must be a mapping with error and servers, got {entry!r:.120}")
        error = entry.get("error")
        if error:
            if not isinstance(error, dict):
                error = {"kind": "error", "msg": str(error)}
            out[str(lb)] = {"error": {"kind": str(error.get("kind") or "error"), "msg": str(error.get("msg") or "")},
                            "process": None, "servers": {}}
            continue
        servers = entry.get("servers")
        if not isinstance(servers, dict):
            raise LBStatsConfigError(f"{where}.servers must be a mapping of 'backend/server' -> counters, got {servers!r:.120}")
        checked = {}
        for key, counters in servers.items():
            if not isinstance(key, str) or key.count("/") != 1 or not all(key.split("/")):
                raise LBStatsConfigError(f"{where}: server keys are 'backend/server', got {key!r}")
            if not isinstance(counters, dict):
                raise LBStatsConfigError(f"{where}[{key!r}] must be a mapping of counters, got {counters!r:.120}")
            numbers = {name: _count(f"{where}[{key!r}].{name}", counters.get(name)) for name in STAT_COUNTERS + STAT_GAUGES}
            if counters.get("slim") in (None, ""):
                numbers["slim"] = None
            checked[key] = numbers
        process = entry.get("process")
        out[str(lb)] = {"error": None, "process": process if isinstance(process, dict) else None, "servers": checked}
    return out


def normalize_thresholds(thresholds=None):
    """DEFAULT_THRESHOLDS overridden by ``thresholds``; an unknown key or a bad number raises."""
    out = dict(DEFAULT_THRESHOLDS)
    given = thresholds or {}
    if not isinstance(given, dict):
        raise LBStatsConfigError(f"thresholds must be a mapping, got {given!r}")
    unknown = sorted(set(given) - set(DEFAULT_THRESHOLDS))
    if unknown:
        raise LBStatsConfigError(
            f"unknown threshold(s) {', '.join(unknown)}; known: {', '.join(sorted(DEFAULT_THRESHOLDS))}"
        )
    for key, value in given.items():
        number = _number(f"threshold {key}", value)  # None turns the check off
        if number is not None and (number < 0 or (key in _POSITIVE and number == 0)):
            raise LBStatsConfigError(f"threshold {key} must be {'> 0' if key in _POSITIVE else '>= 0'}, got {value!r}")
        out[key] = number
    return out


def resolve_servers(selectors, known, backends=None, label="canary"):
    """The ``backend/server`` keys that ``selectors`` name among ``known``.

    A selector is ``backend/server``, or a bare server name: that server in
    every backend of ``backends`` (default: every backend where it is).
    A selector that names nothing raises, listing what there is.
    """
    backends = list(backends or ())
    keys = []
    for selector in selectors or ():
        selector = str(selector).strip()
        if not selector or selector.count("/") > 1:
            raise LBStatsConfigError(f"{label}: a server is 'backend/server' or a server name, got {selector!r}")
        if "/" in selector:
            found = [selector] if selector in known else []
        else:
            found = [key for key in sorted(known)
                     if key.split("/")[1] == selector and (not backends or key.split("/")[0] in backends)]
        if not found:
            names = ", ".join(sorted(known)[:20]) + (" ..." if len(known) > 20 else "")
            raise LBStatsConfigError(
                f"{label}: no server {selector!r}" + (f" in backend(s) {', '.join(backends)}" if backends else "")
                + f" on any load balancer read (servers: {names or 'none'})"
            )
        keys.extend(key for key in found if key not in keys)
    return keys


# --------------------------------------------------------------------------
# Arithmetic (pure)
# --------------------------------------------------------------------------


def answers_of(counters):
    return sum(counters.get(name) or 0 for name in ANSWER_COUNTERS)


def error_counts(delta):
    """``(requests, errors)`` of one server's counter deltas (see the module's docstring)."""
    answers = answers_of(delta)
    econ, eresp, srv_abrt = delta.get("econ") or 0, delta.get("eresp") or 0, delta.get("srv_abrt") or 0
    requests = answers + econ + max(0, eresp - srv_abrt)
    errors = min(requests, (delta.get("hrsp_5xx") or 0) + econ + eresp)
    return requests, errors


def error_rate(requests, errors):
    """In %, None without requests."""
    return 100.0 * errors / requests if requests else None


def old_weight(n0, n1, samples=TIME_STATS_SAMPLES):
    """The share of HAProxy's rtime gauge that still comes from the ``n0`` answers before the start."""
    if n1 <= 0 or n0 <= 0:
        return 0.0
    if n0 >= n1:
        return 1.0
    if n1 <= samples:
        return n0 / n1
    return min(n0, samples) / samples * (1.0 - 1.0 / samples) ** (n1 - max(n0, samples))


def window_latency(n0, r0, n1, r1):
    """The mean response time of the answers between the two gauges.

    Returns ``{"estimate", "low", "high", "share"}`` (ms, ms, ms, share of the
    gauge that is the window's), or None when the window has no answer.
    """
    w = old_weight(n0, n1)
    if n1 - n0 <= 0 or w >= 1.0:
        return None
    estimate = (r1 - w * r0) / (1.0 - w)
    return {
        "estimate": max(0.0, estimate),
        "low": max(0.0, estimate - 1.0 / (1.0 - w)),
        "high": max(0.0, estimate + w / (1.0 - w)),
        "share": 1.0 - w,
    }


def _decreased(start, now):
    return [name for name in STAT_COUNTERS if (now.get(name) or 0) < (start.get(name) or 0)]


def restart_reason(start_lb, now_lb):
    """Why this load balancer's counters began again between the samples, or None."""
    p0, p1 = start_lb.get("process") or {}, now_lb.get("process") or {}
    if p0.get("pid") is not None and p1.get("pid") is not None and p0["pid"] != p1["pid"]:
        return f"HAProxy process {p0['pid']} was replaced by {p1['pid']} (reload or restart)"
    if p0.get("uptime_sec") is not None and p1.get("uptime_sec") is not None and p1["uptime_sec"] < p0["uptime_sec"]:
        return f"HAProxy's uptime went back from {p0['uptime_sec']} s to {p1['uptime_sec']} s (restart)"
    for key, now in now_lb["servers"].items():
        start = start_lb["servers"].get(key)
        if start is not None:
            down = _decreased(start, now)
            if down:
                return f"{key}: {', '.join(down)} went down (HAProxy reloaded: its counters began again at 0)"
    return None


def _zero():
    return dict.fromkeys(STAT_COUNTERS, 0)


# --------------------------------------------------------------------------
# One group of servers over every readable load balancer
# --------------------------------------------------------------------------

_SUMMED = ("hrsp_5xx", "econ", "eresp", "srv_abrt", "wretr", "wredis")


def summarise(keys, windows):
    """Sum one group (``keys``) over ``windows`` ({lb: {key: (start or None, now)}})."""
    group = {"servers": list(keys), "answers": 0, "requests": 0, "errors": 0, **dict.fromkeys(_SUMMED, 0)}
    sessions, queued, limited, usage = {}, {}, set(), []
    latency_weight = 0
    estimate = low = high = share = gauge = 0.0
    for pairs in windows.values():
        for key in keys:
            if key not in pairs:
                continue
            start, now = pairs[key]
            start = start or _zero()
            delta = {name: (now.get(name) or 0) - (start.get(name) or 0) for name in STAT_COUNTERS}
            requests, errors = error_counts(delta)
            group["answers"] += answers_of(delta)
            group["requests"] += requests
            group["errors"] += errors
            for name in _SUMMED:
                group[name] += delta[name]
            sessions[key] = sessions.get(key, 0) + (now.get("scur") or 0)
            if now.get("slim"):
                limited.add(key)
                queued[key] = queued.get(key, 0) + (now.get("qcur") or 0)
                usage.append(100.0 * (now.get("scur") or 0) / now["slim"])
            n0, n1 = answers_of(start), answers_of(now)
            window = window_latency(n0, start.get("rtime") or 0, n1, now.get("rtime") or 0)
            if window is not None:
                k = n1 - n0
                latency_weight += k
                estimate += k * window["estimate"]
                low += k * window["low"]
                high += k * window["high"]
                share += k * window["share"]
                gauge += k * (now.get("rtime") or 0)
    group["error_rate"] = error_rate(group["requests"], group["errors"])
    seen = sorted(sessions)
    group["servers_read"] = seen
    group["sessions"] = sum(sessions.values())
    group["saturation"] = group["sessions"] / len(seen) if seen else None
    group["queue"] = sum(queued.values()) / len(limited) if limited else None
    group["maxconn_usage"] = max(usage) if usage else None
    if latency_weight:
        group["latency"] = {"estimate": estimate / latency_weight, "low": low / latency_weight,
                            "high": high / latency_weight, "share": share / latency_weight,
                            "rtime": gauge / latency_weight, "answers": latency_weight}
        group["latency"] = {key: round(value, 3) for key, value in group["latency"].items()}
    else:
        group["latency"] = None
    return group


# --------------------------------------------------------------------------
# The analysis
# --------------------------------------------------------------------------


def _spec(name, unit, description, maximum=None, ratio=None, tolerance=None):
    """A metric for evaluate_metric, or None when no threshold is left to judge it by."""
    if maximum is None and ratio is None:
        return None
    return {"name": name, "unit": unit, "description": description, "min": None, "max": maximum,
            "max_vs_baseline": ratio, "baseline_tolerance": tolerance or 0.0}


def _judge(spec, value, baseline, query):
    record = evaluate_metric(spec, value, baseline)
    record["query"] = query
    for key in ("max", "max_vs_baseline"):
        if spec[key] is not None:
            record[key] = spec[key]
    if spec["max_vs_baseline"] is not None and spec["baseline_tolerance"]:
        record["baseline_tolerance"] = spec["baseline_tolerance"]
    return record


def _judge_latency(spec, new, baseline):
    """Judged at the lower end of the estimate's range (see the module's docstring)."""
    window = new["latency"]
    if window is None:
        return _judge(spec, None, baseline, LATENCY_FORMULA)
    record = _judge(spec, window["low"], baseline, LATENCY_FORMULA)
    estimate = round(window["estimate"], 1)
    said = f"latency = {_fmt(window['low'], 'ms')}"
    shown = (f"latency = {_fmt(estimate, 'ms')} (at least {_fmt(window['low'], 'ms')}: the {window['answers']} answers "
             f"of the window are {window['share']:.0%} of HAProxy's moving mean, rounded up to whole ms)")
    record["reason"] = record["reason"].replace(said, shown, 1)
    record.update(value=estimate, value_low=round(window["low"], 1), value_high=round(window["high"], 1),
                  window_share=round(window["share"], 3), rtime=round(window["rtime"], 1))
    return record


def settled_error_rate_fail(record, new, base, min_requests):
    """The error-rate record of a fail the first ``min_requests`` requests settle already, or None.

    With fewer than ``min_requests`` requests the verdict is inconclusive,
    except when the errors seen already fail the error rate over
    ``min_requests`` requests, whatever the missing ones answer:
    ``errors / min_requests`` is the least rate the full window can have. One
    500 in the first 5 requests at a 1 % canary step, min_requests 20: at
    least 5 % > 1 %, a fail now rather than after 20 requests (20 s at 1 req/s).
    The thresholds are those of ``record`` (the error rate's, already judged).
    """
    requests, errors = new["requests"], new["errors"]
    if not min_requests or requests >= min_requests or not errors:
        return None
    spec = {"name": "error_rate", "unit": "%", "min": None, "max": record.get("max"),
            "max_vs_baseline": record.get("max_vs_baseline"), "baseline_tolerance": record.get("baseline_tolerance", 0.0)}
    least = error_rate(min_requests, errors)
    judged = evaluate_metric(spec, least, base["error_rate"] if base else None)
    if judged["verdict"] != FAIL:
        return None
    settled = dict(record)
    settled.update(verdict=FAIL, value=error_rate(requests, errors), value_low=least, settled_early=True, limit=judged["limit"],
                   reason=(f"error_rate: {errors:.0f} of the new servers' first {requests:.0f} requests failed, so their "
                           f"first {min_requests} (min_requests) fail at least {_fmt(least, '%')} whatever the other "
                           f"{min_requests - requests:.0f} answer: " + judged["reason"].replace("error_rate = ", "at least ")))
    return settled


def analyse(start, now, new_servers, baseline_servers=(), thresholds=None, min_requests=DEFAULT_MIN_REQUESTS,
            backends=None):
    """Judge the new servers from two samples; the shape of ``_metrics.analyse``'s result.

    ``new_servers`` / ``baseline_servers``: ``backend/server`` keys or server
    names (see :func:`resolve_servers`). ``thresholds``: see
    DEFAULT_THRESHOLDS. Returns verdict, message, failed_metrics, metrics,
    requests, provider_error, plus window_restarted (load balancer names),
    load_balancers ({lb: {read, restarted, reason}}) and groups ({new,
    baseline}: the sums behind the metrics).
    """
    start = check_sample(start, "haproxy_start")
    now = check_sample(now, "haproxy_now")
    limits = normalize_thresholds(thresholds)
    if min_requests is None or int(min_requests) < 0:
        raise LBStatsConfigError(f"min_requests must be >= 0, got {min_requests!r}")
    if not new_servers:
        raise LBStatsConfigError("the new servers (canary) are empty: nothing to judge")

    load_balancers, unreadable, restarted, windows = {}, [], [], {}
    for lb in sorted(set(start) | set(now)):
        problems = []
        for moment, sample in (("start", start), ("now", now)):
            entry = sample.get(lb)
            if entry is None:
                problems.append(f"{lb} ({moment}): not in the sample")
            elif entry["error"]:
                problems.append(f"{lb} ({moment}): {entry['error']['kind']}: {entry['error']['msg']}")
        if problems:
            unreadable.extend(problems)
            load_balancers[lb] = {"read": False, "restarted": False, "reason": "; ".join(problems)}
            continue
        reason = restart_reason(start[lb], now[lb])
        if reason:
            restarted.append(lb)
        old = {} if reason else start[lb]["servers"]
        windows[lb] = {key: (old.get(key), counters) for key, counters in now[lb]["servers"].items()}
        load_balancers[lb] = {"read": True, "restarted": bool(reason), "reason": reason}

    known = {key for pairs in windows.values() for key in pairs}
    new_keys = resolve_servers(new_servers, known, backends, "canary") if windows else []
    base_keys = resolve_servers(baseline_servers, known, backends, "stable") if windows else []
    both = sorted(set(new_keys) & set(base_keys))
    if both:
        raise LBStatsConfigError(f"{', '.join(both)} cannot be both new (canary) and baseline (stable)")

    new = summarise(new_keys, windows)
    base = summarise(base_keys, windows) if baseline_servers else None
    with_baseline = base is not None

    results = []
    spec = _spec("error_rate", "%", "share of the new servers' requests that failed (5xx, refused, reset)",
                 limits["error_rate_max"], 1.0 if with_baseline and limits["error_rate_over_baseline"] is not None else None,
                 limits["error_rate_over_baseline"] if with_baseline else None)
    if spec:
        results.append(_judge(spec, new["error_rate"], base["error_rate"] if base else None, ERROR_RATE_FORMULA))
    spec = _spec("latency", "ms", "mean response time of the new servers' answers in the window", limits["latency_max"],
                 limits["latency_vs_baseline"] if with_baseline else None,
                 limits["latency_tolerance"] if with_baseline else None)
    if spec:
        # The baseline over the same window (not its gauge, whose moving mean
        # lags behind a slowdown of the whole fleet), at the upper end of its
        # range: a fail means the new servers were surely slower.
        baseline_latency = base["latency"]["high"] if base and base["latency"] else None
        results.append(_judge_latency(spec, new, baseline_latency))
    spec = _spec("saturation", "sessions", "sessions per new server now (scur), against the baseline servers'",
                 limits["saturation_max"], limits["saturation_vs_baseline"] if with_baseline else None,
                 limits["saturation_tolerance"] if with_baseline else None)
    if spec:
        results.append(_judge(spec, new["saturation"], base["saturation"] if base else None,
                              "scur now, summed over the load balancers, per server"))
    if new["queue"] is not None:
        spec = _spec("queue", "requests", "requests queued per new server with a maxconn (qcur)", limits["queue_max"])
        if spec:
            results.append(_judge(spec, new["queue"], None, "qcur now per server with a maxconn (slim)"))

    provider_error = ("load balancer(s) could not be read: " + "; ".join(unreadable)) if unreadable else None
    settled = None
    if not provider_error and results and results[0]["name"] == "error_rate":
        settled = settled_error_rate_fail(results[0], new, base, int(min_requests))
    if settled:
        verdict, message, failed = FAIL, "fail: " + settled["reason"], ["error_rate"]
        results[0] = settled
    else:
        verdict, message, failed = verdict_of(results, new["requests"], int(min_requests), provider_error)
    if restarted:
        message += f" (window restarted on {', '.join(restarted)}: HAProxy reloaded, its counters since then are judged)"
    return {
        "verdict": verdict,
        "message": message,
        "failed_metrics": failed,
        "metrics": results,
        "requests": new["requests"],
        "provider_error": provider_error,
        "window_restarted": restarted,
        "load_balancers": load_balancers,
        "groups": {"new": new, "baseline": base},
    }


# --------------------------------------------------------------------------
# Samples from haproxy_info results (the haproxy_sample filter)
# --------------------------------------------------------------------------


def _lb_name(result, index):
    item = result.get("item")
    if isinstance(item, str) and item:
        return item
    delegated = result.get("_ansible_delegated_vars") or {}
    for key in ("ansible_delegated_host", "ansible_host"):
        if delegated.get(key):
            return str(delegated[key])
    if isinstance(item, dict) and item.get("name"):
        return str(item["name"])
    raise LBStatsConfigError(
        f"result #{index + 1}: cannot tell which load balancer it is from (loop over the load balancer names, "
        f"or give names)"
    )


def sample_from_results(registered, names=None):
    """One sample from haproxy_info results: a registered loop, a list of results, or one result.

    The load balancer of each result is ``names[i]`` when given, else the
    loop item (a host name), else the host it was delegated to. A failed
    result (or one with an ``error_kind``: ``failed_when: false`` leaves
    ``failed`` false) becomes ``{"error": {"kind": error_kind or "failed",
    "msg"}}``, an unreachable one kind ``unreachable``; skipped results are
    left out.
    """
    if isinstance(registered, dict) and isinstance(registered.get("results"), list):
        results = registered["results"]
    elif isinstance(registered, list):
        results = registered
    elif isinstance(registered, dict):
        results = [registered]
    else:
        raise LBStatsConfigError(f"haproxy_sample needs registered haproxy_info results, got {registered!r:.120}")
    if names is not None and len(names) != len(results):
        raise LBStatsConfigError(f"haproxy_sample: {len(names)} name(s) for {len(results)} result(s)")
    sample = {}
    for index, result in enumerate(results):
        if not isinstance(result, dict):
            raise LBStatsConfigError(f"result #{index + 1} is not a task result: {result!r:.120}")
        if result.get("skipped"):
            continue
        if names is not None:
            lb = str(names[index])
        elif len(results) == 1 and "item" not in result and not result.get("_ansible_delegated_vars"):
            raise LBStatsConfigError("haproxy_sample: a single result needs its load balancer's name (names=[...])")
        else:
            lb = _lb_name(result, index)
        if result.get("unreachable"):
            sample[lb] = {"error": {"kind": "unreachable", "msg": str(result.get("msg") or "unreachable")}}
        elif result.get("failed") or result.get("error_kind"):
            # failed_when: false keeps the module's error_kind and msg but sets failed to false
            sample[lb] = {"error": {"kind": str(result.get("error_kind") or "failed"),
                                    "msg": str(result.get("msg") or "failed")}}
        elif not isinstance(result.get("servers"), list):
            sample[lb] = {"error": {"kind": "failed", "msg": "not a haproxy_info result (no servers)"}}
        else:
            servers = {}
            for server in result["servers"]:
                key = f"{server.get('backend')}/{server.get('name')}"
                servers[key] = {name: server.get(name) for name in STAT_COUNTERS + STAT_GAUGES}
            sample[lb] = {"error": None, "process": result.get("process"), "servers": servers}
    return sample
