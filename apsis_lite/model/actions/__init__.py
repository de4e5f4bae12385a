"""Action types, and doing them: what happens when a run enters a state.

The types, one module each, register in ACTIONS when this package is
imported: ``schedule`` (a run of another job; ``successors:`` in a job file
is shorthand for ``schedule`` actions with ``if: {states: [success]}``),
``command``, ``webhook`` and ``email`` (module ``mail``). ``base`` holds the
Action class, the ``if:`` rule and parsing. ``event`` is what an action is
done for. Doing due actions, durably and off the engine's path, is the
engine side's ``engine.action_runner``.
The names below were always imported from ``apsis_lite.model.actions``.
"""

from apsis_lite.model.actions.base import Action, ActionFailed, parse_action
# The types, in the order they register.
from apsis_lite.model.actions.schedule_run import ScheduleAction, successor_action
from apsis_lite.model.actions.command import LOG_OUTPUT_CHARS, CommandAction
from apsis_lite.model.actions.webhook import (
    DEFAULT_WEBHOOK_TIMEOUT, MAX_RETRY_DELAY, MAX_WEBHOOK_RETRIES, WebhookAction,
)
from apsis_lite.model.actions.mail import EmailAction
from apsis_lite.model.actions.event import ActionEvent

__all__ = [
    "Action", "ActionFailed", "parse_action", "ScheduleAction", "successor_action",
    "CommandAction", "WebhookAction", "EmailAction", "ActionEvent",
    "LOG_OUTPUT_CHARS", "DEFAULT_WEBHOOK_TIMEOUT", "MAX_RETRY_DELAY", "MAX_WEBHOOK_RETRIES",
]
