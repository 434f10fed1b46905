# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""HTTP probe engine for safedeploy.fleet.health_check (controller side).

Everything the module does lives here, in four layers that can be tested
one by one:

``evaluate_response``  pure: one response (status, headers, body, latency)
                       against a ``ProbeSpec`` -> list of failure reasons.
``probe_once``         one HTTP request through an injectable session.
``EndpointState``      the retry / liveness-watch state machine of one
                       endpoint, fed with ``ProbeResult`` objects; pure.
``run_probes``         schedules the attempts of many endpoints on a thread
                       pool (``concurrency`` at once) with an injectable
                       clock, sleep and session.

Nothing here imports from a module.  ``requests`` and ``jmespath`` are
imported guarded; the callers check ``HAS_REQUESTS`` / ``HAS_JMESPATH``.
"""

from __future__ import annotations

import heapq
import json
import math
import re
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

try:
    import requests
    import urllib3
    from requests.adapters import HTTPAdapter

    HAS_REQUESTS = True
    REQUESTS_IMPORT_ERROR = None
except ImportError:  # pragma: no cover - depends on the controller
    requests = None
    urllib3 = None
    HTTPAdapter = object
    HAS_REQUESTS = False
    REQUESTS_IMPORT_ERROR = traceback.format_exc()

try:
    import jmespath

    HAS_JMESPATH = True
    JMESPATH_IMPORT_ERROR = None
except ImportError:  # pragma: no cover - depends on the controller
    jmespath = None
    HAS_JMESPATH = False
    JMESPATH_IMPORT_ERROR = traceback.format_exc()


DEFAULT_VERSION_HEADER = "X-App-Version"
MASK = "********"
MAX_LISTED_FAILURES = 10

# Request header names whose values are secrets: never echoed, masked in
# the module's invocation.
_SENSITIVE_HEADER = re.compile(
    r"^(authorization|proxy-authorization|cookie|x-api-key)$|token|secret|passw|api[-_]?key|auth",
    re.IGNORECASE,
)


class ProbeConfigError(ValueError):
    """An option value is wrong; the message names the option and the value."""


# --------------------------------------------------------------------------
# Specification
# --------------------------------------------------------------------------


@dataclass
class ProbeSpec:
    """What one request sends and what its response must look like."""

    method: str = "GET"
    headers: dict = field(default_factory=dict)
    body: object = None
    expected_status: tuple = (200,)
    json_checks: dict = field(default_factory=dict)
    body_contains: str | None = None
    expected_headers: dict = field(default_factory=dict)
    max_latency_ms: float | None = None
    timeout: float = 5.0
    validate_certs: bool = True
    ca_path: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    follow_redirects: bool = False
    use_proxy: bool = True
    version_header: str = DEFAULT_VERSION_HEADER
    # compiled JMESPath expressions, filled by validate()
    _compiled: dict = field(default_factory=dict, repr=False)

    def validate(self):
        """Check the values and compile the JSON checks; raise ProbeConfigError."""
        self.method = str(self.method or "GET").upper()
        if not re.match(r"^[A-Z]+$", self.method):
            raise ProbeConfigError(f"method must be an HTTP method name such as GET, got {self.method!r}")
        statuses = []
        for status in self.expected_status or ():
            try:
                code = int(status)
            except (TypeError, ValueError):
                raise ProbeConfigError(f"expected_status must hold HTTP status codes, got {status!r}") from None
            if not 100 <= code <= 599:
                raise ProbeConfigError(f"expected_status must hold codes between 100 and 599, got {status!r}")
            statuses.append(code)
        if not statuses:
            raise ProbeConfigError(f"expected_status must list at least one status code, got {self.expected_status!r}")
        self.expected_status = tuple(statuses)
        if self.timeout is None or float(self.timeout) <= 0:
            raise ProbeConfigError(f"timeout must be a number of seconds greater than 0, got {self.timeout!r}")
        self.timeout = float(self.timeout)
        if self.max_latency_ms is not None and float(self.max_latency_ms) <= 0:
            raise ProbeConfigError(f"max_latency_ms must be greater than 0, got {self.max_latency_ms!r}")
        if self.client_key and not self.client_cert:
            raise ProbeConfigError(f"client_key={self.client_key!r} is set but client_cert is not; give both")
        self.headers = {str(k): str(v) for k, v in (self.headers or {}).items()}
        self.expected_headers = {str(k): v for k, v in (self.expected_headers or {}).items()}
        self.json_checks = dict(self.json_checks or {})
        self._compiled = {}
        if self.json_checks:
            if not HAS_JMESPATH:
                raise ProbeConfigError("json_checks needs the Python library jmespath on the controller")
            for expression in self.json_checks:
                try:
                    self._compiled[expression] = jmespath.compile(str(expression))
                except jmespath.exceptions.JMESPathError as exc:
                    raise ProbeConfigError(
                        f"json_checks: {expression!r} is not a valid JMESPath expression: {exc}") from exc
        return self


@dataclass
class RetryPolicy:
    """How often to probe an endpoint and when to decide about it."""

    interval: float = 1.0
    deadline: float = 60.0
    success_threshold: int = 1
    failure_threshold: int = 0
    watch_seconds: float = 0.0

    def validate(self):
        checks = (
            ("interval", self.interval, 0, "greater than or equal to 0"),
            ("deadline", self.deadline, 0, "greater than or equal to 0"),
            ("failure_threshold", self.failure_threshold, 0, "greater than or equal to 0"),
            ("watch_seconds", self.watch_seconds, 0, "greater than or equal to 0"),
            ("success_threshold", self.success_threshold, 1, "at least 1"),
        )
        for name, value, minimum, wording in checks:
            if value is None or value < minimum:
                raise ProbeConfigError(f"{name} must be {wording}, got {value!r}")
        return self

    @property
    def watch_failure_threshold(self):
        """Consecutive failures that end a liveness watch (0 means 1 there)."""
        return max(1, int(self.failure_threshold))


# --------------------------------------------------------------------------
# Small pure helpers
# --------------------------------------------------------------------------


def is_sensitive_header(name):
    return bool(_SENSITIVE_HEADER.search(str(name)))


def sensitive_values(headers, urls=()):
    """Values that must never appear in output: secret header values and
    passwords embedded in URLs."""
    values = set()
    for name, value in (headers or {}).items():
        if value is not None and str(value) and is_sensitive_header(name):
            values.add(str(value))
            # "Bearer abc" -> also hide "abc" alone
            parts = str(value).split(None, 1)
            if len(parts) == 2 and len(parts[1]) >= 4:
                values.add(parts[1])
    for url in urls or ():
        password = urlsplit(str(url)).password
        if password:
            values.add(password)
    return values


def redact_url(url):
    """``http://user:secret@host/`` -> ``http://user:********@host/``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    userinfo = netloc[0].split(":", 1)[0] + ":" + MASK
    return urlunsplit((parts.scheme, userinfo + "@" + netloc[1], parts.path, parts.query, parts.fragment))


