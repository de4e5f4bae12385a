"""Type registries: the one extension mechanism.

A job file's ``type:`` names an entry in one of these registries. Built-in
types register themselves when their module is imported; extensions (modules
named in the config, or installed packages advertising the
``apsis_lite.extensions`` entry point) register more at start-up. Nothing
named in YAML is ever imported: an apsis-style full import path such as
``apsis.program.shell.ShellCommandProgram`` resolves only if something
registered that name as an alias.
"""

import importlib
import importlib.metadata
import logging
import re

log = logging.getLogger("apsis_lite.model")


class Registry:
    """Maps ``type:`` names to classes for one kind (program, schedule, ...)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._types = {}

    def register(self, name: str, cls=None, aliases=()):
        """Register ``cls`` under ``name`` and ``aliases``; usable as a decorator."""

        def add(cls):
            for n in (name, *aliases):
                self._types[n] = cls
            return cls

        return add(cls) if cls is not None else add

    def get(self, name):
        """The class for ``name``; KeyError with a message listing known types."""
        try:
            return self._types[name]
        except (KeyError, TypeError):
            known = ", ".join(sorted(n for n in self._types if "." not in n))
            if isinstance(name, str) and _CLASS_PATH.fullmatch(name):
                raise KeyError(class_path_message(self.kind, name, known)) from None
            raise KeyError(f"unknown {self.kind} type {name!r} (known: {known})") from None

    def add_alias(self, alias: str, target: str):
        """Make ``alias`` name the type ``target`` names; KeyError if none does."""
        self._types[alias] = self.get(target)

    def names(self):
        return sorted(self._types)

    def __contains__(self, name):
        return name in self._types


_CLASS_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+")


def class_path_message(kind, name, known) -> str:
    """Why a ``type:`` written as a Python class path is not known, and what would load it."""
    module = name.rsplit(".", 1)[0]
    if name.startswith("apsis.") and ".test." in f".{module}.":
        why = "one of apsis's own test classes, which apsis-lite does not provide"
    else:
        why = (f"a class path loads only when an extension registers it, and none loaded does: "
               f"the extension for module {module!r} is missing from the config's extensions: "
               "(see docs/extensions.md)")
    return f"unknown {kind} type {name!r}: {why} (known: {known})"


PROGRAMS = Registry("program")
SCHEDULES = Registry("schedule")
CONDITIONS = Registry("condition")
ACTIONS = Registry("action")

ENTRY_POINT_GROUP = "apsis_lite.extensions"


def load_extensions(module_names=()):
    """Import extension modules so that they register their types.

    Named modules come from the config; a failure there is an error.
    Entry-point extensions that fail are logged and skipped.
    """
    for name in module_names:
        importlib.import_module(name)
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as exc:  # an installed plugin must not stop the scheduler
            log.error("extension %s failed to load: %s", ep.name, exc)


def add_type_aliases(config) -> list:
    """Register the config's ``program_types``, ``schedule_types`` and ``action_types``
    (apsis's short names for types). Returns a line for each alias whose target
    no type answers to: a job file naming that alias then fails to load, naming it."""
    problems = []
    for setting, registry in (("program_types", PROGRAMS), ("schedule_types", SCHEDULES),
                              ("action_types", ACTIONS)):
        for alias, target in (getattr(config, setting, None) or {}).items():
            try:
                registry.add_alias(alias, target)
            except KeyError:
                problems.append(f"config: {setting}: {alias}: no {registry.kind} type {target!r} is registered "
                                f"(a class path needs an extension that registers it; see docs/extensions.md)")
    return problems
