"""apsis's config file, read as apsis-lite settings; ``--override KEY=VALUE``.

An apsis config (``jobs:``, ``database:``, ``schedule: {max_age}``, ...) sits
beside apsis-lite's own settings in one mapping. ``translate`` turns apsis's
keys that mean something here into settings, and returns a note for each key
that is accepted but ignored, saying why; a key that is neither apsis's nor
ours is an error naming it. apsis resolves relative paths against the config
file's folder, so its path keys do here too.
"""

import os

import yaml

from apsis_lite.errors import ConfigError

# apsis's keys with no meaning here, and why (shown once at start-up).
IGNORED = {
    "database.timeout": "apsis-lite opens its own database with its own lock timeout",
    "runs.lookback": "apsis-lite keeps no runs in memory, so every run in its database is listed and none is "
                     "hidden; to bound history use runs_retention (docs/retention.md)",
    "runs_lookback": "apsis-lite keeps no runs in memory, so every run in its database is listed and none is "
                     "hidden; to bound history use runs_retention (docs/retention.md)",
    "schedule.horizon": "apsis-lite creates runs up to its own horizon setting (default 2 min), "
                        "which keeps start-up and reloads fast",
    "schedule.since": "use 'apsis-lite serve --since now' to start fresh; by default missed slots up to "
                      "max_age are run, as apsis does with since: null",
    "python": "Python garbage-collector tuning for apsis's in-memory runs; apsis-lite keeps runs in SQLite",
    "procstar": "apsis-lite runs procstar programs on its host_groups through its own agent over ssh "
                "(docs/remote.md); no procstar agent server is needed",
    "action": "actions on every run are not supported: put them in the job files (docs/actions.md)",
    "actions": "actions on every run are not supported: put them in the job files (docs/actions.md)",
}

# apsis's sections and the keys each may hold.
SECTIONS = {
    "database": ("path", "timeout"),
    "runs": ("lookback",),
    "schedule": ("since", "max_age", "horizon"),
    "waiting": ("max_time",),
    "smtp": ("host", "port", "ssl", "auth"),
}
# Sections ignored whole, whatever they hold.
OPAQUE = ("python", "procstar", "action", "actions", "runs_lookback")
JOBS_KEYS = ("jobs", "job_dir", "jobdir")
APSIS_KEYS = frozenset((*SECTIONS, *OPAQUE, *JOBS_KEYS))
# Our settings that an apsis key may set instead.
APSIS_EQUIVALENTS = {"jobs_dir": JOBS_KEYS}


def _path(value, base, key):
    if not isinstance(value, str) or not value:
        raise ConfigError(f"config: {key}: expected a path, not {value!r}")
    return os.path.normpath(os.path.join(base, os.path.expanduser(value)))


def _section(raw, name):
    value = raw[name]
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"config: {name}: expected a mapping of {', '.join(SECTIONS[name])}, not {value!r}")
    unknown = [str(k) for k in value if k not in SECTIONS[name]]
    if unknown:
        raise ConfigError(f"config: {name}.{unknown[0]}: unknown setting "
                          f"(apsis's {name} section has {', '.join(SECTIONS[name])})")
    return value


def _smtp(section, values):
    for key, ours in (("host", "smtp_host"), ("port", "smtp_port")):
        if section.get(key) not in (None, 0):
            values.setdefault(ours, section[key])
    ssl = section.get("ssl", False)
    if ssl not in (True, False, "starttls", None):
        raise ConfigError(f"config: smtp.ssl: expected true, false or starttls, not {ssl!r}")
    values.setdefault("smtp_security", {True: "ssl", "starttls": "starttls"}.get(ssl, "none"))
    auth = section.get("auth")
    if auth is not None:
        if not isinstance(auth, dict) or set(auth) - {"username", "password"}:
            raise ConfigError("config: smtp.auth: expected {username, password}")
        values.setdefault("smtp_user", auth.get("username"))
        values.setdefault("smtp_password", auth.get("password"))


