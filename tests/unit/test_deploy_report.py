"""The deployment report: classification, the report built from events, JSON and Markdown, and the callback.

The Recorder is fed the events a run produces (plain names, hosts and
dicts, as the callback passes them); the last tests run ansible-playbook on
localhost with the callback enabled and read the files it wrote.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from xml.etree import ElementTree

import pytest
import yaml

from ansible_collections.safedeploy.fleet.plugins.plugin_utils import _report
from ansible_collections.safedeploy.fleet.plugins.plugin_utils._report import Recorder, classify

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROLES = os.path.join(ROOT, "roles")


# -- classification -------------------------------------------------------------------

@pytest.mark.parametrize(("name", "role", "action", "parents", "play", "section"), [
    ("Check the strategy", None, "ansible.builtin.assert", [], "The fleet lock and the pre-checks", "precheck"),
    ("Lock | Take the fleet lock demoapp-fleet", None, "safedeploy.fleet.deploy_lock", [], "x", "precheck"),
    ("Health | Every host is ready", "safedeploy.fleet.preflight", "assert", [], "x", "precheck"),
    # a pre-check's own fix-up stays a pre-check, even under an include naming "restore"
    ("Stranded | No server is left in drain or maint", "safedeploy.fleet.preflight", "assert",
     [("safedeploy.fleet.preflight", "Check no server was left out of rotation by an earlier run (or restore it)")], "x",
     "precheck"),
    ("Validating arguments against arg spec 'main' - Put one version on one host, activate it, restart, verify it; "
     "back to the last good release on failure", "safedeploy.fleet.release", "validate_argument_spec",
     [(None, "Release the new version (restart, readiness, liveness watch)")], "Rolling update, batch by batch", "precheck"),
    ("Remember where this host starts from", "safedeploy.fleet.rolling", "safedeploy.fleet.release_info", [],
     "Rolling update, batch by batch", "deploy"),
    ("Drain | On every load balancer, stop new connections to demoapp/web1", "safedeploy.fleet.lb_member",
     "safedeploy.fleet.haproxy_server", [("safedeploy.fleet.rolling", "Take the host out of rotation")], "Rolling", "deploy"),
    ("Drain | On every load balancer, wait until no session is left on demoapp/web1", "safedeploy.fleet.lb_member",
     "safedeploy.fleet.haproxy_server", [], "Rolling", "deploy"),
    ("Activate the release (atomic switch of current)", "safedeploy.fleet.release", "safedeploy.fleet.release",
     [("safedeploy.fleet.release", "Activate the release, restart and verify it")], "Rolling", "deploy"),
    ("Wait until the service is ready", "safedeploy.fleet.release", "safedeploy.fleet.health_check", [], "Rolling", "verify"),
    # the verdict include says "or return to the last good release": marking good is still a verification
    ("Mark the release good", "safedeploy.fleet.release", "safedeploy.fleet.release",
     [("safedeploy.fleet.release", "Record the verdict, or return to the last good release")], "Rolling", "verify"),
    ("Ready | On every load balancer, wait until the health check reports UP demoapp/web1", "safedeploy.fleet.lb_member",
     "safedeploy.fleet.haproxy_server", [], "Rolling", "verify"),
    ("Analysis | Judge the canary against the stable hosts", "safedeploy.fleet.canary", "safedeploy.fleet.metric_gate",
     [(None, "Step through canary_steps")], "Canary", "verify"),
    ("Analysis | Abort on a failed analysis", "safedeploy.fleet.canary", "set_fact", [], "Canary", "verify"),
    ("Analyse idle | Stop before the switch; nothing was switched", "safedeploy.fleet.blue_green", "fail", [],
     "Blue/green", "verify"),
    ("Step | Send a share of the traffic to the canary, step 1", "safedeploy.fleet.canary",
     "safedeploy.fleet.haproxy_weights", [(None, "Step through canary_steps")], "Canary", "deploy"),
    ("Re-activate the last good release", "safedeploy.fleet.release", "safedeploy.fleet.release",
     [("safedeploy.fleet.release", "Return to the last good release")], "Rolling", "rollback"),
    ("Abort | Canary weights to 0 on every load balancer (traffic back on the stable hosts)", "safedeploy.fleet.canary",
     "safedeploy.fleet.haproxy_weights", [(None, "Abort - weights to 0, canary hosts back to their last good release")],
     "Canary", "rollback"),
    ("Drain | On every load balancer, stop new connections to demoapp/web1", "safedeploy.fleet.lb_member",
     "safedeploy.fleet.haproxy_server", [("safedeploy.fleet.canary", "Abort | Take the canary host out of rotation")],
     "Canary", "rollback"),
    ("Ready | On every load balancer, put back in rotation demoapp/web1", "safedeploy.fleet.lb_member",
     "safedeploy.fleet.haproxy_server", [(None, "Return this host to where it started")],
     "Undo the hosts a stopped rollout had updated", "rollback"),
    ("Wait until the restored release is ready", "safedeploy.fleet.rollback", "safedeploy.fleet.health_check", [],
     "Roll back to the last known-good release", "rollback"),
    ("Switch | Put every load balancer back on blue", "safedeploy.fleet.blue_green", "safedeploy.fleet.haproxy_map",
     [], "Blue/green", "rollback"),
    ("Switch | Make the new pool live - green", "safedeploy.fleet.blue_green", "safedeploy.fleet.haproxy_map",
     [], "Blue/green", "deploy"),
    ("Set live | On every load balancer, the live entry -> green", "safedeploy.fleet.blue_green",
     "safedeploy.fleet.haproxy_map", [("safedeploy.fleet.blue_green", "Switch | Make the new pool live - green")],
     "Blue/green", "deploy"),
    ("Set live | On every load balancer, the live entry -> blue", "safedeploy.fleet.blue_green",
     "safedeploy.fleet.haproxy_map",
     [("safedeploy.fleet.blue_green", "Switch | The live route or the analysis failed, switch every load balancer back to blue")],
     "Blue/green", "rollback"),
    ("Unlock | Release the fleet lock demoapp-fleet", None, "safedeploy.fleet.deploy_lock", [], "x", "finish"),
    ("Read where every host is now", None, "safedeploy.fleet.release_info", [], "Release the lock and report", "finish"),
    ("Fail the run when the rollout stopped", None, "ansible.builtin.fail", [], "Release the lock and report", "finish"),
])
def test_classify(name, role, action, parents, play, section):
    assert classify(name, role, action, parents, play) == section


def _task_names(path):
    with open(path, encoding="utf-8") as handle:
        tasks = yaml.safe_load(handle) or []
    names = []
    for task in tasks:
        names.append(task["name"])
        for key in ("block", "rescue", "always"):
            names += [t["name"] for t in task.get(key, [])]
    return names


@pytest.mark.parametrize(("role", "tasks_file", "parents", "section"), [
    ("preflight", "health.yml", [], "precheck"),
    ("preflight", "stranded.yml", [], "precheck"),
    ("preflight", "artifact.yml", [], "precheck"),
    ("canary", "abort.yml", [(None, "Abort - weights to 0, canary hosts back to their last good release, "
                                    "stable weights restored")], "rollback"),
    ("blue_green", "abort.yml", [(None, "Return the idle pool to its last good release (abort)")], "rollback"),
    ("rollback", "switch.yml", [], "rollback"),
    ("release", "restore.yml", [(None, "Return to the last good release")], "rollback"),
    ("canary", "analysis.yml", [(None, "Step through canary_steps")], "verify"),
    ("blue_green", "verify_idle.yml", [], "verify"),
])
def test_every_task_of_a_task_file_lands_in_its_section(role, tasks_file, parents, section):
    """The roles' own task names, read from the files: a rename that breaks the report fails here."""
    names = _task_names(os.path.join(ROLES, role, "tasks", tasks_file))
    assert names
    wrong = {n: classify(n, f"safedeploy.fleet.{role}", "x", parents, "play") for n in names}
    assert {n: s for n, s in wrong.items() if s != section} == {}


