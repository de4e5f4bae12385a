"""ActionEvent: what an action is done for, and how it is shown to commands, webhooks and e-mails."""

from __future__ import annotations

import json
from dataclasses import dataclass

from apsis_lite.model.actions.base import Action


@dataclass(frozen=True)
class ActionEvent:
    """One action due because a run entered a state: the run as it was then, and the transition."""

    action: Action
    run: object  # runs.Run
    old: str | None
    new: str
    time: float
    # A missed deadline or max_duration: {"kind", "message"}; the run did not change state.
    alarm: dict | None = None
    after_restart: bool = False  # due before the server (re)started, and done only now

    @property
    def run_id(self) -> str:
        return f"r{self.run.run_id}"

    def subject(self) -> str:
        """An e-mail's subject when its action names none."""
        return f"apsis-lite: {self.run.job_id} {self.run_id} {self.new}"

    def to_jso(self) -> dict:
        """What a webhook receives and a command reads on stdin."""
        from apsis_lite.timeutil import to_iso
        if self.alarm is not None:
            return {"run": self.run.to_jso(), "transition": None,
                    "alarm": {**self.alarm, "time": to_iso(self.time)}}
        return {"run": self.run.to_jso(),
                "transition": {"from": self.old, "to": self.new, "time": to_iso(self.time)}}

    def environment(self) -> dict:
        """The ``APSIS_*`` variables a command action sees (programs see the first four too)."""
        run = self.run
        env = {"APSIS_RUN_ID": self.run_id, "APSIS_JOB_ID": run.job_id,
               "APSIS_ARGS": json.dumps(run.args, sort_keys=True),
               "APSIS_STATE": self.new, "APSIS_PREVIOUS_STATE": self.old or "",
               "APSIS_MESSAGE": run.message or ""}
        if run.exit_code is not None:
            env["APSIS_EXIT_CODE"] = str(run.exit_code)
        if self.alarm is not None:
            env["APSIS_ALARM"] = self.alarm["kind"]
            env["APSIS_ALARM_MESSAGE"] = self.alarm["message"]
        for name, value in run.args.items():
            env[f"APSIS_ARG_{name}"] = str(value)
        return env

    def describe(self, output="") -> str:
        """Plain text about the run, for an e-mail."""
        from apsis_lite.timeutil import to_iso
        run = self.run
        if self.alarm is not None:
            lines = [f"Run {self.run_id} of job {run.job_id}: {self.alarm['message']}.", ""]
        else:
            lines = [f"Run {self.run_id} of job {run.job_id} is now {self.new}"
                     + (f" (was {self.old})." if self.old else "."), ""]
        fields = [("job", run.job_id),
                  ("args", " ".join(f"{k}={v}" for k, v in run.args.items())),
                  ("state", self.new), ("message", run.message),
                  ("exit code", run.exit_code), ("scheduled for", to_iso(run.time_schedule))]
        fields += [(f"{state} at", to_iso(t)) for state, t in run.times.items()]
        lines += [f"{k}: {v}" for k, v in fields if v not in (None, "")]
        if output:
            lines += ["", "Output (end):", output]
        return "\n".join(lines) + "\n"
