# Copyright: (c) 2026, safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The deployment report: the checklist of a deploy or rollback run.

Plain Python, no Ansible import: the ``deploy_report`` callback turns
Ansible's events into calls on :class:`Recorder` (names, hosts, plain
dicts, times), and :func:`render_json` / :func:`render_markdown` write the
report. Unit-tested without running Ansible (tests/unit/test_deploy_report.py).

Each task that ran becomes one checklist item, put in a section by the role
it belongs to, the include tasks and play around it, its module and its
name (the roles name their tasks consistently: ``Abort | ...``,
``Analysis | ...``, ``Verify idle | ...``):

* ``precheck``  the preflight role, the fleet lock, each role's input checks
* ``deploy``    release, lb_member, the rolling batch step, blue/green deploy
  and switch, canary deploy, steps and promotion
* ``verify``    health_check and metric_gate, readiness and liveness, marking
  a release good, a server UP again, the batch verdict
* ``rollback``  undo, abort, switch back, the rollback role, a release restored
* ``finish``    the lock released, where every host is now, the final verdict
"""

from __future__ import annotations

import html
import json
import re
import time

SCHEMA_VERSION = 1

SECTIONS = ("precheck", "deploy", "verify", "rollback", "finish")
SECTION_TITLES = {
    "precheck": "Pre-checks",
    "deploy": "Deploy steps",
    "verify": "Verification",
    "rollback": "Rollback steps",
    "finish": "Finish",
}

# Roles whose tasks make a run a deployment worth a report.
DEPLOY_ROLES = frozenset(("preflight", "release", "lb_member", "rolling", "rollback", "blue_green", "canary"))
COLLECTION_PREFIX = "safedeploy.fleet."
# Bookkeeping tasks: their facts are read, but they are not checklist steps.
BOOKKEEPING_ACTIONS = frozenset(("set_fact", "meta", "include_role", "include_tasks", "import_role",
                                 "import_tasks", "include_vars", "set_stats", "pause_noop"))

# Words that mean a rollback wherever they stand, and words that do only at
# the start of an include's name ("Record the verdict, or return to the last
# good release" wraps the happy path too); a task's own name may say either anywhere.
_ROLLBACK_ANYWHERE = (r"abort\b|undo\b|switch(?:es|ed)? back|switch every load balancer back|put every load balancer back|"
                      r"roll(?:ed|ing)?[ -]?back\b|re-activate|mark the failed release bad")
_ROLLBACK_AT_START = r"restored?\b|return(?:s)? (?:to|this host|each idle|the idle pool)|enable the restored"
_ROLLBACK_RE = re.compile(r"\b(?:" + _ROLLBACK_ANYWHERE + "|" + _ROLLBACK_AT_START + r")|last good release", re.IGNORECASE)
_ROLLBACK_PARENT_RE = re.compile(r"\b(?:" + _ROLLBACK_ANYWHERE + r")|^(?:[\w ]+ \| )?(?:" + _ROLLBACK_AT_START + ")",
                                 re.IGNORECASE)
_PRECHECK_RE = re.compile(
    r"^(?:inputs|preflight|lock|live pool|versions|plan|stranded|artifact|hosts|health|load balancers) \||"
    r"^check the\b|^is the fleet blue/green|^note the strategy|^validating arguments against arg spec",
    re.IGNORECASE)
_VERIFY_RE = re.compile(
    r"^(?:analysis|analyse idle|analyse live|verify idle|verify) \||\bverify\b|\bverification\b|\bprobe\b|wait until .*\b(?:ready|up)\b|"
    r"mark the release good|decide whether the rollout goes on|"
    r"failed hosts of this batch|stop the rollout when|judge the",
    re.IGNORECASE)
_FINISH_RE = re.compile(r"^unlock \||release the fleet lock|^summary$|where every host is now|"
                        r"^fail the run|^stop with", re.IGNORECASE)
_METRIC_IN_MESSAGE_RE = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]*) = -?[0-9.]+(?: ?[A-Za-z%/]+)? is (?:below|above)")


def short_role(role: str | None) -> str:
    """``safedeploy.fleet.rolling`` -> ``rolling``; None -> ''."""
    if not role:
        return ""
    return role.rsplit(".", 1)[-1]


def short_action(action: str | None) -> str:
    """``ansible.builtin.set_fact`` / ``safedeploy.fleet.release`` -> ``set_fact`` / ``release``."""
    if not action:
        return ""
    return action.rsplit(".", 1)[-1]


def classify(name: str, role: str | None = None, action: str | None = None,
             parents: list[tuple[str, str]] | tuple = (), play: str = "") -> str:
    """The checklist section of one task.

    ``parents`` are the include tasks around it, innermost first, as
    ``(role, name)`` pairs; ``play`` is the play's name.
    """
    role = short_role(role)
    action = short_action(action)
    name = name or ""
    parent_roles = [short_role(parent[0]) for parent in parents]
    parent_names = [parent[1] or "" for parent in parents]
    # The unlock and the final verdict of the playbook close the run.
    if _FINISH_RE.search(name) and (not role or name.lower().startswith("unlock |")):
        return "finish"
    # A failed analysis sets the abort up but is itself a verification.
    if re.match(r"analy(?:sis|se)\b[^|]*\|", name, re.IGNORECASE):
        return "verify"
    # The pre-checks never change anything (their "or restore it" is a pre-check's fix-up).
    if role == "preflight" or "preflight" in parent_roles:
        return "precheck"
    in_rollback = (
        role == "rollback" or "rollback" in parent_roles
        or (bool(_ROLLBACK_RE.search(name)) and not name.lower().startswith("validating arguments"))
        or any(_ROLLBACK_PARENT_RE.search(n) for n in parent_names)
        or bool(re.search(r"\bundo\b|\broll back\b", play or "", re.IGNORECASE)))
    if in_rollback:
        return "rollback"
    if action == "deploy_lock" and name.lower().startswith("lock |"):
        return "precheck"
    if _PRECHECK_RE.search(name):
        return "precheck"
    if action in ("health_check", "metric_gate") or _VERIFY_RE.search(name):
        return "verify"
    if role in DEPLOY_ROLES or any(r in DEPLOY_ROLES for r in parent_roles) or action == "deploy_lock":
        return "deploy"
    return "finish"


def is_checklist_step(action: str | None) -> bool:
    """Whether a task of this module is a step of the checklist (not bookkeeping)."""
    return short_action(action) not in BOOKKEEPING_ACTIONS


def is_collection_task(role: str | None, action: str | None, parents=()) -> bool:
    """A task of the collection's deploy roles or modules (the haproxy role is set-up, not a deploy)."""
    roles = [role or ""] + [parent[0] or "" for parent in parents]
    if any(r.startswith(COLLECTION_PREFIX) or short_role(r) in DEPLOY_ROLES for r in roles if r):
        return not any(short_role(r) == "haproxy" for r in roles if r)
    return (action or "").startswith(COLLECTION_PREFIX)


