#!/usr/bin/python
# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: health_check
short_description: Probe one or many HTTP endpoints concurrently until they are healthy
version_added: 0.1.0
author:
  - safedeploy.fleet contributors (@safedeploy)
description:
  - Sends HTTP requests to one O(url) or a batch of O(urls) at the same time (a thread pool of
    O(concurrency) workers) and checks every response - status code, JSON fields selected with
    JMESPath, a substring of the body, response headers and latency.
  - Each endpoint is retried every O(interval) seconds until it passed O(success_threshold) times in a
    row, until O(deadline) seconds have passed, or until O(failure_threshold) consecutive failures.
  - With O(watch_seconds) every endpoint that became healthy keeps being probed for that long (a liveness
    watch after a restart), and is unhealthy if it fails O(failure_threshold) times in a row during the watch.
  - "Runs on the controller; call it with C(delegate_to: localhost) and C(run_once: true) to check a whole
    batch of hosts in one task. It only reads, so it never reports a change and runs in check mode too."
  - Values of request headers are never returned; those of secret-looking headers (C(Authorization),
    C(Proxy-Authorization), C(Cookie), C(X-Api-Key), names containing C(token), C(secret), C(auth), ...)
    and passwords in URLs are masked in the output.
extends_documentation_fragment:
  - safedeploy.fleet.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
requirements:
  - requests (on the controller)
  - jmespath (on the controller, only for O(json_checks))
