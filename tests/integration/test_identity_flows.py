"""Whole OIDC flows as a Keycloak-like identity node plays them, through the client, on two service
nodes in front of the same shards: login form -> user session -> client session -> code issued and
exchanged once -> refreshes with rotation -> back-channel logout -> all gone."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from session_store import (
    AsyncSessionStoreClient,
    RealmPolicy,
    SessionNotFoundError,
    StaleRefreshTokenError,
)
from session_store.config import Settings, ShardSettings
from session_store.model.clock import TestClock
from session_store.server import SessionStoreServer
from tests.backends import BOTH_BACKENDS

pytestmark = BOTH_BACKENDS

REALM = "acme"
CLIENT = "web-app"


@pytest.fixture
async def nodes(
    flushed_shards: tuple[ShardSettings, ...], clock: TestClock, settings: Settings
) -> AsyncIterator[tuple[AsyncSessionStoreClient, AsyncSessionStoreClient]]:
    """Two service nodes on the same shards and the same clock, and a client to each."""
    servers = [SessionStoreServer(settings, flushed_shards, clock=clock) for _ in range(2)]
    for srv in servers:
        await srv.start()
    clients = [AsyncSessionStoreClient(f"127.0.0.1:{srv.port}", max_attempts=1) for srv in servers]
    try:
        await clients[0].set_realm_policy(
            RealmPolicy(realm=REALM, revoke_refresh_token=True, refresh_token_max_reuse=0)
        )
        yield clients[0], clients[1]
    finally:
        for c in clients:
            await c.close()
        for srv in servers:
            await srv.stop(grace=0)


async def _login_flow(
    a: AsyncSessionStoreClient, b: AsyncSessionStoreClient, clock: TestClock, user: str
) -> str:
    """One browser login through both nodes; returns the user session id."""
    root = await a.get_or_create_root_authentication_session(REALM)
    tab = await b.create_authentication_session(REALM, root.id, CLIENT)
    await a.update_authentication_session(
        REALM,
        root.id,
        tab.tab_id,
        CLIENT,
        authenticated_user_id=user,
        set_user_session_notes={"AUTH_TIME": str(clock.now_ms // 1000)},
    )
    finished = await b.get_authentication_session(REALM, root.id, tab.tab_id, CLIENT)
    assert user == finished.authenticated_user_id
    # Keycloak: the user session reuses the root authentication session's id.
    session = await a.create_user_session(
        REALM, user, session_id=root.id, login_username=user, notes=dict(finished.user_session_notes)
    )
    assert root.id == session.id
    removal = await b.remove_authentication_session(REALM, root.id, tab.tab_id)
    assert removal.root_removed
    await b.attach_client_session(REALM, session.id, CLIENT, redirect_uri="https://app/cb")
    # The authorization code: issued on one node, exchanged exactly once on the other.
    code = f"code:{uuid.uuid4()}"
    await a.put_single_use_object(REALM, code, 60, {"sid": session.id, "client": CLIENT})
    exchanged = await b.take_single_use_object(REALM, code)
    assert {"sid": session.id, "client": CLIENT} == dict(exchanged.notes)
    with pytest.raises(SessionNotFoundError):
        await a.take_single_use_object(REALM, code)
    return session.id


class TestIdentityNodeFlows:
    """Two simulated identity nodes interleaving on the same users see one consistent state."""

    async def test_full_flow_on_two_nodes(
        self, nodes: tuple[AsyncSessionStoreClient, AsyncSessionStoreClient], clock: TestClock
    ) -> None:
        """Login, code exchange, rotating refreshes, a replayed token, and back-channel logout."""
        a, b = nodes
        sid = await _login_flow(a, b, clock, "alice")
        chain = "chain-1"
        first_iat = clock.now_ms // 1000
        clock.advance(10)
        used = await a.use_refresh_token(REALM, sid, CLIENT, "rt-1", issued_at=first_iat, reuse_id=chain)
        assert 1 == used.use_count
        second_iat = clock.now_ms // 1000
        clock.advance(10)
        await b.use_refresh_token(REALM, sid, CLIENT, "rt-2", issued_at=second_iat, reuse_id=chain)
        # Replaying the first token: stale, and Keycloak detaches the client session for it.
        with pytest.raises(StaleRefreshTokenError):
            await a.use_refresh_token(REALM, sid, CLIENT, "rt-1", issued_at=first_iat, reuse_id=chain)
        with pytest.raises(SessionNotFoundError):
            await b.get_client_session(REALM, sid, CLIENT)
        assert sid == (await b.get_user_session(REALM, sid)).id
        # Back-channel logout of the user from node b: gone on node a too.
        assert 1 == await b.remove_user_sessions(REALM, "alice")
        with pytest.raises(SessionNotFoundError):
            await a.get_user_session(REALM, sid)
        assert [] == await a.list_user_sessions(REALM, "alice")
        assert 0 == await a.count_sessions(REALM)

    async def test_interleaved_users_one_view(
        self, nodes: tuple[AsyncSessionStoreClient, AsyncSessionStoreClient], clock: TestClock
    ) -> None:
        """Flows of several users interleaved across both nodes leave both nodes the same view."""
        a, b = nodes
        users = [f"user-{i}" for i in range(8)]
        ids = await asyncio.gather(
            *(
                _login_flow(a, b, clock, u) if i % 2 else _login_flow(b, a, clock, u)
                for i, u in enumerate(users)
            )
        )
        assert len(users) == await a.count_sessions(REALM) == await b.count_sessions(REALM)
        assert {CLIENT: len(users)} == await b.get_client_session_stats(REALM)
        await asyncio.gather(*(b.remove_user_sessions(REALM, u) for u in users[::2]))
        for i, sid in enumerate(ids):
            alive = i % 2 == 1
            for node in (a, b):
                if alive:
                    assert sid == (await node.get_user_session(REALM, sid)).id
                else:
                    with pytest.raises(SessionNotFoundError):
                        await node.get_user_session(REALM, sid)
        assert len(users) // 2 == await a.count_sessions(REALM) == await b.count_sessions(REALM)
