"""Build and cache the Debian root every lab machine boots from.

One debootstrap root serves every host: machines boot it with
``--volatile=overlay``, so their writes stay in memory and the cache is never
modified.  A root is trusted only when its completion marker carries the
hash of the recipe below; anything else (a crash half-way, an older recipe)
is removed and rebuilt.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time

CACHE_DIR = os.environ.get("LAB_CACHE_DIR", "/var/cache/safedeploy-lab")
SUITE = "bookworm"
PACKAGES = [
    "systemd", "systemd-sysv", "dbus", "openssh-server", "python3",
    "iproute2", "haproxy", "prometheus",
]
# Services the packages enable that a lab host must not start on its own:
# lb and mon hosts get theirs through systemd.wants= at boot.
DISABLE = [
    "haproxy.service", "prometheus.service", "apt-daily.timer",
    "apt-daily-upgrade.timer", "dpkg-db-backup.timer", "e2scrub_all.timer",
    "fstrim.timer", "e2scrub_reap.service", "systemd-pstore.service",
    "getty@.service",
]
MASK = ["console-getty.service", "systemd-networkd.service",
        "systemd-resolved.service", "systemd-timesyncd.service"]
MARKER = ".safedeploy-rootfs"


def recipe_hash() -> str:
    recipe = repr((SUITE, PACKAGES, DISABLE, MASK, 2)).encode()
    return hashlib.sha256(recipe).hexdigest()[:16]


def rootfs_path() -> str:
    return os.path.join(CACHE_DIR, f"rootfs-{SUITE}")


def is_complete(path: str) -> bool:
    try:
        with open(os.path.join(path, MARKER), encoding="ascii") as handle:
            return handle.read().strip() == recipe_hash()
    except OSError:
        return False


def _chroot(root: str, *argv: str) -> None:
    subprocess.run(["chroot", root, *argv], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _prepare(root: str) -> None:
    _chroot(root, "systemctl", "disable", *DISABLE)
    _chroot(root, "systemctl", "mask", *MASK)
    os.makedirs(os.path.join(root, "root/.ssh"), mode=0o700, exist_ok=True)
    os.chmod(os.path.join(root, "root/.ssh"), 0o700)
    # nspawn sets the hostname and machine id per machine.
    for name in ("etc/hostname",):
        try:
            os.unlink(os.path.join(root, name))
        except FileNotFoundError:
            pass
    with open(os.path.join(root, "etc/machine-id"), "w", encoding="ascii"):
        pass
    # Quieter, faster logins for Ansible.
    with open(os.path.join(root, "etc/ssh/sshd_config.d/lab.conf"), "w",
              encoding="ascii") as handle:
        handle.write("UseDNS no\nPasswordAuthentication no\n"
                     "PermitRootLogin prohibit-password\nMaxStartups 100:30:200\n"
                     "MaxSessions 50\n")


@contextlib.contextmanager
def _build_lock():
    """One build at a time: labs started side by side (one per test worker)
    all need the root, and a second builder would remove the first one's
    staging folder as a crashed build's leftover."""
    os.makedirs(CACHE_DIR, exist_ok=True)
    with open(os.path.join(CACHE_DIR, ".build.lock"), "w", encoding="ascii") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_rootfs(log=print) -> str:
    """Return the path of a complete cached root, building it if needed."""
    path = rootfs_path()
    if is_complete(path):
        return path
    with _build_lock():
        if is_complete(path):  # built by another lab while this one waited
            return path
        return _build(path, log)


def _build(path: str, log) -> str:
    if os.path.exists(path):
        log(f"lab: cached root {path} is incomplete or from an older recipe; rebuilding it")
        shutil.rmtree(path)
    os.makedirs(CACHE_DIR, exist_ok=True)
    # Leftovers of builds that crashed are never trusted.
    for entry in os.listdir(CACHE_DIR):
        if entry.startswith(os.path.basename(path) + ".partial-"):
            shutil.rmtree(os.path.join(CACHE_DIR, entry), ignore_errors=True)
    staging = f"{path}.partial-{os.getpid()}"
    log(f"lab: building the Debian {SUITE} root once (about a minute) in {path}")
    started = time.monotonic()
    argv = ["debootstrap", "--variant=minbase",
            "--include=" + ",".join(PACKAGES), SUITE, staging]
    mirror = os.environ.get("LAB_DEBIAN_MIRROR")
    if mirror:
        argv.append(mirror)
    result = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        tail = "\n".join(result.stdout.splitlines()[-15:])
        raise RuntimeError(f"debootstrap failed (exit {result.returncode}):\n{tail}")
    try:
        _prepare(staging)
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise RuntimeError(f"preparing the root failed: {exc} {exc.stderr!r}") from exc
    with open(os.path.join(staging, MARKER), "w", encoding="ascii") as handle:
        handle.write(recipe_hash() + "\n")
    os.rename(staging, path)
    log(f"lab: root built in {time.monotonic() - started:.0f} s")
    return path


if __name__ == "__main__":
    print(ensure_rootfs(log=lambda m: print(m, file=sys.stderr)))
