"""Offline sessions and realm policies through the real gRPC server and client."""

from __future__ import annotations

import pytest

from session_store import (
    AsyncSessionStoreClient,
    ClientPolicy,
    PreconditionFailedError,
    RealmPolicy,
    SessionNotFoundError,
)
from session_store.model.clock import TestClock
from tests.backends import BOTH_BACKENDS

pytestmark = BOTH_BACKENDS


class TestOfflineSessions:
    """CreateOfflineSession and the offline flag of the other RPCs."""

    async def test_copy_keeps_id_and_resets_times(
        self, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """The offline copy has the same id, notes and login fields, fresh times, and only named clients."""
        online = await client.create_user_session(
            "realm-a", "user-1", login_username="alice", notes={"n": "v"}
        )
        await client.attach_client_session("realm-a", online.id, "app", redirect_uri="https://a")
        await client.attach_client_session("realm-a", online.id, "other")
        clock.advance(50)
        offline = await client.create_offline_session("realm-a", online.id, ["app"])
        assert online.id == offline.id
        assert offline.offline is True
        assert "alice" == offline.login_username
        assert {"n": "v"} == dict(offline.notes)
        assert online.started + 50 == offline.started == offline.last_session_refresh
        assert ["app"] == list(offline.client_sessions)
        app = offline.client_sessions["app"]
        assert (offline.started, offline.started, offline.started) == (
            app.timestamp,
            app.started,
            app.user_session_started,
        )
        assert offline == await client.get_user_session("realm-a", online.id, offline=True)

    async def test_offline_outlives_logout(self, client: AsyncSessionStoreClient, clock: TestClock) -> None:
        """Logging out the online session and revoking online sessions leave the offline one."""
        online = await client.create_user_session("realm-a", "user-1")
        await client.create_offline_session("realm-a", online.id)
        await client.remove_user_sessions("realm-a", "user-1")
        clock.advance(36_000)  # past the online max lifespan
        got = await client.get_user_session("realm-a", online.id, offline=True)
        assert online.id == got.id
        assert [online.id] == [
            s.id for s in await client.list_user_sessions("realm-a", "user-1", offline=True)
        ]
        assert 1 == await client.count_sessions("realm-a", offline=True)
        assert 0 == await client.count_sessions("realm-a")

    async def test_offline_idle_expiry(self, client: AsyncSessionStoreClient, clock: TestClock) -> None:
        """An offline session dies after the offline idle timeout unless touched."""
        await client.set_realm_policy(RealmPolicy(realm="realm-a", offline_session_idle_timeout=1000))
        online = await client.create_user_session("realm-a", "user-1")
        await client.create_offline_session("realm-a", online.id)
        clock.advance(999)
        await client.touch_user_session("realm-a", online.id, offline=True)
        clock.advance(999)
        assert online.id == (await client.get_user_session("realm-a", online.id, offline=True)).id
        clock.advance(1)
        with pytest.raises(SessionNotFoundError):
            await client.get_user_session("realm-a", online.id, offline=True)

    async def test_second_create_refreshes_and_adds_clients(
        self, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """Creating the offline session again refreshes it and adds missing client sessions."""
        online = await client.create_user_session("realm-a", "user-1")
        await client.attach_client_session("realm-a", online.id, "app")
        await client.attach_client_session("realm-a", online.id, "other")
        first = await client.create_offline_session("realm-a", online.id, ["app"])
        clock.advance(10)
        second = await client.create_offline_session("realm-a", online.id, ["app", "other"])
        assert first.started == second.started
        assert first.last_session_refresh + 10 == second.last_session_refresh
        assert {"app", "other"} == set(second.client_sessions)

    async def test_needs_live_online_session(self, client: AsyncSessionStoreClient) -> None:
        """No offline copy of a session that does not exist."""
        with pytest.raises(SessionNotFoundError):
            await client.create_offline_session("realm-a", "missing")

    async def test_caller_brought_id_offline(self, client: AsyncSessionStoreClient) -> None:
        """An offline copy of a caller-brought id is found by that id."""
        await client.create_user_session("realm-a", "user-9", session_id="kc-auth-session-1")
        await client.create_offline_session("realm-a", "kc-auth-session-1")
        got = await client.get_user_session("realm-a", "kc-auth-session-1", offline=True)
        assert "user-9" == got.user_id


class TestRealmPolicy:
    """SetRealmPolicy and GetRealmPolicy, and how policies drive expiry."""

    async def test_defaults_when_unset(self, client: AsyncSessionStoreClient) -> None:
        """An unknown realm reads back as all-unset (Keycloak's defaults apply)."""
        assert RealmPolicy(realm="fresh") == await client.get_realm_policy("fresh")

    async def test_round_trip(self, client: AsyncSessionStoreClient) -> None:
        """A stored policy reads back equal, client overrides included."""
        policy = RealmPolicy(
            realm="realm-a",
            sso_session_idle_timeout=60,
            sso_session_max_lifespan=600,
            remember_me=True,
            sso_session_idle_timeout_remember_me=120,
            offline_session_max_lifespan_enabled=True,
            offline_session_max_lifespan=1000,
            clients={"app": ClientPolicy(session_idle_timeout=30)},
        )
        assert policy == await client.set_realm_policy(policy)
        assert policy == await client.get_realm_policy("realm-a")

    async def test_remember_me_lengthens_and_needs_the_realm(
        self, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """Remember-me sessions use the longer idle timeout, need the realm's permission, and die when
        the realm withdraws it."""
        with pytest.raises(PreconditionFailedError):
            await client.create_user_session("realm-a", "user-1", remember_me=True)
        await client.set_realm_policy(
            RealmPolicy(
                realm="realm-a",
                sso_session_idle_timeout=60,
                sso_session_idle_timeout_remember_me=600,
                remember_me=True,
            )
        )
        plain = await client.create_user_session("realm-a", "user-1")
        remembered = await client.create_user_session("realm-a", "user-1", remember_me=True)
        clock.advance(300)
        with pytest.raises(SessionNotFoundError):
            await client.get_user_session("realm-a", plain.id)
        assert remembered.id == (await client.get_user_session("realm-a", remembered.id)).id
        await client.set_realm_policy(RealmPolicy(realm="realm-a", sso_session_idle_timeout=60))
        with pytest.raises(SessionNotFoundError):
            await client.get_user_session("realm-a", remembered.id)

    async def test_max_lifespan_beats_touches(
        self, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """However often it is touched, a session dies at started + max lifespan."""
        await client.set_realm_policy(
            RealmPolicy(realm="realm-a", sso_session_idle_timeout=100, sso_session_max_lifespan=250)
        )
        session = await client.create_user_session("realm-a", "user-1")
        for _ in range(2):
            clock.advance(90)
            await client.touch_user_session("realm-a", session.id)
        clock.advance(69)
        assert (session.started + 250) * 1000 == (
            await client.get_user_session("realm-a", session.id)
        ).expires_at_ms
        clock.advance(1)
        with pytest.raises(SessionNotFoundError):
            await client.touch_user_session("realm-a", session.id)