def masked_headers(headers):
    """Header names with secret values replaced, for display."""
    return {k: (MASK if is_sensitive_header(k) else v) for k, v in (headers or {}).items()}


def validate_url(url):
    if not isinstance(url, str) or not url.strip():
        raise ProbeConfigError(f"every URL must be a non-empty string, got {url!r}")
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ProbeConfigError(f"URL must start with http:// or https:// and name a host, got {redact_url(url)!r}")
    try:
        _port = parts.port
    except ValueError:
        raise ProbeConfigError(f"URL has an invalid port: {redact_url(url)!r}") from None
    return url.strip()


def unique_urls(urls):
    """Validate and de-duplicate, keeping the given order."""
    seen = set()
    out = []
    for url in urls:
        url = validate_url(url)
        if url not in seen:
            seen.add(url)
            out.append(url)
    return out


def required_healthy(min_healthy, total):
    """How many endpoints must be healthy.

    ``None`` -> all of them; an int (or digit string) -> that number;
    ``"50%"`` -> ceil(50% of total).
    """
    if min_healthy is None or (isinstance(min_healthy, str) and not min_healthy.strip()):
        return total
    if isinstance(min_healthy, bool):
        raise ProbeConfigError(f"min_healthy must be an integer or a percentage like '50%', got {min_healthy!r}")
    text = str(min_healthy).strip()
    match = re.match(r"^(\d+(?:\.\d+)?)\s*%$", text)
    if match:
        percent = float(match.group(1))
        if percent > 100:
            raise ProbeConfigError(f"min_healthy percentage must be at most 100%, got {min_healthy!r}")
        return math.ceil(total * percent / 100.0 - 1e-9)
    if re.match(r"^\d+$", text):
        number = int(text)
        if number > total:
            raise ProbeConfigError(
                f"min_healthy={number} is more than the {total} endpoint(s) given")
        return number
    raise ProbeConfigError(f"min_healthy must be an integer or a percentage like '50%', got {min_healthy!r}")


