"""UseRefreshToken: Keycloak's refresh-token rotation (keycloak-semantics.md §3) on real shards."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from session_store import (
    AsyncSessionStoreClient,
    InvalidArgumentError,
    RealmPolicy,
    RefreshTokenReuseError,
    RefreshTokenUse,
    SessionNotFoundError,
    StaleRefreshTokenError,
    UserSession,
)
from session_store.model.clock import TestClock
from session_store.model.limits import MAX_REFRESH_TOKEN_CHAINS
from tests.backends import BOTH_BACKENDS

pytestmark = BOTH_BACKENDS

REALM = "rotating"
"""A realm with revoke_refresh_token on (max reuse set per test)."""
PLAIN = "plain"
"""A realm with Keycloak's default: revoke_refresh_token off."""
RACERS = 50
RACE_TIMEOUT_SECONDS = 30.0


async def _rotating(client: AsyncSessionStoreClient, max_reuse: int) -> None:
    await client.set_realm_policy(
        RealmPolicy(realm=REALM, revoke_refresh_token=True, refresh_token_max_reuse=max_reuse)
    )


async def _login(client: AsyncSessionStoreClient, realm: str = REALM, *clients: str) -> UserSession:
    """A user session with client sessions (default: "app")."""
    session = await client.create_user_session(realm, "alice")
    for client_id in clients or ("app",):
        await client.attach_client_session(realm, session.id, client_id)
    return session


def _now_s(clock: TestClock) -> int:
    return clock.now_ms // 1000


