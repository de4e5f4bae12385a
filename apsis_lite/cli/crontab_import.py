"""Crontab → job files: one job per crontab entry, due at the same times.

Follows crontab(5) as Vixie cron and cronie read it:

* ``NAME=value`` lines (spaces around ``=`` allowed, value optionally
  quoted) apply to the entries after them. ``SHELL`` chooses the shell
  (default ``/bin/sh``), ``HOME`` is also the working folder, ``CRON_TZ``
  the zone the times are in, ``MAILTO`` (and ``MAILFROM``) cannot be
  carried over and are reported; every other name goes into the
  program's ``env``.
* An entry is five time fields, or a macro (``@daily``, ...), then the
  command. ``@reboot`` has no equivalent and is reported. In the command,
  the first ``%`` not escaped as ``\\%`` ends the command: the rest, with
  each further ``%`` turned into a newline, is the command's standard
  input (cron adds a final newline when missing; a here-document does
  the same).
* Comment lines right above an entry become its description; a commented
  out entry is reported, not imported.

Job ids come from the command (``/usr/local/bin/backup.sh --full`` →
``backup``), made unique with ``-2``, ``-3`` in file order, so that the same
crontab gives the same files.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field

from apsis_lite.cli.offline import to_yaml
from apsis_lite.model.fields import SpecError, is_template
from apsis_lite.model.schedules import parse_schedule
from apsis_lite.timeutil import get_tz

MACROS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
DEFAULT_SHELL = "/bin/sh"
_BASH = ("/bin/bash", "/usr/bin/bash")
_ENV_LINE = re.compile(r"^\s*([^\s=#]+)\s*=\s*(.*?)\s*$")
_ENTRY = re.compile(r"^\s*(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(.*\S)\s*$")
_MACRO_ENTRY = re.compile(r"^\s*(@\w+)\s+(.*\S)\s*$")
# The comment `crontab -e` puts above the entries; what is above it is boilerplate.
_FIELD_HEADER = re.compile(r"^m(in(ute)?)?\s+h(our)?\s+dom\s+mon\s+dow\b", re.IGNORECASE)


@dataclass
class Entry:
    """One crontab entry, with the environment in force at its line."""

    line_no: int
    line: str
    expr: str
    command: str
    stdin: str | None
    shell: str
    tz: str
    env: dict
    mailto: str | None
    comments: list


@dataclass
class Crontab:
    entries: list = field(default_factory=list)
    problems: list = field(default_factory=list)   # lines not imported: "line N: why"
    notes: list = field(default_factory=list)      # imported, but worth a look


def _env_value(raw: str) -> str:
    # A value in matching quotes keeps its blanks; the quotes go.
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
        return raw[1:-1]
    return raw


def split_percent(text: str) -> tuple[str, str | None]:
    """The command and its standard input (None without an unescaped ``%``), as cron splits them."""
    command, i, escaped = [], 0, False
    while i < len(text):
        ch = text[i]
        if escaped:
            if ch == "%":
                command[-1] = "%"  # ``\%`` is a literal percent sign
            else:
                command.append(ch)
            escaped = False
        elif ch == "%":
            return "".join(command), _stdin(text[i + 1:])
        else:
            command.append(ch)
            escaped = ch == "\\"
        i += 1
    return "".join(command), None


def _stdin(data: str) -> str:
    out, escaped = [], False
    for ch in data:
        if escaped:
            out.append("%" if ch == "%" else "\\" + ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        else:
            out.append("\n" if ch == "%" else ch)
    if escaped:
        out.append("\\")
    text = "".join(out)
    return text if not text or text.endswith("\n") else text + "\n"


def _comment_text(line: str) -> str:
    return line.strip()[1:].strip()


_FIELD = re.compile(r"[\d*/,-]+|[A-Za-z]{3}([,-][A-Za-z]{3})*")


def _looks_like_entry(text: str) -> bool:
    m = _ENTRY.match(text)
    if m and all(_FIELD.fullmatch(f) for f in m.groups()[:5]) and m.group(1)[0] in "0123456789*":
        return True
    m = _MACRO_ENTRY.match(text)
    return bool(m and m.group(1).lower() in MACROS + ("@reboot",))


def parse_crontab(text: str, default_tz: str) -> Crontab:
    """Every entry of a crontab, with what it could not take and what needs a look."""
    result = Crontab()
    env, shell, tz, mailto = {}, DEFAULT_SHELL, default_tz, None
    tz_problem = None
    comments = []
    for line_no, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped:
            comments = []
            continue
        if stripped.startswith("#"):
            body = _comment_text(stripped)
            if _looks_like_entry(body):
                result.notes.append(f"line {line_no}: commented out, not imported: {body}")
                comments = []
            elif _FIELD_HEADER.match(body):
                comments = []
            else:
                comments.append(body)
            continue
        where = f"line {line_no}"
        m = _MACRO_ENTRY.match(line) if stripped.startswith("@") else None
        if stripped.startswith("@"):
            if not m:
                result.problems.append(f"{where}: a macro with no command: {stripped}")
            elif m.group(1).lower() == "@reboot":
                result.problems.append(
                    f"{where}: @reboot is not supported (apsis-lite runs programs at times, "
                    f"not at boot; start it from the init system instead): {m.group(2)}")
            elif m.group(1).lower() not in MACROS:
                result.problems.append(f"{where}: unknown macro {m.group(1)!r} "
                                       f"(known: {', '.join(MACROS)}, @reboot)")
            else:
                _add(result, line_no, line, m.group(1).lower(), m.group(2), shell, tz, tz_problem,
                     env, mailto, comments)
            comments = []
            continue
        if stripped[0].isdigit() or stripped[0] == "*":
            m = _ENTRY.match(line)
            if not m:
                result.problems.append(f"{where}: not a crontab entry (five time fields, "
                                       f"then a command): {stripped}")
            else:
                _add(result, line_no, line, " ".join(m.groups()[:5]), m.group(6), shell, tz,
                     tz_problem, env, mailto, comments)
            comments = []
            continue
        m = _ENV_LINE.match(line)
        if not m:
            result.problems.append(f"{where}: neither an entry nor NAME=value: {stripped}")
            comments = []
            continue
        name, value = m.group(1), _env_value(m.group(2))
        comments = []
        if name == "CRON_TZ":
            try:
                get_tz(value)
                tz, tz_problem = value, None
            except ValueError:
                tz_problem = f"CRON_TZ={value!r} (line {line_no}) is not a known time zone"
                result.problems.append(f"{where}: {tz_problem}")
        elif name == "SHELL":
            shell = value or DEFAULT_SHELL
        elif name == "MAILTO":
            mailto = value or None  # MAILTO="" turns mail off
        elif name == "MAILFROM":
            result.notes.append(f"{where}: MAILFROM has no equivalent; ignored")
        else:
            env = {**env, name: value}
            if name == "RANDOM_DELAY":
                result.notes.append(f"{where}: RANDOM_DELAY only goes into the env; apsis-lite "
                                    "does not delay runs by it")
    return result


def _add(result, line_no, line, expr, rest, shell, tz, tz_problem, env, mailto, comments):
    where = f"line {line_no}"
    if tz_problem:
        result.problems.append(f"{where}: not imported: {tz_problem}")
        return
    try:
        parse_schedule({"type": "cron", "expr": expr, "tz": tz})
    except SpecError as exc:
        result.problems.append(f"{where}: {'; '.join(m for _, m in exc.problems)}")
        return
    command, stdin = split_percent(rest)
    if not command.strip():
        result.problems.append(f"{where}: no command")
        return
    if stdin is not None:
        result.notes.append(f"{where}: the text after '%' is the command's standard input, as in "
                            r"cron (write \% for a literal percent sign)")
    result.entries.append(Entry(line_no=line_no, line=line.strip(), expr=expr, command=command,
                                stdin=stdin, shell=shell, tz=tz, env=dict(env), mailto=mailto,
                                comments=list(comments)))


# --------------------------------------------------------------------------
# Job ids.

_SKIP_COMMANDS = {"cd", "test", "[", "[[", "true", ":", "set", "export", "umask", "sleep"}
_WRAPPERS = {"sudo", "nice", "ionice", "nohup", "exec", "env", "time", "chronic", "flock",
             "timeout", "setsid", "run-one"}
_INTERPRETERS = {"sh", "bash", "dash", "zsh", "python", "python3", "perl", "php", "node", "ruby"}


def _words(command: str) -> list[list[str]]:
    """The simple commands of a shell line, as word lists (redirections dropped)."""
    lex = shlex.shlex(command, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    lex.commenters = ""
    segments, skip_next = [[]], False
    try:
        tokens = list(lex)
    except ValueError:  # unbalanced quotes: cron would fail too; a name is still due
        tokens = command.split()
    for tok in tokens:
        if skip_next:
            skip_next = False
            continue
        if tok and all(c in "();<>|&" for c in tok):
            if "<" in tok or ">" in tok:
                skip_next = not tok.endswith("&")  # ``>&`` is followed by a fd number
                if segments[-1] and segments[-1][-1].isdigit():
                    segments[-1].pop()  # the fd in ``2>``
            else:
                segments.append([])
            continue
        segments[-1].append(tok)
    return [s for s in segments if s]


def _name_words(words: list[str]) -> list[str]:
    words = [w for w in words if not re.fullmatch(r"[A-Za-z_]\w*=.*", w)]
    while words and os.path.basename(words[0]) in _WRAPPERS:
        words = [w for w in words[1:] if not w.startswith("-")]
        # ``timeout 5m cmd``, ``flock /tmp/lock cmd``: the next word is the wrapper's.
        if words and (re.fullmatch(r"[\d.]+[smhd]?", words[0]) or words[0].endswith(".lock")):
            words = words[1:]
    out = []
    for w in words:
        if w.startswith("-") or "=" in w or w == "/dev/null" or w.isdigit():
            continue
        out.append(w)
    if len(out) > 1 and os.path.basename(out[0]) in _INTERPRETERS:
        out = out[1:]
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


_SCRIPT_SUFFIXES = (".sh", ".bash", ".py", ".pl", ".rb", ".php", ".js", ".conf")


def _stem(word: str) -> str:
    """``/usr/local/bin/backup.sh`` → ``backup``; ``app.jobs.cleanup`` stays as it is."""
    base = os.path.basename(word.rstrip("/")) or word
    stem, suffix = os.path.splitext(base)
    return stem if suffix in _SCRIPT_SUFFIXES and stem else base


def job_name(command: str) -> str:
    """A short readable name for a shell command: its program and first argument or two."""
    for words in _words(command):
        if os.path.basename(words[0]) in _SKIP_COMMANDS:
            continue
        names = _name_words(words)
        if not names:
            continue
        parts = [_stem(names[0])]
        for w in names[1:3]:
            part = _stem(w)
            if part not in parts:  # logrotate /etc/logrotate.conf: just "logrotate"
                parts.append(part)
        slug = _slug("-".join(parts))[:48].strip("-")
        if slug:
            return slug
    return "job"


def unique_ids(names: list[str]) -> list[str]:
    """``["a", "a", "b"]`` → ``["a", "a-2", "b"]``: the first keeps its name, in file order."""
    used, out = set(), []
    for name in names:
        candidate, n = name, 1
        while candidate in used:
            n += 1
            candidate = f"{name}-{n}"
        used.add(candidate)
        out.append(candidate)
    return out


# --------------------------------------------------------------------------
# Job files.


def literal(text: str) -> str:
    """``text`` as a job-file string that binds to itself (job strings are Jinja2 templates)."""
    if not is_template(text):
        return text
    if "endraw" not in text:
        return "{% raw %}" + text + "{% endraw %}"
    return text.replace("{", "{{ '{' }}")


def _script(entry: Entry) -> str:
    if entry.stdin is None:
        return entry.command
    delimiter, n = "CRON_INPUT", 1
    while delimiter in entry.stdin.split("\n"):
        n += 1
        delimiter = f"CRON_INPUT_{n}"
    # Braces give the whole command line the input, as cron's pipe does.
    return f"{{ {entry.command}\n}} <<'{delimiter}'\n{entry.stdin}{delimiter}\n"


def job_jso(entry: Entry) -> dict:
    """The job file contents for one entry (without the comments ``job_text`` adds)."""
    script = literal(_script(entry))
    options = {}
    env = {k: literal(v) for k, v in entry.env.items()}
    if env:
        options["env"] = env
    if entry.env.get("HOME"):
        options["cwd"] = literal(entry.env["HOME"])  # cron starts jobs in $HOME
    if entry.shell in _BASH:
        program = {"type": "shell", "command": script, **options}
    else:
        program = {"type": "program", "argv": [entry.shell, "-c", script], **options}
    metadata = {}
    if entry.comments:
        metadata["description"] = "\n".join(entry.comments)
    metadata["labels"] = ["crontab"]
    metadata["crontab"] = entry.line
    return {"program": program,
            "schedule": {"type": "cron", "expr": entry.expr, "tz": entry.tz},
            "metadata": metadata}


def job_text(entry: Entry) -> str:
    """A commented job file for one entry."""
    head = [f"# Imported from crontab line {entry.line_no}:", f"#   {entry.line}"]
    if entry.mailto:
        head += [
            f"# The crontab had MAILTO={entry.mailto}: cron mailed any output of this job there.",
            "# apsis-lite keeps the output with the run instead. To be told when it fails, add:",
            "#   action:",
            "#     type: email",
            f"#     to: {entry.mailto}",
            "#     if: {states: [failure, error]}",
        ]
    body = to_yaml(job_jso(entry))
    return "\n".join(head) + "\n" + body


@dataclass
class Written:
    job_id: str
    path: str
    entry: Entry


def plan(crontab: Crontab, out_dir: str) -> list[Written]:
    """Where each entry's job file goes."""
    ids = unique_ids([job_name(e.command) for e in crontab.entries])
    return [Written(job_id=i, path=os.path.join(out_dir, i + ".yaml"), entry=e)
            for i, e in zip(ids, crontab.entries)]


def existing(files: list[Written]) -> list[str]:
    return [w.path for w in files if os.path.lexists(w.path)]


def write(files: list[Written], out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    for w in files:
        tmp = w.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(job_text(w.entry))
        os.replace(tmp, w.path)
