# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Metric analysis for canary and rollout gates: pass, fail or inconclusive.

Python standard library only (JMESPath is imported only by the ``web``
provider, which runs on the controller). Nothing here imports from a module.

An *analysis* is a list of metrics. Each metric has a query (PromQL for the
``prometheus`` provider, a JMESPath expression on a JSON document for the
``web`` provider) and thresholds:

``max``
    the canary's value must be <= max.
``min``
    the canary's value must be >= min.
``max_vs_baseline``
    the canary's value must be <= baseline * max_vs_baseline +
    baseline_tolerance, where the baseline is the same query run against the
    stable instances at the same time (or ``baseline_query``).

Queries are templates: ``${canary}`` and ``${stable}`` become regular
expressions matching the canary / stable instance names (``web1|web2``,
escaped for a PromQL string), ``${canary_list}`` and ``${stable_list}`` the
names joined with commas, ``${window}`` the analysis window (``1m``),
``${version}`` the canary version and ``${app}`` the application name.
Nothing else is touched, so PromQL's own ``{...}`` and ``$`` anchors stay as
they are.

A metric is *inconclusive* when it has no data (empty result, NaN, a missing
baseline). The whole analysis is

* ``inconclusive`` when the provider cannot be reached or answers an error,
  when the canary served fewer than ``min_requests`` requests in the window
  (too few to judge; the metrics are still measured and reported), or when
  no metric failed but one is inconclusive;
