"""The ``apsis-lite`` command line: ``serve`` and the offline commands (``check-jobs``,
``schedule``, ``try``, ``import-crontab``) here, API clients in ``server_commands``."""

import logging
import os
import sys

import click

from apsis_lite.cli.arguments import override_option, overrides
from apsis_lite.cli.server_commands.options import url_option
from apsis_lite.errors import ApsisError


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
@click.option("--threads", type=click.IntRange(1, 1024),
              help="Worker threads with --server waitress (default 8).")
@click.option("--log-file", "log_file", type=click.Path(dir_okay=False),
              help="Log to this file (rotated by size) instead of stderr.")
@click.option("--since", type=click.Choice(["last", "now"]), default="last", show_default=True,
              help="'now' starts fresh: slots missed while the server was down are not run.")
@override_option
def serve(config_file, jobs_dir, data_dir, host, port, server, threads, log_file, since):
    """Run the scheduler and its web server."""
    from apsis_lite.config import load_config
    from apsis_lite.service import PortTaken, serve as run_service
    try:
        config = load_config(config_file, overrides(), jobs_dir=jobs_dir, data_dir=data_dir, host=host,
                             port=port, server=server, threads=threads, log_file=log_file)
        if not os.path.isdir(config.jobs_dir):
            raise click.ClickException(f"jobs folder not found: {config.jobs_dir}")
        run_service(config, since_now=(since == "now"))
    except PortTaken as exc:
        raise click.ClickException(
            f"{exc} (another program is listening there); pick another port with --port N "
            f"(--port 0 picks a free one), or set port: in the config file") from None
    except ApsisError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot start: {exc}") from None


