"""Cron expressions for property tests: every field form cronsim reads (lists, ranges,
steps, names, L, W-less last weekday ``LW``, ``#``, ``L`` on weekdays), 5 and 6 fields."""

from hypothesis import strategies as st


def _field(lo, hi, names=()):
    """One field's text over [lo, hi]: *, a value, a range, a step, a list of those, or a name."""
    value = st.integers(lo, hi).map(str)
    if names:
        value = value | st.sampled_from(names)
    ranged = st.tuples(st.integers(lo, hi), st.integers(lo, hi)).map(lambda ab: f"{min(ab)}-{max(ab)}")
    step = st.tuples(st.sampled_from(["*", str(lo)]), st.integers(1, max(1, (hi - lo) // 2 + 1))) \
        .map(lambda sv: f"{sv[0]}/{sv[1]}")
    part = value | ranged | step
    return st.just("*") | part | st.lists(part, min_size=2, max_size=3).map(",".join)


_DAY = _field(1, 31) | st.sampled_from(["L", "LW", "15", "29", "31"])
_WEEKDAY = _field(0, 7, ("MON", "fri", "Sun")) | st.sampled_from(["MON#1", "5#5", "FRIL", "SUN#2", "1L"])
_MONTH = _field(1, 12, ("JAN", "feb", "Dec"))


@st.composite
def cron_expressions(draw):
    """A cron expression cronsim accepts (5 fields, or 6 with seconds first)."""
    fields = [draw(_field(0, 59)), draw(_field(0, 23)), draw(_DAY), draw(_MONTH), draw(_WEEKDAY)]
    if draw(st.booleans()):
        fields.insert(0, draw(_field(0, 59)))
    return " ".join(fields)
