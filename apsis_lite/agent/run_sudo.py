"""A run's program as another user through ``sudo -n``, for an agent that is not root.

Only when the server's config says so (``sudo_for_user: true``); otherwise a
job naming another user does not load. sudo never prompts (``-n``): a user
the sudoers policy does not allow without a password is refused before the
program starts, and that refusal is the run's error.

sudo starts the command with its own clean environment; the run's own
variables (the job's ``env`` and ``APSIS_*``) are passed on by name with
``--preserve-env=NAMES`` (a policy that refuses them refuses the run).
The command is a small ``/bin/sh`` script that, as the user, sets the login
variables, goes to the run's ``cwd`` (or the user's home, else ``/``), and
execs the program. Nothing secret is on sudo's command line.

The program's processes stay in sudo's process group (the run's), but they
are the user's: the agent's user may not signal them, and sudo passes a
signal on to its command only, not to what that started. So a stop, a
timeout and the SIGKILL after the grace period go to the group as the user,
with ``sudo -n -u USER kill -s SIG -- -PGID`` (``signal_group``).
"""

from __future__ import annotations

import os
import pwd
import signal
import subprocess

from apsis_lite.agent.run_as import UserError

SUDO = "sudo"
# How long the check that sudo lets us run as the user may take.
CHECK_TIMEOUT = 10.0

# $0: the folder; $1: 1 if it must exist (the job's cwd), else the home (falls back to /).
_START = ('d=$0 strict=$1; shift; '
          'cd -- "$d" 2>/dev/null || { if [ "$strict" = 1 ]; then '
          'echo "cannot chdir to $d as $(id -un)" >&2; exit 126; fi; cd /; }; '
          'exec "$@"')


def sudo_argv(entry: pwd.struct_passwd, argv: list, keep: list, cwd: str | None) -> list:
    """The argv that runs ``argv`` as ``entry``'s user through ``sudo -n``, passing on the
    variables named in ``keep`` and starting in ``cwd`` (else the user's home)."""
    names = sorted({n for n in keep if n and "," not in n and "=" not in n})
    login = [f"HOME={entry.pw_dir}", f"USER={entry.pw_name}", f"LOGNAME={entry.pw_name}",
             f"SHELL={entry.pw_shell or '/bin/sh'}"]
    return [SUDO, "-n", "-u", entry.pw_name,
            *([f"--preserve-env={','.join(names)}"] if names else []), "--",
            "/usr/bin/env", *login, "/bin/sh", "-c", _START,
            cwd or entry.pw_dir, "1" if cwd else "0", *argv]


def check_sudo(entry: pwd.struct_passwd, keep: list, env: dict) -> None:
    """UserError unless sudo runs a command as ``entry``'s user, as the program will be, without asking."""
    argv = sudo_argv(entry, ["true"], keep, "/")
    try:
        done = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=CHECK_TIMEOUT, cwd="/")
    except FileNotFoundError:
        raise UserError(f"cannot run as {entry.pw_name!r}: sudo_for_user is set, but there is no "
                        "'sudo' on the agent's PATH") from None
    except subprocess.TimeoutExpired:
        raise UserError(f"cannot run as {entry.pw_name!r}: sudo did not answer within "
                        f"{CHECK_TIMEOUT:g} s") from None
    if done.returncode != 0:
        said = " ".join(done.stderr.decode(errors="replace").split()) or f"exit status {done.returncode}"
        raise UserError(f"cannot run as {entry.pw_name!r}: sudo -n refused: {said[:300]} (the sudoers "
                        f"policy must let {_me()!r} run commands as {entry.pw_name!r} without a password)")


def signal_group(user: str, pgid: int, sig: int) -> bool:
    """Send ``sig`` to the processes of ``user`` in the group ``pgid``, as that user; False if none got it."""
    argv = [SUDO, "-n", "-u", user, "--", "kill", "-s", signal.Signals(sig).name[3:], "--", f"-{pgid}"]
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=CHECK_TIMEOUT, cwd="/")
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _me() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"
