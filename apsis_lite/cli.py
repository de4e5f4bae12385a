"""The ``apsis-lite`` command line: ``serve`` and the offline commands (``check-jobs``,
``schedule``, ``try``, ``import-crontab``) here, API clients in ``cli_client``."""

import os

import click

from .errors import ApsisError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="apsis-lite", prog_name="apsis-lite")
def cli():
    """apsis-lite: schedule programs, run them, and keep their state, output and history."""


@cli.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML config file.")
@click.option("--jobs", "jobs_dir", type=click.Path(file_okay=False), help="Folder of job files.")
@click.option("--data", "data_dir", type=click.Path(file_okay=False), help="Data folder (database, run folders).")
@click.option("--host", help="Address to listen on (default 127.0.0.1).")
@click.option("--port", type=int, help="Port to listen on (default 5005; 0 picks a free one).")
@click.option("--server", type=click.Choice(["gevent", "waitress"]), help="Web server.")
@click.option("--since", type=click.Choice(["last", "now"]), default="last", show_default=True,
              help="'now' starts fresh: slots missed while the server was down are not run.")
def serve(config_file, jobs_dir, data_dir, host, port, server, since):
    """Run the scheduler and its web server."""
    from .config import load_config
    from .service import serve as run_service
    try:
        config = load_config(config_file, jobs_dir=jobs_dir, data_dir=data_dir, host=host,
                             port=port, server=server)
        if not os.path.isdir(config.jobs_dir):
            raise click.ClickException(f"jobs folder not found: {config.jobs_dir}")
        run_service(config, since_now=(since == "now"))
    except ApsisError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot start: {exc}") from None


class UsageProblem(click.ClickException):
    """A bad option value, said in one line (exit status 2, as for other usage errors)."""

    exit_code = 2


def _loading_options(f):
    f = click.option("--calendars", "calendars_dir", type=click.Path(file_okay=False),
                     help="Folder of calendar files (default: calendars_dir from --config).")(f)
    return click.option("--config", "config_file", type=click.Path(dir_okay=False),
                        help="Config file whose extensions register extra types and whose "
                             "calendars_dir names calendars.")(f)


def _load_options(config_file, calendars_dir=None):
    """Set up what loading job files needs, as the server would from the same config.

    Returns the options for ``load_job_file``/``load_jobs_dir`` and the
    problems found in calendar files.
    """
    config = None
    if config_file:
        from .config import load_config
        from .registry import load_extensions
        try:
            config = load_config(config_file)
            load_extensions(config.extensions)
        except ApsisError as exc:
            raise click.ClickException(str(exc)) from None
        except ImportError as exc:
            raise click.ClickException(f"cannot load extension: {exc}") from None
    calendars_dir = calendars_dir or getattr(config, "calendars_dir", None)
    if not calendars_dir:
        return {}, []
    from .calendars import load_calendars
    library, problems = load_calendars(calendars_dir)
    return {"calendars": library}, problems


def _plural(n, word):
    return f"{n} {word}{'' if n == 1 else 's'}"


@cli.command("check-jobs", short_help="Check a jobs folder: every problem, and warnings.")
@click.argument("jobs_dir", type=click.Path(file_okay=False), default="jobs")
@_loading_options
@click.option("--strict", is_flag=True, help="Exit 1 on warnings too.")
def check_jobs(jobs_dir, config_file, calendars_dir, strict):
    """Load every job file in JOBS_DIR and print every problem; exit 1 if there are any.

    Also warns (exit 0 unless --strict) about dependencies, successors and
    schedule actions naming jobs that do not exist or args they do not
    take, and schedules that never fill a param or have no due time left.
    """
    from .jobs import load_jobs_dir
    from .offline import folder_warnings
    from .timeutil import utcnow
    options, calendar_errors = _load_options(config_file, calendars_dir)
    if not os.path.isdir(jobs_dir):
        raise click.ClickException(f"jobs folder not found: {jobs_dir}")
    jobs, errors = load_jobs_dir(jobs_dir, **options)
    errors = calendar_errors + errors
    warnings = folder_warnings(jobs, errors, jobs_dir, utcnow())
    for err in errors:
        click.echo(str(err), err=True)
    for w in warnings:
        click.echo(f"{w.path}: {w.key}: warning: {w.msg}" if w.key else f"{w.path}: warning: {w.msg}",
                   err=True)
    summary = f"{_plural(len(jobs), 'job')} loaded, {_plural(len(errors), 'problem')}"
    if warnings:
        summary += f", {_plural(len(warnings), 'warning')}"
    click.echo(summary)
    if errors or (strict and warnings):
        raise SystemExit(1)


def _jobs_folder(jobs_dir):
    if not os.path.isdir(jobs_dir):
        raise UsageProblem(f"jobs folder not found: {jobs_dir}")


