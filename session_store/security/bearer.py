"""Callers' bearer JWTs: verify one (`authorization: Bearer <jwt>`) and map its claims to a Caller.

A token is accepted when its header's `alg` is on `SESSION_STORE_AUTH_JWT_ALGORITHMS` (public-key
algorithms only: never `none`, never HS*), its `kid` names a key of the JWKS file
(`SESSION_STORE_AUTH_JWT_KEYS_FILE`, read by `security/jwks.py`: public keys only, each key used only
with its own family of algorithms, re-read when a token names an unknown `kid`), the signature
verifies, `iss` is the configured issuer, `aud` contains the configured audience, `exp` has not
passed and `nbf` (when present) has, both within the leeway. `exp`, `iss`, `aud` and the identity
claim are required.

The caller is ``jwt:<identity claim>`` (default claim `sub`). Its grant comes from the token when it
carries the role claim (default `role`: read, write or admin) with the realms claim (default
`realms`: a list of realm names, or ``*``); a token without the role claim takes the callers file's
grant for its identity, and without one there it may do nothing (PERMISSION_DENIED).

Verified tokens are remembered (by a digest, up to `CACHE_SIZE`) until their `exp`, so a caller that
reuses its token pays for one signature check, not one per call; `exp` and `nbf` are still checked
on every call.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from session_store.config import AuthSettings
from session_store.errors import UnauthenticatedError
from session_store.security.grants import Caller, Grant, Role
from session_store.security.jwks import KeySet

JWKS_RELOAD_SECONDS = 30.0
"""Least time between two re-reads of the JWKS file (an unknown `kid` or a changed file triggers one)."""
CACHE_SIZE = 4096
"""Verified tokens remembered (least recently used dropped first)."""
MAX_TOKEN_BYTES = 16 * 1024
"""Longer bearer tokens are refused before any parsing."""

# pyjwt's exception -> what the caller is told (never the token itself). Most specific first.
_REASONS: tuple[tuple[type[jwt.PyJWTError], str], ...] = (
    (jwt.ExpiredSignatureError, "bearer token has expired"),
    (jwt.ImmatureSignatureError, "bearer token is not valid yet (nbf or iat in the future)"),
    (jwt.InvalidAudienceError, "bearer token is not for this audience"),
    (jwt.InvalidIssuerError, "bearer token is from another issuer"),
    (jwt.InvalidSignatureError, "bearer token signature does not verify"),
    (jwt.InvalidAlgorithmError, "bearer token algorithm is not accepted"),
)


@dataclass(frozen=True)
class _Verified:
    caller: Caller
    expires: float
    not_before: float


class BearerVerifier:
    """Verifies callers' bearer JWTs against the configured JWKS file, issuer and audience."""

    def __init__(
        self,
        settings: AuthSettings,
        callers: Mapping[str, Grant],
        *,
        now: Callable[[], float] = time.time,
    ) -> None:
        """Read the JWKS file now.

        Args:
            settings: the authentication settings (`jwt_keys_file` must be set).
            callers: the callers file's grants, for tokens without the role claim.
            now: the wall clock checked against `exp` and `nbf` of remembered tokens.

        Raises:
            SettingsError: the JWKS file cannot be read or holds a key that is not a public key.
        """
        if settings.jwt_keys_file is None:
            raise ValueError("BearerVerifier needs settings.jwt_keys_file")
        self._keys = KeySet("(callers)", settings.jwt_keys_file, reload_seconds=JWKS_RELOAD_SECONDS)
        self._algorithms = frozenset(settings.jwt_algorithms)
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self._leeway = settings.jwt_leeway_seconds
        self._identity_claim = settings.jwt_identity_claim
        self._realms_claim = settings.jwt_realms_claim
        self._role_claim = settings.jwt_role_claim
        self._callers = callers
        self._now = now
        self._cache: OrderedDict[bytes, _Verified] = OrderedDict()

    async def authenticate(self, token: str) -> Caller:
        """The caller a bearer token proves.

        Raises:
            UnauthenticatedError: the token is malformed, names an unknown key or a refused algorithm,
                does not verify, is expired or not yet valid, or has a wrong or missing claim.
        """
        if len(token) > MAX_TOKEN_BYTES:
            raise UnauthenticatedError("bearer token is too long")
        digest = hashlib.blake2b(token.encode(), digest_size=32).digest()
        known = self._cache.get(digest)
        if known is not None:
            now = self._now()
            if known.not_before - self._leeway <= now < known.expires + self._leeway:
                self._cache.move_to_end(digest)
                return known.caller
            del self._cache[digest]  # verified again below, which names what is wrong now
        verified = await self._verify(token)
        self._cache[digest] = verified
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return verified.caller

    async def _verify(self, token: str) -> _Verified:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise UnauthenticatedError("bearer token is not a signed JWT") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._algorithms:
            raise UnauthenticatedError("bearer token algorithm is not accepted")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise UnauthenticatedError("bearer token names no key (kid)")
        key = await self._keys.find(kid)
        if key is None:
            raise UnauthenticatedError("bearer token names an unknown key (kid)")
        if not key.usable_with(alg):
            raise UnauthenticatedError("bearer token algorithm does not fit its key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp", "iss", "aud", self._identity_claim]},
            )
        except jwt.MissingRequiredClaimError as exc:
            raise UnauthenticatedError(f"bearer token lacks the {exc.claim!r} claim") from None
        except jwt.PyJWTError as exc:
            reason = next(
                (text for kind, text in _REASONS if isinstance(exc, kind)), "bearer token is invalid"
            )
            raise UnauthenticatedError(reason) from None
        return _Verified(
            caller=self._caller(claims),
            expires=float(claims["exp"]),
            not_before=float(claims.get("nbf", 0)),
        )

    def _caller(self, claims: Mapping[str, Any]) -> Caller:
        subject = claims[self._identity_claim]
        if not isinstance(subject, str) or not subject:
            raise UnauthenticatedError(f"bearer token claim {self._identity_claim!r} is not a name")
        identity = f"jwt:{subject}"
        if self._role_claim not in claims:
            return Caller(identity, self._callers.get(identity))
        try:
            role = Role.parse(claims[self._role_claim])
        except ValueError:
            raise UnauthenticatedError(
                f"bearer token claim {self._role_claim!r} is not read, write or admin"
            ) from None
        realms = claims.get(self._realms_claim, [])
        if isinstance(realms, str):
            realms = realms.split()
        if not isinstance(realms, list) or not all(isinstance(r, str) and r for r in realms):
            raise UnauthenticatedError(f"bearer token claim {self._realms_claim!r} is not a list of realms")
        return Caller(identity, Grant.of(role, realms))
