"""Extension types for in-process engine tests, registered as an extension registers its own.

Importing this module registers them. Their names are dotted, as aliases
are (``tests.echo-in-server``): no real type has such a name, and the lists
of known types in error messages, which other tests check, leave them out.
"""

from dataclasses import dataclass
from typing import ClassVar

from apsis_lite.errors import StoreUnavailable
from apsis_lite.model.conditions import OK, Condition
from apsis_lite.model.programs import Outcome, ServerProgram
from apsis_lite.model.registry import CONDITIONS, PROGRAMS
from apsis_lite.model.schedules import nonempty_text


@PROGRAMS.register("tests.echo-in-server")
@dataclass(frozen=True, kw_only=True)
class EchoInServer(ServerProgram):
    """Runs in the server: says ``text`` and succeeds at once."""

    type_name: ClassVar[str] = "tests.echo-in-server"
    text: str

    @classmethod
    def _read(cls, f, allow_templates):
        return {**super()._read(f, allow_templates), "text": f.take("text", nonempty_text)}

    def to_jso(self):
        return {**super().to_jso(), "text": self.text}

    def run(self, context):
        return Outcome(message=f"said {self.text}", output=f"{self.text}\n")


@PROGRAMS.register("tests.wait-in-server")
@dataclass(frozen=True, kw_only=True)
class WaitInServer(ServerProgram):
    """Runs in the server until it is told to stop."""

    type_name: ClassVar[str] = "tests.wait-in-server"

    def run(self, context):
        while not context.stopping.wait(0.02):
            pass
        return Outcome(message="noticed the stop")


#: While true, the ``tests.store-fails`` condition cannot read the database.
STORE_FAILS = {"now": False}


@CONDITIONS.register("tests.store-fails")
@dataclass(frozen=True)
class StoreFails(Condition):
    """Holds, except while STORE_FAILS says that the store it reads from fails."""

    type_name: ClassVar[str] = "tests.store-fails"

    @classmethod
    def _read(cls, f, allow_templates):
        return {}

    def to_jso(self):
        return {"type": self.type_name}

    def check(self, run, ctx):
        if STORE_FAILS["now"]:
            raise StoreUnavailable("the database cannot be read: an I/O error (injected)")
        return OK
