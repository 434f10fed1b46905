# Copyright: safedeploy.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Durable small-file writes shared by the release store and the deploy lock.

Standard library only: these run on target hosts (Python 3.9+).
"""

from __future__ import annotations

import json
import os
import tempfile


def fsync_dir(path):
    """Persist a directory's entries (a rename, an unlink); best effort."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # not every filesystem supports fsync on directories
    finally:
        os.close(fd)


def write_json_atomic(path, data, prefix, suffix="", mode=0o644):
    """Write ``data`` as JSON to ``path`` so readers never see half a file.

    A temporary file named ``prefix...suffix`` beside ``path`` is written and
    fsynced, then renamed over ``path``, then the directory is fsynced. On
    any failure the temporary file is removed and the error re-raised.
    """
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, sort_keys=True)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(directory)
