"""What the lab is made of: hosts, addresses, their files, the inventory.

lab.py does the plumbing (namespaces, machines); this module decides what
each machine is and what it runs, so the two can be read separately.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import sys
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
ARTIFACTS = os.path.join(REPO, "build", "artifacts")
APP = "demoapp"
APP_PORT = 8080
HAPROXY_TEMPLATE = os.path.join(REPO, "roles", "haproxy", "templates", "haproxy.cfg.j2")
LIVE_POOL_MAP = "/etc/haproxy/maps/live_pool.map"

APP_UNIT = """\
[Unit]
Description=demoapp, the safedeploy lab's sample application (lab baseline unit)
After=network.target

[Service]
ExecStart=/usr/bin/python3 /opt/demoapp/current/demoapp.py --port {port}
KillSignal=SIGTERM
TimeoutStopSec=20
Restart=on-failure
RestartSec=2

[Install]
WantedBy=multi-user.target
"""

PROMETHEUS_YML = """\
global:
  scrape_interval: 1s
  scrape_timeout: 900ms
  evaluation_interval: 1s
scrape_configs:
  - job_name: {app}
    static_configs:
{targets}
"""


@dataclasses.dataclass(frozen=True)
class Host:
    name: str
    ip: str
    role: str  # app | lb | monitoring
    pool: str | None = None  # blue | green in the blue/green layout
    prefix: str = "sd"  # LAB_NAME: lets two labs live side by side

    @property
    def netns(self) -> str:
        return f"{self.prefix}l-{self.name}"

    @property
    def veth(self) -> str:
        name = f"{self.prefix}v-{self.name}"
        if len(name) > 15:
            raise ValueError(f"interface name {name!r} is longer than 15 characters; use a shorter LAB_NAME")
        return name

    @property
    def units(self) -> list[str]:
        return {"app": [f"{APP}.service"], "lb": ["haproxy.service"],
                "monitoring": ["prometheus.service"]}[self.role]

    @property
    def ready_urls(self) -> list[str]:
        if self.role == "app":
            return [f"http://{self.ip}:{APP_PORT}/ready"] if baseline() else []
        if self.role == "monitoring":
            return [f"http://{self.ip}:9090/-/ready"]
        return []


def baseline() -> str | None:
    value = os.environ.get("LAB_BASELINE", "1.0.0")
    return None if value in ("", "none") else value


def side_by_side_env(name: str, third_octet: int) -> dict[str, str]:
    """The LAB_* settings of a lab that runs beside others (one per test
    worker, one for Molecule): its own machine-name prefix, /24, bridge,
    state folder (SSH key, host folders) and inventory, so nothing is shared."""
    state_dir = f"/var/lib/safedeploy-lab-{name}"
    return {"LAB_NAME": name, "LAB_SUBNET": f"10.213.{third_octet}.0/24",
            "LAB_BRIDGE": f"sdlab{name}", "LAB_STATE_DIR": state_dir,
            "LAB_INVENTORY": os.path.join(state_dir, "inventory.yml")}


def worker_env(worker: str) -> dict[str, str]:
    """The lab of pytest-xdist worker ``gwN``: lab ``wN`` on 10.213.(20+N).0/24."""
    index = int(worker.removeprefix("gw"))
    if not 0 <= index < 10:
        raise ValueError(f"at most 10 lab workers side by side, got {worker!r}")
    return side_by_side_env(f"w{index}", 20 + index)


MOLECULE_ENV = side_by_side_env("mol", 30)


@dataclasses.dataclass
class LabConfig:
    app_count: int = 6
    lb_count: int = 1
    layout: str = "rolling"
    subnet: str = "10.213.0.0/24"
    bridge: str = "sdlab0"
    name: str = "sd"
    # mon1 with Prometheus, and deploy_metrics_url in the inventory. False: a
    # fleet with no metrics server at all (the analyses read HAProxy's counters).
    monitoring: bool = True

    @classmethod
    def from_env(cls) -> LabConfig:
        def integer(name: str, default: int, low: int, high: int) -> int:
            raw = os.environ.get(name, str(default))
            try:
                value = int(raw)
            except ValueError:
                raise ValueError(f"{name} must be a whole number, got {raw!r}") from None
            if not low <= value <= high:
                raise ValueError(f"{name} must be between {low} and {high}, got {value}")
            return value

        def flag(name: str, default: bool) -> bool:
            raw = os.environ.get(name, "1" if default else "0")
            if raw not in ("0", "1"):
                raise ValueError(f"{name} must be 0 or 1, got {raw!r}")
            return raw == "1"

        layout = os.environ.get("LAB_LAYOUT", "rolling")
        if layout not in ("rolling", "blue_green"):
            raise ValueError(f"LAB_LAYOUT must be rolling or blue_green, got {layout!r}")
        config = cls(app_count=integer("LAB_HOSTS", 6, 1, 200),
                     lb_count=integer("LAB_LBS", 1, 1, 4), layout=layout,
                     subnet=os.environ.get("LAB_SUBNET", "10.213.0.0/24"),
                     bridge=os.environ.get("LAB_BRIDGE", "sdlab0"),
                     name=os.environ.get("LAB_NAME", "sd"),
                     monitoring=flag("LAB_MONITORING", True))
        if not config.name.isalnum() or len(config.name) > 4:
            raise ValueError(f"LAB_NAME must be 1-4 letters or digits, got {config.name!r}")
        if layout == "blue_green" and config.app_count % 2:
            raise ValueError(f"LAB_LAYOUT=blue_green needs an even LAB_HOSTS, got {config.app_count}")
        network = ipaddress.ip_network(config.subnet)
        if network.prefixlen != 24 or not network.is_private:
            raise ValueError(f"LAB_SUBNET must be a private /24, got {config.subnet}")
        return config

    @classmethod
    def from_dict(cls, data: dict) -> LabConfig:
        return cls(**data)  # a state written before a field existed gets its default

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def _ip(self, offset: int) -> str:
        return str(ipaddress.ip_network(self.subnet).network_address + offset)

    @property
    def gateway(self) -> str:
        return self._ip(1)

    @property
    def prefixlen(self) -> int:
        return ipaddress.ip_network(self.subnet).prefixlen

    @property
    def lb_hosts(self) -> list[Host]:
        return [Host(f"lb{i}", self._ip(1 + i), "lb", prefix=self.name) for i in range(1, self.lb_count + 1)]

    @property
    def monitoring_host(self) -> Host | None:
        """mon1 (Prometheus), or None in a lab without monitoring."""
        return Host("mon1", self._ip(9), "monitoring", prefix=self.name) if self.monitoring else None

    @property
    def app_hosts(self) -> list[Host]:
        half = self.app_count // 2
        hosts = []
        for i in range(1, self.app_count + 1):
            pool = None
            if self.layout == "blue_green":
                pool = "blue" if i <= half else "green"
            hosts.append(Host(f"web{i}", self._ip(10 + i), "app", pool, prefix=self.name))
        return hosts

    @property
    def hosts(self) -> list[Host]:
        monitoring = [self.monitoring_host] if self.monitoring_host else []
        return [*self.lb_hosts, *monitoring, *self.app_hosts]

    def host(self, name: str) -> Host | None:
        return next((h for h in self.hosts if h.name == name), None)

    @property
    def lb_url(self) -> str:
        return f"http://{self.lb_hosts[0].ip}/"

    @property
    def preview_url(self) -> str | None:
        return f"http://{self.lb_hosts[0].ip}:8081/" if self.layout == "blue_green" else None

    @property
    def prometheus_url(self) -> str | None:
        return f"http://{self.monitoring_host.ip}:9090" if self.monitoring_host else None

    def backends(self) -> dict[str, list[Host]]:
        if self.layout == "blue_green":
            return {f"{APP}_{pool}": [h for h in self.app_hosts if h.pool == pool]
                    for pool in ("blue", "green")}
        return {APP: self.app_hosts}


# --------------------------------------------------------------- artifacts
def ensure_artifacts() -> dict:
    sys.path.insert(0, HERE)
    import build_artifacts  # noqa: PLC0415 - lab-only helper beside this file

    return build_artifacts.build_all(ARTIFACTS)


def artifact(version: str) -> tuple[str, str]:
    path = os.path.join(ARTIFACTS, f"{APP}-{version}.tar.gz")
    with open(path + ".sha256", encoding="ascii") as handle:
        return path, handle.read().split()[0]


def _release_store():
    """The collection's own release store, used to lay down the baseline."""
    sys.path.insert(0, os.path.join(REPO, "build", "collections"))
    from ansible_collections.safedeploy.fleet.plugins.module_utils import _release  # noqa: PLC0415

    return _release


