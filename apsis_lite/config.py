"""Configuration: one frozen ``Config``, each setting declared once with its default and help.

A YAML config file and command-line flags both feed ``load_config``; flags win.
Unknown keys and bad values are errors naming the key.
"""

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from apsis_lite.config_apsis import apply_override, translate
from apsis_lite.errors import ConfigError
from apsis_lite.timeutil import parse_duration


def default_data_dir() -> str:
    """The per-user data folder: ``$XDG_DATA_HOME/apsis-lite`` or ``~/.local/share/apsis-lite``."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "apsis-lite")


# The shortest interval a job's schedule may have, unless the config says otherwise.
DEFAULT_MIN_INTERVAL = 1.0


def _setting(default, help, kind=str):
    return field(default=default, metadata={"help": help, "kind": kind})


HOST_SELECTIONS = ("round-robin", "random", "least-busy")
# ssh_options a host may not set: a password prompt would hang a start.
_FORBIDDEN_SSH_OPTIONS = {"batchmode"}


@dataclass(frozen=True)
class HostSettings:
    """How to reach one remote host; ``None`` leaves the value to ``~/.ssh/config``."""

    name: str
    hostname: str
    user: str | None = None
    port: int | None = None
    identity_file: str | None = None
    ssh_options: tuple = ()


@dataclass(frozen=True)
class HostGroup:
    """A name for several hosts and how a run picks one of them."""

    name: str
    hosts: tuple
    select: str = "round-robin"


@dataclass(frozen=True)
class Config:
    jobs_dir: str = _setting("jobs", "folder of job files (YAML)", "path")
    calendars_dir: str = _setting(None, "folder of calendar files (NAME.cal: dates one a line, or ranges); their names can be used in schedules and templates beside the weekday sets and shipped holiday calendars", "path")
    data_dir: str = _setting(None, "folder for the database, run folders and logs (default: per-user data folder)", "path")
    host: str = _setting("127.0.0.1", "address to listen on")
    port: int = _setting(5005, "port to listen on", int)
    server: str = _setting("gevent", "web server: gevent (default) or waitress")
    threads: int = _setting(8, "worker threads when server is waitress", int)
    horizon: float = _setting(120.0, "how far ahead scheduled runs are created in the database (duration)", "duration")
    max_age: float = _setting(3600.0, "slots missed while the server was down are run on restart unless older than this (duration); older ones are recorded as skipped", "duration")
    output_head: int = _setting(8 * 1024 * 1024, "bytes of output kept from the start of each run", int)
    output_tail: int = _setting(8 * 1024 * 1024, "bytes of output kept from the end of each run once it exceeds output_head", int)
    sweep_interval: float = _setting(5.0, "how often runs in flight are checked for a lost completion notice (duration)", "duration")
    checkpoint_interval: float = _setting(300.0, "how often the SQLite WAL is checkpointed and truncated (duration)", "duration")
    min_interval: float = _setting(DEFAULT_MIN_INTERVAL, "the shortest interval a job's interval or daily-interval schedule may have (duration); a job file with a shorter one does not load", "duration")
    waiting_max_time: float = _setting(86400.0, "a run that waits longer than this for its conditions or resources goes to error (duration; a job's waiting: max_time overrides it)", "duration")
    resources: dict = _setting(None, "capacity of each named resource, e.g. {db: 2}; a resource not listed has capacity 1", "capacities")
    hosts: dict = _setting(None, "remote hosts reached over ssh, by name: {NAME: {hostname, user, port, identity_file, ssh_options}}; each key is optional and what is left out comes from ~/.ssh/config (see docs/remote.md)", "hosts")
    host_groups: dict = _setting(None, "named groups of hosts: {NAME: {hosts: [HOST, ...], select: round-robin | random | least-busy}}", "host_groups")
    sudo_for_user: bool = _setting(False, "a server that is not root runs a program with user: as that user through 'sudo -n -u USER' (never prompting; the sudoers policy must allow it without a password); off: such a job file does not load (see docs/remote.md)", bool)
    extensions: tuple = _setting((), "modules to import at start-up that register extra program/schedule/condition/action types", tuple)
    log_level: str = _setting("INFO", "logging level")
    log_file: str = _setting(None, "write the log to this file instead of stderr, rotated by size", "path")
    log_file_max_size: int = _setting(10 * 1024 * 1024, "bytes at which the log file is rotated (renamed to .1, .2, ...)", int)
    log_file_backups: int = _setting(5, "rotated log files kept beside the current one", int)
    jobs_watch: str = _setting("auto", "how edits to job files are noticed: auto (inotify, else polling), poll, or off (only on 'apsis-lite reload')")
    jobs_poll_interval: float = _setting(2.0, "how often the jobs folder is checked for changes when polling (duration)", "duration")
    action_workers: int = _setting(16, "command, webhook and e-mail actions done at the same time at most", int)
    action_timeout: float = _setting(60.0, "time limit of a command action and of sending an e-mail (duration)", "duration")
    webhook_retries: int = _setting(3, "times a failed webhook is tried again (connection error, timeout, HTTP 429 or 5xx)", int)
    webhook_retry_delay: float = _setting(1.0, "wait before the first webhook retry, doubled for each further one (duration)", "duration")
    smtp_host: str = _setting(None, "SMTP server for e-mail actions (none: e-mail actions fail with that reason)")
    smtp_port: int = _setting(25, "SMTP server port", int)
    smtp_security: str = _setting("none", "none, starttls or ssl")
    smtp_user: str = _setting(None, "SMTP login user (none: no login)")
    smtp_password: str = _setting(None, "SMTP login password")
    smtp_from: str = _setting(None, "From address of e-mails (default: apsis-lite@ this host's name)")
    users_file: str = _setting(None, "file of users, their roles, password hashes and API token hashes, managed by 'apsis-lite user' (default: users.json in the data folder); listening beyond loopback needs at least one user", "path")
    allowed_hosts: tuple = _setting((), "host names requests may be addressed to, besides localhost, 127.0.0.1, [::1] and the host listened on (a guard against DNS rebinding); '*' allows any, e.g. behind a proxy that checks the name", tuple)
    session_lifetime: float = _setting(12 * 3600.0, "how long a browser login lasts from the moment of logging in, however busy the browser is (duration)", "duration")
    session_idle_timeout: float = _setting(8 * 3600.0, "a browser login ends after this long without the user doing anything; the pages' background refreshes do not count (duration)", "duration")
    tls_cert: str = _setting(None, "certificate file (PEM) to serve HTTPS directly (gevent server only; or put a TLS proxy in front, see docs/security.md)", "path")
    tls_key: str = _setting(None, "private key file (PEM) for tls_cert", "path")
    secure_cookies: bool = _setting(False, "mark the session cookie Secure (set this behind a TLS proxy; on by itself with tls_cert)", bool)
    runs_retention: float = _setting(None, "finished runs are removed (or archived, see retention_archive) once they finished longer ago than this (duration; none: kept for ever)", "duration")
    output_retention: float = _setting(None, "the stored output of finished runs is removed once they finished longer ago than this, the runs themselves staying (duration; none: kept as long as the run)", "duration")
    runs_kept_per_job: int = _setting(10, "each job's latest finished runs (with their output) kept whatever their age", int)
    retention_archive: bool = _setting(False, "move runs past runs_retention to archive files (DATA/archive/runs-YYYY-MM.db, one per month) instead of removing them", bool)
    retention_interval: float = _setting(600.0, "how often the server looks for runs and output past their retention (duration)", "duration")
    retention_batch: int = _setting(200, "runs removed or archived per write transaction; the engine runs between batches", int)
    max_request_size: int = _setting(1024 * 1024, "bytes a request body may have (API bodies, forms, logins); a larger one gets 413 before it is read", int)
    sanity_interval: float = _setting(60.0, "how often the server runs its sanity checks in the background (duration; 0: only when asked, by 'apsis-lite sanity', the API or the page)", "duration")
    sanity_behind: float = _setting(60.0, "a run still scheduled or starting this long after its due time is reported: the engine is behind or stuck (duration)", "duration")
    sanity_late: float = _setting(60.0, "a run that started more than this after its due time, not counting time it waited for its conditions, resources or a pause, is reported as late (duration)", "duration")
    sanity_window: float = _setting(3600.0, "how far back late runs are reported (duration)", "duration")
    sanity_failures: int = _setting(3, "a job whose last this many runs all failed (failure or error) is reported; 0: never", int)
    sanity_actions: tuple = _setting((), "actions done once for each new sanity finding: command, webhook or email mappings as in a job file, each with an optional kinds: [...] (behind, unplanned, lost, orphan, late, failing)", "actions")
    metrics_token_file: str = _setting(None, "file holding a token that may read /metrics and nothing else, for a Prometheus server (the API's tokens read it too)", "path")
    program_types: dict = _setting(None, "short names for program types, as in apsis: {NAME: TYPE}, TYPE a type name or a class path an extension registers", "aliases")
    schedule_types: dict = _setting(None, "short names for schedule types: {NAME: TYPE}", "aliases")
    action_types: dict = _setting(None, "short names for action types: {NAME: TYPE}", "aliases")
    # Not a setting: what reading the file noticed (apsis keys ignored, and why), logged at start-up.
    notes: tuple = field(default=(), metadata={"help": "", "kind": "internal"})

    @property
    def db_path(self) -> str:
        return os.path.join(self.data_dir, "apsis-lite.db")

    @property
    def runs_dir(self) -> str:
        return os.path.join(self.data_dir, "runs")

    @property
    def agent_dir(self) -> str:
        return os.path.join(self.data_dir, "agent")

    @property
    def notify_path(self) -> str:
        return os.path.join(self.data_dir, "notify.sock")


SETTINGS = {f.name: f for f in dataclasses.fields(Config) if f.metadata["kind"] != "internal"}


def _convert(name, value):
    kind = SETTINGS[name].metadata["kind"]
    try:
        if value is None:
            return None
        if kind == int:
            if isinstance(value, bool):
                raise ValueError("not an integer")
            return int(value)
        if kind == bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "yes", "on", "1"):
                return True
            if str(value).lower() in ("false", "no", "off", "0"):
                return False
            raise ValueError(f"expected true or false, not {value!r}")
        if kind == "duration":
            return parse_duration(value)
        if kind == tuple:
            if isinstance(value, str):
                return (value,)
            return tuple(str(v) for v in value)
        if kind == "capacities":
            return _capacities(value)
        if kind == "actions":
            return _action_list(value)
        if kind == "hosts":
            return _hosts(value)
        if kind == "host_groups":
            return _host_groups(value)
        if kind == "aliases":
            return _aliases(value)
        if kind == "path":
            return os.path.abspath(os.path.expanduser(str(value)))
        return str(value)
    except (TypeError, ValueError, OverflowError) as exc:  # OverflowError: int(.inf)
        raise ConfigError(f"config: {name}: {exc}") from None


def _capacities(value) -> dict:
    """``{name: slots}`` with whole numbers of at least 1."""
    if not isinstance(value, dict):
        raise ValueError("expected a mapping of resource name: capacity")
    out = {}
    for name, cap in value.items():
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
            raise ValueError(f"{name}: capacity must be a whole number of at least 1, not {cap!r}")
        out[str(name)] = cap
    return out


def _action_list(value) -> tuple:
    """A list of action mappings (one mapping alone is a list of one); their keys are
    checked when the server starts (the action types live above this module)."""
    items = [value] if isinstance(value, dict) else value
    if not isinstance(items, (list, tuple)):
        raise ValueError("expected a list of action mappings, e.g. [{type: command, command: ...}]")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValueError(f"[{i}]: expected an action mapping with a type:, not {item!r}")
    return tuple(dict(item) for item in items)


def _aliases(value) -> dict:
    """``{alias: type name}``, both non-empty texts."""
    if not isinstance(value, dict):
        raise ValueError("expected a mapping of NAME: TYPE")
    for name, target in value.items():
        if not isinstance(name, str) or not name or not isinstance(target, str) or not target:
            raise ValueError(f"{name}: expected a type name or class path, not {target!r}")
    return dict(value)


def _name(value, what) -> str:
    """A host or group name, user or host name: text that cannot be read as an ssh option."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty text, not {value!r}")
    if value.startswith("-") or any(c.isspace() or not c.isprintable() for c in value):
        raise ValueError(f"{what} {value!r} may not start with '-' or contain spaces or control characters")
    return value


