#!/usr/bin/python
# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: metric_gate
short_description: Decide pass, fail or inconclusive for a canary from Prometheus queries or a JSON endpoint
version_added: 0.1.0
author:
  - safedeploy.fleet contributors (@safedeploy)
description:
  - Runs an analysis - a list of metrics, each a query with thresholds - against a metrics provider and answers
    V(pass), V(fail) or V(inconclusive) with every measured value.
  - V(prometheus) runs each query through the HTTP query API (C(/api/v1/query), an instant query at the time of
    the call). V(web) fetches a JSON document and reads each value with a JMESPath expression.
  - Queries are templates. C(${canary}) and C(${stable}) become regular expressions matching the canary and the
    stable instances (C(web1|web2), escaped for a PromQL string), C(${canary_list}) and C(${stable_list}) the
    names joined with commas, C(${window}) O(window), C(${version}) O(version), C(${app}) O(app).
    Nothing else is replaced, so PromQL's own braces stay as they are (and Ansible's Jinja2 does not see
    C(${...})).
  - Thresholds - C(min), C(max), and C(max_vs_baseline) - the canary's value must not exceed the
    baseline (the same query on the stable instances, at the same time) times this ratio plus
    C(baseline_tolerance).
  - The verdict is V(inconclusive) when the provider cannot be reached or answers an error, when the canary
    served fewer than O(min_requests) requests in the window (O(requests_query)), or when a metric has no data
    and none failed; V(fail) when a metric is outside its thresholds; V(pass) otherwise.
  - Without O(metrics) the default analysis runs - request success rate >= 99 %, p99 latency <= 500 ms, and
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
    choices: [prometheus, web]
    default: prometheus
  url:
    description:
      - V(prometheus) - the Prometheus base URL (C(http://mon1:9090)).
      - V(web) - the JSON endpoint (templated); a metric may name its own C(url).
    type: str
    required: true
  canary:
    description: The canary instances (the C(instance) label values; usually the inventory host names).
    type: list
    elements: str
    default: []
  stable:
    description: The stable instances, the baseline judged at the same time as the canary.
    type: list
    elements: str
    default: []
  version:
    description: The canary version, for C(${version}).
    type: str
    default: ""
  app:
    description: The application name, for C(${app}) (the default analysis needs it).
    type: str
    default: ""
  window:
    description: The analysis window, a Prometheus duration (C(30s), C(1m), C(1m30s)), for C(${window}).
    type: str
    default: 1m
  metrics:
    description:
      - The analysis. Each item has C(name), C(query), optional C(baseline_query) (default - the query with
        C(${stable}) in place of C(${canary})), C(url) (V(web) only), thresholds C(min), C(max),
        C(max_vs_baseline) (a ratio), C(baseline_tolerance) (added to the baseline limit), C(unit), C(description).
      - Empty - the default analysis (success rate, p99 latency, saturation; needs O(app)).
    type: list
    elements: dict
    default: []
  requests_query:
    description:
      - A query for the number of requests the canary served in the window; fewer than O(min_requests)
        makes the verdict V(inconclusive) (the metrics are still measured and returned).
      - Default with V(prometheus) - the sum over the canary instances of the increase of C(${app}_requests_total) over C(${window}).
        when O(app) is set. Empty string - no such check.
    type: str
  min_requests:
    description: The fewest canary requests in the window to judge it; V(0) turns the check off.
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
      description: The query as sent (templated).
      type: str
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
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
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


def run(module):
    p = module.params
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
            "provider": {"type": "str", "choices": ["prometheus", "web"], "default": "prometheus"},
            "url": {"type": "str", "required": True},
            "canary": {"type": "list", "elements": "str", "default": []},
            "stable": {"type": "list", "elements": "str", "default": []},
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
        supports_check_mode=True,
    )
    # Secret header values (Authorization, X-Api-Key, ...) and a password in
    # the URL are masked in everything returned, the echoed arguments too.
    module.no_log_values.update(sensitive_values(module.params["headers"], [module.params["url"]]))
    try:
        result = run(module)
    except MetricsError as exc:
        module.fail_json(msg=str(exc))
    if result["verdict"] in module.params["fail_on"]:
        module.fail_json(msg=f"metric gate: {result['message']}", **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
