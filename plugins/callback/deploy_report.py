# Copyright: (c) 2026, safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: deploy_report
type: notification
short_description: Write the deployment checklist of each deploy or rollback run as JSON and Markdown
version_added: 1.0.0
description:
  - At the end of every run of C(safedeploy.fleet.deploy), C(safedeploy.fleet.rollback) or a playbook using the
    collection's deploy roles, writes a report to a directory, the checklist of the run (each pre-check, each
    batch and step, each verification, any rollback, abort or undo step) with hosts, versions, timings and
    outcome (ok, failed, skipped), the strategy, C(deploy_version), start and end, the final outcome and the
    failure message. A failed canary names the failed metric.
  - Three files per run, C(<start>-<deploy|rollback>-<app>-<version>.json), C(.md) and C(.html), and the
    symbolic links C(latest.json), C(latest.md) and C(latest.html) to them. In check mode the same checklist is written, marked as a plan
    (C(-plan) in the file names).
  - Runs that use none of the collection's deploy roles or modules write nothing.
  - Works under ansible-runner and AWX (enable it with C(ANSIBLE_CALLBACKS_ENABLED=safedeploy.fleet.deploy_report)
    in the job's environment).
requirements:
  - Enabled in C(callbacks_enabled) (ansible.cfg) or C(ANSIBLE_CALLBACKS_ENABLED).
options:
  dir:
    description:
      - The directory the reports are written to; created if missing. A relative path is relative to the
        current directory of the run.
    type: path
    default: ./deploy-reports
    env:
      - name: SAFEDEPLOY_REPORT_DIR
    ini:
      - section: safedeploy_report
        key: dir
  html:
    description: Also write an HTML page (the summary, an SVG timeline of the batches, steps, canary weights and
      verdicts, and the checklist) next to the JSON one.
    type: bool
    default: true
    env:
      - name: SAFEDEPLOY_REPORT_HTML
    ini:
      - section: safedeploy_report
        key: html
  markdown:
    description: Also write the Markdown report next to the JSON one.
    type: bool
    default: true
    env:
      - name: SAFEDEPLOY_REPORT_MARKDOWN
    ini:
      - section: safedeploy_report
        key: markdown
"""

import os  # noqa: E402
import socket  # noqa: E402
import time  # noqa: E402

from ansible import context  # noqa: E402
from ansible.module_utils.common.text.converters import to_text  # noqa: E402
from ansible.playbook.task import Task  # noqa: E402
from ansible.plugins.callback import CallbackBase  # noqa: E402
from ansible_collections.safedeploy.fleet.plugins.plugin_utils._report import (  # noqa: E402
    Recorder,
    file_stem,
    render_html,
    render_json,
    render_markdown,
)

_REPORT_VARS = ("deploy_app", "deploy_version", "deploy_strategy")


def _role_name(obj) -> str | None:
    role = getattr(obj, "_role", None)
    if role is None:
        return None
    try:
        return role.get_name(include_role_fqcn=True)
    except TypeError:
        return role.get_name()


def _parents(task) -> list[tuple[str | None, str]]:
    """The include tasks (include_role, include_tasks) around a task, innermost first."""
    found = []
    parent = getattr(task, "_parent", None)
    seen = 0
    while parent is not None and seen < 50:
        if isinstance(parent, Task):
            found.append((_role_name(parent), to_text(parent.name or "")))
        parent = getattr(parent, "_parent", None)
        seen += 1
    return found


def _point_latest(directory: str, target: str, suffix: str) -> None:
    """latest.json / latest.md -> this run's files (a symlink swapped in one rename)."""
    link = os.path.join(directory, "latest" + suffix)
    tmp = os.path.join(directory, f".latest{suffix}.{os.getpid()}")
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(os.path.basename(target), tmp)
    os.replace(tmp, link)


class CallbackModule(CallbackBase):
    """Records each task's per-host results and writes the checklist at the end of the run."""

    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "safedeploy.fleet.deploy_report"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._rec = None
        self._playbook = ""
        self._vars_read = False
        self._play = None

    # -- the run -----------------------------------------------------------------
    def v2_playbook_on_start(self, playbook):
        self._playbook = to_text(getattr(playbook, "_file_name", "") or "")
        self._rec = None
        self._vars_read = False

    def _recorder(self, play=None):
        if self._rec is None:
            extra = {}
            if play is not None:
                try:
                    extra = dict(play.get_variable_manager().extra_vars)
                except Exception:  # noqa: BLE001 - a report must never break the run
                    extra = {}
            who = {"user": os.environ.get("USER") or os.environ.get("LOGNAME"), "controller": socket.gethostname(),
                   "awx_job_id": os.environ.get("AWX_JOB_ID") or os.environ.get("JOB_ID")}
            self._rec = Recorder(self._playbook, bool(context.CLIARGS.get("check", False)),
                                 {k: extra.get(k) for k in _REPORT_VARS if isinstance(extra.get(k), (str, int, float))},
                                 who=who)
        return self._rec

    def v2_playbook_on_play_start(self, play):
        self._play = play
        rec = self._recorder(play)
        rec.play_start(to_text(play.get_name()), to_text(getattr(play, "_uuid", None) or play.get_name()),
                       bool(play.serial), time.time())

    def _read_inventory_vars(self, result):
        """deploy_app/deploy_version/deploy_strategy from the inventory, once (extra vars win)."""
        if self._vars_read or self._play is None:
            return
        self._vars_read = True
        try:
            from ansible.template import Templar

            manager = self._play.get_variable_manager()
            variables = manager.get_vars(play=self._play, host=result._host)
            templar = Templar(loader=self._play._loader, variables=variables)
            for name in _REPORT_VARS:
                if name in variables:
                    value = templar.template(variables[name])
                    if isinstance(value, (str, int, float)):
                        self._rec.set_var(name, to_text(value))
        except Exception as exc:  # noqa: BLE001 - a report must never break the run
            self._display.vvv(f"deploy_report: could not read the deploy variables: {exc}")

    def _task_start(self, task, handler=False):
        rec = self._recorder()
        rec.task_start(to_text(task._uuid), to_text(task.name or task.action), _role_name(task), to_text(task.action), _parents(task), time.time(), handler)

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._task_start(task)

    def v2_playbook_on_handler_task_start(self, task):
        self._task_start(task, handler=True)

    def _result(self, result, status, ignored=False):
        if self._rec is None:
            return
        self._read_inventory_vars(result)
        data = result._result if isinstance(result._result, dict) else {}
        delegated = (data.get("_ansible_delegated_vars") or {}).get("ansible_delegated_host")
        if status == "ok" and data.get("changed"):
            status = "changed"
        self._rec.host_result(to_text(result._task._uuid), to_text(result._host.get_name()), status, data,
                              time.time(), ignored=ignored, delegated_to=delegated or None)

    def v2_runner_on_ok(self, result):
        self._result(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._result(result, "failed", ignored=ignore_errors)

    def v2_runner_on_skipped(self, result):
        self._result(result, "skipped")

    def v2_runner_on_unreachable(self, result):
        self._result(result, "unreachable")

    def v2_playbook_on_stats(self, stats):
        rec = self._rec
        if rec is None or not rec.relevant:
            return
        summary = {}
        for host in sorted(stats.processed.keys()):
            summary[host] = stats.summarize(host)
        try:
            report = rec.finish(summary, time.time())
            directory = os.path.abspath(os.path.expanduser(self.get_option("dir")))
            os.makedirs(directory, exist_ok=True)
            stem = os.path.join(directory, file_stem(report))
            texts = {".json": render_json(report)}
            if self.get_option("markdown"):
                texts[".md"] = render_markdown(report)
            if self.get_option("html"):
                texts[".html"] = render_html(report)
            for suffix, text in texts.items():
                with open(stem + suffix, "w", encoding="utf-8") as handle:
                    handle.write(text)
                _point_latest(directory, stem + suffix, suffix)
            self._display.display(f"Deployment report ({report['outcome']}{', plan' if report['plan'] else ''}): "
                                  f"{stem}.json" + "".join(f", {suffix}" for suffix in texts if suffix != ".json"))
        except Exception as exc:  # noqa: BLE001 - say it, never break the run's result
            self._display.warning(f"safedeploy.fleet.deploy_report could not write the report: {to_text(exc)}")
