"""A run's program as another user (a job's ``user:``), started by an agent running as root.

posix_spawn cannot change the user, so this path forks: the child does what
the spawn does for every run (its own session, stdin from /dev/null, stdout
and stderr on the output pipe, default signals and an empty mask), then takes
the user's supplementary groups, gid and uid, goes to the run's folder or the
user's home, and execs. What fails before the exec is written on a
close-on-exec pipe, so the shepherd reports it as the run's error.
"""

from __future__ import annotations

import os
import pwd

from apsis_lite.agent.processes import reset_signals


class UserError(Exception):
    """The program cannot be started as the user its spec names."""


def target_user(name: str, sudo: bool = False) -> pwd.struct_passwd | None:
    """The passwd entry to switch to, or None when ``name`` is the agent's own user.

    An agent that is not root can switch only through sudo (``sudo``: the
    config allows it; see ``run_sudo``)."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise UserError(f"cannot run as {name!r}: no such user on this machine") from None
    euid = os.geteuid()
    if entry.pw_uid == euid:
        return None
    if euid != 0 and not sudo:
        raise UserError(f"cannot run as {name!r}: the agent runs as {_name_of(euid)}, not root "
                        "(and the config does not set sudo_for_user)")
    return entry


def login_env(env: dict, entry: pwd.struct_passwd) -> dict:
    """``env`` with the user's login identity, as a login would set it."""
    return {**env, "HOME": entry.pw_dir, "USER": entry.pw_name, "LOGNAME": entry.pw_name,
            "SHELL": entry.pw_shell or "/bin/sh"}


def spawn_as(entry: pwd.struct_passwd, argv: list, env: dict, cwd: str | None, out_w: int) -> int:
    """Start ``argv`` as ``entry``'s user in a session of its own; its pid, or UserError saying why not."""
    err_r, err_w = os.pipe()  # close-on-exec: reads empty once the exec succeeds
    pid = os.fork()
    if pid == 0:
        try:
            os.close(err_r)
            _become(entry, cwd, out_w)
            os.execvpe(argv[0], argv, env)
        except _Failed as exc:
            os.write(err_w, str(exc).encode(errors="replace"))
        except OSError as exc:
            os.write(err_w, f"cannot run {argv[0]!r}: {exc.strerror}".encode(errors="replace"))
        except BaseException as exc:  # whatever it was, the child must not return into the shepherd
            os.write(err_w, f"cannot run {argv[0]!r}: {exc}".encode(errors="replace"))
        finally:
            os._exit(127)
    os.close(err_w)
    with open(err_r, "rb") as pipe:
        why = pipe.read()
    if why:
        os.waitpid(pid, 0)
        raise UserError(why.decode(errors="replace"))
    return pid


class _Failed(Exception):
    pass


def _become(entry, cwd, out_w):
    """In the child: the run's session, descriptors and signals, then the user's identity and folder."""
    reset_signals()
    os.setsid()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out_w, 1)
    os.dup2(out_w, 2)
    try:
        os.initgroups(entry.pw_name, entry.pw_gid)
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)
    except OSError as exc:
        raise _Failed(f"cannot become {entry.pw_name!r}: {exc.strerror}") from None
    where = cwd or entry.pw_dir
    try:
        os.chdir(where)
    except OSError as exc:
        if cwd:
            raise _Failed(f"cannot chdir to {cwd!r}: {exc.strerror}") from None
        os.chdir("/")  # a user without a home starts at the root, as a login does


def _name_of(uid: int) -> str:
    try:
        return repr(pwd.getpwuid(uid).pw_name)
    except KeyError:
        return f"uid {uid}"
