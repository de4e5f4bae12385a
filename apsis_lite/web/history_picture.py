"""A job's recent history as a picture: the geometry of the SVG on its page.

One column per run, oldest on the left and the newest at the right edge: a
mark coloured by outcome, above the middle line for a success and below it
for a failure or an error (so that colour is never the only sign), a bar as tall as the run took (against the longest
shown), and a dot on a line for how late it started (against the latest
shown). The template draws it; every text in it (titles, the summary) is
escaped there. The picture is bounded: at most ``HISTORY_RUNS`` columns.
"""

from collections import Counter
from dataclasses import dataclass, field

from apsis_lite.engine.sanity_checks import start_lateness
from apsis_lite.model.runs import ACTIVE, format_run_id
from apsis_lite.timeutil import format_duration

HISTORY_RUNS = 60
DAY = 86400.0
RATE_CAP = 5000  # a job's newest runs looked at for its success rates

# The picture's layout, in SVG user units (it scales to the page's width).
WIDTH, LEFT = 720, 64
MARK_Y, MARK_H = 2, 20
BARS_Y, BARS_H = 30, 70
LATE_Y, LATE_H = 114, 34
HEIGHT = LATE_Y + LATE_H + 6


@dataclass
class Column:
    run_id: int
    state: str
    x: float
    width: float
    bar_y: float
    bar_h: float
    late_y: float | None
    title: str
    mark_y: float = 0.0
    mark_h: float = 0.0

    @property
    def svg(self) -> dict:
        """The column's coordinates as the SVG takes them (one decimal)."""
        f = "{:.1f}".format
        return {"x": f(self.x), "w": f(self.width), "mark_y": f(self.mark_y), "mark_h": f(self.mark_h),
                "bar_y": f(self.bar_y), "bar_h": f(self.bar_h), "cx": f(self.x + self.width / 2),
                "cy": None if self.late_y is None else f(self.late_y)}


@dataclass
class Rate:
    """Success over a window: successes of the runs that ended in success, failure or error."""

    label: str
    succeeded: int
    outcomes: int
    capped: bool

    @property
    def percent(self) -> int | None:
        return round(100 * self.succeeded / self.outcomes) if self.outcomes else None


@dataclass
class Picture:
    columns: list
    longest: float
    latest: float
    summary: str
    rates: list = field(default_factory=list)
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    mark_y: int = MARK_Y
    mark_h: int = MARK_H
    bars_y: int = BARS_Y
    bars_h: int = BARS_H
    late_y: int = LATE_Y
    late_h: int = LATE_H

    @property
    def late_points(self) -> str:
        """The lateness line's points, through the runs that started."""
        return " ".join(f"{c.x + c.width / 2:.1f},{c.late_y:.1f}" for c in self.columns if c.late_y is not None)


def mark_span(state) -> tuple[float, float]:
    """(y, height) of a run's outcome mark: success above the middle, failure and error below,
    anything else (under way, skipped) a short mark across it."""
    half = MARK_H / 2
    if state == "success":
        return MARK_Y, half - 1
    if state in ("failure", "error"):
        return MARK_Y + half + 1, half - 1
    return MARK_Y + half - 3, 6.0


def took(run, now):
    """Seconds a run took (so far, while under way), or None if it never ran."""
    elapsed = run.meta.get("elapsed")
    if elapsed is not None:
        return float(elapsed)
    begun = run.times.get("running") or run.times.get("starting")
    if begun is None:
        return None
    end = now if run.state in ACTIVE else run.time_updated
    return max(0.0, end - begun)


def run_title(run, duration, lateness, tf) -> str:
    """A mark's tooltip: run id, state, due and start times, how long it took, how late it started."""
    begun = run.times.get("running") or run.times.get("starting")
    lines = [f"{format_run_id(run.run_id)}: {run.state}", f"due {tf.short(run.time_schedule)}"]
    if begun is not None:
        lines.append(f"started {tf.short(begun)}" + (f", {format_duration(lateness)} late" if lateness else ""))
    if duration is not None:
        lines.append(("running for " if run.state in ACTIVE else "took ") + format_duration(duration))
    if run.message:
        lines.append(run.message[:200])
    return "\n".join(lines)


def history_picture(job_id, runs, now, tf, rates=()) -> Picture:
    """The picture of ``runs`` (newest first, as the store gives them), at most HISTORY_RUNS."""
    runs = list(reversed(runs[:HISTORY_RUNS]))
    durations = [took(r, now) for r in runs]
    lateness = [start_lateness(r) for r in runs]
    longest = max([d for d in durations if d is not None], default=0.0)
    latest = max([x for x in lateness if x is not None], default=0.0)
    step = (WIDTH - LEFT) / HISTORY_RUNS
    first = WIDTH - step * len(runs)
    columns = []
    for i, (run, d, late) in enumerate(zip(runs, durations, lateness)):
        bar_h = BARS_H * d / longest if d and longest > 0 else 0.0
        bar_h = max(bar_h, 1.0) if d is not None else 0.0  # a run of milliseconds still shows
        late_y = None
        if late is not None:
            late_y = LATE_Y + LATE_H - (LATE_H * late / latest if latest > 0 else 0.0)
        columns.append(Column(run.run_id, run.state, first + i * step + 1, max(step - 2, 1.0),
                              BARS_Y + BARS_H - bar_h, bar_h, late_y, run_title(run, d, late, tf),
                              *mark_span(run.state)))
    return Picture(columns, longest, latest, summary_text(job_id, runs, longest, latest), list(rates))


def summary_text(job_id, runs, longest, latest) -> str:
    """The picture's text alternative: what it shows, in words."""
    if not runs:
        return f"No run of {job_id} has started yet."
    counts = Counter(r.state for r in runs)
    states = ", ".join(f"{n} {s}" for s, n in counts.most_common())
    text = f"The last {len(runs)} runs of {job_id}, oldest first: {states}."
    if longest:
        text += f" The longest took {format_duration(longest)}."
    text += f" The latest start was {format_duration(latest)} after its due time." if latest else " None started late."
    return text


def success_rates(store, job_id, now) -> list:
    """The job's success rate over the last day and the last week."""
    rates = []
    for label, span in (("last 24 h", DAY), ("last 7 days", 7 * DAY)):
        counts, capped = store.job_state_counts_between(job_id, now - span, now, RATE_CAP)
        outcomes = sum(counts.get(s, 0) for s in ("success", "failure", "error"))
        rates.append(Rate(label, counts.get("success", 0), outcomes, capped))
    return rates
