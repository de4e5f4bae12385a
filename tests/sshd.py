"""A real OpenSSH server on 127.0.0.1 for the remote-host tests.

Debian's ``sshd`` (installed by ``make test``) on a free port, with a host
key generated for the session and one login user, ``apsis-remote``, whose
``authorized_keys`` holds a client key also generated here. sshd must run as
root to log in as another user, as CI does; anywhere else the fixture fails
saying so rather than skipping.

A second login user, ``apsis-nopython``, has the same key but sshd gives its
sessions a ``PATH`` with no ``python3`` on it (``Match User`` + ``SetEnv``):
to the client it is a host without Python.
"""

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from users import ensure_user

SSHD = "/usr/sbin/sshd"
LOGIN_USER = "apsis-remote"
NO_PYTHON_USER = "apsis-nopython"
NO_PYTHON_PATH = "/nonexistent/apsis-no-python"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Sshd:
    port: int
    folder: Path
    client_key: Path
    known_hosts: Path
    user: str
    proc: subprocess.Popen

    def ssh_options(self) -> list[str]:
        """Options for ``ssh`` that reach this server with the generated key and nothing else."""
        return ["-p", str(self.port), "-i", str(self.client_key), "-o", "BatchMode=yes",
                "-o", "IdentitiesOnly=yes", "-o", f"UserKnownHostsFile={self.known_hosts}",
                "-o", "StrictHostKeyChecking=yes"]

    def run(self, command: str, timeout=30) -> subprocess.CompletedProcess:
        return subprocess.run(["ssh", *self.ssh_options(), f"{self.user}@127.0.0.1", command],
                              capture_output=True, text=True, timeout=timeout)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def start_sshd(folder: Path) -> Sshd:
    if os.geteuid() != 0:
        raise RuntimeError("the remote-host tests start sshd as root (to log in as another user): "
                           "run the suite as root, as .ci/run does")
    if not os.path.exists(SSHD):
        raise RuntimeError(f"{SSHD} is missing: `make test` installs Debian's openssh-server")
    folder.mkdir(parents=True, exist_ok=True)
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege-separation folder
    host_key, client_key = folder / "host_key", folder / "client_key"
    for key in (host_key, client_key):
        if not key.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    pub = (folder / "client_key.pub").read_text()
    for name in (LOGIN_USER, NO_PYTHON_USER):
        _authorize(name, pub)
    port = free_port()
    config = folder / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {host_key}", f"PidFile {folder / 'sshd.pid'}",
        "AuthorizedKeysFile .ssh/authorized_keys", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "UsePAM no", "PermitRootLogin no",
        "MaxStartups 200:30:400", "MaxSessions 200", "LogLevel ERROR",
        f"Match User {NO_PYTHON_USER}", f"    SetEnv PATH={NO_PYTHON_PATH}", "",
    ]))
    log = open(folder / "sshd.log", "ab")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sshd did not start:\n{(folder / 'sshd.log').read_text()}")
            time.sleep(0.05)
    known_hosts = folder / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {(folder / 'host_key.pub').read_text()}")
    return Sshd(port, folder, client_key, known_hosts, LOGIN_USER, proc)


def _authorize(name: str, pub: str):
    """Let ``name`` log in with the public key ``pub``."""
    user = ensure_user(name)
    ssh_dir = Path(user.pw_dir) / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    auth = ssh_dir / "authorized_keys"
    lines = auth.read_text().splitlines(keepends=True) if auth.exists() else []
    if pub not in lines:
        auth.write_text("".join(lines) + pub)
    for path in (ssh_dir, auth):
        os.chown(path, user.pw_uid, user.pw_gid)
    auth.chmod(0o600)


def remove_user(name: str):
    """Delete a user made by ensure_user (for a clean machine after the session)."""
    if shutil.which("userdel"):
        subprocess.run(["userdel", "--remove", name], capture_output=True)
