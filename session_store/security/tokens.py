"""Token validation: is a Keycloak-issued JWT genuine, current, and backed by a live session?

Per realm, a file (``SESSION_STORE_TOKEN_REALMS_FILE``, YAML or JSON by its suffix) says which tokens
to accept::

    realms:
      my-realm:
        issuer: https://idp.example.com/realms/my-realm
        audiences: [account, orders-api]      # access tokens: `aud` must hold one of these
        refresh_audiences: [...]              # optional; refresh/offline tokens; default [issuer]
        algorithms: [RS256, ES256]            # optional; default [RS256]; never `none`
        leeway_seconds: 30                    # optional; default 0, at most 300
        jwks_file: my-realm.jwks.json         # public keys; relative paths are from this file
        hmac_secret_file: my-realm.secret     # optional; needed (only) to allow HS256/384/512

The realms file is read once, when the server is built; a realm's JWKS file is re-read on rotation
(session_store/security/jwks.py). Time claims are checked against the service's clock (the node's
wall clock, or the test clock of a ``--test-clock`` server), so tests move token expiry with the
same clock that expires sessions.

Nothing here stores, logs or echoes a token: error messages name the check that failed, never a
claim value taken from the token.
"""

from __future__ import annotations

import hmac
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import yaml
from jwt.types import Options

from session_store.config import TokenSettings
from session_store.errors import (
    InvalidArgumentError,
    InvalidTokenError,
    PreconditionFailedError,
    SessionNotActiveError,
    SessionNotFoundError,
    TokenExpiredError,
)
from session_store.model.clock import Clock
from session_store.model.ids import normalize_session_id, validate_id
from session_store.model.session import UserSession, UserSessionState
from session_store.model.token import KIND_BY_TYP, TokenKind, ValidatedToken, kind_accepted
from session_store.security.jwks import (
    HMAC_SECRET_BYTES,
    SUPPORTED_ALGORITHMS,
    KeySet,
    PublicKey,
    TokenConfigError,
    load_hmac_secret,
    load_jwks,
)
from session_store.storage.sessions import SessionRepository

DEFAULT_ALGORITHMS = ("RS256",)
"""Keycloak's default signature algorithm."""
MAX_LEEWAY_SECONDS = 300
_REALM_FIELDS = frozenset(
    {
        "issuer",
        "audiences",
        "refresh_audiences",
        "algorithms",
        "leeway_seconds",
        "jwks_file",
        "hmac_secret_file",
    }
)
_SIGNATURE_ONLY: Options = {
    # Claims are checked below, against the service's clock and the realm's rules; pyjwt would use
    # the wall clock.
    "verify_signature": True,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": False,
    "verify_iss": False,
    "verify_sub": False,
    "verify_jti": False,
    "require": [],
}
_ENDED_STATES = frozenset(
    {UserSessionState.LOGGING_OUT, UserSessionState.LOGGED_OUT, UserSessionState.LOGGED_OUT_UNCONFIRMED}
)
"""A session in one of these states is on its way out: its tokens no longer validate."""


@dataclass(frozen=True, kw_only=True)
class RealmTokenConfig:
    """What one realm's tokens must satisfy (a realms-file entry, paths resolved)."""

    realm: str
    issuer: str
    audiences: tuple[str, ...]
    refresh_audiences: tuple[str, ...]
    algorithms: frozenset[str]
    leeway_seconds: int = 0
    jwks_file: Path | None = None
    hmac_secret_file: Path | None = None


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise TokenConfigError(f"{where}: must be a non-empty list of non-empty strings")
    return tuple(value)


def _path(value: Any, base: Path, where: str) -> Path:
    if not isinstance(value, str) or not value:
        raise TokenConfigError(f"{where}: must be a file path")
    return base / value


