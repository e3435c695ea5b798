"""Session ids: minting ids that encode their partition, and locating any id's home partition.

A minted id is Keycloak-shaped: 18 bytes in unpadded base64url (24 characters). Its first 12 bits are
the partition of the user it belongs to, the other 132 bits are random. Every id, minted or brought
by the caller, has a *home partition* (:func:`home_partition`): for a 24-character base64url id it is
the partition those 12 bits name, for any other id a hash of the id. A session stored outside its
id's home partition (a caller-brought id) is found through a pointer key in the home partition.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
from collections.abc import Callable

from session_store.errors import InvalidArgumentError
from session_store.model.limits import MAX_ID_LENGTH

PARTITION_COUNT = 4096
"""The fixed number of partitions. Never changes: every key's placement depends on it."""
_PARTITION_BITS = 12
MINTED_ID_BYTES = 18
MINTED_ID_LENGTH = 24
_BASE64URL = re.compile(r"^[A-Za-z0-9_-]{24}$")
_BAD_ID_CHARS = re.compile(r"[\s\x00-\x1f\x7f-\x9f]")


def _hash64(*parts: str) -> int:
    """A stable 64-bit hash of the parts (NUL-separated), the same on every node and run."""
    data = "\x00".join(parts).encode()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def user_partition(realm: str, user_id: str) -> int:
    """The partition that holds every key of one user of one realm."""
    return _hash64("u", realm, user_id) % PARTITION_COUNT


def lookup_partition(realm: str, kind: str, value: str) -> int:
    """The partition that holds a secondary lookup key (e.g. a broker session id) of a realm."""
    return _hash64(kind, realm, value) % PARTITION_COUNT


def mint_session_id(partition: int, randbytes: Callable[[int], bytes] = secrets.token_bytes) -> str:
    """A new random id whose first 12 bits name `partition`.

    Raises:
        ValueError: partition is outside 0..PARTITION_COUNT-1.
    """
    if not 0 <= partition < PARTITION_COUNT:
        raise ValueError(f"partition {partition} out of range")
    raw = bytearray(randbytes(MINTED_ID_BYTES))
    raw[0] = partition >> 4
    raw[1] = ((partition & 0x0F) << 4) | (raw[1] & 0x0F)
    return base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")


def home_partition(session_id: str) -> int:
    """The partition where an id's session, or the pointer to it, lives."""
    if _BASE64URL.match(session_id):
        try:
            raw = base64.urlsafe_b64decode(session_id)
        except (binascii.Error, ValueError):  # pragma: no cover - the regex admits only valid input
            raw = b""
        if len(raw) == MINTED_ID_BYTES:
            return (raw[0] << 4) | (raw[1] >> 4)
    return _hash64("id", session_id) % PARTITION_COUNT


def strip_route(session_id: str) -> str:
    """Drop a sticky-session `.route` suffix: everything from the first `.`, as Keycloak does."""
    return session_id.split(".", 1)[0]


def validate_id(value: str, what: str) -> str:
    """Check a realm, user, client or (already route-stripped) session id.

    Returns:
        The value unchanged.

    Raises:
        InvalidArgumentError: empty, longer than MAX_ID_LENGTH, or containing whitespace or a control
            character.
    """
    if not value:
        raise InvalidArgumentError(f"{what} must not be empty")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidArgumentError(f"{what} is longer than {MAX_ID_LENGTH} characters")
    if _BAD_ID_CHARS.search(value):
        raise InvalidArgumentError(f"{what} must not contain whitespace or control characters")
    return value


def normalize_session_id(value: str) -> str:
    """Strip a route suffix and validate what remains as a session id.

    Raises:
        InvalidArgumentError: the id is empty once the route is stripped, or is otherwise invalid.
    """
    if not value:
        raise InvalidArgumentError("session_id must not be empty")
    return validate_id(strip_route(value), "session_id")
