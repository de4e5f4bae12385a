"""Program types: what a run executes. Definitions only; starting, signalling
and collecting results live with the engine and agent.

``parse_program(jso)`` turns a job file's ``program:`` (a command string, an
argv list, or a mapping with ``type:``) into a Program. Jobs are loaded with
``allow_templates=True``: values holding Jinja2 syntax (``{{ ... }}``) are
then kept as text and checked after binding, when they have their values.
"""

from __future__ import annotations

import os
import pwd
import shlex
import signal as _signal
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import ClassVar

from apsis_lite.model.registry import PROGRAMS
from apsis_lite.model.fields import (
    Fields, SpecError, _kind, duration, flag, is_template, nonempty_text,
    positive_duration, string_map, text,
)
from apsis_lite.timeutil import format_duration

# Timeouts and stops are plain dicts, so that they go into a run spec as JSON.
DEFAULT_STOP = {"signal": "SIGTERM", "grace_period": 60.0}


def signal_name(value) -> str:
    """The canonical name of a signal given as ``SIGTERM``, ``term`` or ``15``."""
    if isinstance(value, bool):
        raise ValueError(f"not a signal: {value!r}")
    if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
        try:
            return _signal.Signals(int(value)).name
        except ValueError:
            raise ValueError(f"not a signal number: {value!r}") from None
    if isinstance(value, str):
        name = value.strip().upper()
        name = name if name.startswith("SIG") else "SIG" + name
        if name in _signal.Signals.__members__:
            return name
    raise ValueError(f"not a signal: {value!r}")


def _or_template(convert, allow_templates):
    """``convert``, except that a template string is kept for checking after binding."""
    if not allow_templates:
        return convert
    return lambda v: v if is_template(v) else convert(v)


def parse_timeout(jso, *, allow_templates=False) -> dict:
    """``{duration, signal}`` from a timeout mapping (or a bare duration, as shorthand)."""
    if not isinstance(jso, dict):
        jso = {"duration": jso}
    f = Fields(jso, "timeout mapping")
    d = f.take("duration", _or_template(positive_duration, allow_templates))
    s = f.take("signal", _or_template(signal_name, allow_templates), "SIGTERM")
    f.done()
    return {"duration": d, "signal": s}


def parse_stop(jso, *, allow_templates=False) -> dict:
    """``{signal, grace_period}``: how a stop is delivered; SIGKILL follows after the grace period."""
    f = Fields(jso, "stop mapping")
    s = f.take("signal", _or_template(signal_name, allow_templates), "SIGTERM")
    g = f.take("grace_period", _or_template(duration, allow_templates), DEFAULT_STOP["grace_period"])
    f.done()
    return {"signal": s, "grace_period": g}


def _env(value) -> dict:
    env = string_map(value)
    bad = [(k, "not a valid environment variable name") for k in env if not k or "=" in k]
    if bad:
        raise SpecError(problems=bad)
    return env


_NO_ENV = MappingProxyType({})


class Program:
    """Base of program types. Every type has ``type_name`` and ``is_noop``.

    Local process types also have ``host``, ``user``, ``env``, ``cwd``,
    ``timeout`` (``{"duration": s, "signal": name}`` or None), ``stop``
    (``{"signal": name, "grace_period": s}``) and ``argv()``; the defaults
    here let the engine read them from any program.
    """

    type_name: ClassVar[str] = ""
    is_noop: ClassVar[bool] = False
    # A process started by the agent (argv), or else a ServerProgram.
    runs_process: ClassVar[bool] = True

    host = None
    user = None
    cwd = None
    env = _NO_ENV
    timeout = None
    stop = MappingProxyType(DEFAULT_STOP)

    @classmethod
    def from_jso(cls, jso, *, allow_templates=False) -> "Program":
        """Parse strictly; SpecError lists every problem. On the base class, dispatch like ``parse_program``."""
        if cls is Program:
            return parse_program(jso, allow_templates=allow_templates)
        f = Fields(jso, "program mapping")
        f.take("type", default=None)  # used for dispatch already
        kwargs = cls._read(f, allow_templates)
        f.done()
        return cls(**kwargs)

    @classmethod
    def _read(cls, f: Fields, allow_templates: bool) -> dict:
        raise NotImplementedError

    def to_jso(self) -> dict:
        raise NotImplementedError

    def argv(self) -> list[str]:
        """The argv to exec for a local process."""
        raise TypeError(f"a {self.type_name} program has no argv")

    def describe(self) -> str:
        """One line for people: the command, the argv, or what the program does."""
        return self.type_name


