"""Runs on a remote host: requests to the agent installed there, one ssh call each.

Each call runs ``python3 agent-HASH.pyz remote STATE_DIR`` on the host
through the multiplexed connection (see ``apsis_lite.agent.remote`` for the
requests), installing the agent first at the host's first use. A call that
fails says whether the request can have reached the host: a refused
connection, a refused key or an unknown host key mean it never ran, which is
what lets a start that failed be called "not started" rather than "may have
started".
"""

import hashlib
import json
import os
import posixpath
import socket

from apsis_lite.hosts.install import AgentInstaller
from apsis_lite.hosts.ssh import HostError, Target, failure, run

#: The remote user's folder for this server's runs, under the agent's folder.
STATE_FOLDER = "state"
CALL_TIMEOUT = 60.0

# What ssh says when it gave up before the remote command could start.
_BEFORE_LOGIN = ("connection refused", "could not resolve hostname", "no route to host",
                 "network is unreachable", "permission denied", "host key verification failed",
                 "remote host identification has changed", "too many authentication failures",
                 "connection timed out", "operation timed out", "kex_exchange_identification")


class CallFailed(HostError):
    """A request to a host's agent failed; ``never_ran`` when it provably never reached the host."""

    def __init__(self, message, never_ran=False):
        super().__init__(message)
        self.never_ran = never_ran


def instance_name(data_dir: str) -> str:
    """This server's folder name on hosts: two servers with one login user never share run folders."""
    key = f"{socket.gethostname()}:{os.path.abspath(data_dir)}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


class RemoteAgent:
    """The agent on one host, for this server's runs there."""

    def __init__(self, target: Target, installer: AgentInstaller, instance: str):
        self.target = target
        self._installer = installer
        self._instance = instance

    @property
    def name(self) -> str:
        return self.target.name

    def state_dir(self, agent_path: str) -> str:
        return posixpath.join(posixpath.dirname(agent_path), STATE_FOLDER, self._instance)

    def call(self, op: str, timeout: float = CALL_TIMEOUT, **request) -> dict:
        """Send one request; its reply. Raises CallFailed naming the host and why."""
        payload = json.dumps({"op": op, **request}, separators=(",", ":")).encode()
        reinstalled = False
        while True:
            try:
                installed = self._installer.ensure(self.target)
            except HostError as exc:
                raise CallFailed(str(exc), never_ran=True) from None
            try:
                result = run(self.target, ["python3", installed.path, "remote", self.state_dir(installed.path)],
                             stdin=payload, timeout=timeout)
            except HostError as exc:
                raise CallFailed(str(exc)) from None
            said = result.stderr.decode(errors="replace")
            if result.status == 2 and "can't open file" in said and not reinstalled:
                self._installer.forget(self.target)  # its agent file was removed: install it again
                reinstalled = True
                continue
            message = failure(self.target, result)
            if message:
                low = said.lower()
                never = result.status == 127 or any(marker in low for marker in _BEFORE_LOGIN)
                raise CallFailed(message, never_ran=never)
            if result.status != 0:
                lines = [line for line in said.splitlines() if line.strip()]
                raise CallFailed(f"host {self.name}: the agent refused the {op} request: "
                                 f"{lines[-1] if lines else f'exit status {result.status}'}")
            try:
                reply = json.loads(result.stdout)
            except ValueError:
                raise CallFailed(f"host {self.name}: the agent's reply to {op} is not JSON: "
                                 f"{result.stdout[:80]!r}") from None
            return reply
