# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""roles/haproxy: defaults match the argument spec; the template renders with
plain Jinja2 (as the lab does) into a configuration HAProxy accepts."""

from __future__ import annotations

import os
import subprocess

import jinja2
import pytest
import yaml
from haproxy_fixture import HAPROXY

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROLE = os.path.join(ROOT, "roles", "haproxy")


def load(*parts):
    with open(os.path.join(ROLE, *parts)) as handle:
        return yaml.safe_load(handle)


def test_defaults_match_argument_specs():
    defaults = load("defaults", "main.yml")
    options = load("meta", "argument_specs.yml")["argument_specs"]["main"]["options"]
    assert set(defaults) == set(options)
    for name, spec in options.items():
        assert spec.get("default") == defaults[name], name
        assert name.startswith("haproxy_")
    private = load("vars", "main.yml")
    assert all(name.startswith("_haproxy_") for name in private)


def lab_vars(tmp_path):
    variables = load("defaults", "main.yml")
    live = tmp_path / "live_pool.map"
    live.write_text("demoapp blue\ndemoapp_preview green\n")
    pool = [{"name": f"web{i}", "address": f"10.213.0.1{i}", "port": 8080, "weight": 100} for i in range(1, 4)]
    variables.update(
        haproxy_chroot=str(tmp_path),
        haproxy_stats_socket=str(tmp_path / "admin.sock"),
        haproxy_server_state_file=str(tmp_path / "server-state"),
        haproxy_stats_tcp_enabled=True,
        haproxy_prometheus_enabled=True,
        haproxy_maps=[{"path": str(live), "entries": {"demoapp": "blue"}}],
        haproxy_frontends=[
            {"name": "web", "bind": "*:80", "default_backend": "demoapp"},
            {
                "name": "bluegreen",
                "bind": ["*:81", "*:82"],
                "use_backend_map": {"map": str(live), "key": "demoapp", "prefix": "demoapp_"},
                "default_backend": "demoapp_blue",
            },
            {
                "name": "preview",
                "bind": "*:8081",
                "use_backend_map": {
                    "map": str(live),
                    "key": "demoapp_preview",
                    "prefix": "demoapp_",
                    "default": "green",
                },
            },
        ],
        haproxy_backends=[
            {"name": "demoapp", "servers": pool},
            {"name": "demoapp_blue", "servers": pool[:2], "health_check_path": "/healthz"},
            {"name": "demoapp_green", "servers": [{**pool[2], "options": "slowstart 5s"}]},
        ],
    )
    return variables, str(live)


@pytest.mark.parametrize("trim", [True, False])
def test_template_renders_with_plain_jinja2_and_validates(tmp_path, trim):
    variables, live = lab_vars(tmp_path)
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(os.path.join(ROLE, "templates")),
        undefined=jinja2.StrictUndefined,
        trim_blocks=trim,
        keep_trailing_newline=True,
    )
    text = env.get_template("haproxy.cfg.j2").render(**variables)
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(text)
    assert f"stats socket {tmp_path}/admin.sock mode 660 level admin group haproxy" in text
    assert "stats socket ipv4@127.0.0.1:9999 level admin" in text
    assert f"server-state-file {tmp_path}/server-state" in text
    assert "load-server-state-from-file global" in text
    assert "server web1 10.213.0.11:8080 weight 100 check inter 500ms fall 2 rise 2" in text
    assert f"use_backend demoapp_%[str(demoapp),map({live})]" in text
    assert f"use_backend demoapp_%[str(demoapp_preview),map({live},green)]" in text
    assert "retry-on conn-failure empty-response response-timeout" in text
    assert "http-reuse safe" in text and "option redispatch" in text
    assert "uri /ready " in text and "uri /healthz " in text
    assert "prometheus-exporter" in text
    check = subprocess.run([HAPROXY, "-c", "-f", str(cfg)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    warnings = [
        line
        for line in (check.stdout + check.stderr).splitlines()
        if "[WARNING]" in line and "server state file" not in line  # none before the first reload
    ]
    assert not warnings, check.stdout + check.stderr


def render(variables, trim=True):
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(os.path.join(ROLE, "templates")),
        undefined=jinja2.StrictUndefined,
        trim_blocks=trim,
        keep_trailing_newline=True,
    )
    return env.get_template("haproxy.cfg.j2").render(**variables)


@pytest.mark.parametrize("trim", [True, False])
def test_maxconn_per_backend_and_per_server(tmp_path, trim):
    variables, _ignored = lab_vars(tmp_path)
    # without maxconn, only the global one: the server lines are as they always were
    plain = render(variables, trim)
    assert [line.strip() for line in plain.splitlines() if "maxconn" in line.split()] == ["maxconn 4096"]
    backends = variables["haproxy_backends"]
    backends[0]["maxconn"] = 50
    backends[0]["servers"] = [dict(backends[0]["servers"][0], maxconn=10), dict(backends[0]["servers"][1], maxconn=0),
                              backends[0]["servers"][2]]
    backends[2]["servers"] = [dict(backends[2]["servers"][0], maxconn=7)]
    text = render(variables, trim)
    assert "server web1 10.213.0.11:8080 weight 100 check inter 500ms fall 2 rise 2 maxconn 10\n" in text
    assert "server web2 10.213.0.12:8080 weight 100 check inter 500ms fall 2 rise 2\n" in text  # 0: no limit
    assert "server web3 10.213.0.13:8080 weight 100 check inter 500ms fall 2 rise 2 maxconn 50\n" in text
    assert "server web3 10.213.0.13:8080 weight 100 check inter 500ms fall 2 rise 2 maxconn 7 slowstart 5s\n" in text
    # demoapp_blue has no maxconn: unchanged
    blue = text.split("\nbackend demoapp_blue\n")[1].split("\nbackend demoapp_green\n")[0]
    assert "maxconn" not in blue.split()
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(text)
    check = subprocess.run([HAPROXY, "-c", "-f", str(cfg)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr


def test_template_defaults_off(tmp_path):
    variables, _ignored = lab_vars(tmp_path)
    variables.update(haproxy_stats_tcp_enabled=False, haproxy_prometheus_enabled=False)
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(os.path.join(ROLE, "templates")),
        undefined=jinja2.StrictUndefined,
    )
    text = env.get_template("haproxy.cfg.j2").render(**variables)
    assert "ipv4@" not in text and "prometheus" not in text


def test_role_syntax(tmp_path):
    playbook = tmp_path / "play.yml"
    playbook.write_text("- hosts: localhost\n  gather_facts: false\n  roles:\n    - role: safedeploy.fleet.haproxy\n")
    result = subprocess.run(
        [os.path.join(ROOT, ".venv", "bin", "ansible-playbook"), "--syntax-check", str(playbook)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
