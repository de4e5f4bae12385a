"""The client commands about jobs: jobs, job, reload, and pausing (pause, resume)."""

import sys

import click

from apsis_lite.cli.client import quote_id
from apsis_lite.cli.formatting import (
    format_args, format_deadline, format_fields, format_max_duration, format_pause, format_reload, format_table,
    format_time, format_value,
)
from apsis_lite.cli.server_commands.options import (
    api_session, json_option, print_json, table_width, url_option, utc_option,
)


@click.command("jobs")
@click.argument("text", required=False)
@json_option
@url_option
def jobs_cmd(text, as_json, url):
    """List jobs, or those whose id contains TEXT."""
    with api_session(url) as api:
        page = api.get("/jobs", q=text)
        items, errors = list(page["items"]), page.get("errors") or []
        while page.get("next"):  # jobs are few: always list them all
            page = api.get("/jobs", q=text, cursor=page["next"])
            items.extend(page["items"])
        listed = {j["job_id"] for j in items}
        pauses = [p for p in api.get("/pauses")["items"] if p.get("job_id") in listed or not p.get("job_id")]
    if as_json:
        print_json({"items": items, "errors": errors, "pauses": pauses})
        return
    rows = [
        (j["job_id"], ", ".join(j.get("params") or []),
         "; ".join(s.get("description", "") for s in j.get("schedules") or []))
        for j in items
    ]
    click.echo(format_table(("JOB", "PARAMS", "SCHEDULE"), rows, table_width(), shrink=(1, 2)))
    for p in pauses:
        click.echo(f"{p.get('job_id') or 'all jobs'}: {format_pause(p)}")
    if errors:
        click.echo(f"\n{len(errors)} job file(s) failed to load:", err=True)
        for e in errors:
            where = f"{e.get('path')}: {e['key']}" if e.get("key") else e.get("path")
            click.echo(f"  {where}: {e.get('message')}", err=True)


@click.command("job")
@click.argument("job_id")
@json_option
@utc_option
@url_option
def job_cmd(job_id, as_json, utc, url):
    """Show one job and its next scheduled times."""
    with api_session(url) as api:
        job = api.get("/jobs/" + quote_id(job_id))
    if as_json:
        print_json(job)
        return
    click.echo(format_fields([
        ("job", job.get("job_id")),
        ("params", ", ".join(job.get("params") or [])),
        ("program", format_value(job.get("program"))),
        ("schedules", "; ".join(s.get("description", "") for s in job.get("schedules") or [])),
        ("metadata", format_value(job.get("metadata"))),
        ("deadline", format_deadline(job.get("deadline"))),
        ("max_duration", format_max_duration(job.get("max_duration"))),
        ("paused", format_pause(job["pause"]) if job.get("pause") else None),
        ("global pause", format_pause(job["global_pause"]) if job.get("global_pause") else None),
    ]))
    nexts = job.get("next_times") or []
    if nexts:
        click.echo("\nnext runs:")
        for n in nexts:
            click.echo(f"  {format_time(n.get('time'), utc)}  {format_args(n.get('args'))}".rstrip())


@click.command("reload")
@json_option
@url_option
def reload_cmd(as_json, url):
    """Reload the jobs folder now and say what changed; exit 1 if a job file has problems.

    The server also notices edits by itself; a job whose file is broken
    keeps its last version that loaded.
    """
    with api_session(url) as api:
        summary = api.post("/jobs/reload")
    if as_json:
        print_json(summary)
    else:
        click.echo(format_reload(summary))
        if summary.get("errors"):
            _print_job_errors(summary["errors"])
    if summary.get("errors"):
        sys.exit(1)


def _print_job_errors(errors):
    click.echo(f"\n{len(errors)} job file problem(s):", err=True)
    for e in errors:
        where = f"{e.get('path')}: {e['key']}" if e.get("key") else e.get("path")
        click.echo(f"  {where}: {e.get('message')}", err=True)


def _pause_path(job):
    return "/jobs/" + quote_id(job) + "/pause" if job else "/pause"


@click.command("pause")
@click.argument("job", required=False)
@click.option("--reason", required=True, metavar="TEXT", help="Why: shown wherever the pause is.")
@click.option("--hold", is_flag=True,
              help="Hold due runs waiting until resumed, instead of recording them as skipped.")
@json_option
@url_option
def pause_cmd(job, reason, hold, as_json, url):
    """Pause JOB, or every job: due scheduled runs are skipped (or held, with --hold).

    Runs submitted or started by hand are not paused.
    """
    with api_session(url) as api:
        p = api.post(_pause_path(job), {"reason": reason, "mode": "hold" if hold else "skip"})
    if as_json:
        print_json(p)
    else:
        who = f"job {job}" if job else "all jobs"
        click.echo(f"{who} paused ({p['mode']}): {p['reason']}")


@click.command("resume")
@click.argument("job", required=False)
@json_option
@url_option
def resume_cmd(job, as_json, url):
    """Lift the pause of JOB, or the global pause; held runs start."""
    with api_session(url) as api:
        body, _ = api._request("DELETE", _pause_path(job), {})
        p = api._json(body)
    if as_json:
        print_json(p)
    else:
        click.echo(f"job {job} resumed" if job else "global pause lifted")