def parse_realm(realm: str, entry: Any, base: Path, where: str) -> RealmTokenConfig:
    """One realm's entry of a realms file.

    Raises:
        TokenConfigError: a field is unknown, missing or malformed; an algorithm is not supported
            (`none` never is); HS* allowed without `hmac_secret_file`; no `jwks_file` while an
            asymmetric algorithm is allowed.
    """
    where = f"{where}: realm {realm!r}"
    try:
        validate_id(realm, "realm")
    except InvalidArgumentError as exc:
        raise TokenConfigError(f"{where}: {exc.message}") from None
    if not isinstance(entry, dict):
        raise TokenConfigError(f"{where}: must be a mapping")
    unknown = sorted(set(entry) - _REALM_FIELDS)
    if unknown:
        raise TokenConfigError(f"{where}: unknown field(s) {', '.join(map(str, unknown))}")
    issuer = entry.get("issuer")
    if not isinstance(issuer, str) or not issuer:
        raise TokenConfigError(f"{where}: issuer is required")
    algorithms = frozenset(
        _strings(entry.get("algorithms", list(DEFAULT_ALGORITHMS)), f"{where}: algorithms")
    )
    refused = sorted(algorithms - SUPPORTED_ALGORITHMS)
    if refused:
        raise TokenConfigError(
            f"{where}: algorithm(s) {', '.join(refused)} not supported "
            f"(one of {', '.join(sorted(SUPPORTED_ALGORITHMS))})"
        )
    leeway = entry.get("leeway_seconds", 0)
    if isinstance(leeway, bool) or not isinstance(leeway, int) or not 0 <= leeway <= MAX_LEEWAY_SECONDS:
        raise TokenConfigError(
            f"{where}: leeway_seconds must be an integer between 0 and {MAX_LEEWAY_SECONDS}"
        )
    hmac_allowed = algorithms & HMAC_SECRET_BYTES.keys()
    secret_file = (
        _path(entry["hmac_secret_file"], base, f"{where}: hmac_secret_file")
        if "hmac_secret_file" in entry
        else None
    )
    if hmac_allowed and secret_file is None:
        raise TokenConfigError(f"{where}: HS* algorithms need an explicit hmac_secret_file")
    jwks_file = _path(entry["jwks_file"], base, f"{where}: jwks_file") if "jwks_file" in entry else None
    if algorithms - hmac_allowed and jwks_file is None:
        raise TokenConfigError(
            f"{where}: jwks_file is required for {', '.join(sorted(algorithms - hmac_allowed))}"
        )
    return RealmTokenConfig(
        realm=realm,
        issuer=issuer,
        audiences=_strings(entry.get("audiences"), f"{where}: audiences"),
        refresh_audiences=_strings(entry.get("refresh_audiences", [issuer]), f"{where}: refresh_audiences"),
        algorithms=algorithms,
        leeway_seconds=leeway,
        jwks_file=jwks_file,
        hmac_secret_file=secret_file,
    )


def load_realms_file(path: Path) -> dict[str, RealmTokenConfig]:
    """Every realm of a realms file (`.json`: JSON; otherwise YAML), paths resolved from its folder.

    Raises:
        TokenConfigError: the file cannot be read or parsed, or an entry is invalid (see `parse_realm`).
    """
    where = f"token realms file {path}"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenConfigError(f"{where}: cannot be read ({exc})") from None
    try:
        document = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError):
        raise TokenConfigError(
            f"{where}: does not parse as {'JSON' if path.suffix == '.json' else 'YAML'}"
        ) from None
    if not isinstance(document, dict) or not isinstance(document.get("realms"), dict):
        raise TokenConfigError(f"{where}: expected a mapping with a `realms` mapping")
    if set(document) != {"realms"}:
        raise TokenConfigError(f"{where}: only `realms` is allowed at the top level")
    return {
        str(realm): parse_realm(str(realm), entry, path.parent, where)
        for realm, entry in document["realms"].items()
    }