def test_deploy_steps_of_the_rolling_batch_are_not_rollback_steps():
    names = _task_names(os.path.join(ROLES, "rolling", "tasks", "update_host.yml"))
    happy = names[:names.index("Record the failure")]
    assert {n: classify(n, "safedeploy.fleet.rolling", "x", [], "Rolling update, batch by batch") for n in happy
            if classify(n, "safedeploy.fleet.rolling", "x", [], "Rolling update, batch by batch") == "rollback"} == {}
    assert classify("Enable the restored host on every load balancer", "safedeploy.fleet.rolling", "include_role",
                    [], "Rolling update, batch by batch") == "rollback"


def test_failed_metrics_of_a_gate_message():
    message = ("CANARY ABORTED: analysis failed at step 3 (10.0 % of the traffic): fail: success_rate = 80.5% is below "
               "the minimum 99%; latency_p99 = 812 ms is above the maximum 500 ms")
    assert _report.failed_metrics_of(message) == ["success_rate", "latency_p99"]
    assert _report.failed_metrics_of("pass: success_rate = 100% (min 99%)") == []


def test_no_detail_from_a_censored_result():
    assert _report.extract_detail("safedeploy.fleet.metric_gate", {"censored": "the output has been hidden"}) == {}
    assert _report.extract_detail("release_info", {"current": "1.0.0", "last_good": "1.0.0", "secret": "x"}) == \
        {"current": "1.0.0", "last_good": "1.0.0"}


