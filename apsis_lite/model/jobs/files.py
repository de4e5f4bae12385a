"""Job files and the jobs directory: finding, reading and loading them.

The job id is a file's path under the jobs directory without its suffix.
Whatever a file holds, loading it raises nothing but that file's errors: it
is read only up to MAX_JOB_FILE_BYTES, its YAML through ``safe_yaml``, and
an unexpected failure becomes its error.
"""

from __future__ import annotations

import logging
import os

import yaml

from apsis_lite.config import DEFAULT_MIN_INTERVAL
from apsis_lite.errors import JobFileError
from apsis_lite.model.jobs.job import Job, JobErrors
from apsis_lite.model.jobs.reading import job_from_jso
from apsis_lite.model.jobs.safe_yaml import _YamlLimit, _load_yaml, _yaml_error

# Under the package's name, as the job loader has always logged.
log = logging.getLogger("apsis_lite.model")

# What one job file may be: a document far larger than any job needs is a
# mistake or an attack, and reading it must not cost the server its memory.
MAX_JOB_FILE_BYTES = 1 << 20

JOB_FILE_SUFFIXES = (".yaml", ".yml")


def job_file_entries(root: str, errors: list, dirs: list | None = None, rel: str = ""):
    """``(relative path, DirEntry)`` of each job file under ``root``; hidden names are
    skipped, directory links not followed.

    A directory that cannot be read is added to ``errors`` and skipped; each one
    read is appended to ``dirs`` if given. A file that vanishes while it is looked
    at is skipped: the next scan sees it gone.
    """
    path = os.path.join(root, rel) if rel else root
    try:
        with os.scandir(path) as it:
            entries = list(it)
    except OSError as exc:
        errors.append(JobFileError(path, None, f"cannot read directory: {exc.strerror}"))
        return
    if dirs is not None:
        dirs.append(path)
    for entry in entries:
        if entry.name.startswith("."):
            continue
        sub = os.path.join(rel, entry.name) if rel else entry.name
        try:
            is_dir = entry.is_dir(follow_symlinks=False)
            is_job = not is_dir and entry.name.endswith(JOB_FILE_SUFFIXES) and entry.is_file()
        except OSError:
            continue
        if is_dir:
            yield from job_file_entries(root, errors, dirs, sub)
        elif is_job:
            yield sub, entry


def load_job_file(path, job_id: str, calendars=None, *, min_interval=DEFAULT_MIN_INTERVAL,
                  sudo_for_user=False) -> Job:
    """Read and validate one job file; JobErrors names the file and every problem.

    Whatever the file holds, JobErrors is all this raises: an unexpected
    failure is logged with its traceback and reported as the file's problem.
    """
    path = os.fspath(path)
    try:
        return _load_job_file(path, job_id, calendars, min_interval, sudo_for_user)
    except JobErrors:
        raise
    except Exception as exc:
        if isinstance(exc, RecursionError):
            msg = "cannot load: nested too deeply"
        elif isinstance(exc, MemoryError):
            msg = "cannot load: out of memory"
        else:
            msg = f"cannot load: {type(exc).__name__}: {exc}"
        log.warning("job file %s: %s", path, msg, exc_info=True)
        raise JobErrors([JobFileError(path, None, msg)]) from None


def _load_job_file(path, job_id, calendars, min_interval, sudo_for_user):
    try:
        with open(path, "rb") as file:
            # Read what stat says is there (a read of MAX_JOB_FILE_BYTES would
            # allocate that much for every file), then more only if it grew.
            size = min(os.fstat(file.fileno()).st_size, MAX_JOB_FILE_BYTES)
            data = file.read(size + 1)
            if len(data) > size:
                data += file.read(MAX_JOB_FILE_BYTES + 1 - len(data))
    except OSError as exc:
        raise JobErrors([JobFileError(path, None, f"cannot read: {exc.strerror}")]) from None
    if len(data) > MAX_JOB_FILE_BYTES:
        raise JobErrors([JobFileError(
            path, None, f"too large: more than {MAX_JOB_FILE_BYTES:,} bytes (1 MiB)")])
    try:
        jso = _load_yaml(data)
    except yaml.YAMLError as exc:
        raise JobErrors([JobFileError(path, None, _yaml_error(exc))]) from None
    except _YamlLimit as exc:
        raise JobErrors([JobFileError(path, None, f"not accepted as YAML: {exc}")]) from None
    except RecursionError:
        raise JobErrors([JobFileError(path, None, "not valid YAML: nested too deeply")]) from None
    if jso is None:
        raise JobErrors([JobFileError(path, None, "empty job file")])
    return job_from_jso(jso, job_id, path, calendars=calendars, min_interval=min_interval,
                        sudo_for_user=sudo_for_user)


def load_jobs_dir(path, calendars=None, *, min_interval=DEFAULT_MIN_INTERVAL, sudo_for_user=False
                  ) -> tuple[dict[str, Job], list[JobFileError]]:
    """Load every ``*.yaml``/``*.yml`` under ``path``; a bad file is reported and skipped.

    The job id is the path relative to ``path`` without the suffix, with
    ``/`` separators. Returns the jobs by id and the errors, in path order.
    ``calendars`` (from ``calendars.load_calendars``) resolves calendar names;
    None knows the weekday sets and shipped calendars only. ``min_interval``
    is the config setting: the shortest interval a schedule may have;
    ``sudo_for_user`` the setting that lets ``user:`` switch through sudo.
    """
    root = os.fspath(path)
    jobs, errors, files = {}, [], {}
    for rel in sorted(rel for rel, _ in job_file_entries(root, errors)):
        file = os.path.join(root, rel)
        job_id = os.path.splitext(rel)[0].replace(os.sep, "/")
        if job_id in files:
            errors.append(JobFileError(file, None, f"duplicate job id {job_id!r} (also {files[job_id]})"))
            continue
        files[job_id] = file
        try:
            jobs[job_id] = load_job_file(file, job_id, calendars, min_interval=min_interval,
                                         sudo_for_user=sudo_for_user)
        except JobErrors as exc:
            errors.extend(exc.errors)
    return jobs, errors