def _caller(role: str | None, parents) -> str | None:
    """The task of another role that brought this task's role in (rolling's "Release the new version")."""
    for parent_role, parent_name in parents:
        if short_role(parent_role) != short_role(role):
            return parent_name if parent_role else None
    return None


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _round(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 1)


def _text(value, limit: int = 600) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        value = json.dumps(value, sort_keys=True, default=str)
    value = " ".join(value.split())
    return value if len(value) <= limit else value[:limit - 3] + "..."


# What each module's result adds to its checklist item (a few known keys).
_DETAIL_KEYS = {
    "release_info": ("current", "last_good"),
    "release": ("version", "current", "previous_current", "last_good"),
    "haproxy_weights": ("requested_percent", "achieved_percent", "canary_weight", "stable_weight"),
    "metric_gate": ("verdict", "message", "failed_metrics", "requests"),
    "haproxy_map": ("key", "value"),
    "batch_plan": ("batches",),
    "deploy_lock": ("acquired",),
}


def extract_detail(action: str | None, result: dict) -> dict:
    """The few values of a module's result the report keeps."""
    action = short_action(action)
    if not isinstance(result, dict) or result.get("censored"):
        return {}
    detail = {}
    for key in _DETAIL_KEYS.get(action, ()):
        if result.get(key) is not None:
            detail[key] = result[key]
    if action == "metric_gate" and isinstance(result.get("metrics"), list):
        detail["metrics"] = [
            {k: m.get(k) for k in ("name", "value", "verdict", "reason") if k in m}
            for m in result["metrics"] if isinstance(m, dict)]
    if action == "debug" and "msg" in result:
        detail["msg"] = result["msg"]
    if isinstance(result.get("results"), list) and action in _DETAIL_KEYS:
        items = [extract_detail(action, r) for r in result["results"] if isinstance(r, dict)]
        items = [i for i in items if i]
        if items:
            detail["items"] = items
    return detail


