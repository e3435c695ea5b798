"""User sessions through the real gRPC server and client, against real Redis shards."""

from __future__ import annotations

import pytest

from session_store import (
    AsyncSessionStoreClient,
    SessionNotFoundError,
    UserSessionState,
)
from session_store.model.clock import TestClock
from tests.backends import BOTH_BACKENDS

pytestmark = BOTH_BACKENDS


class TestCreateUserSession:
    """CreateUserSession."""

    async def test_minted_id_is_keycloak_shaped_and_readable(self, client: AsyncSessionStoreClient) -> None:
        """A minted id is 24 base64url characters and the session reads back with every field."""
        created = await client.create_user_session(
            "realm-a",
            "user-1",
            login_username="alice",
            ip_address="10.0.0.1",
            auth_method="openid-connect",
            broker_session_id="idp.s1",
            broker_user_id="idp.u1",
            state=UserSessionState.LOGGED_IN,
            notes={"AUTH_TIME": "1"},
        )
        assert 24 == len(created.id)
        got = await client.get_user_session("realm-a", created.id)
        assert created == got
        assert "alice" == got.login_username
        assert {"AUTH_TIME": "1"} == dict(got.notes)
        assert UserSessionState.LOGGED_IN == got.state
        assert got.started == got.last_session_refresh

    async def test_route_suffix_is_stripped(self, client: AsyncSessionStoreClient) -> None:
        """An id with a `.route` suffix names the same session."""
        created = await client.create_user_session("realm-a", "user-1")
        got = await client.get_user_session("realm-a", f"{created.id}.node-7")
        assert created.id == got.id

    async def test_caller_brought_id(self, client: AsyncSessionStoreClient) -> None:
        """A caller-brought id (route stripped) is kept and found by id alone."""
        created = await client.create_user_session("realm-a", "user-1", session_id="auth-session-42.node1")
        assert "auth-session-42" == created.id
        got = await client.get_user_session("realm-a", "auth-session-42")
        assert "user-1" == got.user_id

    async def test_other_realm_does_not_see_it(self, client: AsyncSessionStoreClient) -> None:
        """A session is invisible from another realm."""
        created = await client.create_user_session("realm-a", "user-1")
        with pytest.raises(SessionNotFoundError):
            await client.get_user_session("realm-b", created.id)


