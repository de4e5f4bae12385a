"""The extension API: everything an extension module needs, from one stable place.

An extension registers its types in the registries below (see
docs/extensions.md). Import from here rather than from the modules that
define these names: they may move between releases, this module will not.
"""

from apsis_lite.model.actions import Action, ActionFailed
from apsis_lite.model.conditions import OK, Condition, Verdict
from apsis_lite.model.fields import nonempty_text
from apsis_lite.model.programs import Outcome, Program, ServerProgram, ShellProgram
from apsis_lite.model.registry import ACTIONS, CONDITIONS, PROGRAMS, SCHEDULES
from apsis_lite.model.schedules import Schedule

__all__ = [
    "ACTIONS", "CONDITIONS", "OK", "PROGRAMS", "SCHEDULES",
    "Action", "ActionFailed", "Condition", "Outcome", "Program", "Schedule",
    "ServerProgram", "ShellProgram", "Verdict", "nonempty_text",
]
