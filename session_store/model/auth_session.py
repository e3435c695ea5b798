"""Value objects of authentication sessions (Keycloak §1.4) and the validation of what callers send.

A root authentication session stands for one browser; each browser tab is one
:class:`AuthenticationSession`, bound to one client. Times are epoch seconds, `expires_at_ms` is epoch
ms. A root dies at ``(timestamp + auth_session_lifespan(policy))`` seconds; every change sets its
timestamp to now.
"""

from __future__ import annotations

import base64
import enum
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from session_store.errors import InvalidArgumentError
from session_store.model.ids import strip_route, validate_id
from session_store.model.limits import (
    MAX_AUTH_NOTE_VALUE_LENGTH,
    MAX_AUTH_NOTES,
    MAX_CLIENT_SCOPES,
    MAX_EXECUTION_STATUSES,
    MAX_REQUIRED_ACTIONS,
)
from session_store.model.session import validate_note_name, validate_redirect_uri, validate_text

TAB_ID_BYTES = 8
"""Random bytes of a tab id (Keycloak: base64url of 8 bytes, 11 characters)."""


class ExecutionStatus(enum.IntEnum):
    """Keycloak's CommonClientSessionModel.ExecutionStatus; Keycloak's index + 1. Values match the proto."""

    UNSPECIFIED = 0
    FAILED = 1
    SUCCESS = 2
    SETUP_REQUIRED = 3
    ATTEMPTED = 4
    SKIPPED = 5
    CHALLENGED = 6
    EVALUATED_TRUE = 7
    EVALUATED_FALSE = 8


@dataclass(frozen=True, kw_only=True)
class AuthenticationSession:
    """One browser tab's login in progress, bound to one client. Sets come back sorted."""

    tab_id: str
    root_id: str
    client_id: str
    timestamp: int = 0
    redirect_uri: str = ""
    action: str = ""
    protocol: str = ""
    authenticated_user_id: str = ""
    """Empty: no authenticated user yet."""
    execution_status: Mapping[str, ExecutionStatus] = field(default_factory=dict)
    required_actions: tuple[str, ...] = ()
    client_scopes: tuple[str, ...] = ()
    user_session_notes: Mapping[str, str] = field(default_factory=dict)
    auth_notes: Mapping[str, str] = field(default_factory=dict)
    client_notes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class RootAuthenticationSession:
    """A live root authentication session (one browser) with its tabs, keyed by tab id."""

    id: str
    realm: str
    timestamp: int
    tabs: Mapping[str, AuthenticationSession] = field(default_factory=dict)
    expires_at_ms: int = 0


@dataclass(frozen=True, kw_only=True)
class AuthenticationSessionRemoval:
    """What removing a tab did: `root_removed` when it was the last tab and the root went with it."""

    removed: bool
    root_removed: bool = False


def _names(values: Iterable[str], what: str, limit: int) -> tuple[str, ...]:
    """Validated names, duplicates dropped (order kept), at most `limit` of them."""
    result = tuple(dict.fromkeys(values))
    if len(result) > limit:
        raise InvalidArgumentError(f"{what}: at most {limit} names")
    for name in result:
        validate_note_name(name, what)
    return result


def _notes(notes: Mapping[str, str], what: str) -> dict[str, str]:
    """Validated notes of a tab (tab notes may be longer than user-session notes)."""
    if len(notes) > MAX_AUTH_NOTES:
        raise InvalidArgumentError(f"{what}: at most {MAX_AUTH_NOTES} notes")
    for name, value in notes.items():
        validate_note_name(name, what)
        validate_text(value, f"{what}[{name[:40]}]", MAX_AUTH_NOTE_VALUE_LENGTH)
    return dict(notes)


def _optional(value: str | None, check: Callable[[str], str]) -> str | None:
    return None if value is None else check(value)