def failed_metrics_of(message: str) -> list[str]:
    """The metric names a metric_gate message names as failed ("success_rate = 80.5% is below ...")."""
    seen = []
    for metric in _METRIC_IN_MESSAGE_RE.findall(message or ""):
        if metric not in seen:
            seen.append(metric)
    return seen


class Recorder:
    """Builds the report from the events of one playbook run."""

    def __init__(self, playbook: str = "", check_mode: bool = False, extra_vars: dict | None = None,
                 now: float | None = None, who: dict | None = None) -> None:
        self.playbook = playbook
        self.check_mode = bool(check_mode)
        extra_vars = extra_vars or {}
        self.vars = {k: extra_vars.get(k) for k in ("deploy_app", "deploy_version", "deploy_strategy")
                     if extra_vars.get(k) is not None}
        self.started = time.time() if now is None else now
        self.ended: float | None = None
        self.items: list[dict] = []
        self._current: dict[str, dict] = {}
        self.facts: dict = {}
        self.host_facts: dict[str, dict] = {}
        self.versions: dict[str, dict] = {}
        self.batches: list[dict] = []
        self._batch: dict | None = None
        self._play_runs: dict[str, int] = {}
        self.play = ""
        self.failures: list[dict] = []
        self.relevant = False
        # who ran it: user, controller, AWX job id (the run id comes from the fleet lock's facts)
        self.who = {k: v for k, v in (who or {}).items() if v}

    # -- events ----------------------------------------------------------------
    def set_var(self, name: str, value) -> None:
        """A deploy_* variable read from the inventory (extra vars win)."""
        if value is not None and name not in self.vars:
            self.vars[name] = value

    def play_start(self, name: str, key: str, serial: bool, now: float) -> None:
        """A play starts; a play with serial starts again for each batch."""
        self.play = name or ""
        self._play_runs[key] = self._play_runs.get(key, 0) + 1
        self._close_batch()
        if serial:
            self._batch = {"index": len(self.batches) + 1, "play": self.play,
                           "play_batch": self._play_runs[key], "hosts": [],
                           "start": now, "end": now}
            self.batches.append(self._batch)

    def task_start(self, key: str, name: str, role: str | None = None, action: str | None = None,
                   parents=(), now: float | None = None, handler: bool = False) -> None:
        now = time.time() if now is None else now
        if is_collection_task(role, action, parents):
            self.relevant = True
        item = {
            "name": name or short_action(action),
            "role": short_role(role) or None,
            "action": short_action(action),
            "section": classify(name, role, action, parents, self.play),
            "play": self.play,
            "batch": self._batch["index"] if self._batch else None,
            "handler": bool(handler),
            "start": now,
            "end": now,
            "hosts": {},
            "step": is_checklist_step(action),
            "within": [parent[1] for parent in reversed(list(parents)) if parent[1]],
            "called_by": _caller(role, parents),
        }
        self._current[key] = item
        self.items.append(item)

    def host_result(self, key: str, host: str, status: str, result: dict | None = None,
                    now: float | None = None, ignored: bool = False, delegated_to: str | None = None) -> None:
        """One host's result: status is ok, changed, failed, skipped or unreachable."""
        now = time.time() if now is None else now
        result = result if isinstance(result, dict) else {}
        item = self._current.get(key)
        if item is None:  # a result without its task start: keep it anyway
            self.task_start(key, result.get("task", "") or "", now=now)
            item = self._current[key]
        item["end"] = max(item["end"], now)
        entry = {"status": "ok" if status == "changed" else status,
                 "changed": status == "changed" or bool(result.get("changed")),
                 "seconds": _round(now - item["start"])}
        if ignored:
            entry["ignored"] = True
        if delegated_to and delegated_to != host:
            entry["delegated_to"] = delegated_to
        msg = result.get("msg")
        if status in ("failed", "unreachable") or (msg and item["action"] in ("fail", "assert")):
            entry["msg"] = _text(msg if msg is not None else result.get("stderr", ""), limit=2000)
        detail = extract_detail(item["action"], result)
        if detail:
            entry["detail"] = detail
        item["hosts"][host] = entry
        if self._batch is not None and status != "skipped" and host not in self._batch["hosts"]:
            self._batch["hosts"].append(host)
        if self._batch is not None:
            self._batch["end"] = max(self._batch["end"], now)
        self._note_facts(host, result)
        if status != "skipped":  # a skipped read (e.g. the staging play's, rolling_stage off) says nothing
            self._note_versions(host, item, result)
        if status in ("failed", "unreachable") and not ignored:
            self.failures.append({"task": item["name"], "host": host, "section": item["section"],
                                  "msg": entry.get("msg", "")})

    def _note_facts(self, host: str, result: dict) -> None:
        facts = result.get("ansible_facts")
        if not isinstance(facts, dict):
            return
        keep = {k: v for k, v in facts.items()
                if k in ("deploy_strategy_selected", "rolling_aborted", "rolling_abort_reason", "canary_aborted",
                         "canary_abort_reason", "canary_promoted", "_canary_abort_reason", "rollback_blue_green",
                         "_rolling_batch_hosts", "_canary_hosts", "_blue_green_live", "_blue_green_idle",
                         "_deploy_run_id")}
        self.facts.update(keep)
        per_host = {k: v for k, v in facts.items() if k in ("_rolling_result", "_rolling_reason")}
        if per_host:
            self.host_facts.setdefault(host, {}).update(per_host)

    def _note_versions(self, host: str, item: dict, result: dict) -> None:
        if item["action"] not in ("release_info", "release") or result.get("failed"):
            return
        current = result.get("current")
        if item["action"] == "release" and not current:
            return
        if not isinstance(current, (str, type(None))):
            return
        versions = self.versions.setdefault(host, {})
        if item["action"] == "release_info" and "before" not in versions and item["section"] != "finish":
            versions["before"] = current
        versions["after"] = current

    def finish(self, stats: dict | None = None, now: float | None = None) -> dict:
        """The report, from what was recorded and the play recap (``{host: {ok, failures, ...}}``)."""
        self.ended = time.time() if now is None else now
        self._close_batch()
        return build_report(self, stats or {})

    def _close_batch(self) -> None:
        self._batch = None