def _find_job(jobs_dir, job_id, options):
    """The job, or its problems on stderr and exit 1."""
    from .jobs import JobErrors
    from .offline import UnknownJob, find_job
    try:
        return find_job(jobs_dir, job_id, **options)
    except UnknownJob as exc:
        raise click.ClickException(str(exc)) from None
    except JobErrors as exc:
        for err in exc.errors:
            click.echo(str(err), err=True)
        raise click.ClickException(
            f"job {job_id!r} does not load: {_plural(len(exc.errors), 'problem')}") from None


@cli.command("schedule", short_help="A job's next due times, from its file (no server).")
@click.argument("jobs_dir", metavar="DIR")
@click.argument("job_id", metavar="JOB")
@click.option("--next", "count", type=click.IntRange(1, 100_000), default=10, show_default=True,
              help="How many due times.")
@click.option("--from", "start", metavar="TIME",
              help="First time to consider: ISO 8601, or a date and time in --tz (default: now).")
@click.option("--tz", "zone_name", metavar="ZONE",
              help="Show times in ZONE (IANA name, e.g. Europe/London; default: this machine's zone).")
@click.option("--json", "as_json", is_flag=True,
              help='Print [{"time": ISO 8601 with offset, "args": {...}}, ...].')
@_loading_options
def schedule_cmd(jobs_dir, job_id, count, start, zone_name, as_json, config_file, calendars_dir):
    """The next due times of job JOB in folder DIR, with the args of each run.

    Times are shown in --tz, else this machine's zone; a change of the
    zone's offset (daylight saving) between two times is marked.
    """
    import json
    from .cli_client import format_args
    from .offline import due_times, format_local, iso_local, local_zone_name, zone_changes
    from .timeutil import get_tz, parse_time, utcnow
    zone_name = zone_name or local_zone_name() or "UTC"
    try:
        zone = get_tz(zone_name)
    except ValueError as exc:
        raise UsageProblem(f"--tz: {exc}") from None
    try:
        begin = parse_time(start, zone) if start else utcnow()
    except ValueError as exc:
        raise UsageProblem(f"--from: {exc}") from None
    options, _ = _load_options(config_file, calendars_dir)
    _jobs_folder(jobs_dir)
    job = _find_job(jobs_dir, job_id, options)
    try:
        times = due_times(job, begin, count)
    except (ValueError, OverflowError) as exc:  # e.g. a calendar that cannot be used
        raise click.ClickException(f"job {job_id!r}: cannot compute due times: {exc}") from None
    if as_json:
        click.echo(json.dumps([{"time": iso_local(t, zone), "args": a} for t, a in times], indent=2))
        return
    for schedule in job.schedules:
        state = "" if schedule.enabled else " (disabled)"
        click.echo(f"# {schedule.describe()}{state}")
    if not any(s.enabled for s in job.schedules):
        click.echo(f"{job_id} has no enabled schedule: it runs only when started by hand "
                   "or by another job")
        return
    click.echo(f"# due times from {format_local(begin, zone)}, shown in {zone_name}:")
    previous = None
    for t, args in times:
        if previous is not None:
            for change in zone_changes(zone, previous, t):
                click.echo(f"— {change.describe()} —")
        click.echo(f"{format_local(t, zone)}  {format_args(args)}".rstrip())
        previous = t
    if len(times) < count:
        click.echo("(no more due times)")


@cli.command("try", short_help="What a run of a job would do; --run runs it here.")
@click.argument("jobs_dir", metavar="DIR")
@click.argument("job_id", metavar="JOB")
@click.argument("assignments", nargs=-1, metavar="ARG=VALUE...")
@click.option("--run", "run_it", is_flag=True,
              help="Run the program once, here, streaming its output; exit with its exit status.")
@click.option("--json", "as_json", is_flag=True, help="Print the bound program, conditions and "
                                                      "actions as JSON.")
@_loading_options
def try_cmd(jobs_dir, job_id, assignments, run_it, as_json, config_file, calendars_dir):
    """Bind job JOB in folder DIR to the args given, and show what a run would do.

    With --run, run the program once on this machine as the server would
    (own process group, env, cwd, timeout, APSIS_* variables; APSIS_RUN_ID
    is r0). Conditions and actions are shown, not checked or performed.
    Ctrl-C sends the job's stop signal to the whole process group.
    """
    import json
    from .cli_client import format_args, parse_assignments
    from .errors import BadRequest
    from .jobs import bind, check_args
    from .programs import parse_program
    options, _ = _load_options(config_file, calendars_dir)
    _jobs_folder(jobs_dir)
    args = parse_assignments(assignments)
    job = _find_job(jobs_dir, job_id, options)
    try:
        args = check_args(job, args)
    except BadRequest as exc:
        msg = str(exc)
        if "(params:" not in msg:
            msg += f" (params: {', '.join(job.params) or 'none'})"
        raise UsageProblem(msg) from None
    try:
        bound = bind(job, args)
    except BadRequest as exc:
        raise click.ClickException(str(exc)) from None
    if not run_it:
        if as_json:
            click.echo(json.dumps(bound, indent=2))
            return
        from .offline import to_yaml
        shown = {"program": bound["program"]}
        if bound["conditions"]:
            shown["condition"] = bound["conditions"]
        if bound["actions"]:
            shown["action"] = bound["actions"]
        click.echo(f"# {job_id}" + (f" with {format_args(args)}" if args else ""))
        click.echo(to_yaml(shown), nl=False)
        return
    _run_here(parse_program(bound["program"]), job_id, args)


