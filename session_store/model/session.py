"""Value objects of the session model and the validation of what callers may store in them."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from session_store.errors import InvalidArgumentError
from session_store.model.ids import validate_id
from session_store.model.limits import (
    MAX_FIELD_LENGTH,
    MAX_ID_LENGTH,
    MAX_NOTE_NAME_LENGTH,
    MAX_NOTE_VALUE_LENGTH,
    MAX_NOTES,
    MAX_REDIRECT_URI_LENGTH,
)


class UserSessionState(enum.IntEnum):
    """Keycloak's UserSessionModel.State; UNSPECIFIED is Keycloak's null. Values match the proto."""

    UNSPECIFIED = 0
    LOGGED_IN = 1
    LOGGING_OUT = 2
    LOGGED_OUT = 3
    LOGGED_OUT_UNCONFIRMED = 4


@dataclass(frozen=True, kw_only=True)
class ClientSession:
    """One client's part of a user session. Times are epoch seconds, `expires_at_ms` epoch ms."""

    client_id: str
    user_session_id: str
    offline: bool
    redirect_uri: str = ""
    action: str = ""
    protocol: str = ""
    timestamp: int = 0
    started: int = 0
    user_session_started: int = 0
    notes: Mapping[str, str] = field(default_factory=dict)
    expires_at_ms: int = 0
    evicted_session_ids: tuple[str, ...] = ()
    """Only on an attach with limits: the user's other sessions it terminated to make room."""


@dataclass(frozen=True, kw_only=True)
class UserSession:
    """A live user session (online or offline) with its live client sessions."""

    id: str
    realm: str
    user_id: str
    offline: bool
    login_username: str = ""
    ip_address: str = ""
    auth_method: str = ""
    remember_me: bool = False
    started: int = 0
    last_session_refresh: int = 0
    broker_session_id: str = ""
    broker_user_id: str = ""
    state: UserSessionState = UserSessionState.UNSPECIFIED
    notes: Mapping[str, str] = field(default_factory=dict)
    client_sessions: Mapping[str, ClientSession] = field(default_factory=dict)
    expires_at_ms: int = 0
    evicted_session_ids: tuple[str, ...] = ()
    """Only on a create with limits: the sessions it terminated to make room."""


class LimitBehavior(enum.IntEnum):
    """What the user-session count limiter does at a limit (Keycloak §4). Values match the proto."""

    DENY_NEW_SESSION = 0
    """Keycloak's default: refuse the new session."""
    TERMINATE_OLDEST_SESSION = 1
    """Log out the sessions refreshed longest ago to make room."""


@dataclass(frozen=True, kw_only=True)
class SessionLimits:
    """Keycloak's user-session count limiter, applied atomically by a create or an attach.

    A create counts the user's live online sessions against `realm_limit`, and those with a live
    client session for `client_id` against `client_limit` (a create with a client limit needs the
    client id); an attach that adds a new client session applies `client_limit` to the user's other
    sessions with the attached client (`client_id` may stay empty). 0 = no limit.

    Raises:
        InvalidArgumentError: a negative limit, or an invalid client id.
    """

    realm_limit: int = 0
    client_limit: int = 0
    client_id: str = ""
    behavior: LimitBehavior = LimitBehavior.DENY_NEW_SESSION

    def __post_init__(self) -> None:
        """Validate the limits (see the class docstring)."""
        if self.realm_limit < 0 or self.client_limit < 0:
            raise InvalidArgumentError("session limits must not be negative (0 means no limit)")
        if self.client_id:
            validate_id(self.client_id, "limits.client_id")

    @property
    def enabled(self) -> bool:
        """Whether any limit is on."""
        return self.realm_limit > 0 or self.client_limit > 0


