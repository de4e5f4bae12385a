"""Action types, and doing them: what happens when a run enters a state.

The types, one module each, register in ACTIONS when this package is
imported: ``schedule`` (a run of another job; ``successors:`` in a job file
is shorthand for ``schedule`` actions with ``if: {states: [success]}``),
``command``, ``webhook`` and ``email`` (module ``mail``). ``base`` holds the
Action class, the ``if:`` rule and parsing. ``event`` is what an action is
done for; ``runner`` does due actions off the engine's path, durably.
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
from apsis_lite.model.actions.runner import (
    ACTIONS_CACHE_SIZE, ALARM_WORDS, EMAIL_OUTPUT_BYTES, PENDING_PAGE, STOP_WAIT, ActionRunner,
)

__all__ = [
    "Action", "ActionFailed", "parse_action", "ScheduleAction", "successor_action",
    "CommandAction", "WebhookAction", "EmailAction", "ActionEvent", "ActionRunner",
    "LOG_OUTPUT_CHARS", "DEFAULT_WEBHOOK_TIMEOUT", "MAX_RETRY_DELAY", "MAX_WEBHOOK_RETRIES",
    "ACTIONS_CACHE_SIZE", "ALARM_WORDS", "EMAIL_OUTPUT_BYTES", "PENDING_PAGE", "STOP_WAIT",
]