def _item_outcome(item: dict) -> str:
    statuses = [h["status"] for h in item["hosts"].values()]
    if any(s in ("failed", "unreachable") and not h.get("ignored")
           for s, h in zip(statuses, item["hosts"].values())):
        return "failed"
    if any(s in ("failed", "unreachable") for s in statuses):
        return "failed (ignored)"
    if any(s == "ok" for s in statuses):
        return "ok"
    if statuses:
        return "skipped"
    return "not run"


def _public_item(item: dict, number: str, base: float) -> dict:
    return {
        "number": number,
        "name": item["name"],
        "role": item["role"],
        "module": item["action"],
        "play": item["play"],
        "batch": item["batch"],
        "handler": item["handler"],
        "within": item["within"],
        "called_by": item["called_by"],
        "outcome": _item_outcome(item),
        "changed": any(h.get("changed") for h in item["hosts"].values()),
        "start": _iso(item["start"]),
        "end": _iso(item["end"]),
        "offset": _round(item["start"] - base),
        "seconds": _round(item["end"] - item["start"]),
        "hosts": item["hosts"],
    }


def _analyses(items: list[dict], base: float) -> list[dict]:
    """Every metric analysis that ran (metric_gate), and those check mode only announced."""
    found = []
    for item in items:
        for host, entry in item["hosts"].items():
            detail = entry.get("detail") or {}
            if entry["status"] == "skipped":
                continue
            if item["action"] == "metric_gate" and detail.get("verdict"):
                found.append({"task": item["name"], "role": item["role"], "host": host, "verdict": detail["verdict"],
                              "message": detail.get("message"), "failed_metrics": detail.get("failed_metrics") or [],
                              "requests": detail.get("requests"), "metrics": detail.get("metrics") or [],
                              "at": _iso(item["end"]), "offset": _round(item["end"] - base)})
            elif item["action"] == "debug" and item["name"].lower().startswith("analysis | would"):
                found.append({"task": item["name"], "role": item["role"], "host": host, "verdict": "planned",
                              "message": _text(detail.get("msg")), "failed_metrics": [], "requests": None,
                              "metrics": [], "at": _iso(item["end"]), "offset": _round(item["end"] - base)})
    return found


