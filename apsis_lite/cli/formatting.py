"""Text for people from the API's JSON: times, args, tables, rusage, pauses, reload
summaries, and the exit status a finished run gives the command line.

Pure functions, so that they can be tested without a server.
"""

import signal

from apsis_lite import timeutil


def format_time(iso, utc=False) -> str:
    """``2026-11-25 10:00:00`` in local time, or ``2026-11-25 09:00:00Z`` in UTC."""
    if not iso:
        return ""
    try:
        dt = timeutil.parse_time(iso)
    except ValueError:
        return str(iso)
    if utc:
        return dt.strftime("%Y-%m-%d %H:%M:%SZ")
    return dt.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def quote_word(text: str) -> str:
    """``text`` quoted as the filter language would read it back."""
    text = str(text)
    if text and not any(c.isspace() or c in '"=:!\\' for c in text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_args(args) -> str:
    """``date=2026-11-25 name="a b"``: the same form the run filter accepts."""
    return " ".join(f"{quote_word(k)}={quote_word(v)}" for k, v in (args or {}).items())


def format_value(value) -> str:
    """A compact one-line form of a JSON value for people."""
    if value is None:
        return ""
    if isinstance(value, dict):
        return " ".join(f"{k}={format_value(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(format_value(v) for v in value)
    return str(value)


def format_rusage(rusage) -> str:
    """``user 0.012 s, system 0.003 s, max RSS 11680 kB`` from a run's ``rusage``."""
    if not isinstance(rusage, dict):
        return format_value(rusage)

    def number(key):
        value = rusage.get(key)
        return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    parts, shown = [], set()
    for key, form in (("utime", "user {:.3f} s"), ("stime", "system {:.3f} s"),
                      ("maxrss_kb", "max RSS {} kB")):
        if number(key) is not None:
            parts.append(form.format(number(key)))
            shown.add(key)
    rest = {k: v for k, v in rusage.items() if k not in shown}
    if rest:
        parts.append(format_value(rest))
    return ", ".join(parts)


def format_table(headers, rows, width=None, shrink=()) -> str:
    """Left-aligned columns two spaces apart.

    With ``width``, the columns whose indices are in ``shrink`` are narrowed,
    widest first, until the table fits; cut cells end in ``…``.
    """
    rows = [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    if width:
        over = sum(widths) + 2 * (len(widths) - 1) - width
        floor = {i: min(widths[i], max(len(headers[i]), 8)) for i in shrink}
        while over > 0:
            can = [i for i in shrink if widths[i] > floor[i]]
            if not can:
                break
            widths[max(can, key=lambda i: widths[i])] -= 1
            over -= 1

    def line(cells):
        out = []
        for cell, w in zip(cells, widths):
            if len(cell) > w:
                cell = cell[: w - 1] + "…"
            out.append(cell.ljust(w))
        return "  ".join(out).rstrip()

    return "\n".join([line(headers)] + [line(r) for r in rows])


def format_fields(pairs):
    """``label  value`` lines, skipping empty values."""
    pairs = [(k, v) for k, v in pairs if v not in (None, "", [], {})]
    w = max((len(k) for k, _ in pairs), default=0)
    return "\n".join(f"{k.ljust(w)}  {v}" for k, v in pairs)


def indent(text):
    """Each line of ``text`` indented by two spaces."""
    return "\n".join("  " + line for line in text.splitlines())


def format_pause(p) -> str:
    """``paused (skip): vendor outage, by ann since 2027-01-15T08:00:00Z``."""
    by = f", by {p['user']}" if p.get("user") else ""
    return f"paused ({p.get('mode')}): {p.get('reason')}{by} since {p.get('time')}"


def format_deadline(d):
    """A job's ``deadline`` in words, or None."""
    if not d:
        return None
    shift = d.get("date_shift") or 0
    return (f"must succeed by {d.get('daytime')} {d.get('tz')} on the run's date"
            + (f" {shift:+d} day{'s' if abs(shift) != 1 else ''}" if shift else ""))


def format_max_duration(m):
    """A job's ``max_duration`` in words, or None."""
    if not m:
        return None
    return timeutil.format_duration(m.get("duration")) + (", then stopped" if m.get("stop") else " (an alarm)")


def format_reload(summary) -> str:
    """``3 jobs; added: a; changed: b (2 scheduled runs re-planned); removed: none``."""
    def ids(key):
        return ", ".join(summary.get(key) or []) or "none"

    skipped = summary.get("skipped_runs") or 0
    replanned = f" ({skipped} scheduled run{'s' if skipped != 1 else ''} re-planned)" if skipped else ""
    return (f"{summary.get('jobs', 0)} jobs; added: {ids('added')}; changed: {ids('changed')}{replanned}; "
            f"removed: {ids('removed')}")


def _signum(sig):
    """The number of a signal given as 9, "9", "KILL" or "SIGKILL"; else None."""
    if isinstance(sig, int) and not isinstance(sig, bool):
        return sig
    if isinstance(sig, str) and sig:
        if sig.isdigit():
            return int(sig)
        name = sig.upper() if sig.upper().startswith("SIG") else "SIG" + sig.upper()
        try:
            return signal.Signals[name].value
        except KeyError:
            return None
    return None


def exit_status(run) -> tuple[int, str | None]:
    """The CLI's exit status for a finished run, and a note for stderr or None.

    success -> 0 (with a note when a stop's signal ended it: a success only
    because the stop was asked for); failure -> the program's exit code, or
    128 + signal number as a shell reports it; anything else (error,
    skipped) -> 1 with a note.
    """
    state, rid = run.get("state"), run.get("run_id")
    message = run.get("message")
    if state == "success":
        return 0, (f"{rid}: success: {message}" if run.get("signal") and message else None)
    if state == "failure":
        num = _signum(run.get("signal"))
        if num:
            try:
                name = signal.Signals(num).name
            except ValueError:
                name = f"signal {num}"
            return 128 + num, f"{rid}: failure: killed by {name}"
        code = run.get("exit_code")
        if isinstance(code, int) and 0 < code < 256:
            # The program has said why on its own stderr.
            return code, None
    note = f"{rid}: {state}" + (f": {message}" if message else "")
    return 1, note
