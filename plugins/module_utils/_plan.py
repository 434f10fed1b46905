# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Rolling batch plans: Ansible's ``serial`` arithmetic plus a capacity guard.

Pure computation, Python standard library only.

``serial_batches`` reproduces what ``ansible-playbook`` does with a play's
``serial`` keyword (``PlaybookExecutor._get_serialized_batches``):

- ``serial`` is an int, a percentage string (``"30%"``) or a list of them;
  each list item is used for one batch in turn and the last one repeats;
- a percentage is of the total number of hosts in the play, rounded down,
  but at least 1;
- a size of 0 or less (or no serial at all) means all remaining hosts in one
  batch.

``would_abort`` reproduces ``max_fail_percentage`` (the linear strategy aborts
when ``failed / batch_size > max_fail_percentage / 100``) and the rule that a
play stops when every host of a batch failed.

``plan_batches`` adds the capacity guard: no batch may take more than
``max_unavailable`` servers of the backend out of rotation (counting those
already down), and at least one server must stay up in every batch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_PERCENT_RE = re.compile(r"^\s*(-?\d+)\s*%\s*$")
_INT_RE = re.compile(r"^\s*(-?\d+)\s*$")


class PlanError(ValueError):
    """Base class of every batch plan error."""


class SerialValueError(PlanError):
    """A ``serial`` value cannot be understood."""


class CapacityValueError(PlanError):
    """``max_unavailable``, ``backend_size`` or ``currently_down`` is wrong."""


class HostListError(PlanError):
    """The host list is wrong."""


class CapacityRefusedError(PlanError):
    """A batch would take too many servers out of rotation.

    ``batch_number`` is 1-based; ``out`` lists the servers that would be
    out of rotation during that batch (the batch plus those already down).
    """

    def __init__(self, message, batch_number, out, allowed, backend_size, batches):
        super().__init__(message)
        self.batch_number = batch_number
        self.out = out
        self.allowed = allowed
        self.backend_size = backend_size
        self.batches = batches


@dataclass
class BatchPlan:
    batches: list
    batch_sizes: list
    max_unavailable_count: int
    backend_size: int
    currently_down: list = field(default_factory=list)
    out_of_rotation: list = field(default_factory=list)

    def as_dict(self):
        return {
            "batches": [list(b) for b in self.batches],
            "batch_sizes": list(self.batch_sizes),
            "max_unavailable_count": self.max_unavailable_count,
            "backend_size": self.backend_size,
            "currently_down": list(self.currently_down),
            "out_of_rotation": [list(b) for b in self.out_of_rotation],
        }


def _parse_percent(value):
    """Return the int percentage of ``"N%"`` or None when ``value`` is no percentage."""
    if isinstance(value, str):
        match = _PERCENT_RE.match(value)
        if match:
            return int(match.group(1))
    return None


def serial_item_to_int(value, num_hosts):
    """One ``serial`` item as a batch size, exactly like ``ansible.utils.helpers.pct_to_int``.

    ``"N%"`` -> ``int(N / 100 * num_hosts) or 1``; an int (or a numeric
    string) -> itself. A result <= 0 means "all remaining hosts".
    """
    if isinstance(value, bool):
        raise SerialValueError(f"serial value {value!r} is a boolean, expected an int or a percentage like '30%'")
    percent = _parse_percent(value)
    if percent is not None:
        return int((percent / 100.0) * num_hosts) or 1
    if isinstance(value, str) and value.strip().endswith("%"):
        raise SerialValueError(
            f"serial value {value!r} is not a whole percentage (expected e.g. '30%')")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INT_RE.match(value):
        return int(value)
    raise SerialValueError(
        f"serial value {value!r} is neither an integer nor a percentage like '30%'")


def normalize_serial(serial):
    """``serial`` as a list of items (None or [] -> [] meaning one batch)."""
    if serial is None:
        return []
    if isinstance(serial, (list, tuple)):
        items = list(serial)
    else:
        items = [serial]
    for item in items:
        serial_item_to_int(item, 1)  # validate early, with the offending value
    return items