def _canary_summary(items: list[dict], facts: dict, base: float) -> dict | None:
    steps = []
    for item in items:
        if item["action"] != "haproxy_weights" or not item["name"].lower().startswith("step |"):
            continue
        for entry in item["hosts"].values():
            detail = entry.get("detail") or {}
            first = (detail.get("items") or [detail])[0]
            if first.get("requested_percent") is not None:
                steps.append({"task": item["name"], "requested_percent": first.get("requested_percent"),
                              "reached_percent": first.get("achieved_percent"),
                              "canary_weight": first.get("canary_weight"),
                              "stable_weight": first.get("stable_weight"), "at": _iso(item["start"]),
                              "offset": _round(item["start"] - base)})
    if not steps and not facts.get("_canary_hosts"):
        return None
    return {"hosts": facts.get("_canary_hosts") or [], "steps": steps,
            "promoted": bool(facts.get("canary_promoted")), "aborted": bool(facts.get("canary_aborted")),
            "abort_reason": _text(facts.get("canary_abort_reason") or facts.get("_canary_abort_reason")) or None}


def build_report(rec: Recorder, stats: dict) -> dict:
    """The report (a JSON-ready dict) from a finished :class:`Recorder`."""
    kind = "rollback" if re.search(r"rollback", (rec.playbook or "").rsplit("/", 1)[-1]) else "deploy"
    steps = [i for i in rec.items if i["step"]]
    sections: dict[str, list[dict]] = {s: [] for s in SECTIONS}
    for item in steps:
        section = item["section"]
        if kind == "rollback" and section == "deploy":
            section = "rollback"  # in rollback.yml, every change is a rollback step
        sections[section].append(item)
    public_sections = {}
    for index, section in enumerate(SECTIONS, start=1):
        public_sections[section] = [_public_item(item, f"{index}.{n}", rec.started) for n, item in enumerate(sections[section], start=1)]

    failed_hosts = sorted(h for h, s in stats.items() if s.get("failures") or s.get("unreachable"))
    # The recap decides (a failure a rescue handled is not the run's); without it, any failure.
    outcome = "failed" if (failed_hosts if stats else rec.failures) else "success"
    strategy = rec.facts.get("deploy_strategy_selected") or rec.vars.get("deploy_strategy")
    if kind == "rollback":
        strategy = "blue_green" if rec.facts.get("rollback_blue_green") else (strategy or "host_by_host")
    strategy = strategy or "rolling"

    canary = _canary_summary(steps, rec.facts, rec.started)
    analyses = _analyses(steps, rec.started)
    failure = None
    if outcome == "failed":
        last = rec.failures[-1] if rec.failures else {"task": None, "host": None, "msg": ""}
        # A run_once failure reaches every host, but only the host it ran on has the full message:
        # of the last failed task, keep the most specific (longest) one.
        same_task = [f for f in rec.failures if f["task"] == last["task"] and f["section"] == last["section"]]
        last = max(same_task or [last], key=lambda f: len(f.get("msg") or ""))
        gate_failed = []
        gate_details = []
        for analysis in analyses:
            if analysis["verdict"] == "fail":
                gate_failed = analysis["failed_metrics"] or failed_metrics_of(analysis.get("message") or "")
                gate_details = [m for m in analysis.get("metrics", []) if m.get("verdict") == "fail"]
        metrics = gate_failed or failed_metrics_of(last.get("msg", ""))
        failure = {"message": last.get("msg", ""), "task": last.get("task"), "host": last.get("host"),
                   "section": last.get("section"), "failed_metrics": metrics, "metric_details": gate_details,
                   "failed_hosts": failed_hosts}

    rollback_taken = [i for i in public_sections["rollback"] if i["outcome"] in ("ok", "failed")]
    hosts = {}
    for host in sorted(set(rec.versions) | set(stats) | set(rec.host_facts)):
        batches = [b["index"] for b in rec.batches if host in b["hosts"]]
        host_stats = stats.get(host, {})
        rolled_back = any(host in i["hosts"] and i["hosts"][host]["status"] == "ok" for i in rollback_taken)
        state = "failed" if host in failed_hosts else "ok"
        hosts[host] = {
            "before": rec.versions.get(host, {}).get("before"),
            "after": rec.versions.get(host, {}).get("after"),
            "batches": batches,
            "outcome": state,
            "rolled_back": rolled_back,
            "rolling_result": rec.host_facts.get(host, {}).get("_rolling_result"),
            "reason": _text(rec.host_facts.get(host, {}).get("_rolling_reason")) or None,
            "stats": host_stats,
        }
    batches = []
    for b in rec.batches:
        if not b["hosts"]:
            continue
        batch_items = [i for i in steps if i["batch"] == b["index"]]
        bad = sorted({h for i in batch_items for h, e in i["hosts"].items()
                      if e["status"] in ("failed", "unreachable") and not e.get("ignored")})
        batches.append({"index": b["index"], "play": b["play"], "hosts": b["hosts"], "start": _iso(b["start"]),
                        "end": _iso(b["end"]), "offset": _round(b["start"] - rec.started),
                        "seconds": _round(b["end"] - b["start"]),
                        "outcome": "failed" if bad else "ok", "failed_hosts": bad})
    return {
        "schema": SCHEMA_VERSION,
        "kind": kind,
        "plan": rec.check_mode,
        "playbook": rec.playbook,
        "run": {**rec.who, **({"run_id": rec.facts["_deploy_run_id"]} if rec.facts.get("_deploy_run_id") else {})},
        "app": rec.vars.get("deploy_app"),
        "deploy_version": rec.vars.get("deploy_version"),
        "strategy": strategy,
        "start": _iso(rec.started),
        "end": _iso(rec.ended),
        "seconds": _round((rec.ended or rec.started) - rec.started),
        "outcome": outcome,
        "failure": failure,
        "rolled_back": bool(rollback_taken),
        "rolling_aborted": bool(rec.facts.get("rolling_aborted")),
        "rolling_abort_reason": _text(rec.facts.get("rolling_abort_reason")) or None,
        "hosts": hosts,
        "batches": batches,
        "analyses": analyses,
        "canary": canary,
        "sections": public_sections,
    }


