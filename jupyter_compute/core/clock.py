"""The time as the store records it (UTC, aware). A module of its own so that the processes that
only keep the store up to date (the supervisors) need not load the models and pydantic with it."""
from __future__ import annotations

from datetime import datetime, timezone


def utcnow() -> datetime:
    return datetime.now(timezone.utc)
