"""Offline tools over a jobs folder, for the command line: no server, no database.

* ``folder_warnings``: what loads but looks wrong (dependencies and
  successors naming jobs that do not exist, args the other job does not
  take or lacks, schedules that never fill a param or never run again).
* ``find_job``: one job by id, or a message naming close matches.
* ``due_times`` and ``zone_changes``: the next due times, merged as the
  engine merges them, and the clock changes between them.
* ``run_locally``: one run of a bound program in this terminal.

Schedules are used only through their interface (``times``, ``describe``,
``enabled``), so new schedule types work here unchanged.
"""

from __future__ import annotations

import difflib
import heapq
import json
import math
import os
import select
import signal
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import yaml

from apsis_lite.errors import ApsisError, JobFileError
from apsis_lite.model.jobs import JOB_FILE_SUFFIXES, Job, args_from_schedule, load_job_file
from apsis_lite.model.schedules import is_template
from apsis_lite.timeutil import UTC, format_duration, from_epoch, get_tz

# --------------------------------------------------------------------------
# Zones.


def local_zone_name() -> str | None:
    """The IANA name of this machine's zone (``$TZ``, else /etc/localtime), or None."""
    candidates = []
    tz = os.environ.get("TZ", "").lstrip(":")
    if tz:
        candidates.append(tz.split("/zoneinfo/", 1)[-1] if tz.startswith("/") else tz)
    try:
        target = os.path.realpath("/etc/localtime")
        if "/zoneinfo/" in target:
            candidates.append(target.split("/zoneinfo/", 1)[1])
    except OSError:
        pass
    try:
        with open("/etc/timezone") as f:
            candidates.append(f.read().strip())
    except OSError:
        pass
    for name in candidates:
        try:
            get_tz(name)
            return name
        except ValueError:
            continue
    return None


# --------------------------------------------------------------------------
# Finding a job.


class UnknownJob(ApsisError):
    status = 404


def job_ids(root: str) -> list[str]:
    """Every job id under ``root``, as the loader names them (hidden names skipped, links to folders not followed)."""
    ids = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        rel = os.path.relpath(folder, root)
        for name in files:
            if name.startswith(".") or not name.endswith(JOB_FILE_SUFFIXES):
                continue
            path = name if rel == "." else os.path.join(rel, name)
            ids.append(os.path.splitext(path)[0].replace(os.sep, "/"))
    return sorted(set(ids))


def close_matches(word: str, candidates, n: int = 3) -> list[str]:
    """Candidates like ``word``: the best spellings (a close second too), then those containing it."""
    scored = []
    for c in candidates:
        m = difflib.SequenceMatcher(None, word, c)
        if m.real_quick_ratio() >= 0.6 and m.quick_ratio() >= 0.6 and m.ratio() >= 0.6:
            scored.append((m.ratio(), c))
    scored.sort(key=lambda rc: (-rc[0], rc[1]))
    found = [c for r, c in scored if r >= scored[0][0] - 0.05]
    low = word.lower()
    found += [c for c in candidates if low in c.lower() and c not in found]
    return found[:n]


def find_job(root: str, job_id: str, **load_options) -> Job:
    """The job ``job_id`` in the folder ``root``.

    Reads only that job's file (``load_options`` go to ``load_job_file``).
    UnknownJob names close matches; a file that does not load raises
    JobErrors with every problem in it.
    """
    parts = job_id.split("/")
    if job_id and not any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        for suffix in JOB_FILE_SUFFIXES:
            path = os.path.join(root, *parts) + suffix
            if os.path.isfile(path):
                return load_job_file(path, job_id, **load_options)
    msg = f"no job {job_id!r} in {root}"
    close = close_matches(job_id, job_ids(root))
    if close:
        msg += f" (did you mean {', '.join(map(repr, close))}?)"
    raise UnknownJob(msg)


# --------------------------------------------------------------------------
# Warnings about a folder that loads.


def _file_keys(job: Job):
    """The keys the job's conditions and actions have in its file: ``condition[0]``, ``successors``, ..."""
    raw = {}
    if job.path:
        try:
            with open(job.path, "rb") as f:
                raw = yaml.safe_load(f) or {}
        except (OSError, yaml.YAMLError):
            raw = {}

    def keys(name):
        value = raw.get(name) if isinstance(raw, dict) else None
        if value is None:
            return []
        return [f"{name}[{i}]" for i in range(len(value))] if isinstance(value, list) else [name]

    cond_keys = keys("condition")
    action_keys = keys("action") + keys("successors")
    # Should the file have changed since it was loaded, fall back to plain positions.
    if len(cond_keys) != len(job.conditions):
        cond_keys = [f"condition[{i}]" for i in range(len(job.conditions))]
    if len(action_keys) != len(job.actions):
        action_keys = [f"action[{i}]" for i in range(len(job.actions))]
    return cond_keys, action_keys