def check_token_files(settings: TokenSettings) -> int:
    """Read the realms file and every key file it names, as the server will; the number of realms.

    The command line calls it before anything starts, so a bad file fails with a message, not later.

    Raises:
        TokenConfigError: a file is missing or malformed.
    """
    realms = load_realms_file(settings.realms_file) if settings.realms_file is not None else {}
    for config in realms.values():
        if config.jwks_file is not None:
            load_jwks(config.jwks_file)
        if config.hmac_secret_file is not None:
            load_hmac_secret(config.hmac_secret_file, config.algorithms)
    return len(realms)


@dataclass(frozen=True)
class _Claims:
    """The claims a validation goes on with, type-checked."""

    kind: TokenKind
    session_id: str
    subject: str
    client_id: str
    expires_at: int
    issued_at: float
    scope: str


def _number(payload: Mapping[str, Any], name: str) -> float | None:
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidTokenError(f"token claim {name} is not a number")
    return float(value)


def _string(payload: Mapping[str, Any], name: str) -> str:
    value = payload.get(name, "")
    if not isinstance(value, str):
        raise InvalidTokenError(f"token claim {name} is not a string")
    return value


def _kind(payload: Mapping[str, Any], expected: TokenKind) -> TokenKind:
    kind = KIND_BY_TYP.get(_string(payload, "typ").lower())
    if kind is None:
        raise InvalidTokenError("token type (typ) is not Bearer, Refresh or Offline")
    if not kind_accepted(expected, kind):
        raise InvalidTokenError(f"token kind is {kind.name.lower()}, expected {expected.name.lower()}")
    return kind


def _check_audience(payload: Mapping[str, Any], wanted: tuple[str, ...]) -> None:
    aud = payload.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud
    if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
        raise InvalidTokenError("token has no audience (aud)")
    if not set(wanted) & set(audiences):
        raise InvalidTokenError("token audience does not match")


def _check_times(payload: Mapping[str, Any], kind: TokenKind, now: float, leeway: int) -> tuple[int, float]:
    """(exp or 0, iat) of a token current at `now`."""
    exp = _number(payload, "exp")
    if exp is None and kind is not TokenKind.OFFLINE:
        raise InvalidTokenError("token has no expiry (exp)")
    if exp is not None and now >= exp + leeway:
        raise TokenExpiredError("token expired")
    nbf = _number(payload, "nbf")
    if nbf is not None and nbf > now + leeway:
        raise InvalidTokenError("token is not valid yet (nbf)")
    iat = _number(payload, "iat")
    if iat is None:
        raise InvalidTokenError("token has no issue time (iat)")
    if iat > now + leeway:
        raise InvalidTokenError("token was issued in the future (iat)")
    return (int(exp) if exp is not None else 0), iat


def _session_id(payload: Mapping[str, Any]) -> str:
    sid = _string(payload, "sid") or _string(payload, "session_state")
    if not sid:
        raise InvalidTokenError("token names no session (sid)")
    try:
        return normalize_session_id(sid)
    except InvalidArgumentError:
        raise InvalidTokenError("token session id (sid) is malformed") from None


def _client_id(payload: Mapping[str, Any], *, required: bool) -> str:
    client_id = _string(payload, "azp")
    if not client_id:
        if required:
            raise InvalidTokenError("token names no client (azp)")
        return ""
    try:
        return validate_id(client_id, "azp")
    except InvalidArgumentError:
        raise InvalidTokenError("token client (azp) is malformed") from None


