"""ValidateToken: Keycloak-shaped JWTs checked against a realm's keys and claims, then its live session."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from structlog.testing import capture_logs

from session_store import (
    AsyncSessionStoreClient,
    InvalidArgumentError,
    InvalidTokenError,
    PreconditionFailedError,
    SessionNotActiveError,
    SessionStoreClient,
    TokenExpiredError,
    TokenKind,
    UserSession,
    UserSessionState,
    ValidatedToken,
)
from session_store.config import Settings, ShardSettings, TokenSettings
from session_store.model.clock import TestClock
from session_store.server import TOKENS_SERVICE_NAME, SessionStoreServer
from tests.token_helpers import (
    SigningKey,
    ec_key,
    hand_made,
    rsa_key,
    sign,
    token_claims,
    write_jwks,
)

REALM_A = "realm-a"
REALM_B = "realm-b"
ISSUER_A = "https://idp.test/realms/realm-a"
ISSUER_B = "https://idp.test/realms/realm-b"
AUDIENCE = "orders-api"
SECRET_B = b"realm-b-shared-secret-of-32-bytes-or-more!"
REALMS_YAML = f"""
realms:
  {REALM_A}:
    issuer: {ISSUER_A}
    audiences: [{AUDIENCE}]
    jwks_file: realm-a.jwks.json
  {REALM_B}:
    issuer: {ISSUER_B}
    audiences: [{AUDIENCE}]
    algorithms: [ES256, RS256, HS256]
    leeway_seconds: 5
    jwks_file: keys/realm-b.jwks.json
    hmac_secret_file: keys/realm-b.secret
"""


@dataclasses.dataclass(frozen=True)
class Keys:
    """The test keys: realm A's current and next RSA key, an impostor with A's kid, realm B's EC key."""

    a1: SigningKey
    a2: SigningKey
    impostor: SigningKey
    b1: SigningKey


@pytest.fixture(scope="module")
def keys() -> Keys:
    """Keys generated once per module (RSA generation is slow on two cores)."""
    return Keys(
        a1=rsa_key("a-2026-1"), a2=rsa_key("a-2026-2"), impostor=rsa_key("a-2026-1"), b1=ec_key("b-1")
    )


@dataclasses.dataclass
class Realms:
    """The token configuration on disk: the realms file and the JWKS files it points at."""

    folder: Path
    keys: Keys

    @property
    def realms_file(self) -> Path:
        """The YAML realms file."""
        return self.folder / "realms.yaml"

    def rotate_a(self, *keys: SigningKey) -> None:
        """Replace realm A's JWKS file with these keys."""
        write_jwks(self.folder / "realm-a.jwks.json", *keys)


@pytest.fixture
def realms(tmp_path: Path, keys: Keys) -> Realms:
    """Realm A (RS256) and realm B (ES256, RS256, HS256 with a shared secret, 5 s leeway) on disk."""
    (tmp_path / "keys").mkdir()
    write_jwks(tmp_path / "realm-a.jwks.json", keys.a1)
    # Keycloak's certs endpoint also lists encryption keys: they must be skipped, not used.
    enc = {**keys.a2.jwk, "kid": "enc-1", "use": "enc", "alg": "RSA-OAEP"}
    write_jwks(tmp_path / "keys" / "realm-b.jwks.json", keys.b1, extra=[enc])
    (tmp_path / "keys" / "realm-b.secret").write_bytes(SECRET_B + b"\n")
    found = Realms(tmp_path, keys)
    found.realms_file.write_text(REALMS_YAML, encoding="utf-8")
    return found


@pytest.fixture
def token_settings(settings: Settings, realms: Realms) -> Settings:
    """The test settings with token validation on; JWKS files re-read on every unknown kid."""
    return dataclasses.replace(
        settings, tokens=TokenSettings(realms_file=realms.realms_file, keys_reload_seconds=0)
    )


@pytest.fixture
async def node(
    flushed_shards: tuple[ShardSettings, ...], clock: TestClock, token_settings: Settings
) -> AsyncIterator[SessionStoreServer]:
    """A service node with token validation, on the emptied shards."""
    srv = SessionStoreServer(token_settings, flushed_shards, clock=clock)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop(grace=0)


@pytest.fixture
async def store(node: SessionStoreServer) -> AsyncIterator[AsyncSessionStoreClient]:
    """A client of that node."""
    async with AsyncSessionStoreClient(f"127.0.0.1:{node.port}", max_attempts=1) as c:
        yield c


