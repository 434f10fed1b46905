#!/usr/bin/python
# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: metric_gate
short_description: Decide pass, fail or inconclusive for a canary from HAProxy's counters, Prometheus queries or a JSON endpoint
version_added: 0.1.0
author:
  - safedeploy.fleet contributors (@safedeploy)
description:
  - Runs an analysis - a list of metrics, each a query with thresholds - against a metrics provider and answers
    V(pass), V(fail) or V(inconclusive) with every measured value.
  - V(prometheus) runs each query through the HTTP query API (C(/api/v1/query), an instant query at the time of
    the call). V(web) fetches a JSON document and reads each value with a JMESPath expression.
  - V(haproxy) needs no metrics server - it judges the new servers (O(canary)) from the counters HAProxy keeps for
    every server, read on every load balancer by M(safedeploy.fleet.haproxy_info) when the new version took
    traffic (O(haproxy_start)) and now (O(haproxy_now)), against the baseline servers (O(stable)) over the same
    period. It computes on the deltas, summed over the load balancers - the error rate (5xx answers, refused
    connections, resets), the mean response time of the period, sessions per server and, for servers with a
    C(maxconn), queued requests; see O(thresholds). A load balancer whose counters went down (a reload) starts
    its period again (RV(window_restarted)); one that could not be read makes the verdict V(inconclusive).
    docs/analysis-haproxy.md has the arithmetic and what it cannot see.
  - Queries are templates. C(${canary}) and C(${stable}) become regular expressions matching the canary and the
    stable instances (C(web1|web2), escaped for a PromQL string), C(${canary_list}) and C(${stable_list}) the
    names joined with commas, C(${window}) O(window), C(${version}) O(version), C(${app}) O(app).
    Nothing else is replaced, so PromQL's own braces stay as they are (and Ansible's Jinja2 does not see
    C(${...})).
  - Thresholds - C(min), C(max), and C(max_vs_baseline) - the canary's value must not exceed the
    baseline (the same query on the stable instances, at the same time) times this ratio plus
    C(baseline_tolerance).
  - The verdict is V(inconclusive) when the provider cannot be reached or answers an error, when the canary
    served fewer than O(min_requests) requests in the window (O(requests_query); with V(haproxy), the requests
    of the new servers between the samples), or when a metric has no data and none failed; V(fail) when a metric
    is outside its thresholds; V(pass) otherwise.
  - Without O(metrics) the default analysis of V(prometheus) and V(web) runs - request success rate >= 99 %, p99
    latency <= 500 ms, and
    requests in flight per canary host <= 1.5 x the stable hosts' + 1. It reads C(<app>_requests_total{code}),
    the histogram C(<app>_request_duration_seconds) and the gauge C(<app>_requests_in_flight), labelled with
    C(instance=<host>).
  - "Runs on the controller (C(delegate_to: localhost)) and changes nothing."
extends_documentation_fragment:
  - safedeploy.fleet.attributes
attributes:
  check_mode:
    support: full
    details: The queries only read, so they run in check mode too.
  diff_mode:
    support: none
