"""Calendars: weekday sets, calendar files, set arithmetic, shipped holidays, searching."""

from datetime import date

import pytest

from apsis_lite.model.calendars import ALL, CalendarError, CalendarLibrary, load_calendars

LIB = CalendarLibrary()


def d(text):
    return date.fromisoformat(text)


def dates(expr, start, stop, library=LIB):
    return [x.isoformat() for x in library.parse(expr).dates(start, stop)]


# --- weekday sets ---------------------------------------------------------------

@pytest.mark.parametrize("expr, expected", [
    ("Mon-Fri", ["2026-11-23", "2026-11-24", "2026-11-25", "2026-11-26", "2026-11-27"]),
    ("Tue,Thu", ["2026-11-24", "2026-11-26"]),
    ("sat,SUN", ["2026-11-28", "2026-11-29"]),
    ("Fri-Mon", ["2026-11-23", "2026-11-27", "2026-11-28", "2026-11-29"]),  # wraps
    ("Monday,Wednesday-Thursday", ["2026-11-23", "2026-11-25", "2026-11-26"]),
    ("all", ["2026-11-23", "2026-11-24", "2026-11-25", "2026-11-26", "2026-11-27",
             "2026-11-28", "2026-11-29"]),
])
def test_weekday_sets(expr, expected):
    assert dates(expr, "2026-11-23", "2026-11-30") == expected  # Monday to Sunday
    assert str(LIB.parse(expr)) == expr


def test_all_is_the_shared_all():
    assert LIB.parse("all") is ALL and LIB.parse("ALL") is ALL


# --- shipped holiday calendars ----------------------------------------------------

@pytest.mark.parametrize("name, holiday", [
    ("US-holidays", "2026-11-26"),   # Thanksgiving
    ("US-holidays", "2026-07-03"),   # Independence Day observed (4 July is a Saturday)
    ("UK-holidays", "2026-12-28"),   # Boxing Day observed (26th is a Saturday)
    ("UK-holidays", "2026-08-31"),   # late summer bank holiday
    ("DE-holidays", "2026-10-03"),   # Day of German Unity
    ("FR-holidays", "2026-07-14"),   # Bastille Day
    ("JP-holidays", "2026-05-06"),   # substitute holiday for Constitution Day on a Sunday
    ("NYSE-holidays", "2026-04-03"), # Good Friday: markets closed, not a US federal holiday
    ("NYSE-holidays", "2001-09-11"), # the exchange stayed closed
])
def test_shipped_calendars_know_holidays(name, holiday):
    assert LIB.parse(name).contains(holiday)


def test_shipped_calendars_do_not_list_working_days():
    assert not LIB.parse("US-holidays").contains("2026-11-27")
    assert not LIB.parse("NYSE-holidays").contains("2026-10-12")  # Columbus Day: markets open
    assert LIB.parse("US-holidays").contains("2026-10-12")
    assert {"US-holidays", "UK-holidays", "DE-holidays", "FR-holidays", "JP-holidays",
            "NYSE-holidays"} <= set(LIB.names())


# --- arithmetic -------------------------------------------------------------------

def test_business_days_minus_holidays():
    assert dates("Mon-Fri - US-holidays", "2026-11-23", "2026-11-30") == [
        "2026-11-23", "2026-11-24", "2026-11-25", "2026-11-27"]


def test_union_intersection_and_parentheses():
    assert dates("Sat,Sun + US-holidays", "2026-11-23", "2026-11-30") == [
        "2026-11-26", "2026-11-28", "2026-11-29"]
    assert dates("US-holidays & Thu", "2026-01-01", "2026-12-31") == ["2026-01-01", "2026-11-26"]
    # Left to right: (Mon-Fri - US) + Sat; parentheses change it.
    assert dates("Mon-Fri - US-holidays + Sat", "2026-11-26", "2026-11-29") == ["2026-11-27", "2026-11-28"]
    assert dates("Mon-Fri - (US-holidays + Fri)", "2026-11-23", "2026-11-30") == [
        "2026-11-23", "2026-11-24", "2026-11-25"]
    assert str(LIB.parse("Mon-Fri - (US-holidays + Fri)")) == "Mon-Fri - (US-holidays + Fri)"


@pytest.mark.parametrize("expr, message", [
    ("Mon-Fri-US-holidays", "unknown calendar 'Mon-Fri-US-holidays'"),
    ("Mon-Fri -", "ends where a calendar was expected"),
    ("Mon-Fri - (US-holidays", "missing ')'"),
    ("Mon-Fri US-holidays", "unexpected 'US-holidays'"),
    ("- Mon", "unexpected '-'"),
    ("Narnia", "unknown calendar 'Narnia' (named calendars: DE-holidays"),
    ("", "not a calendar"),
    ("(" * 1000 + "Mon" + ")" * 1000, "calendar expression too long: 2,003 characters (at most 1,000)"),
    ("(" * 11 + "Mon" + ")" * 11, "calendar expression nested 11 parentheses deep (at most 10)"),
    (" + ".join(["Mon"] * 51), "calendar expression has 51 calendars (at most 50)"),
])
def test_bad_expressions(expr, message):
    with pytest.raises(CalendarError) as info:
        LIB.parse(expr)
    assert message in str(info.value)


# --- searching ------------------------------------------------------------------