@dataclass(frozen=True, kw_only=True)
class _ProcessProgram(Program):
    """Options common to programs that run a process."""

    host: str | None = None
    user: str | None = None
    env: dict = field(default_factory=dict)
    cwd: str | None = None
    timeout: dict | None = None
    stop: dict = field(default_factory=lambda: dict(DEFAULT_STOP))

    @classmethod
    def _read_options(cls, f, allow_templates):
        return {
            "host": f.take("host", nonempty_text, None),
            "user": f.take("user", nonempty_text, None),
            "env": f.take("env", _env, {}),
            "cwd": f.take("cwd", nonempty_text, None),
            "timeout": f.take(
                "timeout", lambda v: parse_timeout(v, allow_templates=allow_templates), None),
            "stop": f.take(
                "stop", lambda v: parse_stop(v, allow_templates=allow_templates), dict(DEFAULT_STOP)),
        }

    def _options_jso(self):
        # Only what is set, so that job views stay short.
        jso = {}
        for key in ("host", "user", "cwd"):
            if getattr(self, key) is not None:
                jso[key] = getattr(self, key)
        if self.env:
            jso["env"] = dict(self.env)
        if self.timeout is not None:
            jso["timeout"] = dict(self.timeout)
        if self.stop != DEFAULT_STOP:
            jso["stop"] = dict(self.stop)
        return jso


def local_user_problem(user: str, sudo_for_user: bool = False) -> str | None:
    """Why a program on this machine cannot run as ``user`` (a job's ``user:``), or None if it can.

    A server running as root starts the program as that user; any other
    server runs programs only as itself, so a file naming another user is
    refused rather than run as the wrong one, unless the config's
    ``sudo_for_user`` lets it switch through ``sudo -n``.
    """
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return f"no such user on this machine: {user!r}"
    euid = os.geteuid()
    if entry.pw_uid == euid or euid == 0 or sudo_for_user:
        return None
    try:
        me = repr(pwd.getpwuid(euid).pw_name)
    except KeyError:
        me = f"uid {euid}"
    return (f"cannot run programs as {user!r}: the server runs as {me}, not root, and runs "
            f"programs only as itself (run the server as root, set sudo_for_user: true in its config "
            f"with a sudoers rule, or remove user:)")


@PROGRAMS.register("shell", aliases=[
    "apsis.program.ShellCommandProgram", "apsis.program.process.ShellCommandProgram",
    "apsis.program.AgentShellProgram", "apsis.program.agent.AgentShellProgram",
])
@dataclass(frozen=True)
class ShellProgram(_ProcessProgram):
    """A shell command, run as ``/bin/bash -c command``; with ``login_shell``,
    ``/bin/bash -l -c command``, which reads ``/etc/profile`` and the first of
    ``~/.bash_profile``, ``~/.bash_login`` and ``~/.profile`` first."""

    type_name: ClassVar[str] = "shell"

    command: str
    login_shell: bool = False

    @classmethod
    def _read(cls, f, allow_templates):
        return {"command": f.take("command", nonempty_text),
                "login_shell": f.take("login_shell", flag, False),
                **cls._read_options(f, allow_templates)}

    def to_jso(self):
        jso = {"type": "shell", "command": self.command, **self._options_jso()}
        if self.login_shell:
            jso["login_shell"] = True
        return jso

    def argv(self):
        return ["/bin/bash", "-l", "-c", self.command] if self.login_shell else ["/bin/bash", "-c", self.command]

    def describe(self):
        return self.command.strip()


def _argv(value) -> tuple:
    if not isinstance(value, list):
        raise ValueError(f"expected a list of strings, got {_kind(value)}")
    if not value:
        raise ValueError("must not be empty")
    out, problems = [], []
    for i, v in enumerate(value):
        try:
            out.append(text(v))
        except ValueError as exc:
            problems.append((f"[{i}]", str(exc)))
    if problems:
        raise SpecError(problems=problems)
    if not out[0]:
        raise SpecError("[0]", "the program name must not be empty")
    return tuple(out)