options:
  provider:
    description: Where the values come from.
    type: str
    choices: [prometheus, web, haproxy]
    default: prometheus
  url:
    description:
      - V(prometheus) - the Prometheus base URL (C(http://mon1:9090)).
      - V(web) - the JSON endpoint (templated); a metric may name its own C(url).
      - Required with V(prometheus) and V(web); not used by V(haproxy).
    type: str
  canary:
    description:
      - The canary instances (the C(instance) label values; usually the inventory host names).
      - V(haproxy) - the new servers, each C(backend/server) or a server name (that server in every backend of
        O(backends), or in every backend where it is when O(backends) is empty). A name found on no load balancer
        is an error.
    type: list
    elements: str
    default: []
  stable:
    description:
      - The stable instances, the baseline judged at the same time as the canary.
      - V(haproxy) - the baseline servers, written as in O(canary). Empty - only the absolute thresholds apply
        (the last batch of a rolling update, a whole new fleet).
    type: list
    elements: str
    default: []
  haproxy_start:
    description:
      - V(haproxy) - every load balancer's counters when the judged period began (the new version took traffic),
        as the P(safedeploy.fleet.haproxy_sample#filter) filter makes them from a loop of
        M(safedeploy.fleet.haproxy_info) results - load balancer name to C(error) (null, or C(kind) and C(msg)),
        C(process) and C(servers) (C(backend/server) to its counters).
    type: dict
  haproxy_now:
    description: V(haproxy) - every load balancer's counters now, as O(haproxy_start).
    type: dict
  backends:
    description: V(haproxy) - the backends in which server names in O(canary) and O(stable) are looked up.
    type: list
    elements: str
    default: []
  thresholds:
    description:
      - V(haproxy) - the thresholds, each a number or null (that check off); those not given keep their default.
      - C(error_rate_max) (V(1), in %) and C(error_rate_over_baseline) (V(0.5), percentage points above the
        baseline servers' error rate).
      - C(latency_max) (V(500), ms) and C(latency_vs_baseline) (V(1.5), a ratio to the baseline servers' mean
        response time) plus C(latency_tolerance) (V(5), ms).
      - C(saturation_vs_baseline) (V(1.5)) plus C(saturation_tolerance) (V(5)) - sessions per new server against
        the baseline's; C(saturation_max) (null) an absolute bound.
      - C(queue_max) (V(5)) - requests queued per new server that has a C(maxconn).
      - The relative thresholds apply only when O(stable) is given.
    type: dict
    default: {}
  version:
    description: The canary version, for C(${version}).
    type: str
    default: ""
  app:
    description: The application name, for C(${app}) (the default analysis needs it).
    type: str
    default: ""
  window:
    description:
      - The analysis window, a Prometheus duration (C(30s), C(1m), C(1m30s)), for C(${window}).
      - Not used by V(haproxy) - its period runs from O(haproxy_start) to O(haproxy_now).
    type: str
    default: 1m
  metrics:
    description:
      - The analysis. Each item has C(name), C(query), optional C(baseline_query) (default - the query with
        C(${stable}) in place of C(${canary})), C(url) (V(web) only), thresholds C(min), C(max),
        C(max_vs_baseline) (a ratio), C(baseline_tolerance) (added to the baseline limit), C(unit), C(description).
      - Empty - the default analysis (success rate, p99 latency, saturation; needs O(app)).
      - Not with V(haproxy), whose metrics are fixed (see O(thresholds)).
    type: list
    elements: dict
    default: []
  requests_query:
    description:
      - A query for the number of requests the canary served in the window; fewer than O(min_requests)
        makes the verdict V(inconclusive) (the metrics are still measured and returned).
      - Default with V(prometheus) - the sum over the canary instances of the increase of C(${app}_requests_total) over C(${window}).
        when O(app) is set. Empty string - no such check.
      - Not with V(haproxy), which counts the new servers' requests itself.
    type: str
  min_requests:
    description:
      - The fewest canary requests in the window to judge it; V(0) turns the check off.
      - V(haproxy) - the requests of the new servers between the two samples, over every load balancer.
    type: int
    default: 20
  fail_on:
    description: The verdicts that make the task fail. The C(canary) role passes V([]) and decides itself.
    type: list
    elements: str
    choices: [fail, inconclusive]
    default: [fail, inconclusive]
  bearer_token:
    description: "Sent as C(Authorization: Bearer ...). Never logged."
    type: str
  username:
    description: HTTP basic authentication user.
    type: str
  password:
    description: HTTP basic authentication password. Never logged.
    type: str
  headers:
    description:
      - Extra HTTP headers.
      - The values of secret-looking headers (C(Authorization), C(X-Api-Key), names containing C(token), C(secret),
        C(auth), ...) and a password in O(url) are masked in the output.
    type: dict
    default: {}
  validate_certs:
    description: Verify the provider's TLS certificate.
    type: bool
    default: true
  ca_path:
    description: A CA bundle to verify the provider's certificate with.
    type: path
  timeout:
    description: Seconds for each HTTP request.
    type: float
    default: 10
notes:
  - The gate reports values as it measured them; a window longer than the time the canary has been taking
    traffic mixes in earlier traffic of the same instances.
seealso:
  - module: safedeploy.fleet.haproxy_info
  - name: Prometheus HTTP API
    description: Instant queries.
    link: https://prometheus.io/docs/prometheus/latest/querying/api/#instant-queries
"""

EXAMPLES = r"""
- name: Judge web1 against the rest of the fleet over the last minute (default analysis)
  safedeploy.fleet.metric_gate:
    url: http://mon1:9090
    app: demoapp
    canary: [web1]
    stable: [web2, web3, web4]
    window: 1m
  delegate_to: localhost

- name: Own thresholds, never failing the task (decide from the verdict)
  safedeploy.fleet.metric_gate:
    url: https://prometheus.example.com
    bearer_token: "{{ vault_prometheus_token }}"
    canary: [web1]
    stable: [web2, web3]
    window: 2m
    requests_query: 'sum(increase(http_requests_total{instance=~"${canary}"}[${window}]))'
    metrics:
      - name: error_rate
        query: >-
          100 * sum(rate(http_requests_total{instance=~"${canary}",code=~"5.."}[${window}]))
          / sum(rate(http_requests_total{instance=~"${canary}"}[${window}]))
        max: 1
        unit: "%"
      - name: cpu
        query: avg(rate(process_cpu_seconds_total{instance=~"${canary}"}[${window}]))
        max_vs_baseline: 1.3
    fail_on: []
  register: gate
  delegate_to: localhost

- name: A JSON endpoint read with JMESPath
  safedeploy.fleet.metric_gate:
    provider: web
    url: https://stats.example.com/api/canary?hosts=${canary_list}
    min_requests: 100
    requests_query: canary.requests
    metrics:
      - name: error_rate
        query: canary.error_percent
        max: 1
      - name: latency_p99
        query: canary.p99_ms
        baseline_query: stable.p99_ms
        max: 500
        max_vs_baseline: 1.2
  delegate_to: localhost

# No metrics server: HAProxy's own counters, read on every load balancer
- name: Read every load balancer as the new version takes traffic
  safedeploy.fleet.haproxy_info:
    backends: [demoapp]
  delegate_to: "{{ item }}"
  loop: "{{ groups['lb'] }}"
  failed_when: false
  register: lb_start

- name: Let it take traffic
  ansible.builtin.pause:
    seconds: 30

- name: Read them again
  safedeploy.fleet.haproxy_info:
    backends: [demoapp]
  delegate_to: "{{ item }}"
  loop: "{{ groups['lb'] }}"
  failed_when: false
  register: lb_now

- name: Judge web1 against web2 and web3 over those 30 seconds
  safedeploy.fleet.metric_gate:
    provider: haproxy
    haproxy_start: "{{ lb_start | safedeploy.fleet.haproxy_sample }}"
    haproxy_now: "{{ lb_now | safedeploy.fleet.haproxy_sample }}"
    backends: [demoapp]
    canary: [web1]
    stable: [web2, web3]
    min_requests: 100
    thresholds:
      latency_vs_baseline: 2
      queue_max: null
    fail_on: []
  register: gate
  delegate_to: localhost
"""

RETURN = r"""
verdict:
  description: V(pass), V(fail) or V(inconclusive).
  returned: always
  type: str
  sample: fail
message:
  description: The verdict in words, naming each failed metric with its value and threshold.
  returned: always
  type: str
  sample: "fail: success_rate = 80.5% is below the minimum 99%"
failed_metrics:
  description: The names of the metrics that failed.
  returned: always
  type: list
  elements: str
  sample: [success_rate]
metrics:
  description: One entry per metric, in order.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The metric's name.
      type: str
    value:
      description: The canary's value (null - no data).
      type: float
    baseline:
      description: The stable instances' value, for C(max_vs_baseline) (null otherwise or without data).
      type: float
    limit:
      description: The upper bound computed from the baseline.
      type: float
    verdict:
      description: This metric's verdict.
      type: str
    reason:
      description: The value against its thresholds, in words.
      type: str
    query:
      description: The query as sent (templated); with V(haproxy), how the value is computed.
      type: str
    value_low:
      description: V(haproxy), C(latency) only - the lowest mean the rounded gauges allow; the thresholds judge it.
      type: float
    value_high:
      description: V(haproxy), C(latency) only - the highest mean the rounded gauges allow.
      type: float
    window_share:
      description: V(haproxy), C(latency) only - the share of HAProxy's moving mean made of the period's answers.
      type: float
  sample:
    - {name: success_rate, value: 80.5, baseline: null, limit: null, verdict: fail, min: 99,
       reason: "success_rate = 80.5% is below the minimum 99%", query: "100 * sum(...)"}
requests:
  description: The canary's requests in the window (O(requests_query)), null without the check or without data.
  returned: always
  type: float
  sample: 912
provider_error:
  description: Why the provider could not be read (then the verdict is inconclusive), else null.
  returned: always
  type: str
  sample: "cannot reach http://mon1:9090/api/v1/query: [Errno 111] Connection refused"
window_restarted:
  description: V(haproxy) - the load balancers whose counters began again during the period (a reload); their
    counters since then are what was judged.
  returned: when provider is haproxy
  type: list
  elements: str
  sample: [lb1]
load_balancers:
  description: V(haproxy) - per load balancer, whether it was read (C(read)), whether its period began again
    (C(restarted)) and why, or why it could not be read (C(reason)).
  returned: when provider is haproxy
  type: dict
  sample: {lb1: {read: true, restarted: false, reason: null},
           lb2: {read: false, restarted: false, reason: "lb2 (now): connection: cannot connect ..."}}
groups:
  description:
    - V(haproxy) - the sums behind the metrics, for the new servers (C(new)) and the baseline servers
      (C(baseline), null without O(stable)) - C(servers), C(answers), C(requests), C(errors), C(error_rate),
      C(hrsp_5xx), C(econ), C(eresp), C(srv_abrt), C(wretr), C(wredis), C(sessions), C(saturation), C(queue),
      C(maxconn_usage) and C(latency) (C(estimate), C(low), C(high), C(share), C(rtime), C(answers)).
  returned: when provider is haproxy
  type: dict
  sample: {new: {servers: [demoapp/web1], answers: 1210, requests: 1212, errors: 243, error_rate: 20.05},
           baseline: {servers: [demoapp/web2, demoapp/web3], answers: 2398, requests: 2398, errors: 0,
                      error_rate: 0.0}}
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.safedeploy.fleet.plugins.module_utils._lbstats import analyse as analyse_counters  # noqa: E402
from ansible_collections.safedeploy.fleet.plugins.module_utils._metrics import (  # noqa: E402
    DEFAULT_REQUESTS_QUERY,
    HTTPSettings,
    MetricsError,
    analyse,
    check_window,
    default_metrics,
    make_provider,
    render,
    template_values,
)
from ansible_collections.safedeploy.fleet.plugins.module_utils._probe import sensitive_values  # noqa: E402


def run_haproxy(module):
    p = module.params
    for option, what in (("metrics", "its metrics are fixed: set thresholds"), ("requests_query", "it counts the requests")):
        if p[option]:
            module.fail_json(msg=f"{option} is for the prometheus and web providers; provider haproxy takes none ({what})")
    if p["min_requests"] < 0:
        module.fail_json(msg=f"min_requests must be >= 0, got {p['min_requests']}")
    result = analyse_counters(p["haproxy_start"], p["haproxy_now"], p["canary"], p["stable"], p["thresholds"],
                              p["min_requests"], p["backends"])
    result["changed"] = False
    return result


def run(module):
    p = module.params
    if p["provider"] == "haproxy":
        return run_haproxy(module)
    window = check_window(p["window"])
    values = template_values(p["canary"], p["stable"], window, p["version"], p["app"])
    metrics = p["metrics"] or default_metrics()
    if not p["metrics"] and not p["app"]:
        module.fail_json(msg="the default analysis needs app (the metric names are <app>_requests_total, ...); "
                             "set app or give metrics")
    uses_canary = any("${canary" in str(m.get("query", "")) for m in metrics)
    if uses_canary and not p["canary"]:
        module.fail_json(msg="the queries use ${canary} but canary (the canary instances) is empty")
    requests_query = p["requests_query"]
    if requests_query is None:
        requests_query = DEFAULT_REQUESTS_QUERY if p["provider"] == "prometheus" and p["app"] else ""
    if p["min_requests"] < 0:
        module.fail_json(msg=f"min_requests must be >= 0, got {p['min_requests']}")
    if p["min_requests"] and not requests_query:
        module.warn("min_requests is set but there is no requests_query: the request count is not checked")
    http = HTTPSettings(timeout=p["timeout"], bearer_token=p["bearer_token"], username=p["username"],
                        password=p["password"], headers=p["headers"], validate_certs=p["validate_certs"],
                        ca_path=p["ca_path"])
    url = render(p["url"], values)
    provider = make_provider(p["provider"], url, http)
    result = analyse(provider, metrics, values, requests_query or None,
                     p["min_requests"] if requests_query else 0)
    result["changed"] = False
    return result


def main():
    module = AnsibleModule(
        argument_spec={
            "provider": {"type": "str", "choices": ["prometheus", "web", "haproxy"], "default": "prometheus"},
            "url": {"type": "str"},
            "canary": {"type": "list", "elements": "str", "default": []},
            "stable": {"type": "list", "elements": "str", "default": []},
            "haproxy_start": {"type": "dict"},
            "haproxy_now": {"type": "dict"},
            "backends": {"type": "list", "elements": "str", "default": []},
            "thresholds": {"type": "dict", "default": {}},
            "version": {"type": "str", "default": ""},
            "app": {"type": "str", "default": ""},
            "window": {"type": "str", "default": "1m"},
            "metrics": {"type": "list", "elements": "dict", "default": []},
            "requests_query": {"type": "str"},
            "min_requests": {"type": "int", "default": 20},
            "fail_on": {"type": "list", "elements": "str", "choices": ["fail", "inconclusive"],
                        "default": ["fail", "inconclusive"]},
            "bearer_token": {"type": "str", "no_log": True},
            "username": {"type": "str"},
            "password": {"type": "str", "no_log": True},
            "headers": {"type": "dict", "default": {}},
            "validate_certs": {"type": "bool", "default": True},
            "ca_path": {"type": "path"},
            "timeout": {"type": "float", "default": 10},
        },
        mutually_exclusive=[["bearer_token", "username"]],
        required_by={"password": "username"},
        required_if=[("provider", "prometheus", ("url",)), ("provider", "web", ("url",)),
                     ("provider", "haproxy", ("haproxy_start", "haproxy_now"))],
        supports_check_mode=True,
    )
    # Secret header values (Authorization, X-Api-Key, ...) and a password in
    # the URL are masked in everything returned, the echoed arguments too.
    module.no_log_values.update(sensitive_values(module.params["headers"], [module.params["url"] or ""]))
    try:
        result = run(module)
    except MetricsError as exc:
        module.fail_json(msg=str(exc))
    if result["verdict"] in module.params["fail_on"]:
        module.fail_json(msg=f"metric gate: {result['message']}", **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
