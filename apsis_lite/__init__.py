"""apsis-lite: a job scheduler with an embedded SQLite store and an htmx web UI.

The package's parts: ``model`` (job files and their types), ``store``
(SQLite), ``engine`` (the scheduler), ``agent`` (runs programs and outlives
the server), ``web`` (API and pages), ``cli`` (the command line);
``service`` wires them into a server. Extensions import from ``extend``.
"""

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

# Modules that extensions imported before the package was split into parts.
# Old names keep working (with a DeprecationWarning) so that no extension
# breaks on upgrade; ``apsis_lite.extend`` is the stable place.
_MOVED = {
    "apsis_lite.actions": "apsis_lite.model.actions",
    "apsis_lite.conditions": "apsis_lite.model.conditions",
    "apsis_lite.programs": "apsis_lite.model.programs",
    "apsis_lite.registry": "apsis_lite.model.registry",
    "apsis_lite.schedules": "apsis_lite.model.schedules",
    "apsis_lite.auth": "apsis_lite.web.auth",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Import a moved module under its old name as the very same module object."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in _MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        new = _MOVED[spec.name]
        warnings.warn(f"{spec.name} is now {new}; import extension names from apsis_lite.extend",
                      DeprecationWarning, stacklevel=2)
        return importlib.import_module(new)

    def exec_module(self, module):
        pass  # already executed under its new name


if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
    sys.meta_path.append(_MovedModules())
