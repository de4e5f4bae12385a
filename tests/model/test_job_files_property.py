"""Property: whatever a job file holds, loading it gives a Job or that file's errors, promptly.

Generated YAML documents and mutated job files go to the loader (and a few
folders of them to ``apsis-lite check-jobs``). Nothing may raise but the
collected JobErrors, no error may come from the last-resort guard (each
failure has its own message), and a job that loads can be planned (its
schedules' ``times()``) and bound without anything but BadRequest. Greedy
templates render, or stop at a limit, within seconds and 150 MiB.
"""

import itertools
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from datetime import datetime, timedelta
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from apsis_lite.errors import BadRequest
from apsis_lite.model.jobs import JobErrors, bind, job_from_jso, load_job_file
from strategies_jobs import greedy_templates, job_documents, job_texts, schedules, start_times

ROOT = Path(__file__).resolve().parents[2]

# More examples for a longer search: APSIS_LITE_FUZZ_EXAMPLES=20000.
EXAMPLES = int(os.environ.get("APSIS_LITE_FUZZ_EXAMPLES", "400"))
# Loading a job file takes milliseconds; the freezes this guards against took minutes.
PROMPT = settings(deadline=timedelta(seconds=5), max_examples=EXAMPLES,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _load(text):
    fd, path = tempfile.mkstemp(suffix=".yaml", prefix="al-prop-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogatepass") as f:
            f.write(text)
        try:
            return load_job_file(path, "prop/job"), path
        except JobErrors as exc:
            for err in exc.errors:
                assert err.path == path
                assert isinstance(err.msg, str) and err.msg.strip()
                assert not err.msg.startswith("cannot load:"), err.msg  # the guard, not a real check
                assert "Traceback" not in err.msg
            return exc, path
    finally:
        os.unlink(path)


def _exercise(job):
    """What the server does with a job that loaded: describe it, plan it, bind it."""
    job.to_jso()
    for schedule in job.schedules:
        for start in ("1970-01-01T00:00:00+00:00", "2026-03-08T06:59:00+00:00",
                      "9999-12-31T00:00:00+00:00"):
            list(itertools.islice(schedule.times(datetime.fromisoformat(start)), 30))
    try:
        bind(job, {p: "2026-11-25" for p in job.params})
    except BadRequest:
        pass


@PROMPT
@given(job_texts())
def test_any_text_loads_or_gives_that_files_errors(text):
    t0 = time.monotonic()
    result, _ = _load(text)
    if not isinstance(result, JobErrors):
        _exercise(result)
    assert time.monotonic() - t0 < 5


@PROMPT
@given(job_documents())
def test_any_document_loads_or_gives_that_files_errors(doc):
    result, _ = _load(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    if not isinstance(result, JobErrors):
        _exercise(result)


@settings(deadline=timedelta(seconds=5), max_examples=EXAMPLES,
          suppress_health_check=[HealthCheck.too_slow])
@given(schedules(), start_times())
def test_times_of_a_schedule_that_loads_never_raise_and_end(schedule, start):
    result, _ = _load(yaml.safe_dump({"params": [], "program": "true", "schedule": schedule}))
    if isinstance(result, JobErrors):
        return
    for s in result.schedules:
        times = [t for t, _ in itertools.islice(s.times(start), 200)]
        assert times == sorted(set(times))
        assert all(t >= start for t in times)


@settings(deadline=None, max_examples=12, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(job_texts(), min_size=1, max_size=4))
def test_check_jobs_reports_every_file_and_never_crashes(texts):
    with tempfile.TemporaryDirectory(prefix="al-prop-") as d:
        root = Path(d)
        (root / "good.yaml").write_text("program: echo fine\n")
        for i, text in enumerate(texts):
            (root / f"f{i}.yaml").write_text(text, encoding="utf-8", errors="surrogatepass")
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "apsis_lite", "check-jobs", str(root)],
                              capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert time.monotonic() - t0 < 60
        assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr
        assert proc.returncode in (0, 1), proc.stderr
        failed = {Path(line.split(":", 1)[0]).name for line in proc.stderr.splitlines()
                  if ": warning:" not in line and line.startswith(str(root))}
        loaded = int(proc.stdout.split(" job")[0])
        # Every file is accounted for: loaded, or named in an error.
        assert loaded + len(failed - {"good.yaml"}) == len(texts) + 1
        assert (proc.returncode == 1) == bool(failed)


@settings(deadline=timedelta(seconds=10), max_examples=max(EXAMPLES // 4, 50),
          suppress_health_check=[HealthCheck.too_slow])
@given(greedy_templates())
def test_any_template_renders_or_stops_promptly_in_little_memory(template):
    tracemalloc.start()
    t0 = time.monotonic()
    try:
        try:
            job = job_from_jso({"params": ["x"], "program": template}, "t", "jobs/t.yaml")
            bind(job, {"x": "ab"})
        except (JobErrors, BadRequest):
            pass
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Within the 1 s limit, slowed down by tracing; tens of MB at most.
    assert time.monotonic() - t0 < 8
    assert peak < 150 << 20, f"{peak >> 20} MiB"