options:
  url:
    description:
      - One endpoint to probe, V(http://) or V(https://).
      - Exactly one of O(url) and O(urls) is required.
    type: str
  urls:
    description:
      - Many endpoints to probe concurrently. Duplicates are probed once.
      - Every probe and retry option applies to each of them.
    type: list
    elements: str
  method:
    description: HTTP method of every request.
    type: str
    default: GET
  headers:
    description:
      - Request headers to send.
      - Their values never appear in the results; values of secret-looking headers such as C(Authorization)
        are masked wherever they would be echoed.
      - Ansible logs a module's arguments (the C(Invoked with) line in the journal of the host that runs it,
        the controller here) before the module can mask anything, so give a token in O(bearer_token), not here.
    type: dict
    default: {}
  bearer_token:
    description:
      - A token sent in an C(Authorization) header (C(Bearer) and the token) with every request. Never logged
        nor returned (the journal's C(Invoked with) line included).
      - Not together with an C(Authorization) header in O(headers).
    type: str
    version_added: 0.2.0
  body:
    description:
      - "Request body. A dict or list is sent as JSON (with C(Content-Type: application/json)), anything else as text."
    type: raw
  expected_status:
    description: Status codes that count as a pass.
    type: list
    elements: int
    default: [200]
  json_checks:
    description:
      - JMESPath expression mapped to the value it must equal in the JSON body, for example
        C(status) to V(ok) and C(checks.db) to V(true).
      - A missing field or a body that is not JSON fails, with a reason naming the expression, the expected
        and the actual value.
      - A string expectation also matches a number or boolean with the same JSON text (V("3") matches V(3)).
    type: dict
  body_contains:
    description: A string the response body must contain.
    type: str
  expected_headers:
    description:
      - Response header mapped to the exact value it must have, for example C(X-App-Version) to V(2.0.0).
        Header names are case-insensitive.
    type: dict
  max_latency_ms:
    description: A response slower than this many milliseconds (whole request, body included) fails.
    type: float
  timeout:
    description: Seconds to wait for each request (connect and each read).
    type: float
    default: 5
  validate_certs:
    description: Verify the TLS certificate of V(https://) endpoints. Turning this off is for labs only.
    type: bool
    default: true
  ca_path:
    description: PEM file of CA certificates to verify V(https://) endpoints with, instead of the system bundle.
    type: path
  client_cert:
    description: PEM client certificate (or certificate and key) for mutual TLS.
    type: path
  client_key:
    description: PEM private key of O(client_cert), if it is not in the same file.
    type: path
  follow_redirects:
    description: Follow redirects. When V(false) a redirect's own status (such as V(302)) is checked.
    type: bool
    default: false
  use_proxy:
    description: Use the proxy settings of the environment (C(HTTP_PROXY), C(NO_PROXY), ...).
    type: bool
    default: true
  version_header:
    description: Response header whose value is returned as RV(endpoints[].version).
    type: str
    default: X-App-Version
  interval:
    description: Seconds between the start of two attempts on the same endpoint.
    type: float
    default: 1
  deadline:
    description:
      - Give up on an endpoint that is not healthy after this many seconds (counted from the start of the task).
      - The first attempt always happens, so V(0) means a single try.
      - The liveness watch (O(watch_seconds)) comes on top of this.
    type: float
    default: 60
  success_threshold:
    description: Consecutive passing attempts an endpoint needs to be healthy.
    type: int
    default: 1
  failure_threshold:
    description:
      - Consecutive failing attempts that make an endpoint unhealthy at once, before the deadline.
      - V(0) means never give up early (keep trying until O(deadline)).
      - During the liveness watch, this many consecutive failures make an endpoint unhealthy;
        V(0) counts as V(1) there.
    type: int
    default: 0
  watch_seconds:
    description:
      - When above V(0), every endpoint that reached O(success_threshold) keeps being probed every O(interval)
        seconds for this long; it is unhealthy if it fails O(failure_threshold) times in a row meanwhile
        (the liveness watch after a restart, which catches an application that crashes a few seconds after
        starting).
    type: float
    default: 0
  concurrency:
    description: Requests in flight at the same time, across all endpoints.
    type: int
    default: 64
  fail_on_unhealthy:
    description:
      - Fail the task when fewer than O(min_healthy) endpoints are healthy.
      - With V(false) the task succeeds and RV(healthy) tells the verdict.
    type: bool
    default: true
  min_healthy:
    description:
      - How many endpoints must be healthy for RV(healthy) to be V(true), as a number (V(3)) or a percentage
        of the endpoints (V("50%"), rounded up).
      - By default all of them.
    type: raw
notes:
  - The task takes at most O(deadline) + O(watch_seconds) + O(timeout) seconds.
  - Sockets are pooled per endpoint for up to O(concurrency) endpoints; with more endpoints each attempt opens
    a new connection.
seealso:
  - module: ansible.builtin.uri
"""

EXAMPLES = r"""
- name: Wait until the batch answers /healthz with 200 and the new version
  safedeploy.fleet.health_check:
    urls: "{{ ansible_play_batch | map('extract', hostvars, 'ansible_host')
              | map('regex_replace', '^(.*)$', 'http://\\1:8080/healthz') | list }}"
    expected_headers:
      X-App-Version: "{{ deploy_version }}"
    json_checks:
      status: ok
      checks.db: true
    success_threshold: 2
    interval: 1
    deadline: 60
  delegate_to: localhost
  run_once: true

- name: Liveness watch for 30 s after a restart, fail on 3 failures in a row
  safedeploy.fleet.health_check:
    url: "http://{{ ansible_host }}:8080/livez"
    watch_seconds: 30
    failure_threshold: 3
    max_latency_ms: 500
  delegate_to: localhost

- name: Fleet-level check with a bearer token over TLS with a private CA
  safedeploy.fleet.health_check:
    urls: "{{ groups['web'] | map('regex_replace', '^(.*)$', 'https://\\1/readyz') | list }}"
    bearer_token: "{{ vault_probe_token }}"
    ca_path: /etc/safedeploy/ca.pem
    min_healthy: "80%"
    deadline: 120
  delegate_to: localhost
  run_once: true
  register: fleet

- name: Report without failing
  safedeploy.fleet.health_check:
    urls:
      - http://10.0.0.11:8080/healthz
      - http://10.0.0.12:8080/healthz
    deadline: 0
    fail_on_unhealthy: false
  delegate_to: localhost
  run_once: true
  register: probe

- name: Show the versions that answered
  ansible.builtin.debug:
    msg: "{{ probe.endpoints | map(attribute='version') | list }}"
"""

RETURN = r"""
healthy:
  description: Whether at least O(min_healthy) endpoints (by default all) are healthy.
  returned: always
  type: bool
  sample: true
healthy_count:
  description: Number of healthy endpoints.
  returned: always
  type: int
  sample: 3
unhealthy_count:
  description: Number of unhealthy endpoints.
  returned: always
  type: int
  sample: 0
min_healthy:
  description: The number of healthy endpoints that was required.
  returned: always
  type: int
  sample: 3
elapsed:
  description: Seconds the whole check took.
  returned: always
  type: float
  sample: 2.013
endpoints:
  description: One entry per probed URL, in the order given.
  returned: always
  type: list
  elements: dict
  contains:
    url:
      description: The endpoint (a password in it is masked).
      type: str
      sample: http://10.0.0.11:8080/healthz
    healthy:
      description: Whether this endpoint passed.
      type: bool
      sample: true
    attempts:
      description: Requests sent to this endpoint.
      type: int
      sample: 3
    consecutive_successes:
      description: Passing attempts in a row at the end.
      type: int
      sample: 2
    consecutive_failures:
      description: Failing attempts in a row at the end.
      type: int
      sample: 0
    last_status:
      description: HTTP status of the last response, V(null) when the last request got no response.
      type: int
      sample: 200
    latency_ms:
      description: Duration of the last request in milliseconds.
      type: float
      sample: 3.2
    reason:
      description:
        - Why the endpoint is unhealthy, for example V(status 503 (expected 200)),
          V(JSON check 'status' expected 'ok' got 'degraded'), V(latency 900 ms > 500 ms),
          V(connection refused), V(timeout after 5 s); empty when healthy.
      type: str
      sample: ""
    version:
      description: Value of the O(version_header) response header of the last response that had it.
      type: str
      sample: 2.0.0
    elapsed:
      description: Seconds from the start of the task until this endpoint was decided.
      type: float
      sample: 1.004
"""

import time  # noqa: E402 - Ansible modules import after their documentation

from ansible.module_utils.basic import AnsibleModule, missing_required_lib  # noqa: E402
from ansible_collections.safedeploy.fleet.plugins.module_utils._probe import (  # noqa: E402
    HAS_JMESPATH,
    HAS_REQUESTS,
    JMESPATH_IMPORT_ERROR,
    REQUESTS_IMPORT_ERROR,
    ProbeConfigError,
    ProbeSpec,
    RetryPolicy,
    failure_message,
    quiet_insecure_warnings,
    required_healthy,
    run_probes,
    sensitive_values,
    summarize,
    unique_urls,
)


def argument_spec():
    return {
        "url": {"type": "str"},
        "urls": {"type": "list", "elements": "str"},
        "method": {"type": "str", "default": "GET"},
        "headers": {"type": "dict", "default": {}, "no_log": False},
        "bearer_token": {"type": "str", "no_log": True},
        "body": {"type": "raw"},
        "expected_status": {"type": "list", "elements": "int", "default": [200]},
        "json_checks": {"type": "dict"},
        "body_contains": {"type": "str"},
        "expected_headers": {"type": "dict"},
        "max_latency_ms": {"type": "float"},
        "timeout": {"type": "float", "default": 5},
        "validate_certs": {"type": "bool", "default": True},
        "ca_path": {"type": "path"},
        "client_cert": {"type": "path"},
        "client_key": {"type": "path", "no_log": False},
        "follow_redirects": {"type": "bool", "default": False},
        "use_proxy": {"type": "bool", "default": True},
        "version_header": {"type": "str", "default": "X-App-Version"},
        "interval": {"type": "float", "default": 1},
        "deadline": {"type": "float", "default": 60},
        "success_threshold": {"type": "int", "default": 1},
        "failure_threshold": {"type": "int", "default": 0},
        "watch_seconds": {"type": "float", "default": 0},
        "concurrency": {"type": "int", "default": 64},
        "fail_on_unhealthy": {"type": "bool", "default": True},
        "min_healthy": {"type": "raw"},
    }


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(),
        mutually_exclusive=[("url", "urls")],
        required_one_of=[("url", "urls")],
        supports_check_mode=True,
    )
    params = module.params
    # Secret header values and URL passwords are removed from everything
    # returned, the echoed module arguments included.
    raw_urls = [params["url"]] if params["url"] is not None else list(params["urls"] or [])
    module.no_log_values.update(sensitive_values(params["headers"], raw_urls))

    headers = dict(params["headers"])
    if params["bearer_token"]:
        if any(str(name).lower() == "authorization" for name in headers):
            module.fail_json(msg="bearer_token and an Authorization header in headers are both given: keep one "
                                 "(bearer_token is never logged)")
        headers["Authorization"] = f"Bearer {params['bearer_token']}"

    if not HAS_REQUESTS:
        module.fail_json(msg=missing_required_lib("requests"), exception=REQUESTS_IMPORT_ERROR)
    if params["json_checks"] and not HAS_JMESPATH:
        module.fail_json(msg=missing_required_lib("jmespath"), exception=JMESPATH_IMPORT_ERROR)

    try:
        urls = unique_urls(raw_urls)
        if not urls:
            raise ProbeConfigError("urls is empty: give at least one endpoint to probe")
        if params["concurrency"] < 1:
            raise ProbeConfigError(f"concurrency must be at least 1, got {params['concurrency']!r}")
        spec = ProbeSpec(
            method=params["method"],
            headers=headers,
            body=params["body"],
            expected_status=params["expected_status"],
            json_checks=params["json_checks"],
            body_contains=params["body_contains"],
            expected_headers=params["expected_headers"],
            max_latency_ms=params["max_latency_ms"],
            timeout=params["timeout"],
            validate_certs=params["validate_certs"],
            ca_path=params["ca_path"],
            client_cert=params["client_cert"],
            client_key=params["client_key"],
            follow_redirects=params["follow_redirects"],
            use_proxy=params["use_proxy"],
            version_header=params["version_header"],
        ).validate()
        policy = RetryPolicy(
            interval=params["interval"],
            deadline=params["deadline"],
            success_threshold=params["success_threshold"],
            failure_threshold=params["failure_threshold"],
            watch_seconds=params["watch_seconds"],
        ).validate()
        required_healthy(params["min_healthy"], len(urls))
    except ProbeConfigError as exc:
        module.fail_json(msg=str(exc))

    if not params["validate_certs"]:
        quiet_insecure_warnings()

    start = time.monotonic()
    states = run_probes(urls, spec, policy, concurrency=params["concurrency"])
    result = summarize(states, params["min_healthy"], start, time.monotonic())
    result["changed"] = False

    if not result["healthy"] and params["fail_on_unhealthy"]:
        module.fail_json(msg=failure_message(result), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
