"""What a shard's event stream holds, as values: stream ids, decoded events, filters and cursors.

No I/O here. An event stream entry (see `session_store.storage.keys` for its fields) becomes a
`SessionEvent`; a watcher's place in every shard (a `Position` per shard, shards named by the random
identity each keeps in ``ss:shard``) becomes an opaque cursor and back.

Cursor format (version 1): URL-safe base64, unpadded, of the ASCII text
``1;<identity>=<ms>-<seq>:<added>;...`` with identities sorted (see `Position`). A shard the cursor
does not name is read from its oldest retained entry.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

from session_store.errors import InvalidArgumentError

MAX_CURSOR_LENGTH = 16_384
"""Longest cursor accepted (characters); a cursor of 256 shards is about 14 000."""
MAX_CURSOR_SHARDS = 256
"""Most shard positions one cursor may hold."""
_CURSOR_VERSION = "1"
_MAX_ID_PART = 2**64 - 1
_IDENTITY = re.compile(r"[0-9A-Za-z_-]{1,64}")
_STREAM_ID = re.compile(r"(\d{1,20})-(\d{1,20})")
_CURSOR_ITEM = re.compile(r"([0-9A-Za-z_-]{1,64})=(\d{1,20})-(\d{1,20}):(\d{1,20})")
_BASE64URL = re.compile(r"[0-9A-Za-z_-]+")
SHARD_IDENTITY_BYTES = 8
"""Random bytes of a new shard identity (written as 16 hex digits)."""


class StreamId(NamedTuple):
    """A Redis stream entry id: milliseconds and sequence number, ordered as Redis orders them."""

    ms: int
    seq: int

    @classmethod
    def parse(cls, text: str) -> StreamId:
        """The id of Redis text ``<ms>-<seq>``.

        Raises:
            ValueError: not a complete stream id.
        """
        match = _STREAM_ID.fullmatch(text)
        if match is None:
            raise ValueError(f"not a stream id: {text!r}")
        ms, seq = int(match.group(1)), int(match.group(2))
        if ms > _MAX_ID_PART or seq > _MAX_ID_PART:
            raise ValueError(f"stream id out of range: {text!r}")
        return cls(ms, seq)

    def __str__(self) -> str:
        """Redis's text form, ``<ms>-<seq>``."""
        return f"{self.ms}-{self.seq}"

    def previous(self) -> StreamId:
        """The greatest id below this one (ZERO_ID for ZERO_ID)."""
        if self.seq:
            return StreamId(self.ms, self.seq - 1)
        if self.ms:
            return StreamId(self.ms - 1, _MAX_ID_PART)
        return self


ZERO_ID = StreamId(0, 0)
"""Before every entry of a stream."""


class Position(NamedTuple):
    """A watcher's place in one shard's stream: the last entry id it passed, and `added`, how many
    entries the stream had ever received up to and including that id.

    `added` counts like Redis's ``entries-added``, so comparing it with what trimming removed
    (``entries-added - length``, XINFO STREAM) tells exactly whether an entry after the position was
    trimmed, even when the position's own entry is gone.
    """

    id: StreamId
    added: int


class EventType(enum.IntEnum):
    """What happened to a user session; values match the proto's EventType (0 is a checkpoint there)."""

    CREATED = 1
    REFRESHED = 2
    CLIENT_ATTACHED = 3
    CLIENT_DETACHED = 4
    LOGGED_OUT = 5
    REVOKED = 6
    EXPIRED = 7

    @property
    def stream_name(self) -> str:
        """The name the stream's ``t`` field uses (``client_attached``...)."""
        return self.name.lower()


_TYPES_BY_STREAM_NAME = {t.stream_name: t for t in EventType}


@dataclass(frozen=True, kw_only=True)
class SessionEvent:
    """One change of a user session, appended to its shard's event stream by the script that made it.

    `id` is unique across shards (``<shard identity>/<stream id>``). `cursor` is set on events a
    watch delivers: the position in every shard right after this event, to resume from; it is empty
    on an event decoded straight from a stream entry.
    """

    id: str
    type: EventType
    realm: str
    user_id: str
    session_id: str
    offline: bool = False
    client_ids: tuple[str, ...] = ()
    reason: str = ""
    at_ms: int = 0
    deadline_ms: int = 0
    cursor: str = ""


def decode_entry(identity: str, entry_id: str, fields: Mapping[str, str]) -> SessionEvent:
    """The event of one stream entry of the shard named `identity`.

    Args:
        identity: the shard's identity (see `validate_shard_identity`).
        entry_id: the entry's stream id.
        fields: the entry's fields (absent fields are empty, see storage/keys.py).

    Returns:
        The decoded event, `cursor` empty.

    Raises:
        ValueError: the entry is not an event (unknown type, bad numbers or client list).
    """
    etype = _TYPES_BY_STREAM_NAME.get(fields.get("t", ""))
    if etype is None:
        raise ValueError(f"unknown event type {fields.get('t', '')!r} in entry {entry_id}")
    return SessionEvent(
        id=f"{identity}/{entry_id}",
        type=etype,
        realm=fields.get("r", ""),
        user_id=fields.get("u", ""),
        session_id=fields.get("s", ""),
        offline=fields.get("o", "") == "1",
        client_ids=_client_ids(fields.get("c", ""), entry_id),
        reason=fields.get("why", ""),
        at_ms=_int_field(fields, "at", entry_id),
        deadline_ms=_int_field(fields, "dl", entry_id),
    )


