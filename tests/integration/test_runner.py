"""Deploys the way AWX runs them (ansible-runner), and the deployment report they write.

AWX runs a job template with ansible-runner: a private data dir holding the
project, ``env/extravars``, ``env/envvars`` and the inventory; job events and
the exit status come back in ``artifacts/``. The report callback is enabled
the way a job's environment would enable it (``ANSIBLE_CALLBACKS_ENABLED``).
"""

from __future__ import annotations

import glob
import json
import os
import sys

import ansible_runner

from conftest import REPO, ansible_playbook, failed_requests

PLAYBOOKS = os.path.join(REPO, "playbooks")
CALLBACK = "safedeploy.fleet.deploy_report"
FAST = {"release_liveness_seconds": 2, "rolling_analysis": False, "rolling_serial": [3], "rolling_max_unavailable": 3}


def _private_data_dir(tmp_path, inventory: str, extravars: dict, envvars: dict) -> str:
    """The layout AWX gives ansible-runner: project/, inventory/, env/extravars, env/envvars."""
    pdd = tmp_path / "runner"
    (pdd / "env").mkdir(parents=True)
    (pdd / "inventory").mkdir()
    os.symlink(PLAYBOOKS, pdd / "project")
    os.symlink(inventory, pdd / "inventory" / "hosts.yml")
    (pdd / "env" / "extravars").write_text(json.dumps(extravars))
    (pdd / "env" / "envvars").write_text(json.dumps(envvars))
    return str(pdd)


def _report(report_dir) -> dict:
    reports = sorted(p for p in glob.glob(os.path.join(str(report_dir), "*.json")) if not p.endswith("latest.json"))
    assert len(reports) == 1, reports
    with open(reports[0], encoding="utf-8") as handle:
        report = json.load(handle)
    for suffix in (".md", ".html"):
        assert os.path.exists(reports[0][:-len(".json")] + suffix), suffix
    return report


def _slowest(report, count=6) -> str:
    items = [i for section in report["sections"].values() for i in section]
    return ", ".join(f"{i['name'][:50]} {i['seconds']} s" for i in sorted(items, key=lambda i: -i["seconds"])[:count])