@PROGRAMS.register("program", aliases=[
    "apsis.program.ProcessProgram", "apsis.program.process.ProcessProgram",
    "apsis.program.AgentProgram", "apsis.program.agent.AgentProgram",
])
@dataclass(frozen=True)
class ArgvProgram(_ProcessProgram):
    """A program executed directly from ``argv``, no shell; ``argv[0]`` is looked up on PATH."""

    type_name: ClassVar[str] = "program"

    words: tuple

    @classmethod
    def _read(cls, f, allow_templates):
        return {"words": f.take("argv", _argv), **cls._read_options(f, allow_templates)}

    def to_jso(self):
        return {"type": "program", "argv": list(self.words), **self._options_jso()}

    def argv(self):
        return list(self.words)

    def describe(self):
        return shlex.join(self.words)


# apsis's procstar programs run on a host of this group unless they name another.
DEFAULT_GROUP = "default"


class _Procstar:
    """apsis's procstar options, mapped onto ours: ``group_id`` is the host
    group a run goes to (its ``host``, picked from the group's hosts) and
    ``sudo_user`` its ``user``; ``env``, ``cwd`` and ``timeout`` are read too."""

    @classmethod
    def _procstar_options(cls, f, allow_templates):
        options = cls._read_options(f, allow_templates)
        group = f.take("group_id", nonempty_text, DEFAULT_GROUP)
        return {**options, "group_id": group, "host": group, "user": f.take("sudo_user", nonempty_text, None)}

    def _procstar_jso(self):
        jso = {"group_id": self.group_id}
        if self.user is not None:
            jso["sudo_user"] = self.user
        return jso

    def _options_jso(self):
        # host and user are group_id and sudo_user here, written under those names.
        jso = super()._options_jso()
        jso.pop("host", None)
        jso.pop("user", None)
        return jso


@PROGRAMS.register("procstar", aliases=[
    "apsis.program.ProcstarProgram", "apsis.program.procstar.agent.ProcstarProgram",
])
@dataclass(frozen=True)
class ProcstarProgram(_Procstar, ArgvProgram):
    """apsis's ``procstar``: an argv run on a host of the group ``group_id``."""

    type_name: ClassVar[str] = "procstar"

    group_id: str = DEFAULT_GROUP

    @classmethod
    def _read_options(cls, f, allow_templates):
        # Not host: or user: (group_id: and sudo_user: say where and as whom).
        return {
            "env": f.take("env", _env, {}),
            "cwd": f.take("cwd", nonempty_text, None),
            "timeout": f.take(
                "timeout", lambda v: parse_timeout(v, allow_templates=allow_templates), None),
            "stop": f.take(
                "stop", lambda v: parse_stop(v, allow_templates=allow_templates), dict(DEFAULT_STOP)),
        }

    @classmethod
    def _read(cls, f, allow_templates):
        return {"words": f.take("argv", _argv), **cls._procstar_options(f, allow_templates)}

    def to_jso(self):
        return {"type": "procstar", "argv": list(self.words), **self._procstar_jso(), **self._options_jso()}


@PROGRAMS.register("procstar-shell", aliases=[
    "apsis.program.ProcstarShellProgram", "apsis.program.procstar.agent.ProcstarShellProgram",
])
@dataclass(frozen=True)
class ProcstarShellProgram(_Procstar, ShellProgram):
    """apsis's ``procstar-shell``: a shell command run on a host of the group ``group_id``."""

    type_name: ClassVar[str] = "procstar-shell"

    group_id: str = DEFAULT_GROUP

    _read_options = ProcstarProgram._read_options

    @classmethod
    def _read(cls, f, allow_templates):
        return {"command": f.take("command", nonempty_text), **cls._procstar_options(f, allow_templates)}

    def to_jso(self):
        return {"type": "procstar-shell", "command": self.command, **self._procstar_jso(), **self._options_jso()}


