"""Client sessions through the real gRPC server and client."""

from __future__ import annotations

import pytest

from session_store import (
    AsyncSessionStoreClient,
    LimitExceededError,
    RealmPolicy,
    SessionNotFoundError,
)
from session_store.model.clock import TestClock
from session_store.model.limits import MAX_CLIENT_SESSIONS
from tests.backends import BOTH_BACKENDS

pytestmark = BOTH_BACKENDS


class TestAttachClientSession:
    """AttachClientSession and GetClientSession."""

    async def test_attach_sets_keycloak_fields(
        self, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """timestamp = startedAt = now and userSessionStartedAt = the user session's started."""
        session = await client.create_user_session("realm-a", "user-1")
        clock.advance(30)
        attached = await client.attach_client_session(
            "realm-a",
            session.id,
            "app",
            redirect_uri="https://app/cb",
            action="AUTHENTICATE",
            protocol="openid-connect",
            notes={"nonce": "n1"},
        )
        assert session.started + 30 == attached.timestamp
        assert attached.timestamp == attached.started
        assert session.started == attached.user_session_started
        assert attached == await client.get_client_session("realm-a", session.id, "app")
        listed = await client.get_user_session("realm-a", session.id)
        assert {"app": attached} == dict(listed.client_sessions)

    async def test_attach_again_replaces(self, client: AsyncSessionStoreClient) -> None:
        """A second attach for the same client replaces the first (one per user session and client)."""
        session = await client.create_user_session("realm-a", "user-1")
        await client.attach_client_session("realm-a", session.id, "app", notes={"a": "1"})
        await client.attach_client_session("realm-a", session.id, "app", notes={"b": "2"})
        got = await client.get_user_session("realm-a", session.id)
        assert ["app"] == list(got.client_sessions)
        assert {"b": "2"} == dict(got.client_sessions["app"].notes)

    async def test_too_many_client_sessions(self, client: AsyncSessionStoreClient) -> None:
        """Past the cap an attach is RESOURCE_EXHAUSTED and changes nothing."""
        session = await client.create_user_session("realm-a", "user-1")
        for i in range(MAX_CLIENT_SESSIONS):
            await client.attach_client_session("realm-a", session.id, f"c{i}")
        with pytest.raises(LimitExceededError):
            await client.attach_client_session("realm-a", session.id, "one-too-many")
        got = await client.get_user_session("realm-a", session.id)
        assert MAX_CLIENT_SESSIONS == len(got.client_sessions)
        assert "one-too-many" not in got.client_sessions

    async def test_attach_to_missing_session(self, client: AsyncSessionStoreClient) -> None:
        """Attaching to a session that does not exist is NOT_FOUND."""
        with pytest.raises(SessionNotFoundError):
            await client.attach_client_session("realm-a", "no-such-session", "app")


class TestUpdateClientSession:
    """UpdateClientSession and DetachClientSession."""

    async def test_update_fields_notes_and_timestamp(
        self, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """Only given fields change; the timestamp moves forward only and never past now."""
        session = await client.create_user_session("realm-a", "user-1")
        attached = await client.attach_client_session(
            "realm-a", session.id, "app", redirect_uri="https://a", notes={"x": "1"}
        )
        clock.advance(60)
        updated = await client.update_client_session(
            "realm-a",
            session.id,
            "app",
            action="LOGGED_OUT",
            set_notes={"y": "2"},
            remove_notes=["x"],
            timestamp=attached.timestamp + 10_000,
        )
        assert "https://a" == updated.redirect_uri
        assert "LOGGED_OUT" == updated.action
        assert {"y": "2"} == dict(updated.notes)
        assert attached.timestamp + 60 == updated.timestamp
        back = await client.update_client_session("realm-a", session.id, "app", timestamp=attached.timestamp)
        assert attached.timestamp + 60 == back.timestamp

    async def test_detach(self, client: AsyncSessionStoreClient) -> None:
        """Detach removes one client session; the user session and other clients stay."""
        session = await client.create_user_session("realm-a", "user-1")
        await client.attach_client_session("realm-a", session.id, "app")
        await client.attach_client_session("realm-a", session.id, "other")
        assert await client.detach_client_session("realm-a", session.id, "app") is True
        assert await client.detach_client_session("realm-a", session.id, "app") is False
        with pytest.raises(SessionNotFoundError):
            await client.get_client_session("realm-a", session.id, "app")
        assert ["other"] == list((await client.get_user_session("realm-a", session.id)).client_sessions)


class TestClientExpiry:
    """Client-session deadlines (keycloak-semantics §2.4)."""

    async def test_client_idle_expires_before_user_session(
        self, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """A client idle timeout shorter than the user's drops the client session, not the user's."""
        await client.set_realm_policy(RealmPolicy(realm="realm-a", client_session_idle_timeout=100))
        session = await client.create_user_session("realm-a", "user-1")
        await client.attach_client_session("realm-a", session.id, "app")
        clock.advance(99)
        assert "app" in (await client.touch_user_session("realm-a", session.id)).client_sessions
        clock.advance(1)
        got = await client.get_user_session("realm-a", session.id)
        assert {} == dict(got.client_sessions)
        assert 0 == await client.count_sessions("realm-a", "app")
        assert 1 == await client.count_sessions("realm-a")

    async def test_touch_with_client_refreshes_it(
        self, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """A touch naming a client moves that client's timestamp, so it outlives its idle timeout."""
        await client.set_realm_policy(RealmPolicy(realm="realm-a", client_session_idle_timeout=100))
        session = await client.create_user_session("realm-a", "user-1")
        await client.attach_client_session("realm-a", session.id, "app")
        clock.advance(90)
        await client.touch_user_session("realm-a", session.id, client_ids=["app"])
        clock.advance(90)
        got = await client.get_client_session("realm-a", session.id, "app")
        assert session.started + 90 == got.timestamp

    async def test_client_max_capped_by_user_max(self, client: AsyncSessionStoreClient) -> None:
        """A client max lifespan longer than the user's is capped at the user session's maximum."""
        await client.set_realm_policy(
            RealmPolicy(realm="realm-a", sso_session_max_lifespan=600, client_session_max_lifespan=6000)
        )
        session = await client.create_user_session("realm-a", "user-1")
        attached = await client.attach_client_session("realm-a", session.id, "app")
        assert (session.started + 600) * 1000 >= attached.expires_at_ms
