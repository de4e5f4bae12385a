"""``apsis-lite sanity``: what the server's sanity checker finds, checked now."""

import sys

import click

from apsis_lite.cli.client import Client, ClientError
from apsis_lite.cli.formatting import format_table
from apsis_lite.cli.server_commands.options import json_option, print_json, table_width, url_option

# Exit statuses: nothing found, findings, no answer (the check could not be done).
OK, FINDINGS, FAILED = 0, 1, 2


class CheckFailed(click.ClickException):
    exit_code = FAILED


@click.command("sanity")
@json_option
@url_option
def sanity_cmd(as_json, url):
    """Check the scheduler now: runs past due, late or lost, jobs with no run planned
    or that keep failing, processes that outlived their run.

    Exit status 0 if nothing is found, 1 if something is, 2 if the check could
    not be done (the server cannot be reached, or a check failed).
    """
    ctx = click.get_current_context()
    try:
        report = Client(url, token=ctx.meta.get("apsis_token")).get("/sanity")
    except ClientError as exc:
        raise CheckFailed(exc.message) from None
    findings, problems = report.get("findings") or [], report.get("problems") or []
    if as_json:
        print_json(report)
    else:
        if findings:
            rows = [(f["kind"], f.get("run_id") or "", f.get("job_id") or "", f["reason"]) for f in findings]
            click.echo(format_table(("KIND", "RUN", "JOB", "REASON"), rows, table_width(), shrink=(2, 3)))
        else:
            click.echo("nothing found")
        for problem in problems:
            click.echo(f"could not check {problem}", err=True)
    if problems:
        sys.exit(FAILED)
    sys.exit(FINDINGS if findings else OK)
