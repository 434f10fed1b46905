#!/usr/bin/env python3
"""Build the reproducible demoapp release artifacts used by the lab.

    python tests/lab/build_artifacts.py --out build/artifacts

writes, for every version in VERSIONS,

    demoapp-<version>.tar.gz          demoapp.py + release.json at the root
    demoapp-<version>.tar.gz.sha256   "<hex>  demoapp-<version>.tar.gz"

and index.json {version: {"file", "sha256", "flavour"}}. The archives are
byte-for-byte reproducible (sorted members, fixed mtime, uid/gid 0, fixed
modes, gzip header mtime 0), and files whose content would not change are not
rewritten.
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
APP_SOURCE = os.path.join(HERE, "app", "demoapp.py")
APP = "demoapp"
# Fixed timestamp for every archive member (2024-01-01T00:00:00Z).
MTIME = 1704067200

# version -> (flavour, flavour parameters)
VERSIONS = {
    "1.0.0": ("good", {}),
    "2.0.0": ("good", {}),
    "3.0.0": ("good", {}),
    "2.1.0-never-ready": ("never_ready", {}),
    "2.1.0-crash": ("crash", {"crash_after_seconds": 20.0}),
    "2.1.0-errors": ("errors", {"error_ratio": 0.2}),
    # a subtler bad release: 500 to 5 % of user requests
    "2.1.0-errors5": ("errors", {"error_ratio": 0.05}),
    "2.1.0-slow": ("slow", {"slow_ratio": 0.05, "slow_seconds": 0.8}),
    "2.1.0-degraded": ("degraded", {}),
    "2.0.0-nograceful": ("nograceful", {}),
}
COMMON = {"startup_seconds": 0.5, "grace_seconds": 15.0}


def release_json(version):
    flavour, params = VERSIONS[version]
    data = {"app": APP, "version": version, "flavour": flavour}
    data.update(COMMON)
    data.update(params)
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


def artifact_name(version):
    return f"{APP}-{version}.tar.gz"


def build_archive(members):
    """members: {name: (bytes, mode)} -> reproducible .tar.gz bytes."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in sorted(members):
            data, mode = members[name]
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = MTIME
            info.mode = mode
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.type = tarfile.REGTYPE
            tar.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, compresslevel=9,
                       mtime=0) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def _write_if_changed(path, data):
    """Write atomically unless the file already holds exactly data."""
    try:
        with open(path, "rb") as fh:
            if fh.read() == data:
                return False
    except FileNotFoundError:
        pass
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return True


def build_all(out_dir):
    """Build every artifact into out_dir; return the index
    {version: {"file": name, "sha256": hex, "flavour": flavour}}."""
    os.makedirs(out_dir, exist_ok=True)
    with open(APP_SOURCE, "rb") as fh:
        source = fh.read()
    index = {}
    for version in sorted(VERSIONS):
        name = artifact_name(version)
        data = build_archive({
            "demoapp.py": (source, 0o755),
            "release.json": (release_json(version), 0o644),
        })
        digest = hashlib.sha256(data).hexdigest()
        _write_if_changed(os.path.join(out_dir, name), data)
        _write_if_changed(os.path.join(out_dir, name + ".sha256"),
                          (f"{digest}  {name}\n").encode())
        index[version] = {"file": name, "sha256": digest,
                          "flavour": VERSIONS[version][0]}
    _write_if_changed(os.path.join(out_dir, "index.json"),
                      (json.dumps(index, indent=2, sort_keys=True) + "\n").encode())
    return index


def main(argv=None):
    parser = argparse.ArgumentParser(description="Build demoapp artifacts.")
    parser.add_argument("--out", default="build/artifacts",
                        help="output directory (default: build/artifacts)")
    args = parser.parse_args(argv)
    index = build_all(args.out)
    for version in sorted(index):
        print("{}  {}".format(index[version]["sha256"], index[version]["file"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
