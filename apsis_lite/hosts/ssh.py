"""The transport to remote hosts: the system's OpenSSH client, multiplexed.

Nothing here speaks SSH itself: every connection is an ``ssh`` process using
the server user's keys, agent, ``known_hosts`` and ``~/.ssh/config``, with
``BatchMode=yes`` so that a missing key or an unknown host key is an error
rather than a prompt nobody answers. The first command to a host starts a
master connection that stays up for ``CONTROL_PERSIST`` seconds after the
last one, so later commands skip the TCP, key exchange and login round trips.

Commands run through ``subprocess``, which the server's gevent patches.
"""

import hashlib
import os
import re
import shlex
import stat
import subprocess
import tempfile
from dataclasses import dataclass

from apsis_lite.config import HostSettings
from apsis_lite.errors import ApsisError

CONNECT_TIMEOUT = 10
CONTROL_PERSIST = 300
ALIVE_INTERVAL = 15
ALIVE_COUNT_MAX = 3
DEFAULT_TIMEOUT = 60.0

# A socket address holds 108 bytes on Linux, 104 on the BSDs; while it sets a
# master up, ssh binds the ControlPath plus a 17-character random suffix.
_CONTROL_PATH_MAX = 104 - 1 - 17
# Characters ssh reads literally in a ControlPath (it expands % and ~, and splits on spaces).
_PLAIN_PATH = re.compile(r"[A-Za-z0-9._/+-]+")


class HostError(ApsisError):
    """A remote host could not be used; the message names the host and why."""

    status = 502


@dataclass(frozen=True)
class Target:
    """One remote host as ssh reaches it, and where its master connection's socket goes."""

    settings: HostSettings
    control_dir: str

    @property
    def name(self) -> str:
        return self.settings.name

    def where(self) -> str:
        """``user@hostname:port`` with only the parts the config gives."""
        s = self.settings
        return f"{s.user + '@' if s.user else ''}{s.hostname}{':' + str(s.port) if s.port else ''}"

    def control_path(self) -> str:
        """The master connection's socket: a short name hashed from everything that picks the connection."""
        s = self.settings
        key = repr((s.hostname, s.user, s.port, s.identity_file, s.ssh_options))
        return os.path.join(self.control_dir, hashlib.sha256(key.encode()).hexdigest()[:16])


@dataclass(frozen=True)
class Result:
    """What a remote command did: its exit status (255: ssh itself failed), stdout and stderr."""

    status: int
    stdout: bytes
    stderr: bytes


def target(config, name: str) -> Target:
    """The host ``name``: its ``hosts:`` settings, or an ssh destination with every default."""
    settings = (config.hosts or {}).get(name) or HostSettings(name=name, hostname=name)
    return Target(settings, control_dir(config.data_dir))


def control_dir(data_dir: str) -> str:
    """The folder for control sockets: ``ssh/`` in the data folder, or, when that path is
    too long for a socket address (or has characters ssh would expand), a private
    folder named after it in the runtime folder or ``/tmp``."""
    preferred = os.path.join(os.path.abspath(data_dir), "ssh")
    if len(preferred) + 17 <= _CONTROL_PATH_MAX and _PLAIN_PATH.fullmatch(preferred):
        return preferred
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    if not (_PLAIN_PATH.fullmatch(base) and len(base) <= 40):
        base = "/tmp"
    digest = hashlib.sha256(preferred.encode()).hexdigest()[:8]
    return os.path.join(base, f"apsis-lite-ssh-{os.getuid()}-{digest}")


