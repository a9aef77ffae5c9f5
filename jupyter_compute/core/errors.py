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


class InvalidConfig(Unavailable):
    """A setting in jupyter_compute's config that cannot be used: nothing starts until it is fixed."""
    reason = "invalid_config"


def field_pointer(loc: tuple | list) -> str:
    """JSON pointer (RFC 6901) for a pydantic error location."""
    parts = [str(p).replace("~", "~0").replace("/", "~1") for p in loc]
    return "/" + "/".join(parts) if parts else ""


#: pydantic's error types in the words the sidebar's forms use; ``ctx`` fills the placeholders.
_PLAIN = {
    "extra_forbidden": "is not a field of this kind",
    "missing": "is required",
    "greater_than_equal": "must be at least {ge}",
    "greater_than": "must be more than {gt}",
    "less_than_equal": "must be at most {le}",
    "less_than": "must be less than {lt}",
    "string_too_short": "must be at least {min_length} characters long",
    "string_too_long": "must be at most {max_length} characters long",
    "too_short": "must have at least {min_length} items",
    "too_long": "must have at most {max_length} items",
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "string_type": "must be text",
    "dict_type": "must be a set of KEY=VALUE pairs",
    "list_type": "must be a list",
    "literal_error": "must be one of {expected}",
    "enum": "must be one of {expected}",
    "string_pattern_mismatch": "does not have the expected form ({pattern})",
}


def _plain(error: dict) -> str:
    template = _PLAIN.get(error.get("type", ""))
    if template is None:
        return error.get("msg", "is invalid")
    try:
        return template.format(**{k: _number(v) for k, v in (error.get("ctx") or {}).items()})
    except (KeyError, IndexError, ValueError):
        return error.get("msg", "is invalid")


def _number(v: Any) -> Any:
    """1000000 as 1,000,000 and 64.0 as 64: bounds as a person writes them."""
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 10_000 else v


def from_validation_error(exc, prefix: tuple = ()) -> InvalidRequest:
    """Turn a pydantic ValidationError into a 400 naming the first field at fault."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = tuple(prefix) + tuple(first.get("loc", ()))
    name = ".".join(str(p) for p in loc) or "request"
    msg = _plain(first).removeprefix("Value error, ")
    more = f" ({len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return InvalidRequest(f"{name}: {msg}{more}", field=field_pointer(loc))