def _fmt(value):
    """Render a value the way the user wrote it in YAML/JSON."""
    if isinstance(value, str):
        return repr(value)
    try:
        return json.dumps(value, sort_keys=True)
    except (TypeError, ValueError):
        return repr(value)


def values_match(expected, actual):
    """Equality for json_checks, tolerant of YAML-vs-JSON typing.

    ``True`` never equals ``1``; a string expectation matches a scalar
    actual whose JSON text is that string (``"3"`` matches ``3``,
    ``"true"`` matches ``true``).
    """
    if isinstance(expected, bool) or isinstance(actual, bool):
        if isinstance(expected, bool) and isinstance(actual, bool):
            return expected is actual
        if isinstance(expected, str) and isinstance(actual, bool):
            return expected.strip().lower() == ("true" if actual else "false")
        return False
    if expected == actual:
        return True
    if isinstance(expected, str) and isinstance(actual, (int, float)):
        try:
            return float(expected) == float(actual)
        except ValueError:
            return False
    if isinstance(expected, (int, float)) and isinstance(actual, str):
        try:
            return float(actual) == float(expected)
        except ValueError:
            return False
    return False


def _header_get(headers, name):
    if headers is None:
        return None
    getter = getattr(headers, "get", None)
    value = getter(name) if getter else None
    if value is None:
        lowered = name.lower()
        for key, val in dict(headers).items():
            if str(key).lower() == lowered:
                return val
    return value


def evaluate_response(spec, status, headers, body, latency_ms):
    """All the ways one response fails ``spec``; an empty list means it passed.

    ``body`` is bytes or str; ``headers`` any mapping (case-insensitive
    lookup is done here).
    """
    reasons = []
    if status not in spec.expected_status:
        if len(spec.expected_status) == 1:
            wanted = str(spec.expected_status[0])
        else:
            wanted = "one of " + ", ".join(str(s) for s in spec.expected_status)
        reasons.append(f"status {status} (expected {wanted})")
    if spec.max_latency_ms is not None and latency_ms is not None and latency_ms > spec.max_latency_ms:
        reasons.append(f"latency {round(latency_ms)} ms > {spec.max_latency_ms:g} ms")
    for name, expected in spec.expected_headers.items():
        actual = _header_get(headers, name)
        if actual is None:
            reasons.append(f"header {name} expected {_fmt(str(expected))} but it is missing")
        elif str(actual) != str(expected):
            reasons.append(f"header {name} expected {_fmt(str(expected))} got {_fmt(str(actual))}")
    text = None
    if spec.body_contains is not None or spec.json_checks:
        if isinstance(body, bytes):
            text = body.decode("utf-8", errors="replace")
        else:
            text = body or ""
    if spec.body_contains is not None and spec.body_contains not in text:
        reasons.append(f"body does not contain {_fmt(spec.body_contains)}")
    if spec.json_checks:
        try:
            document = json.loads(text) if text.strip() else None
            parse_error = None if text.strip() else "empty body"
        except ValueError as exc:
            document, parse_error = None, str(exc)
        if parse_error:
            reasons.append("body is not JSON ({}), so json_checks {} cannot pass".format(
                parse_error, ", ".join(_fmt(e) for e in spec.json_checks)))
        else:
            for expression, expected in spec.json_checks.items():
                compiled = spec._compiled.get(expression) or jmespath.compile(str(expression))
                actual = compiled.search(document)
                if not values_match(expected, actual):
                    if actual is None:
                        reasons.append(f"JSON check {_fmt(expression)} expected {_fmt(expected)} got null (missing)")
                    else:
                        reasons.append(f"JSON check {_fmt(expression)} expected {_fmt(expected)} got {_fmt(actual)}")
    return reasons


# --------------------------------------------------------------------------
# One request
# --------------------------------------------------------------------------