@dataclass(frozen=True, kw_only=True)
class RefreshToken:
    """The refresh token a caller presents (Keycloak §3): what rotation needs of its claims.

    Raises:
        InvalidArgumentError: an invalid client id, an empty or oversized token id, an oversized
            reuse id, or no positive issued_at.
    """

    client_id: str
    """The token's azp."""
    token_id: str
    """The token's id (jti)."""
    reuse_id: str = ""
    """The chain id (reuse_id claim); empty for tokens issued before rotation was on."""
    issued_at: int
    """The token's iat, epoch seconds."""

    def __post_init__(self) -> None:
        """Validate the claims (see the class docstring)."""
        validate_id(self.client_id, "client_id")
        if not self.token_id:
            raise InvalidArgumentError("token_id must not be empty")
        validate_text(self.token_id, "token_id", MAX_ID_LENGTH)
        validate_text(self.reuse_id, "reuse_id", MAX_ID_LENGTH)
        if self.issued_at <= 0:
            raise InvalidArgumentError("issued_at (the token's iat, epoch seconds) is required")


@dataclass(frozen=True, kw_only=True)
class RefreshTokenUse:
    """The outcome of a refresh token use that rotation accepted."""

    use_count: int
    """Uses of this token so far, this one included (0 when the realm does not track rotation)."""
    client_session: ClientSession
    """The client session after the refresh (timestamp = the new token's iat)."""


@dataclass(frozen=True)
class RemovalProgress:
    """How far a bulk removal got: sessions (or client sessions) removed, partitions finished."""

    removed: int
    partitions_done: int
    partitions_total: int


@dataclass(frozen=True, kw_only=True)
class NewUserSession:
    """What a caller supplies to create a user session (already validated by `validate()`)."""

    realm: str
    user_id: str
    login_username: str = ""
    ip_address: str = ""
    auth_method: str = ""
    remember_me: bool = False
    broker_session_id: str = ""
    broker_user_id: str = ""
    state: UserSessionState = UserSessionState.UNSPECIFIED
    notes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class NewClientSession:
    """What a caller supplies to attach a client session."""

    client_id: str
    redirect_uri: str = ""
    action: str = ""
    protocol: str = ""
    notes: Mapping[str, str] = field(default_factory=dict)


def validate_text(value: str, what: str, limit: int = MAX_FIELD_LENGTH) -> str:
    """Check a free-text field's length and that it has no NUL.

    Raises:
        InvalidArgumentError: longer than `limit` or containing a NUL character.
    """
    if len(value) > limit:
        raise InvalidArgumentError(f"{what} is longer than {limit} characters")
    if "\x00" in value:
        raise InvalidArgumentError(f"{what} must not contain NUL characters")
    return value


def validate_notes(notes: Mapping[str, str], what: str = "notes") -> Mapping[str, str]:
    """Check note names and values against the limits.

    Raises:
        InvalidArgumentError: too many notes, an empty or oversized name, or an oversized value.
    """
    if len(notes) > MAX_NOTES:
        raise InvalidArgumentError(f"{what}: at most {MAX_NOTES} notes")
    for name, value in notes.items():
        validate_note_name(name, what)
        validate_text(value, f"{what}[{name[:40]}]", MAX_NOTE_VALUE_LENGTH)
    return notes


def validate_note_name(name: str, what: str = "notes") -> str:
    """Check one note name.

    Raises:
        InvalidArgumentError: empty, oversized, or containing a NUL.
    """
    if not name:
        raise InvalidArgumentError(f"{what}: a note name must not be empty")
    return validate_text(name, f"{what}: note name", MAX_NOTE_NAME_LENGTH)


def validate_note_names(names: Iterable[str], what: str = "remove_notes") -> list[str]:
    """Check a list of note names to remove.

    Raises:
        InvalidArgumentError: too many names, or an invalid name.
    """
    result = list(names)
    if len(result) > MAX_NOTES:
        raise InvalidArgumentError(f"{what}: at most {MAX_NOTES} names")
    for name in result:
        validate_note_name(name, what)
    return result


def validate_redirect_uri(value: str) -> str:
    """Check a redirect URI's length.

    Raises:
        InvalidArgumentError: longer than MAX_REDIRECT_URI_LENGTH or containing a NUL.
    """
    return validate_text(value, "redirect_uri", MAX_REDIRECT_URI_LENGTH)
