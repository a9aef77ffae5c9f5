"""The errors every face of jupyter_compute shows to people.

Each carries a message a person can act on, a machine-readable ``reason`` and, where one
field of a request is at fault, that ``field`` as a JSON pointer into the request body.
The REST layer maps them to status codes in one place; the CLI maps them to exit codes.
"""
from __future__ import annotations


class ComputeError(Exception):
    status = 500
    reason = "error"

    def __init__(self, message: str, *, field: str | None = None, reason: str | None = None,
                 details: dict | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        #: Structured facts a client may act on (e.g. the fingerprint of an unknown host key).
        self.details = details
        if reason:
            self.reason = reason

    def to_json(self) -> dict:
        out = {"message": self.message, "reason": self.reason, "field": self.field}
        if self.details:
            out["details"] = self.details
        return out


class InvalidRequest(ComputeError):
    status = 400
    reason = "invalid_request"


class NotFound(ComputeError):
    status = 404
    reason = "not_found"


class Conflict(ComputeError):
    status = 409
    reason = "conflict"


class ConfirmationRequired(Conflict):
    """An action whose consequence the person must accept first (stopping the machine they are on);
    ``details["consequence"]`` says what it is."""
    reason = "confirmation_required"


class BackendRefused(ComputeError):
    status = 502
    reason = "backend_refused"


class Unavailable(ComputeError):
    status = 503
    reason = "unavailable"


def field_pointer(loc: tuple | list) -> str:
    """JSON pointer (RFC 6901) for a pydantic error location."""
    parts = [str(p).replace("~", "~0").replace("/", "~1") for p in loc]
    return "/" + "/".join(parts) if parts else ""


def from_validation_error(exc, prefix: tuple = ()) -> InvalidRequest:
    """Turn a pydantic ValidationError into a 400 naming the first field at fault."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = tuple(prefix) + tuple(first.get("loc", ()))
    name = ".".join(str(p) for p in loc) or "request"
    msg = first.get("msg", "is invalid")
    if first.get("type") == "extra_forbidden":
        msg = "is not a field of this kind"
    elif first.get("type") == "missing":
        msg = "is required"
    msg = msg.removeprefix("Value error, ")
    more = f" ({len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return InvalidRequest(f"{name}: {msg}{more}", field=field_pointer(loc))
