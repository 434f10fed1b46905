# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment:
    # The runtime API options of every haproxy_* module; the argument spec is
    # module_utils/_haproxy.py socket_argument_spec(), so the two agree.
    DOCUMENTATION = r"""
options:
  socket:
    description:
      - The HAProxy runtime API socket (C(stats socket) in haproxy.cfg), either a UNIX socket path or
        C(tcp://host:port).
      - Modules that change something need the socket at C(level admin); reading (state, weights, counters)
        works at any level.
    type: str
    default: /run/haproxy/admin.sock
  timeout:
    description: Timeout in seconds of each runtime API call (connect and answer).
    type: float
    default: 5
"""
