"""Jobs: strict job files → ``Job`` values, the jobs directory, args and binding.

``job`` holds the Job value and JobErrors; ``reading`` builds a Job from a
job file's contents, key by key, reporting every problem; ``safe_yaml``
reads a file's YAML within limits; ``files`` finds and loads the job files
of a directory; ``templates`` checks and renders the Jinja2 templates in a
job; ``binding`` checks a run's args and binds a job's templates to them.
The names below were always imported from ``apsis_lite.model.jobs``.
"""

from apsis_lite.model.jobs.binding import args_from_schedule, bind, bind_program, check_args
from apsis_lite.model.jobs.files import JOB_FILE_SUFFIXES, MAX_JOB_FILE_BYTES, load_job_file, load_jobs_dir
from apsis_lite.model.jobs.job import Job, JobErrors, describe_schedule
from apsis_lite.model.jobs.reading import CATCH_UP_MISSED, JOB_KEYS, adhoc_job, job_from_jso, parse_catch_up
from apsis_lite.model.jobs.safe_yaml import MAX_ALIAS_NODES, MAX_YAML_DEPTH
from apsis_lite.model.jobs.templates import MAX_TEMPLATE_CHARS, _template_names

__all__ = [
    "JOB_FILE_SUFFIXES", "MAX_JOB_FILE_BYTES", "Job", "JobErrors", "describe_schedule",
    "CATCH_UP_MISSED", "JOB_KEYS", "adhoc_job", "job_from_jso", "parse_catch_up",
    "MAX_ALIAS_NODES", "MAX_YAML_DEPTH", "MAX_TEMPLATE_CHARS",
    "args_from_schedule", "bind", "bind_program", "check_args", "load_job_file", "load_jobs_dir",
]