def check_claims(
    payload: Mapping[str, Any],
    config: RealmTokenConfig,
    *,
    now: float,
    audience: str,
    expected: TokenKind,
    require_client: bool,
) -> _Claims:
    """Check a verified token's claims against a realm's rules at `now` (epoch s).

    Args:
        payload: the claims of a token whose signature verified.
        config: the realm's rules.
        now: the service clock's time, epoch seconds.
        audience: the audience `aud` must hold; empty: the realm's (access or refresh) audiences.
        expected: the kind the caller expects (UNSPECIFIED: any).
        require_client: an access token must name its client (`azp`) too.

    Raises:
        TokenExpiredError: `exp` is past (beyond the leeway).
        InvalidTokenError: any other claim is missing or wrong.
    """
    if _string(payload, "iss") != config.issuer:
        raise InvalidTokenError("token issuer is not the realm's")
    kind = _kind(payload, expected)
    if audience:
        _check_audience(payload, (audience,))
    else:
        _check_audience(payload, config.audiences if kind is TokenKind.ACCESS else config.refresh_audiences)
    expires_at, issued_at = _check_times(payload, kind, now, config.leeway_seconds)
    return _Claims(
        kind=kind,
        session_id=_session_id(payload),
        subject=_string(payload, "sub"),
        client_id=_client_id(payload, required=kind is not TokenKind.ACCESS or require_client),
        expires_at=expires_at,
        issued_at=issued_at,
        scope=_string(payload, "scope"),
    )


class _Realm:
    """A configured realm with its keys."""

    def __init__(self, config: RealmTokenConfig, keys: KeySet | None, secret: bytes | None) -> None:
        self.config = config
        self.keys = keys
        self.secret = secret


