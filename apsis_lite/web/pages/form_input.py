"""Times typed into the pages' forms: in the viewer's zone (or one picked), or "now"."""

from apsis_lite.errors import BadRequest
from apsis_lite.web.format import valid_zone
from apsis_lite.web.request_args import shown, time_value


def time_field(name, text, tz):
    """The epoch of the time ``text`` in zone ``tz``; None for "now" or nothing."""
    if not text or text.strip().lower() == "now":
        return None
    return time_value(text, name, tz)


def run_time(form):
    """When a "run now / at" form asks for the run: None for now, else the epoch of its time in its zone."""
    if form.get("when", "now") == "now":
        return None
    tz = valid_zone(form.get("tz", "").strip())
    if tz is None:
        raise BadRequest(f"zone: unknown time zone {shown(form.get('tz', ''))}")
    text = form.get("at", "").strip()
    if not text:
        raise BadRequest("time: give a time, or choose 'now'")
    return time_field("time", text, tz)
