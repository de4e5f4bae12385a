"""What every client command shares: the ``--url``/``--token``, ``--json`` and
``--utc`` options, the API session whose errors leave as one-line click errors,
and printing JSON or a table fitted to the terminal.
"""

import contextlib
import json
import shutil
import sys

import click

from apsis_lite.cli.client import DEFAULT_URL, Client, ClientError


@contextlib.contextmanager
def api_session(url):
    """A Client whose errors leave as one-line click errors, not tracebacks."""
    ctx = click.get_current_context(silent=True)
    try:
        yield Client(url, token=ctx.meta.get("apsis_token") if ctx else None)
    except ClientError as exc:
        raise click.ClickException(exc.message) from None


def _remember_token(ctx, _param, value):
    if value:
        ctx.meta["apsis_token"] = value


def url_option(f):
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


def json_option(f):
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(f)


def utc_option(f):
    return click.option("--utc", is_flag=True, help="Show times in UTC, not local time.")(f)


def print_json(jso):
    """Print a JSON value, indented, for ``--json``."""
    click.echo(json.dumps(jso, indent=2))


def table_width():
    """Fit tables to a terminal; leave piped output whole for grep and friends."""
    if sys.stdout.isatty():
        return shutil.get_terminal_size((80, 24)).columns
    return None