# -- reports built from events ----------------------------------------------------------

class Clock:
    def __init__(self):
        self.t = 1_800_000_000.0

    def __call__(self, step=1.0):
        self.t += step
        return self.t


def _task(rec, clock, key, name, role=None, action="ansible.builtin.debug", parents=(), results=()):
    rec.task_start(key, name, role, action, list(parents), clock())
    for host, status, result in results:
        rec.host_result(key, host, status, result, clock(0.5))


def _rolling_run(fail_host=None):
    clock = Clock()
    rec = Recorder("/x/playbooks/deploy.yml", False, {"deploy_version": "2.0.0"}, now=clock(),
                   who={"user": "alice", "controller": "ctl1", "awx_job_id": None})
    rec.set_var("deploy_app", "demoapp")
    rec.set_var("deploy_version", "9.9.9")  # extra vars win over the inventory
    rec.play_start("The fleet lock and the pre-checks", "p1", False, clock())
    _task(rec, clock, "t1", "Check the strategy", action="ansible.builtin.assert", results=[("web1", "ok", {})])
    _task(rec, clock, "t2", "Note the strategy for the next plays", action="ansible.builtin.set_fact",
          results=[("web1", "ok", {"ansible_facts": {"deploy_strategy_selected": "rolling"}})])
    _task(rec, clock, "t3", "Lock | Take the fleet lock demoapp-fleet", action="safedeploy.fleet.deploy_lock",
          results=[("web1", "changed", {"acquired": True})])
    _task(rec, clock, "t3b", "Lock | Identify this run", action="ansible.builtin.set_fact",
          results=[("web1", "ok", {"ansible_facts": {"_deploy_run_id": "20261127T110257Z-abc"}})])
    _task(rec, clock, "t4", "Health | Every host is ready", "safedeploy.fleet.preflight", "ansible.builtin.assert",
          results=[("web1", "ok", {})])
    # A skipped read of the store (here in the staging play) says nothing of "before".
    rec.play_start("Stage the release on every host before the first batch (rolling_stage)", "p1b", False, clock())
    _task(rec, clock, "s1", "Read where this host is before staging", "safedeploy.fleet.rolling",
          "safedeploy.fleet.release_info", results=[(h, "skipped", {"skipped": True}) for h in ("web1", "web2", "web3")])
    for hosts in (["web1"], ["web2", "web3"]):
        rec.play_start("Rolling update, batch by batch", "p2", True, clock())
        _task(rec, clock, "r0", "Remember the hosts of this batch", "safedeploy.fleet.rolling", "ansible.builtin.set_fact",
              results=[(hosts[0], "ok", {"ansible_facts": {"_rolling_batch_hosts": hosts}})])
        _task(rec, clock, "r1", "Remember where this host starts from", "safedeploy.fleet.rolling",
              "safedeploy.fleet.release_info", results=[(h, "ok", {"current": "1.0.0", "last_good": "1.0.0"}) for h in hosts])
        _task(rec, clock, "r2", "Activate the release (atomic switch of current)", "safedeploy.fleet.release",
              "safedeploy.fleet.release", [("safedeploy.fleet.rolling", "Release the new version")],
              results=[(h, "changed", {"version": "2.0.0", "current": "2.0.0"}) for h in hosts])
        ready = [(h, "failed" if h == fail_host else "ok",
                  {"msg": "web3 never became ready"} if h == fail_host else {}) for h in hosts]
        _task(rec, clock, "r3", "Wait until the service is ready", "safedeploy.fleet.release",
              "safedeploy.fleet.health_check", results=ready)
        if fail_host in hosts:
            _task(rec, clock, "r4", "Re-activate the last good release", "safedeploy.fleet.release",
                  "safedeploy.fleet.release", [("safedeploy.fleet.release", "Return to the last good release"),
                                               ("safedeploy.fleet.rolling", "Release the new version")],
                  results=[(fail_host, "changed", {"version": "1.0.0", "current": "1.0.0"})])
    rec.play_start("Release the lock and report", "p3", False, clock())
    _task(rec, clock, "f1", "Unlock | Release the fleet lock demoapp-fleet", action="safedeploy.fleet.deploy_lock",
          results=[("web1", "changed", {})])
    _task(rec, clock, "f2", "Read where every host is now", action="safedeploy.fleet.release_info",
          results=[(h, "ok", {"current": "1.0.0" if h == fail_host else "2.0.0"}) for h in ("web1", "web2", "web3")])
    if fail_host:
        _task(rec, clock, "f3", "Fail the run when the rollout stopped", action="ansible.builtin.fail",
              results=[("web1", "failed", {"msg": "The rollout of 2.0.0 stopped: web3 never became ready"})])
    stats = {h: {"ok": 5, "failures": 1 if (fail_host and h == "web1") else 0, "unreachable": 0}
             for h in ("web1", "web2", "web3")}
    return rec.finish(stats, clock())


