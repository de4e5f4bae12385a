"""CLI commands that talk to a running server through its JSON API.

``register(group)`` adds them to the ``apsis-lite`` group. Each takes
``--url`` (default ``$APSIS_LITE_URL``, else ``server.url`` in the default
data folder, else http://127.0.0.1:5005; see ``client.resolve_url``) and
``--token`` (default ``$APSIS_LITE_TOKEN``, else the local token beside
that ``server.url``; see ``client.resolve_token``), and turns
a ``ClientError`` into a one-line ``click.ClickException`` (exit status 1).
The pure helpers (argument parsing, tables, exit statuses) are public so
they can be tested without a server.
"""

import contextlib
import json
import shutil
import signal
import sys
import time
from datetime import timedelta

import click
from dateutil.tz import tzlocal

from apsis_lite import timeutil
from apsis_lite.cli.client import DEFAULT_URL, Client, ClientError, quote_id

# Seconds per output long poll; the server answers sooner on new output.
POLL_WAIT = 30

# --- pure helpers ----------------------------------------------------------


def parse_assignments(words) -> dict:
    """``["date=2026-11-25", "x="]`` -> ``{"date": "2026-11-25", "x": ""}``."""
    args = {}
    for word in words:
        name, eq, value = word.partition("=")
        if not eq or not name:
            raise click.UsageError(f"expected ARG=VALUE, got {word!r}")
        args[name] = value
    return args


def program_from_argv(argv):
    """A single word containing whitespace is a shell command; else an argv list."""
    argv = list(argv)
    if len(argv) == 1 and any(c.isspace() for c in argv[0]):
        return argv[0]
    return argv


def normalize_run_id(text: str) -> str:
    """Accept ``12`` as well as ``r12``."""
    text = text.strip()
    return f"r{text}" if text.isdigit() else text


