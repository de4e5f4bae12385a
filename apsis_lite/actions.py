"""Action types: what is done when a run enters a state. Parsed and kept
here; performing them is a later issue.

Every action may have ``if: {states: [...]}``; without ``if:`` it applies
to every state the run enters (apsis's rule). ``successors:`` in a job file
is shorthand for ``schedule`` actions with ``if: {states: [success]}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar
from urllib.parse import urlsplit

from .conditions import STATES, parse_typed, state_list
from .registry import ACTIONS
from .schedules import Fields, SpecError, _kind, nonempty_text, positive_duration, string_list, string_map

DEFAULT_WEBHOOK_TIMEOUT = 10.0


def _if(value) -> tuple:
    """An ``if:`` mapping, as the tuple of states it allows."""
    f = Fields(value, "mapping such as {states: [failure, error]}")
    states = f.take("states", state_list, STATES)
    f.done()
    return states


class Action:
    """Base of action types. ``when`` is the states it applies to, or None for every state."""

    type_name: ClassVar[str] = ""

    @classmethod
    def from_jso(cls, jso, *, allow_templates=False) -> "Action":
        """Parse strictly; SpecError lists every problem. On the base class, dispatch on ``type:``."""
        if cls is Action:
            return parse_action(jso, allow_templates=allow_templates)
        f = Fields(jso, "action mapping")
        f.take("type", default=None)
        when = f.take("if", _if, None)
        kwargs = cls._read(f)
        f.done()
        return cls(when=when, **kwargs)

    @classmethod
    def _read(cls, f):
        raise NotImplementedError

    def to_jso(self) -> dict:
        jso = {"type": self.type_name, **self._jso()}
        if self.when is not None:
            jso["if"] = {"states": list(self.when)}
        return jso

    def _jso(self):
        raise NotImplementedError


@ACTIONS.register("schedule", aliases=["apsis.actions.ScheduleAction",
                                       "apsis.actions.schedule.ScheduleAction"])
@dataclass(frozen=True, kw_only=True)
class ScheduleAction(Action):
    """Schedule a run of ``job_id`` with ``args`` (params shared with this job pass through)."""

    type_name: ClassVar[str] = "schedule"

    job_id: str
    args: dict = field(default_factory=dict)
    when: tuple | None = None

    @classmethod
    def _read(cls, f):
        return {"job_id": f.take("job_id", nonempty_text), "args": f.take("args", string_map, {})}

    def _jso(self):
        return {"job_id": self.job_id, "args": dict(self.args)}


@ACTIONS.register("command")
@dataclass(frozen=True, kw_only=True)
class CommandAction(Action):
    """Run a shell command (``bash -c``), e.g. to notify someone."""

    type_name: ClassVar[str] = "command"

    command: str
    when: tuple | None = None

    @classmethod
    def _read(cls, f):
        return {"command": f.take("command", nonempty_text)}

    def _jso(self):
        return {"command": self.command}


def _url(value) -> str:
    url = nonempty_text(value).strip()
    if "{{" in url or "{%" in url:
        return url  # checked when bound
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"expected an http or https URL, got {url!r}")
    return url


@ACTIONS.register("webhook")
@dataclass(frozen=True, kw_only=True)
class WebhookAction(Action):
    """POST the run as JSON to ``url``, giving up after ``timeout`` seconds."""

    type_name: ClassVar[str] = "webhook"

    url: str
    timeout: float = DEFAULT_WEBHOOK_TIMEOUT
    when: tuple | None = None

    @classmethod
    def _read(cls, f):
        return {"url": f.take("url", _url),
                "timeout": f.take("timeout", positive_duration, DEFAULT_WEBHOOK_TIMEOUT)}

    def _jso(self):
        return {"url": self.url, "timeout": self.timeout}


def _address(value) -> str:
    address = nonempty_text(value).strip()
    if "@" not in address and "{{" not in address:
        raise ValueError(f"not an e-mail address: {address!r}")
    return address


@ACTIONS.register("email")
@dataclass(frozen=True, kw_only=True)
class EmailAction(Action):
    """Send an e-mail about the run to ``to`` (one address or a list)."""

    type_name: ClassVar[str] = "email"

    to: tuple
    when: tuple | None = None

    @classmethod
    def _read(cls, f):
        return {"to": f.take("to", _addresses)}

    def _jso(self):
        return {"to": list(self.to)}


def _addresses(value) -> tuple:
    to = tuple(string_list(value, item=_address))
    if not to:
        raise ValueError("expected at least one address")
    return to


def parse_action(jso, *, allow_templates=False) -> Action:
    """The Action for one job-file action mapping; SpecError lists every problem."""
    return parse_typed(jso, ACTIONS, "action", allow_templates=allow_templates)


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