def test_rolling_report_lists_batches_hosts_versions_and_sections():
    report = _rolling_run()
    assert (report["kind"], report["strategy"], report["app"], report["deploy_version"], report["outcome"]) == \
        ("deploy", "rolling", "demoapp", "2.0.0", "success")
    assert report["failure"] is None and not report["rolled_back"] and not report["plan"]
    # who ran it, and the run id the fleet lock was taken with
    assert report["run"] == {"user": "alice", "controller": "ctl1", "run_id": "20261127T110257Z-abc"}
    assert "| Run | user alice, controller ctl1, run_id 20261127T110257Z-abc |" in _report.render_markdown(report)
    assert [(b["index"], b["hosts"], b["outcome"]) for b in report["batches"]] == [
        (1, ["web1"], "ok"), (2, ["web2", "web3"], "ok")]
    assert {h: (v["before"], v["after"], v["batches"]) for h, v in report["hosts"].items()} == {
        "web1": ("1.0.0", "2.0.0", [1]), "web2": ("1.0.0", "2.0.0", [2]), "web3": ("1.0.0", "2.0.0", [2])}
    sections = report["sections"]
    assert [i["name"] for i in sections["precheck"]] == [
        "Check the strategy", "Lock | Take the fleet lock demoapp-fleet", "Health | Every host is ready"]
    # the (skipped) staging read comes before the batches, in no batch
    assert [(i["number"], i["batch"]) for i in sections["deploy"]] == [
        ("2.1", None), ("2.2", 1), ("2.3", 1), ("2.4", 2), ("2.5", 2)]
    assert [i["module"] for i in sections["verify"]] == ["health_check", "health_check"]
    assert sections["rollback"] == []
    assert [i["name"] for i in sections["finish"]] == [
        "Unlock | Release the fleet lock demoapp-fleet", "Read where every host is now"]
    # bookkeeping (set_fact) is not a step
    assert not any(i["module"] == "set_fact" for items in sections.values() for i in items)
    assert json.loads(_report.render_json(report)) == report
    assert report["seconds"] > 0 and report["start"] < report["end"]


def test_failed_rolling_report_has_the_failure_and_the_rollback_steps():
    report = _rolling_run(fail_host="web3")
    assert report["outcome"] == "failed"
    assert report["failure"]["message"] == "The rollout of 2.0.0 stopped: web3 never became ready"
    assert report["failure"]["failed_metrics"] == []
    assert report["rolled_back"] is True
    assert [(i["name"], list(i["hosts"])) for i in report["sections"]["rollback"]] == \
        [("Re-activate the last good release", ["web3"])]
    assert report["batches"][1]["outcome"] == "failed" and report["batches"][1]["failed_hosts"] == ["web3"]
    assert report["hosts"]["web3"]["rolled_back"] and report["hosts"]["web3"]["after"] == "1.0.0"
    markdown = _report.render_markdown(report)
    assert "# Deployment report: demoapp 2.0.0 (rolling) - FAILED" in markdown
    assert "| Failure | The rollout of 2.0.0 stopped: web3 never became ready |" in markdown
    # the step names the task of the rolling role that called the release role
    assert "| 4.1 | release: Re-activate the last good release (in: Release the new version) | 2 | ok: web3 | ok |" \
        in markdown
    assert report["sections"]["rollback"][0]["within"] == ["Release the new version", "Return to the last good release"]