def _run_here(program, job_id, args):
    from .cli_client import format_args
    from .offline import CannotRun, no_op_result, run_locally

    def say(text):
        click.echo(f"apsis-lite: {text}", err=True)

    what = job_id + (f" {format_args(args)}" if args else "")
    try:
        if program.is_noop:
            say(f"{what}: {program.describe()}")
            result = no_op_result(program)
        else:
            result = run_locally(program, job_id, args, say=say,
                                 announce=f"running {what} (Ctrl-C stops it)")
    except CannotRun as exc:
        raise click.ClickException(str(exc)) from None
    elapsed = f"{result.elapsed:.1f} s"
    if result.signal:
        say(f"killed by {result.signal} after {elapsed}")
    elif result.exit_code:
        say(f"exit status {result.exit_code} after {elapsed}")
    else:
        say(f"succeeded after {elapsed}")
    raise SystemExit(result.exit_code)


@cli.command("import-crontab", short_help="Turn a crontab into job files.")
@click.argument("crontab_file", metavar="FILE", type=click.Path(dir_okay=False, allow_dash=True))
@click.argument("out_dir", metavar="OUTDIR", type=click.Path(file_okay=False))
@click.option("--tz", "zone_name", metavar="ZONE",
              help="Zone of entries before any CRON_TZ line (default: this machine's zone, as cron).")
@click.option("--force", is_flag=True, help="Replace job files that already exist.")
def import_crontab_cmd(crontab_file, out_dir, zone_name, force):
    """Write one job file into OUTDIR for each entry of crontab FILE ('-' reads stdin).

    Each job runs at the same times (a cron schedule, in CRON_TZ or the
    default zone) with the same shell, env and standard input. Prints what
    was written and what needs attention; exit 1 if a line could not be
    imported or a file already exists (and nothing is written then).
    """
    from . import crontab_import as ci
    from .offline import local_zone_name
    from .timeutil import get_tz
    zone_name = zone_name or local_zone_name() or "UTC"
    try:
        get_tz(zone_name)
    except ValueError as exc:
        raise UsageProblem(f"--tz: {exc}") from None
    try:
        if crontab_file == "-":
            text = click.get_text_stream("stdin").read()
        else:
            with open(crontab_file, encoding="utf-8", errors="replace") as f:
                text = f.read()
    except OSError as exc:
        raise click.ClickException(f"cannot read {crontab_file}: {exc.strerror}") from None
    crontab = ci.parse_crontab(text, zone_name)
    files = ci.plan(crontab, out_dir)
    clash = [] if force else ci.existing(files)
    if clash:
        for path in clash:
            click.echo(f"{path}: already exists", err=True)
        raise click.ClickException(
            f"{_plural(len(clash), 'file')} already exist; nothing written (--force replaces them)")
    try:
        ci.write(files, out_dir)
    except OSError as exc:
        raise click.ClickException(f"cannot write to {out_dir}: {exc.strerror}") from None
    click.echo(f"wrote {_plural(len(files), 'job file')} to {out_dir}"
               + (":" if files else ""))
    for w in files:
        click.echo(f"  {w.job_id}.yaml  line {w.entry.line_no}: {w.entry.expr} in {w.entry.tz}")
    attention = list(crontab.notes)
    mail = {}
    for w in files:
        if w.entry.mailto:
            mail.setdefault(w.entry.mailto, []).append(w.job_id)
    for address, ids in mail.items():
        attention.append(f"MAILTO={address}: cron mailed output there; add an action to "
                         f"{', '.join(ids)} (each file has a commented example)")
    if crontab.problems or attention:
        click.echo("needs attention:")
        for line in crontab.problems:
            click.echo(f"  not imported: {line}")
        for line in attention:
            click.echo(f"  {line}")
    if crontab.problems:
        raise SystemExit(1)


@cli.command(hidden=True)
@click.argument("state_dir")
def agent(state_dir):
    """Run the local agent (started by the server; not for people)."""
    from .agent import main as agent_main
    raise SystemExit(agent_main([state_dir]))


try:
    from .cli_client import register
except ImportError:  # pragma: no cover - during development only
    register = None
if register is not None:
    register(cli)