@cli.command(short_help="This user's scheduler in the browser (what no arguments do).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="YAML config file (default: config.yaml in the user's config folder, if there).")
@click.option("--no-browser", is_flag=True, help="Only print the address; open no browser.")
def desktop(config_file, no_browser):
    """Start this user's scheduler and open it in the browser; if it is running, just open it.

    Jobs are in ~/.config/apsis-lite/jobs (created with an example job),
    data in ~/.local/share/apsis-lite ($XDG_CONFIG_HOME and $XDG_DATA_HOME
    move them). Listens on a loopback address of its own (127.x.y.z; 127.0.0.1
    where the system has no other), port 5005 or the next free one.
    No browser is opened without a display or with $APSIS_LITE_NO_BROWSER set.
    """
    from apsis_lite.cli import desktop as desktop_start
    try:
        config = desktop_start.load_user_config(config_file)
        status = desktop_start.start(config, browser=not no_browser)
    except ApsisError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot start: {exc}") from None
    raise SystemExit(status)


@cli.command("login-link")
@click.option("--data", "data_dir", type=click.Path(file_okay=False),
              help="Data folder of the server (default: the per-user data folder).")
def login_link(data_dir):
    """Print a one-time link that logs a browser in to the server on this machine.

    Reads the server's address and local token from its data folder, so only
    a user who can read that folder can make one. The link works once,
    within two minutes.
    """
    from apsis_lite.web.auth import ONCE_TTL, one_time_link_for
    from apsis_lite.config import default_data_dir
    data_dir = data_dir or default_data_dir()
    try:
        with open(os.path.join(data_dir, "server.url"), encoding="utf-8") as f:
            url = f.read().strip()
    except FileNotFoundError:
        raise click.ClickException(f"no server has run with data folder {data_dir} (no server.url there)") from None
    except OSError as exc:
        raise click.ClickException(f"cannot read the server's address: {exc}") from None
    try:
        link = one_time_link_for(data_dir, url)
    except OSError as exc:
        raise click.ClickException(f"cannot read the server's token: {exc}") from None
    if link is None:
        raise click.ClickException(f"no token in {data_dir}: is the server's data folder right?")
    click.echo(link)
    click.echo(f"(good once, for {ONCE_TTL // 60} minutes)", err=True)


class UsageProblem(click.ClickException):
    """A bad option value, said in one line (exit status 2, as for other usage errors)."""

    exit_code = 2


def _loading_options(f):
    f = click.option("--calendars", "calendars_dir", type=click.Path(file_okay=False),
                     help="Folder of calendar files (default: calendars_dir from --config).")(f)
    f = override_option(f)
    return click.option("--config", "config_file", type=click.Path(dir_okay=False),
                        help="Config file whose extensions register extra types, whose "
                             "calendars_dir names calendars and whose min_interval "
                             "bounds schedules.")(f)


def _load_options(config_file, calendars_dir=None):
    """Set up what loading job files needs, as the server would from the same config.

    Returns the options for ``load_job_file``/``load_jobs_dir``, the
    problems found in calendar files, and the config (None without one).
    """
    # A job file that fails in an unexpected way is reported as its problem,
    # in one line; the traceback the loader logs is for a server's log.
    logging.getLogger("apsis_lite").addHandler(logging.NullHandler())
    import apsis_lite.engine.housekeeping_programs  # noqa: F401 — the built-in in-server types
    config = None
    if config_file or overrides():
        from apsis_lite.config import load_config
        from apsis_lite.model.registry import add_type_aliases, load_extensions
        try:
            config = load_config(config_file, overrides())
            load_extensions(config.extensions)
            for line in add_type_aliases(config):
                click.echo(line, err=True)
        except ApsisError as exc:
            raise click.ClickException(str(exc)) from None
        except ImportError as exc:
            raise click.ClickException(f"cannot load extension: {exc}") from None
    options = {} if config is None else {"min_interval": config.min_interval,
                                         "sudo_for_user": config.sudo_for_user}
    calendars_dir = calendars_dir or getattr(config, "calendars_dir", None)
    if not calendars_dir:
        return options, [], config
    from apsis_lite.model.calendars import load_calendars
    library, problems = load_calendars(calendars_dir)
    return {**options, "calendars": library}, problems, config


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
    take, and schedules that never fill a param or have no due time left;
    with --config, about a host: that names none of its hosts or host groups
    and a procstar group_id that names none of its host groups.
    """
    from apsis_lite.model.jobs import load_jobs_dir
    from apsis_lite.cli.offline import folder_warnings
    from apsis_lite.timeutil import utcnow
    options, calendar_errors, config = _load_options(config_file, calendars_dir)
    if not os.path.isdir(jobs_dir):
        raise click.ClickException(f"jobs folder not found: {jobs_dir}")
    jobs, errors = load_jobs_dir(jobs_dir, **options)
    errors = calendar_errors + errors
    warnings = folder_warnings(jobs, errors, jobs_dir, utcnow(), config)
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


@cli.command("examples", short_help="Where the example jobs are; with DEST, copy them there.")
@click.argument("dest", required=False, type=click.Path(file_okay=False))
def examples_cmd(dest):
    """Print the folder of the example jobs that ship with apsis-lite.

    With DEST (a folder that does not exist yet), copy them there to edit.

    \b
      apsis-lite serve --jobs "$(apsis-lite examples)"
      apsis-lite examples my-jobs && apsis-lite serve --jobs my-jobs
    """
    import shutil
    from apsis_lite.paths import example_jobs_dir
    source = example_jobs_dir()
    if not os.path.isdir(source):
        raise click.ClickException(f"the example jobs are missing from this installation ({source})")
    if dest is None:
        if getattr(sys, "frozen", False):  # the one-file executable's folder is gone once it exits
            raise UsageProblem("the executable carries its example jobs only while it runs: "
                               "copy them with 'apsis-lite examples DEST'")
        click.echo(source)
        return
    if os.path.lexists(dest):
        raise UsageProblem(f"{dest} exists already: name a folder that does not exist yet")
    try:
        shutil.copytree(source, dest, ignore=shutil.ignore_patterns("__pycache__"))
    except OSError as exc:
        raise click.ClickException(f"cannot copy the example jobs to {dest}: {exc.strerror or exc}") from None
    click.echo(f"copied the example jobs to {dest}", err=True)


def _jobs_folder(jobs_dir):
    if not os.path.isdir(jobs_dir):
        raise UsageProblem(f"jobs folder not found: {jobs_dir}")


def _find_job(jobs_dir, job_id, options):
    """The job, or its problems on stderr and exit 1."""
    from apsis_lite.model.jobs import JobErrors
    from apsis_lite.cli.offline import UnknownJob, find_job
    try:
        return find_job(jobs_dir, job_id, **options)
    except UnknownJob as exc:
        raise click.ClickException(str(exc)) from None
    except JobErrors as exc:
        for err in exc.errors:
            click.echo(str(err), err=True)
        raise click.ClickException(
            f"job {job_id!r} does not load: {_plural(len(exc.errors), 'problem')}") from None


@cli.command("schedule", short_help="A job's next due times, from its file (no server); or, as in apsis, "
                                    "TIME JOB [ARG=VALUE]... creates a run.")
@click.argument("jobs_dir", metavar="DIR|TIME")
@click.argument("job_id", metavar="JOB")
@click.argument("assignments", nargs=-1, metavar="[ARG=VALUE]...")
@click.option("--count", "runs_count", type=click.IntRange(1, 1000), default=1,
              help="With TIME: how many runs to create (default 1).")
@url_option
@click.option("--next", "count", type=click.IntRange(1, 100_000), default=10, show_default=True,
              help="How many due times.")
@click.option("--from", "start", metavar="TIME",
              help="First time to consider: ISO 8601, or a date and time in --tz (default: now).")
@click.option("--tz", "zone_name", metavar="ZONE",
              help="Show times in ZONE (IANA name, e.g. Europe/London; default: this machine's zone).")
@click.option("--json", "as_json", is_flag=True,
              help='Print [{"time": ISO 8601 with offset, "args": {...}}, ...].')
@_loading_options
def schedule_cmd(jobs_dir, job_id, assignments, runs_count, url, count, start, zone_name, as_json, config_file,
                 calendars_dir):
    """The next due times of job JOB in folder DIR, with the args of each run.

    Times are shown in --tz, else this machine's zone; a change of the
    zone's offset (daylight saving) between two times is marked.

    As in apsis, 'schedule TIME JOB [ARG=VALUE]...' (TIME: now, +10m, 17:00
    (the next one), an ISO time) creates a run of JOB on the server instead;
    a first word that names a folder is always DIR.
    """
    if not os.path.isdir(jobs_dir) and _is_time(jobs_dir):
        from apsis_lite.cli.server_commands.run_commands import schedule_run
        return schedule_run(jobs_dir, job_id, assignments, runs_count, url, as_json)
    if assignments:
        raise UsageProblem(f"{jobs_dir!r} is not a time, so this shows due times (schedule DIR JOB); "
                           "ARG=VALUE goes with schedule TIME JOB, which creates a run")
    import json
    from apsis_lite.cli.formatting import format_args
    from apsis_lite.cli.offline import due_times, format_local, iso_local, local_zone_name, zone_changes
    from apsis_lite.timeutil import get_tz, parse_time, utcnow
    zone_name = zone_name or local_zone_name() or "UTC"
    try:
        zone = get_tz(zone_name)
    except ValueError as exc:
        raise UsageProblem(f"--tz: {exc}") from None
    try:
        begin = parse_time(start, zone) if start else utcnow()
    except ValueError as exc:
        raise UsageProblem(f"--from: {exc}") from None
    options, _, _ = _load_options(config_file, calendars_dir)
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


def _is_time(word):
    from apsis_lite.cli.arguments import parse_when
    try:
        parse_when(word, upcoming=True)
    except click.BadParameter:
        return False
    return True


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
    from apsis_lite.cli.arguments import parse_assignments
    from apsis_lite.cli.formatting import format_args
    from apsis_lite.errors import BadRequest
    from apsis_lite.model.jobs import bind, check_args
    from apsis_lite.model.programs import parse_program
    options, _, _ = _load_options(config_file, calendars_dir)
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
        from apsis_lite.cli.offline import to_yaml
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
    from apsis_lite.cli.formatting import format_args
    from apsis_lite.cli.offline import CannotRun, no_op_result, run_locally

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
    from apsis_lite.cli import crontab_import as ci
    from apsis_lite.cli.offline import local_zone_name
    from apsis_lite.timeutil import get_tz
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
    from apsis_lite.agent import main as agent_main
    raise SystemExit(agent_main([state_dir]))


try:
    from apsis_lite.cli.server_commands import register
except ImportError:  # pragma: no cover - during development only
    register = None
if register is not None:
    register(cli)

from apsis_lite.cli.maintenance import COMMANDS as _MAINTENANCE  # noqa: E402 — after the group exists

for _command in _MAINTENANCE:
    cli.add_command(_command)

from apsis_lite.cli.apsis_history import import_apsis_cmd  # noqa: E402

cli.add_command(import_apsis_cmd)

from apsis_lite.cli.users import user_group  # noqa: E402

cli.add_command(user_group)
