"""After the blue/green deploy: green live (map file and runtime, every LB) on
2.0.0, blue still running 1.0.0 as the way back."""

from __future__ import annotations

import os

import testinfra
import testinfra.utils.ansible_runner

INVENTORY = os.path.dirname(os.environ["MOLECULE_INVENTORY_FILE"])
RUNNER = testinfra.utils.ansible_runner.AnsibleRunner(INVENTORY)
testinfra_hosts = RUNNER.get_hosts("lb")
MAP = "/etc/haproxy/maps/live_pool.map"


def _runtime_map(host) -> dict[str, str]:
    script = ("import socket; s=socket.socket(socket.AF_UNIX); s.connect('/run/haproxy/admin.sock'); "
              f"s.sendall(b'show map {MAP}\\n'); print(s.makefile().read())")
    out = host.check_output(f'python3 -c "{script}"')
    # Lines: "<id> <key> <value>"
    return {parts[1]: parts[2] for parts in (line.split() for line in out.splitlines()) if len(parts) == 3}


def _version(app_host) -> str:
    return app_host.check_output("python3 -c \"import urllib.request as u; "
                                 "print(u.urlopen('http://127.0.0.1:8080/').headers['X-App-Version'])\"").strip()


def test_green_is_live_in_the_map_file(host):
    entries = dict(line.split() for line in host.file(MAP).content_string.splitlines()
                   if line.strip() and not line.startswith("#"))
    assert entries == {"demoapp": "green", "demoapp_preview": "blue"}


def test_green_is_live_at_runtime(host):
    assert _runtime_map(host) == {"demoapp": "green", "demoapp_preview": "blue"}


def test_green_runs_the_new_version_and_blue_still_runs_the_old_one(host):
    for name in RUNNER.get_hosts("demoapp_green"):
        app = testinfra.get_host(f"ansible://{name}?ansible_inventory={INVENTORY}")
        assert app.service("demoapp").is_running
        assert _version(app) == "2.0.0"
    for name in RUNNER.get_hosts("demoapp_blue"):
        app = testinfra.get_host(f"ansible://{name}?ansible_inventory={INVENTORY}")
        assert app.service("demoapp").is_running, f"the old pool must keep running: {name}"
        assert _version(app) == "1.0.0"