GATE_FAIL = {
    "verdict": "fail", "message": "fail: success_rate = 80.5% is below the minimum 99%",
    "failed_metrics": ["success_rate"], "requests": 152.0,
    "metrics": [{"name": "success_rate", "value": 80.5, "verdict": "fail",
                 "reason": "success_rate = 80.5% is below the minimum 99%", "query": "100 * sum(...)"},
                {"name": "latency_p99", "value": 12.0, "verdict": "pass", "reason": "latency_p99 = 12 ms"}],
}


def _canary_run(check=False):
    clock = Clock()
    rec = Recorder("playbooks/deploy.yml", check, {"deploy_version": "2.1.0-errors", "deploy_strategy": "canary",
                                                   "deploy_app": "demoapp"}, now=clock())
    rec.play_start("The fleet lock and the pre-checks", "p1", False, clock())
    _task(rec, clock, "a", "Lock | Take the fleet lock demoapp-fleet", action="safedeploy.fleet.deploy_lock",
          results=[("web1", "changed", {})])
    rec.play_start("Canary - deploy a few hosts, step the traffic up with analysis, abort or promote", "p2", False, clock())
    canary = "safedeploy.fleet.canary"
    _task(rec, clock, "b", "Inputs | Pick the canary hosts", canary, "ansible.builtin.set_fact",
          results=[("web1", "ok", {"ansible_facts": {"_canary_hosts": ["web1"]}})])
    _task(rec, clock, "c", "Deploy | Remember where each canary host starts from", canary, "safedeploy.fleet.release_info",
          [(None, "Deploy the release to the canary hosts while they are drained")],
          results=[("web1", "ok", {"current": "1.0.0"})])
    step = [(None, "Step through canary_steps")]
    _task(rec, clock, "d", "Step | Send a share of the traffic to the canary, step 1", canary,
          "safedeploy.fleet.haproxy_weights", step, results=[("web1", "changed", {"results": [
              {"requested_percent": 10.0, "achieved_percent": 10.0, "canary_weight": 55, "stable_weight": 99}]})])
    if check:
        _task(rec, clock, "e", "Analysis | Would judge the canary here (check mode)", canary, "ansible.builtin.debug",
              step, results=[("web1", "ok", {"msg": "CANARY STEP 3: would run the analysis over 15s"})])
        _task(rec, clock, "g", "Analysis | Judge the canary against the stable hosts", canary,
              "safedeploy.fleet.metric_gate", step, results=[("web1", "skipped", {})])
        return rec.finish({"web1": {"ok": 4, "failures": 0, "unreachable": 0}}, clock())
    _task(rec, clock, "g", "Analysis | Judge the canary against the stable hosts", canary, "safedeploy.fleet.metric_gate",
          step, results=[("web1", "ok", GATE_FAIL)])
    _task(rec, clock, "h", "Analysis | Stop the steps", canary, "ansible.builtin.fail", step,
          results=[("web1", "failed", {"msg": "analysis failed at step 3: " + GATE_FAIL["message"]})])
    abort = [(None, "Abort - weights to 0, canary hosts back to their last good release, stable weights restored")]
    _task(rec, clock, "i", "Abort | Canary weights to 0 on every load balancer (traffic back on the stable hosts)", canary,
          "safedeploy.fleet.haproxy_weights", abort, results=[("web1", "changed", {})])
    _task(rec, clock, "j", "Re-activate the known-good release", "safedeploy.fleet.rollback", "safedeploy.fleet.release",
          [(canary, "Abort | Re-activate its last good release (the new one is marked bad)")] + abort,
          results=[("web1", "changed", {"current": "1.0.0"}), ("web2", "skipped", {})])
    _task(rec, clock, "k", "Abort | Record the abort for the next plays", canary, "ansible.builtin.set_fact", abort,
          results=[("web1", "ok", {"ansible_facts": {"canary_aborted": True, "canary_abort_reason": "analysis failed"},
                                   "_ansible_delegated_vars": {"ansible_delegated_host": "localhost"}})])
    msg = ("CANARY ABORTED: analysis failed at step 3 (10.0 % of the traffic): fail: success_rate = 80.5% is below "
           "the minimum 99% Canary weights were set to 0; web1 are back on 1.0.0; stable weights restored.")
    _task(rec, clock, "l", "Abort | Stop the run", canary, "ansible.builtin.fail", abort,
          results=[("web1", "failed", {"msg": msg})])
    # deploy.yml's rescue: only the host the run_once abort ran on has its message
    _task(rec, clock, "m", "Stop with the abort", None, "ansible.builtin.fail", [],
          results=[("web1", "failed", {"msg": msg}), ("web2", "failed", {"msg": "the canary failed"})])
    return rec.finish({"web1": {"ok": 9, "failures": 1, "unreachable": 0}, "web2": {"ok": 3, "failures": 1}}, clock())


