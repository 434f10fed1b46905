# Copyright: (c) 2026, safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""plugins/plugin_utils/_operator.py and the human_gate lookup: can a person answer a prompt in this run?"""

from __future__ import annotations

import subprocess
import sys

import pytest
from ansible_collections.safedeploy.fleet.plugins.plugin_utils import _operator as op


@pytest.mark.parametrize("environ, job", [({"AWX_JOB_ID": "42"}, "42"), ({"JOB_ID": "7"}, "7"),
                                          ({"AWX_JOB_ID": "42", "JOB_ID": "7"}, "42")])
def test_an_awx_or_runner_job_cannot_answer_even_on_its_pseudo_terminal(environ, job):
    assert op.who_can_answer(environ, "/dev/pts/0") == {"answerable": False, "reason": f"AWX job {job}", "job": job}


@pytest.mark.parametrize("stdin", ["/dev/null", "pipe:[123]", "socket:[9]", "/tmp/answers.txt"])
def test_no_terminal_on_standard_input_cannot_answer(stdin):
    verdict = op.who_can_answer({}, stdin)
    assert verdict == {"answerable": False, "reason": "ansible-playbook has no terminal on its standard input", "job": ""}


@pytest.mark.parametrize("stdin", ["/dev/pts/3", "/dev/tty1", "/dev/console"])
def test_a_terminal_can_answer(stdin):
    verdict = op.who_can_answer({"HOME": "/root", "JOB_ID": ""}, stdin)
    assert verdict["answerable"] is True and stdin in verdict["reason"]


def test_unknown_standard_input_leaves_it_to_the_environment():
    assert op.who_can_answer({}, None)["answerable"] is True
    assert op.who_can_answer({"JOB_ID": "1"}, None)["answerable"] is False


PROBE = ("import sys; sys.path[:0] = {path!r}; "
         "from ansible_collections.safedeploy.fleet.plugins.plugin_utils import _operator as op; "
         "print(op.controller_stdin())")


def _run_as_ansible_playbook(tmp_path, main_stdin):
    """A wrapper whose command line names ansible-playbook too (as ``script -c "ansible-playbook ..."``)
    runs a process named ansible-playbook with ``main_stdin``; that one forks a worker (same command line,
    standard input /dev/null, as Ansible's workers), whose child asks where the main process' input points."""
    child = PROBE.format(path=[p for p in sys.path if p])
    main = tmp_path / "ansible-playbook"
    main.write_text(
        "import os, subprocess, sys\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)\n"
        f"    os._exit(subprocess.run([sys.executable, '-c', {child!r}]).returncode)\n"
        "sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))\n")
    wrapper = (f"import subprocess, sys; stdin = open({str(main_stdin)!r}); "
               f"sys.exit(subprocess.run([sys.executable, {str(main)!r}], stdin=stdin).returncode)  # ansible-playbook")
    return subprocess.run([sys.executable, "-c", wrapper], stdin=subprocess.PIPE, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_controller_stdin_is_the_main_ansible_playbook_process(tmp_path):
    answers = tmp_path / "answers"
    answers.write_text("go\n")
    assert _run_as_ansible_playbook(tmp_path, answers) == str(answers)
    assert _run_as_ansible_playbook(tmp_path, "/dev/null") == "/dev/null"


def test_no_ansible_playbook_ancestor_is_unknown():
    assert op.controller_pid(1) is None and op.controller_stdin(1) is None


def test_the_lookup_returns_the_verdict(monkeypatch):
    from ansible_collections.safedeploy.fleet.plugins.lookup import human_gate

    monkeypatch.setenv("AWX_JOB_ID", "99")
    assert human_gate.LookupModule().run([]) == [{"answerable": False, "reason": "AWX job 99", "job": "99"}]
