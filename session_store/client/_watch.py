"""What both clients' `watch` share: the request, the resume request, and when to resume.

A watch is a stream that never ends by itself. Both clients remember the cursor of the last message
(events and checkpoints alike) and, when the stream breaks with a retryable status (UNAVAILABLE,
CANCELLED by a stopping server, a lost connection) or ends, call Watch again right after that
cursor: nothing is missed and nothing repeated. Attempts count the failures since the last message.
"""

from __future__ import annotations

from collections.abc import Iterable

from session_store.client._base import Operation, should_retry
from session_store.errors import SessionStoreError
from session_store.events.stream import EventType
from session_store.v1 import events_pb2 as pb

DEFAULT_WATCH_ATTEMPTS = 8
"""Consecutive failed (re)connections of a watch before it gives up (back-off grows each time)."""
SERVICE = "SessionEvents"
ENDED_MESSAGE = "the server ended the watch stream"
"""An UnavailableError with this stands for a stream that ended with OK (a watch never ends by itself)."""

_WATCH = Operation("Watch", pb.WatchRequest(), lambda reply: reply, idempotent=True, service=SERVICE)


def watch_request(
    *,
    realms: Iterable[str] = (),
    types: Iterable[EventType] = (),
    user_id: str = "",
    after_cursor: str = "",
    from_oldest: bool = False,
) -> pb.WatchRequest:
    """A Watch request: after `after_cursor` when given, else from the oldest or (default) from now."""
    request = pb.WatchRequest(
        realms=list(realms), types=[pb.EventType.ValueType(int(t)) for t in types], user_id=user_id
    )
    if after_cursor:
        request.after_cursor = after_cursor
    elif from_oldest:
        request.from_oldest = True
    else:
        request.from_now = True
    return request


def resume_request(request: pb.WatchRequest, cursor: str) -> pb.WatchRequest:
    """The same watch, continued right after `cursor` (the request itself when there is none yet)."""
    if not cursor:
        return request
    resumed = pb.WatchRequest()
    resumed.CopyFrom(request)
    resumed.after_cursor = cursor
    return resumed


def should_resume(exc: SessionStoreError, attempt: int, max_attempts: int) -> bool:
    """Whether a broken watch is called again: UNAVAILABLE-type errors, within the attempts."""
    return should_retry(exc, _WATCH, attempt, max_attempts)