def test_failed_canary_report_names_the_metric_and_the_rollback_steps():
    report = _canary_run()
    assert (report["strategy"], report["outcome"]) == ("canary", "failed")
    assert report["failure"]["failed_metrics"] == ["success_rate"]
    assert report["failure"]["message"].startswith("CANARY ABORTED") and report["failure"]["host"] == "web1"
    assert report["failure"]["failed_hosts"] == ["web1", "web2"]
    assert report["failure"]["metric_details"] == [{"name": "success_rate", "value": 80.5, "verdict": "fail",
                                                    "reason": "success_rate = 80.5% is below the minimum 99%"}]
    assert [(a["verdict"], a["failed_metrics"]) for a in report["analyses"]] == [("fail", ["success_rate"])]
    assert report["canary"]["hosts"] == ["web1"] and report["canary"]["aborted"] and not report["canary"]["promoted"]
    assert [(s["requested_percent"], s["reached_percent"]) for s in report["canary"]["steps"]] == [(10.0, 10.0)]
    rollback = report["sections"]["rollback"]
    assert [(i["name"], i["outcome"]) for i in rollback] == [
        ("Abort | Canary weights to 0 on every load balancer (traffic back on the stable hosts)", "ok"),
        ("Re-activate the known-good release", "ok"),
        ("Abort | Stop the run", "failed")]
    assert report["hosts"]["web1"]["rolled_back"] and not report["hosts"]["web2"]["rolled_back"]
    assert (report["hosts"]["web1"]["before"], report["hosts"]["web1"]["after"]) == ("1.0.0", "1.0.0")
    markdown = _report.render_markdown(report)
    assert "| Failed metric | success_rate |" in markdown
    assert "| Metric success_rate | success_rate = 80.5% is below the minimum 99% |" in markdown
    assert "## 4. Rollback steps" in markdown and "Abort \\| Canary weights to 0" in markdown
    assert "## Metric analyses" in markdown and "| fail | success_rate |" in markdown


def test_html_page_has_a_timeline_of_batches_steps_and_verdicts():
    report = _rolling_run(fail_host="web3")
    page = _report.render_html(report)
    assert page.startswith("<!DOCTYPE html>") and page.count("<svg") == 1
    ElementTree.fromstring(_report._timeline_svg(report))  # well-formed SVG
    steps = [i for items in report["sections"].values() for i in items if i["outcome"] != "skipped"]
    # one bar per batch and per step that ran, the failed ones red
    assert page.count("<rect") == len(report["batches"]) + len(steps)
    assert page.count('fill="#c0392b"') == 1 + sum(i["outcome"] == "failed" for i in steps)
    assert "The rollout of 2.0.0 stopped: web3 never became ready" in page
    canary_page = _report.render_html(_canary_run())
    # the weight step and the failed verdict are markers on their own rows
    assert "<title>10.0 % requested, 10.0 % reached</title>" in canary_page
    assert "<title>fail: fail: success_rate = 80.5% is below the minimum 99%</title>" in canary_page
    assert "<th>Failed metric</th><td>success_rate</td>" in canary_page


def test_check_mode_report_is_a_plan():
    report = _canary_run(check=True)
    assert report["plan"] is True and report["outcome"] == "success"
    assert [a["verdict"] for a in report["analyses"]] == ["planned"]
    assert _report.file_stem(report).endswith("-deploy-demoapp-2.1.0-errors-plan")
    assert _report.render_markdown(report).startswith("# Deployment plan (check mode: nothing was changed): demoapp")


