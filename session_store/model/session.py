"""Value objects of the session model and the validation of what callers may store in them."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from session_store.errors import InvalidArgumentError
from session_store.model.limits import (
    MAX_FIELD_LENGTH,
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
