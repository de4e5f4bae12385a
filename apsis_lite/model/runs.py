"""Run states, the transition table, and the ``Run`` value.

Pure: no I/O. The store applies transitions with compare-and-set SQL; the
engine decides which transition to ask for.
"""

import json
from dataclasses import dataclass, field

from apsis_lite.errors import BadRequest, TransitionError
from apsis_lite.timeutil import to_iso

STATES = (
    "scheduled", "waiting", "starting", "running", "stopping",
    "success", "failure", "error", "skipped",
)
FINISHED = frozenset({"success", "failure", "error", "skipped"})
ACTIVE = frozenset({"starting", "running", "stopping"})
PENDING = frozenset({"scheduled", "waiting"})

# Which states each state may move to. The only table of its kind: every
# transition anywhere in apsis-lite is checked against it.
TRANSITIONS = {
    "scheduled": {"waiting", "starting", "skipped", "error"},
    # success/failure: a skip_duplicate condition's target_state.
    "waiting": {"starting", "skipped", "error", "success", "failure"},
    "starting": {"running", "success", "failure", "error"},
    "running": {"stopping", "success", "failure", "error"},
    "stopping": {"success", "failure", "error"},
    # Marking: a finished run may be marked as another finished state.
    "success": {"failure", "error", "skipped"},
    "failure": {"success", "error", "skipped"},
    "error": {"success", "failure", "skipped"},
    "skipped": {"success", "failure", "error"},
}


def check_transition(run_id, old, new):
    """Raise TransitionError unless ``old -> new`` is allowed."""
    if new not in TRANSITIONS.get(old, ()):
        raise TransitionError(f"run {format_run_id(run_id)} is {old}; it cannot go to {new}")


def format_run_id(run_id) -> str:
    return f"r{run_id}"


def parse_run_id(text) -> int:
    """``r12`` or ``12`` -> 12; BadRequest for anything else."""
    s = str(text)
    digits = s[1:] if s[:1] in ("r", "R") else s
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 18:
        raise BadRequest(f"not a run id: {s!r} (expected e.g. r123)")
    return int(digits)


def parse_state(text) -> str:
    if text not in STATES:
        raise BadRequest(f"unknown state {text!r} (states: {', '.join(STATES)})")
    return text


@dataclass
class Run:
    run_id: int
    job_id: str
    args: dict
    state: str
    time_schedule: float
    times: dict = field(default_factory=dict)
    slot: str | None = None
    rerun_of: int | None = None
    rerun_group: int | None = None
    program: dict | None = None
    conditions: list | None = None
    actions: list | None = None
    exit_code: int | None = None
    signal: str | None = None
    message: str | None = None
    meta: dict = field(default_factory=dict)
    time_updated: float | None = None
    host: str | None = None  # the remote host it was sent to

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    def to_jso(self, full=True) -> dict:
        """The run as the JSON API shows it."""
        times = {"schedule": to_iso(self.time_schedule)}
        for state, t in self.times.items():
            times[state] = to_iso(t)
        jso = {
            "run_id": format_run_id(self.run_id),
            "job_id": self.job_id,
            "args": self.args,
            "state": self.state,
            "times": times,
            "exit_code": self.exit_code,
            "signal": self.signal,
            "message": self.message,
            "rerun_of": format_run_id(self.rerun_of) if self.rerun_of else None,
            "rerun_group": format_run_id(self.rerun_group or self.run_id),
            "elapsed": self.meta.get("elapsed"),
            "rusage": self.meta.get("rusage"),
            "output_length": self.meta.get("output", {}).get("bytes_kept"),
            "adhoc": bool(self.meta.get("adhoc")),
            "host": self.host,
        }
        if full:
            jso["program"] = self.program
            jso["output"] = self.meta.get("output")
            jso["timed_out"] = self.meta.get("timed_out", False)
            jso["pid"] = self.meta.get("pid")
        return jso


def dumps(obj) -> str:
    """Canonical JSON: sorted keys, no spaces; slot identities depend on it."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))