* ``fail`` when a metric is outside its thresholds;
* ``pass`` otherwise.
"""

from __future__ import annotations

import base64
import json
import math
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request

PASS = "pass"
FAIL = "fail"
INCONCLUSIVE = "inconclusive"
VERDICTS = (PASS, FAIL, INCONCLUSIVE)

PROVIDERS = ("prometheus", "web")
TEMPLATE_NAMES = ("canary", "stable", "canary_list", "stable_list", "window", "version", "app")
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_DURATION = re.compile(r"(\d+(ms|s|m|h|d|w|y))+")
_METRIC_KEYS = {
    "name", "query", "baseline_query", "url", "max", "min", "max_vs_baseline", "baseline_tolerance",
    "unit", "description",
}

# The default analysis: the three signals of a safe deploy, for an app that
# exposes <app>_requests_total{code}, the histogram
# <app>_request_duration_seconds and the gauge <app>_requests_in_flight
# (the lab's demoapp does). Flagger's defaults for the first two.
DEFAULT_REQUESTS_QUERY = 'sum(increase(${app}_requests_total{instance=~"${canary}"}[${window}]))'
DEFAULT_METRICS = (
    {
        "name": "success_rate",
        "description": "share of the canary's requests not answered with a 5xx",
        "query": (
            '100 * sum(rate(${app}_requests_total{instance=~"${canary}",code!~"5.."}[${window}]))'
            ' / sum(rate(${app}_requests_total{instance=~"${canary}"}[${window}]))'
        ),
        "min": 99,
        "unit": "%",
    },
    {
        "name": "latency_p99",
        "description": "99th percentile of the canary's request duration",
        "query": (
            "1000 * histogram_quantile(0.99, sum by (le) "
            '(rate(${app}_request_duration_seconds_bucket{instance=~"${canary}"}[${window}])))'
        ),
        "max": 500,
        "unit": "ms",
    },
    {
        "name": "saturation",
        "description": "requests in flight per canary host, against the stable hosts at the same time",
        "query": 'avg(avg_over_time(${app}_requests_in_flight{instance=~"${canary}"}[${window}]))',
        "max_vs_baseline": 1.5,
        "baseline_tolerance": 1,
        "unit": "requests",
    },
)


class MetricsError(Exception):
    """Base class of every error of this module."""


class MetricsConfigError(MetricsError, ValueError):
    """The analysis is wrongly written (a metric, a template, a threshold)."""


class ProviderError(MetricsError):
    """The metrics provider could not be reached or answered an error: inconclusive."""


class NoData(MetricsError):
    """A query returned nothing usable (no series, NaN)."""


# --------------------------------------------------------------------------
# Templates
# --------------------------------------------------------------------------


def promql_regex(names):
    """A PromQL regular expression (inside a double-quoted string) matching exactly ``names``."""
    parts = []
    for name in names:
        escaped = re.sub(r"([\\.^$|?*+()\[\]{}])", r"\\\1", str(name))
        parts.append(escaped.replace("\\", "\\\\").replace('"', '\\"'))
    return "|".join(parts)


def template_values(canary=(), stable=(), window="1m", version="", app=""):
    canary, stable = list(canary or ()), list(stable or ())
    return {
        "canary": promql_regex(canary),
        "stable": promql_regex(stable),
        "canary_list": ",".join(canary),
        "stable_list": ",".join(stable),
        "window": str(window),
        "version": str(version or ""),
        "app": str(app or ""),
    }


def render(template, values):
    """Replace ``${name}`` placeholders; raise MetricsConfigError on an unknown one."""
    if not isinstance(template, str):
        raise MetricsConfigError(f"a query must be a string, got {template!r}")

    def replace(match):
        name = match.group(1)
        if name not in values:
            raise MetricsConfigError(
                f"unknown placeholder ${{{name}}} in {template!r}; known: "
                + ", ".join("${" + n + "}" for n in TEMPLATE_NAMES)
            )
        return values[name]

    return _PLACEHOLDER.sub(replace, template)


def swap_to_baseline(template):
    """The baseline form of a canary query: the stable instances instead of the canary ones."""
    return template.replace("${canary}", "${stable}").replace("${canary_list}", "${stable_list}")


def check_window(window):
    text = str(window).strip()
    if not _DURATION.fullmatch(text):
        raise MetricsConfigError(f"window must be a Prometheus duration such as 30s, 1m or 1m30s, got {window!r}")
    return text


# --------------------------------------------------------------------------
# Metric specifications
# --------------------------------------------------------------------------


def _number(label, value):
    if value is None:
        return None
    if isinstance(value, bool):
        raise MetricsConfigError(f"{label} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise MetricsConfigError(f"{label} must be a number, got {value!r}") from None
    if math.isnan(number) or math.isinf(number):
        raise MetricsConfigError(f"{label} must be a finite number, got {value!r}")
    return number


def normalize_metric(spec, index=0):
    """Check one metric's specification and return it with floats and defaults filled in."""
    if not isinstance(spec, dict):
        raise MetricsConfigError(f"metric #{index + 1} must be a mapping, got {spec!r}")
    unknown = sorted(set(spec) - _METRIC_KEYS)
    if unknown:
        raise MetricsConfigError(
            f"metric #{index + 1} ({spec.get('name', '?')}): unknown key(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(_METRIC_KEYS))}"
        )
    name = spec.get("name")
    if not name or not isinstance(name, str):
        raise MetricsConfigError(f"metric #{index + 1} needs a name")
    query = spec.get("query")
    if not query or not isinstance(query, str):
        raise MetricsConfigError(f"metric {name} needs a query")
    out = {
        "name": name,
        "query": query,
        "baseline_query": spec.get("baseline_query"),
        "url": spec.get("url"),
        "max": _number(f"metric {name}: max", spec.get("max")),
        "min": _number(f"metric {name}: min", spec.get("min")),
        "max_vs_baseline": _number(f"metric {name}: max_vs_baseline", spec.get("max_vs_baseline")),
        "baseline_tolerance": _number(f"metric {name}: baseline_tolerance", spec.get("baseline_tolerance")) or 0.0,
        "unit": str(spec.get("unit") or ""),
        "description": str(spec.get("description") or ""),
    }
    if out["max"] is None and out["min"] is None and out["max_vs_baseline"] is None:
        raise MetricsConfigError(f"metric {name} needs at least one threshold: max, min or max_vs_baseline")
    if out["max"] is not None and out["min"] is not None and out["min"] > out["max"]:
        raise MetricsConfigError(f"metric {name}: min {out['min']:g} is above max {out['max']:g}")
    if out["max_vs_baseline"] is not None and out["max_vs_baseline"] <= 0:
        raise MetricsConfigError(f"metric {name}: max_vs_baseline must be > 0 (a ratio), got {out['max_vs_baseline']:g}")
    if out["baseline_tolerance"] < 0:
        raise MetricsConfigError(f"metric {name}: baseline_tolerance must be >= 0, got {out['baseline_tolerance']:g}")
    if out["max_vs_baseline"] is not None and out["baseline_query"] is None:
        out["baseline_query"] = swap_to_baseline(query)
    return out


