"""A job's host: value to a concrete host: names, groups and their selection policies."""

import random
from collections import Counter

import pytest
from hypothesis import given, strategies as st

from apsis_lite.config import HostGroup
from apsis_lite.hosts.groups import Choice, HostChoiceError, HostPicker

def _picker(select, busy=None, rng=None, hosts=("web1", "web2", "web3")):
    return HostPicker({"web": HostGroup("web", hosts, select)}, busy=busy, rng=rng)


def test_a_name_that_is_not_a_group_is_the_host_itself():
    picker = _picker("round-robin")
    assert picker.pick("db.example.com") == Choice("db.example.com")
    assert picker.pick("db.example.com").describe() == "host db.example.com"


def test_round_robin_takes_the_hosts_in_turn():
    picker = _picker("round-robin")
    picks = [picker.pick("web").host for _ in range(7)]
    assert picks == ["web1", "web2", "web3", "web1", "web2", "web3", "web1"]
    assert picker.pick("web").describe() == "host web2 (group web, round-robin)"


def test_round_robin_positions_are_per_group():
    picker = HostPicker({"a": HostGroup("a", ("a1", "a2")), "b": HostGroup("b", ("b1", "b2"))})
    assert [picker.pick(g).host for g in "aabab"] == ["a1", "a2", "b1", "a1", "b2"]


def test_random_uses_the_given_rng_and_reaches_every_host():
    picks = [_picker("random", rng=random.Random(7)).pick("web").host for _ in range(3)]
    assert len(set(picks)) == 1  # the same seed, the same pick
    picker = _picker("random", rng=random.Random(1))
    counts = Counter(picker.pick("web").host for _ in range(600))
    assert set(counts) == {"web1", "web2", "web3"}
    assert all(150 < n < 250 for n in counts.values()), counts


def test_least_busy_takes_the_host_with_fewest_runs_in_flight():
    busy = {"web1": 3, "web2": 1, "web3": 2}
    picker = _picker("least-busy", busy=lambda hosts: dict(busy))
    assert picker.pick("web") == Choice("web2", "web", "least-busy")
    busy["web2"] = 5
    assert picker.pick("web").host == "web3"


def test_least_busy_spreads_a_batch_as_its_runs_are_counted():
    busy = Counter()

    def start_one():
        host = picker.pick("web").host
        busy[host] += 1  # as the store counts the run once it is recorded
        return host

    picker = _picker("least-busy", busy=lambda hosts: {h: busy[h] for h in hosts})
    assert sorted(start_one() for _ in range(6)) == ["web1", "web1", "web2", "web2", "web3", "web3"]


def test_least_busy_ties_go_round_after_the_last_pick():
    picker = _picker("least-busy", busy=lambda hosts: {})  # nothing recorded: all tied
    assert [picker.pick("web").host for _ in range(4)] == ["web1", "web2", "web3", "web1"]


def test_group_only_requires_a_configured_group():
    picker = _picker("round-robin")
    assert picker.pick("web", group_only=True).group == "web"
    with pytest.raises(HostChoiceError, match=r"no host group 'default' in the config's host_groups: \(groups: web\)"):
        picker.pick("default", group_only=True)
    with pytest.raises(HostChoiceError, match="none in the config"):
        HostPicker({}).pick("default", group_only=True)


@pytest.mark.parametrize("bad", ["", "  ", "-oProxyCommand=x", "web 1", "web\n1", None, 3])
def test_a_name_ssh_could_misread_is_refused(bad):
    with pytest.raises(HostChoiceError, match="host"):
        _picker("round-robin").pick(bad)


@given(select=st.sampled_from(["round-robin", "random", "least-busy"]),
       hosts=st.lists(st.text("abcxyz.-1", min_size=1, max_size=6).filter(lambda h: h[0] != "-"),
                      min_size=1, max_size=5, unique=True),
       busy=st.dictionaries(st.text("abcxyz", max_size=3), st.integers(0, 9)),
       seed=st.integers(0, 2**32), n=st.integers(1, 12))
def test_a_group_always_picks_one_of_its_hosts(select, hosts, busy, seed, n):
    picker = _picker(select, busy=lambda hs: busy, rng=random.Random(seed), hosts=tuple(hosts))
    for _ in range(n):
        choice = picker.pick("web")
        assert choice.host in hosts and choice.group == "web" and choice.select == select
