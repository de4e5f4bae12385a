"""Shared by the agent tests and the full-disk tests: an agent started as the server starts it, and specs."""

import os
import signal
import sys
import time
from pathlib import Path

from apsis_lite.agent import AgentClient

ROOT = Path(__file__).resolve().parents[1]
AGENT_COMMAND = [sys.executable, "-m", "apsis_lite.agent"]
MiB = 1024 * 1024


def agent_env() -> dict:
    """The agent must import apsis_lite wherever pytest was started from."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def wait_for(predicate, timeout=30.0, interval=0.01):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {predicate}")
        time.sleep(interval)


def process_gone(pid: int) -> bool:
    """True if no such process or only a zombie is left (our container's
    init may be slow to reap orphans)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):  # ESRCH: it went while being read
        return True
    return stat[stat.rindex(")") + 2] == "Z"


def make_spec(run_id, argv, **overrides) -> dict:
    spec = {
        "run_id": run_id,
        "argv": argv,
        "env": dict(os.environ),
        "cwd": None,
        "timeout": None,
        "stop": {"signal": "SIGTERM", "grace_period": 5.0},
        "output_head": MiB,
        "output_tail": MiB,
        "notify": None,
    }
    spec.update(overrides)
    return spec


def terminate_agent(client: AgentClient) -> None:
    """SIGTERM the agent serving ``client``'s state dir and wait for it."""
    client.close()
    try:
        pid = int((Path(client.state_dir) / "agent.pid").read_text())
    except FileNotFoundError:
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    if client._proc is not None and client._proc.pid == pid:
        client._proc.wait(timeout=30)
    else:
        wait_for(lambda: process_gone(pid))
