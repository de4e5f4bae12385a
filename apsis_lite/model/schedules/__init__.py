"""Schedule types: pure iterators over due times. No I/O, no clock reads.

A schedule is parsed from its job-file mapping with ``parse_schedule(jso)``;
``times(start)`` then yields ``(time, args)`` pairs, time an aware UTC
datetime ``>= start`` in strictly increasing order, args the strings the
schedule supplies (``time``, ``date``, ...) overlaid with its own ``args:``.
Any schedule may carry ``jitter`` and, in the ``start:``/``stop:`` form, a
stop schedule.

One module per kind: ``interval``, ``explicit`` (absolute times), and the
wall-clock ones ``daily`` and ``daily_interval`` (sharing ``wallclock``) and
``cron``, which share one daylight-saving rule (``dst``) that a schedule can
tune with ``dst:``. ``base`` holds the Schedule class and the parsing,
``stops`` the stop schedules, ``instants`` the UTC arithmetic they share.
Importing this package registers the built-in types in SCHEDULES.

The strict-mapping reader (``Fields``, ``SpecError`` and the converters)
lives in ``apsis_lite.model.fields``; it is re-exported here for the code
that has always imported it from this package.
"""

from apsis_lite.model.fields import (
    Fields, SpecError, _kind, duration, flag, is_template, join_key, nonempty_text, positive_duration,
    string_list, string_map, text, unknown_key_message,
)
from apsis_lite.model.schedules.base import Schedule, jitter_offset, parse_schedule
from apsis_lite.model.schedules.dst import Dst, parse_dst
from apsis_lite.model.schedules.stops import STOP_TYPES, DaytimeStop, DurationStop, StopSchedule, parse_stop
# The kinds, in the order they register.
from apsis_lite.model.schedules.interval import IntervalSchedule
from apsis_lite.model.schedules.daily import DailySchedule
from apsis_lite.model.schedules.daily_interval import DailyIntervalSchedule, WindowEnd
from apsis_lite.model.schedules.cron import CronSchedule
from apsis_lite.model.schedules.explicit import EXPLICIT_FIRST_YEAR, EXPLICIT_LAST_YEAR, ExplicitSchedule
from apsis_lite.model.schedules.wallclock import MAX_CAL_SHIFT, MAX_DATE_SHIFT

__all__ = [
    # apsis_lite.model.fields
    "Fields", "SpecError", "duration", "flag", "is_template", "join_key", "nonempty_text",
    "positive_duration", "string_list", "string_map", "text", "unknown_key_message",
    # the schedules
    "Schedule", "jitter_offset", "parse_schedule", "Dst", "parse_dst",
    "STOP_TYPES", "DaytimeStop", "DurationStop", "StopSchedule", "parse_stop",
    "IntervalSchedule", "DailySchedule", "DailyIntervalSchedule", "WindowEnd", "CronSchedule",
    "ExplicitSchedule", "EXPLICIT_FIRST_YEAR", "EXPLICIT_LAST_YEAR", "MAX_CAL_SHIFT", "MAX_DATE_SHIFT",
]