def normalize_metrics(specs):
    if not specs:
        raise MetricsConfigError("the analysis has no metric")
    metrics = [normalize_metric(spec, i) for i, spec in enumerate(specs)]
    names = [m["name"] for m in metrics]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise MetricsConfigError(f"metric names must be unique: {', '.join(duplicates)}")
    return metrics


def default_metrics():
    return [dict(m) for m in DEFAULT_METRICS]


# --------------------------------------------------------------------------
# Evaluation (pure)
# --------------------------------------------------------------------------


def _fmt(value, unit=""):
    if value is None:
        return "no data"
    text = f"{value:.4g}" if abs(value) < 1e6 else f"{value:.6g}"
    return f"{text} {unit}".strip() if unit and unit != "%" else text + (unit or "")


def evaluate_metric(metric, value, baseline=None):
    """Judge one measured value against the metric's thresholds.

    ``value`` and ``baseline`` are floats or None (no data). Returns a dict with
    ``name``, ``value``, ``baseline``, ``limit`` (the effective upper bound when
    compared with the baseline), ``verdict`` and ``reason``.
    """
    unit = metric.get("unit", "")
    name = metric["name"]
    result = {"name": name, "value": value, "baseline": baseline, "limit": None, "unit": unit,
              "verdict": PASS, "reason": ""}
    if value is None or (isinstance(value, float) and math.isnan(value)):
        result.update(value=None, verdict=INCONCLUSIVE, reason=f"{name}: no data for the canary")
        return result
    problems = []
    if metric.get("min") is not None and value < metric["min"]:
        problems.append(f"{name} = {_fmt(value, unit)} is below the minimum {_fmt(metric['min'], unit)}")
    if metric.get("max") is not None and value > metric["max"]:
        problems.append(f"{name} = {_fmt(value, unit)} is above the maximum {_fmt(metric['max'], unit)}")
    if metric.get("max_vs_baseline") is not None:
        if baseline is None or (isinstance(baseline, float) and math.isnan(baseline)):
            result["baseline"] = None
            if not problems:
                result.update(verdict=INCONCLUSIVE, reason=f"{name}: no data for the baseline (stable instances)")
                return result
        else:
            limit = baseline * metric["max_vs_baseline"] + metric.get("baseline_tolerance", 0.0)
            result["limit"] = limit
            if value > limit:
                problems.append(
                    f"{name} = {_fmt(value, unit)} is above {_fmt(limit, unit)}, the baseline's "
                    f"{_fmt(baseline, unit)} x {metric['max_vs_baseline']:g}"
                    + (f" + {metric['baseline_tolerance']:g}" if metric.get("baseline_tolerance") else "")
                )
    if problems:
        result.update(verdict=FAIL, reason="; ".join(problems))
    else:
        bounds = []
        if metric.get("min") is not None:
            bounds.append(f">= {_fmt(metric['min'], unit)}")
        if metric.get("max") is not None:
            bounds.append(f"<= {_fmt(metric['max'], unit)}")
        if result["limit"] is not None:
            bounds.append(f"<= {_fmt(result['limit'], unit)} (baseline {_fmt(baseline, unit)})")
        result["reason"] = f"{name} = {_fmt(value, unit)} ({', '.join(bounds)})"
    return result


