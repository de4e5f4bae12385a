"""Local programs: turn a bound program into a run folder and hand it to the agent.

The server never forks (it holds SQLite connections); the agent forks a
shepherd per run, and everything the shepherd knows is in the run folder,
which is how a restarted server finds its runs again.
"""

import json
import os
import shutil
import sys

from . import agent
from .runs import format_run_id


def agent_command():
    """The argv that starts an agent, from source or from a PyInstaller bundle."""
    if getattr(sys, "frozen", False):
        return [sys.executable, "agent"]
    return [sys.executable, "-m", "apsis_lite.agent"]


class LocalLauncher:
    """Starts, stops and collects local runs through the agent's run folders."""

    def __init__(self, config):
        self.config = config
        os.makedirs(config.runs_dir, exist_ok=True)
        self.client = agent.AgentClient(config.agent_dir, agent_command())
        # The server's environment, read once: every run starts from it.
        self.base_env = dict(os.environ)

    def run_dir(self, run_id) -> str:
        return os.path.join(self.config.runs_dir, format_run_id(run_id))

    def spec(self, run, program) -> dict:
        env = dict(self.base_env)
        env.update(program.env or {})
        env["APSIS_RUN_ID"] = format_run_id(run.run_id)
        env["APSIS_JOB_ID"] = run.job_id
        env["APSIS_ARGS"] = json.dumps(run.args, sort_keys=True)
        for name, value in run.args.items():
            env[f"APSIS_ARG_{name}"] = str(value)
        return {
            "run_id": format_run_id(run.run_id),
            "argv": program.argv(),
            "env": env,
            # Like cron: a program without a cwd runs in the home directory.
            "cwd": program.cwd or os.path.expanduser("~"),
            "timeout": program.timeout,
            "stop": program.stop,
            "output_head": self.config.output_head,
            "output_tail": self.config.output_tail,
            "notify": self.config.notify_path,
        }

    def prepare(self, run, program):
        """Write the run folder and its spec (the intent to start)."""
        path = self.run_dir(run.run_id)
        os.makedirs(path, exist_ok=True)
        agent.write_spec(path, self.spec(run, program))
        return path

    def start(self, run_ids):
        """Ask the agent to start the prepared runs; returns {run_id: error message} for failures."""
        results = self.client.start_many([self.run_dir(r) for r in run_ids])
        return {r: str(res) for r, res in zip(run_ids, results) if isinstance(res, Exception)}

    def result(self, run_id):
        return agent.read_json(self.run_dir(run_id), "result.json")

    def pid_info(self, run_id):
        return agent.read_json(self.run_dir(run_id), "pid.json")

    def claimed(self, run_id) -> bool:
        path = self.run_dir(run_id)
        return (os.path.exists(os.path.join(path, "spec.claimed.json"))
                or os.path.exists(os.path.join(path, "shepherd.json")))

    def spec_pending_since(self, run_id):
        """mtime of an unclaimed spec, or None."""
        try:
            return os.path.getmtime(os.path.join(self.run_dir(run_id), "spec.json"))
        except OSError:
            return None

    def is_alive(self, run_id) -> bool:
        return agent.is_alive(self.run_dir(run_id))

    def revoke(self, run_id) -> bool:
        """True if the run provably never started (its spec was unclaimed or never written)."""
        path = self.run_dir(run_id)
        if agent.revoke(path):
            return True
        # No spec left to claim and no sign of a shepherd: it was never
        # written, or was revoked before; either way nothing started it.
        return not self.claimed(run_id) and not os.path.exists(os.path.join(path, "spec.json"))

    def request_stop(self, run_id, signal_name, grace_period) -> bool:
        return agent.request_stop(self.run_dir(run_id), signal_name, grace_period)

    def send_signal(self, run_id, signal_name) -> bool:
        return agent.send_signal(self.run_dir(run_id), signal_name)

    def output_path(self, run_id) -> str:
        return os.path.join(self.run_dir(run_id), "output")

    def read_live_output(self, run_id, offset, size):
        """Bytes of a running run's output file from ``offset`` (b"" if none yet)."""
        try:
            with open(self.output_path(run_id), "rb") as f:
                f.seek(offset)
                return f.read(size)
        except OSError:
            return b""

    def remove(self, run_id):
        shutil.rmtree(self.run_dir(run_id), ignore_errors=True)

    def close(self):
        self.client.close()
