"""Hypothesis strategies for config files: mappings shaped like the settings, with
any value where a value goes, heavy on the near misses of hosts: and host_groups:."""

from hypothesis import strategies as st

from apsis_lite.config import SETTINGS

NAMES = st.sampled_from(["web1", "db", "127.0.0.1", "-oProxyCommand=x", "a b", "", "web", "x@y", "ü", "\x00"])
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True), st.text(max_size=8),
    st.sampled_from(["round-robin", "random", "least-busy", "Port=22", "BatchMode=no", "batchmode=yes",
                     "ConnectTimeout=", "=x", "~/.ssh/id", "5s", "1e309", "-1"]), NAMES,
)
ANY = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(NAMES, st.integers(), st.booleans()), inner, max_size=4)),
    max_leaves=12)

HOST_KEYS = st.sampled_from(["hostname", "user", "port", "identity_file", "ssh_options", "colour"])
host_settings = st.one_of(st.none(), ANY, st.dictionaries(HOST_KEYS, ANY, max_size=5))
hosts = st.one_of(ANY, st.dictionaries(NAMES, host_settings, max_size=4))
group = st.one_of(ANY, st.fixed_dictionaries({}, optional={
    "hosts": st.one_of(ANY, st.lists(NAMES, max_size=4)), "select": st.one_of(ANY, SCALARS), "extra": ANY}))
host_groups = st.one_of(ANY, st.dictionaries(NAMES, group, max_size=3))

# Any setting with any value, and hosts:/host_groups: as above.
config_mappings = st.fixed_dictionaries({}, optional={
    "hosts": hosts, "host_groups": host_groups,
    **{name: ANY for name in SETTINGS if name not in ("hosts", "host_groups")},
})

# apsis's config sections, with their keys and near misses, beside ours.
APSIS_SECTION_KEYS = {
    "database": ["path", "timeout", "pool"], "runs": ["lookback"], "schedule": ["since", "max_age", "horizon", "x"],
    "waiting": ["max_time"], "smtp": ["host", "port", "ssl", "auth"],
}
apsis_sections = {
    name: st.one_of(ANY, st.dictionaries(st.sampled_from(keys), ANY, max_size=3))
    for name, keys in APSIS_SECTION_KEYS.items()
}
apsis_group = st.one_of(group, NAMES, st.lists(NAMES, max_size=3),
                        st.fixed_dictionaries({"type": st.sampled_from(["round-robin", "random", "single", "x"])},
                                              optional={"hosts": st.lists(NAMES, max_size=3), "host": NAMES}))
apsis_config_mappings = st.fixed_dictionaries({}, optional={
    **apsis_sections,
    "jobs": ANY, "job_dir": ANY, "python": ANY, "procstar": ANY, "action": ANY, "runs_lookback": ANY,
    "program_types": st.one_of(ANY, st.dictionaries(NAMES, NAMES, max_size=2)),
    "host_groups": st.one_of(ANY, st.dictionaries(NAMES, apsis_group, max_size=3)),
    "max_age": ANY, "data_dir": ANY,
})
