"""Local accounts for the tests that run programs as another user (CI runs as root)."""

import os
import pwd
import subprocess

RUN_AS_USER = "apsis-runas"
# A server that is not root, switching to RUN_AS_USER through sudo.
SUDO_SERVER_USER = "apsis-sudoer"


def ensure_user(name: str) -> pwd.struct_passwd:
    """The local account ``name``, created (with a home, no password) if missing. Needs root."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        if os.geteuid() != 0:
            raise RuntimeError(f"creating the test user {name!r} needs root: run the suite as root, "
                               "as .ci/run does") from None
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", name], check=True)
        # '*' rather than useradd's '!': a locked account may not log in over ssh even with a key.
        subprocess.run(["usermod", "-p", "*", name], check=True)
        return pwd.getpwnam(name)
