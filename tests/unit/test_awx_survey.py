# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""tools/awx_survey.py: AWX surveys built from the roles' argument specs.

Every question it builds for a role variable must come back through the
role's own argument spec validation with the value AWX would send (a string
for a choice, a number for an integer), and nothing it builds may prompt.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import awx_survey  # noqa: E402

OPTIONS = awx_survey.role_options()
SURVEYABLE = sorted(name for name, (_role, spec) in OPTIONS.items()
                    if spec.get("type", "str") not in ("list", "dict") and name not in awx_survey.PROMPTS)


def awx_answer(item):
    """The value AWX puts in extra_vars for the question's default (or a sample answer)."""
    if item["type"] == "multiplechoice":
        return item.get("default", item["choices"][0])
    if item["type"] == "integer":
        return item.get("default", 1)
    if item["type"] == "float":
        return item.get("default", 1.5)
    return item.get("default", "sample")


@pytest.mark.parametrize("variable", SURVEYABLE)
def test_question_answers_pass_the_role_validation(variable):
    role, spec = OPTIONS[variable]
    item = awx_survey.question(variable, spec)
    assert item["variable"] == variable and item["question_description"]
    assert "C(" not in item["question_description"] and "V(" not in item["question_description"]
    answers = [awx_answer(item)] + (item.get("choices") or [])
    validator = ArgumentSpecValidator({variable: spec})
    for answer in answers:
        result = validator.validate({variable: answer})
        assert not result.error_messages, (role, variable, answer, result.error_messages)
    if spec.get("choices"):
        assert set(item["choices"]) <= {str(choice) for choice in spec["choices"]}
    assert "pause" not in (item.get("choices") or []), "a survey must not offer a prompt"


def test_canary_survey():
    out = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "awx_survey.py"), "deploy_version",
                          "canary_phase", "canary_hosts", "canary_on_inconclusive", "canary_analysis_bearer_token",
                          "--name", "Canary"], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    survey = json.loads(out.stdout)
    assert survey["name"] == "Canary"
    by_var = {item["variable"]: item for item in survey["spec"]}
    assert list(by_var) == ["deploy_version", "canary_phase", "canary_hosts", "canary_on_inconclusive",
                            "canary_analysis_bearer_token"]
    assert by_var["deploy_version"]["required"] and by_var["deploy_version"]["type"] == "text"
    assert by_var["canary_phase"]["choices"] == ["all", "start", "promote", "abort"]
    assert by_var["canary_phase"]["default"] == "all"
    # a number: the string "1" would name an inventory group
    assert by_var["canary_hosts"]["type"] == "integer" and by_var["canary_hosts"]["default"] == 1
    assert by_var["canary_on_inconclusive"]["choices"] == ["abort", "continue"]
    assert by_var["canary_analysis_bearer_token"]["type"] == "password"
    assert "default" not in by_var["canary_analysis_bearer_token"]


@pytest.mark.parametrize("variable, message", [
    ("canary_steps", "is a list"),
    ("blue_green_pause", "prompt"),
    ("no_such_variable", "not in any role"),
])
def test_refuses_what_a_survey_cannot_hold(variable, message):
    out = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "awx_survey.py"), variable],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 2 and message in out.stderr and not out.stdout
