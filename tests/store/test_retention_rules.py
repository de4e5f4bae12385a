"""Retention on the real store: what a pass removes is exactly what the rules say may go
(Hypothesis over histories of runs), archives hold what left, and output goes separately."""

import time

from hypothesis import HealthCheck, given, settings

import strategies_retention as sr

from apsis_lite.engine.housekeeping import Policy, prune
from apsis_lite.store.database import Store

DAY = 86400.0
FINISHED = {"success", "failure", "error", "skipped"}


def build(path, runs):
    """The history in a fresh database; [(run_id, spec, group)] in insertion order."""
    store = Store(path)
    now = time.time()
    made = []
    with store.write():
        for spec in runs:
            t = now - spec["age_days"] * DAY - 60
            group = None
            if spec["rerun_of"] is not None and len(made) >= spec["rerun_of"]:
                original = made[-spec["rerun_of"]]
                group = original[2] or original[0]
            run = store.insert_run(spec["job"], {}, spec["state"], t, t, rerun_of=group, rerun_group=group)
            store.store_output_bytes(run.run_id, b"out", 3, 0)
            if spec["deadline"]:
                store.add_deadline(run.run_id, t, "late")
            made.append((run.run_id, spec, group))
    return store, now, made


def expected_gone(made, keep, age_days):
    """The run ids the rules let go: finished, older than ``age_days``, no deadline pending,
    no unfinished run in their rerun group, not among their job's ``keep`` latest finished."""
    busy_groups = {group or rid for rid, spec, group in made if spec["state"] not in FINISHED}
    latest = {}
    for rid, spec, _ in sorted(made, key=lambda m: -m[0]):
        if spec["state"] in FINISHED:
            latest.setdefault(spec["job"], []).append(rid)
    kept = {rid for ids in latest.values() for rid in ids[:keep]}
    return {rid for rid, spec, group in made
            if spec["state"] in FINISHED and spec["age_days"] >= age_days and not spec["deadline"]
            and (group or rid) not in busy_groups and rid not in kept}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(runs=sr.history, keep=sr.keep_per_job)
def test_a_pass_removes_exactly_what_the_rules_let_go(tmp_path_factory, runs, keep):
    path = tmp_path_factory.mktemp("r") / "a.db"
    store, now, made = build(path, runs)
    try:
        tally = prune(store, Policy(runs_older_than=100 * DAY, output_older_than=50 * DAY,
                                    keep_per_job=keep, batch=7), now)
        gone = expected_gone(made, keep, 100)
        left = {r.run_id for r in store.query_runs(limit=1000)[0]}
        assert left == {rid for rid, _, _ in made} - gone
        assert tally.runs == len(gone)
        # Output goes by its own age, by the same rules, from the runs that stay.
        outputs_gone = expected_gone(made, keep, 50) - gone
        with_output = {rid for rid in left if store.read_output(rid) is not None}
        assert with_output == left - outputs_gone
        assert tally.outputs == len(outputs_gone)
        # Counts kept by triggers agree with the rows.
        assert store.stats()["runs"] == len(left)
        # A second pass finds nothing more to do.
        again = prune(store, Policy(runs_older_than=100 * DAY, output_older_than=50 * DAY,
                                    keep_per_job=keep, batch=7), now)
        assert (again.runs, again.outputs) == (0, 0)
    finally:
        store.close()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(runs=sr.history, keep=sr.keep_per_job)
def test_archiving_moves_runs_whole_and_loses_none(tmp_path_factory, runs, keep):
    folder = tmp_path_factory.mktemp("a")
    store, now, made = build(folder / "a.db", runs)
    try:
        tally = prune(store, Policy(runs_older_than=100 * DAY, keep_per_job=keep, batch=5,
                                    archive_dir=str(folder / "archive")), now)
        gone = expected_gone(made, keep, 100)
        archived = {}
        for path in tally.archives:
            archive = Store(path, readonly=True)
            try:
                for run in archive.query_runs(limit=1000)[0]:
                    archived[run.run_id] = (archive.read_output(run.run_id), archive.run_log(run.run_id))
            finally:
                archive.close()
        assert set(archived) == gone
        assert all(out == b"out" and log for out, log in archived.values())
        assert {r.run_id for r in store.query_runs(limit=1000)[0]} == {rid for rid, _, _ in made} - gone
    finally:
        store.close()


def test_a_dry_run_counts_and_changes_nothing(tmp_path):
    runs = [{"job": "a", "state": "success", "age_days": 150, "rerun_of": None, "deadline": False}] * 6
    store, now, made = build(tmp_path / "a.db", runs)
    try:
        tally = prune(store, Policy(runs_older_than=100 * DAY, keep_per_job=2), now, dry_run=True)
        assert (tally.runs, tally.kept) == (4, 2)
        assert store.stats()["runs"] == 6
    finally:
        store.close()