async def login(store: AsyncSessionStoreClient, realm: str = REALM_A, client: str = "app") -> UserSession:
    """A user session of user-1 with a client session for `client`."""
    session = await store.create_user_session(realm, "user-1")
    await store.attach_client_session(realm, session.id, client)
    return session


def now_s(clock: TestClock) -> int:
    """The test clock in epoch seconds."""
    return clock.now_ms // 1000


def claims_a(session: UserSession, clock: TestClock, **override: Any) -> dict[str, Any]:
    """Claims of a realm-A token for this session, issued now."""
    return token_claims(issuer=ISSUER_A, session_id=session.id, now=now_s(clock), **override)


class TestValidAccessToken:
    async def test_live_session_gives_the_minimal_claims(
        self, store: AsyncSessionStoreClient, clock: TestClock, keys: Keys
    ) -> None:
        """An access token of a live session gives its subject, session, client, expiry, scope, kind."""
        session = await login(store)
        token = sign(keys.a1, claims_a(session, clock))

        validated = await store.validate_token(REALM_A, token)

        expected = ValidatedToken(
            subject="user-1",
            session_id=session.id,
            client_id="app",
            expires_at=now_s(clock) + 300,
            scope="openid profile email",
            kind=TokenKind.ACCESS,
            offline=False,
        )
        assert expected == validated

    async def test_keycloak_session_state_claim_names_the_session(
        self, store: AsyncSessionStoreClient, clock: TestClock, keys: Keys
    ) -> None:
        """A token that carries Keycloak's older `session_state` instead of `sid` is found by it."""
        session = await login(store)
        token = sign(keys.a1, claims_a(session, clock, sid=None, session_state=session.id))

        assert session.id == (await store.validate_token(REALM_A, token)).session_id

    async def test_typ_is_compared_ignoring_case(
        self, store: AsyncSessionStoreClient, clock: TestClock, keys: Keys
    ) -> None:
        """`typ` "bearer" is an access token, as Keycloak reads it."""
        session = await login(store)
        token = sign(keys.a1, claims_a(session, clock, typ="bearer"))

        assert TokenKind.ACCESS == (await store.validate_token(REALM_A, token, kind=TokenKind.ACCESS)).kind

    async def test_es256_and_a_relative_key_path(
        self, store: AsyncSessionStoreClient, clock: TestClock, keys: Keys
    ) -> None:
        """Realm B's EC key, from a JWKS file named relative to the realms file, verifies its tokens."""
        session = await login(store, REALM_B)
        token = sign(keys.b1, token_claims(issuer=ISSUER_B, session_id=session.id, now=now_s(clock)))

        assert session.id == (await store.validate_token(REALM_B, token)).session_id

    async def test_sync_client(self, node: SessionStoreServer, clock: TestClock, keys: Keys) -> None:
        """The blocking client validates too and raises the same error classes."""

        def flow() -> None:  # blocking calls run in a thread: the server needs this event loop
            with SessionStoreClient(f"127.0.0.1:{node.port}") as sync_client:
                session = sync_client.create_user_session(REALM_A, "user-1")
                token = sign(keys.a1, claims_a(session, clock))
                assert session.id == sync_client.validate_token(REALM_A, token).session_id
                sync_client.remove_user_session(REALM_A, session.id)
                with pytest.raises(SessionNotActiveError):
                    sync_client.validate_token(REALM_A, token)

        await asyncio.to_thread(flow)