def _private_dir(path: str):
    """Make ``path`` a folder only this user can enter (another user's folder or a link is an error)."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        info = os.lstat(path)
    except OSError as exc:
        raise HostError(f"cannot make the ssh control folder {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise HostError(f"the ssh control folder {path} is not a private folder of this user")


def ssh_argv(target: Target, command: str | None = None, control: str | None = None) -> list[str]:
    """The ``ssh`` command line for ``target``, running ``command`` (a shell line) there,
    or, with ``control`` (``check``, ``exit``), asking its master connection."""
    s = target.settings
    # ssh keeps the first value it reads for an option: the host's own options come first.
    argv = ["ssh", "-T"]
    for option in s.ssh_options:
        argv += ["-o", option]
    for option in ("BatchMode=yes", "ControlMaster=auto", f"ControlPersist={CONTROL_PERSIST}",
                   f"ControlPath={target.control_path()}", f"ConnectTimeout={CONNECT_TIMEOUT}",
                   f"ServerAliveInterval={ALIVE_INTERVAL}", f"ServerAliveCountMax={ALIVE_COUNT_MAX}"):
        argv += ["-o", option]
    if s.user:
        argv += ["-l", s.user]
    if s.port:
        argv += ["-p", str(s.port)]
    if s.identity_file:
        argv += ["-i", s.identity_file]
    if control:
        argv += ["-O", control]
    argv += ["--", s.hostname]
    if command is not None:
        argv.append(command)
    return argv


def run(target: Target, argv: list[str], stdin: bytes | None = None,
        timeout: float = DEFAULT_TIMEOUT) -> Result:
    """Run ``argv`` on the host (each word quoted for the remote shell), feeding it ``stdin``."""
    return run_shell(target, " ".join(shlex.quote(word) for word in argv), stdin, timeout)


def run_shell(target: Target, script: str, stdin: bytes | None = None,
              timeout: float = DEFAULT_TIMEOUT) -> Result:
    """Run the shell line ``script`` on the host. Raises HostError only when no ssh
    process could run or it did not finish in ``timeout`` seconds; see ``failure``."""
    return _ssh(target, ssh_argv(target, script), stdin, timeout)


def _ssh(target, argv, stdin, timeout) -> Result:
    _private_dir(target.control_dir)
    feed = {"input": stdin} if stdin is not None else {"stdin": subprocess.DEVNULL}
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=timeout, **feed)
    except FileNotFoundError:
        raise HostError(f"host {target.name}: the ssh command is missing (install the OpenSSH client)") from None
    except subprocess.TimeoutExpired:
        raise HostError(f"host {target.name} ({target.where()}): no answer within {timeout:g} s") from None
    return Result(proc.returncode, proc.stdout, proc.stderr)


def master_running(target: Target) -> bool:
    """Whether a master connection to ``target`` is up (``ssh -O check``)."""
    if not os.path.exists(target.control_path()):
        return False
    return _ssh(target, ssh_argv(target, control="check"), None, CONNECT_TIMEOUT).status == 0


def close_master(target: Target):
    """End the master connection to ``target``, if any (``ssh -O exit``)."""
    if os.path.exists(target.control_path()):
        _ssh(target, ssh_argv(target, control="exit"), None, CONNECT_TIMEOUT)


# (what ssh says, what that means) in the order they are looked for.
_UNREACHABLE = [
    ("connection refused", "connection refused"),
    ("timed out", "connection timed out"),
    ("no route to host", "no route to host"),
    ("network is unreachable", "network unreachable"),
    ("could not resolve hostname", "unknown host name"),
    ("connection closed by", "the connection was closed before login"),
    ("connection reset by", "the connection was reset before login"),
    ("kex_exchange_identification", "the connection was closed before login"),
]


def failure(target: Target, result: Result) -> str | None:
    """What went wrong when ssh failed (exit status 255) or the remote shell found
    no ``python3`` (127), as one message naming the host; ``None`` otherwise."""
    said = result.stderr.decode(errors="replace")
    low = said.lower()
    host = f"host {target.name} ({target.where()})"
    if result.status == 127 and "python3" in low:
        return f"no python3 on host {target.name}: the agent needs Python 3 as python3 on the login user's PATH"
    if result.status != 255:
        return None
    if "remote host identification has changed" in low:
        return (f"{host}: the host key has changed since it was put in known_hosts; if the host was "
                f"reinstalled, remove the old key (ssh-keygen -R), otherwise this may be an attack")
    if "host key verification failed" in low or "host key is known" in low:
        return (f"{host}: the host key is unknown: add the host to known_hosts after checking its "
                f"fingerprint (e.g. ssh-keyscan), since ssh runs with BatchMode=yes and cannot ask")
    if "permission denied" in low or "too many authentication failures" in low:
        user = target.settings.user or "the ssh default user"
        return f"{host}: authentication refused for {user}: is the server's key in that user's authorized_keys?"
    for marker, meaning in _UNREACHABLE:
        if marker in low:
            return f"{host} is unreachable: {meaning}"
    lines = [line for line in said.splitlines() if line.strip()]
    return f"{host}: ssh failed: {lines[-1] if lines else 'no message'}"


def call(target: Target, argv: list[str], stdin: bytes | None = None,
         timeout: float = DEFAULT_TIMEOUT) -> Result:
    """``run``, raising HostError with ``failure``'s message when ssh or python3 failed."""
    result = run(target, argv, stdin, timeout)
    message = failure(target, result)
    if message:
        raise HostError(message)
    return result