class TestWithoutRotation:
    """revoke_refresh_token off (Keycloak's default): any live token refreshes, nothing is counted."""

    async def test_the_same_token_refreshes_again_and_again(
        self, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """Every use of one token on a live client session succeeds and reports no count."""
        session = await _login(client, PLAIN)
        iat = _now_s(clock)
        uses = []
        for _ in range(5):
            clock.advance(10)
            uses.append(await client.use_refresh_token(PLAIN, session.id, "app", "jti-1", issued_at=iat))

        assert [0] * 5 == [u.use_count for u in uses]
        assert _now_s(clock) == uses[-1].client_session.timestamp

    async def test_refresh_moves_the_client_and_user_session_like_a_touch(
        self, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """The client timestamp and lastSessionRefresh move to the new token's iat; so do the deadlines."""
        session = await _login(client, PLAIN)
        iat = _now_s(clock)
        clock.advance(600)
        used = await client.use_refresh_token(
            PLAIN, session.id, "app", "jti-1", issued_at=iat, new_issued_at=_now_s(clock) - 100
        )

        got = await client.get_user_session(PLAIN, session.id)
        assert _now_s(clock) - 100 == used.client_session.timestamp
        assert _now_s(clock) - 100 == got.last_session_refresh
        assert used.client_session == got.client_sessions["app"]
        assert session.expires_at_ms + 500_000 == got.expires_at_ms

    async def test_new_issued_at_zero_is_now_and_the_future_is_capped_at_now(
        self, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """new_issued_at 0 means the shard's now; a later one does not move the timestamps past now."""
        session = await _login(client, PLAIN)
        iat = _now_s(clock)
        clock.advance(5)
        now_use = await client.use_refresh_token(PLAIN, session.id, "app", "j1", issued_at=iat)
        clock.advance(5)
        late = await client.use_refresh_token(
            PLAIN, session.id, "app", "j2", issued_at=iat, new_issued_at=_now_s(clock) + 3600
        )

        assert (_now_s(clock) - 5, _now_s(clock)) == (
            now_use.client_session.timestamp,
            late.client_session.timestamp,
        )

    async def test_an_older_new_issued_at_never_moves_times_back(
        self, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """Refresh times only move forward (Keycloak's setters ignore older values)."""
        session = await _login(client, PLAIN)
        iat = _now_s(clock)
        clock.advance(100)
        await client.use_refresh_token(PLAIN, session.id, "app", "j1", issued_at=iat)
        older = await client.use_refresh_token(
            PLAIN, session.id, "app", "j2", issued_at=iat, new_issued_at=iat + 1
        )

        assert _now_s(clock) == older.client_session.timestamp
        assert _now_s(clock) == (await client.get_user_session(PLAIN, session.id)).last_session_refresh


class TestSessionChecks:
    """The refresh-time checks that read the store (validateToken), with rotation on or off."""

    @pytest.mark.parametrize("realm", [REALM, PLAIN])
    async def test_missing_sessions_are_not_found(
        self, client: AsyncSessionStoreClient, clock: TestClock, realm: str
    ) -> None:
        """No user session, another realm's session, or no client session for the client: NOT_FOUND."""
        await _rotating(client, 0)
        session = await _login(client, realm)
        other = REALM if realm == PLAIN else PLAIN
        iat = _now_s(clock)
        for realm_, sid, client_id in (
            (realm, "missing", "app"),
            (other, session.id, "app"),
            (realm, session.id, "x"),
        ):
            with pytest.raises(SessionNotFoundError):
                await client.use_refresh_token(realm_, sid, client_id, "jti", issued_at=iat)

    async def test_an_expired_client_session_is_not_found(
        self, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """A client session past its idle timeout cannot be refreshed, though its user session lives."""
        await client.set_realm_policy(RealmPolicy(realm=PLAIN, client_session_idle_timeout=60))
        session = await _login(client, PLAIN)
        iat = _now_s(clock)
        clock.advance(60)

        with pytest.raises(SessionNotFoundError):
            await client.use_refresh_token(PLAIN, session.id, "app", "jti", issued_at=iat)
        assert session.id == (await client.get_user_session(PLAIN, session.id)).id

    async def test_an_expired_user_session_is_not_found(
        self, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """Past the SSO idle timeout the session is gone for a refresh too."""
        session = await _login(client, PLAIN)
        iat = _now_s(clock)
        clock.advance(1800)

        with pytest.raises(SessionNotFoundError):
            await client.use_refresh_token(PLAIN, session.id, "app", "jti", issued_at=iat)

    @pytest.mark.parametrize("realm", [REALM, PLAIN])
    async def test_a_token_issued_before_the_session_started_is_stale(
        self, client: AsyncSessionStoreClient, clock: TestClock, realm: str
    ) -> None:
        """iat + 1 < started is stale (one second of tolerance); the client session stays attached."""
        await _rotating(client, 0)
        session = await _login(client, realm)
        with pytest.raises(StaleRefreshTokenError):
            await client.use_refresh_token(realm, session.id, "app", "old", issued_at=session.started - 2)

        used = await client.use_refresh_token(realm, session.id, "app", "ok", issued_at=session.started - 1)
        assert "app" == used.client_session.client_id

    async def test_a_token_issued_before_the_client_session_started_is_stale(
        self, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """A token older than its client session (re-attached since) is stale; nothing is detached."""
        session = await _login(client, PLAIN)
        iat = _now_s(clock)
        clock.advance(10)
        attached = await client.attach_client_session(PLAIN, session.id, "app")

        with pytest.raises(StaleRefreshTokenError):
            await client.use_refresh_token(PLAIN, session.id, "app", "jti", issued_at=iat)
        assert attached == await client.get_client_session(PLAIN, session.id, "app")

    async def test_bad_input_is_invalid_argument(
        self, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """An empty token id, a missing iat, a negative new iat or a bad client id change nothing."""
        session = await _login(client, PLAIN)
        iat = _now_s(clock)
        bad = [  # client id, token id, issued_at, new_issued_at
            ("app", "", iat, 0),
            ("app", "jti", 0, 0),
            ("app", "jti", iat, -1),
            ("a b", "jti", iat, 0),
            ("app", "j" * 256, iat, 0),
        ]
        for client_id, token_id, issued_at, new_issued_at in bad:
            with pytest.raises(InvalidArgumentError):
                await client.use_refresh_token(
                    PLAIN, session.id, client_id, token_id, issued_at=issued_at, new_issued_at=new_issued_at
                )
        assert (
            session.last_session_refresh
            == (await client.get_user_session(PLAIN, session.id)).last_session_refresh
        )


class TestRotation:
    """revoke_refresh_token on: validateTokenReuse's steps, and the detach on failure."""

    @pytest.mark.parametrize("max_reuse", [0, 1, 3])
    async def test_a_token_may_be_used_max_reuse_plus_one_times(
        self, client: AsyncSessionStoreClient, clock: TestClock, max_reuse: int
    ) -> None:
        """Uses 1..max+1 succeed with their count; the next is REUSE_EXCEEDED and detaches the client."""
        await _rotating(client, max_reuse)
        session = await _login(client, REALM, "app", "other")
        iat = _now_s(clock)
        counts = [
            (
                await client.use_refresh_token(REALM, session.id, "app", "t1", issued_at=iat, reuse_id="r")
            ).use_count
            for _ in range(max_reuse + 1)
        ]

        with pytest.raises(RefreshTokenReuseError):
            await client.use_refresh_token(REALM, session.id, "app", "t1", issued_at=iat, reuse_id="r")
        assert list(range(1, max_reuse + 2)) == counts
        got = await client.get_user_session(REALM, session.id)
        assert ["other"] == list(got.client_sessions)

    async def test_after_a_reuse_failure_even_the_newest_token_fails(
        self, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """The detach ends every token of that client in the session, the newest included."""
        await _rotating(client, 0)
        session = await _login(client)
        iat = _now_s(clock)
        await client.use_refresh_token(REALM, session.id, "app", "t1", issued_at=iat, reuse_id="r")
        with pytest.raises(RefreshTokenReuseError):
            await client.use_refresh_token(REALM, session.id, "app", "t1", issued_at=iat, reuse_id="r")

        with pytest.raises(SessionNotFoundError):
            await client.use_refresh_token(REALM, session.id, "app", "t2", issued_at=iat, reuse_id="r")

    async def test_an_older_token_of_a_refreshed_chain_is_stale(
        self, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """Once the next token of a chain was used, presenting an older one is "Stale token" and detaches."""
        await _rotating(client, 5)
        session = await _login(client)
        t1_iat = _now_s(clock)
        clock.advance(10)
        await client.use_refresh_token(REALM, session.id, "app", "t1", issued_at=t1_iat, reuse_id="r")
        t2_iat = _now_s(clock)
        clock.advance(10)
        await client.use_refresh_token(REALM, session.id, "app", "t2", issued_at=t2_iat, reuse_id="r")

        with pytest.raises(StaleRefreshTokenError):
            await client.use_refresh_token(REALM, session.id, "app", "t1", issued_at=t1_iat, reuse_id="r")
        with pytest.raises(SessionNotFoundError):
            await client.get_client_session(REALM, session.id, "app")

    async def test_a_token_from_the_same_second_is_not_stale(
        self, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """Whole seconds: an older token issued in the newest's second is not stale; its count restarts."""
        await _rotating(client, 0)
        session = await _login(client)
        iat = _now_s(clock)
        await client.use_refresh_token(REALM, session.id, "app", "t1", issued_at=iat, reuse_id="r")
        await client.use_refresh_token(REALM, session.id, "app", "t2", issued_at=iat, reuse_id="r")

        again = await client.use_refresh_token(REALM, session.id, "app", "t1", issued_at=iat, reuse_id="r")
        assert 1 == again.use_count

    async def test_chains_are_independent(self, client: AsyncSessionStoreClient, clock: TestClock) -> None:
        """Tokens of two reuse ids (two logins or tabs) and of the empty id are counted apart."""
        await _rotating(client, 0)
        session = await _login(client)
        iat = _now_s(clock)
        for chain in ("tab-1", "tab-2", ""):
            used = await client.use_refresh_token(
                REALM, session.id, "app", "t", issued_at=iat, reuse_id=chain
            )
            assert 1 == used.use_count

    async def test_clients_are_independent(self, client: AsyncSessionStoreClient, clock: TestClock) -> None:
        """Rotation state belongs to one client session: another client's failure leaves it alone."""
        await _rotating(client, 0)
        session = await _login(client, REALM, "app", "other")
        iat = _now_s(clock)
        await client.use_refresh_token(REALM, session.id, "other", "t", issued_at=iat, reuse_id="r")
        with pytest.raises(RefreshTokenReuseError):
            await client.use_refresh_token(REALM, session.id, "other", "t", issued_at=iat, reuse_id="r")

        used = await client.use_refresh_token(REALM, session.id, "app", "t", issued_at=iat, reuse_id="r")
        assert 1 == used.use_count

    async def test_reattaching_a_client_starts_its_rotation_afresh(
        self, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """An attach replaces the client session (Keycloak createClientSession): its chains are gone."""
        await _rotating(client, 0)
        session = await _login(client)
        iat = _now_s(clock)
        await client.use_refresh_token(REALM, session.id, "app", "t", issued_at=iat, reuse_id="r")
        await client.attach_client_session(REALM, session.id, "app")

        assert (
            1
            == (
                await client.use_refresh_token(REALM, session.id, "app", "t", issued_at=iat, reuse_id="r")
            ).use_count
        )

    async def test_the_chain_refreshed_longest_ago_is_forgotten_past_the_cap(
        self, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """Past MAX_REFRESH_TOKEN_CHAINS chains the oldest is forgotten: its next use counts as a first."""
        await _rotating(client, 0)
        session = await _login(client)
        iat = _now_s(clock)
        for n in range(MAX_REFRESH_TOKEN_CHAINS + 1):
            clock.advance(1)
            await client.use_refresh_token(REALM, session.id, "app", "t", issued_at=iat, reuse_id=f"r{n}")

        assert (
            1
            == (
                await client.use_refresh_token(REALM, session.id, "app", "t", issued_at=iat, reuse_id="r0")
            ).use_count
        )
        with pytest.raises(RefreshTokenReuseError):
            await client.use_refresh_token(REALM, session.id, "app", "t", issued_at=iat, reuse_id="r2")

    async def test_offline_client_sessions_rotate_too(
        self, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """Offline tokens rotate on the offline client session; the online one is untouched."""
        await _rotating(client, 0)
        session = await _login(client)
        await client.create_offline_session(REALM, session.id, ["app"])
        iat = _now_s(clock)
        used = await client.use_refresh_token(REALM, session.id, "app", "o", issued_at=iat, offline=True)
        with pytest.raises(RefreshTokenReuseError):
            await client.use_refresh_token(REALM, session.id, "app", "o", issued_at=iat, offline=True)

        assert (1, True) == (used.use_count, used.client_session.offline)
        assert "app" in (await client.get_user_session(REALM, session.id)).client_sessions
        assert {} == dict((await client.get_user_session(REALM, session.id, offline=True)).client_sessions)

    async def test_turning_rotation_off_accepts_an_over_used_token(
        self, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """With revoke_refresh_token switched off, the recorded counts no longer reject anything."""
        await _rotating(client, 0)
        session = await _login(client)
        iat = _now_s(clock)
        await client.use_refresh_token(REALM, session.id, "app", "t", issued_at=iat, reuse_id="r")
        await client.set_realm_policy(RealmPolicy(realm=REALM))

        used = await client.use_refresh_token(REALM, session.id, "app", "t", issued_at=iat, reuse_id="r")
        assert 0 == used.use_count


class TestIntrospection:
    """introspect=True: validateTokenReuseForIntrospection, which checks and never writes."""

    async def test_introspection_neither_counts_nor_refreshes(
        self, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """An unseen token is valid with count 0, a used one reports its count; times stay put."""
        await _rotating(client, 1)
        session = await _login(client)
        iat = _now_s(clock)
        clock.advance(30)
        unseen = await client.use_refresh_token(REALM, session.id, "app", "t", issued_at=iat, introspect=True)
        used = await client.use_refresh_token(REALM, session.id, "app", "t", issued_at=iat)
        clock.advance(30)
        seen = await client.use_refresh_token(REALM, session.id, "app", "t", issued_at=iat, introspect=True)

        assert (0, 1, 1) == (unseen.use_count, used.use_count, seen.use_count)
        assert used.client_session == seen.client_session
        assert session.started == unseen.client_session.timestamp

    async def test_introspecting_a_rejected_token_detaches_nothing(
        self, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """An over-used or stale token introspects as rejected; the client session stays attached."""
        await _rotating(client, 0)
        session = await _login(client)
        t1_iat = _now_s(clock)
        await client.use_refresh_token(REALM, session.id, "app", "t1", issued_at=t1_iat)
        with pytest.raises(RefreshTokenReuseError):
            await client.use_refresh_token(REALM, session.id, "app", "t1", issued_at=t1_iat, introspect=True)
        clock.advance(5)
        await client.use_refresh_token(REALM, session.id, "app", "t2", issued_at=t1_iat + 1)

        with pytest.raises(StaleRefreshTokenError):
            await client.use_refresh_token(REALM, session.id, "app", "t1", issued_at=t1_iat, introspect=True)
        assert "app" in (await client.get_user_session(REALM, session.id)).client_sessions


class TestRotationRaces:
    """Concurrent refreshes with one token: the check and the count are one atomic step (GH 45647)."""

    @pytest.mark.timeout(120)
    @pytest.mark.parametrize("max_reuse", [0, 2, 5])
    async def test_parallel_refreshes_succeed_exactly_max_reuse_plus_one_times(
        self, client: AsyncSessionStoreClient, clock: TestClock, max_reuse: int
    ) -> None:
        """50 simultaneous refreshes of a token: max+1 succeed, one fails on reuse, the rest find none."""
        await _rotating(client, max_reuse)
        counter = itertools.count()
        for _ in range(3):
            session = await _login(client)
            iat = _now_s(clock)
            token = f"t{next(counter)}"

            async def use(
                sid: str = session.id, jti: str = token, at: int = iat
            ) -> RefreshTokenUse | Exception:
                try:
                    return await client.use_refresh_token(REALM, sid, "app", jti, issued_at=at, reuse_id="r")
                except (RefreshTokenReuseError, SessionNotFoundError) as exc:
                    return exc

            results = await asyncio.wait_for(
                asyncio.gather(*(use() for _ in range(RACERS))), RACE_TIMEOUT_SECONDS
            )
            uses = sorted(r.use_count for r in results if isinstance(r, RefreshTokenUse))
            reuse = [r for r in results if isinstance(r, RefreshTokenReuseError)]
            gone = [r for r in results if isinstance(r, SessionNotFoundError)]
            assert list(range(1, max_reuse + 2)) == uses
            assert (1, RACERS - max_reuse - 2) == (len(reuse), len(gone))
