"""``apsis-lite`` with no arguments: this user's scheduler, opened in the browser.

The data folder is the per-user one (``$XDG_DATA_HOME/apsis-lite``); the
jobs folder and an optional ``config.yaml`` live in
``$XDG_CONFIG_HOME/apsis-lite``. The data folder's lock decides whether a
scheduler is already running there: if it is, this launch only opens the
browser at the URL that scheduler wrote, so two schedulers never share
one database, even when two launches race.

It listens on a loopback address of its own, ``127.x.y.z`` worked out from
the user and the data folder (Linux answers on all of ``127/8``), rather
than ``127.0.0.1``: browsers send a host's cookies to every port of it, so
no page of another local server shares this one's cookies. Where the system
does not answer on such an address (macOS has only ``127.0.0.1``), or the
config names a ``host``, that is used instead.
"""

import dataclasses
import hashlib
import os
import socket
import sys
import time
import webbrowser

import yaml

from apsis_lite.config import load_config
from apsis_lite.config_apsis import APSIS_EQUIVALENTS
from apsis_lite.errors import ConfigError

# The port tried first, then the next ones up to PORT_TRIES in all.
PORT_TRIES = 20
# How long a second launch waits for a first one still starting to write its URL.
URL_WAIT = 15.0

EXAMPLE_JOB = """\
# An example job. apsis-lite loads every *.yaml file in this folder (subfolders
# too) and notices edits by itself. The job id is the file name without .yaml,
# so this job is "hello". Copy this file to start a job of your own.

# Params name the args every run gets; {{ who }} in a string is replaced by its value.
params: [who]

# What to run: a shell command (run with bash -c), or a list of strings run without a shell.
# In a shell command, write a param as {{ who | shquote }}: its value becomes one word
# the shell takes literally, whatever it holds.
program: "echo Hello, {{ who | shquote }}!"

# When to run: here every day at 09:00 in the zone given. Also `type: interval`
# (`interval: 15m`), `type: cron` (`expr: "0 9 * * mon-fri"`), calendars of working
# days... Without a schedule a job runs only when started from the page or with
# `apsis-lite run hello who=me`.
schedule:
  type: daily
  daytime: "09:00"
  tz: UTC
  args: {who: world}

# Optional: do something when a run ends, e.g. on failure:
# action:
#   type: command
#   if: {states: [failure, error]}
#   command: "notify-send 'apsis-lite: {{ job_id }} failed'"

metadata:
  description: Says hello every morning. Edit or delete this file freely.
  labels: [example]
"""


def config_home() -> str:
    """``$XDG_CONFIG_HOME/apsis-lite``, else ``~/.config/apsis-lite``."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "apsis-lite")


def user_jobs_dir() -> str:
    return os.path.join(config_home(), "jobs")


def user_config_file() -> str:
    return os.path.join(config_home(), "config.yaml")


def load_user_config(config_file=None):
    """The user's config (``config.yaml`` if present), with the user's jobs folder by default."""
    path = config_file or (user_config_file() if os.path.isfile(user_config_file()) else None)
    config = load_config(path)
    if not _sets(path, "jobs_dir"):
        config = dataclasses.replace(config, jobs_dir=user_jobs_dir())
    if not _sets(path, "host"):
        config = dataclasses.replace(config, host=own_loopback_address(config.data_dir))
    if config.log_file is None and not _is_terminal(sys.stderr):
        # Started from a file manager: nobody sees stderr, so keep the log where it can be found.
        config = dataclasses.replace(config, log_file=os.path.join(config.data_dir, "apsis-lite.log"))
    return config


def own_loopback_address(data_dir) -> str:
    """``127.x.y.z`` for this user and data folder if a program can listen there, else ``127.0.0.1``."""
    digest = hashlib.sha256(f"{os.getuid()}:{os.path.realpath(data_dir)}".encode()).digest()
    address = f"127.{digest[0]}.{digest[1]}.{1 + digest[2] % 254}"
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((address, 0))
    except OSError:
        return "127.0.0.1"
    return address


def _is_terminal(stream) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError):
        return False


def _sets(path, name) -> bool:
    """Whether the file sets ``name``, itself or by apsis's key for it (``jobs:``)."""
    if path is None:
        return False
    with open(path) as f:  # load_config has read and checked it already
        keys = yaml.safe_load(f) or {}
    names = {name, *APSIS_EQUIVALENTS.get(name, ())}
    return any(str(k).replace("-", "_") in names for k in keys)


def ensure_folders(config) -> bool:
    """Create the data folder, and the jobs folder with an example job if it is missing.

    Returns whether the jobs folder was created.
    """
    os.makedirs(config.data_dir, mode=0o700, exist_ok=True)
    if os.path.isdir(config.jobs_dir):
        return False
    os.makedirs(config.jobs_dir)
    with open(os.path.join(config.jobs_dir, "hello.yaml"), "w") as f:
        f.write(EXAMPLE_JOB)
    return True


def can_open_browser() -> bool:
    """Whether a browser can be shown: not when headless, nor when ``$APSIS_LITE_NO_BROWSER`` is set.

    Without a display, ``webbrowser`` would start a text browser in this
    terminal, which is worse than printing the URL.
    """
    if os.environ.get("APSIS_LITE_NO_BROWSER"):
        return False
    if sys.platform in ("darwin", "win32") or os.environ.get("BROWSER"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def open_browser(url, say) -> bool:
    if not can_open_browser():
        return False
    try:
        opened = webbrowser.open(url)
    except Exception as exc:  # a broken $BROWSER must not stop the scheduler
        say(f"could not open a browser: {exc}")
        return False
    if not opened:
        say("could not open a browser; open the address above yourself")
    return opened


def running_url(data_dir, wait=URL_WAIT):
    """The URL the scheduler holding ``data_dir`` wrote, waiting while it starts; None if none came."""
    path = os.path.join(data_dir, "server.url")
    deadline = time.monotonic() + wait
    while True:
        try:
            with open(path) as f:
                url = f.read().strip()
            if url:
                return url
        except FileNotFoundError:
            pass
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.1)


def say(text):
    print(f"apsis-lite: {text}", flush=True)


def start(config, browser=True):
    """Open the running scheduler of ``config.data_dir``, or start one and open it.

    Returns the exit status.
    """
    from apsis_lite import service
    if ensure_folders(config):
        say(f"created your jobs folder {config.jobs_dir} with an example job")
    try:
        lock_fd = service.lock_data_dir(config)
    except ConfigError:
        url = running_url(config.data_dir)
        if url is None:
            raise ConfigError(f"another apsis-lite is using {config.data_dir} but has not said "
                              "its address; try again in a moment") from None
        say(f"already running at {url}")
        if browser:
            open_browser(service.browser_url(config, url), say)
        return 0

    def ready(url):
        say(f"open {url} in your browser (jobs: {config.jobs_dir}; data: {config.data_dir}); "
            "Ctrl-C stops the scheduler")
        if browser:
            open_browser(service.browser_url(config, url), say)

    service.serve(config, lock_fd=lock_fd, port_tries=PORT_TRIES, on_ready=ready)
    return 0