class TestLogout:
    async def test_logout_fails_the_next_validation_on_every_node(
        self,
        store: AsyncSessionStoreClient,
        flushed_shards: tuple[ShardSettings, ...],
        clock: TestClock,
        token_settings: Settings,
        keys: Keys,
    ) -> None:
        """After a logout on node 1, the next validation fails on node 1 and on a second node."""
        second = SessionStoreServer(token_settings, flushed_shards, clock=clock)
        await second.start()
        try:
            async with AsyncSessionStoreClient(f"127.0.0.1:{second.port}", max_attempts=1) as other:
                session = await login(store)
                token = sign(keys.a1, claims_a(session, clock))
                assert session.id == (await other.validate_token(REALM_A, token)).session_id

                assert await store.remove_user_session(REALM_A, session.id)

                with pytest.raises(SessionNotActiveError):
                    await other.validate_token(REALM_A, token)
                with pytest.raises(SessionNotActiveError):
                    await store.validate_token(REALM_A, token)
        finally:
            await second.stop(grace=0)

    async def test_revoking_all_of_a_users_sessions_fails_their_tokens(
        self, store: AsyncSessionStoreClient, clock: TestClock, keys: Keys
    ) -> None:
        """RemoveUserSessions (an admin's "log out all") makes every token of those sessions fail."""
        first, second = await login(store), await login(store)
        tokens = [sign(keys.a1, claims_a(s, clock)) for s in (first, second)]

        assert 2 == await store.remove_user_sessions(REALM_A, "user-1")

        for token in tokens:
            with pytest.raises(SessionNotActiveError):
                await store.validate_token(REALM_A, token)

    async def test_a_session_that_expires_fails_its_tokens(
        self, store: AsyncSessionStoreClient, clock: TestClock, keys: Keys
    ) -> None:
        """A session past its idle timeout no longer vouches for a token that has not expired itself."""
        session = await login(store)
        token = sign(keys.a1, claims_a(session, clock, lifetime=24 * 3600))

        clock.advance(1801)  # Keycloak's default SSO idle timeout is 30 minutes

        with pytest.raises(SessionNotActiveError):
            await store.validate_token(REALM_A, token)

    async def test_a_session_in_a_logging_out_state_fails_its_tokens(
        self, store: AsyncSessionStoreClient, clock: TestClock, keys: Keys
    ) -> None:
        """A backchannel logout in progress (state LOGGING_OUT) already stops the session's tokens."""
        session = await login(store)
        token = sign(keys.a1, claims_a(session, clock))
        await store.update_user_session(REALM_A, session.id, state=UserSessionState.LOGGING_OUT)

        with pytest.raises(SessionNotActiveError):
            await store.validate_token(REALM_A, token)


class TestRefreshAndOfflineTokens:
    async def test_refresh_token_needs_a_live_client_session_for_azp(
        self, store: AsyncSessionStoreClient, clock: TestClock, keys: Keys
    ) -> None:
        """A refresh token validates while its client session lives, and fails once it is detached."""
        session = await login(store)
        token = sign(keys.a1, claims_a(session, clock, typ="Refresh", audience=ISSUER_A))
        assert TokenKind.REFRESH == (await store.validate_token(REALM_A, token, kind=TokenKind.REFRESH)).kind

        assert await store.detach_client_session(REALM_A, session.id, "app")

        with pytest.raises(SessionNotActiveError, match="client session"):
            await store.validate_token(REALM_A, token)

    async def test_refresh_token_for_another_client_fails(
        self, store: AsyncSessionStoreClient, clock: TestClock, keys: Keys
    ) -> None:
        """A refresh token whose azp has no client session in the session fails."""
        session = await login(store)
        token = sign(keys.a1, claims_a(session, clock, typ="Refresh", audience=ISSUER_A, azp="other"))

        with pytest.raises(SessionNotActiveError):
            await store.validate_token(REALM_A, token)

    async def test_access_token_may_require_a_client_session(
        self, store: AsyncSessionStoreClient, clock: TestClock, keys: Keys
    ) -> None:
        """An access token needs no client session unless the caller asks for one (as introspection does)."""
        session = await store.create_user_session(REALM_A, "user-1")
        token = sign(keys.a1, claims_a(session, clock))

        assert "app" == (await store.validate_token(REALM_A, token)).client_id
        with pytest.raises(SessionNotActiveError):
            await store.validate_token(REALM_A, token, require_client_session=True)

    async def test_offline_token_checks_the_offline_session(
        self, store: AsyncSessionStoreClient, clock: TestClock, keys: Keys
    ) -> None:
        """An offline token (no exp) survives the online logout and fails once the offline session goes."""
        session = await login(store)
        await store.create_offline_session(REALM_A, session.id, ["app"])
        offline = sign(keys.a1, claims_a(session, clock, typ="Offline", audience=ISSUER_A, lifetime=None))
        access = sign(keys.a1, claims_a(session, clock))

        await store.remove_user_session(REALM_A, session.id)
        validated = await store.validate_token(REALM_A, offline, kind=TokenKind.REFRESH)
        # An access token whose online session is gone is vouched for by the offline one.
        via_offline = await store.validate_token(REALM_A, access)

        assert (TokenKind.OFFLINE, True, 0) == (validated.kind, validated.offline, validated.expires_at)
        assert (TokenKind.ACCESS, True) == (via_offline.kind, via_offline.offline)
        await store.remove_user_session(REALM_A, session.id, offline=True)
        for token in (offline, access):
            with pytest.raises(SessionNotActiveError):
                await store.validate_token(REALM_A, token)

    async def test_online_refresh_token_does_not_fall_back_to_the_offline_session(
        self, store: AsyncSessionStoreClient, clock: TestClock, keys: Keys
    ) -> None:
        """A "Refresh" token belongs to the online session: an offline twin does not keep it alive."""
        session = await login(store)
        await store.create_offline_session(REALM_A, session.id, ["app"])
        token = sign(keys.a1, claims_a(session, clock, typ="Refresh", audience=ISSUER_A))

        await store.remove_user_session(REALM_A, session.id)

        with pytest.raises(SessionNotActiveError):
            await store.validate_token(REALM_A, token)


