"""Runs as lists show them: each original run with its reruns as one block, and the
operations its buttons offer."""

from dataclasses import dataclass, field

from apsis_lite.web.backend import backend

SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGQUIT", "SIGKILL")
MARK_STATES = ("success", "failure", "error", "skipped")


@dataclass
class RunGroup:
    """An original run and its reruns (newest first), as one block of a runs list."""

    original: object
    reruns: list = field(default_factory=list)
    expanded: bool = False

    @property
    def group_id(self):
        return self.original.run_id


def group_runs(runs, expand=()):
    """Runs of a page as rerun groups, in the order their newest member appears."""
    store = backend().store
    order = list(dict.fromkeys(r.rerun_group or r.run_id for r in runs))
    originals = store.runs_by_ids(order)
    for r in runs:
        originals.setdefault(r.rerun_group or r.run_id, r)
    reruns = store.reruns_in_groups(order)
    return [RunGroup(originals[g], reruns.get(g, []), g in expand) for g in order]
