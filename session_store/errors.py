"""The one exception tree of session-store, shared by the server and the client.

::

    SessionStoreError                      (INTERNAL)
    ├── SessionNotFoundError               (NOT_FOUND)
    ├── SessionExistsError                 (ALREADY_EXISTS)
    ├── PreconditionFailedError            (FAILED_PRECONDITION)
    │   ├── StaleRefreshTokenError         (a refresh token older than its chain's newest)
    │   ├── RefreshTokenReuseError         (a refresh token used more than refreshTokenMaxReuse + 1 times)
    │   └── SessionNotActiveError          (a validated token's session or client session is not live)
    ├── LimitExceededError                 (RESOURCE_EXHAUSTED)
    │   ├── SessionLimitExceededError      (the user-session count limiter denied a new session)
    │   └── StoreMemoryLowError            (a shard is near its maxmemory: creates are refused)
    ├── InvalidArgumentError               (INVALID_ARGUMENT)
    │   └── InvalidTokenError              (a token to validate is malformed, unsigned or has bad claims)
    │       └── TokenExpiredError          (a token to validate has expired)
    ├── UnauthenticatedError               (UNAUTHENTICATED)
    ├── PermissionDeniedError              (PERMISSION_DENIED)
    ├── EventsTrimmedError                 (OUT_OF_RANGE: a watch position whose events were trimmed)
    └── UnavailableError                   (UNAVAILABLE, safe to retry)
        ├── PartitionMovedError            (the partition lives on another shard now)
        ├── PartitionFrozenError           (the partition is being moved; retry in milliseconds)
        └── ShardUnavailableError          (a Redis shard cannot be reached)

Each class carries its gRPC status code (as the name of a ``grpc.StatusCode`` member, so that this
module imports nothing from grpc) and a machine-readable ``reason`` that travels in the
``google.rpc.ErrorInfo`` detail of the status, so the client raises the same class the server did.
"""

from __future__ import annotations

from typing import ClassVar

ERROR_DOMAIN = "session-store"


class SessionStoreError(Exception):
    """Base of every error session-store raises on purpose."""

    code: ClassVar[str] = "INTERNAL"
    reason: ClassVar[str] = "INTERNAL"

    def __init__(self, message: str) -> None:
        """Store the message shown to the caller (never a secret, token or note value)."""
        super().__init__(message)
        self.message = message


class SessionNotFoundError(SessionStoreError):
    """The session (or client session) does not exist, has expired, or is in another realm."""

    code = "NOT_FOUND"
    reason = "SESSION_NOT_FOUND"


class SessionExistsError(SessionStoreError):
    """A caller-brought session id is already taken."""

    code = "ALREADY_EXISTS"
    reason = "SESSION_EXISTS"


class PreconditionFailedError(SessionStoreError):
    """The request is well formed but the stored state does not allow it."""

    code = "FAILED_PRECONDITION"
    reason = "PRECONDITION_FAILED"


class StaleRefreshTokenError(PreconditionFailedError):
    """Refresh-token rotation: the token is older than the newest one issued on its chain."""

    reason = "STALE_REFRESH_TOKEN"


class RefreshTokenReuseError(PreconditionFailedError):
    """Refresh-token rotation: the token was used more often than the realm allows."""

    reason = "REFRESH_TOKEN_REUSE_EXCEEDED"


class SessionNotActiveError(PreconditionFailedError):
    """Token validation: the token is genuine and current, but its session is not live.

    The user session is gone (logged out, revoked, expired), belongs to another user or started after
    the token was issued, or a required client session for the token's client is missing.
    """

    reason = "SESSION_NOT_ACTIVE"


class LimitExceededError(SessionStoreError):
    """A size or count limit would be exceeded (notes, client sessions)."""

    code = "RESOURCE_EXHAUSTED"
    reason = "LIMIT_EXCEEDED"


class SessionLimitExceededError(LimitExceededError):
    """The user-session count limiter (behaviour "deny new session") refused a new session."""

    reason = "SESSION_LIMIT_EXCEEDED"


class StoreMemoryLowError(LimitExceededError):
    """The memory guard refused a create: the shard's Redis is above the configured share of its
    `maxmemory`. Refresh, touch, update and logout keep working; creates work again once sessions
    expire or the shard gets more memory."""

    reason = "STORE_MEMORY_LOW"


class InvalidArgumentError(SessionStoreError):
    """The request itself is malformed: an empty, oversized or ill-formed field."""

    code = "INVALID_ARGUMENT"
    reason = "INVALID_ARGUMENT"


class InvalidTokenError(InvalidArgumentError):
    """Token validation: the token is not a JWS, uses a refused algorithm or unknown key, its signature
    does not verify, or a claim is missing or wrong. The message never quotes the token."""

    reason = "TOKEN_INVALID"


class TokenExpiredError(InvalidTokenError):
    """Token validation: the token's `exp` has passed, beyond the realm's leeway."""

    reason = "TOKEN_EXPIRED"


class UnauthenticatedError(SessionStoreError):
    """The caller did not prove who it is."""

    code = "UNAUTHENTICATED"
    reason = "UNAUTHENTICATED"


class PermissionDeniedError(SessionStoreError):
    """The caller may not act on this realm."""

    code = "PERMISSION_DENIED"
    reason = "PERMISSION_DENIED"


class EventsTrimmedError(SessionStoreError):
    """A watch cannot continue from its position: events after it were trimmed from a shard's stream.

    Nothing was delivered wrongly; the watcher fell behind (or resumed from too old a cursor) and must
    start again from now or from the oldest retained event, re-reading state it may have missed.
    """

    code = "OUT_OF_RANGE"
    reason = "EVENTS_TRIMMED"


class UnavailableError(SessionStoreError):
    """A transient failure: the same call may succeed when retried."""

    code = "UNAVAILABLE"
    reason = "UNAVAILABLE"


class PartitionMovedError(UnavailableError):
    """The partition is owned by another shard than the one asked."""

    reason = "PARTITION_MOVED"

    def __init__(self, message: str, *, epoch: int = 0) -> None:
        """Store the message and the map epoch the refusing shard knows (0 when not known)."""
        super().__init__(message)
        self.epoch = epoch


class PartitionFrozenError(UnavailableError):
    """The partition is being moved between shards; retry after a few milliseconds."""

    reason = "PARTITION_FROZEN"


class ShardUnavailableError(UnavailableError):
    """The Redis shard that owns the partition cannot be reached."""

    reason = "SHARD_UNAVAILABLE"


ERRORS_BY_REASON: dict[str, type[SessionStoreError]] = {
    cls.reason: cls
    for cls in (
        SessionStoreError,
        SessionNotFoundError,
        SessionExistsError,
        PreconditionFailedError,
        StaleRefreshTokenError,
        RefreshTokenReuseError,
        SessionNotActiveError,
        LimitExceededError,
        SessionLimitExceededError,
        StoreMemoryLowError,
        InvalidArgumentError,
        InvalidTokenError,
        TokenExpiredError,
        UnauthenticatedError,
        PermissionDeniedError,
        EventsTrimmedError,
        UnavailableError,
        PartitionMovedError,
        PartitionFrozenError,
        ShardUnavailableError,
    )
}
"""Reason string -> class; the client uses it to raise what the server raised."""
