"""Fixtures for tests/hosts: a real sshd for the session, and targets that reach it.

Imported by the test modules (a conftest.py there would shadow the top-level
one for the modules that ``from conftest import`` its helpers).
"""

import os
import pwd
import shutil
import subprocess

import pytest

from apsis_lite.config import HostSettings
from apsis_lite.hosts import ssh
from sshd import LOGIN_USER, start_sshd


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@pytest.fixture
def make_target(sshd, tmp_path):
    """A Target for the session's sshd (user, key, known_hosts), its control sockets in
    this test's own data folder; keywords replace the settings."""
    made = []

    def make(name="testhost", known_hosts=None, **settings):
        options = ("IdentitiesOnly=yes", f"UserKnownHostsFile={known_hosts or sshd.known_hosts}")
        values = dict(hostname="127.0.0.1", user=sshd.user, port=sshd.port,
                      identity_file=str(sshd.client_key), ssh_options=options)
        values.update(settings)
        target = ssh.Target(HostSettings(name=name, **values), ssh.control_dir(str(tmp_path / "data")))
        made.append(target)
        return target

    yield make
    for target in made:
        ssh.close_master(target)


def remote_cache(user=LOGIN_USER):
    """The login user's agent folder (the 'remote' host is this machine)."""
    return os.path.join(pwd.getpwnam(user).pw_dir, ".cache", "apsis-lite")


@pytest.fixture
def clean_remote_cache():
    """No agent installed for the login user before the test."""
    shutil.rmtree(remote_cache(), ignore_errors=True)
    yield remote_cache()
    shutil.rmtree(remote_cache(), ignore_errors=True)


@pytest.fixture
def stranger_key(tmp_path):
    """A fresh ed25519 key pair that no server knows."""
    path = tmp_path / "stranger_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


class Link:
    """A TCP relay to the sshd that the test can cut (connections reset, new ones
    refused) and restore on the same port: the network between server and host."""

    def __init__(self, port):
        import socket
        import threading
        self._socket, self._threading = socket, threading
        self.target = port
        self.port = None
        self._listener = None
        self._conns = []
        self.up()

    def up(self):
        s = self._socket.socket()
        s.setsockopt(self._socket.SOL_SOCKET, self._socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port or 0))
        s.listen(64)
        self.port = s.getsockname()[1]
        self._listener = s
        self._threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def down(self):
        """Cut every connection and refuse new ones."""
        try:
            self._listener.shutdown(self._socket.SHUT_RDWR)  # wakes the accept (a close alone does not)
        except OSError:
            pass
        self._listener.close()
        for conn in self._conns:
            try:
                conn.shutdown(self._socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
        self._conns = []

    def _accept(self, listener):
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = self._socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                self._threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source, sink):
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for s in (source, sink):
            try:
                s.close()
            except OSError:
                pass


@pytest.fixture
def link(sshd):
    made = Link(sshd.port)
    yield made
    made.down()