# -- rendering -------------------------------------------------------------------

def render_json(report: dict) -> str:
    return json.dumps(report, indent=2, sort_keys=False, default=str) + "\n"


def _cell(value, limit: int = 300) -> str:
    text = _text(value, limit=limit)
    return text.replace("|", "\\|") if text else ""


def _hosts_cell(item: dict) -> str:
    by_status: dict[str, list[str]] = {}
    for host, entry in item["hosts"].items():
        label = entry["status"] + (" (ignored)" if entry.get("ignored") else "")
        by_status.setdefault(label, []).append(host)
    return "; ".join(f"{status}: {', '.join(hosts)}" for status, hosts in by_status.items())


def _note_cell(item: dict) -> str:
    notes = []
    for host, entry in item["hosts"].items():
        if entry.get("msg") and entry["status"] in ("failed", "unreachable"):
            notes.append(f"{host}: {entry['msg']}")
        detail = entry.get("detail") or {}
        if item["module"] == "metric_gate" and detail.get("message"):
            notes.append(detail["message"])
        elif item["module"] == "haproxy_weights" and detail:
            first = (detail.get("items") or [detail])[0]
            if first.get("achieved_percent") is not None:
                notes.append(f"{first.get('requested_percent')} % requested, {first.get('achieved_percent')} % reached")
        elif item["module"] in ("release_info", "release") and detail.get("current"):
            notes.append(f"{host}: {detail['current']}")
    unique = list(dict.fromkeys(notes))
    return _cell("; ".join(unique[:8]) + (" ..." if len(unique) > 8 else ""))


