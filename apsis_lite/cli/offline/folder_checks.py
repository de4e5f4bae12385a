"""Warnings about a jobs folder that loads but looks wrong (``check-jobs``).

Dependencies and successors naming jobs that do not exist, args the other
job does not take or lacks, schedules that never fill a param or never run
again, params put into a shell command unquoted. Schedules are used only through their interface (``times``,
``describe``, ``enabled``), so new schedule types are checked unchanged.
"""

from __future__ import annotations

import os
from datetime import datetime

import yaml

from apsis_lite.cli.offline.job_lookup import close_matches
from apsis_lite.errors import BadRequest, JobFileError
from apsis_lite.model.fields import is_template
from apsis_lite.model.jobs import JOB_FILE_SUFFIXES, Job, args_from_schedule
from apsis_lite.model.jobs.shell_quoting import advice, unquoted_params
from apsis_lite.model.programs import DEFAULT_GROUP


def folder_warnings(jobs: dict, errors, root: str, now: datetime, config=None) -> list[JobFileError]:
    """Warnings for jobs that load but look wrong; ``now`` is when "no more due times" is judged.

    Loading already rejects a schedule that cannot fill a param; what is
    left is what only the folder as a whole, or the schedule's actual
    times, can show. With the server's ``config``, a ``host:`` or procstar
    ``group_id`` that names none of its hosts or host groups is warned about too.
    """
    known = set(jobs) | failed_job_ids(root, errors)
    warnings = []
    for job_id in sorted(jobs):
        job = jobs[job_id]
        where = job.path or job_id
        try:
            _job_warnings(job, jobs, known, now, where, warnings)
            if config is not None:
                for key, msg in _host_problems(job, config):
                    warnings.append(JobFileError(where, key, msg))
        except Exception as exc:  # an extension's schedule, say: report it, check the other jobs
            warnings.append(JobFileError(where, None, f"cannot check: {type(exc).__name__}: {exc}"))
    return warnings


def _job_warnings(job, jobs, known, now, where, warnings):
    """Append the warnings for one job."""
    raw = _raw_file(job)
    cond_keys, action_keys = _file_keys(job, raw)
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
    for key, msg in _shell_quoting_problems(job, raw, action_keys):
        warnings.append(JobFileError(where, key, msg))


def _host_problems(job: Job, config):
    """(key, message) for a program's ``host:`` that the config does not define (a run
    would go to an ssh destination of that name) or a procstar ``group_id`` naming no
    host group of the config (its runs would end in error)."""
    program = job.program or {}
    hosts, groups = set(config.hosts or {}), set(config.host_groups or {})
    if "group_id" in program:  # apsis's procstar types: group_id names a group, never a host
        name = program.get("group_id")
        if not isinstance(name, str) or is_template(name) or name in groups:
            return
        what = (f"group_id {name!r}" if name != DEFAULT_GROUP else
                f"no group_id, so the group {DEFAULT_GROUP!r},")
        host = " (it is a host: group_id must name a group)" if name in hosts else _did_you_mean(name, groups)
        yield "program.group_id", (f"{what} names no host group of the config (host_groups:){host}; "
                                   "its runs would end in error")
        return
    name = program.get("host")
    if not isinstance(name, str) or is_template(name) or name in groups or name in hosts:
        return
    yield "program.host", (f"host {name!r} is neither a host (hosts:) nor a host group (host_groups:) of the "
                           f"config{_did_you_mean(name, hosts | groups)}; runs go to the ssh destination "
                           f"{name!r} with ~/.ssh/config's settings")


def _did_you_mean(name, names) -> str:
    close = close_matches(name, sorted(names), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _raw_file(job: Job):
    """The job file's contents as YAML, for its keys; {} if it cannot be read."""
    if not job.path:
        return {}
    try:
        with open(job.path, "rb") as f:
            return yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError):
        return {}


def _shell_quoting_problems(job: Job, raw, action_keys):
    """(key, message) for each param put unquoted into a shell program's or command action's command."""
    commands = []
    if job.program.get("type") == "shell":
        written = raw.get("program") if isinstance(raw, dict) else None
        commands.append(("program" if isinstance(written, str) else "program.command",
                         job.program.get("command")))
    for key, action in zip(action_keys, job.actions):
        if action.get("type") == "command":
            commands.append((f"{key}.command", action.get("command")))
    for key, command in commands:
        if isinstance(command, str) and is_template(command):
            for param, where in unquoted_params(command, job.params, job.param_patterns):
                yield key, advice(param, where)


def _file_keys(job: Job, raw):
    """The keys the job's conditions and actions have in its file: ``condition[0]``, ``successors``, ..."""

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
    """(key, message) for schedules that never fill a param, give one an arg its pattern
    refuses, or have no due time after ``now``."""
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
            continue
        try:
            args_from_schedule(job, supplied)
        except BadRequest as exc:  # a param's pattern refuses what the schedule gives
            yield key, f"its runs will be in error: {exc} ({schedule.describe()})"


def failed_job_ids(root: str, errors) -> set:
    """Ids of the job files behind ``errors`` (files that exist but did not load)."""
    ids = set()
    for err in errors:
        rel = os.path.relpath(err.path, root)
        base, suffix = os.path.splitext(rel)
        if suffix in JOB_FILE_SUFFIXES and not rel.startswith(".."):
            ids.add(base.replace(os.sep, "/"))
    return ids
