"""Which host a run goes to: a job's ``host:`` names a host or a group, and a group picks one.

A group (``host_groups:`` in the config) picks by its ``select`` policy:

``round-robin``  its hosts in turn, from where the last run of the group left off
``random``       any of its hosts, equally likely
``least-busy``   the host with the fewest runs starting, running or stopping
                 on it (ties go to the earliest in the group's list after the
                 last host picked, so that a batch starting at once spreads)

A name that is not a group is the host itself, whether or not ``hosts:``
lists it (a host not listed is an ssh destination with every default). The
picker holds only the round-robin positions, in memory: after a restart a
group starts again from its first host.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

from apsis_lite.errors import ApsisError


class HostChoiceError(ApsisError):
    """A ``host:`` or ``group_id`` names nothing a run can go to; the message says why."""

    status = 400


@dataclass(frozen=True)
class Choice:
    """The host a run goes to, and the group it was picked from (None for a host named directly)."""

    host: str
    group: str | None = None
    select: str | None = None

    def describe(self) -> str:
        """For the run's log: ``host web2 (group web, round-robin)``."""
        if self.group is None:
            return f"host {self.host}"
        return f"host {self.host} (group {self.group}, {self.select})"


def check_host_name(name) -> str:
    """``name`` if it can be a host or group name (as the config requires), else HostChoiceError."""
    if not isinstance(name, str) or not name.strip():
        raise HostChoiceError(f"host: must be a host or group name, not {name!r}")
    if name.startswith("-") or any(c.isspace() or not c.isprintable() for c in name):
        raise HostChoiceError(f"host: {name!r} is not a host or group name "
                              "(it may not start with '-' or contain spaces or control characters)")
    return name


class HostPicker:
    """Picks a concrete host for a ``host:`` value.

    ``busy(hosts)`` gives ``{host: runs in flight there}`` for those hosts
    (the store's count; a host missing from the answer has none); ``rng`` is
    a ``random.Random`` (tests pass a seeded one).
    """

    def __init__(self, groups: dict, busy: Callable[[tuple], dict] | None = None,
                 rng: random.Random | None = None):
        self._groups = dict(groups)
        self._busy = busy or (lambda hosts: {})
        self._rng = rng or random.Random()
        self._next = {}   # group name -> index in its hosts of the next round-robin start

    def pick(self, name, *, group_only: bool = False) -> Choice:
        """The host for ``name``: a group's pick, or ``name`` itself.

        With ``group_only`` (apsis's ``group_id``), ``name`` must be a group
        in the config. HostChoiceError says what is wrong with ``name``.
        """
        name = check_host_name(name)
        group = self._groups.get(name)
        if group is None:
            if group_only:
                known = ", ".join(sorted(self._groups)) or "none in the config"
                raise HostChoiceError(f"no host group {name!r} in the config's host_groups: (groups: {known})")
            return Choice(name)
        hosts = tuple(group.hosts)
        start = self._next.get(name, 0) % len(hosts)
        if group.select == "random":
            index = self._rng.randrange(len(hosts))
        elif group.select == "least-busy":
            busy = self._busy(hosts)
            order = [(start + k) % len(hosts) for k in range(len(hosts))]
            index = min(order, key=lambda i: busy.get(hosts[i], 0))
        else:
            index = start
        self._next[name] = index + 1
        return Choice(hosts[index], name, group.select)
