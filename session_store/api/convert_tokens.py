"""TokenValidation proto messages <-> token values; every ValidateTokenRequest field is checked on its
way in.

Shared by the servicer and both clients, so it imports no server-side module (no keys, no Redis).
"""

from __future__ import annotations

from dataclasses import dataclass

from session_store.api import convert
from session_store.errors import InvalidArgumentError
from session_store.model.token import MAX_AUDIENCE_LENGTH, MAX_TOKEN_LENGTH, TokenKind, ValidatedToken
from session_store.v1 import tokens_pb2 as pb


@dataclass(frozen=True, kw_only=True)
class TokenCheck:
    """A validated ValidateTokenRequest. Its repr leaves the token out: requests never reach a log."""

    realm: str
    token: str
    audience: str
    kind: TokenKind
    require_client_session: bool

    def __repr__(self) -> str:
        """Everything but the token."""
        return (
            f"TokenCheck(realm={self.realm!r}, audience={self.audience!r}, kind={self.kind.name}, "
            f"require_client_session={self.require_client_session})"
        )


def token_check(request: pb.ValidateTokenRequest) -> TokenCheck:
    """The checked content of a ValidateToken request.

    Raises:
        InvalidArgumentError: an invalid realm, an empty or oversized token or audience, an unknown
            kind.
    """
    if not request.token:
        raise InvalidArgumentError("token must not be empty")
    if len(request.token) > MAX_TOKEN_LENGTH:
        raise InvalidArgumentError(f"token is longer than {MAX_TOKEN_LENGTH} characters")
    if len(request.audience) > MAX_AUDIENCE_LENGTH:
        raise InvalidArgumentError(f"audience is longer than {MAX_AUDIENCE_LENGTH} characters")
    if request.kind not in TokenKind._value2member_map_:
        raise InvalidArgumentError(f"kind {request.kind} is not a token kind")
    return TokenCheck(
        realm=convert.realm(request.realm),
        token=request.token,
        audience=request.audience,
        kind=TokenKind(request.kind),
        require_client_session=request.require_client_session,
    )


def validated_to_proto(v: ValidatedToken) -> pb.ValidatedToken:
    """The reply message of a validated token."""
    return pb.ValidatedToken(
        subject=v.subject,
        session_id=v.session_id,
        client_id=v.client_id,
        expires_at=v.expires_at,
        scope=v.scope,
        kind=pb.TokenKind.ValueType(int(v.kind)),
        offline=v.offline,
    )


def validated_from_proto(m: pb.ValidatedToken) -> ValidatedToken:
    """A validated token from its reply message."""
    return ValidatedToken(
        subject=m.subject,
        session_id=m.session_id,
        client_id=m.client_id,
        expires_at=m.expires_at,
        scope=m.scope,
        kind=TokenKind(m.kind),
        offline=m.offline,
    )
