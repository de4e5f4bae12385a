"""Offline tools over a jobs folder, for the command line: no server, no database.

* ``folder_checks.folder_warnings``: what loads but looks wrong (dependencies
  and successors naming jobs that do not exist, args the other job does not
  take or lacks, schedules that never fill a param or never run again).
* ``job_lookup.find_job``: one job by id, or a message naming close matches.
* ``schedule_preview.due_times`` and ``zone_changes``: the next due times,
  merged as the engine merges them, and the clock changes between them.
* ``local_run.run_locally``: one run of a bound program in this terminal.
* ``job_yaml.to_yaml``: a bound job shown as a job file.

Schedules are used only through their interface (``times``, ``describe``,
``enabled``), so new schedule types work here unchanged. The names are
imported from this package, as they were from the one module it was.
"""

from apsis_lite.cli.offline.folder_checks import failed_job_ids, folder_warnings
from apsis_lite.cli.offline.job_lookup import UnknownJob, close_matches, find_job, job_ids
from apsis_lite.cli.offline.job_yaml import to_yaml
from apsis_lite.cli.offline.local_run import CannotRun, LocalResult, local_argv, no_op_result, run_env, run_locally
from apsis_lite.cli.offline.schedule_preview import (
    ZoneChange, due_times, format_local, iso_local, local_zone_name, zone_changes, zone_label,
)

__all__ = [
    "folder_warnings", "failed_job_ids", "UnknownJob", "close_matches", "find_job", "job_ids", "to_yaml",
    "CannotRun", "LocalResult", "local_argv", "no_op_result", "run_env", "run_locally", "ZoneChange", "due_times",
    "format_local", "iso_local", "local_zone_name", "zone_changes", "zone_label",
]