def _mapping(value, what, keys) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{what}: expected a mapping, not {value!r}")
    unknown = [str(k) for k in value if k not in keys]
    if unknown:
        raise ValueError(f"{what}: {unknown[0]}: unknown key (known: {', '.join(keys)})")
    return value


def _ssh_options(value, what) -> tuple:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{what}: expected a list of Key=Value texts, not {value!r}")
    for option in value:
        key, eq, rest = option.partition("=") if isinstance(option, str) else ("", "", "")
        if not (eq and key.isalnum() and key.isascii() and rest.strip() and rest.isprintable()):
            raise ValueError(f"{what}: expected Key=Value (as for ssh -o), not {option!r}")
        if key.lower() in _FORBIDDEN_SSH_OPTIONS:
            raise ValueError(f"{what}: {key} is always yes (ssh must never prompt)")
    return tuple(value)


def _host(name, value) -> HostSettings:
    fields = _mapping(value, name, ("hostname", "user", "port", "identity_file", "ssh_options"))
    port = fields.get("port")
    if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536):
        raise ValueError(f"{name}: port: must be a whole number from 1 to 65535, not {port!r}")
    user = fields.get("user")
    if user is not None and "@" in _name(user, f"{name}: user"):
        raise ValueError(f"{name}: user: may not contain '@', not {user!r}")
    identity = fields.get("identity_file")
    if identity is not None:
        if not isinstance(identity, str) or not identity or "\0" in identity:
            raise ValueError(f"{name}: identity_file: must be a file name, not {identity!r}")
        identity = os.path.abspath(os.path.expanduser(identity))
    hostname = _name(fields.get("hostname", name), f"{name}: hostname")
    options = _ssh_options(fields.get("ssh_options") or [], f"{name}: ssh_options")
    return HostSettings(name, hostname, user, port, identity, options)