def parse_when(text: str) -> str:
    """ISO UTC from ``now``, ``+10m`` (from now), ``-2h`` (ago), or a local time."""
    text = text.strip()
    try:
        if text[:1] in "+-" and len(text) > 1:
            secs = timeutil.parse_duration(text[1:])
            delta = timedelta(seconds=secs if text[0] == "+" else -secs)
            return timeutil.to_iso(timeutil.utcnow() + delta)
        # A time without a zone means local time, as the person typing it does.
        return timeutil.to_iso(timeutil.parse_time(text, tz=tzlocal()))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def format_time(iso, utc=False) -> str:
    """``2026-11-25 10:00:00`` in local time, or ``2026-11-25 09:00:00Z`` in UTC."""
    if not iso:
        return ""
    try:
        dt = timeutil.parse_time(iso)
    except ValueError:
        return str(iso)
    if utc:
        return dt.strftime("%Y-%m-%d %H:%M:%SZ")
    return dt.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def quote_word(text: str) -> str:
    """``text`` quoted as the filter language would read it back."""
    text = str(text)
    if text and not any(c.isspace() or c in '"=:!\\' for c in text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_args(args) -> str:
    """``date=2026-11-25 name="a b"``: the same form the run filter accepts."""
    return " ".join(f"{quote_word(k)}={quote_word(v)}" for k, v in (args or {}).items())


def format_value(value) -> str:
    """A compact one-line form of a JSON value for people."""
    if value is None:
        return ""
    if isinstance(value, dict):
        return " ".join(f"{k}={format_value(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(format_value(v) for v in value)
    return str(value)


def format_rusage(rusage) -> str:
    """``user 0.012 s, system 0.003 s, max RSS 11680 kB`` from a run's ``rusage``."""
    if not isinstance(rusage, dict):
        return format_value(rusage)

    def number(key):
        value = rusage.get(key)
        return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    parts, shown = [], set()
    for key, form in (("utime", "user {:.3f} s"), ("stime", "system {:.3f} s"),
                      ("maxrss_kb", "max RSS {} kB")):
        if number(key) is not None:
            parts.append(form.format(number(key)))
            shown.add(key)
    rest = {k: v for k, v in rusage.items() if k not in shown}
    if rest:
        parts.append(format_value(rest))
    return ", ".join(parts)


def format_table(headers, rows, width=None, shrink=()) -> str:
    """Left-aligned columns two spaces apart.

    With ``width``, the columns whose indices are in ``shrink`` are narrowed,
    widest first, until the table fits; cut cells end in ``…``.
    """
    rows = [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    if width:
        over = sum(widths) + 2 * (len(widths) - 1) - width
        floor = {i: min(widths[i], max(len(headers[i]), 8)) for i in shrink}
        while over > 0:
            can = [i for i in shrink if widths[i] > floor[i]]
            if not can:
                break
            widths[max(can, key=lambda i: widths[i])] -= 1
            over -= 1

    def line(cells):
        out = []
        for cell, w in zip(cells, widths):
            if len(cell) > w:
                cell = cell[: w - 1] + "…"
            out.append(cell.ljust(w))
        return "  ".join(out).rstrip()

    return "\n".join([line(headers)] + [line(r) for r in rows])


def _signum(sig):
    """The number of a signal given as 9, "9", "KILL" or "SIGKILL"; else None."""
    if isinstance(sig, int) and not isinstance(sig, bool):
        return sig
    if isinstance(sig, str) and sig:
        if sig.isdigit():
            return int(sig)
        name = sig.upper() if sig.upper().startswith("SIG") else "SIG" + sig.upper()
        try:
            return signal.Signals[name].value
        except KeyError:
            return None
    return None


def exit_status(run) -> tuple[int, str | None]:
    """The CLI's exit status for a finished run, and a note for stderr or None.

    success -> 0; failure -> the program's exit code, or 128 + signal number
    as a shell reports it; anything else (error, skipped) -> 1 with a note.
    """
    state, rid = run.get("state"), run.get("run_id")
    message = run.get("message")
    if state == "success":
        return 0, None
    if state == "failure":
        num = _signum(run.get("signal"))
        if num:
            try:
                name = signal.Signals(num).name
            except ValueError:
                name = f"signal {num}"
            return 128 + num, f"{rid}: failure: killed by {name}"
        code = run.get("exit_code")
        if isinstance(code, int) and 0 < code < 256:
            # The program has said why on its own stderr.
            return code, None
    note = f"{rid}: {state}" + (f": {message}" if message else "")
    return 1, note


# --- plumbing --------------------------------------------------------------


@contextlib.contextmanager
def _api(url):
    """A Client whose errors leave as one-line click errors, not tracebacks."""
    ctx = click.get_current_context(silent=True)
    try:
        yield Client(url, token=ctx.meta.get("apsis_token") if ctx else None)
    except ClientError as exc:
        raise click.ClickException(exc.message) from None


def _remember_token(ctx, _param, value):
    if value:
        ctx.meta["apsis_token"] = value


def _url_option(f):
    # No click default: Client resolves a missing URL (env, server.url, DEFAULT_URL)
    # and a missing token ($APSIS_LITE_TOKEN, the token file beside server.url).
    f = click.option(
        "--token", metavar="TOKEN", expose_value=False, callback=_remember_token,
        help=("API token (Authorization: Bearer). Default: $APSIS_LITE_TOKEN, else the local token "
              "of the server in the default data folder."),
    )(f)
    return click.option(
        "--url", metavar="URL",
        help=("Server address. Default: $APSIS_LITE_URL, else the server.url file in the "
              f"default data folder, else {DEFAULT_URL}."),
    )(f)


def _json_option(f):
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(f)


def _utc_option(f):
    return click.option("--utc", is_flag=True, help="Show times in UTC, not local time.")(f)


def _print_json(jso):
    click.echo(json.dumps(jso, indent=2))


def _table_width():
    """Fit tables to a terminal; leave piped output whole for grep and friends."""
    if sys.stdout.isatty():
        return shutil.get_terminal_size((80, 24)).columns
    return None


def _fields(pairs):
    """``label  value`` lines, skipping empty values."""
    pairs = [(k, v) for k, v in pairs if v not in (None, "", [], {})]
    w = max((len(k) for k, _ in pairs), default=0)
    return "\n".join(f"{k.ljust(w)}  {v}" for k, v in pairs)


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


def _detached(ctx, rid):
    click.echo(
        f"\nstopped waiting; {rid} carries on "
        f"(see it with 'apsis-lite output {rid} --follow')", err=True,
    )
    ctx.exit(130)


# --- commands --------------------------------------------------------------


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
              help="When to run: a local time, ISO time, '+10m' from now. Default: now.")
@click.option("--no-wait", is_flag=True, help="Print the run id and exit at once.")
@_url_option
@click.pass_context
def run_cmd(ctx, job_and_args, at, no_wait, url):
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
    body["time"] = parse_when(at) if at else "now"

    with _api(url) as api:
        try:
            run = api.post("/runs", body)
        except ClientError as exc:
            if exc.status == 404 and "job_id" in body:
                raise click.ClickException(
                    f"{exc.message} (to run a program, put it after '--': "
                    f"apsis-lite run -- {' '.join(job_and_args)})"
                ) from None
            raise
        rid = run["run_id"]
        if no_wait:
            click.echo(rid)
            return
        if run.get("state") == "scheduled" and at:
            t = format_time(run.get("times", {}).get("schedule"))
            click.echo(f"{rid}: scheduled for {t}; waiting", err=True)
        try:
            _follow_output(api, rid, follow=True)
            run = api.get(_run_path(rid))
        except KeyboardInterrupt:
            _detached(ctx, rid)
    code, note = exit_status(run)
    if note:
        click.echo(note, err=True)
    ctx.exit(code)


@click.command("jobs")
@click.argument("text", required=False)
@_json_option
@_url_option
def jobs_cmd(text, as_json, url):
    """List jobs, or those whose id contains TEXT."""
    with _api(url) as api:
        page = api.get("/jobs", q=text)
        items, errors = list(page["items"]), page.get("errors") or []
        while page.get("next"):  # jobs are few: always list them all
            page = api.get("/jobs", q=text, cursor=page["next"])
            items.extend(page["items"])
        listed = {j["job_id"] for j in items}
        pauses = [p for p in api.get("/pauses")["items"] if p.get("job_id") in listed or not p.get("job_id")]
    if as_json:
        _print_json({"items": items, "errors": errors, "pauses": pauses})
        return
    rows = [
        (j["job_id"], ", ".join(j.get("params") or []),
         "; ".join(s.get("description", "") for s in j.get("schedules") or []))
        for j in items
    ]
    click.echo(format_table(("JOB", "PARAMS", "SCHEDULE"), rows, _table_width(), shrink=(1, 2)))
    for p in pauses:
        click.echo(f"{p.get('job_id') or 'all jobs'}: {format_pause(p)}")
    if errors:
        click.echo(f"\n{len(errors)} job file(s) failed to load:", err=True)
        for e in errors:
            where = f"{e.get('path')}: {e['key']}" if e.get("key") else e.get("path")
            click.echo(f"  {where}: {e.get('message')}", err=True)


def format_reload(summary) -> str:
    """``3 jobs; added: a; changed: b (2 scheduled runs re-planned); removed: none``."""
    def ids(key):
        return ", ".join(summary.get(key) or []) or "none"

    skipped = summary.get("skipped_runs") or 0
    replanned = f" ({skipped} scheduled run{'s' if skipped != 1 else ''} re-planned)" if skipped else ""
    return (f"{summary.get('jobs', 0)} jobs; added: {ids('added')}; changed: {ids('changed')}{replanned}; "
            f"removed: {ids('removed')}")


def _print_job_errors(errors):
    click.echo(f"\n{len(errors)} job file problem(s):", err=True)
    for e in errors:
        where = f"{e.get('path')}: {e['key']}" if e.get("key") else e.get("path")
        click.echo(f"  {where}: {e.get('message')}", err=True)


@click.command("reload")
@_json_option
@_url_option
def reload_cmd(as_json, url):
    """Reload the jobs folder now and say what changed; exit 1 if a job file has problems.

    The server also notices edits by itself; a job whose file is broken
    keeps its last version that loaded.
    """
    with _api(url) as api:
        summary = api.post("/jobs/reload")
    if as_json:
        _print_json(summary)
    else:
        click.echo(format_reload(summary))
        if summary.get("errors"):
            _print_job_errors(summary["errors"])
    if summary.get("errors"):
        sys.exit(1)


@click.command("job")
@click.argument("job_id")
@_json_option
@_utc_option
@_url_option
def job_cmd(job_id, as_json, utc, url):
    """Show one job and its next scheduled times."""
    with _api(url) as api:
        job = api.get("/jobs/" + quote_id(job_id))
    if as_json:
        _print_json(job)
        return
    click.echo(_fields([
        ("job", job.get("job_id")),
        ("params", ", ".join(job.get("params") or [])),
        ("program", format_value(job.get("program"))),
        ("schedules", "; ".join(s.get("description", "") for s in job.get("schedules") or [])),
        ("metadata", format_value(job.get("metadata"))),
        ("deadline", _format_deadline(job.get("deadline"))),
        ("max_duration", _format_max_duration(job.get("max_duration"))),
        ("paused", format_pause(job["pause"]) if job.get("pause") else None),
        ("global pause", format_pause(job["global_pause"]) if job.get("global_pause") else None),
    ]))
    nexts = job.get("next_times") or []
    if nexts:
        click.echo("\nnext runs:")
        for n in nexts:
            click.echo(f"  {format_time(n.get('time'), utc)}  {format_args(n.get('args'))}".rstrip())


def format_pause(p) -> str:
    """``paused (skip): vendor outage, by ann since 2027-01-15T08:00:00Z``."""
    by = f", by {p['user']}" if p.get("user") else ""
    return f"paused ({p.get('mode')}): {p.get('reason')}{by} since {p.get('time')}"


def _format_deadline(d):
    if not d:
        return None
    shift = d.get("date_shift") or 0
    return (f"must succeed by {d.get('daytime')} {d.get('tz')} on the run's date"
            + (f" {shift:+d} day{'s' if abs(shift) != 1 else ''}" if shift else ""))


def _format_max_duration(m):
    if not m:
        return None
    from apsis_lite.timeutil import format_duration
    return format_duration(m.get("duration")) + (", then stopped" if m.get("stop") else " (an alarm)")


def _pause_path(job):
    return "/jobs/" + quote_id(job) + "/pause" if job else "/pause"


@click.command("pause")
@click.argument("job", required=False)
@click.option("--reason", required=True, metavar="TEXT", help="Why: shown wherever the pause is.")
@click.option("--hold", is_flag=True,
              help="Hold due runs waiting until resumed, instead of recording them as skipped.")
@_json_option
@_url_option
def pause_cmd(job, reason, hold, as_json, url):
    """Pause JOB, or every job: due scheduled runs are skipped (or held, with --hold).

    Runs submitted or started by hand are not paused.
    """
    with _api(url) as api:
        p = api.post(_pause_path(job), {"reason": reason, "mode": "hold" if hold else "skip"})
    if as_json:
        _print_json(p)
    else:
        who = f"job {job}" if job else "all jobs"
        click.echo(f"{who} paused ({p['mode']}): {p['reason']}")


@click.command("resume")
@click.argument("job", required=False)
@_json_option
@_url_option
def resume_cmd(job, as_json, url):
    """Lift the pause of JOB, or the global pause; held runs start."""
    with _api(url) as api:
        body, _ = api._request("DELETE", _pause_path(job), {})
        p = api._json(body)
    if as_json:
        _print_json(p)
    else:
        click.echo(f"job {job} resumed" if job else "global pause lifted")


@click.command("runs")
@click.argument("filter_words", nargs=-1, metavar="[FILTER]...")
@click.option("--since", metavar="TIME", help="Only runs at or after TIME ('-2h': 2 hours ago).")
@click.option("--until", metavar="TIME", help="Only runs before TIME.")
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="Runs per page.")
@click.option("--all", "all_pages", is_flag=True, help="Follow every page, not just the first.")
@_json_option
@_utc_option
@_url_option
def runs_cmd(filter_words, since, until, limit, all_pages, as_json, utc, url):
    """List runs, newest first, matching a filter.

    The words are joined with spaces into one filter: job id text, job:ID,
    state:S1,S2, ARG=VALUE, !TERM. Quote for the shell and for the filter:

    \b
      apsis-lite runs '"load prices"' state:fail,err date=2026-11-25
    """
    params = {
        "q": " ".join(filter_words) or None,
        "since": parse_when(since) if since else None,
        "until": parse_when(until) if until else None,
        "limit": limit,
    }
    with _api(url) as api:
        page = api.get("/runs", **params)
        items = list(page["items"])
        while all_pages and page.get("next"):
            page = api.get("/runs", cursor=page["next"], **params)
            items.extend(page["items"])
    if as_json:
        _print_json({"items": items, "next": page.get("next")})
        return
    rows = [
        (r["run_id"], r.get("job_id") or "(program)", format_args(r.get("args")), r.get("state"),
         format_time((r.get("times") or {}).get("schedule"), utc),
         timeutil.format_duration(r.get("elapsed")))
        for r in items
    ]
    headers = ("RUN", "JOB", "ARGS", "STATE", "SCHEDULED", "ELAPSED")
    click.echo(format_table(headers, rows, _table_width(), shrink=(1, 2)))
    if page.get("next"):
        click.echo("(more runs: use --all, or narrow the filter)", err=True)


@click.command("show")
@click.argument("run")
@_json_option
@_utc_option
@_url_option
def show_cmd(run, as_json, utc, url):
    """Show a run and its state log."""
    with _api(url) as api:
        r = api.get(_run_path(run))
        log = api.get(_run_path(run, "log"))["items"]
        # What a pending run waits for, checked now rather than as last recorded.
        why = api.get(_run_path(run, "explain"))["summary"] if r.get("state") == "waiting" else None
    if as_json:
        _print_json({**r, "log": log})
        return
    click.echo(_fields([
        ("run", r.get("run_id")),
        ("job", r.get("job_id")),
        ("args", format_args(r.get("args"))),
        ("state", r.get("state")),
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
        click.echo(_indent(_fields([(k, format_time(v, utc)) for k, v in times.items()])))
    if log:
        click.echo("\nlog:")
        rows = [(format_time(e.get("time"), utc), e.get("state"), e.get("message")) for e in log]
        click.echo(_indent(format_table(("TIME", "STATE", "MESSAGE"), rows)))


def _indent(text):
    return "\n".join("  " + line for line in text.splitlines())


@click.command("explain")
@click.argument("run")
@_json_option
@_url_option
def explain_cmd(run, as_json, url):
    """Say why a run is in its state: what it waits for, since when, how it ended."""
    with _api(url) as api:
        e = api.get(_run_path(run, "explain"))
    if as_json:
        _print_json(e)
        return
    click.echo(f"{e['run_id']} ({e['state']}): {e['summary']}")
    for line in e.get("lines") or ():
        click.echo(f"  {line}")


@click.command("output")
@click.argument("run")
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the run finishes.")
@_url_option
@click.pass_context
def output_cmd(ctx, run, follow, url):
    """Print a run's output."""
    with _api(url) as api:
        try:
            _follow_output(api, run, follow)
        except KeyboardInterrupt:
            _detached(ctx, normalize_run_id(run))


def _change(url, run, op, as_json):
    """POST an operation; confirm it as ``r12: running -> stopping``."""
    with _api(url) as api:
        before = None if as_json else api.get(_run_path(run))
        after = api.post(_run_path(run, *op))
    if as_json:
        _print_json(after)
    else:
        click.echo(f"{after['run_id']}: {before['state']} -> {after['state']}")


def _change_command(op, help_):
    @click.command(op, help=help_)
    @click.argument("run")
    @_json_option
    @_url_option
    def cmd(run, as_json, url):
        _change(url, run, (op,), as_json)

    return cmd


start_cmd = _change_command("start", "Start a scheduled or waiting run now.")
skip_cmd = _change_command("skip", "Skip a run that has not started.")
stop_cmd = _change_command("stop", "Stop a running run (its program's stop method).")


@click.command("mark")
@click.argument("run")
@click.argument("state")
@_json_option
@_url_option
def mark_cmd(run, state, as_json, url):
    """Set a finished run's state by hand (e.g. to success)."""
    _change(url, run, ("mark", state), as_json)


@click.command("rerun")
@click.argument("run")
@_json_option
@_url_option
def rerun_cmd(run, as_json, url):
    """Run a finished run again with the same job and args, as a new run."""
    with _api(url) as api:
        new = api.post(_run_path(run, "rerun"))
    if as_json:
        _print_json(new)
    else:
        click.echo(f"{normalize_run_id(run)}: rerun as {new['run_id']} ({new['state']})")


@click.command("signal")
@click.argument("run")
@click.argument("name")
@_json_option
@_url_option
def signal_cmd(run, name, as_json, url):
    """Send signal NAME (SIGTERM, SIGUSR1, ...) to a running run."""
    with _api(url) as api:
        r = api.post(_run_path(run, "signal", name))
    if as_json:
        _print_json(r)
    else:
        click.echo(f"{r['run_id']}: sent {name} ({r['state']})")


COMMANDS = (
    run_cmd, jobs_cmd, job_cmd, runs_cmd, show_cmd, explain_cmd, output_cmd,
    rerun_cmd, stop_cmd, signal_cmd, skip_cmd, start_cmd, mark_cmd, reload_cmd,
    pause_cmd, resume_cmd,
)


def register(group: click.Group) -> None:
    """Add the client commands to the ``apsis-lite`` group."""
    for cmd in COMMANDS:
        group.add_command(cmd)