def _unique_hosts(hosts):
    if isinstance(hosts, str) or not isinstance(hosts, (list, tuple)):
        raise HostListError(f"hosts must be a list of host names, got {hosts!r}")
    seen = set()
    result = []
    for host in hosts:
        if not isinstance(host, str) or not host:
            raise HostListError(f"host names must be non-empty strings, got {host!r}")
        if host not in seen:
            seen.add(host)
            result.append(host)
    return result


def serial_batches(hosts, serial=None):
    """Split ``hosts`` (ordered; duplicates dropped) into batches like Ansible's ``serial``."""
    remaining = _unique_hosts(hosts)
    total = len(remaining)
    items = normalize_serial(serial) or [-1]
    batches = []
    index = 0
    while remaining:
        size = serial_item_to_int(items[index], total)
        if size <= 0:
            batches.append(remaining)
            break
        batches.append(remaining[:size])
        remaining = remaining[size:]
        index = min(index + 1, len(items) - 1)
    return batches


def max_unavailable_to_int(max_unavailable, backend_size):
    """``max_unavailable`` (int or ``"N%"`` of the backend) as a server count.

    A percentage is rounded down but is at least 1. The result must be >= 1.
    """
    if isinstance(max_unavailable, bool):
        raise CapacityValueError(f"max_unavailable {max_unavailable!r} is a boolean, expected an int or 'N%'")
    percent = _parse_percent(max_unavailable)
    if percent is not None:
        if percent < 0 or percent > 100:
            raise CapacityValueError(f"max_unavailable {max_unavailable!r} is not a percentage between 0% and 100%")
        count = int((percent / 100.0) * backend_size) or 1
    elif isinstance(max_unavailable, int):
        count = max_unavailable
    elif isinstance(max_unavailable, str) and _INT_RE.match(max_unavailable):
        count = int(max_unavailable)
    else:
        raise CapacityValueError(
            f"max_unavailable {max_unavailable!r} is neither an integer nor a percentage like '25%'")
    if count < 1:
        raise CapacityValueError(
            f"max_unavailable {max_unavailable!r} allows no server to be out of rotation; it must allow at least 1")
    return count


def _describe_allowance(max_unavailable, count):
    if _parse_percent(max_unavailable) is not None:
        return f"{count} ({str(max_unavailable).strip()})"
    return f"{count}"


def plan_batches(hosts, serial=None, backend_size=None, max_unavailable="25%", currently_down=None,
                 max_unavailable_name="max_unavailable"):
    """Compute the batches and refuse a plan that would cost too much capacity.

    :param hosts: ordered host names of the play (duplicates dropped).
    :param serial: int, ``"N%"`` or a list of them (Ansible semantics).
    :param backend_size: servers in the backend; default ``len(hosts)``.
    :param max_unavailable: int or ``"N%"`` of ``backend_size``.
    :param currently_down: servers of the backend already out of rotation.
    :param max_unavailable_name: how to call the limit in the refusal
        message (e.g. ``rolling_max_unavailable``).
    :returns: BatchPlan
    :raises CapacityRefusedError: naming the first offending batch.
    """
    unique = _unique_hosts(hosts)
    down = _unique_hosts(list(currently_down or []))
    if backend_size is None:
        backend_size = len(unique)
    if isinstance(backend_size, bool) or not isinstance(backend_size, int):
        raise CapacityValueError(f"backend_size must be an integer, got {backend_size!r}")
    known = len(set(unique) | set(down))
    if backend_size < 1:
        raise CapacityValueError(f"backend_size must be at least 1, got {backend_size!r}")
    if backend_size < known:
        raise CapacityValueError(
            f"backend_size {backend_size} is smaller than the {known} distinct servers named in hosts "
            "and currently_down")
    allowed = max_unavailable_to_int(max_unavailable, backend_size)
    batches = serial_batches(unique, serial)

    out_of_rotation = []
    for number, batch in enumerate(batches, start=1):
        extra_down = [s for s in down if s not in batch]
        out = list(batch) + extra_down
        out_of_rotation.append(out)
        count = len(out)
        listing = ", ".join(batch)
        if extra_down:
            listing += "; already down: " + ", ".join(extra_down)
        reason = None
        if count > allowed:
            reason = f"{max_unavailable_name} allows {_describe_allowance(max_unavailable, allowed)}"
        elif count >= backend_size:
            reason = "at least one server must stay in rotation"
        if reason:
            message = (f"batch {number} would take {count} of {backend_size} servers out of rotation "
                       f"({listing}); {reason}")
            raise CapacityRefusedError(message, number, out, allowed, backend_size, batches)
    return BatchPlan(
        batches=batches,
        batch_sizes=[len(b) for b in batches],
        max_unavailable_count=allowed,
        backend_size=backend_size,
        currently_down=down,
        out_of_rotation=out_of_rotation,
    )