def _hosts(value) -> dict:
    """``{name: HostSettings}`` from the ``hosts:`` mapping."""
    if not isinstance(value, dict):
        raise ValueError("expected a mapping of host name: settings")
    return {name: _host(_name(name, "host name"), settings) for name, settings in value.items()}


def _host_groups(value) -> dict:
    """``{name: HostGroup}`` from the ``host_groups:`` mapping."""
    if not isinstance(value, dict):
        raise ValueError("expected a mapping of group name: {hosts, select}")
    groups = {}
    for name, settings in value.items():
        name = _name(name, "group name")
        fields = _mapping(settings, name, ("hosts", "select"))
        hosts = fields.get("hosts")
        if not isinstance(hosts, (list, tuple)) or not hosts:
            raise ValueError(f"{name}: hosts: expected a non-empty list of host names, not {hosts!r}")
        hosts = tuple(_name(h, f"{name}: hosts: host name") for h in hosts)
        if len(set(hosts)) != len(hosts):
            raise ValueError(f"{name}: hosts: a host is listed twice")
        select = fields.get("select", "round-robin")
        if select not in HOST_SELECTIONS:
            raise ValueError(f"{name}: select: must be {', '.join(HOST_SELECTIONS)}, not {select!r}")
        groups[name] = HostGroup(name, hosts, select)
    return groups