class TestTimeClaims:
    async def test_expired_token_by_the_service_clock(
        self, store: AsyncSessionStoreClient, clock: TestClock, keys: Keys
    ) -> None:
        """`exp` is checked against the service's (test) clock: moved past exp, TOKEN_EXPIRED."""
        session = await login(store)
        token = sign(keys.a1, claims_a(session, clock, lifetime=60))
        await store.validate_token(REALM_A, token)

        clock.advance(60)

        with pytest.raises(TokenExpiredError):
            await store.validate_token(REALM_A, token)

    async def test_leeway_extends_exp(
        self, store: AsyncSessionStoreClient, clock: TestClock, keys: Keys
    ) -> None:
        """Realm B's 5 s leeway accepts a token 4 s past exp and refuses it 5 s past."""
        session = await login(store, REALM_B)
        token = sign(
            keys.b1, token_claims(issuer=ISSUER_B, session_id=session.id, now=now_s(clock), lifetime=60)
        )

        clock.advance(64)
        await store.validate_token(REALM_B, token)
        clock.advance(1)

        with pytest.raises(TokenExpiredError):
            await store.validate_token(REALM_B, token)

    async def test_not_yet_valid_and_future_tokens_fail(
        self, store: AsyncSessionStoreClient, clock: TestClock, keys: Keys
    ) -> None:
        """A token whose nbf or iat lies in the future is invalid."""
        session = await login(store)
        later = now_s(clock) + 60

        for claims in (claims_a(session, clock, nbf=later), claims_a(session, clock, iat=later)):
            with pytest.raises(InvalidTokenError):
                await store.validate_token(REALM_A, sign(keys.a1, claims))

    async def test_token_issued_before_its_session_started_fails(
        self, store: AsyncSessionStoreClient, clock: TestClock, keys: Keys
    ) -> None:
        """A token older than the session it names (a reused session id) does not validate."""
        session = await login(store)
        token = sign(keys.a1, claims_a(session, clock, iat=now_s(clock) - 10))

        with pytest.raises(SessionNotActiveError, match="before its session started"):
            await store.validate_token(REALM_A, token)