def render_markdown(report: dict) -> str:
    """The human report: a summary, the hosts, the batches, the canary steps and the checklist."""
    what = "Rollback" if report["kind"] == "rollback" else "Deployment"
    title = f"{what} plan (check mode: nothing was changed)" if report["plan"] else f"{what} report"
    result = report["outcome"].upper()
    version = f" {report['deploy_version']}" if report.get("deploy_version") else ""
    lines = [f"# {title}: {report.get('app') or 'app'}{version} ({report['strategy']}) - {result}", ""]
    rows = [("Outcome", f"**{report['outcome']}**" + (" (plan)" if report["plan"] else "")),
            ("Strategy", report["strategy"]),
            ("Version", report.get("deploy_version") or "-"),
            ("Playbook", report["playbook"]),
            ("Run", ", ".join(f"{k} {v}" for k, v in report["run"].items()) or "-"),
            ("Started", report["start"]),
            ("Ended", f"{report['end']} ({report['seconds']} s)"),
            ("Rollback steps taken", "yes" if report["rolled_back"] else "no")]
    failure = report.get("failure")
    if failure:
        rows.append(("Failure", failure["message"]))
        if failure.get("failed_metrics"):
            rows.append(("Failed metric", ", ".join(failure["failed_metrics"])))
        for metric in failure.get("metric_details") or []:
            rows.append((f"Metric {metric.get('name')}", metric.get("reason") or metric.get("value")))
        if failure.get("failed_hosts"):
            rows.append(("Failed hosts", ", ".join(failure["failed_hosts"])))
    lines += ["| | |", "|---|---|"] + [f"| {k} | {_cell(v, limit=2000)} |" for k, v in rows] + [""]

    if report["hosts"]:
        lines += ["## Hosts", "", "| host | batch | before | after | outcome | rolled back |", "|---|---|---|---|---|---|"]
        for host, h in report["hosts"].items():
            lines.append(f"| {host} | {', '.join(map(str, h['batches'])) or '-'} | {_cell(h['before']) or '-'} | "
                         f"{_cell(h['after']) or '-'} | {h['outcome']}{' - ' + _cell(h['reason']) if h['reason'] else ''} | "
                         f"{'yes' if h['rolled_back'] else 'no'} |")
        lines.append("")
    if report["batches"]:
        lines += ["## Batches", "", "| # | play | hosts | start | seconds | outcome |", "|---|---|---|---|---|---|"]
        for b in report["batches"]:
            lines.append(f"| {b['index']} | {_cell(b['play'])} | {', '.join(b['hosts'])} | {b['start']} | {b['seconds']} | "
                         f"{b['outcome']}{' (' + ', '.join(b['failed_hosts']) + ')' if b['failed_hosts'] else ''} |")
        lines.append("")
    canary = report.get("canary")
    if canary:
        lines += ["## Canary", "", f"Canary hosts: {', '.join(canary['hosts']) or '-'}; "
                  f"{'promoted' if canary['promoted'] else 'aborted' if canary['aborted'] else 'not promoted'}.", ""]
        if canary["abort_reason"]:
            lines += [f"Abort reason: {canary['abort_reason']}", ""]
        if canary["steps"]:
            lines += ["| step | requested % | reached % | canary weight | stable weight |", "|---|---|---|---|---|"]
            lines += [f"| {_cell(s['task'])} | {s['requested_percent']} | {s['reached_percent']} | {s['canary_weight']} | "
                      f"{s['stable_weight']} |" for s in canary["steps"]]
            lines.append("")
    if report["analyses"]:
        lines += ["## Metric analyses", "", "| at | task | verdict | failed metrics | message |", "|---|---|---|---|---|"]
        lines += [f"| {a['at']} | {_cell(a['task'])} | {a['verdict']} | {', '.join(a['failed_metrics']) or '-'} | "
                  f"{_cell(a['message'])} |" for a in report["analyses"]]
        lines.append("")
    for index, section in enumerate(SECTIONS, start=1):
        items = report["sections"][section]
        lines += [f"## {index}. {SECTION_TITLES[section]}", ""]
        if not items:
            lines += ["None." if section != "rollback" else "No rollback step was taken.", ""]
            continue
        lines += ["| # | step | batch | hosts | outcome | seconds | note |", "|---|---|---|---|---|---|---|"]
        for item in items:
            name = item["name"] if not item["role"] else f"{item['role']}: {item['name']}"
            if item["called_by"]:
                name += f" (in: {item['called_by']})"
            lines.append(f"| {item['number']} | {_cell(name)} | {item['batch'] or '-'} | {_cell(_hosts_cell(item))} | "
                         f"{item['outcome']} | {item['seconds']} | {_note_cell(item)} |")
        lines.append("")
    return "\n".join(lines)


_COLOURS = {"ok": "#2e8b57", "failed": "#c0392b", "failed (ignored)": "#e67e22", "skipped": "#b0b0b0",
            "not run": "#dddddd", "pass": "#2e8b57", "fail": "#c0392b", "inconclusive": "#e6a817", "planned": "#7f8c8d"}


