"""The instants schedules compute in: aware UTC datetimes up to the last one a datetime holds.

Interval arithmetic is done in integer microseconds since the epoch; every
schedule's times end at ``_LAST`` (year 9999), where computing the next one
would leave the range of dates.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from apsis_lite.timeutil import UTC

_MICRO = timedelta(microseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The last instant a datetime holds: every schedule's times end there.
_LAST = datetime.max.replace(tzinfo=UTC)
_LAST_MICROS = (_LAST - _EPOCH) // _MICRO


def _as_utc(t: datetime) -> datetime:
    if not isinstance(t, datetime) or t.tzinfo is None:
        raise ValueError(f"start must be an aware datetime, got {t!r}")
    return t.astimezone(UTC)


def _micros(seconds: float) -> int:
    return round(seconds * 1_000_000)


def _until_out_of_range(items):
    """``items`` until computing the next one leaves the range of dates (year 9999): no later times."""
    try:
        yield from items
    except OverflowError:
        return