class TestClaims:
    @pytest.mark.parametrize(
        "override",
        [
            pytest.param({"iss": ISSUER_B}, id="other-issuer"),
            pytest.param({"aud": "someone-else"}, id="other-audience"),
            pytest.param({"aud": None}, id="no-audience"),
            pytest.param({"typ": "ID"}, id="id-token"),
            pytest.param({"typ": None}, id="no-typ"),
            pytest.param({"sid": None}, id="no-session"),
            pytest.param({"exp": None}, id="access-without-exp"),
            pytest.param({"exp": True}, id="boolean-exp"),
            pytest.param({"iat": None}, id="no-iat"),
            pytest.param({"sid": "has space"}, id="malformed-sid"),
        ],
    )
    async def test_wrong_or_missing_claims_are_invalid(
        self, store: AsyncSessionStoreClient, clock: TestClock, keys: Keys, override: dict[str, Any]
    ) -> None:
        """A validly signed token with a wrong or missing claim fails with TOKEN_INVALID."""
        session = await login(store)
        token = sign(keys.a1, claims_a(session, clock, **override))

        with pytest.raises(InvalidTokenError) as caught:
            await store.validate_token(REALM_A, token)
        assert type(caught.value) is InvalidTokenError

    async def test_expected_kind_must_match(
        self, store: AsyncSessionStoreClient, clock: TestClock, keys: Keys
    ) -> None:
        """A refresh token where an access token is expected fails, and the other way round."""
        session = await login(store)
        refresh = sign(keys.a1, claims_a(session, clock, typ="Refresh", audience=ISSUER_A))
        access = sign(keys.a1, claims_a(session, clock))

        with pytest.raises(InvalidTokenError, match="kind"):
            await store.validate_token(REALM_A, refresh, kind=TokenKind.ACCESS)
        with pytest.raises(InvalidTokenError, match="kind"):
            await store.validate_token(REALM_A, access, kind=TokenKind.REFRESH)

    async def test_refresh_token_audience_is_the_issuer(
        self, store: AsyncSessionStoreClient, clock: TestClock, keys: Keys
    ) -> None:
        """Refresh tokens carry the issuer as audience (Keycloak); the access audience is not enough."""
        session = await login(store)
        token = sign(keys.a1, claims_a(session, clock, typ="Refresh", audience=AUDIENCE))

        with pytest.raises(InvalidTokenError, match="audience"):
            await store.validate_token(REALM_A, token)

    async def test_requested_audience_replaces_the_realms(
        self, store: AsyncSessionStoreClient, clock: TestClock, keys: Keys
    ) -> None:
        """A request's audience must be in `aud`; the realm's audiences then do not count."""
        session = await login(store)
        both = sign(keys.a1, claims_a(session, clock, audience=[AUDIENCE, "billing-api"]))
        realm_only = sign(keys.a1, claims_a(session, clock))

        assert session.id == (await store.validate_token(REALM_A, both, audience="billing-api")).session_id
        with pytest.raises(InvalidTokenError, match="audience"):
            await store.validate_token(REALM_A, realm_only, audience="billing-api")

    async def test_subject_must_be_the_sessions_user(
        self, store: AsyncSessionStoreClient, clock: TestClock, keys: Keys
    ) -> None:
        """A token naming another user than the session's does not validate."""
        session = await login(store)
        token = sign(keys.a1, claims_a(session, clock, sub="user-2"))

        with pytest.raises(SessionNotActiveError, match="subject"):
            await store.validate_token(REALM_A, token)


class TestSignaturesAndKeys:
    async def test_signature_by_another_key_with_the_same_kid_fails(
        self, store: AsyncSessionStoreClient, clock: TestClock, keys: Keys
    ) -> None:
        """A token signed by a key the realm does not hold, under one of its kids, fails."""
        session = await login(store)
        token = sign(keys.impostor, claims_a(session, clock))

        with pytest.raises(InvalidTokenError, match="signature"):
            await store.validate_token(REALM_A, token)

    async def test_tampered_payload_fails(
        self, store: AsyncSessionStoreClient, clock: TestClock, keys: Keys
    ) -> None:
        """Changing the payload of a signed token breaks its signature."""
        session = await login(store)
        header, _, signature = sign(keys.a1, claims_a(session, clock)).split(".")
        forged = sign(keys.impostor, claims_a(session, clock, sub="admin")).split(".")[1]

        with pytest.raises(InvalidTokenError):
            await store.validate_token(REALM_A, f"{header}.{forged}.{signature}")

    async def test_alg_none_is_refused(
        self, store: AsyncSessionStoreClient, clock: TestClock, keys: Keys
    ) -> None:
        """An unsigned token (alg none) is refused whatever its claims."""
        session = await login(store)
        token = hand_made({"alg": "none", "kid": keys.a1.kid}, claims_a(session, clock))

        with pytest.raises(InvalidTokenError, match="algorithm"):
            await store.validate_token(REALM_A, token)

    async def test_hs256_signed_with_the_public_key_is_refused(
        self, store: AsyncSessionStoreClient, clock: TestClock, keys: Keys
    ) -> None:
        """Algorithm confusion: HS256 keyed with the realm's public key fails, HS256 allowed or not."""
        session_a = await login(store)
        session_b = await login(store, REALM_B)
        claims_b = token_claims(issuer=ISSUER_B, session_id=session_b.id, now=now_s(clock))
        header = {"alg": "HS256", "typ": "JWT"}
        confused_a = hand_made(
            {**header, "kid": keys.a1.kid}, claims_a(session_a, clock), hmac_key=keys.a1.public_pem()
        )
        confused_b = hand_made({**header, "kid": keys.b1.kid}, claims_b, hmac_key=keys.b1.public_pem())
        genuine_b = hand_made(header, claims_b, hmac_key=SECRET_B)

        with pytest.raises(InvalidTokenError, match="algorithm"):
            await store.validate_token(REALM_A, confused_a)
        with pytest.raises(InvalidTokenError, match="signature"):
            await store.validate_token(REALM_B, confused_b)
        assert session_b.id == (await store.validate_token(REALM_B, genuine_b)).session_id

    async def test_unknown_kid_then_rotation(
        self, store: AsyncSessionStoreClient, clock: TestClock, keys: Keys, realms: Realms
    ) -> None:
        """A token under a kid the realm lacks fails; once the key is added to the file, it validates."""
        session = await login(store)
        token = sign(keys.a2, claims_a(session, clock))
        with pytest.raises(InvalidTokenError, match="kid"):
            await store.validate_token(REALM_A, token)

        realms.rotate_a(keys.a1, keys.a2)

        assert session.id == (await store.validate_token(REALM_A, token)).session_id

    async def test_a_key_removed_from_the_file_stops_verifying(
        self, store: AsyncSessionStoreClient, clock: TestClock, keys: Keys, realms: Realms
    ) -> None:
        """Rotating a key out of the JWKS file makes its tokens fail once the file is looked at again."""
        session = await login(store)
        token = sign(keys.a1, claims_a(session, clock))
        await store.validate_token(REALM_A, token)

        realms.rotate_a(keys.a2)

        with pytest.raises(InvalidTokenError, match="kid"):
            await store.validate_token(REALM_A, token)

    async def test_encryption_keys_of_the_jwks_are_not_used(
        self, store: AsyncSessionStoreClient, clock: TestClock, keys: Keys
    ) -> None:
        """Realm B's JWKS lists an RSA `enc` key; an RS256 token signed with it under that kid fails."""
        session = await login(store, REALM_B)
        claims = token_claims(issuer=ISSUER_B, session_id=session.id, now=now_s(clock))
        token = sign(keys.a2, claims, kid="enc-1")

        with pytest.raises(InvalidTokenError, match="kid"):
            await store.validate_token(REALM_B, token)