def _reference_problems(job: Job, target_id, args: dict, jobs: dict, known: set):
    """(subkey, message) for a reference from ``job`` to another job by id."""
    if not isinstance(target_id, str) or is_template(target_id):
        return  # known only once bound
    if target_id not in known:
        msg = f"no job {target_id!r} in this folder"
        close = close_matches(target_id, sorted(known), n=1)
        if close:
            msg += f" (did you mean {close[0]!r}?)"
        yield "job_id", msg
        return
    target = jobs.get(target_id)
    if target is None:
        return  # it failed to load; its own errors say why
    for name in args:
        if name not in target.params:
            yield f"args.{name}", (f"job {target_id!r} has no param {name!r} "
                                   f"(params: {', '.join(target.params) or 'none'})")
    for name in target.params:
        if name not in args and name not in job.params:
            yield "args", (f"no value for {target_id!r}'s param {name!r}: give it under args "
                           f"(it is not a param of this job, so it is not passed through)")


def _schedule_problems(job: Job, now: datetime):
    """(key, message) for schedules that never fill a param or have no due time after ``now``."""
    many = len(job.schedules) > 1
    enabled = [s for s in job.schedules if s.enabled]
    if job.schedules and not enabled:
        yield "schedule", "every schedule is disabled: the job runs only when started by hand"
    for i, schedule in enumerate(job.schedules):
        if not schedule.enabled:
            continue
        key = f"schedule[{i}]" if many else "schedule"
        first = next(iter(schedule.times(now)), None)
        if first is None:
            yield key, f"no due times left ({schedule.describe()})"
            continue
        _, supplied = first
        missing = [p for p in job.params if p not in supplied]
        if missing:
            yield key, (f"gives no value for param{'s' if len(missing) > 1 else ''} "
                        f"{', '.join(map(repr, missing))} ({schedule.describe()})")


def failed_job_ids(root: str, errors) -> set:
    """Ids of the job files behind ``errors`` (files that exist but did not load)."""
    ids = set()
    for err in errors:
        rel = os.path.relpath(err.path, root)
        base, suffix = os.path.splitext(rel)
        if suffix in JOB_FILE_SUFFIXES and not rel.startswith(".."):
            ids.add(base.replace(os.sep, "/"))
    return ids


def folder_warnings(jobs: dict, errors, root: str, now: datetime) -> list[JobFileError]:
    """Warnings for jobs that load but look wrong; ``now`` is when "no more due times" is judged.

    Loading already rejects a schedule that cannot fill a param; what is
    left is what only the folder as a whole, or the schedule's actual
    times, can show.
    """
    known = set(jobs) | failed_job_ids(root, errors)
    warnings = []
    for job_id in sorted(jobs):
        job = jobs[job_id]
        where = job.path or job_id
        try:
            _job_warnings(job, jobs, known, now, where, warnings)
        except Exception as exc:  # an extension's schedule, say: report it, check the other jobs
            warnings.append(JobFileError(where, None, f"cannot check: {type(exc).__name__}: {exc}"))
    return warnings


def _job_warnings(job, jobs, known, now, where, warnings):
    """Append the warnings for one job."""
    cond_keys, action_keys = _file_keys(job)
    for key, cond in zip(cond_keys, job.conditions):
        if cond.get("type") == "dependency":
            for sub, msg in _reference_problems(job, cond.get("job_id"), cond.get("args") or {},
                                                jobs, known):
                warnings.append(JobFileError(where, f"{key}.{sub}", msg))
    for key, action in zip(action_keys, job.actions):
        if action.get("type") == "schedule":
            # A successors entry written as a bare job id has no job_id key.
            for sub, msg in _reference_problems(job, action.get("job_id"),
                                                action.get("args") or {}, jobs, known):
                bare = key.startswith("successors") and sub == "job_id"
                warnings.append(JobFileError(where, key if bare else f"{key}.{sub}", msg))
    for key, msg in _schedule_problems(job, now):
        warnings.append(JobFileError(where, key, msg))


# --------------------------------------------------------------------------
# Due times and clock changes.


