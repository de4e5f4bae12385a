"""Condition types: what must hold before a run starts. Parsed and kept here;
checking them against the store is a later issue.

Conditions are written with ``type:``, as apsis requires (apsis has no
``{max_running: 1}`` shorthand; such a mapping gets an error that says how
to write it). Strings may be Jinja2 templates, bound with the run's args.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from .registry import CONDITIONS
from .schedules import Fields, SpecError, _kind, is_template, nonempty_text, string_list, string_map

# Run states, as the runs module will name them; conditions and actions
# check state names in job files against this.
STATES = ("scheduled", "waiting", "starting", "running", "stopping",
          "success", "failure", "error", "skipped")
FINISHED_STATES = ("success", "failure", "error", "skipped")


def state_name(value) -> str:
    name = nonempty_text(value).strip().lower()
    if name not in STATES:
        raise ValueError(f"unknown state {value!r} (known: {', '.join(STATES)})")
    return name


def state_list(value) -> tuple:
    """One state or a list of them, as a tuple of names."""
    states = tuple(string_list(value, item=state_name))
    if not states:
        raise ValueError("expected at least one state")
    return states


class Condition:
    """Base of condition types: ``from_jso``, ``to_jso``; subclasses register with CONDITIONS."""

    type_name: ClassVar[str] = ""

    @classmethod
    def from_jso(cls, jso, *, allow_templates=False) -> "Condition":
        """Parse strictly; SpecError lists every problem. On the base class, dispatch on ``type:``."""
        if cls is Condition:
            return parse_condition(jso, allow_templates=allow_templates)
        f = Fields(jso, "condition mapping")
        f.take("type", default=None)
        kwargs = cls._read(f, allow_templates)
        f.done()
        return cls(**kwargs)

    @classmethod
    def _read(cls, f, allow_templates):
        raise NotImplementedError

    def to_jso(self) -> dict:
        raise NotImplementedError


def _count(allow_templates):
    def convert(value):
        if allow_templates and is_template(value):
            return value
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)  # a bound template
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"expected a whole number of at least 1, got {_kind(value)}")
        return value
    return convert


@CONDITIONS.register("max_running", aliases=["apsis.cond.MaxRunning",
                                             "apsis.cond.max_running.MaxRunning"])
@dataclass(frozen=True)
class MaxRunning(Condition):
    """Wait while ``count`` or more runs of the same job and args are running."""

    type_name: ClassVar[str] = "max_running"

    count: int | str

    @classmethod
    def _read(cls, f, allow_templates):
        return {"count": f.take("count", _count(allow_templates))}

    def to_jso(self):
        return {"type": self.type_name, "count": self.count}


def _exist(value):
    if isinstance(value, bool):
        return value
    return state_list(value)


@CONDITIONS.register("dependency", aliases=["apsis.cond.Dependency",
                                            "apsis.cond.dependency.Dependency"])
@dataclass(frozen=True)
class Dependency(Condition):
    """Wait until a run of ``job_id`` with ``args`` is in one of ``states``.

    Params the two jobs share are passed through when ``args`` omits them
    (the engine does that; it knows the other job's params). ``exist``:
    true, or a list of states, makes it error at once when no such run
    exists in a state from which ``states`` can still be reached.
    """

    type_name: ClassVar[str] = "dependency"

    job_id: str
    args: dict = field(default_factory=dict)
    states: tuple = ("success",)
    exist: bool | tuple = False

    @classmethod
    def _read(cls, f, allow_templates):
        return {
            "job_id": f.take("job_id", nonempty_text),
            "args": f.take("args", string_map, {}),
            "states": f.take("states", state_list, ("success",)),
            "exist": f.take("exist", _exist, False),
        }

    def to_jso(self):
        exist = list(self.exist) if isinstance(self.exist, tuple) else self.exist
        return {"type": self.type_name, "job_id": self.job_id, "args": dict(self.args),
                "states": list(self.states), "exist": exist}


def _target_state(value):
    name = state_name(value)
    if name not in FINISHED_STATES:
        raise ValueError(f"must be a finished state ({', '.join(FINISHED_STATES)}), not {name!r}")
    return name


@CONDITIONS.register("skip_duplicate", aliases=["apsis.cond.SkipDuplicate",
                                                "apsis.cond.skip_duplicate.SkipDuplicate"])
@dataclass(frozen=True)
class SkipDuplicate(Condition):
    """Go to ``target_state`` if another run of the same job and args is in ``check_states``."""

    type_name: ClassVar[str] = "skip_duplicate"

    check_states: tuple = ("waiting", "starting", "running")
    target_state: str = "skipped"

    @classmethod
    def _read(cls, f, allow_templates):
        return {
            "check_states": f.take("check_states", state_list, ("waiting", "starting", "running")),
            "target_state": f.take("target_state", _target_state, "skipped"),
        }

    def to_jso(self):
        return {"type": self.type_name, "check_states": list(self.check_states),
                "target_state": self.target_state}


def parse_typed(jso, registry, kind, *, allow_templates=False):
    """Dispatch a ``type:`` mapping through ``registry`` (shared with actions)."""
    if not isinstance(jso, dict):
        raise SpecError("", f"expected a {kind} mapping, got {_kind(jso)}")
    name = jso.get("type")
    known = ", ".join(n for n in registry.names() if "." not in n)
    if name is None:
        if len(jso) == 1 and next(iter(jso)) in registry:
            (only,) = jso
            raise SpecError("type", f"missing; write 'type: {only}' with the options "
                                    f"beside it, not under {only}:")
        raise SpecError("type", f"missing (required; known: {known})")
    try:
        cls = registry.get(name)
    except KeyError as exc:
        raise SpecError("type", exc.args[0]) from None
    return cls.from_jso(jso, allow_templates=allow_templates)


def parse_condition(jso, *, allow_templates=False) -> Condition:
    """The Condition for one job-file condition mapping; SpecError lists every problem."""
    return parse_typed(jso, CONDITIONS, "condition", allow_templates=allow_templates)
