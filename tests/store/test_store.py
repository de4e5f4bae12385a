"""The store: migrations, compare-and-set transitions, paging, output blobs."""

import apsw
import pytest

from apsis_lite.errors import NotFound, SchemaMismatch, TransitionError
from apsis_lite.store.database import MIGRATIONS, Store


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "a.db")
    yield s
    s.close()


def test_migrations_run_once_and_record_the_version(tmp_path):
    path = tmp_path / "m.db"
    Store(path).close()
    conn = apsw.Connection(str(path))
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    Store(path).close()  # opening again is a no-op


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "n.db"
    Store(path).close()
    conn = apsw.Connection(str(path))
    conn.execute(f"PRAGMA user_version={len(MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(SchemaMismatch) as refused:
        Store(path)
    message = str(refused.value)
    assert f"schema version {len(MIGRATIONS) + 1}, from a newer apsis-lite" in message
    assert f"up to {len(MIGRATIONS)}" in message


def test_slot_is_unique_per_job(store):
    assert store.insert_run("j", {}, "scheduled", 1.0, 0.0, slot="1|{}") is not None
    assert store.insert_run("j", {}, "scheduled", 1.0, 0.0, slot="1|{}") is None
    assert store.insert_run("k", {}, "scheduled", 1.0, 0.0, slot="1|{}") is not None
    # Ad hoc runs have no slot and never collide.
    assert store.insert_run("j", {}, "scheduled", 1.0, 0.0) is not None
    assert store.insert_run("j", {}, "scheduled", 1.0, 0.0) is not None


def test_transition_is_compare_and_set(store):
    run = store.insert_run("j", {}, "scheduled", 1.0, 0.0)
    assert store.transition(run.run_id, "scheduled", "waiting", 2.0, "due")
    assert not store.transition(run.run_id, "scheduled", "waiting", 3.0, "due again")
    with pytest.raises(TransitionError, match="cannot go to running"):
        store.transition(run.run_id, "waiting", "running", 3.0, "skip ahead")
    log = store.run_log(run.run_id)
    assert [e["state"] for e in log] == ["scheduled", "waiting"]


def test_failed_batch_rolls_back_entirely(store):
    run = store.insert_run("j", {}, "scheduled", 1.0, 0.0)
    with pytest.raises(ZeroDivisionError):
        with store.write():
            store.transition(run.run_id, "scheduled", "waiting", 2.0, "due")
            raise ZeroDivisionError("boom")
    assert store.get_run(run.run_id).state == "scheduled"


def test_after_commit_waits_for_the_commit(store):
    seen = []
    with store.write():
        store.after_commit(lambda: seen.append("done"))
        assert seen == []
    assert seen == ["done"]
    with pytest.raises(ValueError):
        with store.write():
            store.after_commit(lambda: seen.append("rolled back"))
            raise ValueError
    assert seen == ["done"]


def test_keyset_pages_cover_everything_once(store):
    ids = [store.insert_run("j", {"n": str(i)}, "success", float(i), 0.0).run_id for i in range(25)]
    seen, cursor = [], None
    while True:
        page, cursor = store.query_runs(limit=10, cursor=cursor)
        seen += [r.run_id for r in page]
        if cursor is None:
            break
    assert seen == sorted(ids, reverse=True)


def test_output_blob_round_trip_in_chunks(store, tmp_path):
    run = store.insert_run("j", {}, "running", 1.0, 0.0)
    data = bytes(range(256)) * 5000
    path = tmp_path / "out"
    path.write_bytes(data)
    store.store_output(run.run_id, path, len(data), 0, chunk=4096)
    assert store.read_output(run.run_id) == data
    assert store.read_output(run.run_id, 1000, 10) == data[1000:1010]
    assert store.read_output(run.run_id, len(data) + 5) == b""
    assert store.read_output(12345) is None


def test_readonly_store_cannot_write(store, tmp_path):
    store.insert_run("j", {}, "scheduled", 1.0, 0.0)
    reader = Store(store.path, readonly=True)
    assert reader.query_runs()[0][0].job_id == "j"
    with pytest.raises(apsw.Error):
        reader.insert_run("j", {}, "scheduled", 1.0, 0.0)
    with pytest.raises(NotFound):
        reader.get_run(999)


def test_stats_counts_follow_every_change(store):
    a = store.insert_run("j", {}, "scheduled", 1.0, 0.0)
    b = store.insert_run("j", {}, "scheduled", 2.0, 0.0)
    store.transition(a.run_id, "scheduled", "waiting", 3.0, "due")
    assert store.stats() == {"runs": 2, "runs_by_state": {"scheduled": 1, "waiting": 1}}
    store.transition(b.run_id, "scheduled", "skipped", 3.0, "skipped")
    store.conn.execute("DELETE FROM runs WHERE run_id = ?", (a.run_id,))
    assert store.stats() == {"runs": 1, "runs_by_state": {"skipped": 1}}


def test_listeners_hear_each_committed_change_and_not_a_rolled_back_one(tmp_path):
    store = Store(str(tmp_path / "db.sqlite"))
    heard = []
    store.add_listener(lambda rid, old, new: heard.append((rid, old, new)))
    store.add_listener(lambda rid, old, new: 1 / 0)  # a broken listener harms nobody
    run = store.insert_run("job", {}, "scheduled", 10.0, 1.0)
    assert heard == [(run.run_id, None, "scheduled")]
    with store.write():
        assert store.transition(run.run_id, "scheduled", "waiting", 2.0, "due")
        assert heard == [(run.run_id, None, "scheduled")]  # not before the commit
    assert heard[-1] == (run.run_id, "scheduled", "waiting")
    try:
        with store.write():
            store.transition(run.run_id, "waiting", "starting", 3.0, "starting")
            raise RuntimeError("abandon")
    except RuntimeError:
        pass
    assert heard[-1] == (run.run_id, "scheduled", "waiting")
    assert store.get_run(run.run_id).state == "waiting"
