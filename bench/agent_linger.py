#!/usr/bin/env python3
"""How long the agent stays after the server stops (the figure in docs/install.md).

Starts a server, runs one short program through it, stops the server with
SIGTERM right after, and times until the agent process is gone; then checks
that none of its shepherds is left. With ``--wait S``, the server stops S
seconds after the run instead. Takes about 7 minutes, so it is not in
``run_all.py``.

    bench/agent_linger.py
    bench/agent_linger.py --wait 150
"""

import argparse
import os
import signal
import subprocess
import sys
import time

from common import ROOT, Server, cleanup, figure, note, tmpdir


def alive(pid):
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wait", type=float, default=0.0, metavar="S",
                        help="seconds between the run's end and stopping the server")
    args = parser.parse_args()
    base = tmpdir("ab-linger-")
    jobs, data = os.path.join(base, "jobs"), os.path.join(base, "data")
    os.makedirs(jobs)
    server = Server(jobs, data)
    try:
        server.start()
        with open(os.path.join(data, "token")) as f:
            env = dict(os.environ, APSIS_LITE_URL=server.url, APSIS_LITE_TOKEN=f.read().strip())
        subprocess.run([sys.executable, "-m", "apsis_lite", "run", "--", "true"], env=env, cwd=ROOT,
                       check=True, capture_output=True)
        ended = time.monotonic()
        agent = server.agent_pid()
        time.sleep(args.wait)
        # Stopped here, not by server.stop(), which would stop the agent too.
        server.proc.send_signal(signal.SIGTERM)
        server.proc.wait(60)
        stopped = time.monotonic()
        while alive(agent):
            time.sleep(0.5)
        gone = time.monotonic()
        figure("agent gone after the server stopped", gone - stopped, "s")
        figure("agent gone after the last run ended", gone - ended, "s")
        left = subprocess.run(["pgrep", "-f", data], capture_output=True, text=True).stdout.split()
        note(f"processes left for {data}: {' '.join(left) or 'none'}")
    finally:
        server.stop()
        cleanup(base)


if __name__ == "__main__":
    main()
