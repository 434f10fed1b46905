"""After the rolling deploy: every host on 2.0.0, active, current -> it, all UP."""

from __future__ import annotations

import json
import os

import testinfra.utils.ansible_runner

INVENTORY = os.path.dirname(os.environ["MOLECULE_INVENTORY_FILE"])
testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(INVENTORY).get_hosts("app")


def test_every_app_host_is_in_the_inventory():
    assert len(testinfra_hosts) >= 2


def test_new_version_is_current_and_good(host):
    assert host.file("/opt/demoapp/current").linked_to == "/opt/demoapp/releases/2.0.0"
    history = json.loads(host.file("/opt/demoapp/.safedeploy/history.json").content_string)
    assert history["releases"]["2.0.0"]["verdict"] == "good"
    assert history["history"][-1]["version"] == "2.0.0"


def test_service_active_and_serving_the_new_version(host):
    assert host.service("demoapp").is_running
    out = host.check_output("python3 -c \"import urllib.request as u; "
                            "print(u.urlopen('http://127.0.0.1:8080/').headers['X-App-Version'])\"")
    assert out.strip() == "2.0.0"


def test_every_server_up_in_haproxy(host):
    lb = testinfra.get_host(f"ansible://lb1?ansible_inventory={INVENTORY}")
    script = ("import socket; s=socket.socket(socket.AF_UNIX); s.connect('/run/haproxy/admin.sock'); "
              "s.sendall(b'show stat\\n'); print(s.makefile().read())")
    stat = lb.check_output(f'python3 -c "{script}"')
    name = host.backend.get_hostname()
    rows = [line.split(",") for line in stat.splitlines() if line.startswith(f"demoapp,{name},")]
    assert rows, stat
    assert rows[0][17] == "UP", rows[0]
