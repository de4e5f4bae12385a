"""Hypothesis strategies for retention: a history of runs of a few jobs, of every state
and many ages, some of them reruns of earlier ones, some with a deadline pending."""

from hypothesis import strategies as st

STATES = ("success", "failure", "error", "skipped", "scheduled", "waiting", "running")

run = st.fixed_dictionaries({
    "job": st.sampled_from(["a", "b", "c"]),
    "state": st.sampled_from(STATES),
    "age_days": st.integers(min_value=0, max_value=200),
    # Index (from the end of the runs before it) of the run this one reruns, or None.
    "rerun_of": st.one_of(st.none(), st.integers(min_value=1, max_value=5)),
    # A pending deadline, one run in ten or so.
    "deadline": st.integers(min_value=0, max_value=9).map(lambda n: n == 0),
})

history = st.lists(run, min_size=0, max_size=40)
keep_per_job = st.integers(min_value=0, max_value=4)