def test_before_after_contains_shift():
    cal = LIB.parse("Mon-Fri - US-holidays")
    assert cal.after("2026-11-25") == d("2026-11-27")
    assert cal.before("2026-11-27") == d("2026-11-25")
    assert cal.before(d("2026-11-30")) == d("2026-11-27")
    assert cal.after("2026-11-28") == d("2026-11-30")   # from a date not in the calendar
    assert cal.contains("2026-11-25") and "2026-11-25" in cal
    assert not cal.contains("2026-11-26")
    assert cal.shift("2026-11-25", 1) == d("2026-11-27")
    assert cal.shift("2026-11-25", 3) == d("2026-12-01")
    assert cal.shift("2026-11-30", -2) == d("2026-11-25")
    assert cal.shift("2026-11-26", 0) == d("2026-11-26")
    assert cal.after("2026-11-25T18:00:00-05:00") == d("2026-11-27")  # a run's time arg


def test_finite_calendar_ends():
    library, _ = _library({"quarter-ends.cal": "2026-03-31\n2026-06-30\n"})
    cal = library.parse("quarter-ends")
    assert cal.after("2026-04-01") == d("2026-06-30")
    assert cal.on_or_after("2026-07-01") is None
    with pytest.raises(CalendarError, match="no date in calendar 'quarter-ends' after 2026-06-30"):
        cal.after("2026-06-30")
    with pytest.raises(CalendarError, match="before 2026-03-31"):
        cal.before("2026-03-31")
    assert library.parse("quarter-ends - Tue").on_or_after("2026-03-01") is None  # both are Tuesdays
    assert library.parse("quarter-ends - Wed").on_or_after("2026-04-01") == d("2026-06-30")
    # An empty periodic set ends too.
    assert LIB.parse("Mon - Mon-Fri").on_or_after("2026-01-01") is None


# --- files ----------------------------------------------------------------------

def _library(files, tmp=None):
    import tempfile
    import os
    folder = tempfile.mkdtemp()
    for name, text in files.items():
        with open(os.path.join(folder, name), "w") as f:
            f.write(text)
    return load_calendars(folder)


def test_calendar_file_format():
    library, errors = _library({"office-closed.cal": (
        "# Our office closures\n"
        "2026-12-24..2026-12-31   # winter break\n"
        "\n"
        "2026-08-14  # summer party\n")})
    assert errors == []
    assert dates("office-closed", "2026-08-01", "2027-01-01", library) == [
        "2026-08-14", "2026-12-24", "2026-12-25", "2026-12-26", "2026-12-27", "2026-12-28",
        "2026-12-29", "2026-12-30", "2026-12-31"]
    assert dates("Mon-Fri - US-holidays - office-closed", "2026-12-21", "2027-01-05", library) == [
        "2026-12-21", "2026-12-22", "2026-12-23", "2027-01-04"]


def test_user_calendar_wins_over_shipped_one():
    library, _ = _library({"US-holidays.cal": "2026-11-27\n"})
    assert library.parse("US-holidays").contains("2026-11-27")
    assert not library.parse("US-holidays").contains("2026-11-26")


def test_calendar_file_errors_name_file_and_line():
    library, errors = _library({
        "bad.cal": "2026-01-01\n2026-13-01\n",
        "backwards.cal": "2026-02-01..2026-01-01\n",
        "Mon.cal": "2026-01-01\n",
        "good.cal": "2026-01-02\n",
        "notes.txt": "not a calendar",
    })
    got = sorted((e.path.rsplit("/", 1)[1], e.msg) for e in errors)
    assert got == [
        ("Mon.cal", "not usable as a calendar name: 'Mon' (letters, digits, _ . -; not a weekday set)"),
        ("backwards.cal", "line 1: range ends before it starts: '2026-02-01..2026-01-01'"),
        ("bad.cal", "line 2: not a date or range: '2026-13-01' (expected YYYY-MM-DD or "
                    "YYYY-MM-DD..YYYY-MM-DD, then optionally a description)"),
    ]
    assert library.parse("good").contains("2026-01-02")
    with pytest.raises(CalendarError):
        library.parse("bad")


def test_missing_folder_is_reported():
    library, errors = load_calendars("/nonexistent/calendars")
    assert len(errors) == 1 and "cannot read calendars folder" in errors[0].msg
    assert library.parse("Mon-Fri - US-holidays")  # shipped ones still work


def test_calendars_dir_setting(tmp_path):
    from apsis_lite.config import SETTINGS, load_config
    (tmp_path / "c.yaml").write_text("calendars-dir: cals\n")
    assert load_config(tmp_path / "c.yaml").calendars_dir.endswith("/cals")
    assert load_config().calendars_dir is None
    assert "NAME.cal" in SETTINGS["calendars_dir"].metadata["help"]


def test_expressions_at_the_limits_work():
    assert LIB.parse("(" * 10 + "Mon-Fri" + ")" * 10).contains(date(2026, 11, 30))
    fifty = LIB.parse(" - ".join(["all"] + ["Sat"] * 48 + ["Sun"]))
    assert fifty.contains(date(2026, 11, 30)) and not fifty.contains(date(2026, 11, 29))


def test_shift_and_dates_are_bounded():
    mon_fri = LIB.parse("Mon-Fri")
    assert mon_fri.shift("2026-11-30", 10_000) == date(2065, 3, 30)
    with pytest.raises(CalendarError, match="cannot shift by 10001 dates"):
        mon_fri.shift("2026-11-30", 10_001)
    assert len(list(mon_fri.dates("2000-01-01", "2273-10-16"))) > 70_000  # 99,999 days
    with pytest.raises(CalendarError, match="more than 100,000 days"):
        list(mon_fri.dates("0001-01-01", "9999-12-31"))