def due_times(job: Job, start: datetime, count: int) -> list[tuple[datetime, dict]]:
    """The next ``count`` due times of ``job`` at or after ``start``, with their run args.

    Enabled schedules are merged as the engine merges them; a slot (time,
    args) that two schedules both give is one run, so it is listed once.
    """
    merged = heapq.merge(*(s.times(start) for s in job.schedules if s.enabled),
                         key=lambda ta: ta[0])
    out, seen_at, seen = [], None, set()
    for t, supplied in merged:
        args = args_from_schedule(job, supplied)
        if t != seen_at:
            seen_at, seen = t, set()
        slot = json.dumps(args, sort_keys=True)
        if slot in seen:
            continue
        seen.add(slot)
        out.append((t, args))
        if len(out) >= count:
            break
    return out


@dataclass(frozen=True)
class ZoneChange:
    """A change of a zone's UTC offset: at ``at`` (UTC), from one offset and name to another."""

    at: datetime
    before: timedelta
    after: timedelta
    before_name: str
    after_name: str

    def describe(self) -> str:
        """``clocks go forward 1 h (EST → EDT) on 2026-03-08 at 02:00``."""
        delta = (self.after - self.before).total_seconds()
        way = "forward" if delta > 0 else "back"
        wall = self.at + self.before  # the wall clock just before the change, as it reads
        when = wall.strftime("on %Y-%m-%d at %H:%M")
        names = f"{self.before_name} → {self.after_name}"
        return f"clocks go {way} {format_duration(abs(delta))} ({names}) {when}"


def _offset(zone, t: datetime):
    local = t.astimezone(zone)
    return local.utcoffset(), zone_label(local)


def zone_label(local: datetime) -> str:
    """``EST``, or the offset (``+10:30``) where the zone has no abbreviation."""
    name = local.tzname() or ""
    if not name or name[0] in "+-" or name[0].isdigit():
        return _format_offset(local.utcoffset())
    return name


def _format_offset(offset: timedelta) -> str:
    seconds = int(offset.total_seconds())
    sign = "-" if seconds < 0 else "+"
    hours, rest = divmod(abs(seconds), 3600)
    return f"{sign}{hours:02d}:{rest // 60:02d}"


def zone_changes(zone, start: datetime, end: datetime) -> list[ZoneChange]:
    """Every change of ``zone``'s UTC offset in (start, end], to the second.

    Steps of a day find the changes (zones change at most twice a year, and
    never twice in one day); bisection then finds each instant. Very long
    spans are stepped more coarsely, so that looking costs at most ~500 steps.
    """
    if zone is UTC or end <= start:
        return []
    step = max(timedelta(days=1), (end - start) / 500)
    changes = []
    a, (a_off, a_name) = start, _offset(zone, start)
    while a < end:
        b = min(a + step, end)
        b_off, b_name = _offset(zone, b)
        if b_off != a_off:
            # Offsets change at whole seconds: narrow down to one second,
            # then the change is the whole second just after ``lo``.
            lo, hi = a.timestamp(), b.timestamp()
            while hi - lo > 1:
                mid = (lo + hi) / 2
                if _offset(zone, from_epoch(mid))[0] == a_off:
                    lo = mid
                else:
                    hi = mid
            at = from_epoch(math.floor(lo) + 1)
            changes.append(ZoneChange(at=at, before=a_off, after=b_off,
                                      before_name=a_name, after_name=_offset(zone, at)[1]))
        a, a_off, a_name = b, b_off, b_name
    return changes


def format_local(t: datetime, zone) -> str:
    """``2026-03-08 Sun 03:00:00 EDT`` (with microseconds when the time has them)."""
    local = t.astimezone(zone)
    spec = "%Y-%m-%d %a %H:%M:%S" + (".%f" if local.microsecond else "")
    return f"{local.strftime(spec)} {zone_label(local)}"


def iso_local(t: datetime, zone) -> str:
    """ISO 8601 in ``zone`` with its offset, to the second (microseconds when present)."""
    local = t.astimezone(zone)
    return local.isoformat(timespec="microseconds" if local.microsecond else "seconds")


# --------------------------------------------------------------------------
# Showing a bound job.


class _Dumper(yaml.SafeDumper):
    """Block style, multi-line strings as ``|`` literals: how a person writes a job file."""


def _str(dumper, value):
    style = "|" if "\n" in value and value.strip() else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def to_yaml(value) -> str:
    return yaml.dump(value, Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                     allow_unicode=True, width=100)


# --------------------------------------------------------------------------
# Running a program here.


class CannotRun(ApsisError):
    status = 400


def run_env(program, job_id: str, args: dict, base_env=None) -> dict:
    """The environment the server gives a run: its own, the job's ``env``, then the APSIS_* variables."""
    env = dict(os.environ if base_env is None else base_env)
    env.update(program.env or {})
    env["APSIS_RUN_ID"] = "r0"  # no such run: a trial is not recorded
    env["APSIS_JOB_ID"] = job_id
    env["APSIS_ARGS"] = json.dumps(args, sort_keys=True)
    for name, value in args.items():
        env[f"APSIS_ARG_{name}"] = str(value)
    return env