def verdict_of(results, requests=None, min_requests=0, provider_error=None):
    """The analysis' verdict and message from the metric results.

    Returns ``(verdict, message, failed_names)``.
    """
    if provider_error:
        return INCONCLUSIVE, f"inconclusive: the metrics provider is unreachable or failed: {provider_error}", []
    failed = [r for r in results if r["verdict"] == FAIL]
    unknown = [r for r in results if r["verdict"] == INCONCLUSIVE]
    if min_requests and (requests is None or requests < min_requests):
        seen = "no data" if requests is None else f"{requests:.0f}"
        detail = "; ".join(r["reason"] for r in failed) if failed else ""
        return (INCONCLUSIVE,
                f"inconclusive: too few requests to judge the canary: {seen} in the window, "
                f"min_requests is {min_requests}" + (f" (measured anyway: {detail})" if detail else ""),
                [])
    if failed:
        return FAIL, "fail: " + "; ".join(r["reason"] for r in failed), [r["name"] for r in failed]
    if unknown:
        return INCONCLUSIVE, "inconclusive: " + "; ".join(r["reason"] for r in unknown), []
    return PASS, "pass: " + "; ".join(r["reason"] for r in results), []


# --------------------------------------------------------------------------
# Providers
# --------------------------------------------------------------------------