@dataclass
class ProbeResult:
    ok: bool
    started: float
    finished: float
    status: int | None = None
    latency_ms: float | None = None
    reason: str = ""
    version: str | None = None


def describe_exception(exc, timeout=None):
    """A short human reason for a failed request."""
    chain = []
    seen = exc
    while seen is not None and len(chain) < 10:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
        # urllib3 keeps the root cause in .reason
        reason = getattr(chain[-1], "reason", None)
        if seen is None and isinstance(reason, BaseException):
            seen = reason
    texts = " ".join(str(c) for c in chain)
    kinds = {type(c).__name__ for c in chain}
    if requests is not None:
        if isinstance(exc, requests.exceptions.SSLError):
            if "CERTIFICATE_VERIFY_FAILED" in texts:
                detail = "certificate verify failed"
            else:
                detail = str(exc).rsplit("(Caused by", maxsplit=1)[-1].strip(" ()")
            return f"TLS error: {detail}"
        if isinstance(exc, requests.exceptions.Timeout):
            kind = "connect timeout" if isinstance(exc, requests.exceptions.ConnectTimeout) else "timeout"
            return f"{kind} after {timeout:g} s" if timeout else kind
        if isinstance(exc, requests.exceptions.TooManyRedirects):
            return "too many redirects"
    if "ConnectionRefusedError" in kinds or "Connection refused" in texts or "[Errno 111]" in texts:
        return "connection refused"
    if "ConnectionResetError" in kinds or "Connection reset" in texts:
        return "connection reset"
    if "RemoteDisconnected" in kinds or "closed connection without response" in texts:
        return "connection closed without a response"
    if "NameResolutionError" in kinds or "Name or service not known" in texts or "getaddrinfo failed" in texts:
        return "host name does not resolve"
    if "TimeoutError" in kinds or "timed out" in texts:
        return f"timeout after {timeout:g} s" if timeout else "timeout"
    if "CERTIFICATE_VERIFY_FAILED" in texts:
        return "TLS error: certificate verify failed"
    text = str(exc).strip() or type(exc).__name__
    return f"request failed: {text[:300]}"


def request_kwargs(spec):
    """Keyword arguments for ``session.request`` (except method and url)."""
    kwargs = {
        "headers": dict(spec.headers),
        "timeout": spec.timeout,
        "allow_redirects": bool(spec.follow_redirects),
        "verify": spec.ca_path if (spec.validate_certs and spec.ca_path) else bool(spec.validate_certs),
    }
    if spec.client_cert:
        kwargs["cert"] = (spec.client_cert, spec.client_key) if spec.client_key else spec.client_cert
    if spec.body is not None:
        if isinstance(spec.body, (dict, list)):
            kwargs["json"] = spec.body
        else:
            kwargs["data"] = spec.body if isinstance(spec.body, bytes) else str(spec.body).encode("utf-8")
    if not spec.use_proxy:
        kwargs["proxies"] = {"http": None, "https": None, "all": None}
    return kwargs


def probe_once(session, url, spec, clock=time.monotonic):
    """Send one request and evaluate it; never raises."""
    started = clock()
    try:
        response = session.request(spec.method, url, **request_kwargs(spec))
        body = response.content
        finished = clock()
    except Exception as exc:  # noqa: BLE001 - every transport failure becomes a reason
        finished = clock()
        return ProbeResult(ok=False, started=started, finished=finished, reason=describe_exception(exc, spec.timeout))
    latency_ms = (finished - started) * 1000.0
    headers = getattr(response, "headers", {}) or {}
    version = _header_get(headers, spec.version_header) if spec.version_header else None
    try:
        reasons = evaluate_response(spec, response.status_code, headers, body, latency_ms)
    except Exception as exc:  # noqa: BLE001  # pragma: no cover - defensive
        reasons = [f"could not evaluate the response: {exc}"]
    return ProbeResult(
        ok=not reasons,
        started=started,
        finished=finished,
        status=response.status_code,
        latency_ms=round(latency_ms, 1),
        reason="; ".join(reasons),
        version=str(version) if version is not None else None,
    )


def quiet_insecure_warnings():
    """Silence urllib3's warning per unverified request (validate_certs: false
    was asked for explicitly)."""
    if urllib3 is not None:
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)


