"""The ssh transport on a real sshd on 127.0.0.1 (run as root: it starts sshd and logs in
as the test user): a command over a fresh connection, over the master connection,
the agent's first install and the check at a later first use.

    .venv/bin/python bench/ssh_transport.py [--repeat N]
"""

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from apsis_lite.config import HostSettings  # noqa: E402
from apsis_lite.hosts import install, ssh  # noqa: E402
from sshd import start_sshd  # noqa: E402


def _ms(samples):
    return f"{statistics.median(samples) * 1000:.1f} ms (median of {len(samples)})"


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="apsis-ssh-bench-"))
    server = start_sshd(folder / "sshd")
    try:
        settings = HostSettings("bench", "127.0.0.1", server.user, server.port, str(server.client_key),
                                ("IdentitiesOnly=yes", f"UserKnownHostsFile={server.known_hosts}"))
        fresh, reused, uploads, checks = [], [], [], []
        for i in range(args.repeat):
            target = ssh.Target(settings, str(folder / f"c{i}"))
            fresh.append(_timed(lambda: ssh.call(target, ["true"])))
            reused.append(_timed(lambda: ssh.call(target, ["true"])))
            ssh.run(target, ["rm", "-rf", ".cache/apsis-lite"])
            uploads.append(_timed(lambda: install.install_agent(target)))
            checks.append(_timed(lambda: install.install_agent(target)))
            ssh.close_master(target)
        print(f"command over a new connection: {_ms(fresh)}")
        print(f"command over the master connection: {_ms(reused)}")
        print(f"agent install, first use (check + upload {len(install.shipped_zipapp().data)} bytes): {_ms(uploads)}")
        print(f"agent check, installed: {_ms(checks)}")
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