def test_file_stem_is_a_safe_name():
    report = {"start": "2026-11-27T11:02:57Z", "kind": "deploy", "app": "demo app", "deploy_version": "../2.0.0",
              "plan": False}
    assert _report.file_stem(report) == "20261127T110257Z-deploy-demo_app-.._2.0.0"
    assert "/" not in _report.file_stem(report)


def test_a_run_without_the_collection_is_not_reported():
    rec = Recorder("site.yml")
    rec.play_start("p", "p", False, 1.0)
    rec.task_start("t", "Install nginx", "geerlingguy.nginx", "ansible.builtin.apt", [], 2.0)
    rec.task_start("u", "Configure | haproxy.cfg", "safedeploy.fleet.haproxy", "ansible.builtin.template", [], 3.0)
    assert rec.relevant is False
    rec.task_start("v", "Read the store", None, "safedeploy.fleet.release_info", [], 4.0)
    assert rec.relevant is True


# -- the callback, in real ansible-playbook runs on localhost ----------------------------

PLAYBOOK = """
- name: A host with an empty release store
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    deploy_app: demoapp
    deploy_app_root: "{{ store }}"
  tasks:
    - name: Lock | Check the inputs
      ansible.builtin.assert:
        that: deploy_app | length > 0
        quiet: true
    - name: Read where this host is
      safedeploy.fleet.release_info:
        path: "{{ store }}"
    - name: Return to the newest known-good release
      ansible.builtin.include_role:
        name: safedeploy.fleet.rollback
"""


def _ansible_playbook(tmp_path, *args):
    (tmp_path / "rollback.yml").write_text(PLAYBOOK)
    env = {**os.environ, "ANSIBLE_CONFIG": os.path.join(ROOT, "ansible.cfg"),
           "ANSIBLE_CALLBACKS_ENABLED": "safedeploy.fleet.deploy_report",
           "SAFEDEPLOY_REPORT_DIR": str(tmp_path / "reports"), "ANSIBLE_FORCE_COLOR": "0",
           "ANSIBLE_LOCALHOST_WARNING": "0", "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0"}
    argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,",
            str(tmp_path / "rollback.yml"), "-e", json.dumps({"store": str(tmp_path / "store"),
                                                              "ansible_python_interpreter": sys.executable}), *args]
    return subprocess.run(argv, env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=300, check=False)


def _written(tmp_path):
    files = sorted(glob.glob(str(tmp_path / "reports" / "*")))
    jsons = [f for f in files if f.endswith(".json") and not f.endswith("latest.json")]
    assert len(jsons) == 1, files
    for suffix in (".md", ".html"):
        assert jsons[0][:-5] + suffix in files
        assert os.readlink(str(tmp_path / "reports" / f"latest{suffix}")) == os.path.basename(jsons[0][:-5] + suffix)
    with open(jsons[0], encoding="utf-8") as handle:
        return json.load(handle), jsons[0]


def test_callback_writes_the_report_of_a_failed_rollback(tmp_path):
    run = _ansible_playbook(tmp_path)
    assert run.returncode == 2, run.stdout[-3000:]
    assert "Deployment report (failed): " in run.stdout
    report, path = _written(tmp_path)
    assert os.path.basename(path).endswith("-rollback-demoapp.json")
    assert (report["kind"], report["outcome"], report["plan"], report["app"]) == ("rollback", "failed", False, "demoapp")
    assert "localhost: no release to roll back to" in report["failure"]["message"]
    assert [i["name"] for i in report["sections"]["precheck"]][:1] == ["Lock | Check the inputs"]
    rollback = {i["name"]: i["outcome"] for i in report["sections"]["rollback"]}
    assert rollback["Read the release store"] == "ok"
    assert rollback["Fail when there is nothing good to return to"] == "failed"
    assert report["hosts"]["localhost"]["outcome"] == "failed"
    assert report["hosts"]["localhost"]["stats"]["failures"] == 1


def test_callback_in_check_mode_writes_a_plan(tmp_path):
    run = _ansible_playbook(tmp_path, "--check")
    assert "Deployment report (failed, plan): " in run.stdout, run.stdout[-3000:]
    report, path = _written(tmp_path)
    assert report["plan"] is True and path.endswith("-plan.json")
    with open(path[:-5] + ".md", encoding="utf-8") as handle:
        assert handle.read().startswith("# Rollback plan (check mode: nothing was changed): demoapp")