@PROGRAMS.register("no-op", aliases=["apsis.program.NoOpProgram", "apsis.program.noop.NoOpProgram"])
@dataclass(frozen=True)
class NoOpProgram(Program):
    """Does nothing and succeeds.

    As in apsis, ``duration:`` makes it take that long and ``success: false``
    makes it fail; both are optional.
    """

    type_name: ClassVar[str] = "no-op"
    is_noop: ClassVar[bool] = True

    duration: float | str | None = None
    success: bool = True

    @classmethod
    def _read(cls, f, allow_templates):
        return {"duration": f.take("duration", _or_template(duration, allow_templates), None),
                "success": f.take("success", flag, True)}

    def to_jso(self):
        jso = {"type": "no-op"}
        if self.duration is not None:
            jso["duration"] = self.duration
        if not self.success:
            jso["success"] = False
        return jso

    def describe(self):
        if isinstance(self.duration, (int, float)) and self.duration:
            return f"no-op for {format_duration(self.duration)}"
        return "no-op"


@dataclass(frozen=True)
class Outcome:
    """What an in-server program's ``run`` returns: how the run ends."""

    success: bool = True
    message: str = ""
    output: bytes | str = b""


class ServerContext:
    """What an in-server program is given: the run, and a way to know it is being stopped."""

    def __init__(self, run_id: str, job_id: str, args: dict, data_dir: str, stopping):
        self.run_id = run_id
        self.job_id = job_id
        self.args = dict(args)
        self.data_dir = data_dir
        self.stopping = stopping  # a threading.Event, set when the run is stopped or times out


@dataclass(frozen=True, kw_only=True)
class ServerProgram(Program):
    """Base of program types that run inside the server, as apsis's internal programs do.

    A subclass implements ``run(context) -> Outcome | None`` (None: success,
    no output). It is called in one of a few worker threads, never in the
    engine's loop; it must not block forever, but if it does, the run goes
    to error after ``timeout`` seconds (the job file's ``timeout:``, else
    the class's ``default_timeout``), as it does if ``run`` raises. Such
    runs do not outlive the server: one running when the server stops is an
    error at the next start. See docs/extensions.md.
    """

    runs_process: ClassVar[bool] = False
    default_timeout: ClassVar[float] = 60.0

    timeout: float | None = None

    @classmethod
    def _read(cls, f: Fields, allow_templates: bool) -> dict:
        """The ``timeout:`` key; a subclass adds its own keys to what this returns."""
        return {"timeout": f.take("timeout", _or_template(positive_duration, allow_templates), None)}

    def to_jso(self) -> dict:
        jso = {"type": self.type_name}
        if self.timeout is not None:
            jso["timeout"] = self.timeout
        return jso

    @property
    def time_limit(self) -> float:
        return float(self.timeout) if self.timeout is not None else self.default_timeout

    def run(self, context: ServerContext) -> Outcome | None:
        raise NotImplementedError


def parse_program(jso, *, allow_templates=False) -> Program:
    """The Program for a job file's ``program:``; SpecError lists every problem.

    A string is a shell command and a list an argv. A mapping names its
    ``type:``; without one, ``command:`` means shell and ``argv:`` program
    (apsis's documentation writes shell programs that way).
    """
    try:
        if isinstance(jso, str):
            return ShellProgram(command=nonempty_text(jso))
        if isinstance(jso, list):
            return ArgvProgram(words=_argv(jso))
    except SpecError:
        raise
    except ValueError as exc:  # the shorthand forms: the whole value is what is wrong
        raise SpecError("", str(exc)) from None
    if not isinstance(jso, dict):
        raise SpecError("", f"expected a command, an argv list or a mapping, got {_kind(jso)}")
    name = jso.get("type")
    if name is None:
        if "command" in jso:
            name = "shell"
        elif "argv" in jso:
            name = "program"
        else:
            known = ", ".join(n for n in PROGRAMS.names() if "." not in n)
            raise SpecError("type", f"missing (required; known: {known})")
    try:
        cls = PROGRAMS.get(name)
    except KeyError as exc:
        raise SpecError("type", exc.args[0]) from None
    if not cls.is_noop and cls.argv is Program.argv and getattr(cls, "run", ServerProgram.run) is ServerProgram.run:
        # An extension's type that can be neither started nor run: say so now,
        # not when its first run is due.
        raise SpecError("type", f"program type {name!r} ({cls.__module__}.{cls.__qualname__}) defines "
                                "neither argv() (a process) nor run() (a ServerProgram); see docs/extensions.md")
    return cls.from_jso(jso, allow_templates=allow_templates)