@dataclass(frozen=True, kw_only=True)
class AuthenticationSessionUpdate:
    """Every change one UpdateAuthenticationSession applies to a tab, validated on construction.

    None (or empty) means no change. Order of application: fields; execution statuses cleared, then
    set; required actions removed, then added; client scopes replaced when `client_scopes` is not
    None; for each note map, names removed (auth notes: all cleared when `clear_auth_notes`), then
    notes set. So a name both removed and set ends up set.

    Raises:
        InvalidArgumentError: an oversized or ill-formed value, too many names or notes, or an
            execution status that is UNSPECIFIED or unknown.
    """

    redirect_uri: str | None = None
    action: str | None = None
    protocol: str | None = None
    authenticated_user_id: str | None = None
    """"" clears the authenticated user."""
    set_execution_status: Mapping[str, ExecutionStatus] = field(default_factory=dict)
    clear_execution_status: tuple[str, ...] = ()
    add_required_actions: tuple[str, ...] = ()
    remove_required_actions: tuple[str, ...] = ()
    client_scopes: tuple[str, ...] | None = None
    set_user_session_notes: Mapping[str, str] = field(default_factory=dict)
    remove_user_session_notes: tuple[str, ...] = ()
    set_auth_notes: Mapping[str, str] = field(default_factory=dict)
    remove_auth_notes: tuple[str, ...] = ()
    clear_auth_notes: bool = False
    set_client_notes: Mapping[str, str] = field(default_factory=dict)
    remove_client_notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """Validate and normalise every part (names deduplicated, maps copied)."""
        fix = object.__setattr__  # frozen: normalised values are set once, here
        fix(self, "redirect_uri", _optional(self.redirect_uri, validate_redirect_uri))
        fix(self, "action", _optional(self.action, lambda v: validate_text(v, "action")))
        fix(self, "protocol", _optional(self.protocol, lambda v: validate_text(v, "protocol")))
        if self.authenticated_user_id:
            validate_id(self.authenticated_user_id, "authenticated_user_id")
        statuses = dict(self.set_execution_status)
        _names(statuses, "set_execution_status", MAX_EXECUTION_STATUSES)
        for name, status in statuses.items():
            statuses[name] = execution_status(status, f"set_execution_status[{name[:40]}]")
        fix(self, "set_execution_status", statuses)
        fix(
            self,
            "clear_execution_status",
            _names(self.clear_execution_status, "clear_execution_status", MAX_EXECUTION_STATUSES),
        )
        for name in ("add_required_actions", "remove_required_actions"):
            fix(self, name, _names(getattr(self, name), name, MAX_REQUIRED_ACTIONS))
        if self.client_scopes is not None:
            fix(self, "client_scopes", _names(self.client_scopes, "client_scopes", MAX_CLIENT_SCOPES))
        for kind in ("user_session_notes", "auth_notes", "client_notes"):
            fix(self, f"set_{kind}", _notes(getattr(self, f"set_{kind}"), f"set_{kind}"))
            fix(
                self,
                f"remove_{kind}",
                _names(getattr(self, f"remove_{kind}"), f"remove_{kind}", MAX_AUTH_NOTES),
            )


def execution_status(value: int, what: str = "execution status") -> ExecutionStatus:
    """A known, specified execution status.

    Raises:
        InvalidArgumentError: UNSPECIFIED (0) or not a known status.
    """
    try:
        status = ExecutionStatus(value)
    except ValueError:
        raise InvalidArgumentError(f"{what}: {value} is not a known execution status") from None
    if status is ExecutionStatus.UNSPECIFIED:
        raise InvalidArgumentError(f"{what}: a status must be specified (clear it instead)")
    return status


def validate_root_id(value: str) -> str:
    """A root authentication session id with any `.route` suffix stripped, as for session ids.

    Raises:
        InvalidArgumentError: empty (once the route is stripped), too long, or with whitespace or
            control characters.
    """
    if not value:
        raise InvalidArgumentError("root_id must not be empty")
    return validate_id(strip_route(value), "root_id")


def validate_tab_id(value: str) -> str:
    """A tab id.

    Raises:
        InvalidArgumentError: empty, too long, or with whitespace or control characters.
    """
    return validate_id(value, "tab_id")


def mint_tab_id(randbytes: Callable[[int], bytes] = secrets.token_bytes) -> str:
    """A new tab id: base64url of 8 random bytes, unpadded (11 characters), as Keycloak makes them."""
    return base64.urlsafe_b64encode(randbytes(TAB_ID_BYTES)).decode().rstrip("=")
