"""The sanity checker: finds what a person would otherwise notice too late, in the
background every ``sanity_interval`` and whenever asked (``apsis-lite sanity``,
``GET /api/v1/sanity``, the /sanity page).

The checks themselves are in ``sanity_checks``. Each finding has a key (its
kind and its run or job); a key not seen at the last check is new, and
``sanity_actions`` are done once for it, not at every check. The keys
reported are kept in the database (meta ``sanity_reported``), so a restart
does not report them again; a finding that goes away and comes back is new
again. A check reads through its own bounded queries and yields between
steps, so it never holds up the engine for long.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace

from apsis_lite.engine import sanity_checks as checks
from apsis_lite.engine.sanity_checks import KINDS, Finding
from apsis_lite.errors import ApsisError, ConfigError
from apsis_lite.model.actions.base import ActionFailed, parse_action
from apsis_lite.model.fields import SpecError
from apsis_lite.timeutil import format_duration, to_iso

log = logging.getLogger("apsis_lite.engine")

# Meta key: {finding key: when first found} of the findings already reported.
REPORTED_KEY = "sanity_reported"
# Findings of one kind listed at most; the report counts those left out.
LIMIT_PER_KIND = 100
# Action outcomes kept for the page.
RECENT_OUTCOMES = 50


@dataclass
class SanityReport:
    """What one check found."""

    checked_at: float
    duration: float
    findings: list
    problems: list = field(default_factory=list)   # checks that could not be done, and why
    new: list = field(default_factory=list)        # keys found for the first time by this check

    def counts(self) -> dict:
        out = dict.fromkeys(KINDS, 0)
        for f in self.findings:
            out[f.kind] += 1
        return out

    def to_jso(self) -> dict:
        return {"ok": not self.findings and not self.problems, "checked_at": to_iso(self.checked_at),
                "duration": round(self.duration, 4), "counts": self.counts(),
                "findings": [f.to_jso() for f in self.findings], "problems": list(self.problems)}


class SanityChecker:
    """Runs the checks, remembers what it reported, and fires the sanity actions for what is new.

    ``store`` is a read-only store for the checks; the engine's own store
    records the keys reported. ``pause()`` yields to the rest of the server
    between steps (``gevent.idle`` in the server).
    """

    def __init__(self, config, store, engine, launcher, clock=time.time, pause=lambda: None):
        self.config = config
        self.store = store
        self.engine = engine
        self.launcher = launcher
        self.clock = clock
        self.pause = pause
        self.actions = SanityActions(config, parse_sanity_actions(config.sanity_actions), store)
        self._planning = checks.Planning(config.horizon)
        self._suspects = {}      # key of a lost run -> when it was first suspected
        self._known = None       # key -> when first found, of the findings reported (read at the first check)
        self._dirty = False      # _known differs from what the database holds
        self._lock = threading.Lock()
        self.last = None         # the latest SanityReport
        self._last_began = 0.0   # when it began (monotonic): a check asked for before that shares it
        self.listeners = []      # fn(report) after each check

    # -- checking ------------------------------------------------------------------

    def check(self) -> SanityReport:
        """Check now (a check under way is waited for and its report shared)."""
        asked = time.monotonic()
        with self._lock:
            if self.last is not None and self._last_began >= asked:
                return self.last
            self._last_began = time.monotonic()
            report = self._check()
            self.last = report
        for fn in self.listeners:
            fn(report)
        return report

    def _check(self) -> SanityReport:
        start = time.perf_counter()
        now = self.clock()
        cfg = self.config
        findings, problems = [], []
        steps = [
            ("behind", lambda: checks.behind(self.store, now, cfg.sanity_behind, LIMIT_PER_KIND)),
            ("unplanned", lambda: self._planning.check(self.engine, self.store, now, LIMIT_PER_KIND, self.pause)),
            ("lost", lambda: self._lost(now)),
            ("orphan", lambda: checks.orphans(self.store, LIMIT_PER_KIND, self.pause)),
            ("late", lambda: checks.late(self.store, now, cfg.sanity_late, cfg.sanity_window, LIMIT_PER_KIND)),
            ("failing", lambda: checks.failing(self.store, sorted(self.engine.jobs), cfg.sanity_failures,
                                               LIMIT_PER_KIND, self.pause)),
        ]
        for kind, step in steps:
            try:
                findings += step()
            except Exception as exc:  # one check's failure must not hide the others' findings
                if not isinstance(exc, ApsisError):
                    log.exception("the sanity check of %s failed", kind)
                problems.append(f"{kind}: the check failed: {type(exc).__name__}: {exc}")
            self.pause()
        findings, new = self._remember(findings, now)
        report = SanityReport(now, time.perf_counter() - start, findings, problems, [f.key for f in new])
        for finding in new:
            log.warning("sanity: %s: %s", finding.subject, finding.reason)
            self.actions.fire(finding)
        return report

    def _lost(self, now):
        """Lost runs, once they have been so for longer than a sweep takes to notice."""
        grace = 2 * self.config.sweep_interval
        found = checks.lost(self.store, self.launcher, LIMIT_PER_KIND)
        self._suspects = {f.key: self._suspects.get(f.key, now) for f in found}
        return [f for f in found if now - self._suspects[f.key] >= grace]

    def _remember(self, findings, now):
        """(findings with their ``since``, the new ones); records the keys reported."""
        if self._known is None:
            self._known = self._read_known()
        known, current, new = self._known, {}, []
        for f in findings:
            since = known.get(f.key)
            if since is None:
                since = now
                new.append(f)
            current[f.key] = since
        self._dirty = self._dirty or current.keys() != known.keys()
        self._known = current
        if self._dirty:
            try:
                self.engine.store.set_meta(REPORTED_KEY, json.dumps(current, sort_keys=True))
                self._dirty = False
            except ApsisError as exc:  # a full disk: kept here, written at a later check
                log.warning("cannot record the sanity findings reported: %s", exc)
        stamped = [replace(f, since=current[f.key]) for f in findings]
        return stamped, [replace(f, since=now) for f in new]

    def _read_known(self) -> dict:
        try:
            text = self.store.get_meta(REPORTED_KEY)
            known = json.loads(text) if text else {}
        except (ApsisError, ValueError):
            return {}
        return {str(k): float(v) for k, v in known.items() if isinstance(v, (int, float))} \
            if isinstance(known, dict) else {}

    # -- in the background ------------------------------------------------------------

    def run_forever(self, stop_event):
        """Check every ``sanity_interval`` until ``stop_event`` is set (0: never)."""
        interval = self.config.sanity_interval
        if interval <= 0:
            return
        while not stop_event.wait(interval):
            try:
                self.check()
            except Exception:  # never the end of the background checks
                log.exception("the sanity check failed; trying again in %s", format_duration(interval))


# -- actions for findings -------------------------------------------------------------


@dataclass(frozen=True)
class SanityAction:
    """A configured action and the kinds of finding it is done for (None: all)."""

    action: object
    kinds: tuple | None = None

    def applies(self, kind) -> bool:
        return self.kinds is None or kind in self.kinds


def parse_sanity_actions(items) -> list:
    """The ``sanity_actions`` setting as SanityActions; ConfigError names what is wrong."""
    out = []
    for i, jso in enumerate(items or ()):
        where = f"config: sanity_actions[{i}]"
        jso = dict(jso)
        kinds = jso.pop("kinds", None)
        if isinstance(kinds, str):
            kinds = [kinds]
        if kinds is not None and (not isinstance(kinds, list) or not kinds
                                  or any(k not in KINDS for k in kinds)):
            raise ConfigError(f"{where}: kinds: expected a list of {', '.join(KINDS)}, not {kinds!r}")
        if "if" in jso:
            raise ConfigError(f"{where}: if: does not apply to sanity actions; use kinds: [...]")
        if jso.get("type") not in ("command", "webhook", "email"):
            raise ConfigError(f"{where}: type: must be command, webhook or email, not {jso.get('type')!r}")
        try:
            action = parse_action(jso)
        except SpecError as exc:
            raise ConfigError(f"{where}: " + "; ".join(f"{k}: {m}" if k else m for k, m in exc.problems)) from None
        out.append(SanityAction(action, tuple(kinds) if kinds else None))
    return out


class FindingEvent:
    """What a sanity action is done for: a finding (and its run, if it names one).

    Shows itself as run actions' events do: JSON for webhooks and on a
    command's stdin, ``APSIS_*`` variables for commands, text for e-mails.
    """

    new = "sanity"
    old = None
    alarm = None
    after_restart = False

    def __init__(self, finding, run=None):
        self.finding = finding
        self.run = run

    @property
    def run_id(self) -> str:
        return self.finding.to_jso()["run_id"] or ""

    def subject(self) -> str:
        return f"apsis-lite sanity: {self.finding.subject}: {checks.KIND_WORDS[self.finding.kind]}"

    def to_jso(self) -> dict:
        return {"finding": self.finding.to_jso(), "run": self.run.to_jso() if self.run else None,
                "transition": None}

    def environment(self) -> dict:
        f = self.finding
        env = {"APSIS_SANITY_KIND": f.kind, "APSIS_SANITY_REASON": f.reason, "APSIS_SANITY_SUBJECT": f.subject}
        if f.job_id:
            env["APSIS_JOB_ID"] = f.job_id
        if f.run_id is not None:
            env["APSIS_RUN_ID"] = self.run_id
        return env

    def describe(self, output="") -> str:
        f = self.finding
        lines = [f"Sanity check: {f.subject}: {f.reason}.", "", f"kind: {f.kind} ({checks.KIND_WORDS[f.kind]})",
                 f"found at: {to_iso(f.since)}"]
        return "\n".join(lines) + "\n"


class SanityActions:
    """Does the sanity actions for new findings, each in its own thread (at most
    ``action_workers`` at once), and keeps the latest outcomes for the page.

    Also what an action may use while done (``config``, ``sleep``, ``output_tail``).
    """

    def __init__(self, config, actions, store, sleep=time.sleep):
        self.config = config
        self.actions = actions
        self.store = store
        self.sleep = sleep
        self.recent = deque(maxlen=RECENT_OUTCOMES)  # (time, finding key, action, ok, outcome)
        self.listeners = []   # fn(action type, ok) after each action
        self._workers = threading.BoundedSemaphore(config.action_workers)

    def fire(self, finding):
        """Start the actions that apply to a new finding; returns the threads started."""
        threads = []
        for sa in self.actions:
            if sa.applies(finding.kind):
                thread = threading.Thread(target=self._do, args=(sa.action, finding), daemon=True,
                                          name=f"sanity action {finding.key}")
                thread.start()
                threads.append(thread)
        return threads

    def _do(self, action, finding):
        with self._workers:
            run = None
            if finding.run_id is not None:
                try:
                    run = self.store.get_run(finding.run_id)
                except Exception:  # deleted meanwhile: the finding still says what it was
                    run = None
            what = f"sanity action {action.describe()} for {finding.subject} ({finding.kind})"
            try:
                outcome, ok = action.perform(FindingEvent(finding, run), self), True
                log.info("%s: %s", what, outcome)
            except ActionFailed as exc:
                outcome, ok = f"failed: {exc}", False
                log.warning("%s %s", what, outcome)
            except Exception as exc:  # an action's bug must not stop the others
                outcome, ok = f"failed: internal error: {type(exc).__name__}: {exc}", False
                log.exception("%s failed", what)
            self.recent.appendleft((time.time(), finding.key, action.describe(), ok, outcome))
            for fn in self.listeners:
                fn(action.type_name, ok)

    def output_tail(self, run) -> str:
        return ""