class HTTPSettings:
    """How to reach a provider: auth, TLS, timeout."""

    def __init__(self, timeout=10.0, bearer_token=None, username=None, password=None, headers=None,
                 validate_certs=True, ca_path=None):
        self.timeout = float(timeout)
        if self.timeout <= 0:
            raise MetricsConfigError(f"timeout must be > 0 seconds, got {timeout!r}")
        if bearer_token and username:
            raise MetricsConfigError("use either bearer_token or username/password, not both")
        if password and not username:
            raise MetricsConfigError("password needs a username")
        self.headers = {"Accept": "application/json", "User-Agent": "safedeploy-metric-gate"}
        self.headers.update({str(k): str(v) for k, v in (headers or {}).items()})
        if bearer_token:
            self.headers["Authorization"] = f"Bearer {bearer_token}"
        elif username:
            raw = f"{username}:{password or ''}".encode()
            self.headers["Authorization"] = "Basic " + base64.b64encode(raw).decode("ascii")
        if validate_certs:
            self.context = ssl.create_default_context(cafile=ca_path) if ca_path else ssl.create_default_context()
        else:
            self.context = ssl.create_default_context()
            self.context.check_hostname = False
            self.context.verify_mode = ssl.CERT_NONE

    def get_json(self, url, params=None):
        if params:
            url = url + ("&" if "?" in url else "?") + urllib.parse.urlencode(params)
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise MetricsConfigError(f"need an http:// or https:// URL, got {url!r}")
        shown = urllib.parse.urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))
        request = urllib.request.Request(url, headers=self.headers, method="GET")
        # An opener of our own: the TLS context (verification on by default)
        # applies to https, and no global opener state is touched.
        opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=self.context))
        try:
            with opener.open(request, timeout=self.timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            detail = ""
            try:
                detail = json.loads(exc.read().decode("utf-8", "replace")).get("error", "")
            except (ValueError, AttributeError, OSError):
                pass
            raise ProviderError(f"{shown} answered HTTP {exc.code}" + (f": {detail}" if detail else "")) from exc
        except urllib.error.URLError as exc:
            raise ProviderError(f"cannot reach {shown}: {exc.reason}") from exc
        except (TimeoutError, OSError) as exc:
            raise ProviderError(f"cannot reach {shown}: {exc}") from exc
        try:
            return json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise ProviderError(f"{shown} did not answer JSON: {body[:80]!r}") from exc


def _to_float(value):
    if value is None or isinstance(value, bool):
        raise NoData("no value")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise NoData(f"not a number: {value!r}") from None
    if math.isnan(number) or math.isinf(number):
        raise NoData(f"{value}")
    return number


def parse_prometheus(payload, query=""):
    """The single value of an instant query answer (``/api/v1/query``).

    Raises NoData for an empty vector or NaN, ProviderError for an error
    answer, MetricsConfigError for a query that returns several series.
    """
    if not isinstance(payload, dict) or payload.get("status") != "success":
        error = payload.get("error") if isinstance(payload, dict) else None
        raise ProviderError(f"Prometheus refused the query {query!r}: {error or payload!r}")
    data = payload.get("data") or {}
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar":
        return _to_float((result or [None, None])[1])
    if kind == "vector":
        if not result:
            raise NoData("empty result")
        if len(result) > 1:
            labels = [r.get("metric", {}) for r in result[:3]]
            raise MetricsConfigError(
                f"query {query!r} returned {len(result)} series (e.g. {labels}); aggregate it to one value "
                f"(sum, avg, max ...)"
            )
        return _to_float(result[0].get("value", [None, None])[1])
    raise MetricsConfigError(f"query {query!r} returned a {kind}; use an instant query that returns one value")


class PrometheusProvider:
    def __init__(self, url, http):
        self.base = url.rstrip("/")
        self.http = http

    def value(self, query, url=None):
        payload = self.http.get_json((url or self.base).rstrip("/") + "/api/v1/query", {"query": query})
        return parse_prometheus(payload, query)


class WebProvider:
    """A JSON endpoint; queries are JMESPath expressions. Each URL is fetched once."""

    def __init__(self, url, http):
        self.base = url
        self.http = http
        self._documents = {}
        try:
            import jmespath  # noqa: PLC0415 - only the web provider needs it
        except ImportError as exc:
            raise MetricsConfigError("the web provider needs the jmespath Python library on the controller") from exc
        self._jmespath = jmespath

    def value(self, query, url=None):
        url = url or self.base
        if url not in self._documents:
            self._documents[url] = self.http.get_json(url)
        try:
            found = self._jmespath.search(query, self._documents[url])
        except self._jmespath.exceptions.JMESPathError as exc:
            raise MetricsConfigError(f"bad JMESPath expression {query!r}: {exc}") from exc
        if isinstance(found, list):
            if len(found) != 1:
                raise NoData(f"{query!r} selected {len(found)} values")
            found = found[0]
        return _to_float(found)


def make_provider(kind, url, http):
    if kind == "prometheus":
        return PrometheusProvider(url, http)
    if kind == "web":
        return WebProvider(url, http)
    raise MetricsConfigError(f"provider must be one of {', '.join(PROVIDERS)}, got {kind!r}")


# --------------------------------------------------------------------------
# One analysis
# --------------------------------------------------------------------------


def analyse(provider, metrics, values, requests_query=None, min_requests=0):
    """Run every query through ``provider`` and judge the results.

    ``values`` are the template values (see :func:`template_values`).
    Returns a dict: verdict, message, failed_metrics (names), metrics (per
    metric: name, value, baseline, limit, verdict, reason, query), requests.
    Configuration errors raise MetricsConfigError; a provider that cannot be
    reached makes the verdict inconclusive.
    """
    metrics = normalize_metrics(metrics)
    results = []
    requests = None
    provider_error = None
    try:
        if requests_query:
            rendered = render(requests_query, values)
            try:
                requests = provider.value(rendered)
            except NoData:
                requests = None
        for metric in metrics:
            query = render(metric["query"], values)
            url = render(metric["url"], values) if metric.get("url") else None
            try:
                value = provider.value(query, url)
            except NoData:
                value = None
            baseline = None
            baseline_query = None
            if metric["max_vs_baseline"] is not None:
                baseline_query = render(metric["baseline_query"], values)
                try:
                    baseline = provider.value(baseline_query, url)
                except NoData:
                    baseline = None
            result = evaluate_metric(metric, value, baseline)
            result["query"] = query
            if baseline_query:
                result["baseline_query"] = baseline_query
            for key in ("min", "max", "max_vs_baseline"):
                if metric[key] is not None:
                    result[key] = metric[key]
            results.append(result)
    except ProviderError as exc:
        provider_error = str(exc)
    verdict, message, failed = verdict_of(results, requests, min_requests, provider_error)
    return {
        "verdict": verdict,
        "message": message,
        "failed_metrics": failed,
        "metrics": results,
        "requests": requests,
        "provider_error": provider_error,
    }
