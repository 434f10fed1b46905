"""Stand-in for ansible-test's pip bootstrap script.

ansible-test downloads get-pip.py from ci-files.testing.ansible.com, a host
this project's machines cannot reach.  The same job is done with the
standard library's ensurepip, then pip installs the exact pip version
ansible-test asked for from the package index that is configured.
"""

import ensurepip
import os
import subprocess
import sys

env = dict(os.environ)
ensurepip.bootstrap(upgrade=True)
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
# ensurepip points PIP_CONFIG_FILE at /dev/null for itself; the real install
# must see the machine's pip configuration (index, certificates).
subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", *args], env=env)