# --------------------------------------------------------------- host files
def host_binds(config: LabConfig, host: Host, base: str) -> dict[str, str]:
    """Host folders bound into the machine: {path on the host: path inside}."""
    if host.role == "app":
        return {os.path.join(base, "opt"): "/opt",
                os.path.join(base, "units"): "/usr/local/lib/systemd/system"}
    if host.role == "lb":
        return {os.path.join(base, "haproxy"): "/etc/haproxy"}
    return {os.path.join(base, "prometheus"): "/etc/prometheus"}


def write_host_files(config: LabConfig, host: Host, base: str) -> dict[str, str]:
    binds = host_binds(config, host, base)
    for path in binds:
        os.makedirs(path, exist_ok=True)
    if host.role == "app":
        _write_app(host, base)
    elif host.role == "lb":
        _write_haproxy(config, os.path.join(base, "haproxy"))
    else:
        _write_prometheus(config, os.path.join(base, "prometheus"))
    return binds


def _write_app(host: Host, base: str) -> None:
    with open(os.path.join(base, "units", f"{APP}.service"), "w", encoding="ascii") as handle:
        handle.write(APP_UNIT.format(port=APP_PORT))
    version = baseline()
    if version is None:
        return
    path, sha = artifact(version)
    store = _release_store()
    root = os.path.join(base, "opt", APP)
    # The same steps the release role takes, done from outside the machine
    # so a fresh fleet is ready the moment it boots.
    for state in ("active", "good"):
        store.apply(root, version, state=state, src=path, checksum=f"sha256:{sha}",
                    actor="safedeploy-lab (baseline)")


