"""The Action base class and parsing a job file's action mapping.

Every action may have ``if: {states: [...], labels: [...]}``; without
``states`` it applies to every state the run enters (apsis's rule), and with
``labels`` only to runs of a job carrying at least one of them. A type reads
its own keys in ``_read`` and does its work in ``perform``, which returns
what happened or raises ActionFailed saying why.
"""

from __future__ import annotations

from typing import ClassVar

from apsis_lite.model.conditions import parse_typed, state_list
from apsis_lite.model.fields import Fields, nonempty_text, string_list
from apsis_lite.model.registry import ACTIONS


class ActionFailed(Exception):
    """An action that could not be done; the message says why, for the run's log."""


def _if(value) -> tuple:
    """An ``if:`` mapping, as (states or None, labels or None)."""
    f = Fields(value, "mapping such as {states: [failure, error]}")
    states = f.take("states", state_list, None)
    labels = f.take("labels", _labels, None)
    f.done()
    return states, labels


def _labels(value) -> tuple:
    labels = tuple(string_list(value, item=nonempty_text))
    if not labels:
        raise ValueError("expected at least one label")
    return labels


class Action:
    """Base of action types.

    ``when`` is the states it applies to (None: every state), ``labels`` the
    job labels it is restricted to (None: any job). ``slow`` actions run on a
    worker thread under a timeout; others on the dispatcher.
    """

    type_name: ClassVar[str] = ""
    slow: ClassVar[bool] = True

    @classmethod
    def from_jso(cls, jso, *, allow_templates=False) -> "Action":
        """Parse strictly; SpecError lists every problem. On the base class, dispatch on ``type:``."""
        if cls is Action:
            return parse_action(jso, allow_templates=allow_templates)
        f = Fields(jso, "action mapping")
        f.take("type", default=None)
        when, labels = f.take("if", _if, None) or (None, None)
        kwargs = cls._read(f)
        f.done()
        return cls(when=when, labels=labels, **kwargs)

    @classmethod
    def _read(cls, f):
        raise NotImplementedError

    def to_jso(self) -> dict:
        jso = {"type": self.type_name, **self._jso()}
        cond = {}
        if self.when is not None:
            cond["states"] = list(self.when)
        if getattr(self, "labels", None) is not None:
            cond["labels"] = list(self.labels)
        if cond:
            jso["if"] = cond
        return jso

    def _jso(self):
        raise NotImplementedError

    def applies(self, state, job_labels=()) -> bool:
        """Whether this action is due when a run of a job with ``job_labels`` enters ``state``."""
        if self.when is not None and state not in self.when:
            return False
        labels = getattr(self, "labels", None)
        return labels is None or not set(labels).isdisjoint(job_labels)

    def describe(self) -> str:
        """A short name for the run's log, e.g. ``webhook to https://...``."""
        return self.type_name

    def perform(self, event: "ActionEvent", ctx: "ActionRunner") -> str:
        """Do it; returns what happened, or raises ActionFailed saying why."""
        raise NotImplementedError


def parse_action(jso, *, allow_templates=False) -> Action:
    """The Action for one job-file action mapping; SpecError lists every problem."""
    return parse_typed(jso, ACTIONS, "action", allow_templates=allow_templates)
