"""``apsis-lite user ...``: who may log in, their roles and API tokens (see web/auth.py)."""

import click

from apsis_lite.cli.arguments import override_option, overrides
from apsis_lite.errors import ApsisError


@click.group("user")
def user_group():
    """Manage who may log in: users with a role (viewer or operator) and their API tokens.

    The users file is users.json in the data folder unless the config names
    another (users_file); the server picks up changes without a restart.
    """


def _users_options(f):
    f = override_option(f)
    f = click.option("--data", "data_dir", type=click.Path(file_okay=False),
                     help="Data folder of the server (default: the per-user data folder).")(f)
    return click.option("--config", "config_file", type=click.Path(dir_okay=False),
                        help="The server's config file (its users_file and data_dir).")(f)


def _users_file(config_file, data_dir):
    from apsis_lite.web.auth import UsersFile, users_path
    from apsis_lite.config import load_config
    try:
        return UsersFile(users_path(load_config(config_file, overrides(), data_dir=data_dir)))
    except ApsisError as exc:
        raise click.ClickException(str(exc)) from None


def _new_password(from_stdin):
    if from_stdin:
        line = click.get_text_stream("stdin").readline()
        return line.rstrip("\r\n")
    return click.prompt("Password", hide_input=True, confirmation_prompt=True)


def _users_call(fn, *args):
    try:
        return fn(*args)
    except ApsisError as exc:
        raise click.ClickException(str(exc)) from None


@user_group.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(["viewer", "operator"]), required=True,
              help="viewer: sees everything; operator: also runs, stops, reruns, skips, marks, reloads.")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
@_users_options
def user_add(name, role, password_stdin, config_file, data_dir):
    """Add user NAME with a password (asked for, or read from stdin)."""
    users = _users_file(config_file, data_dir)
    _users_call(users.add, name, role, _new_password(password_stdin))
    click.echo(f"added {role} {name} to {users.path}")


@user_group.command("remove")
@click.argument("name")
@_users_options
def user_remove(name, config_file, data_dir):
    """Remove user NAME, their API tokens and their browser sessions."""
    users = _users_file(config_file, data_dir)
    _users_call(users.remove, name)
    click.echo(f"removed {name} from {users.path}")


@user_group.command("passwd")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
@_users_options
def user_passwd(name, password_stdin, config_file, data_dir):
    """Set a new password for NAME (their browser sessions end)."""
    users = _users_file(config_file, data_dir)
    _users_call(users.passwd, name, _new_password(password_stdin))
    click.echo(f"changed the password of {name}")


@user_group.command("list")
@_users_options
def user_list(config_file, data_dir):
    """List the users: name, role, number of API tokens."""
    users = _users_call(_users_file(config_file, data_dir).load)
    if not users:
        click.echo("no users (add one with 'apsis-lite user add NAME --role operator')")
    for name, user in sorted(users.items()):
        click.echo(f"{name}\t{user.get('role')}\t{len(user.get('tokens') or {})} token(s)")


@user_group.command("token")
@click.argument("name")
@click.option("--label", default="", help="What the token is for (kept beside its hash).")
@_users_options
def user_token(name, label, config_file, data_dir):
    """Issue an API token for NAME, for scripts (Authorization: Bearer TOKEN).

    Only its hash is kept: it is printed once, now.
    """
    users = _users_file(config_file, data_dir)
    token = _users_call(users.issue_token, name, label)
    click.echo(token)
    from apsis_lite.web.auth import TOKEN_ID_LENGTH, hash_api_token
    token_id = hash_api_token(token)[:TOKEN_ID_LENGTH]
    click.echo(f"token id {token_id}: revoke it with 'apsis-lite user revoke {name} {token_id}'", err=True)


@user_group.command("tokens")
@click.argument("name")
@_users_options
def user_tokens(name, config_file, data_dir):
    """List NAME's API tokens: id, created, label (the tokens themselves are not kept)."""
    from apsis_lite.timeutil import to_iso
    tokens = _users_call(_users_file(config_file, data_dir).tokens, name)
    if not tokens:
        click.echo(f"{name} has no API tokens (issue one with 'apsis-lite user token {name}')")
    for token_id, label, created in tokens:
        click.echo(f"{token_id}\t{to_iso(created) if created else '-'}\t{label}")


@user_group.command("revoke")
@click.argument("name")
@click.argument("token")
@_users_options
def user_revoke(name, token, config_file, data_dir):
    """Revoke one of NAME's API tokens: TOKEN is its id (from 'user tokens') or the token itself.

    A running server refuses it from its next request on.
    """
    token_id = _users_call(_users_file(config_file, data_dir).revoke_token, name, token)
    click.echo(f"revoked {name}'s token {token_id}")