def _timeline_svg(report: dict) -> str:
    """An SVG timeline: one row per section and per batch, a bar per step, the canary's weights and verdicts."""
    total = max(float(report.get("seconds") or 0), 1.0)
    rows: list[tuple[str, list[tuple[float, float, str, str]]]] = []
    for b in report["batches"]:
        rows.append((f"batch {b['index']}: {', '.join(b['hosts'])}",
                     [(b["offset"] or 0, b["seconds"] or 0, b["outcome"], f"batch {b['index']} ({b['play']}): {b['seconds']} s")]))
    for section in SECTIONS:
        bars = [(i["offset"] or 0, i["seconds"] or 0, i["outcome"], f"{i['number']} {i['name']}: {i['outcome']}, {i['seconds']} s")
                for i in report["sections"][section] if i["outcome"] != "skipped"]
        if bars:
            rows.append((SECTION_TITLES[section], bars))
    canary = report.get("canary") or {}
    if canary.get("steps"):
        rows.append(("canary weight", [(st["offset"] or 0, 0, "ok", f"{st['requested_percent']} % requested, "
                                        f"{st['reached_percent']} % reached") for st in canary["steps"]]))
    if report.get("analyses"):
        rows.append(("analyses", [(a["offset"] or 0, 0, a["verdict"], f"{a['verdict']}: {a['message']}")
                                  for a in report["analyses"]]))
    label_w, plot_w, row_h = 200, 760, 22
    height = row_h * len(rows) + 30
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + plot_w + 10}" height="{height}" '
           f'font-family="sans-serif" font-size="11">']
    for tick in range(0, 6):
        x = label_w + plot_w * tick / 5
        out.append(f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{height - 18}" stroke="#eee"/>'
                   f'<text x="{x:.1f}" y="{height - 5}" text-anchor="middle">{total * tick / 5:.0f} s</text>')
    for n, (label, bars) in enumerate(rows):
        y = n * row_h + 4
        out.append(f'<text x="4" y="{y + 13}">{html.escape(label[:32])}</text>')
        for start, seconds, outcome, title in bars:
            x = label_w + plot_w * min(start, total) / total
            colour = _COLOURS.get(outcome, "#7f8c8d")
            if seconds <= 0 and label in ("canary weight", "analyses"):
                out.append(f'<circle cx="{x:.1f}" cy="{y + 9}" r="5" fill="{colour}"><title>{html.escape(title)}</title></circle>')
                if label == "canary weight":
                    out.append(f'<text x="{x + 7:.1f}" y="{y + 13}">{html.escape(title.split(" %")[0])} %</text>')
                continue
            width = max(plot_w * seconds / total, 1.5)
            out.append(f'<rect x="{x:.1f}" y="{y + 2}" width="{width:.1f}" height="{row_h - 8}" fill="{colour}">'
                       f'<title>{html.escape(title)}</title></rect>')
    out.append("</svg>")
    return "\n".join(out)


def render_html(report: dict) -> str:
    """One self-contained page: the summary, an SVG timeline and the Markdown report's tables as text."""
    what = "Rollback" if report["kind"] == "rollback" else "Deployment"
    title = f"{what} {'plan' if report['plan'] else 'report'}: {report.get('app') or 'app'} " \
            f"{report.get('deploy_version') or ''} ({report['strategy']}) - {report['outcome'].upper()}"
    failure = report.get("failure") or {}
    summary = [("Outcome", report["outcome"] + (" (plan)" if report["plan"] else "")), ("Strategy", report["strategy"]),
               ("Version", report.get("deploy_version") or "-"), ("Started", report["start"]),
               ("Ended", f"{report['end']} ({report['seconds']} s)"),
               ("Rollback steps taken", "yes" if report["rolled_back"] else "no")]
    if failure:
        summary += [("Failure", failure["message"]), ("Failed metric", ", ".join(failure.get("failed_metrics") or []) or "-")]
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in summary)
    colour = _COLOURS["failed" if report["outcome"] == "failed" else "ok"]
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            "<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}"
            "th,td{border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:top}"
            "pre{white-space:pre-wrap;font-size:12px}</style></head><body>"
            f"<h1 style=\"color:{colour}\">{html.escape(title)}</h1><table>{rows}</table>"
            f"<h2>Timeline</h2>{_timeline_svg(report)}"
            f"<h2>Checklist</h2><pre>{html.escape(render_markdown(report))}</pre></body></html>\n")


def file_stem(report: dict) -> str:
    """``20261127T110203Z-deploy-demoapp-2.0.0`` (-plan in check mode); safe as a file name."""
    stamp = (report.get("start") or "").replace("-", "").replace(":", "")
    parts = [stamp, report["kind"], report.get("app") or "", report.get("deploy_version") or ""]
    if report.get("plan"):
        parts.append("plan")
    stem = "-".join(p for p in parts if p)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem)