def local_argv(program) -> list[str]:
    """The argv to run here; CannotRun says why a program cannot be run on this machine."""
    if getattr(program, "host", None):
        raise CannotRun(f"the program runs on host {program.host!r}; --run runs programs "
                        "on this machine only")
    user = getattr(program, "user", None)
    if user and user != _current_user():
        raise CannotRun(f"the program runs as user {user!r}, not {_current_user()!r}")
    try:
        return program.argv()
    except TypeError:
        raise CannotRun(f"a {program.type_name} program cannot be run from the command line") from None


def _current_user() -> str:
    import pwd
    return pwd.getpwuid(os.getuid()).pw_name


@dataclass
class LocalResult:
    """How a local run ended: ``exit_code`` as a shell reports it (128 + signal number)."""

    exit_code: int
    signal: str | None
    timed_out: bool
    stopped: bool
    elapsed: float


def run_locally(program, job_id: str, args: dict, *, say=print, announce=None,
                stdout=None, stderr=None) -> LocalResult:
    """Run a bound program once, here, as the server would, and wait for it.

    The program gets its own session and process group, stdin from
    /dev/null, the job's env and cwd (home without one) and the APSIS_*
    variables. Its timeout sends the timeout signal to the whole group and
    SIGKILL after the stop grace period. Ctrl-C (SIGINT) or SIGTERM sends
    the job's stop signal to the group, SIGKILL after the grace period; a
    second Ctrl-C kills at once. As on the server, a stop or a timeout is
    over only when the whole group is: what the program leaves in its group
    gets the SIGKILL too, even once the program itself has exited.
    ``say`` reports these steps to a person, starting with ``announce``
    once the program can be started.
    """
    argv = local_argv(program)
    cwd = program.cwd or os.path.expanduser("~")
    if not os.path.isdir(cwd):
        raise CannotRun(f"cannot start: no folder {cwd!r} (the program's cwd)")
    if announce:
        say(announce)
    # From here on Ctrl-C or SIGTERM must stop the program, never leave it behind:
    # one arriving while the program starts is held until the wait loop takes it.
    interrupts = _Interrupts()
    previous = {sig: signal.signal(sig, interrupts) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return _start_and_wait(program, job_id, args, argv, cwd, say, stdout, stderr, interrupts)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _Interrupts:
    """A SIGINT/SIGTERM handler that raises KeyboardInterrupt only while ``armed``.

    A signal that arrives while disarmed is counted in ``pending`` and taken
    by the next ``wait()``, so none is lost and none escapes the wait loop.
    """

    def __init__(self):
        self.armed = False
        self.pending = 0

    def __call__(self, signum, frame):
        if self.armed:
            self.armed = False
            raise KeyboardInterrupt
        self.pending += 1

    def wait(self, fn, *args):
        """``fn(*args)``, which a signal interrupts with KeyboardInterrupt."""
        self.armed = True
        try:
            if self.pending:
                self.armed = False
                self.pending -= 1
                raise KeyboardInterrupt
            return fn(*args)
        finally:
            self.armed = False


class _Exit:
    """Waits for a child to exit without reaping it (see ``agent.exited_unreaped``):
    its group can be signalled until ``reap``."""

    def __init__(self, proc):
        self.proc = proc
        try:
            self.pidfd = os.pidfd_open(proc.pid)  # readable once the child has exited
        except (AttributeError, OSError):  # an old kernel: look every 10 ms instead
            self.pidfd = None

    def wait(self, timeout) -> bool:
        """True once the child has exited; False after ``timeout`` seconds (None: no limit)."""
        from apsis_lite.agent import exited_unreaped
        if self.pidfd is None:
            deadline = None if timeout is None else time.monotonic() + timeout
            while not exited_unreaped(self.proc.pid):
                if deadline is not None and time.monotonic() >= deadline:
                    return False
                time.sleep(0.01 if deadline is None else max(0.0, min(0.01, deadline - time.monotonic())))
            return True
        poller = select.poll()
        poller.register(self.pidfd, select.POLLIN)
        poller.poll(None if timeout is None else math.ceil(timeout * 1000))
        return exited_unreaped(self.proc.pid)

    def reap(self) -> int:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None
        return self.proc.wait()


def _start_and_wait(program, job_id, args, argv, cwd, say, stdout, stderr, interrupts):
    timeout = program.timeout
    stop = dict(program.stop)
    started = time.monotonic()
    try:
        proc = subprocess.Popen(argv, env=run_env(program, job_id, args), cwd=cwd,
                                stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                                start_new_session=True)
    except OSError as exc:
        raise CannotRun(f"cannot run {argv[0]!r}: {exc.strerror}") from None
    exit_ = _Exit(proc)

    def signal_group(sig):
        # Only before the program is reaped: afterwards its pgid may be someone else's.
        if proc.returncode is None:
            try:
                os.killpg(proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    timeout_at = started + float(timeout["duration"]) if timeout else None
    kill_at = killed_at = None
    timed_out = stopped = False
    stops = 0
    while True:
        try:
            deadlines = [d for d in (timeout_at, kill_at) if d is not None]
            wait = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
            if interrupts.wait(exit_.wait, wait):
                break
            now = time.monotonic()
            if timeout_at is not None and now >= timeout_at:
                timeout_at = None
                timed_out = True
                say(f"timed out after {format_duration(timeout['duration'])}: "
                    f"sending {timeout['signal']} to the process group")
                signal_group(signal.Signals[timeout["signal"]])
                kill_at = min(kill_at or float("inf"), now + stop["grace_period"])
            if kill_at is not None and now >= kill_at:
                kill_at = None
                say("still running: sending SIGKILL to the process group")
                signal_group(signal.SIGKILL)
                killed_at = now
        except KeyboardInterrupt:
            stops += 1
            stopped = True
            timeout_at = None
            if stops == 1:
                say(f"stopping: sending {stop['signal']} to the process group "
                    f"(SIGKILL in {format_duration(stop['grace_period'])}; Ctrl-C again to kill now)")
                signal_group(signal.Signals[stop["signal"]])
                kill_at = time.monotonic() + stop["grace_period"]
            else:
                say("killing: sending SIGKILL to the process group")
                signal_group(signal.SIGKILL)
                kill_at, killed_at = None, time.monotonic()
    if stopped or timed_out:
        _settle_group(proc.pid, kill_at, killed_at, signal_group, say, interrupts)
    code = exit_.reap()
    sig = None
    if code < 0:
        sig = signal.Signals(-code).name
        code = 128 - code
    return LocalResult(exit_code=code, signal=sig, timed_out=timed_out, stopped=stopped,
                       elapsed=time.monotonic() - started)


def _settle_group(pgid, kill_at, killed_at, signal_group, say, interrupts):
    """The program exited during a stop or a timeout: wait for the rest of its
    group as the server does (see ``agent._Shepherd._settle_group``), sending
    it SIGKILL when the grace period ends (or at Ctrl-C), and giving up on
    members still there KILL_WAIT after that."""
    from apsis_lite.agent import KILL_WAIT, SETTLE_POLL_MAX, SETTLE_POLL_MIN, group_members
    pause = SETTLE_POLL_MIN
    waited = False
    while members := group_members(pgid):
        now = time.monotonic()
        if killed_at is not None and now >= killed_at + KILL_WAIT:
            say(f"{_processes(len(members))} of the group still there {KILL_WAIT:.0f} s after SIGKILL; "
                "not waiting for them")
            return
        if kill_at is not None and now >= kill_at:
            say(f"sending SIGKILL to the {_processes(len(members))} the program left in its group")
            signal_group(signal.SIGKILL)
            killed_at, kill_at, pause = now, None, SETTLE_POLL_MIN
            continue
        if not waited:
            say(f"the program exited; waiting for the {_processes(len(members))} it left in its group")
            waited = True
        wait = pause
        for deadline in (kill_at, None if killed_at is None else killed_at + KILL_WAIT):
            if deadline is not None:
                wait = min(wait, max(0.0, deadline - now))
        try:
            interrupts.wait(time.sleep, wait)
        except KeyboardInterrupt:
            if killed_at is None:
                kill_at = time.monotonic()  # kill now
            continue
        pause = min(pause * 2, SETTLE_POLL_MAX)


def _processes(count: int) -> str:
    return f"{count} process" if count == 1 else f"{count} processes"


def no_op_result(program) -> LocalResult:
    """What a no-op program does here: waits its ``duration``, then succeeds (or fails if told to)."""
    duration = program.duration if isinstance(program.duration, (int, float)) else 0
    started = time.monotonic()
    stopped = False
    try:
        time.sleep(duration)
    except KeyboardInterrupt:
        stopped = True
    return LocalResult(exit_code=0 if program.success and not stopped else 1, signal=None,
                       timed_out=False, stopped=stopped, elapsed=time.monotonic() - started)
