"""Pauses: a global one and one per job, each with a reason, who set it and when.

A pause applies to the runs the scheduler starts by itself: the runs of
schedule slots and automatic reruns (runs with a slot). Runs submitted
through the API or CLI, scheduled by actions, rerun by hand, or started by
hand are not held back: whoever asks for those asks on purpose.

Modes: ``skip`` records a due run as skipped with the pause's reason;
``hold`` keeps it waiting, with the pause's reason as its message, until the
pause is lifted (then its conditions are checked as usual).
"""

from __future__ import annotations

from dataclasses import dataclass

from apsis_lite.errors import BadRequest
from apsis_lite.timeutil import to_iso

MODES = ("skip", "hold")

# The scope of the global pause; any other scope is a job id.
GLOBAL = ""


@dataclass(frozen=True)
class Pause:
    scope: str        # GLOBAL or a job id
    mode: str         # one of MODES
    reason: str
    user: str | None
    time: float

    @property
    def job_id(self) -> str | None:
        return self.scope or None

    def describe(self) -> str:
        """``paused (global, hold): upgrading the database, by ann since 2027-01-15T08:00:00Z``."""
        where = "global pause" if self.scope == GLOBAL else f"job {self.scope} paused"
        by = f" by {self.user}" if self.user else ""
        return f"{where} ({self.mode}): {self.reason}{by} since {to_iso(self.time)}"

    def to_jso(self) -> dict:
        return {"job_id": self.job_id, "mode": self.mode, "reason": self.reason,
                "user": self.user, "time": to_iso(self.time)}


def parse_pause_request(jso) -> tuple[str, str]:
    """``(reason, mode)`` from an API body ``{"reason": ..., "mode": "skip"|"hold"}``."""
    unknown = sorted(set(jso) - {"reason", "mode"})
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(unknown)} (expected reason and mode)")
    reason = jso.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise BadRequest("reason: required, a non-empty text saying why")
    mode = jso.get("mode", "skip")
    if mode not in MODES:
        raise BadRequest(f"mode: expected one of {', '.join(MODES)}, got {mode!r}")
    return reason.strip(), mode


def pausable(run) -> bool:
    """Whether pauses apply to a run: one the scheduler created by itself (a slot run or an automatic rerun)."""
    return run.slot is not None


def pause_of(pauses: dict, run):
    """The pause holding back ``run`` (global first, then its job's), or None."""
    if not pausable(run):
        return None
    return pauses.get(GLOBAL) or pauses.get(run.job_id)