def _int_field(fields: Mapping[str, str], name: str, entry_id: str) -> int:
    text = fields.get(name, "")
    if not text:
        return 0
    try:
        return int(text)
    except ValueError:
        pass
    # A Lua number may reach XADD in float form ("1.0e+13"); a whole value in it is still fine.
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value.is_integer():
        raise ValueError(f"field {name!r} of entry {entry_id} is not a whole number")
    return int(value)


def _client_ids(text: str, entry_id: str) -> tuple[str, ...]:
    if not text:
        return ()
    try:
        value = json.loads(text)
    except ValueError:
        raise ValueError(f"field 'c' of entry {entry_id} is not JSON") from None
    # Lua's cjson writes an empty table as {}: that is no clients too.
    if value == {}:
        return ()
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        raise ValueError(f"field 'c' of entry {entry_id} is not a list of client ids")
    return tuple(value)


@dataclass(frozen=True, kw_only=True)
class EventFilter:
    """Which events a watcher wants; an empty set means no restriction on that field."""

    realms: frozenset[str] = frozenset()
    types: frozenset[EventType] = frozenset()
    user_id: str = ""

    def __post_init__(self) -> None:
        """Check the combination.

        Raises:
            InvalidArgumentError: a user id without a realm (user ids are unique only within one).
        """
        if self.user_id and not self.realms:
            raise InvalidArgumentError("user_id needs realms: user ids are only unique within a realm")

    def matches(self, event: SessionEvent) -> bool:
        """Whether the watcher wants `event`."""
        return (
            (not self.realms or event.realm in self.realms)
            and (not self.types or event.type in self.types)
            and (not self.user_id or event.user_id == self.user_id)
        )


def encode_cursor(positions: Mapping[str, Position]) -> str:
    """The opaque cursor of a watcher's place: shard identity -> its position there.

    Raises:
        ValueError: an identity that `validate_shard_identity` refuses.
    """
    for identity in positions:
        validate_shard_identity(identity)
    items = (f"{i}={positions[i].id}:{positions[i].added}" for i in sorted(positions))
    text = ";".join([_CURSOR_VERSION, *items])
    return base64.urlsafe_b64encode(text.encode("ascii")).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str) -> dict[str, Position]:
    """The position an opaque cursor stands for (the inverse of `encode_cursor`).

    Raises:
        InvalidArgumentError: not a cursor this service wrote (malformed, too long, duplicate shard).
    """
    if not cursor:
        raise InvalidArgumentError("after_cursor must not be empty")
    if len(cursor) > MAX_CURSOR_LENGTH:
        raise InvalidArgumentError(f"cursor is longer than {MAX_CURSOR_LENGTH} characters")
    if not _BASE64URL.fullmatch(cursor) or len(cursor) % 4 == 1:
        raise InvalidArgumentError("malformed cursor: pass an Event.cursor unchanged")
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError):
        raise InvalidArgumentError("malformed cursor: pass an Event.cursor unchanged") from None
    version, *items = text.split(";")
    if version != _CURSOR_VERSION:
        raise InvalidArgumentError("malformed cursor: unknown version")
    if len(items) > MAX_CURSOR_SHARDS:
        raise InvalidArgumentError(f"cursor names more than {MAX_CURSOR_SHARDS} shards")
    positions: dict[str, Position] = {}
    for item in items:
        match = _CURSOR_ITEM.fullmatch(item)
        if match is None:
            raise InvalidArgumentError("malformed cursor: pass an Event.cursor unchanged")
        identity = match.group(1)
        ms, seq, added = (int(match.group(g)) for g in (2, 3, 4))
        if identity in positions:
            raise InvalidArgumentError("malformed cursor: a shard appears twice")
        if max(ms, seq, added) > _MAX_ID_PART:
            raise InvalidArgumentError("malformed cursor: position out of range")
        positions[identity] = Position(StreamId(ms, seq), added)
    return positions


def new_shard_identity() -> str:
    """A fresh random shard identity (16 hex digits), for ``SET ss:shard <identity> NX``."""
    return secrets.token_hex(SHARD_IDENTITY_BYTES)


def validate_shard_identity(value: str) -> str:
    """Check a shard identity read from a shard (1 to 64 of ``[0-9A-Za-z_-]``).

    Returns:
        The value unchanged.

    Raises:
        ValueError: anything else (it could not be written into a cursor).
    """
    if not _IDENTITY.fullmatch(value):
        raise ValueError(f"not a shard identity: {value!r}")
    return value