class TokenValidator:
    """Validates tokens of the configured realms: signature, claims, then the session in the store."""

    def __init__(
        self,
        realms: Mapping[str, RealmTokenConfig],
        sessions: SessionRepository,
        clock: Clock,
        *,
        keys_reload_seconds: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """Read every realm's keys now.

        Args:
            realms: realm -> its rules (usually from `load_realms_file`).
            sessions: where sessions are looked up.
            clock: the service's clock; time claims are checked against it.
            keys_reload_seconds: least time between two re-reads of a JWKS file.
            monotonic: the clock of that interval (tests pass their own).

        Raises:
            TokenConfigError: a JWKS or secret file cannot be read or is malformed.
        """
        self._sessions = sessions
        self._clock = clock
        self._realms = {
            name: _Realm(
                config,
                KeySet(name, config.jwks_file, reload_seconds=keys_reload_seconds, monotonic=monotonic)
                if config.jwks_file is not None
                else None,
                load_hmac_secret(config.hmac_secret_file, config.algorithms)
                if config.hmac_secret_file is not None
                else None,
            )
            for name, config in realms.items()
        }

    @classmethod
    def from_settings(
        cls, settings: TokenSettings, sessions: SessionRepository, clock: Clock
    ) -> TokenValidator:
        """The validator the settings describe (no realm when no realms file is set).

        Raises:
            TokenConfigError: the realms file or a key file is missing or malformed.
        """
        realms = load_realms_file(settings.realms_file) if settings.realms_file is not None else {}
        return cls(realms, sessions, clock, keys_reload_seconds=settings.keys_reload_seconds)

    def key_set(self, realm: str) -> KeySet | None:
        """A configured realm's JWKS keys (None: unknown realm or no JWKS file)."""
        found = self._realms.get(realm)
        return found.keys if found is not None else None

    async def validate_token(
        self,
        realm: str,
        token: str,
        *,
        audience: str = "",
        kind: TokenKind = TokenKind.UNSPECIFIED,
        require_client_session: bool = False,
    ) -> ValidatedToken:
        """Validate `token` for `realm`; see the ValidateToken RPC in protos/session_store/v1/tokens.proto.

        Raises:
            PreconditionFailedError: token validation is not configured for the realm.
            InvalidTokenError: bad algorithm, key, signature or claims.
            TokenExpiredError: the token has expired.
            SessionNotActiveError: the session (or the client session it needs) is not live.
            UnavailableError: the session's shard cannot be reached.
        """
        configured = self._realms.get(realm)
        if configured is None:
            raise PreconditionFailedError(f"token validation is not configured for realm {realm!r}")
        payload = await self._verify(configured, token)
        claims = check_claims(
            payload,
            configured.config,
            now=self._clock.approx_now_ms() / 1000,
            audience=audience,
            expected=kind,
            require_client=require_client_session,
        )
        need_client = claims.kind is not TokenKind.ACCESS or require_client_session
        session = await self._live_session(realm, claims)
        self._check_session(session, claims, configured.config.leeway_seconds, need_client=need_client)
        return ValidatedToken(
            subject=claims.subject or session.user_id,
            session_id=session.id,
            client_id=claims.client_id,
            expires_at=claims.expires_at,
            scope=claims.scope,
            kind=claims.kind,
            offline=session.offline,
        )

    async def _verify(self, realm: _Realm, token: str) -> dict[str, Any]:
        """The payload of a token whose algorithm, key and signature are the realm's."""
        try:
            header = jwt.get_unverified_header(token)
        except (jwt.PyJWTError, ValueError, TypeError):
            raise InvalidTokenError("token is not a compact JWS") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in realm.config.algorithms:
            raise InvalidTokenError("token algorithm is not allowed for the realm")
        key: PublicKey | bytes
        if alg in HMAC_SECRET_BYTES:
            if realm.secret is None:  # parse_realm makes this unreachable; kept as a guard
                raise InvalidTokenError("token algorithm is not allowed for the realm")
            key = realm.secret
        else:
            kid = header.get("kid")
            if not isinstance(kid, str) or not kid:
                raise InvalidTokenError("token header names no key (kid)")
            found = await realm.keys.find(kid) if realm.keys is not None else None
            if found is None:
                raise InvalidTokenError("token key (kid) is not one of the realm's")
            if not found.usable_with(alg):
                raise InvalidTokenError("token key (kid) does not fit the token's algorithm")
            key = found.key
        try:
            payload: dict[str, Any] = jwt.decode(token, key=key, algorithms=[alg], options=_SIGNATURE_ONLY)
        except jwt.InvalidSignatureError:
            raise InvalidTokenError("token signature does not verify") from None
        except (jwt.PyJWTError, ValueError, TypeError):
            raise InvalidTokenError("token is not a valid JWS") from None
        return payload

    async def _live_session(self, realm: str, claims: _Claims) -> UserSession:
        """The session the token names: online for access and refresh tokens, offline for offline ones;
        an access token whose online session is gone may be vouched for by the offline one."""
        offline = claims.kind is TokenKind.OFFLINE
        try:
            return await self._sessions.get_user_session(realm, claims.session_id, offline=offline)
        except SessionNotFoundError:
            if claims.kind is not TokenKind.ACCESS:
                raise SessionNotActiveError("the token's session is not active") from None
        try:
            return await self._sessions.get_user_session(realm, claims.session_id, offline=True)
        except SessionNotFoundError:
            raise SessionNotActiveError("the token's session is not active") from None

    @staticmethod
    def _check_session(session: UserSession, claims: _Claims, leeway: int, *, need_client: bool) -> None:
        """The session must be the token's: same id and user, started before the token, not ending."""
        # The id is a bearer secret of sorts (it is what a token points at): constant-time compare.
        if not hmac.compare_digest(session.id.encode(), claims.session_id.encode()):
            raise SessionNotActiveError("the token's session is not active")
        if session.state in _ENDED_STATES:
            raise SessionNotActiveError("the token's session is logging out")
        if claims.subject and claims.subject != session.user_id:
            raise SessionNotActiveError("the token's subject is not the session's user")
        if claims.issued_at + leeway < session.started:
            raise SessionNotActiveError("the token was issued before its session started")
        if not need_client:
            return
        client = session.client_sessions.get(claims.client_id)
        if client is None:
            raise SessionNotActiveError("the session has no live client session for the token's client")
        if claims.issued_at + leeway < client.started:
            raise SessionNotActiveError("the token was issued before its client session started")