def _read_file(path) -> dict:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        jso = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(jso, dict):
        raise ConfigError(f"{path}: expected a mapping of settings")
    return jso


def load_config(path=None, overrides=(), **flags) -> Config:
    """Build the config from defaults, then the YAML file at ``path`` (apsis-lite's
    settings and apsis's keys, see ``config_apsis``), then ``overrides``
    (``NAME=VALUE`` texts, as ``--override``), then ``flags`` (non-None)."""
    raw = _read_file(path) if path is not None else {}
    for text in overrides:
        apply_override(raw, text)
    base = os.path.dirname(os.path.abspath(path)) if path is not None else os.getcwd()
    translated, notes = translate(raw, base)
    values = {}
    for key, value in translated.items():
        name = str(key).replace("-", "_")
        if name not in SETTINGS:
            where = f"{path}: " if path is not None else "config: "
            raise ConfigError(f"{where}{key}: unknown setting (not an apsis-lite setting nor an apsis one; "
                              f"known: {', '.join(SETTINGS)})")
        if value is not None:  # `key:` with nothing after it (or null) leaves the default
            values[name] = value
    for name, value in flags.items():
        if value is not None:
            values[name] = value
    converted = {name: _convert(name, value) for name, value in values.items()}
    for name in ("resources", "hosts", "host_groups", "program_types", "schedule_types", "action_types"):
        if converted.get(name) is None:
            converted[name] = {}
    if converted.get("data_dir") is None:
        converted["data_dir"] = default_data_dir()
    if "jobs_dir" not in converted:
        converted["jobs_dir"] = os.path.abspath(Config.jobs_dir)
    cfg = Config(**converted, notes=tuple(notes))
    if cfg.server not in ("gevent", "waitress"):
        raise ConfigError(f"config: server: must be gevent or waitress, not {cfg.server!r}")
    if not 0 <= cfg.port < 65536:
        raise ConfigError(f"config: port: out of range: {cfg.port}")
    if cfg.jobs_watch not in ("auto", "poll", "off"):
        raise ConfigError(f"config: jobs_watch: must be auto, poll or off, not {cfg.jobs_watch!r}")
    if cfg.smtp_security not in ("none", "starttls", "ssl"):
        raise ConfigError(f"config: smtp_security: must be none, starttls or ssl, not {cfg.smtp_security!r}")
    if cfg.action_workers < 1:
        raise ConfigError(f"config: action_workers: must be at least 1, not {cfg.action_workers}")
    if cfg.webhook_retries < 0:
        raise ConfigError(f"config: webhook_retries: must not be negative, not {cfg.webhook_retries}")
    if cfg.threads < 1:
        raise ConfigError(f"config: threads: must be at least 1, not {cfg.threads}")
    if cfg.log_file_max_size < 1024:
        raise ConfigError(f"config: log_file_max_size: must be at least 1024 bytes, not {cfg.log_file_max_size}")
    if cfg.log_file_backups < 1:
        raise ConfigError(f"config: log_file_backups: must be at least 1, not {cfg.log_file_backups}")
    if bool(cfg.tls_cert) != bool(cfg.tls_key):
        raise ConfigError("config: tls_cert and tls_key go together: give both or neither")
    if cfg.tls_cert and cfg.server != "gevent":
        raise ConfigError("config: tls_cert: only the gevent server serves HTTPS itself; "
                          "put a TLS proxy in front of waitress (see docs/security.md)")
    if cfg.max_request_size < 1024:
        raise ConfigError(f"config: max_request_size: must be at least 1024 bytes, not {cfg.max_request_size}")
    if cfg.session_lifetime <= 0:
        raise ConfigError("config: session_lifetime: must be more than zero")
    if cfg.session_idle_timeout <= 0:
        raise ConfigError("config: session_idle_timeout: must be more than zero")
    if cfg.jobs_poll_interval <= 0:
        raise ConfigError("config: jobs_poll_interval: must be more than zero")
    _check_retention(cfg)
    both = sorted(set(cfg.hosts) & set(cfg.host_groups))
    if both:
        raise ConfigError(f"config: host_groups: {both[0]}: is also the name of a host; a job's host: must name one or the other")
    if cfg.sanity_interval < 0:
        raise ConfigError("config: sanity_interval: must not be negative (0 turns the background check off)")
    if cfg.sanity_failures < 0:
        raise ConfigError(f"config: sanity_failures: must not be negative, not {cfg.sanity_failures}")
    if cfg.min_interval < 0.001:
        raise ConfigError(f"config: min_interval: must be at least 1 ms, not {cfg.min_interval:g} s")
    return cfg


def _check_retention(cfg):
    for name in ("runs_retention", "output_retention"):
        value = getattr(cfg, name)
        if value is not None and value <= 0:
            raise ConfigError(f"config: {name}: must be more than zero (leave it empty to keep for ever)")
    if cfg.runs_kept_per_job < 0:
        raise ConfigError(f"config: runs_kept_per_job: must not be negative, not {cfg.runs_kept_per_job}")
    if cfg.retention_interval < 1:
        raise ConfigError(f"config: retention_interval: must be at least 1 s, not {cfg.retention_interval:g} s")
    if not 1 <= cfg.retention_batch <= 10_000:
        raise ConfigError(f"config: retention_batch: must be from 1 to 10000, not {cfg.retention_batch}")
    if cfg.retention_archive and cfg.runs_retention is None:
        raise ConfigError("config: retention_archive: needs runs_retention (how old a run is when it is archived)")