class _NoCookies:
    """A cookie policy that accepts nothing: probes of different endpoints
    share one session and must not leak cookies into each other."""

    netscape = True
    rfc2965 = False
    hide_cookie2 = False

    def set_ok(self, cookie, request):
        return False

    def return_ok(self, cookie, request):
        return False

    def domain_return_ok(self, domain, request):
        return False

    def path_return_ok(self, path, request):
        return False


def make_session(concurrency=64):
    """One ``requests.Session`` shared by the worker threads.

    urllib3's pool manager is thread-safe; it keeps at most ``concurrency``
    host pools (least recently used are closed), so open sockets stay
    bounded however many endpoints are probed.
    """
    if not HAS_REQUESTS:
        raise ProbeConfigError("the Python library requests is required on the controller")
    session = requests.Session()
    session.cookies.set_policy(_NoCookies())
    adapter = HTTPAdapter(pool_connections=max(1, int(concurrency)), pool_maxsize=2, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


# --------------------------------------------------------------------------
# Retry / watch state machine of one endpoint
# --------------------------------------------------------------------------

PROBING = "probing"
WATCHING = "watching"
DONE = "done"


class EndpointState:
    """Feeds on ``ProbeResult``s and decides healthy / unhealthy.

    Phases: ``probing`` until ``success_threshold`` consecutive passes
    (unhealthy on ``failure_threshold`` consecutive failures, when > 0, or
    when the next attempt would start at or after the deadline); then, if
    ``watch_seconds`` > 0, ``watching`` for that long, where
    ``max(1, failure_threshold)`` consecutive failures make it unhealthy.
    The first attempt always happens, so ``deadline: 0`` means one try.
    """

    def __init__(self, url, policy, start):
        self.url = url
        self.policy = policy
        self.start = start
        self.deadline_at = start + float(policy.deadline)
        self.phase = PROBING
        self.healthy = None
        self.attempts = 0
        self.consecutive_successes = 0
        self.consecutive_failures = 0
        self.last_status = None
        self.latency_ms = None
        self.version = None
        self.reason = ""
        self.last_failure = ""
        self.watch_until = None
        self.finished_at = None

    @property
    def done(self):
        return self.phase == DONE

    def _finish(self, healthy, when, reason=""):
        self.phase = DONE
        self.healthy = healthy
        self.finished_at = when
        self.reason = reason

    def record(self, result):
        """Take one attempt's result; return when the next attempt is due,
        or ``None`` when this endpoint is decided."""
        if self.done:
            return None
        policy = self.policy
        self.attempts += 1
        self.last_status = result.status
        self.latency_ms = result.latency_ms
        if result.version is not None:
            self.version = result.version
        next_due = max(result.started + float(policy.interval), result.finished)
        if result.ok:
            self.consecutive_successes += 1
            self.consecutive_failures = 0
        else:
            self.consecutive_failures += 1
            self.consecutive_successes = 0
            self.last_failure = result.reason

        if self.phase == PROBING:
            if result.ok and self.consecutive_successes >= policy.success_threshold:
                if policy.watch_seconds > 0:
                    self.phase = WATCHING
                    self.watch_until = result.finished + float(policy.watch_seconds)
                    self.consecutive_failures = 0
                    return min(next_due, self.watch_until)
                self._finish(True, result.finished)
                return None
            if not result.ok and policy.failure_threshold > 0 and self.consecutive_failures >= policy.failure_threshold:
                self._finish(False, result.finished,
                             f"{result.reason} ({self.consecutive_failures} consecutive failures, "
                             f"failure_threshold {policy.failure_threshold})")
                return None
            if next_due >= self.deadline_at:
                if result.ok:
                    why = (f"last failure: {self.last_failure or 'none'}; only {self.consecutive_successes} "
                           f"of {policy.success_threshold} consecutive passes")
                else:
                    why = result.reason
                self._finish(False, result.finished,
                             f"{why} (not healthy within deadline {policy.deadline:g} s, {self.attempts} attempt"
                             f"{'' if self.attempts == 1 else 's'})")
                return None
            if not result.ok:
                self.reason = result.reason
            return next_due

        # WATCHING
        threshold = policy.watch_failure_threshold
        if not result.ok and self.consecutive_failures >= threshold:
            into = result.started - (self.watch_until - float(policy.watch_seconds))
            plural = "" if self.consecutive_failures == 1 else "s"
            self._finish(False, result.finished,
                         f"{result.reason} (during the liveness watch, {max(0.0, into):.1f} s after becoming "
                         f"healthy, {self.consecutive_failures} consecutive failure{plural})")
            return None
        if result.started >= self.watch_until:
            self._finish(True, result.finished)
            return None
        self.reason = result.reason if not result.ok else ""
        return min(next_due, self.watch_until)

    def as_dict(self):
        elapsed = (self.finished_at if self.finished_at is not None else self.start) - self.start
        return {
            "url": redact_url(self.url),
            "healthy": bool(self.healthy),
            "attempts": self.attempts,
            "consecutive_successes": self.consecutive_successes,
            "consecutive_failures": self.consecutive_failures,
            "last_status": self.last_status,
            "latency_ms": self.latency_ms,
            "reason": self.reason,
            "version": self.version,
            "elapsed": round(max(0.0, elapsed), 3),
        }


# --------------------------------------------------------------------------
# Many endpoints at once
# --------------------------------------------------------------------------


def run_probes(urls, spec, policy, concurrency=64, session=None, clock=time.monotonic, sleep=time.sleep,
               probe=probe_once):
    """Probe every URL until each is decided; return the list of
    ``EndpointState`` in the order of ``urls``.

    At most ``concurrency`` requests are in flight.  Attempts are scheduled
    by due time (``interval`` apart per endpoint) from one main loop, so a
    slow endpoint never holds back the others beyond its own request.
    """
    concurrency = max(1, int(concurrency))
    if session is None:
        session = make_session(concurrency)
    start = clock()
    states = [EndpointState(url, policy, start) for url in urls]
    if not states:
        return states
    due = [(start, index) for index in range(len(states))]
    heapq.heapify(due)
    inflight = {}
    workers = min(concurrency, len(states))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="health_check") as pool:
        while due or inflight:
            now = clock()
            while due and due[0][0] <= now and len(inflight) < concurrency:
                _when, index = heapq.heappop(due)
                future = pool.submit(probe, session, states[index].url, spec, clock)
                inflight[future] = index
            if inflight:
                timeout = None
                if due and len(inflight) < concurrency:
                    timeout = max(0.0, due[0][0] - clock())
                finished, _pending = wait(list(inflight), timeout=timeout, return_when=FIRST_COMPLETED)
                for future in finished:
                    index = inflight.pop(future)
                    try:
                        result = future.result()
                    except Exception as exc:  # noqa: BLE001  # pragma: no cover - probe_once never raises
                        now = clock()
                        result = ProbeResult(ok=False, started=now, finished=now, reason=f"probe crashed: {exc}")
                    next_due = states[index].record(result)
                    if next_due is not None:
                        heapq.heappush(due, (next_due, index))
            elif due:
                pause = due[0][0] - clock()
                if pause > 0:
                    sleep(pause)
    return states


