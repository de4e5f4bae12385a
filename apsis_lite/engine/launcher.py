"""Local programs: turn a bound program into a run folder and hand it to the agent.

The server never forks (it holds SQLite connections); the agent forks a
shepherd per run, and everything the shepherd knows is in the run folder,
which is how a restarted server finds its runs again.

Run folders are recycled. A run's files are written atomically (a temporary
file renamed into place), and every file creation allocates an inode, which
on some file systems costs far more than a rename: ext4 without a journal,
for one, skips every inode freed in the last minutes when it allocates one,
so a scheduler that creates and deletes half a dozen files per run makes
each creation slower the busier it is (a millisecond and more at 100 runs a
second). So a finished run's folder, once its result and output are in the
database, is emptied by renames (each file back to the temporary name it will
be written under next time, the output truncated) and kept in
``runs/.spare``; the next run's folder is a spare renamed into place, and
neither the server nor the shepherd creates a file on the way from due to
started. Folders prepared ahead with no spare to hand get the same empty files
made for them then, before their due time.
"""

import errno
import itertools
import json
import logging
import os
import shutil
import sys

from apsis_lite import agent
from apsis_lite.agent.files import program_umask
from apsis_lite.model.runs import format_run_id, parse_run_id

log = logging.getLogger("apsis_lite.engine")

#: Where emptied run folders wait for their next run.
SPARE_DIR = ".spare"
#: Spare folders kept; beyond this a finished run's folder is deleted. Each is
#: an empty folder with five empty files (inodes, no data).
MAX_SPARES = 4096
#: The files a run writes, by the name each is created under: the atomic
#: writes open ``NAME.tmp`` and rename it, and the output is written in place.
_WRITTEN_AS = {
    agent.SPEC: agent.SPEC + ".tmp",
    agent.SPEC_CLAIMED: agent.SPEC + ".tmp",
    agent.SPEC_REVOKED: agent.SPEC + ".tmp",
    agent.SHEPHERD: agent.SHEPHERD + ".tmp",
    agent.PID: agent.PID + ".tmp",
    agent.RESULT: agent.RESULT + ".tmp",
}
#: What a spare folder holds, all empty or about to be truncated when written.
_SPARE_FILES = frozenset(set(_WRITTEN_AS.values()) | {agent.OUTPUT})


def agent_command():
    """The argv that starts an agent, from source or from a PyInstaller bundle."""
    if getattr(sys, "frozen", False):
        return [sys.executable, "agent"]
    return [sys.executable, "-m", "apsis_lite.agent"]


