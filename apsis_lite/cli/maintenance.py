"""The database's care from the command line: ``prune``, ``archive``, ``backup``, ``check-db``,
``vacuum``, and reading an archive file (``runs --archive``).

These take the database file directly, never the API: they work the same
whether the server is running or stopped. Beside a running server that is
safe because SQLite's locking lets one writer in at a time (the server's
engine waits at most for one short batch; see ``engine.housekeeping``), and
a backup is SQLite's online backup, a read. Only ``vacuum`` rewrites the
whole file, so it refuses while a server holds the data folder.
"""

import fcntl
import os
import time

import click

from apsis_lite.cli.arguments import override_option, overrides
from apsis_lite.errors import ApsisError

#: Sleep between batches when a server is running: its engine's writes come first.
PAUSE = 0.005


def data_options(f):
    f = override_option(f)
    f = click.option("--data", "data_dir", type=click.Path(file_okay=False),
                     help="Data folder of the server (default: data_dir from --config, else the per-user data folder).")(f)
    return click.option("--config", "config_file", type=click.Path(dir_okay=False),
                        help="The server's config file (its data_dir and retention settings).")(f)


def load(config_file, data_dir):
    from apsis_lite.config import load_config
    try:
        return load_config(config_file, overrides(), data_dir=data_dir)
    except ApsisError as exc:
        raise click.ClickException(str(exc)) from None


def server_running(data_dir) -> bool:
    """Whether a server holds the data folder's lock (without taking it for long)."""
    path = os.path.join(data_dir, "apsis-lite.lock")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def _open_store(config):
    from apsis_lite.store.database import Store
    if not os.path.isfile(config.db_path):
        raise click.ClickException(f"no database at {config.db_path} (is --data or --config right?)")
    try:
        return Store(config.db_path, migrate=False)
    except ApsisError as exc:
        raise click.ClickException(f"{exc}; nothing was changed") from None


def _duration(value, name):
    from apsis_lite.timeutil import parse_duration
    if value is None:
        return None
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=name) from None
    if seconds <= 0:
        raise click.BadParameter("must be more than zero", param_hint=name)
    return seconds


def _run_pass(config, policy, dry_run):
    from apsis_lite.engine.housekeeping import give_back_space, prune
    live = server_running(config.data_dir)
    pause = (lambda: time.sleep(PAUSE)) if live else (lambda: None)
    store = _open_store(config)
    try:
        tally = prune(store, policy, time.time(), dry_run=dry_run, between=pause)
        if not dry_run:
            tally.pages_freed = give_back_space(store, between=pause)
    except ApsisError as exc:
        raise click.ClickException(f"{exc}; what was done before is kept, the rest is as it was") from None
    finally:
        store.close()
    click.echo(tally.describe(dry_run=dry_run, archived=policy.archives))
    for path in sorted(tally.archives):
        click.echo(f"  into {path}")


@click.command("prune")
@click.option("--older-than", metavar="DURATION", help="Remove finished runs that finished longer ago than this (e.g. 90d).")
@click.option("--output-older-than", metavar="DURATION", help="Remove only the output of finished runs older than this.")
@click.option("--keep-per-job", type=click.IntRange(min=0), metavar="N",
              help="Each job's N latest finished runs are kept whatever their age (default: runs_kept_per_job, 10).")
@click.option("--dry-run", is_flag=True, help="Only count what would be removed.")
@click.option("--batch-size", type=click.IntRange(1, 10_000), metavar="N",
              help="Runs per write transaction (default: retention_batch, 200).")
@data_options
def prune_cmd(older_than, output_older_than, keep_per_job, dry_run, batch_size, config_file, data_dir):
    """Remove old finished runs (with their logs and output), or only their output, now.

    Works on the database directly, whether the server is running or not,
    in short batches that let a running server's engine go on between them.
    """
    from apsis_lite.engine.housekeeping import Policy
    if older_than is None and output_older_than is None:
        raise click.UsageError("give --older-than, --output-older-than, or both")
    config = load(config_file, data_dir)
    policy = Policy(runs_older_than=_duration(older_than, "--older-than"),
                    output_older_than=_duration(output_older_than, "--output-older-than"),
                    keep_per_job=config.runs_kept_per_job if keep_per_job is None else keep_per_job,
                    batch=batch_size or config.retention_batch)
    _run_pass(config, policy, dry_run)


@click.command("archive")
@click.option("--older-than", metavar="DURATION", help="Archive finished runs that finished longer ago than this "
              "(default: runs_retention from --config).")
@click.option("--keep-per-job", type=click.IntRange(min=0), metavar="N",
              help="Each job's N latest finished runs stay whatever their age (default: runs_kept_per_job, 10).")
@click.option("--dry-run", is_flag=True, help="Only count what would be archived.")
@click.option("--batch-size", type=click.IntRange(1, 10_000), metavar="N",
              help="Runs per write transaction (default: retention_batch, 200).")
