# Copyright: (c) 2026, safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Can a person answer a prompt in this run? (the ``human_gate`` lookup)

Plain Python, no Ansible import. A pause that waits for a person
(``ansible.builtin.pause`` with a prompt: blue_green_pause, the canary's
``{pause: {}}``, an inconclusive analysis with ``*_on_inconclusive: pause``)
is only safe when someone at a terminal can answer it:

* under AWX / Automation Platform / ansible-runner (``AWX_JOB_ID`` or
  ``JOB_ID`` set) nobody types: the prompt waits on AWX's pseudo-terminal
  until the job times out. An approval node of a workflow between the
  strategy's phases is the way there.
* without a terminal on ansible-playbook's standard input (cron, CI,
  ``< /dev/null``) ``ansible.builtin.pause`` does not wait at all: it returns
  at once, as if the person had said yes.

:func:`who_can_answer` decides from the environment and from where
ansible-playbook's standard input points; :func:`controller_stdin` finds it.
"""

from __future__ import annotations

import os

TERMINALS = ("/dev/pts/", "/dev/tty", "/dev/console")


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def _parent(pid):
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses
            return int(handle.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def controller_pid(pid=None):
    """The main ansible-playbook process this one runs under, or None.

    The nearest process whose command line runs ansible-playbook, then up
    while the parent has the very same command line: Ansible's workers are
    forks of the main process (the same command line, their standard input
    /dev/null), and a wrapper such as ``script -c "ansible-playbook ..."`` has
    another one.
    """
    pid = pid or os.getpid()
    for _depth in range(16):
        if pid <= 1:
            return None
        cmdline = _cmdline(pid)
        if "ansible-playbook" in cmdline:
            parent = _parent(pid)
            while parent > 1 and _cmdline(parent) == cmdline:
                pid, parent = parent, _parent(parent)
            return pid
        pid = _parent(pid)
    return None


def controller_stdin(pid=None):
    """Where ansible-playbook's standard input points (``/dev/pts/3``, ``/dev/null``, ``pipe:[...]``), or None when unknown."""
    main = controller_pid(pid)
    if main is None:
        return None
    try:
        return os.readlink(f"/proc/{main}/fd/0")
    except OSError:
        return None


def who_can_answer(environ, stdin):
    """``{"answerable": bool, "reason": str, "job": str}`` for this run.

    ``environ``: the controller's environment; ``stdin``: where
    ansible-playbook's standard input points, or None when that is unknown
    (no /proc): then only the environment decides, and a prompt's own answer
    check (the canary's gate wants "go") is the last line.
    """
    job = str(environ.get("AWX_JOB_ID") or environ.get("JOB_ID") or "")
    if job:
        return {"answerable": False, "reason": f"AWX job {job}", "job": job}
    if stdin is None:
        return {"answerable": True, "reason": "standard input unknown (no /proc): assuming a terminal", "job": ""}
    if stdin.startswith(TERMINALS):
        return {"answerable": True, "reason": f"a terminal ({stdin})", "job": ""}
    return {"answerable": False, "reason": "ansible-playbook has no terminal on its standard input", "job": ""}
