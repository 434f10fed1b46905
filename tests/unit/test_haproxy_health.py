"""is_healthy: what counts as UP for sure in HAProxy's stats."""

from __future__ import annotations

import pytest

from ansible_collections.safedeploy.fleet.plugins.module_utils._haproxy import is_healthy


@pytest.mark.parametrize("status, check_status, expected", [
    ("UP", "L7OK", True),
    ("UP", "* L7OK", True),  # a check running now; the last one passed
    ("UP", "L4OK", True),
    ("no check", "", True),
    ("UP", "", False),  # before any check result
    ("UP", "* L7STS", False),
    ("UP 1/2", "L7STS", False),
    ("DOWN", "L4CON", False),
    ("MAINT", "L7OK", False),
])
def test_is_healthy(status, check_status, expected):
    assert is_healthy(status, check_status) is expected
