# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The rolling role checks rolling_analysis_thresholds before the first batch
against the names metric_gate provider=haproxy knows: the two lists must agree."""

from __future__ import annotations

import os

import jinja2
import yaml
from ansible_collections.safedeploy.fleet.plugins.module_utils._lbstats import DEFAULT_THRESHOLDS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_rolling_knows_the_haproxy_thresholds():
    with open(os.path.join(ROOT, "roles", "rolling", "vars", "main.yml"), encoding="utf-8") as handle:
        names = yaml.safe_load(handle)["_rolling_analysis_threshold_names"]
    assert sorted(names) == sorted(DEFAULT_THRESHOLDS)


def test_rolling_provider_defaults_to_haproxy_without_a_metrics_url():
    with open(os.path.join(ROOT, "roles", "rolling", "defaults", "main.yml"), encoding="utf-8") as handle:
        defaults = yaml.safe_load(handle)
    assert defaults["rolling_analysis"] is True
    assert defaults["rolling_analysis_thresholds"] == {}
    template = jinja2.Environment().from_string(defaults["rolling_analysis_provider"])
    assert template.render(rolling_analysis_url="") == "haproxy"
    assert template.render() == "haproxy"
    assert template.render(rolling_analysis_url="http://mon1:9090") == "prometheus"