def would_abort(batch_size, failed, max_fail_percentage=None):
    """Whether Ansible stops the play after ``failed`` of ``batch_size`` hosts failed.

    - With ``max_fail_percentage`` set, the linear strategy aborts when
      ``failed / batch_size > max_fail_percentage / 100`` (strictly greater:
      0 tolerates no failure, 100 never aborts on the percentage alone).
    - Whatever ``max_fail_percentage`` says, ``ansible-playbook`` stops
      when every host of a batch failed (or was unreachable).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise PlanError(f"batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(failed, bool) or not isinstance(failed, int) or failed < 0 or failed > batch_size:
        raise PlanError(f"failed must be an integer between 0 and batch_size {batch_size}, got {failed!r}")
    if failed == batch_size:
        return True
    if max_fail_percentage is None:
        return False
    if isinstance(max_fail_percentage, bool) or not isinstance(max_fail_percentage, (int, float)):
        raise PlanError(f"max_fail_percentage must be a number, got {max_fail_percentage!r}")
    if max_fail_percentage < 0 or max_fail_percentage > 100:
        raise PlanError(f"max_fail_percentage must be between 0 and 100, got {max_fail_percentage!r}")
    return (failed / batch_size) > (max_fail_percentage / 100.0)


def max_failures_tolerated(batch_size, max_fail_percentage=None):
    """How many hosts of a batch may fail without stopping the play."""
    tolerated = 0
    for failed in range(batch_size + 1):
        if would_abort(batch_size, failed, max_fail_percentage):
            break
        tolerated = failed
    return tolerated


def format_plan(batches, currently_down=None, backend_size=None, max_unavailable_count=None):
    """A human-readable plan, one line per batch."""
    batches = [list(b) for b in batches]
    total = sum(len(b) for b in batches)
    host_word = "host" if total == 1 else "hosts"
    batch_word = "batch" if len(batches) == 1 else "batches"
    lines = [f"Rolling plan: {total} {host_word} in {len(batches)} {batch_word}"]
    details = []
    if backend_size is not None:
        details.append(f"backend of {backend_size} servers")
    if max_unavailable_count is not None:
        details.append(f"at most {max_unavailable_count} out of rotation")
    down = list(currently_down or [])
    if down:
        details.append("already down: {}".format(", ".join(down)))
    if details:
        lines[0] += " (" + "; ".join(details) + ")"
    width = len(str(len(batches)))
    done = 0
    for number, batch in enumerate(batches, start=1):
        done += len(batch)
        size_width = len(str(total))
        word = "host " if len(batch) == 1 else "hosts"
        lines.append(f"  batch {number:>{width}}/{len(batches)}  {len(batch):>{size_width}} {word}  "
                     f"{', '.join(batch)}  [{done}/{total} done after]")
    return "\n".join(lines)
