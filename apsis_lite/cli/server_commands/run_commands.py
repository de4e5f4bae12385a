"""The client commands about runs: run, runs, show, explain, output, and the
operations on runs, one or several at a time (start, skip, stop, mark, rerun, signal).
"""

import time

import click

from apsis_lite import timeutil
from apsis_lite.cli.arguments import (
    describe_day, is_run_id, normalize_run_id, parse_assignments, parse_run_at, parse_when,
    program_from_argv, runs_and_word,
)
from apsis_lite.cli.client import ClientError, quote_id
from apsis_lite.cli.formatting import (
    exit_status, format_args, format_fields, format_rusage, format_table, format_time, indent,
)
from apsis_lite.cli.server_commands.options import (
    api_session, json_option, print_json, table_width, url_option, utc_option,
)

# Seconds per output long poll; the server answers sooner on new output.
POLL_WAIT = 30


def _run_path(run, *rest):
    return "/runs/" + quote_id(normalize_run_id(run)) + "".join(f"/{quote_id(r)}" for r in rest)


def _follow_output(api, run_id, follow):
    """Copy a run's output to stdout; with ``follow``, until the run is over."""
    path, offset = _run_path(run_id, "output"), 0
    while True:
        data, headers = api.get_bytes(path, offset=offset, wait=POLL_WAIT if follow else None)
        if data:
            click.echo(data, nl=False)  # bytes go to the binary stdout, flushed
            offset += len(data)
        if headers.get("X-Output-Complete") == "1" or (not follow and not data):
            return
        if not data:
            # The poll ended on a state change; don't spin if it keeps doing so.
            time.sleep(0.1)


def _confirm_time(rid, run):
    """Say on stderr when a run asked for --at runs, naming the day."""
    due = (run.get("times") or {}).get("schedule")
    if not due:
        return
    due = timeutil.parse_time(due)
    if run.get("state") == "scheduled":
        click.echo(f"{rid}: scheduled for {describe_day(due)}", err=True)
    else:
        click.echo(f"{rid}: due {describe_day(due)}; {run.get('state')} now", err=True)


def _detached(ctx, rid):
    click.echo(
        f"\nstopped waiting; {rid} carries on "
        f"(see it with 'apsis-lite output {rid} --follow')", err=True,
    )
    ctx.exit(130)


class _RunCommand(click.Command):
    """Keeps everything after ``--`` away from click: it is the program's argv."""

    def parse_args(self, ctx, args):
        if "--" in args:
            i = args.index("--")
            ctx.meta["apsis_lite.argv"] = args[i + 1:]
            args = args[:i]
        return super().parse_args(ctx, args)


@click.command("run", cls=_RunCommand)
@click.argument("job_and_args", nargs=-1, metavar="JOB [ARG=VALUE]...")
@click.option("--at", "at", metavar="TIME",
              help="When to run: a time of day (its next occurrence: 07:00 typed at 07:28 is "
                   "tomorrow's), a local or ISO date and time, '+10m' from now. Default: now.")
@click.option("--past-ok", is_flag=True,
              help="Accept a date and time --at that is past: the run starts now, recorded as due then.")
@click.option("--no-wait", is_flag=True, help="Print the run id and exit at once.")
@url_option
@click.pass_context
def run_cmd(ctx, job_and_args, at, past_ok, no_wait, url):
    """Run a job, or a command, now or --at a time.

    \b
      apsis-lite run JOB [ARG=VALUE]...   run job JOB with these args
      apsis-lite run -- PROGRAM [ARG]...  run a program; all after -- is its argv
      apsis-lite run -- 'CMD | CMD'       a single word with spaces runs in a shell

    Options go before '--'. Unless --no-wait, streams the run's output and
    exits with its exit status (128+N if killed by signal N; 1 with a note on
    stderr if the run ends in error or is skipped).
    """
    argv = ctx.meta.get("apsis_lite.argv")
    if argv is not None and job_and_args:
        raise click.UsageError("give either JOB [ARG=VALUE]... or -- PROGRAM..., not both")
    if argv is not None:
        if not argv:
            raise click.UsageError("no program after '--'")
        body = {"program": program_from_argv(argv)}
    elif job_and_args:
        body = {"job_id": job_and_args[0], "args": parse_assignments(job_and_args[1:])}
    else:
        raise click.UsageError("give a job id, or a program after '--'")
    if past_ok and not at:
        raise click.UsageError("--past-ok goes with --at")
    body["time"] = timeutil.to_iso(parse_run_at(at, past_ok=past_ok)) if at else "now"

    with api_session(url) as api:
        try:
            run = api.post("/runs", body)
        except ClientError as exc:
            if exc.status == 404 and "job_id" in body and is_run_id(body["job_id"]) and len(job_and_args) == 1:
                raise click.ClickException(
                    f"{exc.message} (to see run {normalize_run_id(body['job_id'])}, use 'apsis-lite show "
                    f"{normalize_run_id(body['job_id'])}': apsis's 'run RUN' shows a run, this 'run' starts one)"
                ) from None
            if exc.status == 404 and "job_id" in body:
                raise click.ClickException(
                    f"{exc.message} (to run a program, put it after '--': "
                    f"apsis-lite run -- {' '.join(job_and_args)})"
                ) from None
            raise
        rid = run["run_id"]
        if at and (past_ok or run.get("state") == "scheduled"):
            _confirm_time(rid, run)
        if no_wait:
            click.echo(rid)
            return
        try:
            _follow_output(api, rid, follow=True)
            run = api.get(_run_path(rid))
        except KeyboardInterrupt:
            _detached(ctx, rid)
    code, note = exit_status(run)
    if note:
        click.echo(note, err=True)
    ctx.exit(code)


