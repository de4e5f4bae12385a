"""The ``email`` action: a message about the run, sent through the configured SMTP server."""

from __future__ import annotations

import smtplib
import socket
from dataclasses import dataclass
from email.message import EmailMessage
from typing import ClassVar

from apsis_lite.model.actions.base import Action, ActionFailed
from apsis_lite.model.actions.webhook import _reason
from apsis_lite.model.fields import nonempty_text, string_list
from apsis_lite.model.registry import ACTIONS


def _address(value) -> str:
    address = nonempty_text(value).strip()
    if "@" not in address and "{{" not in address:
        raise ValueError(f"not an e-mail address: {address!r}")
    return address


@ACTIONS.register("email")
@dataclass(frozen=True, kw_only=True)
class EmailAction(Action):
    """Send an e-mail about the run to ``to`` (one address or a list), through ``smtp_host``."""

    type_name: ClassVar[str] = "email"

    to: tuple
    subject: str | None = None
    when: tuple | None = None
    labels: tuple | None = None

    @classmethod
    def _read(cls, f):
        return {"to": f.take("to", _addresses), "subject": f.take("subject", nonempty_text, None)}

    def _jso(self):
        jso = {"to": list(self.to)}
        if self.subject is not None:
            jso["subject"] = self.subject
        return jso

    def describe(self):
        return f"e-mail to {', '.join(self.to)}"

    def perform(self, event, ctx):
        cfg = ctx.config
        if not cfg.smtp_host:
            raise ActionFailed("no SMTP server configured (set smtp_host in the server's config)")
        msg = EmailMessage()
        msg["From"] = cfg.smtp_from or f"apsis-lite@{socket.getfqdn()}"
        msg["To"] = ", ".join(self.to)
        msg["Subject"] = self.subject or event.subject()
        msg.set_content(event.describe(ctx.output_tail(event.run)))
        try:
            if cfg.smtp_security == "ssl":
                client = smtplib.SMTP_SSL(cfg.smtp_host, cfg.smtp_port, timeout=cfg.action_timeout)
            else:
                client = smtplib.SMTP(cfg.smtp_host, cfg.smtp_port, timeout=cfg.action_timeout)
            with client:
                if cfg.smtp_security == "starttls":
                    client.starttls()
                if cfg.smtp_user:
                    client.login(cfg.smtp_user, cfg.smtp_password or "")
                refused = client.send_message(msg)
        except smtplib.SMTPException as exc:
            raise ActionFailed(f"SMTP server {cfg.smtp_host}:{cfg.smtp_port}: {exc}") from None
        except OSError as exc:
            raise ActionFailed(f"SMTP server {cfg.smtp_host}:{cfg.smtp_port}: {_reason(exc)}") from None
        if refused:
            return f"sent; refused for {', '.join(refused)}"
        return "sent"


def _addresses(value) -> tuple:
    to = tuple(string_list(value, item=_address))
    if not to:
        raise ValueError("expected at least one address")
    return to
