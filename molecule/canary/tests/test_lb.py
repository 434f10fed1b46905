"""After the promotion, on every load balancer: every app server of the backend back
at its normal weight (100), ready and UP."""

from __future__ import annotations

import os

import testinfra.utils.ansible_runner

INVENTORY = os.path.dirname(os.environ["MOLECULE_INVENTORY_FILE"])
RUNNER = testinfra.utils.ansible_runner.AnsibleRunner(INVENTORY)
testinfra_hosts = RUNNER.get_hosts("lb")
BACKEND = "demoapp"
NORMAL_WEIGHT = 100


def _runtime(host, command: str) -> str:
    script = ("import socket; s=socket.socket(socket.AF_UNIX); s.connect('/run/haproxy/admin.sock'); "
              f"s.sendall(b'{command}\\n'); print(s.makefile().read())")
    return host.check_output(f'python3 -c "{script}"')


def _table(text: str) -> list[dict[str, str]]:
    """Rows of a runtime API table whose header line starts with '#'."""
    lines = [line for line in text.splitlines() if line.strip()]
    header = next(line for line in lines if line.startswith("#")).lstrip("# ").replace(",", " ").split()
    sep = "," if "," in lines[-1] else " "
    return [dict(zip(header, line.split(sep))) for line in lines if not line.startswith("#") and sep in line]


def test_every_app_server_is_up_at_its_normal_weight(host):
    rows = {r["svname"]: r for r in _table(_runtime(host, "show stat")) if r.get("pxname") == BACKEND}
    rows.pop("BACKEND", None)
    assert sorted(rows) == sorted(RUNNER.get_hosts("app"))
    assert {n: (r["status"], r["weight"]) for n, r in rows.items()} == dict.fromkeys(rows, ("UP", str(NORMAL_WEIGHT)))


def test_every_app_server_is_ready_with_its_configured_weight_restored(host):
    rows = [r for r in _table(_runtime(host, f"show servers state {BACKEND}")) if r.get("be_name") == BACKEND]
    assert rows
    # srv_admin_state 0 = ready (not drain, not maint); srv_uweight = the weight set at runtime.
    assert {r["srv_name"]: (r["srv_admin_state"], r["srv_uweight"]) for r in rows} == \
        {r["srv_name"]: ("0", str(NORMAL_WEIGHT)) for r in rows}
