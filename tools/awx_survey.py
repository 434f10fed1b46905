#!/usr/bin/env python3
# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Print an AWX / Automation Platform survey spec built from the roles' argument specs.

    tools/awx_survey.py deploy_version canary_phase canary_hosts > canary-survey.json

Each variable is looked up in the main entry point of every role's
meta/argument_specs.yml (deploy_version, the shared input the playbooks
check themselves, is built in): its type gives the survey question's type,
its choices the choices, its default the default, its description the
question's description. Paste the output into the job template's survey
(API: POST /api/v2/job_templates/<id>/survey_spec/). The roles validate the
answers again when they start.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Not in any role's spec: preflight checks it (see docs/rolling.md).
BUILT_IN = {
    "deploy_version": {
        "type": "str", "required": True,
        "description": ["The version to deploy (^[A-Za-z0-9][A-Za-z0-9._+-]*$), for example 2.1.0."],
    },
}
SECRET = re.compile(r"(token|password|secret)$")
# Human gates at the prompt: an AWX job has no one at its terminal, and
# under ansible-runner a prompt waits until the job's timeout. Workflows put
# an approval node between phases instead (docs/awx.md).
PROMPTS = {"blue_green_pause": "blue_green_phase with a workflow approval node"}
PROMPT_CHOICE = "pause"  # of canary_on_inconclusive, rolling_analysis_on_inconclusive
MARKUP = re.compile(r"\b(?:[ICBMUVOE]|RV)\(((?:[^\\)]+|\\.)+)\)")


def role_options():
    """{variable: (role, spec)} of every role's main entry point."""
    found = {}
    roles = os.path.join(ROOT, "roles")
    for role in sorted(os.listdir(roles)):
        path = os.path.join(roles, role, "meta", "argument_specs.yml")
        if not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8") as handle:
            specs = yaml.safe_load(handle)["argument_specs"]
        for name, spec in (specs.get("main", {}).get("options") or {}).items():
            found.setdefault(name, (role, spec))
    return found


def plain(text):
    return " ".join(MARKUP.sub(lambda match: match.group(1).replace("\\", ""), str(text)).split())


def question(variable, spec):
    """One survey question for ``variable`` from its argument spec, or raise ValueError."""
    kind = spec.get("type", "str")
    default = spec.get("default")
    item = {
        "variable": variable,
        "question_name": variable,
        "question_description": plain(" ".join(spec["description"]) if isinstance(spec.get("description"), list)
                                      else spec.get("description", "")),
        "required": bool(spec.get("required")),
    }
    if variable in PROMPTS:
        raise ValueError(f"{variable} stops the run at a prompt, which an AWX job cannot answer; "
                         f"use {PROMPTS[variable]}")
    if spec.get("choices"):
        item["type"] = "multiplechoice"
        item["choices"] = [str(choice) for choice in spec["choices"]
                           if not (variable.endswith("_on_inconclusive") and choice == PROMPT_CHOICE)]
    elif kind == "bool":
        item["type"] = "multiplechoice"
        item["choices"] = ["true", "false"]
        default = None if default is None else ("true" if default else "false")
    elif kind == "int" or (kind == "raw" and isinstance(default, int) and not isinstance(default, bool)):
        # raw with a number as default (canary_hosts): a number, not a string that would name a group
        item["type"] = "integer"
    elif kind == "float":
        item["type"] = "float"
    elif kind in ("str", "path", "raw"):
        item["type"] = "password" if spec.get("no_log") or SECRET.search(variable) else "text"
    else:
        raise ValueError(f"{variable} is a {kind}: a survey question cannot hold it; set it in the job "
                         "template's extra variables or the inventory instead")
    if item["type"] in ("text", "password"):
        item["min"], item["max"] = (1 if item["required"] else 0), 1024
    # A templated default ("{{ deploy_metrics_url }}") is left to the role: no answer, no extra var.
    if item["type"] != "password" and default is not None and "{{" not in str(default):
        item["default"] = default
    return item


def survey(variables, name="", description=""):
    options = role_options()
    spec = []
    for variable in variables:
        if variable in BUILT_IN:
            found = BUILT_IN[variable]
        elif variable in options:
            found = options[variable][1]
        else:
            raise ValueError(f"{variable} is not in any role's meta/argument_specs.yml (main entry point)")
        spec.append(question(variable, found))
    return {"name": name, "description": description, "spec": spec}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("variables", nargs="+", help="the variables to ask for, in order")
    parser.add_argument("--name", default="", help="the survey's name")
    parser.add_argument("--description", default="", help="the survey's description")
    args = parser.parse_args(argv)
    try:
        result = survey(args.variables, args.name, args.description)
    except ValueError as exc:
        print(f"awx_survey: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