@click.command("runs")
@click.argument("filter_words", nargs=-1, metavar="[FILTER]...")
@click.option("--since", metavar="TIME", help="Only runs at or after TIME ('-2h': 2 hours ago).")
@click.option("--until", metavar="TIME", help="Only runs before TIME.")
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="Runs per page.")
@click.option("--all", "all_pages", is_flag=True, help="Follow every page, not just the first.")
@click.option("--archive", "archive_file", metavar="FILE", type=click.Path(dir_okay=False),
              help="Read the runs from this archive file (no server needed).")
@json_option
@utc_option
@url_option
def runs_cmd(filter_words, since, until, limit, all_pages, archive_file, as_json, utc, url):
    """List runs, newest first, matching a filter.

    The words are joined with spaces into one filter: job id text, job:ID,
    state:S1,S2, host:NAME, ARG=VALUE, !TERM. Quote for the shell and for the filter:

    \b
      apsis-lite runs '"load prices"' state:fail,err date=2026-11-25
    """
    params = {
        "q": " ".join(filter_words) or None,
        "since": parse_when(since) if since else None,
        "until": parse_when(until) if until else None,
        "limit": limit,
    }
    if archive_file:
        from apsis_lite.cli.maintenance import archive_pages
        items, page = archive_pages(archive_file, params, all_pages)
    else:
        with api_session(url) as api:
            page = api.get("/runs", **params)
            items = list(page["items"])
            while all_pages and page.get("next"):
                page = api.get("/runs", cursor=page["next"], **params)
                items.extend(page["items"])
    if as_json:
        print_json({"items": items, "next": page.get("next")})
        return
    rows = [
        (r["run_id"], r.get("job_id") or "(program)", format_args(r.get("args")), r.get("state"),
         format_time((r.get("times") or {}).get("schedule"), utc),
         timeutil.format_duration(r.get("elapsed")))
        for r in items
    ]
    headers = ("RUN", "JOB", "ARGS", "STATE", "SCHEDULED", "ELAPSED")
    if any(r.get("host") for r in items):
        # Only when a run went to a remote host: local-only lists keep their columns.
        headers += ("HOST",)
        rows = [row + (r.get("host"),) for row, r in zip(rows, items)]
    click.echo(format_table(headers, rows, table_width(), shrink=(1, 2)))
    if page.get("next"):
        click.echo("(more runs: use --all, or narrow the filter)", err=True)


@click.command("show")
@click.argument("run")
@json_option
@utc_option
@url_option
def show_cmd(run, as_json, utc, url):
    """Show a run and its state log."""
    with api_session(url) as api:
        r = api.get(_run_path(run))
        log = api.get(_run_path(run, "log"))["items"]
        # What a pending run waits for, checked now rather than as last recorded.
        why = api.get(_run_path(run, "explain"))["summary"] if r.get("state") == "waiting" else None
    if as_json:
        print_json({**r, "log": log})
        return
    click.echo(format_fields([
        ("run", r.get("run_id")),
        ("job", r.get("job_id")),
        ("args", format_args(r.get("args"))),
        ("state", r.get("state")),
        ("host", r.get("host")),
        ("waiting", why),
        ("exit code", r.get("exit_code")),
        ("signal", r.get("signal")),
        ("message", r.get("message")),
        ("rerun of", r.get("rerun_of")),
        ("elapsed", timeutil.format_duration(r.get("elapsed"))),
        ("output", None if r.get("output_length") is None else f"{r['output_length']} bytes"),
        ("rusage", format_rusage(r.get("rusage"))),
    ]))
    times = r.get("times") or {}
    if times:
        click.echo("\ntimes:")
        click.echo(indent(format_fields([(k, format_time(v, utc)) for k, v in times.items()])))
    if log:
        click.echo("\nlog:")
        rows = [(format_time(e.get("time"), utc), e.get("state"), e.get("message")) for e in log]
        click.echo(indent(format_table(("TIME", "STATE", "MESSAGE"), rows)))


