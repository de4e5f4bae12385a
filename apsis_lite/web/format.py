"""Formatting for the pages: times in the viewer's zone, Markdown, programs as YAML, output text.

Pure functions and small values; the clock is passed in, so tests are exact.
"""

from datetime import datetime
from functools import lru_cache

import pytz
import yaml
from markdown_it import MarkdownIt
from markupsafe import Markup

from apsis_lite.timeutil import UTC, format_duration, from_epoch, get_tz

DEFAULT_ZONE = "UTC"

# Raw HTML in a description is shown as text, never passed through; links
# with javascript:, vbscript: or file: URLs are refused by markdown-it itself.
_MARKDOWN = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})


def render_markdown(text) -> Markup:
    """A job description (Markdown) as safe HTML."""
    if not text:
        return Markup("")
    return Markup(_MARKDOWN.render(str(text)))


class _ProgramDumper(yaml.SafeDumper):
    """YAML that shows a multi-line string as the literal text, in a ``|`` block."""


def _str_block(dumper, text):
    style = "|" if "\n" in text else None
    if style and any(line != line.rstrip() for line in text.splitlines()):
        # YAML cannot keep trailing spaces in a block; they are rare, and being exact matters more.
        style = None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_ProgramDumper.add_representer(str, _str_block)


def program_text(program) -> str:
    """A program (or condition, action) as the YAML a job file would hold ("" for none);
    a multi-line command reads as written."""
    if not program:
        return ""
    return yaml.dump(program, Dumper=_ProgramDumper, sort_keys=False, default_flow_style=False,
                     allow_unicode=True).strip()


@lru_cache(maxsize=1)
def zone_names() -> tuple:
    """The zones offered by the picker."""
    return tuple(pytz.common_timezones)


def valid_zone(name) -> str | None:
    """``name`` if it is a zone we can show times in, else None."""
    if not name or len(name) > 64:
        return None
    try:
        get_tz(name)
    except ValueError:
        return None
    return "UTC" if name.upper() == "UTC" else name


def ago(seconds: float) -> str:
    """``3 min ago`` or ``in 3 min`` for a time ``seconds`` before now (negative: after)."""
    if abs(seconds) < 1:
        return "just now"
    text = format_duration(abs(seconds))
    # "12.4 s ago" reads oddly for page times; whole seconds are enough.
    if abs(seconds) < 60:
        text = f"{int(abs(seconds))} s"
    return f"{text} ago" if seconds > 0 else f"in {text}"


class TimeFormat:
    """Formats epoch times for one page: in the viewer's ``zone``, relative to ``now``."""

    def __init__(self, zone: str, now: float):
        self.zone_name = zone
        self.zone = get_tz(zone)
        self.now = now

    def local(self, t: float) -> datetime:
        return from_epoch(t).astimezone(self.zone)

    def short(self, t) -> str:
        """``2026-11-26 09:12:03`` in the viewer's zone ('' for None)."""
        if t is None:
            return ""
        return self.local(t).strftime("%Y-%m-%d %H:%M:%S")

    def title(self, t, job_zone=None, elapsed=None) -> str:
        """The tooltip: the time in the viewer's zone, UTC, the job's zone; how long ago."""
        if t is None:
            return ""
        here = self.local(t)
        # A zone named as its abbreviation (UTC, EST5EDT's EST...) is not repeated in brackets.
        lines = [here.strftime("%Y-%m-%d %H:%M:%S %Z")
                 + (f" ({self.zone_name})" if here.tzname() != self.zone_name else "")]
        if here.utcoffset():
            lines.append(f"{from_epoch(t).strftime('%Y-%m-%d %H:%M:%S')} UTC")
        if job_zone and job_zone not in (self.zone_name, "UTC"):
            try:
                there = from_epoch(t).astimezone(get_tz(job_zone))
                lines.append(f"{there.strftime('%Y-%m-%d %H:%M:%S %Z')} (job's zone, {job_zone})")
            except ValueError:
                pass
        lines.append(ago(self.now - t))
        if elapsed is not None:
            lines.append(f"ran {format_duration(elapsed)}")
        return "\n".join(lines)

    def iso(self, t) -> str:
        return "" if t is None else from_epoch(t).astimezone(UTC).isoformat()


def job_zone(job) -> str | None:
    """The zone a job's schedules are written in, if any names one."""
    for sched in getattr(job, "schedules", ()) or ():
        tz = getattr(sched, "tz", None)
        if isinstance(tz, str) and tz:
            return tz
    return None


def complete_utf8(data: bytes) -> int:
    """How many leading bytes of ``data`` end on a UTF-8 character boundary.

    Output arrives in chunks that may split a character; the rest waits for
    the next chunk rather than showing as a replacement character.
    """
    n = len(data)
    for back in range(1, min(4, n) + 1):
        byte = data[n - back]
        if byte & 0xC0 == 0x80:  # a continuation byte: keep looking for the lead
            continue
        if byte & 0x80 == 0:  # ASCII
            return n
        need = 2 if byte & 0xE0 == 0xC0 else 3 if byte & 0xF0 == 0xE0 else 4 if byte & 0xF8 == 0xF0 else 1
        return n if back >= need else n - back
    return n
