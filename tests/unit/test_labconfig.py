# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The lab's layouts: a lab without monitoring has no mon1 and no metrics URL."""

from __future__ import annotations

import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "lab"))

import labconfig  # noqa: E402


def inventory(config, tmp_path):
    path = tmp_path / "inventory.yml"
    labconfig.write_inventory(config, str(path), "/key")
    return json.loads("".join(line for line in path.read_text().splitlines(True) if not line.startswith("#")))


def test_default_lab_has_prometheus(tmp_path, monkeypatch):
    monkeypatch.delenv("LAB_MONITORING", raising=False)
    assert labconfig.LabConfig.from_env().monitoring is True
    config = labconfig.LabConfig()
    assert "mon1" in [h.name for h in config.hosts]
    data = inventory(config, tmp_path)["all"]
    assert data["vars"]["deploy_metrics_url"] == config.prometheus_url == "http://10.213.0.9:9090"
    assert list(data["children"]["monitoring"]["hosts"]) == ["mon1"]


def test_lab_without_monitoring(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_MONITORING", "0")
    assert labconfig.LabConfig.from_env().monitoring is False
    config = labconfig.LabConfig(monitoring=False)
    assert config.monitoring_host is None and config.prometheus_url is None
    assert [h.name for h in config.hosts] == ["lb1", *(f"web{i}" for i in range(1, 7))]
    assert config.host("mon1") is None
    data = inventory(config, tmp_path)["all"]
    assert "deploy_metrics_url" not in data["vars"]
    assert "monitoring" not in data["children"]
    assert set(data["children"]) == {"app", "lb"}


def test_lab_monitoring_must_be_0_or_1(monkeypatch):
    monkeypatch.setenv("LAB_MONITORING", "no")
    with pytest.raises(ValueError, match="LAB_MONITORING must be 0 or 1"):
        labconfig.LabConfig.from_env()


def test_a_state_from_before_the_field_reads_with_monitoring():
    old = {"app_count": 6, "lb_count": 1, "layout": "rolling", "subnet": "10.213.0.0/24", "bridge": "sdlab0",
           "name": "sd"}
    assert labconfig.LabConfig.from_dict(old) == labconfig.LabConfig()