class TestRealms:
    async def test_token_of_realm_a_presented_for_realm_b_fails(
        self, store: AsyncSessionStoreClient, clock: TestClock, keys: Keys
    ) -> None:
        """Realm A's token is refused by realm B (other keys and issuer), even naming a realm-B session."""
        session_b = await login(store, REALM_B)
        token = sign(keys.a1, token_claims(issuer=ISSUER_A, session_id=session_b.id, now=now_s(clock)))

        with pytest.raises(InvalidTokenError):
            await store.validate_token(REALM_B, token)

    async def test_a_session_of_another_realm_does_not_vouch(
        self, store: AsyncSessionStoreClient, clock: TestClock, keys: Keys
    ) -> None:
        """A genuine realm-A token naming a realm-B session fails: the session is looked up in realm A."""
        session_b = await login(store, REALM_B)
        token = sign(keys.a1, token_claims(issuer=ISSUER_A, session_id=session_b.id, now=now_s(clock)))

        with pytest.raises(SessionNotActiveError):
            await store.validate_token(REALM_A, token)

    async def test_unconfigured_realm_is_a_failed_precondition(
        self, store: AsyncSessionStoreClient, clock: TestClock, keys: Keys
    ) -> None:
        """A realm without token configuration answers FAILED_PRECONDITION, not a token error."""
        session = await login(store)
        token = sign(keys.a1, claims_a(session, clock))

        with pytest.raises(PreconditionFailedError, match="not configured") as caught:
            await store.validate_token("realm-c", token)
        assert type(caught.value) is PreconditionFailedError

    async def test_server_without_realms_file_refuses_every_realm(
        self, client: AsyncSessionStoreClient, clock: TestClock, keys: Keys
    ) -> None:
        """With SESSION_STORE_TOKEN_REALMS_FILE unset, ValidateToken is off for every realm."""
        session = await client.create_user_session(REALM_A, "user-1")

        with pytest.raises(PreconditionFailedError):
            await client.validate_token(REALM_A, sign(keys.a1, claims_a(session, clock)))


