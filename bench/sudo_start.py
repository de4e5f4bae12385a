#!/usr/bin/env python3
"""What sudo_for_user costs a start: a program started by an agent that is not root, as
itself and as another user through sudo (the check, then the program), timed from the
start request to the program's exit (``true``), N times each.

Run as root: it makes two local users (apsis-sudoer, the agent's; apsis-runas, the
program's) if missing, and a sudoers.d rule that it removes at the end.

    sudo .venv/bin/python bench/sudo_start.py            # 100 starts of each
    sudo .venv/bin/python bench/sudo_start.py --runs 300
"""

import argparse
import json
import os
import pwd
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from apsis_lite.agent.program import Program  # noqa: E402
from apsis_lite.agent.protocol import parse_spec  # noqa: E402

AGENT_USER, PROGRAM_USER = "apsis-sudoer", "apsis-runas"


def _user(name):
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", name], check=True)
        return pwd.getpwnam(name)


def _times(spec, n):
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        program = Program()
        with open(program.spawn(spec), "rb") as pipe:
            pipe.read()
        os.waitpid(program.pid, 0)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def _as_agent_user(agent, fn):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.setgroups([])
        os.setgid(agent.pw_gid)
        os.setuid(agent.pw_uid)
        os.chdir("/")
        os.write(w, json.dumps(fn()).encode())
        os._exit(0)
    os.close(w)
    with open(r, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    return json.loads(data)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    n = parser.parse_args().runs
    if os.geteuid() != 0:
        sys.exit("run as root: it makes the users and the sudoers rule it needs")
    agent, _ = _user(AGENT_USER), _user(PROGRAM_USER)
    fd, rule = tempfile.mkstemp(prefix="apsis-lite-bench-", dir="/etc/sudoers.d")
    os.write(fd, f"{AGENT_USER} ALL=({PROGRAM_USER}) NOPASSWD: ALL\n".encode())
    os.close(fd)
    os.chmod(rule, 0o440)
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "APSIS_RUN_ID": "r1"}
    base = {"argv": ["true"], "env": env, "cwd": "/tmp"}
    try:
        plain = _as_agent_user(agent, lambda: _times(parse_spec(base, "/tmp"), n))
        sudo = _as_agent_user(agent, lambda: _times(parse_spec(
            {**base, "user": PROGRAM_USER, "sudo": ["APSIS_RUN_ID"]}, "/tmp"), n))
    finally:
        os.unlink(rule)
    for name, ms in (("as itself", plain), ("as another user, through sudo", sudo)):
        ms.sort()
        print(f"{name:32} p50 {statistics.median(ms):6.1f} ms   p95 {ms[int(len(ms) * 0.95) - 1]:6.1f} ms"
              f"   ({n} starts of true)")


if __name__ == "__main__":
    main()
