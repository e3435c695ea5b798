"""SessionEvents proto messages <-> event values; every WatchRequest field is validated on its way in.

Shared by the servicer and both clients, so it imports no server-side module (no Redis, no hub).
"""

from __future__ import annotations

from session_store.api import convert
from session_store.errors import InvalidArgumentError
from session_store.events.stream import EventFilter, EventType, SessionEvent
from session_store.v1 import events_pb2 as pb

MAX_FILTER_REALMS = 1000
"""Most realms one watch may filter on."""


def watch_filter(request: pb.WatchRequest) -> EventFilter:
    """The filter of a Watch request.

    Raises:
        InvalidArgumentError: an invalid realm or user id, too many realms, an unknown or unspecified
            type, or a user id without a realm.
    """
    if len(request.realms) > MAX_FILTER_REALMS:
        raise InvalidArgumentError(f"at most {MAX_FILTER_REALMS} realms may be watched in one call")
    realms = frozenset(convert.realm(r) for r in request.realms)
    types = set()
    for value in request.types:
        if value not in EventType._value2member_map_:
            raise InvalidArgumentError(f"types: {value} is not an event type")
        types.add(EventType(value))
    user_id = convert.user_id(request.user_id) if request.user_id else ""
    return EventFilter(realms=realms, types=frozenset(types), user_id=user_id)


def watch_start(request: pb.WatchRequest) -> tuple[str | None, bool]:
    """Where a Watch request starts: (after_cursor or None, from_oldest); (None, False) is from now.

    Raises:
        InvalidArgumentError: from_now or from_oldest set to false.
    """
    start = request.WhichOneof("start")
    if start == "after_cursor":
        return request.after_cursor, False
    if start in ("from_now", "from_oldest") and not getattr(request, start):
        raise InvalidArgumentError(f"{start} must be true when set")
    return None, start == "from_oldest"


def event_to_proto(event: SessionEvent | None, cursor: str) -> pb.Event:
    """The message of an event (None: a checkpoint) with the cursor right after it."""
    if event is None:
        return pb.Event(cursor=cursor)
    return pb.Event(
        cursor=cursor,
        id=event.id,
        type=pb.EventType.ValueType(int(event.type)),
        realm=event.realm,
        user_id=event.user_id,
        session_id=event.session_id,
        offline=event.offline,
        client_ids=list(event.client_ids),
        reason=event.reason,
        at_ms=event.at_ms,
        deadline_ms=event.deadline_ms,
    )


def event_from_proto(message: pb.Event) -> SessionEvent | None:
    """The event of a message, its cursor included; None for a checkpoint or a type this client does
    not know (a newer server's)."""
    if message.type not in EventType._value2member_map_:
        return None
    return SessionEvent(
        id=message.id,
        type=EventType(message.type),
        realm=message.realm,
        user_id=message.user_id,
        session_id=message.session_id,
        offline=message.offline,
        client_ids=tuple(message.client_ids),
        reason=message.reason,
        at_ms=message.at_ms,
        deadline_ms=message.deadline_ms,
        cursor=message.cursor,
    )
