"""Token validation's value objects: the kinds of Keycloak token and the minimal claims of a valid one."""

from __future__ import annotations

import enum
from dataclasses import dataclass

MAX_TOKEN_LENGTH = 16 * 1024
"""Longest token ValidateToken accepts, in characters (Keycloak's tokens are a few KiB at most)."""
MAX_AUDIENCE_LENGTH = 1024
"""Longest expected audience a request may name."""


class TokenKind(enum.IntEnum):
    """What a token is, from its `typ` claim. Values match the proto's TokenKind."""

    UNSPECIFIED = 0
    """In a request: any kind. Never the kind of a validated token."""
    ACCESS = 1
    """An access token: typ "Bearer"."""
    REFRESH = 2
    """A refresh token: typ "Refresh". Expected in a request, it also accepts offline tokens."""
    OFFLINE = 3
    """An offline token (the refresh token of an offline session): typ "Offline"."""


KIND_BY_TYP: dict[str, TokenKind] = {
    "bearer": TokenKind.ACCESS,
    "refresh": TokenKind.REFRESH,
    "offline": TokenKind.OFFLINE,
}
"""Lower-cased `typ` claim -> kind. Keycloak compares `typ` ignoring case; other types (ID, DPoP,
Logout…) are not validated here."""


def kind_accepted(expected: TokenKind, actual: TokenKind) -> bool:
    """Whether a token of kind `actual` satisfies a request that expects `expected`.

    UNSPECIFIED accepts every kind, REFRESH accepts refresh and offline tokens, the others only
    themselves.
    """
    if expected is TokenKind.UNSPECIFIED:
        return True
    if expected is TokenKind.REFRESH:
        return actual in (TokenKind.REFRESH, TokenKind.OFFLINE)
    return expected is actual


@dataclass(frozen=True, kw_only=True)
class ValidatedToken:
    """The minimal claims of a token that passed validation. Never the token itself."""

    subject: str
    """`sub`, or the session's user id when the token has none."""
    session_id: str
    """The user session the token belongs to (`sid`)."""
    client_id: str
    """The client it was issued to (`azp`); empty when an access token names none."""
    expires_at: int
    """Epoch seconds (`exp`); 0 when the token has none (an offline token without a maximum)."""
    scope: str
    """The `scope` claim as issued (space-separated)."""
    kind: TokenKind
    """Access, refresh or offline."""
    offline: bool
    """Whether the offline session vouched for it (always for offline tokens)."""
