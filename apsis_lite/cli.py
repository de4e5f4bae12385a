"""The ``apsis-lite`` command line: ``serve`` and ``check-jobs`` here, API clients in ``cli_client``."""

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


@cli.command("check-jobs")
@click.argument("jobs_dir", type=click.Path(file_okay=False), default="jobs")
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="Config file whose extensions register extra types.")
def check_jobs(jobs_dir, config_file):
    """Load every job file in JOBS_DIR and print every problem; exit 1 if there are any."""
    from .jobs import load_jobs_dir
    if config_file:
        from .config import load_config
        from .registry import load_extensions
        try:
            load_extensions(load_config(config_file).extensions)
        except ApsisError as exc:
            raise click.ClickException(str(exc)) from None
        except ImportError as exc:
            raise click.ClickException(f"cannot load extension: {exc}") from None
    if not os.path.isdir(jobs_dir):
        raise click.ClickException(f"jobs folder not found: {jobs_dir}")
    jobs, errors = load_jobs_dir(jobs_dir)
    for err in errors:
        click.echo(str(err), err=True)
    click.echo(f"{len(jobs)} jobs loaded, {len(errors)} problem{'s' if len(errors) != 1 else ''}")
    if errors:
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