def _host_group(name, group):
    """apsis's group forms (``{type, hosts}``, a host, a list) as ours (``{hosts, select}``)."""
    if isinstance(group, str):
        return {"hosts": [group]}
    if isinstance(group, list):
        return {"hosts": group, "select": "random"}
    if isinstance(group, dict) and "type" in group:
        kind = group["type"]
        if kind == "single" and isinstance(group.get("host"), str):
            return {"hosts": [group["host"]]}
        if kind not in ("round-robin", "random"):
            raise ConfigError(f"config: host_groups: {name}: type: must be round-robin, random or single, "
                              f"not {kind!r}")
        rest = {k: v for k, v in group.items() if k != "type"}
        return {**rest, "select": kind}
    return group  # ours, checked by the config


def translate(raw: dict, base: str):
    """apsis's keys in ``raw`` → (apsis-lite settings, notes on ignored keys).

    ``raw`` holds the file's top-level keys; ours are passed through as they
    are, and win over apsis's equivalents.
    """
    values, notes = {}, []

    def ignore(key):
        notes.append(f"{key}: ignored: {IGNORED[key]}")

    for key, value in raw.items():
        if key not in APSIS_KEYS:
            values[key] = value
    jobs = [k for k in JOBS_KEYS if raw.get(k) is not None]
    if jobs:
        values.setdefault("jobs_dir", _path(raw[jobs[0]], base, jobs[0]))
    if "database" in raw:
        db = raw["database"]
        db = {"path": db} if isinstance(db, str) else _section(raw, "database")
        if db.get("path") is not None:
            # A folder of ours beside apsis's file: nothing of apsis's is touched or re-permissioned.
            db_path = _path(db["path"], base, "database.path")
            data_dir = os.path.join(os.path.dirname(db_path), "apsis-lite")
            values.setdefault("data_dir", data_dir)
            notes.append(f"database.path: apsis-lite keeps its database and run folders in its own data folder "
                         f"{data_dir} (unless data_dir is set); {db_path} is not read: its run history comes "
                         f"over with 'apsis-lite import-apsis {db_path}'")
        if db.get("timeout") is not None:
            ignore("database.timeout")
    for section, key, ours in (("schedule", "max_age", "max_age"), ("waiting", "max_time", "waiting_max_time")):
        if section in raw:
            value = _section(raw, section).get(key)
            if value is not None:
                values.setdefault(ours, value)
    for section, keys in (("schedule", ("horizon", "since")), ("runs", ("lookback",))):
        if section in raw:
            given = _section(raw, section)
            notes += [f"{section}.{k}: ignored: {IGNORED[section + '.' + k]}" for k in keys
                      if given.get(k) is not None]
    if "smtp" in raw:
        _smtp(_section(raw, "smtp"), values)
    for key in OPAQUE:
        if raw.get(key) is not None:
            ignore(key)
    if isinstance(values.get("host_groups"), dict):
        values["host_groups"] = {name: _host_group(name, g) for name, g in values["host_groups"].items()}
    return values, notes


def apply_override(raw: dict, text: str) -> None:
    """``NAME=VALUE`` (dotted for apsis's sections: ``schedule.max_age=3600``) into ``raw``.

    VALUE is read as YAML (``port=0`` is a number, ``resources={db: 2}`` a
    mapping); what YAML cannot read is taken as text.
    """
    name, eq, value_text = text.partition("=")
    name = name.strip()
    if not eq or not name or any(not part for part in name.split(".")):
        raise ConfigError(f"--override: expected NAME=VALUE (e.g. max_age=10m or schedule.max_age=600), "
                          f"not {text!r}")
    try:
        value = yaml.safe_load(value_text) if value_text.strip() else None
    except yaml.YAMLError:
        value = value_text
    *sections, last = name.split(".")
    target = raw
    for part in sections:
        nested = target.get(part)
        if nested is None:
            nested = target[part] = {}
        elif not isinstance(nested, dict):
            raise ConfigError(f"--override {name}: {part} is not a section")
        target = nested
    target[last] = value
