"""The ``command`` action: a shell command that sees the run, killed after a timeout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from dataclasses import dataclass
from typing import ClassVar

from apsis_lite.agent.files import program_umask
from apsis_lite.model.actions.base import Action, ActionFailed
from apsis_lite.model.fields import nonempty_text, positive_duration
from apsis_lite.model.registry import ACTIONS

# Output of a command action kept in the run's log.
LOG_OUTPUT_CHARS = 2000


@ACTIONS.register("command")
@dataclass(frozen=True, kw_only=True)
class CommandAction(Action):
    """Run a shell command (``bash -c``), e.g. to notify someone.

    It sees the run in ``APSIS_*`` variables and, as JSON, on stdin and in
    ``APSIS_EVENT``; it starts in the home directory and is killed (its
    whole process group) after ``timeout`` (default: ``action_timeout``).
    """

    type_name: ClassVar[str] = "command"

    command: str
    timeout: float | None = None
    when: tuple | None = None
    labels: tuple | None = None

    @classmethod
    def _read(cls, f):
        return {"command": f.take("command", nonempty_text),
                "timeout": f.take("timeout", positive_duration, None)}

    def _jso(self):
        jso = {"command": self.command}
        if self.timeout is not None:
            jso["timeout"] = self.timeout
        return jso

    def describe(self):
        first = self.command.strip().splitlines()[0] if self.command.strip() else ""
        return f"command {first[:60]!r}"

    def perform(self, event, ctx):
        timeout = self.timeout or ctx.config.action_timeout
        body = json.dumps(event.to_jso())
        env = dict(os.environ)
        env.update(event.environment())
        env["APSIS_EVENT"] = body
        try:
            proc = subprocess.Popen(
                ["bash", "-c", self.command], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, env=env, cwd=os.path.expanduser("~"),
                start_new_session=True, umask=_umask())
        except OSError as exc:
            raise ActionFailed(f"could not start: {exc.strerror or exc}") from None
        try:
            out, _ = proc.communicate(body.encode(), timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            out, _ = proc.communicate()
            raise ActionFailed(f"timed out after {timeout:g} s{_tail(out)}") from None
        if proc.returncode < 0:
            raise ActionFailed(f"killed by {signal.Signals(-proc.returncode).name}{_tail(out)}")
        if proc.returncode != 0:
            raise ActionFailed(f"exit code {proc.returncode}{_tail(out)}")
        return f"exit code 0{_tail(out)}"


def _umask() -> int:
    """The umask the server was started with, as its programs get (-1: leave it as it is)."""
    umask = program_umask()
    return -1 if umask is None else umask


def _kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        proc.kill()


def _tail(out: bytes) -> str:
    text = (out or b"").decode("utf-8", "replace").strip()
    if not text:
        return ""
    if len(text) > LOG_OUTPUT_CHARS:
        text = "..." + text[-LOG_OUTPUT_CHARS:]
    return "; output:\n" + text