class TestTouchUserSession:
    """TouchUserSession."""

    async def test_refresh_moves_forward_and_extends_life(
        self, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """A touch sets lastSessionRefresh to now and moves the idle deadline with it."""
        created = await client.create_user_session("realm-a", "user-1")
        clock.advance(1000)
        touched = await client.touch_user_session("realm-a", created.id)
        assert created.last_session_refresh + 1000 == touched.last_session_refresh
        assert created.expires_at_ms + 1_000_000 == touched.expires_at_ms

    async def test_refresh_never_moves_back(self, client: AsyncSessionStoreClient, clock: TestClock) -> None:
        """An explicit refresh time below the stored one is ignored."""
        created = await client.create_user_session("realm-a", "user-1")
        clock.advance(100)
        await client.touch_user_session("realm-a", created.id)
        again = await client.touch_user_session(
            "realm-a", created.id, last_session_refresh=created.started + 10
        )
        assert created.started + 100 == again.last_session_refresh

    async def test_idle_session_expires_exactly_at_deadline(
        self, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """With the default 1800 s idle timeout the session lives at 1799 s and is gone at 1800 s."""
        created = await client.create_user_session("realm-a", "user-1")
        clock.advance(1799)
        assert created.id == (await client.get_user_session("realm-a", created.id)).id
        clock.advance(1)
        with pytest.raises(SessionNotFoundError):
            await client.get_user_session("realm-a", created.id)
        with pytest.raises(SessionNotFoundError):
            await client.touch_user_session("realm-a", created.id)
        assert [] == await client.list_user_sessions("realm-a", "user-1")
        assert 0 == await client.count_sessions("realm-a")


class TestUpdateAndRemove:
    """UpdateUserSession and RemoveUserSession."""

    async def test_notes_and_state(self, client: AsyncSessionStoreClient) -> None:
        """Notes are set and removed and the state changes, in one call."""
        created = await client.create_user_session("realm-a", "user-1", notes={"a": "1", "b": "2"})
        updated = await client.update_user_session(
            "realm-a",
            created.id,
            set_notes={"c": "3"},
            remove_notes=["a"],
            state=UserSessionState.LOGGING_OUT,
        )
        assert {"b": "2", "c": "3"} == dict(updated.notes)
        assert UserSessionState.LOGGING_OUT == updated.state
        assert updated == await client.get_user_session("realm-a", created.id)

    async def test_remove_is_idempotent(self, client: AsyncSessionStoreClient) -> None:
        """The first remove removes, the second reports nothing removed, and reads fail."""
        created = await client.create_user_session("realm-a", "user-1")
        await client.attach_client_session("realm-a", created.id, "app")
        assert await client.remove_user_session("realm-a", created.id) is True
        assert await client.remove_user_session("realm-a", created.id) is False
        with pytest.raises(SessionNotFoundError):
            await client.get_user_session("realm-a", created.id)
        assert 0 == await client.count_sessions("realm-a", "app")


class TestUserQueries:
    """ListUserSessions, RemoveUserSessions, CountSessions, the broker lookups."""

    async def test_list_and_revoke_all(self, client: AsyncSessionStoreClient) -> None:
        """A user's sessions are listed together and removed together; other users keep theirs."""
        ids = {(await client.create_user_session("realm-a", "user-1")).id for _ in range(3)}
        other = await client.create_user_session("realm-a", "user-2")
        listed = await client.list_user_sessions("realm-a", "user-1")
        assert ids == {s.id for s in listed}
        assert 4 == await client.count_sessions("realm-a")
        assert 3 == await client.remove_user_sessions("realm-a", "user-1")
        assert [] == await client.list_user_sessions("realm-a", "user-1")
        assert [other.id] == [s.id for s in await client.list_user_sessions("realm-a", "user-2")]
        assert 1 == await client.count_sessions("realm-a")

    async def test_counts_per_client(self, client: AsyncSessionStoreClient) -> None:
        """Counts per client and client stats count live client sessions only."""
        s1 = await client.create_user_session("realm-a", "user-1")
        s2 = await client.create_user_session("realm-a", "user-2")
        await client.attach_client_session("realm-a", s1.id, "app")
        await client.attach_client_session("realm-a", s2.id, "app")
        await client.attach_client_session("realm-a", s2.id, "admin")
        assert 2 == await client.count_sessions("realm-a", "app")
        assert {"app": 2, "admin": 1} == await client.get_client_session_stats("realm-a")
        await client.detach_client_session("realm-a", s2.id, "app")
        assert {"app": 1, "admin": 1} == await client.get_client_session_stats("realm-a")

    async def test_broker_lookups(self, client: AsyncSessionStoreClient) -> None:
        """Sessions are found by broker session id (first live) and broker user id (all live)."""
        s1 = await client.create_user_session(
            "realm-a", "user-1", broker_session_id="idp.sess-1", broker_user_id="idp.ext-1"
        )
        s2 = await client.create_user_session("realm-a", "user-1", broker_user_id="idp.ext-1")
        found = await client.find_user_session_by_broker_session_id("realm-a", "idp.sess-1")
        assert s1.id == found.id
        by_user = await client.find_user_sessions_by_broker_user_id("realm-a", "idp.ext-1")
        assert {s1.id, s2.id} == {s.id for s in by_user}
        await client.remove_user_session("realm-a", s1.id)
        with pytest.raises(SessionNotFoundError):
            await client.find_user_session_by_broker_session_id("realm-a", "idp.sess-1")