def test_rolling_deploy_through_ansible_runner_writes_the_report(fresh_lab, traffic, tmp_path):
    report_dir = tmp_path / "reports"
    envvars = {
        "ANSIBLE_CONFIG": os.path.join(REPO, "ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": os.path.join(REPO, "build", "collections"),
        "ANSIBLE_CALLBACKS_ENABLED": CALLBACK,
        "SAFEDEPLOY_REPORT_DIR": str(report_dir),
        "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
        "AWX_JOB_ID": "4242",
    }
    pdd = _private_data_dir(tmp_path, fresh_lab.inventory, {"deploy_version": "2.0.0", **FAST}, envvars)

    run = ansible_runner.run(private_data_dir=pdd, playbook="deploy.yml", quiet=True, timeout=600)

    stdout = run.stdout.read()
    assert (run.status, run.rc) == ("successful", 0), stdout[-4000:]
    events = list(run.events)
    names = [e["event"] for e in events]
    assert "playbook_on_stats" in names
    rolling_ok = [e for e in events if e["event"] == "runner_on_ok"
                  and e["event_data"].get("role", "").endswith("rolling")]
    assert {e["event_data"]["host"] for e in rolling_ok} == {h.name for h in fresh_lab.app_hosts}
    assert not [e for e in events if e["event"] in ("runner_on_failed", "runner_on_unreachable")
                and not e["event_data"].get("ignore_errors")]
    assert run.stats["failures"] == {} and run.stats["dark"] == {}

    assert failed_requests(traffic) == []
    hosts = [h.name for h in fresh_lab.app_hosts]
    assert {h: fresh_lab.version_on(h) for h in hosts} == dict.fromkeys(hosts, "2.0.0")

    report = _report(report_dir)
    assert (report["kind"], report["strategy"], report["deploy_version"], report["outcome"], report["plan"]) == \
        ("deploy", "rolling", "2.0.0", "success", False)
    taken = [i["name"] for i in report["sections"]["rollback"] if i["outcome"] != "skipped"]
    assert report["failure"] is None and report["rolled_back"] is False and not taken, taken
    # the AWX job id from the job's environment, and the run id the fleet lock was taken with
    assert report["run"]["awx_job_id"] == "4242" and report["run"]["run_id"], report["run"]
    # rolling_serial [3]: two batches of three hosts, every host in one of them, on 2.0.0 after
    assert [len(b["hosts"]) for b in report["batches"]] == [3, 3], report["batches"]
    assert sorted(h for b in report["batches"] for h in b["hosts"]) == sorted(hosts)
    assert all(b["outcome"] == "ok" for b in report["batches"])
    assert {h: (report["hosts"][h]["before"], report["hosts"][h]["after"], len(report["hosts"][h]["batches"]))
            for h in hosts} == dict.fromkeys(hosts, ("1.0.0", "2.0.0", 1))
    sections = report["sections"]
    assert all(sections[s] for s in ("precheck", "deploy", "verify", "finish")), {s: len(v) for s, v in sections.items()}
    assert any(i["module"] == "health_check" and i["outcome"] == "ok" for i in sections["verify"])
    assert any(i["name"].startswith("Lock |") and i["outcome"] == "ok" for i in sections["precheck"])
    assert report["seconds"] > 0 and report["start"] < report["end"]
    print(f"runner: rolling deploy of 2.0.0 in {report['seconds']} s, {len(events)} job events, "
          f"{len(traffic.records)} requests, 0 failed; slowest steps: {_slowest(report)}")


BAD_STEPS = [{"weight": 10}, {"pause": 15}, {"analysis": {"window": "15s"}},
             {"weight": 50}, {"pause": 15}, {"analysis": {"window": "15s"}}]


def test_failed_canary_report_names_the_metric_and_the_rollback_steps(fresh_lab, traffic, tmp_path):
    report_dir = tmp_path / "reports"
    run = ansible_playbook(os.path.join(PLAYBOOKS, "deploy.yml"),
                           extra_vars={"deploy_strategy": "canary", "deploy_version": "2.1.0-errors",
                                       "canary_steps": BAD_STEPS, "canary_analysis_window": "15s", **FAST},
                           env={"SAFEDEPLOY_REPORT_DIR": str(report_dir), "ANSIBLE_CALLBACKS_ENABLED": CALLBACK})
    assert run.returncode != 0, run.stdout[-3000:]
    assert {fresh_lab.version_on(h.name) for h in fresh_lab.app_hosts} == {"1.0.0"}

    report = _report(report_dir)
    assert (report["strategy"], report["deploy_version"], report["outcome"]) == ("canary", "2.1.0-errors", "failed")
    failure = report["failure"]
    assert failure["failed_metrics"] == ["success_rate"], failure
    assert "success_rate = " in failure["message"] and "CANARY ABORTED" in failure["message"], failure
    assert [m["name"] for m in failure["metric_details"]] == ["success_rate"]
    assert [a["verdict"] for a in report["analyses"]] == ["fail"]
    assert report["canary"]["aborted"] and not report["canary"]["promoted"]
    assert [s["requested_percent"] for s in report["canary"]["steps"]] == [10]

    taken = [i for i in report["sections"]["rollback"] if i["outcome"] == "ok"]
    names = " / ".join(" < ".join([i["name"], *reversed(i["within"])]) for i in taken)
    assert report["rolled_back"] is True
    for step in ("Abort | Canary weights to 0", "Abort | Take the canary host out of rotation",
                 "Re-activate the known-good release", "Mark the release we left as bad",
                 "Abort | Every server back to the usual weight", "Abort | Put the canary hosts back in rotation"):
        assert step in names, names
    canary_hosts = report["canary"]["hosts"]
    assert canary_hosts and all(report["hosts"][h]["rolled_back"] for h in canary_hosts)
    assert all(report["hosts"][h]["after"] == "1.0.0" for h in canary_hosts)

    markdown = open(glob.glob(os.path.join(str(report_dir), "*-deploy-*.md"))[0], encoding="utf-8").read()
    assert "| Failed metric | success_rate |" in markdown
    assert "## 4. Rollback steps" in markdown and "Abort \\| Canary weights to 0" in markdown
    # the canary took traffic with 20 % of 500s until the abort; what the report says is the point here
    print(f"failed canary: report in {report['seconds']} s, {len(taken)} rollback steps taken, "
          f"{len(failed_requests(traffic))} failed requests during the canary; slowest steps: {_slowest(report)}")