class LocalLauncher:
    """Starts, stops and collects local runs through the agent's run folders."""

    #: Whether programs with ``host:`` can be started (see HostLauncher); never here.
    runs_remote = False

    def __init__(self, config):
        self.config = config
        os.makedirs(config.runs_dir, mode=0o700, exist_ok=True)
        self.client = agent.AgentClient(config.agent_dir, agent_command())
        # The server's environment, read once: every run starts from it.
        self.base_env = dict(os.environ)
        self.spare_dir = os.path.join(config.runs_dir, SPARE_DIR)
        os.makedirs(self.spare_dir, mode=0o700, exist_ok=True)
        # Checked again when taken (see _take_spare), so a spare left in any
        # state by a crash or a power cut is never trusted blindly.
        self.spares = sorted(os.listdir(self.spare_dir))

    def run_dir(self, run_id) -> str:
        return os.path.join(self.config.runs_dir, format_run_id(run_id))

    def folder_run_ids(self) -> list:
        """The ids of the runs that have a folder (spares aside)."""
        ids = []
        for name in os.listdir(self.config.runs_dir):
            digits = name[1:] if name.startswith("r") else ""
            if digits.isdigit() and name == format_run_id(int(digits)):
                ids.append(int(digits))
        return ids

    def spec(self, run, program) -> dict:
        env = dict(self.base_env)
        env.update(program.env or {})
        env["APSIS_RUN_ID"] = format_run_id(run.run_id)
        env["APSIS_JOB_ID"] = run.job_id
        env["APSIS_ARGS"] = json.dumps(run.args, sort_keys=True)
        for name, value in run.args.items():
            env[f"APSIS_ARG_{name}"] = str(value)
        user = getattr(program, "user", None)
        return {
            "run_id": format_run_id(run.run_id),
            "argv": program.argv(),
            "env": env,
            # Like cron: a program without a cwd runs in the home directory
            # (the agent finds another user's).
            "cwd": program.cwd or (None if user else os.path.expanduser("~")),
            "user": user,
            # With sudo_for_user, the variables sudo is to pass on (it starts from a clean environment).
            "sudo": (sorted({*(program.env or {}), "APSIS_RUN_ID", "APSIS_JOB_ID", "APSIS_ARGS",
                             *(f"APSIS_ARG_{name}" for name in run.args)})
                     if user and self.config.sudo_for_user else None),
            "timeout": program.timeout,
            "stop": program.stop,
            "output_head": self.config.output_head,
            "output_tail": self.config.output_tail,
            "notify": self.config.notify_path,
            # The umask the server was started with (it keeps 077 for itself).
            "umask": program_umask(),
        }

    def prepare(self, run, program, ahead=False):
        """Write the run folder and its spec (the intent to start).

        The folder is a recycled spare when there is one. ``ahead`` (the run
        is not due yet) also makes the empty files the shepherd will write,
        so that it creates none once the run is due.
        """
        path = self.run_dir(run.run_id)
        if not self._take_spare(path):
            os.makedirs(path, mode=0o700, exist_ok=True)
            if ahead:
                for name in _SPARE_FILES:
                    os.close(os.open(os.path.join(path, name),
                                     os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
        agent.write_spec(path, self.spec(run, program))
        return path

    def _take_spare(self, path) -> bool:
        """Rename a spare folder to ``path``; False if there is none fit to use."""
        if not self.spares or os.path.lexists(path):
            return False
        while self.spares:
            spare = os.path.join(self.spare_dir, self.spares.pop())
            try:
                if self._is_clean_spare(spare):
                    os.rename(spare, path)
                    return True
                shutil.rmtree(spare, ignore_errors=True)
            except OSError as exc:
                log.warning("cannot reuse run folder %s: %s", spare, exc)
                shutil.rmtree(spare, ignore_errors=True)
        return False

    @staticmethod
    def _is_clean_spare(path) -> bool:
        """Holds nothing a run could be mistaken by: only the empty files."""
        with os.scandir(path) as entries:
            for entry in entries:
                if entry.name not in _SPARE_FILES or not entry.is_file(follow_symlinks=False):
                    return False
                if entry.name == agent.OUTPUT and entry.stat(follow_symlinks=False).st_size:
                    return False
        return True

    def start(self, run_ids):
        """Ask the agent to start the prepared runs; returns {run_id: error message} for failures."""
        results = self.client.start_many([self.run_dir(r) for r in run_ids])
        return {r: str(res) for r, res in zip(run_ids, results) if isinstance(res, Exception)}

    def warm(self, count):
        """``count`` runs are due soon: the agent forks their shepherds ahead."""
        self.client.warm(count)

    def send_starts(self, run_ids):
        """Ask the agent to start the prepared runs, without waiting for its
        answers; ``start_failures`` collects them."""
        self.client.send_starts([self.run_dir(r) for r in run_ids])

    def start_failures(self):
        """{run_id: error message} of the runs sent by ``send_starts`` that the agent could not start."""
        return {parse_run_id(os.path.basename(path)): str(res) for path, res in self.client.collect_starts().items()
                if isinstance(res, Exception)}

    def run_meta(self, run_id) -> dict:
        """What to record on the run about where it runs (nothing, for a local run)."""
        return {}

    def where(self, run_id) -> str:
        """Where the run runs, for messages."""
        return "the machine"

    def known(self, run_id) -> bool:
        """Whether what the launcher says of the run is known rather than assumed (a remote
        run's host may not have answered yet; a local run's folder is always at hand)."""
        return True

    def host_restarted(self, run_id) -> bool:
        """Whether the machine the run runs on restarted since it started (known for remote
        runs only; for local ones the engine compares boot ids at start-up)."""
        return False

    def boot_id(self):
        """This boot of the machine: a run folder proves a run never started only within one."""
        return agent.boot_id()

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

    def stop_requested(self, run_id) -> bool:
        """Whether a stop request is written in the run's folder."""
        return os.path.exists(os.path.join(self.run_dir(run_id), agent.STOP))

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
        """Retire a run folder whose result and output are recorded (or that
        never ran): keep it as a spare, or delete it when there are enough."""
        path = self.run_dir(run_id)
        if len(self.spares) < MAX_SPARES:
            try:
                name = self._recycle(path, format_run_id(run_id))
            except OSError as exc:
                log.warning("cannot recycle run folder %s: %s", path, exc)
            else:
                if name is not None:
                    self.spares.append(name)
                    return
        shutil.rmtree(path, ignore_errors=True)

    def _recycle(self, path, name):
        """Empty ``path`` by renames and move it into the spares; returns its
        spare name, or None if there was no such folder. The move comes last,
        so a folder in the spares is complete (and is checked again when taken)."""
        try:
            entries = os.listdir(path)
        except FileNotFoundError:
            return None
        for entry in entries:
            source = os.path.join(path, entry)
            if entry == agent.OUTPUT:
                os.truncate(source, 0)
            elif entry in _WRITTEN_AS:
                os.rename(source, os.path.join(path, _WRITTEN_AS[entry]))
            elif entry not in _SPARE_FILES:  # stop.json, output.tail, leftovers
                if os.path.isdir(source) and not os.path.islink(source):
                    shutil.rmtree(source)
                else:
                    os.unlink(source)
        try:
            os.rename(path, os.path.join(self.spare_dir, name))
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            # A spare by this name already: this run's folder written ahead
            # of a restart, retired by it (see Engine._retire_idle_folders)
            # and not yet taken. Any other name will do.
            name = self._unused_spare_name(name)
            os.rename(path, os.path.join(self.spare_dir, name))
        return name

    def _unused_spare_name(self, name):
        for n in itertools.count(2):
            candidate = f"{name}.{n}"
            if not os.path.lexists(os.path.join(self.spare_dir, candidate)):
                return candidate

    def close(self):
        self.client.close()