def haproxy_vars(config: LabConfig) -> dict:
    backends = [{"name": name, "servers": [{"name": h.name, "address": h.ip, "port": APP_PORT}
                                           for h in hosts]}
                for name, hosts in config.backends().items()]
    frontends = [{"name": "web", "bind": "*:80"}]
    maps = []
    if config.layout == "blue_green":
        # One map decides both routes: key <app> names the live pool (port 80),
        # key <app>_preview the idle one (port 8081). The blue_green role
        # switches both entries together, on every load balancer.
        frontends[0]["use_backend_map"] = {"key": APP, "map": LIVE_POOL_MAP, "prefix": f"{APP}_"}
        frontends[0]["default_backend"] = f"{APP}_blue"
        frontends.append({"name": "preview", "bind": "*:8081", "default_backend": f"{APP}_green",
                          "use_backend_map": {"key": f"{APP}_preview", "map": LIVE_POOL_MAP,
                                              "prefix": f"{APP}_"}})
        maps = [{"path": LIVE_POOL_MAP, "entries": {APP: "blue", f"{APP}_preview": "green"}}]
    else:
        frontends[0]["default_backend"] = APP
    return {"haproxy_frontends": frontends, "haproxy_backends": backends, "haproxy_maps": maps}


def render_haproxy(config: LabConfig) -> str:
    import jinja2  # noqa: PLC0415 - controller venv only

    sys.path.insert(0, HERE)
    defaults = _role_defaults("haproxy")
    context = {**defaults, **haproxy_vars(config)}
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             trim_blocks=True, lstrip_blocks=True)
    with open(HAPROXY_TEMPLATE, encoding="utf-8") as handle:
        template = env.from_string(handle.read())
    # Defaults may reference other defaults; render twice is enough here.
    for key, value in list(context.items()):
        if isinstance(value, str) and "{{" in value:
            context[key] = env.from_string(value).render(context)
    return template.render(context)


def _role_defaults(role: str) -> dict:
    import yaml  # noqa: PLC0415 - controller venv only

    with open(os.path.join(REPO, "roles", role, "defaults", "main.yml"), encoding="utf-8") as handle:
        return yaml.safe_load(handle) or {}