class TestRegistration:
    async def test_served_listed_and_healthy(self, node: SessionStoreServer) -> None:
        """TokenValidation is listed by reflection and reported SERVING by health."""
        async with grpc.aio.insecure_channel(f"127.0.0.1:{node.port}") as channel:
            reflection = reflection_pb2_grpc.ServerReflectionStub(channel)  # type: ignore[arg-type]  # aio channels work; stubs say sync only
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            names: set[str] = set()
            async for reply in reflection.ServerReflectionInfo(iter([request])):  # type: ignore[operator]  # untyped in the stubs
                names |= {s.name for s in reply.list_services_response.service}
            health = health_pb2_grpc.HealthStub(channel)
            status = await health.Check(health_pb2.HealthCheckRequest(service=TOKENS_SERVICE_NAME))  # type: ignore[attr-defined]  # the stubs lack the generated methods

        assert "session_store.v1.TokenValidation" == TOKENS_SERVICE_NAME
        assert TOKENS_SERVICE_NAME in names
        assert health_pb2.HealthCheckResponse.SERVING == status.status


class TestBadRequests:
    @pytest.mark.parametrize(
        ("realm", "token"),
        [
            pytest.param("", "a.b.c", id="no-realm"),
            pytest.param(REALM_A, "", id="no-token"),
            pytest.param(REALM_A, "x" * (16 * 1024 + 1), id="oversized-token"),
        ],
    )
    async def test_malformed_request_is_invalid_argument(
        self, store: AsyncSessionStoreClient, realm: str, token: str
    ) -> None:
        """An empty realm or token, or a token over 16 KiB, is a plain INVALID_ARGUMENT."""
        with pytest.raises(InvalidArgumentError) as caught:
            await store.validate_token(realm, token)
        assert type(caught.value) is InvalidArgumentError

    @pytest.mark.parametrize("token", ["not-a-jwt", "a.b.c", "a.b", "....", "eyJhbGciOiJSUzI1NiJ9.e30."])
    async def test_garbage_is_an_invalid_token(self, store: AsyncSessionStoreClient, token: str) -> None:
        """Anything that is not a verifiable JWS fails with TOKEN_INVALID."""
        with pytest.raises(InvalidTokenError):
            await store.validate_token(REALM_A, token)


class TestSecrecy:
    async def test_tokens_never_reach_logs_replies_or_redis(
        self,
        store: AsyncSessionStoreClient,
        clock: TestClock,
        keys: Keys,
        flushed_shards: tuple[ShardSettings, ...],
    ) -> None:
        """Validations that pass and fail log no token text, the reply holds none, and no shard stores one."""
        session = await login(store)
        good = sign(keys.a1, claims_a(session, clock))
        bad_signature = sign(keys.impostor, claims_a(session, clock))
        expired = sign(keys.a1, claims_a(session, clock, lifetime=-10))
        refresh = sign(keys.a1, claims_a(session, clock, typ="Refresh", audience=ISSUER_A, azp="other"))
        tokens = [good, bad_signature, expired, refresh]

        with capture_logs() as logs:
            validated = await store.validate_token(REALM_A, good)
            for token in tokens[1:]:
                with pytest.raises((InvalidTokenError, SessionNotActiveError)) as caught:
                    await store.validate_token(REALM_A, token)
                assert token not in str(caught.value)
            await store.remove_user_session(REALM_A, session.id)
            with pytest.raises(SessionNotActiveError):
                await store.validate_token(REALM_A, good)

        assert 5 == len([e for e in logs if e.get("method") == "ValidateToken"])  # the capture saw them
        logged = repr(logs)
        for token in tokens:
            assert token not in logged
            assert token.split(".")[2] not in logged  # not even the signature
        assert all(token.split(".")[2] not in repr(validated) for token in tokens)
        assert [] == [
            token for token in tokens if any(token in text for text in _everything_stored(flushed_shards))
        ]


def _everything_stored(shards: tuple[ShardSettings, ...]) -> Iterator[str]:
    """Every key and value on the shards, as text."""
    for shard in shards:
        with redis.Redis.from_url(shard.url) as conn:
            for key in conn.scan_iter():
                kind = conn.type(key).decode()
                yield repr(key)
                if kind == "string":
                    yield repr(conn.get(key))
                elif kind == "hash":
                    yield repr(conn.hgetall(key))
                elif kind == "zset":
                    yield repr(conn.zrange(key, 0, -1))
                elif kind == "set":
                    yield repr(conn.smembers(key))
                elif kind == "list":
                    yield repr(conn.lrange(key, 0, -1))
                elif kind == "stream":
                    yield repr(conn.xrange(key))