def summarize(states, min_healthy=None, start=None, end=None):
    """Fleet verdict and the return values of the module."""
    endpoints = [s.as_dict() for s in states]
    healthy_count = sum(1 for e in endpoints if e["healthy"])
    needed = required_healthy(min_healthy, len(endpoints))
    summary = {
        "healthy": healthy_count >= needed,
        "endpoints": endpoints,
        "healthy_count": healthy_count,
        "unhealthy_count": len(endpoints) - healthy_count,
        "min_healthy": needed,
    }
    if start is not None and end is not None:
        summary["elapsed"] = round(end - start, 3)
    return summary


def failure_message(summary, limit=MAX_LISTED_FAILURES):
    """``2 of 5 endpoints unhealthy (3 needed healthy): URL: reason; ...``"""
    bad = [e for e in summary["endpoints"] if not e["healthy"]]
    total = len(summary["endpoints"])
    plural = "" if total == 1 else "s"
    head = (f"{len(bad)} of {total} endpoint{plural} unhealthy "
            f"({summary['healthy_count']} healthy, {summary['min_healthy']} needed)")
    parts = [f"{e['url']}: {e['reason'] or 'unhealthy'}" for e in bad[:limit]]
    text = head + ": " + "; ".join(parts) if parts else head
    if len(bad) > limit:
        text += f"; and {len(bad) - limit} more"
    return text
