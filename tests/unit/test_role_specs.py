# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Every role under roles/: its public defaults are exactly the options of the
`main` entry point of meta/argument_specs.yml, with the same default values,
every option (at any depth, in every entry point) has a description, and the
role has meta/main.yml."""

from __future__ import annotations

import os

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROLES_DIR = os.path.join(ROOT, "roles")
ROLES = sorted(
    name for name in os.listdir(ROLES_DIR)
    if os.path.isdir(os.path.join(ROLES_DIR, name)) and not name.startswith(".")
)


def role_file(role, *parts):
    """Path of roles/<role>/<parts> with a .yml or .yaml extension, or None."""
    base = os.path.join(ROLES_DIR, role, *parts)
    for ext in (".yml", ".yaml"):
        if os.path.isfile(base + ext):
            return base + ext
    return None


def load(path):
    with open(path) as handle:
        return yaml.safe_load(handle)


def entry_points(role):
    path = role_file(role, "meta", "argument_specs")
    if path is None:
        pytest.fail(f"roles/{role} has no meta/argument_specs.yml")
    specs = load(path)
    assert isinstance(specs, dict) and isinstance(specs.get("argument_specs"), dict), (
        f"roles/{role}/meta/argument_specs.yml has no argument_specs mapping")
    return specs["argument_specs"]


def walk_options(options, prefix=""):
    """Yield (dotted name, spec) for every option, suboptions included."""
    for name, spec in (options or {}).items():
        yield prefix + name, spec
        yield from walk_options((spec or {}).get("options"), prefix + name + ".")


def test_there_are_roles():
    assert ROLES, "no role found under roles/"


@pytest.mark.parametrize("role", ROLES)
def test_role_has_meta_main(role):
    path = role_file(role, "meta", "main")
    assert path is not None, f"roles/{role} has no meta/main.yml"
    meta = load(path)
    assert isinstance(meta, dict) and "galaxy_info" in meta, f"roles/{role}/meta/main.yml has no galaxy_info"


@pytest.mark.parametrize("role", ROLES)
def test_defaults_are_the_main_options(role):
    path = role_file(role, "defaults", "main")
    if path is None:
        pytest.skip(f"roles/{role} has no defaults/main.yml: no public defaults to compare with the argument spec")
    defaults = load(path) or {}
    main = entry_points(role).get("main")
    assert main is not None, f"roles/{role}/meta/argument_specs.yml has no 'main' entry point"
    options = main.get("options") or {}
    missing = sorted(set(defaults) - set(options))
    extra = sorted(set(options) - set(defaults))
    assert not missing, f"roles/{role}: defaults without an option in the 'main' argument spec: {missing}"
    assert not extra, f"roles/{role}: 'main' options without a value in defaults/main.yml: {extra}"
    for name, value in defaults.items():
        spec = options[name] or {}
        assert "default" in spec, f"roles/{role}: option {name} has no default (defaults/main.yml has {value!r})"
        assert spec["default"] == value, (
            f"roles/{role}: option {name} default {spec['default']!r} != defaults/main.yml {value!r}")
        assert type(spec["default"]) is type(value), (
            f"roles/{role}: option {name} default {spec['default']!r} is a {type(spec['default']).__name__}, "
            f"defaults/main.yml has a {type(value).__name__}")


@pytest.mark.parametrize("role", ROLES)
def test_every_option_has_a_description(role):
    for entry, spec in entry_points(role).items():
        assert (spec or {}).get("short_description"), f"roles/{role}: entry point {entry} has no short_description"
        for name, option in walk_options((spec or {}).get("options")):
            description = (option or {}).get("description")
            if isinstance(description, list):
                description = " ".join(str(line) for line in description)
            assert description and str(description).strip(), (
                f"roles/{role}: option {name} of entry point {entry} has no description")
            assert (option or {}).get("type"), f"roles/{role}: option {name} of entry point {entry} has no type"
