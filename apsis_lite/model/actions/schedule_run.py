"""The ``schedule`` action: a run of another job; ``successors:`` entries are such actions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from apsis_lite.model.actions.base import Action, ActionFailed
from apsis_lite.model.fields import Fields, SpecError, _kind, nonempty_text, string_map
from apsis_lite.model.registry import ACTIONS


@ACTIONS.register("schedule", aliases=["apsis.actions.ScheduleAction",
                                       "apsis.actions.schedule.ScheduleAction"])
@dataclass(frozen=True, kw_only=True)
class ScheduleAction(Action):
    """Schedule a run of ``job_id`` with ``args`` (params shared with this job pass through)."""

    type_name: ClassVar[str] = "schedule"
    slow: ClassVar[bool] = False

    job_id: str
    args: dict = field(default_factory=dict)
    when: tuple | None = None
    labels: tuple | None = None

    @classmethod
    def _read(cls, f):
        return {"job_id": f.take("job_id", nonempty_text), "args": f.take("args", string_map, {})}

    def _jso(self):
        return {"job_id": self.job_id, "args": dict(self.args)}

    def describe(self):
        return f"schedule {self.job_id!r}"

    def perform(self, event, ctx):
        try:
            target = ctx.get_job(self.job_id)
        except Exception as exc:
            raise ActionFailed(str(exc)) from None
        # Params the target shares with this run pass through unless given.
        args = {p: event.run.args[p] for p in target.params if p in event.run.args}
        args.update(self.args)
        try:
            new = ctx.submit(self.job_id, args, f"scheduled by an action of {event.run_id}")
        except Exception as exc:
            raise ActionFailed(str(exc)) from None
        shown = " ".join(f"{k}={v}" for k, v in args.items())
        return f"created run {new}" + (f" ({shown})" if shown else "")


def successor_action(jso) -> ScheduleAction:
    """The schedule action for one ``successors:`` entry: a job id or ``{job_id, args}``."""
    if isinstance(jso, str):
        jso = {"job_id": jso}
    if not isinstance(jso, dict):
        raise SpecError("", f"expected a job id or a mapping with job_id and args, got {_kind(jso)}")
    f = Fields(jso)
    job_id = f.take("job_id", nonempty_text)
    args = f.take("args", string_map, {})
    f.done()
    return ScheduleAction(job_id=job_id, args=args, when=("success",))
