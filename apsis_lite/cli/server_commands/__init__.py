"""CLI commands that talk to a running server through its JSON API.

``register(group)`` adds them to the ``apsis-lite`` group. Each takes
``--url`` (default ``$APSIS_LITE_URL``, else ``server.url`` in the default
data folder, else http://127.0.0.1:5005; see ``client.resolve_url``) and
``--token`` (default ``$APSIS_LITE_TOKEN``, else the local token beside
that ``server.url``; see ``client.resolve_token``), and turns
a ``ClientError`` into a one-line ``click.ClickException`` (exit status 1).
The commands about runs are in ``run_commands``, those about jobs and pauses
in ``job_commands``, the sanity check in ``sanity_commands``, what they share
in ``options``; the pure helpers they
use (``cli.arguments``, ``cli.formatting``) are tested without a server.
"""

import click

from apsis_lite.cli.server_commands.job_commands import jobs_cmd, job_cmd, pause_cmd, reload_cmd, resume_cmd
from apsis_lite.cli.server_commands.run_commands import (
    explain_cmd, mark_cmd, output_cmd, rerun_cmd, run_cmd, runs_cmd, show_cmd, signal_cmd, skip_cmd, start_cmd,
    stop_cmd,
)
from apsis_lite.cli.server_commands.sanity_commands import sanity_cmd

# Names imported from this module before it became a package (the tests still do).
from apsis_lite.cli.arguments import (
    normalize_run_id, parse_assignments, parse_when, program_from_argv,
)
from apsis_lite.cli.formatting import (
    exit_status, format_args, format_pause, format_reload, format_rusage, format_table, format_time,
    format_value, quote_word,
)

__all__ = [
    "COMMANDS", "register",
    "normalize_run_id", "parse_assignments", "parse_when", "program_from_argv",
    "exit_status", "format_args", "format_pause", "format_reload", "format_rusage", "format_table", "format_time",
    "format_value", "quote_word",
]

COMMANDS = (
    run_cmd, jobs_cmd, job_cmd, runs_cmd, show_cmd, explain_cmd, output_cmd,
    rerun_cmd, stop_cmd, signal_cmd, skip_cmd, start_cmd, mark_cmd, reload_cmd,
    pause_cmd, resume_cmd, sanity_cmd,
)


def register(group: click.Group) -> None:
    """Add the client commands to the ``apsis-lite`` group."""
    for cmd in COMMANDS:
        group.add_command(cmd)