def _write_haproxy(config: LabConfig, etc: str) -> None:
    with open(os.path.join(etc, "haproxy.cfg"), "w", encoding="utf-8") as handle:
        handle.write(render_haproxy(config))
    for entry in haproxy_vars(config)["haproxy_maps"]:
        path = os.path.join(etc, os.path.relpath(entry["path"], "/etc/haproxy"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            handle.writelines(f"{k} {v}\n" for k, v in entry["entries"].items())


def _write_prometheus(config: LabConfig, etc: str) -> None:
    targets = "".join(
        f"      - targets: ['{h.ip}:{APP_PORT}']\n"
        f"        labels: {{instance: {h.name}{', pool: ' + h.pool if h.pool else ''}}}\n"
        for h in config.app_hosts)
    with open(os.path.join(etc, "prometheus.yml"), "w", encoding="utf-8") as handle:
        handle.write(PROMETHEUS_YML.format(app=APP, targets=targets))


# --------------------------------------------------------------- inventory
def write_inventory(config: LabConfig, path: str, key_file: str) -> None:
    def hostvars(host: Host) -> dict:
        # Per host, not in all.vars: the implicit localhost must keep the
        # controller's Python (it runs health_check with requests).
        data = {"ansible_host": host.ip, "ansible_python_interpreter": "/usr/bin/python3"}
        if host.pool:
            data["lab_pool"] = host.pool
        return data

    app_children = {}
    if config.layout == "blue_green":
        for pool in ("blue", "green"):
            app_children[f"{APP}_{pool}"] = {"hosts": {h.name: None for h in config.app_hosts
                                                       if h.pool == pool},
                                             "vars": {"deploy_lb_backend": f"{APP}_{pool}"}}
    inventory = {"all": {
        "vars": {
            "ansible_user": "root",
            "ansible_ssh_private_key_file": key_file,
            "ansible_ssh_common_args": "-o StrictHostKeyChecking=no "
                                       "-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR",
            "lab_layout": config.layout,
            "lab_lb_url": config.lb_url,
            "lab_preview_url": config.preview_url,
            "lab_prometheus_url": config.prometheus_url,
            "lab_monitoring": config.monitoring,
            "lab_artifacts_dir": ARTIFACTS,
            "deploy_app": APP,
            "deploy_app_port": APP_PORT,
            "deploy_lb_backend": APP if config.layout == "rolling" else None,
            "deploy_artifact": "{{ lab_artifacts_dir }}/" + APP + "-{{ deploy_version }}.tar.gz",
            "deploy_artifact_checksum": "sha256:{{ lookup('ansible.builtin.file', "
                                        "deploy_artifact ~ '.sha256').split()[0] }}",
            # Prometheus scrapes every second: short analysis windows keep
            # the rolling and blue/green analyses quick in the lab (without
            # monitoring the rolling analysis reads HAProxy's counters over
            # the same wait). Many lab
            # deploys (Molecule, some tests) run without traffic, which no
            # analysis can judge: there an inconclusive one goes on, with a
            # warning, instead of stopping (a failed one still stops).
            "rolling_analysis_wait": 5,
            "rolling_analysis_window": "5s",
            "rolling_analysis_on_inconclusive": "continue",
            "blue_green_analysis_wait": 5,
            "blue_green_analysis_window": "5s",
            "blue_green_analysis_on_inconclusive": "continue",
            "deploy_exec_start": f"/usr/bin/python3 /opt/{APP}/current/{APP}.py --port {APP_PORT}",
            "deploy_version_header": "X-App-Version",
        },
        "children": {
            "app": {"hosts": {h.name: hostvars(h) for h in config.app_hosts},
                    "children": app_children},
            "lb": {"hosts": {h.name: hostvars(h) for h in config.lb_hosts}},
        },
    }}
    if config.monitoring_host:
        inventory["all"]["vars"]["deploy_metrics_url"] = config.prometheus_url
        inventory["all"]["children"]["monitoring"] = {
            "hosts": {config.monitoring_host.name: hostvars(config.monitoring_host)}}
    if config.layout == "rolling":
        del inventory["all"]["children"]["app"]["children"]
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write("# Written by tests/lab/lab.py up; do not edit (lab-down removes it).\n")
        json.dump(inventory, handle, indent=2)  # JSON is YAML
        handle.write("\n")
    os.replace(tmp, path)


def describe(host: Host) -> str:
    """One status word for lab-status."""
    try:
        if host.role == "app":
            with urllib.request.urlopen(f"http://{host.ip}:{APP_PORT}/", timeout=1) as resp:
                return f"{APP} {resp.headers.get('X-App-Version')}" + (
                    f" ({host.pool})" if host.pool else "")
        if host.role == "lb":
            with urllib.request.urlopen(f"http://{host.ip}/", timeout=1) as resp:
                return f"haproxy :80 -> {resp.headers.get('X-App-Host')}"
        with urllib.request.urlopen(f"http://{host.ip}:9090/-/ready", timeout=1) as resp:
            return f"prometheus {resp.status}"
    except OSError as exc:
        return f"not answering ({exc.__class__.__name__})"