@data_options
def archive_cmd(older_than, keep_per_job, dry_run, batch_size, config_file, data_dir):
    """Move old finished runs, with their logs and output, to archive files, now.

    One file per month the runs were scheduled in: DATA/archive/runs-YYYY-MM.db.
    Read them with 'apsis-lite runs --archive FILE', or through the API with
    '/api/v1/runs?archive=runs-YYYY-MM.db'.
    """
    from apsis_lite.engine.housekeeping import Policy, archive_dir
    config = load(config_file, data_dir)
    age = _duration(older_than, "--older-than") if older_than else config.runs_retention
    if age is None:
        raise click.UsageError("give --older-than (or runs_retention in --config)")
    policy = Policy(runs_older_than=age, archive_dir=archive_dir(config.data_dir),
                    keep_per_job=config.runs_kept_per_job if keep_per_job is None else keep_per_job,
                    batch=batch_size or config.retention_batch)
    _run_pass(config, policy, dry_run)


@click.command("backup")
@click.argument("target", metavar="FILE", type=click.Path(dir_okay=False))
@data_options
def backup_cmd(target, config_file, data_dir):
    """Copy the database to FILE, consistently, while the server runs or not; the copy is checked.

    To restore: stop the server, move the data folder's apsis-lite.db (and any
    apsis-lite.db-wal, apsis-lite.db-shm) away, copy FILE to apsis-lite.db, start.
    """
    from apsis_lite.store.maintenance import backup
    config = load(config_file, data_dir)
    if os.path.abspath(target) == os.path.abspath(config.db_path):
        raise click.UsageError("FILE is the database itself; name another file")
    started = time.monotonic()
    try:
        done = backup(config.db_path, target)
    except ApsisError as exc:
        raise click.ClickException(f"{exc}; no backup was written") from None
    click.echo(f"backed up {config.db_path} to {done['path']}: {done['bytes']} bytes, schema version "
               f"{done['schema_version']}, integrity check ok, in {time.monotonic() - started:.1f} s")


@click.command("check-db")
@click.argument("path", metavar="[FILE]", required=False, type=click.Path(dir_okay=False))
@data_options
def check_db_cmd(path, config_file, data_dir):
    """Check a database (default: the server's): integrity, schema version, size.

    Read-only: safe beside a running server. Exit status 0: usable; 1: damaged
    or not an apsis-lite database; 2: no such file; 3: made by a newer apsis-lite;
    4: cannot be read now (a full disk, a lock, a permission).
    """
    from apsis_lite.store.maintenance import OK, check_db
    path = path or load(config_file, data_dir).db_path
    verdict, lines = check_db(path)
    for line in lines:
        click.echo(line, err=verdict != OK)
    raise SystemExit(verdict)


@click.command("vacuum")
@data_options
def vacuum_cmd(config_file, data_dir):
    """Rewrite the database once so that space freed by pruning is given back while the server runs.

    Databases made by this version need it never; older ones once. The server
    must be stopped (the rewrite holds the database for its whole length), and
    the disk needs free space about the size of the database.
    """
    from apsis_lite.store.maintenance import vacuum
    config = load(config_file, data_dir)
    if not os.path.isfile(config.db_path):
        raise click.ClickException(f"no database at {config.db_path}")
    # Held for the whole rewrite, so that no server starts on the database meanwhile.
    lock = os.open(os.path.join(config.data_dir, "apsis-lite.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise click.ClickException(f"a server is running on {config.data_dir}; stop it first "
                                       "(VACUUM rewrites the whole database and would hold up every start)") from None
        done = vacuum(config.db_path)
    except ApsisError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        os.close(lock)
    click.echo(f"vacuumed {config.db_path}: {done['before']} bytes before, {done['after']} after; "
               "free space is given back from now on")


def archive_pages(path, params, all_pages):
    """(runs as the API gives them, the last page) from an archive file, read here."""
    from apsis_lite.model.runs import format_run_id
    from apsis_lite.store.maintenance import open_archive
    from apsis_lite.store.runfilter import compile_filter
    from apsis_lite.timeutil import parse_time
    since, until = (parse_time(params[k]).timestamp() if params.get(k) else None for k in ("since", "until"))
    try:
        store = open_archive(path)
    except ApsisError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        where, values = compile_filter(params.get("q") or "")
        items, cursor = [], None
        while True:
            runs, cursor = store.query_runs(where, values, since=since, until=until,
                                            limit=params.get("limit") or 50, cursor=cursor)
            items += [r.to_jso(full=False) for r in runs]
            if not (all_pages and cursor):
                break
    except ApsisError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        store.close()
    return items, {"items": items, "next": format_run_id(cursor) if cursor else None}


COMMANDS = (prune_cmd, archive_cmd, backup_cmd, check_db_cmd, vacuum_cmd)
