"""Condition types: what must hold before a run starts, and how each is checked.

A run's conditions are bound when it is created and kept on the run. When
the run is due the engine checks them in order through ``check(run, ctx)``;
the first that does not hold says why (``Verdict.reason``), what change
could make it hold (``Verdict.keys``, which the engine watches), or that the
run must end at once in a given state (``Verdict.finish``). ``ctx`` answers
questions about other runs (see ``waiting.StoreContext``); conditions never
write.

Conditions are written with ``type:``, as apsis requires (apsis has no
``{max_running: 1}`` shorthand; such a mapping gets an error that says how
to write it). Strings may be Jinja2 templates, bound with the run's args.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from apsis_lite.model.fields import (
    Fields, SpecError, _kind, flag, is_template, nonempty_text, string_list, string_map,
)
from apsis_lite.model.registry import CONDITIONS
from apsis_lite.model.runs import TRANSITIONS, dumps, format_run_id

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


# Runs in these states count as running for max_running.
RUNNING_STATES = ("starting", "running", "stopping")


@dataclass(frozen=True)
class Verdict:
    """What one condition says about a waiting run."""

    ok: bool
    reason: str = ""
    # What to watch: ("runs", job_id, args as canonical JSON) for any state
    # change of such a run, ("resource", name) for a resource freed.
    keys: tuple = ()
    # A finished state to send the run to at once (exist checks, skip_duplicate).
    finish: str | None = None
    # Seconds after which to check again: for what no run's change can signal
    # (a file, a service); see Condition.poll_interval.
    recheck: float | None = None


OK = Verdict(True)


def runs_key(job_id, args) -> tuple:
    """The watch key for state changes of runs of ``job_id`` with ``args``."""
    return ("runs", job_id, dumps(args))


def describe_runs(job_id, args) -> str:
    """``load prices(date=2026-11-25)``, or just the job id without args."""
    if not args:
        return job_id
    return f"{job_id}({', '.join(f'{k}={v}' for k, v in args.items())})"


def _ids(found) -> str:
    return ", ".join(format_run_id(rid) for rid, _ in found)


class Condition:
    """Base of condition types: ``from_jso``, ``to_jso``, ``check``; subclasses register with CONDITIONS."""

    type_name: ClassVar[str] = ""
    # A condition whose state changes outside apsis-lite (a file appears, a
    # service answers) is checked again this many seconds after it last did
    # not hold; ``check`` may also say when, in its Verdict's ``recheck``.
    poll_interval: ClassVar[float | None] = None

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

    def check(self, run, ctx) -> Verdict:
        """Whether this condition holds for ``run`` now; see ``Verdict``."""
        return Verdict(False, f"apsis-lite cannot check conditions of type {self.type_name!r}",
                       finish="error")


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

    def check(self, run, ctx):
        count = int(self.count)
        found = ctx.runs_of(run.job_id, run.args, RUNNING_STATES, exclude=run.run_id, limit=count)
        if len(found) < count:
            return OK
        verb = "is" if len(found) == 1 else "are"
        return Verdict(False, f"waiting for fewer than {count} running (max_running {count}); "
                              f"{_ids(found)} {verb} running",
                       keys=(runs_key(run.job_id, run.args),))


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

    def resolved_args(self, run, ctx) -> dict:
        """``args``, plus the params this run's job shares with the other job, when omitted."""
        params = ctx.params_of(self.job_id)
        shared = {p: run.args[p] for p in (params or ()) if p in run.args and p not in self.args}
        return {**shared, **self.args}

    def alive_states(self) -> tuple:
        """States an existing run must be in for ``exist``: one of ``states``, or one
        from which they can still be reached without marking by hand."""
        if isinstance(self.exist, tuple):
            return tuple(dict.fromkeys(self.exist + self.states))
        return tuple(s for s in STATES if s in self.states or _can_reach(s, self.states))

    def check(self, run, ctx):
        args = self.resolved_args(run, ctx)
        what = describe_runs(self.job_id, args)
        target = " or ".join(self.states)
        if ctx.runs_of(self.job_id, args, self.states, limit=1):
            return OK
        latest = ctx.runs_of(self.job_id, args, None, limit=1)
        now = (f"the latest, {format_run_id(latest[0][0])}, is {latest[0][1]}" if latest
               else "there is no such run")
        if self.exist and not ctx.runs_of(self.job_id, args, self.alive_states(), limit=1):
            return Verdict(False, f"no run of {what} that can still be {target} (exist check); {now}",
                           finish="error")
        if latest:
            now = f"it is {latest[0][1]} ({format_run_id(latest[0][0])})"
        elif ctx.params_of(self.job_id) is None:
            now = f"there is no such run, and no job {self.job_id!r} is loaded"
        return Verdict(False, f"waiting for {what} to be {target}; {now}",
                       keys=(runs_key(self.job_id, args),))


def _can_reach(state, targets) -> bool:
    """Whether ``state`` leads to one of ``targets`` by the engine's own transitions.

    Marking (finished -> finished) is a person's decision, not a prospect,
    so a finished run cannot reach anything.
    """
    seen, todo = set(), [state]
    while todo:
        s = todo.pop()
        if s in FINISHED_STATES or s in seen:
            continue
        seen.add(s)
        for nxt in TRANSITIONS.get(s, ()):
            if nxt in targets:
                return True
            todo.append(nxt)
    return False


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

    def check(self, run, ctx):
        found = ctx.runs_of(run.job_id, run.args, self.check_states, exclude=run.run_id, limit=1)
        if not found:
            return OK
        (rid, state), = found
        return Verdict(False, f"{format_run_id(rid)}, a run of the same job and args, is {state} "
                              f"(skip_duplicate)", finish=self.target_state)


@CONDITIONS.register("const", aliases=["apsis.cond.ConstantCondition",
                                       "apsis.cond.base.ConstantCondition"])
@dataclass(frozen=True)
class Const(Condition):
    """apsis's ``const``: always holds (``value: true``) or never does (``value: false``).

    A run held by ``value: false`` waits until an operator starts or skips
    it, or its ``waiting`` limit ends the wait; nothing else can release it.
    """

    type_name: ClassVar[str] = "const"

    value: bool

    @classmethod
    def _read(cls, f, allow_templates):
        return {"value": f.take("value", flag)}

    def to_jso(self):
        return {"type": self.type_name, "value": self.value}

    def check(self, run, ctx):
        if self.value:
            return OK
        return Verdict(False, "waiting on a const condition that is false: it never holds "
                              "(start or skip the run by hand)")


def _slots(value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"expected a whole number of at least 1, got {_kind(value)}")
    return value


@CONDITIONS.register("resource")
@dataclass(frozen=True)
class Resource(Condition):
    """Hold ``slots`` of the named resource while the run is active.

    Written in a job as ``resources: [{name: db, slots: 1}]``; capacities come
    from the config. The engine, which counts what is held, checks these
    after every other condition holds, and takes all of a run's resources
    at once or none.
    """

    type_name: ClassVar[str] = "resource"

    name: str
    slots: int = 1

    @classmethod
    def _read(cls, f, allow_templates):
        return {"name": f.take("name", nonempty_text), "slots": f.take("slots", _slots, 1)}

    def to_jso(self):
        return {"type": self.type_name, "name": self.name, "slots": self.slots}

    def check(self, run, ctx):
        return OK  # counted by the engine; see waiting.Resources


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