@click.command("explain")
@click.argument("run")
@json_option
@url_option
def explain_cmd(run, as_json, url):
    """Say why a run is in its state: what it waits for, since when, how it ended."""
    with api_session(url) as api:
        e = api.get(_run_path(run, "explain"))
    if as_json:
        print_json(e)
        return
    click.echo(f"{e['run_id']} ({e['state']}): {e['summary']}")
    for line in e.get("lines") or ():
        click.echo(f"  {line}")


@click.command("output")
@click.argument("run")
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the run finishes.")
@url_option
@click.pass_context
def output_cmd(ctx, run, follow, url):
    """Print a run's output."""
    with api_session(url) as api:
        try:
            _follow_output(api, run, follow)
        except KeyboardInterrupt:
            _detached(ctx, normalize_run_id(run))


def _each_run(url, runs, act, as_json):
    """``act(api, run)`` for each run in turn, whatever the others did: prints
    what it returns (or, with --json, the runs), a line on stderr for each
    refusal, and exits 1 if any was refused."""
    done, failed = [], 0
    with api_session(url) as api:
        for run in runs:
            try:
                jso, line = act(api, normalize_run_id(run))
            except ClientError as exc:
                if len(runs) == 1 or exc.status is None:  # one run, or no server: one message
                    raise
                failed += 1
                click.echo(f"{normalize_run_id(run)}: {exc.message}", err=True)
                continue
            done.append(jso)
            if not as_json:
                click.echo(line)
    if as_json:
        print_json(done[0] if len(runs) == 1 else done)
    if failed:
        raise SystemExit(1)


def _change(url, runs, op, as_json):
    """POST an operation to each run; confirm each as ``r12: running -> stopping``."""
    def act(api, run):
        before = None if as_json else api.get(_run_path(run))
        after = api.post(_run_path(run, *op))
        return after, None if as_json else f"{after['run_id']}: {before['state']} -> {after['state']}"

    _each_run(url, runs, act, as_json)


def _change_command(op, help_):
    @click.command(op, help=help_)
    @click.argument("runs", nargs=-1, required=True, metavar="RUN...")
    @json_option
    @url_option
    def cmd(runs, as_json, url):
        _change(url, runs, (op,), as_json)

    return cmd


start_cmd = _change_command("start", "Start scheduled or waiting runs now.")
skip_cmd = _change_command("skip", "Skip runs that have not started.")
stop_cmd = _change_command("stop", "Stop running runs (each program's stop method).")


@click.command("mark")
@click.argument("words", nargs=-1, required=True, metavar="RUN... STATE")
@json_option
@url_option
def mark_cmd(words, as_json, url):
    """Set finished runs' state by hand (e.g. to success).

    The state may also come first, as apsis has it: mark success r12 r13.
    """
    runs, state = runs_and_word(words, "state", "mark r12 success")
    _change(url, runs, ("mark", state), as_json)


@click.command("rerun")
@click.argument("runs", nargs=-1, required=True, metavar="RUN...")
@json_option
@url_option
def rerun_cmd(runs, as_json, url):
    """Run finished runs again with the same job and args, each as a new run."""
    def act(api, run):
        new = api.post(_run_path(run, "rerun"))
        return new, f"{run}: rerun as {new['run_id']} ({new['state']})"

    _each_run(url, runs, act, as_json)


@click.command("signal")
@click.argument("words", nargs=-1, required=True, metavar="RUN... SIGNAL")
@json_option
@url_option
def signal_cmd(words, as_json, url):
    """Send signal SIGNAL (SIGTERM, USR1, ...) to running runs.

    The signal may also come first, as apsis has it: signal USR1 r12 r13.
    A number is read as a run id: name the signal.
    """
    runs, name = runs_and_word(words, "signal name", "signal r12 USR1")

    def act(api, run):
        r = api.post(_run_path(run, "signal", name))
        return r, f"{r['run_id']}: sent {name} ({r['state']})"

    _each_run(url, runs, act, as_json)


def schedule_run(when, job_id, assignments, count, url, as_json):
    """apsis's ``schedule TIME JOB [ARG=VALUE]...``: create ``count`` runs of a job at a time."""
    body = {"job_id": job_id, "args": parse_assignments(assignments), "time": parse_when(when, upcoming=True)}
    with api_session(url) as api:
        made = [api.post("/runs", body) for _ in range(count)]
    if as_json:
        print_json(made[0] if count == 1 else made)
        return
    for run in made:
        click.echo(f"{run['run_id']}: {run['state']} for {format_time(run.get('times', {}).get('schedule'))}")
