"""Exception types shared by every module.

Each carries a message meant for a person; the web layer and the CLI turn
them into an HTTP status or an exit code in one place each.
"""


class ApsisError(Exception):
    """Base of every error apsis-lite reports to a user."""

    status = 500


class BadRequest(ApsisError):
    """Input that cannot be understood: a bad filter, arg, time or body."""

    status = 400


class NotFound(ApsisError):
    """An unknown job, run or resource."""

    status = 404


class TransitionError(ApsisError):
    """An operation that the run's current state does not allow."""

    status = 409


class StoreUnavailable(ApsisError):
    """The database cannot be written or read now (a full disk, an I/O error).

    Nothing was changed: the transaction that met it was rolled back. The
    engine waits and tries again; a request gets 503 and may be retried.
    """

    status = 503


class SchemaMismatch(ApsisError):
    """A database whose schema this apsis-lite cannot use (made by a newer version)."""

    status = 500


class ConfigError(ApsisError):
    """A bad configuration file or setting."""

    status = 500


class JobFileError(ApsisError):
    """A problem in one job file: which file, which key, what is wrong."""

    status = 400

    def __init__(self, path, key, msg):
        self.path = str(path)
        self.key = key
        self.msg = msg
        super().__init__(str(self))

    def __str__(self):
        where = f"{self.path}: {self.key}" if self.key else self.path
        return f"{where}: {self.msg}"

    def to_jso(self):
        return {"path": self.path, "key": self.key, "message": self.msg}
