"""Authentication sessions (roots and tabs) through the real gRPC server and client, on real Redis."""

from __future__ import annotations

import asyncio
import re
from typing import Any, cast

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from session_store import (
    AsyncSessionStoreClient,
    InvalidArgumentError,
    LimitExceededError,
    RealmPolicy,
    SessionNotFoundError,
    SessionStoreClient,
)
from session_store.model.auth_session import (
    AuthenticationSession,
    AuthenticationSessionRemoval,
    ExecutionStatus,
    RootAuthenticationSession,
)
from session_store.model.clock import TestClock
from session_store.model.ids import home_partition
from session_store.model.limits import (
    MAX_AUTH_NOTE_VALUE_LENGTH,
    MAX_AUTH_NOTES,
    MAX_ID_LENGTH,
    MAX_REQUIRED_ACTIONS,
    MAX_ROOT_AUTH_SESSION_BYTES,
)
from session_store.server import SessionStoreServer
from session_store.storage import keys
from tests.backends import BOTH_BACKENDS, partitioned_keys

pytestmark = BOTH_BACKENDS

REALM = "realm-a"
DEFAULT_LIFESPAN = 1800
"""Keycloak's default: max(access code 60, user action 300, login 1800) seconds."""
BASE64URL = re.compile(r"[A-Za-z0-9_-]+")
RACE_TIMEOUT_SECONDS = 30.0
VALID_CHANGE: dict[str, Any] = {
    "action": "valid",
    "set_client_notes": {"valid": "v"},
    "add_required_actions": ["VERIFY_EMAIL"],
}
"""Valid parts sent along with a bad one: they must not be applied either."""


async def _root_keys(server: SessionStoreServer) -> list[str]:
    """Every root authentication session key on every shard."""
    return await partitioned_keys(server.router, "ss:{*}:a:*")


async def _pttl(server: SessionStoreServer, realm: str, root_id: str) -> int:
    partition = home_partition(root_id)
    key = keys.root_auth_session(partition, realm, root_id)
    return int(await server.router.shard_for(partition).command("PTTL", key))


class TestGetOrCreateRootAuthenticationSession:
    """GetOrCreateRootAuthenticationSession."""

    async def test_empty_id_mints_a_keycloak_shaped_id(
        self, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """An empty id creates a root with a 24-character base64url id, stamped now, without tabs."""
        root = await client.get_or_create_root_authentication_session(REALM)

        assert 24 == len(root.id)
        assert BASE64URL.fullmatch(root.id)
        now_s = clock.now_ms // 1000
        expected = RootAuthenticationSession(
            id=root.id, realm=REALM, timestamp=now_s, tabs={}, expires_at_ms=(now_s + DEFAULT_LIFESPAN) * 1000
        )
        assert expected == root
        assert root == await client.get_root_authentication_session(REALM, root.id)

    async def test_two_empty_ids_make_two_roots(self, client: AsyncSessionStoreClient) -> None:
        """Each call without an id mints a new root."""
        first = await client.get_or_create_root_authentication_session(REALM)
        second = await client.get_or_create_root_authentication_session(REALM)
        assert first.id != second.id

    async def test_live_root_is_returned_as_is(
        self, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """A live root with the id comes back unchanged: same timestamp, same tabs."""
        root = await client.get_or_create_root_authentication_session(REALM, "cookie-id")
        tab = await client.create_authentication_session(REALM, root.id, "app")
        clock.advance(10)

        again = await client.get_or_create_root_authentication_session(REALM, "cookie-id")

        assert "cookie-id" == again.id
        assert root.timestamp == again.timestamp
        assert {tab.tab_id: tab} == dict(again.tabs)

    async def test_route_suffix_is_stripped(self, client: AsyncSessionStoreClient) -> None:
        """A `.route` suffix on the id is dropped, as for session ids."""
        root = await client.get_or_create_root_authentication_session(REALM, "abc.node-1")
        assert "abc" == root.id
        assert "abc" == (await client.get_root_authentication_session(REALM, "abc.node-2")).id

    async def test_expired_root_is_replaced_by_a_new_one(
        self, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """An expired root (not yet dropped by Redis) is replaced: new timestamp, no tabs."""
        await client.get_or_create_root_authentication_session(REALM, "cookie-id")
        await client.create_authentication_session(REALM, "cookie-id", "app")
        clock.advance(DEFAULT_LIFESPAN)

        root = await client.get_or_create_root_authentication_session(REALM, "cookie-id")

        assert clock.now_ms // 1000 == root.timestamp
        assert {} == dict(root.tabs)

    async def test_same_id_in_two_realms_is_two_roots(self, client: AsyncSessionStoreClient) -> None:
        """Realms do not share roots: the same id names a separate root in each realm."""
        await client.get_or_create_root_authentication_session("realm-a", "shared")
        tab = await client.create_authentication_session("realm-a", "shared", "app")

        other = await client.get_or_create_root_authentication_session("realm-b", "shared")

        assert {} == dict(other.tabs)
        assert [tab.tab_id] == list((await client.get_root_authentication_session("realm-a", "shared")).tabs)

    async def test_concurrent_calls_with_one_id_make_one_root(
        self, client: AsyncSessionStoreClient, server: SessionStoreServer
    ) -> None:
        """Fifty concurrent get-or-creates of one id create exactly one root, and all get it."""
        roots = await asyncio.wait_for(
            asyncio.gather(
                *(client.get_or_create_root_authentication_session(REALM, "raced") for _ in range(50))
            ),
            RACE_TIMEOUT_SECONDS,
        )

        assert {"raced"} == {r.id for r in roots}
        assert all(roots[0] == r for r in roots)
        assert [keys.root_auth_session(home_partition("raced"), REALM, "raced")] == await _root_keys(server)

    async def test_concurrent_get_or_create_never_loses_a_tab(self, client: AsyncSessionStoreClient) -> None:
        """Fifty browsers' worth of get-or-create + create-tab on one id keep all fifty tabs.

        A get-or-create that re-created a root another caller had already created would drop that
        caller's tab.
        """

        async def open_tab(i: int) -> AuthenticationSession:
            await client.get_or_create_root_authentication_session(REALM, "raced")
            return await client.create_authentication_session(REALM, "raced", f"client-{i}")

        tabs = await asyncio.wait_for(asyncio.gather(*(open_tab(i) for i in range(50))), RACE_TIMEOUT_SECONDS)

        root = await client.get_root_authentication_session(REALM, "raced")
        assert {t.tab_id: t for t in tabs} == dict(root.tabs)


class TestRootExpiry:
    """A root dies at timestamp + max(access code lifespans); every change moves the timestamp."""

    async def test_root_dies_exactly_at_its_deadline(
        self, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """Alive one millisecond before timestamp + lifespan, gone at it, for every read."""
        root = await client.get_or_create_root_authentication_session(REALM)
        tab = await client.create_authentication_session(REALM, root.id, "app")
        assert (root.timestamp + DEFAULT_LIFESPAN) * 1000 == root.expires_at_ms

        clock.advance(DEFAULT_LIFESPAN - 0.001)
        assert root.id == (await client.get_root_authentication_session(REALM, root.id)).id
        assert tab == await client.get_authentication_session(REALM, root.id, tab.tab_id, "app")

        clock.advance(0.001)
        assert root.expires_at_ms == clock.now_ms
        with pytest.raises(SessionNotFoundError):
            await client.get_root_authentication_session(REALM, root.id)
        with pytest.raises(SessionNotFoundError):
            await client.get_authentication_session(REALM, root.id, tab.tab_id, "app")
        with pytest.raises(SessionNotFoundError):
            await client.create_authentication_session(REALM, root.id, "app")
        with pytest.raises(SessionNotFoundError):
            await client.update_authentication_session(REALM, root.id, tab.tab_id, "app", action="x")
        with pytest.raises(SessionNotFoundError):
            await client.restart_root_authentication_session(REALM, root.id)
        assert AuthenticationSessionRemoval(removed=False) == await client.remove_authentication_session(
            REALM, root.id, tab.tab_id
        )
        assert not await client.remove_root_authentication_session(REALM, root.id)

    async def test_redis_ttl_is_the_deadline(
        self, client: AsyncSessionStoreClient, server: SessionStoreServer, clock: TestClock
    ) -> None:
        """The key's TTL is the time left until the deadline (whole-second timestamps)."""
        root = await client.get_or_create_root_authentication_session(REALM)
        left = root.expires_at_ms - clock.now_ms
        assert left - 2000 < await _pttl(server, REALM, root.id) <= left

    async def test_lifespan_is_the_longest_access_code_lifespan(
        self, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """With a realm policy, the lifespan is max(access code, user action, login lifespans)."""
        await client.set_realm_policy(
            RealmPolicy(
                realm=REALM,
                access_code_lifespan=120,
                access_code_lifespan_user_action=900,
                access_code_lifespan_login=600,
            )
        )
        root = await client.get_or_create_root_authentication_session(REALM)
        assert (root.timestamp + 900) * 1000 == root.expires_at_ms

        clock.advance(900)
        with pytest.raises(SessionNotFoundError):
            await client.get_root_authentication_session(REALM, root.id)

    async def test_every_change_moves_the_timestamp_and_deadline(
        self, client: AsyncSessionStoreClient, server: SessionStoreServer, clock: TestClock
    ) -> None:
        """Create-tab, update, remove-tab and restart each set the timestamp to now and re-expire."""
        root = await client.get_or_create_root_authentication_session(REALM)
        first = await client.create_authentication_session(REALM, root.id, "app")
        second = await client.create_authentication_session(REALM, root.id, "app")
        for change in (
            lambda: client.create_authentication_session(REALM, root.id, "app"),
            lambda: client.update_authentication_session(REALM, root.id, first.tab_id, "app"),
            lambda: client.remove_authentication_session(REALM, root.id, second.tab_id),
            lambda: client.restart_root_authentication_session(REALM, root.id),
        ):
            clock.advance(DEFAULT_LIFESPAN - 1)
            await change()
            got = await client.get_root_authentication_session(REALM, root.id)
            assert clock.now_ms // 1000 == got.timestamp
            assert (got.timestamp + DEFAULT_LIFESPAN) * 1000 == got.expires_at_ms
            assert DEFAULT_LIFESPAN * 1000 - 2000 < await _pttl(server, REALM, root.id)


class TestGetRootAuthenticationSession:
    """GetRootAuthenticationSession."""

    async def test_missing_root_is_not_found(self, client: AsyncSessionStoreClient) -> None:
        """An unknown id is NOT_FOUND."""
        with pytest.raises(SessionNotFoundError):
            await client.get_root_authentication_session(REALM, "nope")

    async def test_other_realm_is_not_found(self, client: AsyncSessionStoreClient) -> None:
        """A root is invisible from another realm."""
        root = await client.get_or_create_root_authentication_session(REALM)
        with pytest.raises(SessionNotFoundError):
            await client.get_root_authentication_session("realm-b", root.id)

    async def test_returns_every_tab(self, client: AsyncSessionStoreClient) -> None:
        """The root carries all its tabs, keyed by tab id."""
        root = await client.get_or_create_root_authentication_session(REALM)
        tabs = [await client.create_authentication_session(REALM, root.id, c) for c in ("a", "b", "a")]
        got = await client.get_root_authentication_session(REALM, root.id)
        assert {t.tab_id: t for t in tabs} == dict(got.tabs)


class TestRemoveRootAuthenticationSession:
    """RemoveRootAuthenticationSession."""

    async def test_removes_root_and_tabs_idempotently(
        self, client: AsyncSessionStoreClient, server: SessionStoreServer
    ) -> None:
        """The first removal removes the root with its tabs; the second finds nothing."""
        root = await client.get_or_create_root_authentication_session(REALM)
        await client.create_authentication_session(REALM, root.id, "app")

        assert await client.remove_root_authentication_session(REALM, root.id)
        assert not await client.remove_root_authentication_session(REALM, root.id)
        assert [] == await _root_keys(server)
        with pytest.raises(SessionNotFoundError):
            await client.get_root_authentication_session(REALM, root.id)

    async def test_other_realm_removes_nothing(self, client: AsyncSessionStoreClient) -> None:
        """Removing from another realm leaves the root alone."""
        root = await client.get_or_create_root_authentication_session(REALM)
        assert not await client.remove_root_authentication_session("realm-b", root.id)
        assert root == await client.get_root_authentication_session(REALM, root.id)


class TestRestartRootAuthenticationSession:
    """RestartRootAuthenticationSession."""

    async def test_restart_keeps_the_id_and_clears_the_tabs(
        self, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """Restart removes every tab, keeps the id and sets the timestamp to now."""
        root = await client.get_or_create_root_authentication_session(REALM)
        tab = await client.create_authentication_session(REALM, root.id, "app")
        clock.advance(30)

        restarted = await client.restart_root_authentication_session(REALM, root.id)

        now_s = clock.now_ms // 1000
        expected = RootAuthenticationSession(
            id=root.id, realm=REALM, timestamp=now_s, tabs={}, expires_at_ms=(now_s + DEFAULT_LIFESPAN) * 1000
        )
        assert expected == restarted
        assert expected == await client.get_root_authentication_session(REALM, root.id)
        with pytest.raises(SessionNotFoundError):
            await client.get_authentication_session(REALM, root.id, tab.tab_id, "app")

    async def test_missing_root_is_not_found(self, client: AsyncSessionStoreClient) -> None:
        """Restarting an unknown root is NOT_FOUND and creates nothing."""
        with pytest.raises(SessionNotFoundError):
            await client.restart_root_authentication_session(REALM, "nope")
        with pytest.raises(SessionNotFoundError):
            await client.get_root_authentication_session(REALM, "nope")


class TestCreateAuthenticationSession:
    """CreateAuthenticationSession."""

    async def test_new_tab_is_keycloak_shaped(
        self, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """A tab gets an 11-character base64url id, its client, and the current timestamp."""
        root = await client.get_or_create_root_authentication_session(REALM)
        clock.advance(5)

        tab = await client.create_authentication_session(REALM, root.id, "app")

        assert 11 == len(tab.tab_id)
        assert BASE64URL.fullmatch(tab.tab_id)
        expected = AuthenticationSession(
            tab_id=tab.tab_id, root_id=root.id, client_id="app", timestamp=clock.now_ms // 1000
        )
        assert expected == tab
        assert tab == await client.get_authentication_session(REALM, root.id, tab.tab_id, "app")

    async def test_missing_root_is_not_found(self, client: AsyncSessionStoreClient) -> None:
        """A tab needs a live root; none is created on the way."""
        with pytest.raises(SessionNotFoundError):
            await client.create_authentication_session(REALM, "nope", "app")
        with pytest.raises(SessionNotFoundError):
            await client.get_root_authentication_session(REALM, "nope")

    async def test_at_the_limit_the_oldest_tab_is_evicted(
        self, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """With auth_sessions_limit=3, a fourth tab evicts the tab with the smallest timestamp."""
        await client.set_realm_policy(RealmPolicy(realm=REALM, auth_sessions_limit=3))
        root = await client.get_or_create_root_authentication_session(REALM)
        tabs = []
        for client_id in ("c1", "c2", "c3"):
            tabs.append(await client.create_authentication_session(REALM, root.id, client_id))
            clock.advance(1)
        # Touching the oldest tab does not make it younger: eviction goes by the tab's timestamp.
        await client.update_authentication_session(REALM, root.id, tabs[0].tab_id, "c1", action="x")

        fourth = await client.create_authentication_session(REALM, root.id, "c4")

        got = await client.get_root_authentication_session(REALM, root.id)
        assert {t.tab_id for t in (tabs[1], tabs[2], fourth)} == set(got.tabs)
        with pytest.raises(SessionNotFoundError):
            await client.get_authentication_session(REALM, root.id, tabs[0].tab_id, "c1")

    async def test_tabs_of_one_second_are_evicted_in_creation_order(
        self, client: AsyncSessionStoreClient
    ) -> None:
        """Tabs created within one second are evicted first-created first."""
        await client.set_realm_policy(RealmPolicy(realm=REALM, auth_sessions_limit=3))
        root = await client.get_or_create_root_authentication_session(REALM)
        created = [await client.create_authentication_session(REALM, root.id, "app") for _ in range(6)]

        got = await client.get_root_authentication_session(REALM, root.id)

        assert {t.tab_id for t in created[3:]} == set(got.tabs)

    async def test_default_limit_is_300(self, client: AsyncSessionStoreClient) -> None:
        """Without a realm setting, a root holds 300 tabs; the 301st evicts the first."""
        root = await client.get_or_create_root_authentication_session(REALM)
        created = [await client.create_authentication_session(REALM, root.id, "app") for _ in range(301)]

        got = await client.get_root_authentication_session(REALM, root.id)

        assert {t.tab_id for t in created[1:]} == set(got.tabs)

    async def test_lowered_limit_evicts_down_to_it(self, client: AsyncSessionStoreClient) -> None:
        """After the realm lowers its limit, the next tab evicts the oldest tabs until it fits."""
        root = await client.get_or_create_root_authentication_session(REALM)
        created = [await client.create_authentication_session(REALM, root.id, "app") for _ in range(5)]
        await client.set_realm_policy(RealmPolicy(realm=REALM, auth_sessions_limit=2))

        newest = await client.create_authentication_session(REALM, root.id, "app")

        got = await client.get_root_authentication_session(REALM, root.id)
        assert {created[4].tab_id, newest.tab_id} == set(got.tabs)


class TestGetAuthenticationSession:
    """GetAuthenticationSession."""

    async def test_another_clients_tab_is_not_found(self, client: AsyncSessionStoreClient) -> None:
        """A tab belongs to its client: asked for with another client id it is NOT_FOUND."""
        root = await client.get_or_create_root_authentication_session(REALM)
        tab = await client.create_authentication_session(REALM, root.id, "app")
        with pytest.raises(SessionNotFoundError):
            await client.get_authentication_session(REALM, root.id, tab.tab_id, "other-app")
        assert tab == await client.get_authentication_session(REALM, root.id, tab.tab_id, "app")

    async def test_unknown_tab_and_other_realm_are_not_found(self, client: AsyncSessionStoreClient) -> None:
        """An unknown tab id, or the right tab from another realm, is NOT_FOUND."""
        root = await client.get_or_create_root_authentication_session(REALM)
        tab = await client.create_authentication_session(REALM, root.id, "app")
        with pytest.raises(SessionNotFoundError):
            await client.get_authentication_session(REALM, root.id, "AAAAAAAAAAA", "app")
        with pytest.raises(SessionNotFoundError):
            await client.get_authentication_session("realm-b", root.id, tab.tab_id, "app")


class TestRemoveAuthenticationSession:
    """RemoveAuthenticationSession."""

    async def test_removing_one_of_two_keeps_the_root(
        self, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """Removing a tab that is not the last keeps the root, stamped now."""
        root = await client.get_or_create_root_authentication_session(REALM)
        first = await client.create_authentication_session(REALM, root.id, "app")
        second = await client.create_authentication_session(REALM, root.id, "app")
        clock.advance(7)

        result = await client.remove_authentication_session(REALM, root.id, first.tab_id)

        assert AuthenticationSessionRemoval(removed=True, root_removed=False) == result
        got = await client.get_root_authentication_session(REALM, root.id)
        assert {second.tab_id: second} == dict(got.tabs)
        assert clock.now_ms // 1000 == got.timestamp

    async def test_removing_the_last_tab_removes_the_root(
        self, client: AsyncSessionStoreClient, server: SessionStoreServer
    ) -> None:
        """The last tab takes the root with it; a repeat removes nothing."""
        root = await client.get_or_create_root_authentication_session(REALM)
        tab = await client.create_authentication_session(REALM, root.id, "app")

        result = await client.remove_authentication_session(REALM, root.id, tab.tab_id)

        assert AuthenticationSessionRemoval(removed=True, root_removed=True) == result
        with pytest.raises(SessionNotFoundError):
            await client.get_root_authentication_session(REALM, root.id)
        assert [] == await _root_keys(server)
        again = await client.remove_authentication_session(REALM, root.id, tab.tab_id)
        assert AuthenticationSessionRemoval(removed=False, root_removed=False) == again

    async def test_unknown_tab_changes_nothing(
        self, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """Removing an unknown tab removes nothing and leaves the timestamp alone."""
        root = await client.get_or_create_root_authentication_session(REALM)
        await client.create_authentication_session(REALM, root.id, "app")
        before = await client.get_root_authentication_session(REALM, root.id)
        clock.advance(3)

        result = await client.remove_authentication_session(REALM, root.id, "AAAAAAAAAAA")

        assert AuthenticationSessionRemoval(removed=False) == result
        assert before == await client.get_root_authentication_session(REALM, root.id)


class TestUpdateAuthenticationSession:
    """UpdateAuthenticationSession."""

    @pytest.fixture
    async def tab(self, client: AsyncSessionStoreClient) -> AuthenticationSession:
        """A fresh tab of client "app" on a fresh root."""
        root = await client.get_or_create_root_authentication_session(REALM)
        return await client.create_authentication_session(REALM, root.id, "app")

    async def test_fields_set_and_clear(
        self, client: AsyncSessionStoreClient, tab: AuthenticationSession
    ) -> None:
        """Present fields are set, absent ones kept; an empty authenticated user clears it."""
        update = client.update_authentication_session
        await update(
            REALM,
            tab.root_id,
            tab.tab_id,
            "app",
            redirect_uri="https://app/cb",
            action="AUTHENTICATE",
            protocol="openid-connect",
            authenticated_user_id="user-1",
        )
        got = await update(REALM, tab.root_id, tab.tab_id, "app", action="REQUIRED_ACTIONS")
        assert ("https://app/cb", "REQUIRED_ACTIONS", "openid-connect", "user-1") == (
            got.redirect_uri,
            got.action,
            got.protocol,
            got.authenticated_user_id,
        )

        cleared = await update(REALM, tab.root_id, tab.tab_id, "app", authenticated_user_id="")

        assert "" == cleared.authenticated_user_id
        assert "https://app/cb" == cleared.redirect_uri
        assert cleared == await client.get_authentication_session(REALM, tab.root_id, tab.tab_id, "app")

    async def test_execution_status_set_and_clear(
        self, client: AsyncSessionStoreClient, tab: AuthenticationSession
    ) -> None:
        """Statuses are set per authenticator; cleared names go before the sets of the same call."""
        update = client.update_authentication_session
        await update(
            REALM,
            tab.root_id,
            tab.tab_id,
            "app",
            set_execution_status={
                "cookie": ExecutionStatus.ATTEMPTED,
                "password": ExecutionStatus.CHALLENGED,
            },
        )
        got = await update(
            REALM,
            tab.root_id,
            tab.tab_id,
            "app",
            clear_execution_status=["cookie", "password"],
            set_execution_status={"password": ExecutionStatus.SUCCESS, "otp": ExecutionStatus.SKIPPED},
        )
        assert {"password": ExecutionStatus.SUCCESS, "otp": ExecutionStatus.SKIPPED} == dict(
            got.execution_status
        )

        cleared = await update(
            REALM, tab.root_id, tab.tab_id, "app", clear_execution_status=["password", "otp"]
        )
        assert {} == dict(cleared.execution_status)

    async def test_required_actions_and_client_scopes(
        self, client: AsyncSessionStoreClient, tab: AuthenticationSession
    ) -> None:
        """Required actions are a set (removes, then adds); client scopes are replaced when given."""
        update = client.update_authentication_session
        await update(
            REALM,
            tab.root_id,
            tab.tab_id,
            "app",
            add_required_actions=["VERIFY_EMAIL", "UPDATE_PASSWORD", "VERIFY_EMAIL"],
            client_scopes=["profile", "email"],
        )
        got = await update(
            REALM,
            tab.root_id,
            tab.tab_id,
            "app",
            remove_required_actions=["VERIFY_EMAIL", "CONFIGURE_TOTP"],
            add_required_actions=["TERMS_AND_CONDITIONS"],
        )
        assert ("TERMS_AND_CONDITIONS", "UPDATE_PASSWORD") == got.required_actions
        assert ("email", "profile") == got.client_scopes

        replaced = await update(REALM, tab.root_id, tab.tab_id, "app", client_scopes=["roles"])
        assert ("roles",) == replaced.client_scopes
        emptied = await update(REALM, tab.root_id, tab.tab_id, "app", client_scopes=[])
        assert () == emptied.client_scopes
        assert ("TERMS_AND_CONDITIONS", "UPDATE_PASSWORD") == emptied.required_actions

    async def test_notes(self, client: AsyncSessionStoreClient, tab: AuthenticationSession) -> None:
        """Each note map takes sets and removes; clear_auth_notes clears auth notes only, before sets."""
        update = client.update_authentication_session
        await update(
            REALM,
            tab.root_id,
            tab.tab_id,
            "app",
            set_user_session_notes={"AUTH_TIME": "1", "u2": "x"},
            set_auth_notes={"a1": "1", "a2": "2"},
            set_client_notes={"response_type": "code", "nonce": "n"},
        )
        got = await update(
            REALM,
            tab.root_id,
            tab.tab_id,
            "app",
            remove_user_session_notes=["u2"],
            remove_client_notes=["nonce", "never-set"],
            remove_auth_notes=["a1"],
            set_auth_notes={"a3": "3"},
        )
        assert {"AUTH_TIME": "1"} == dict(got.user_session_notes)
        assert {"a2": "2", "a3": "3"} == dict(got.auth_notes)
        assert {"response_type": "code"} == dict(got.client_notes)

        cleared = await update(
            REALM, tab.root_id, tab.tab_id, "app", clear_auth_notes=True, set_auth_notes={"a4": "4"}
        )

        assert {"a4": "4"} == dict(cleared.auth_notes)
        assert {"AUTH_TIME": "1"} == dict(cleared.user_session_notes)
        assert {"response_type": "code"} == dict(cleared.client_notes)
        assert cleared == await client.get_authentication_session(REALM, tab.root_id, tab.tab_id, "app")

    async def test_a_name_both_removed_and_set_ends_up_set(
        self, client: AsyncSessionStoreClient, tab: AuthenticationSession
    ) -> None:
        """Removes apply before sets within one call."""
        got = await client.update_authentication_session(
            REALM, tab.root_id, tab.tab_id, "app", set_auth_notes={"k": "v"}, remove_auth_notes=["k"]
        )
        assert {"k": "v"} == dict(got.auth_notes)

    async def test_another_clients_tab_is_not_found_and_unchanged(
        self, client: AsyncSessionStoreClient, tab: AuthenticationSession, clock: TestClock
    ) -> None:
        """An update naming another client is NOT_FOUND and changes neither the tab nor the root."""
        before = await client.get_root_authentication_session(REALM, tab.root_id)
        clock.advance(5)
        with pytest.raises(SessionNotFoundError):
            await client.update_authentication_session(
                REALM, tab.root_id, tab.tab_id, "other-app", set_auth_notes={"k": "v"}
            )
        assert before == await client.get_root_authentication_session(REALM, tab.root_id)

    async def test_update_keeps_the_tab_timestamp(
        self, client: AsyncSessionStoreClient, tab: AuthenticationSession, clock: TestClock
    ) -> None:
        """An update stamps the root, not the tab: the tab keeps its creation time."""
        clock.advance(9)
        got = await client.update_authentication_session(REALM, tab.root_id, tab.tab_id, "app", action="x")
        assert tab.timestamp == got.timestamp
        root = await client.get_root_authentication_session(REALM, tab.root_id)
        assert tab.timestamp + 9 == root.timestamp

    async def test_too_many_notes_in_total_is_resource_exhausted_and_unchanged(
        self, client: AsyncSessionStoreClient, tab: AuthenticationSession, clock: TestClock
    ) -> None:
        """Notes that would exceed the per-map limit together are refused whole; nothing changes."""
        full = {f"n{i}": "v" for i in range(MAX_AUTH_NOTES)}
        await client.update_authentication_session(REALM, tab.root_id, tab.tab_id, "app", set_auth_notes=full)
        before = await client.get_root_authentication_session(REALM, tab.root_id)
        clock.advance(5)

        with pytest.raises(LimitExceededError):
            await client.update_authentication_session(
                REALM, tab.root_id, tab.tab_id, "app", action="x", set_auth_notes={"one-more": "v"}
            )

        assert before == await client.get_root_authentication_session(REALM, tab.root_id)

    async def test_oversized_tab_is_resource_exhausted_and_unchanged(
        self, client: AsyncSessionStoreClient, tab: AuthenticationSession
    ) -> None:
        """A tab whose notes together pass the byte limit is refused; nothing changes."""
        big = "x" * MAX_AUTH_NOTE_VALUE_LENGTH
        with pytest.raises(LimitExceededError):
            await client.update_authentication_session(
                REALM,
                tab.root_id,
                tab.tab_id,
                "app",
                set_auth_notes={f"n{i}": big for i in range(4)},
                set_client_notes={"c": big},
            )
        assert tab == await client.get_authentication_session(REALM, tab.root_id, tab.tab_id, "app")

    async def test_a_root_stays_small_enough_for_one_reply(self, client: AsyncSessionStoreClient) -> None:
        """The update that would take a root's tabs past MAX_ROOT_AUTH_SESSION_BYTES is refused; the
        root still reads back in one reply."""
        root = await client.get_or_create_root_authentication_session(REALM)
        notes = {f"n{i}": "x" * MAX_AUTH_NOTE_VALUE_LENGTH for i in range(3)}
        tab_bytes = 3 * MAX_AUTH_NOTE_VALUE_LENGTH
        filled = 0
        with pytest.raises(LimitExceededError):  # noqa: PT012 - the loop runs until the limit is hit
            for _ in range(MAX_ROOT_AUTH_SESSION_BYTES // tab_bytes + 2):
                tab = await client.create_authentication_session(REALM, root.id, "app")
                await client.update_authentication_session(
                    REALM, root.id, tab.tab_id, "app", set_auth_notes=notes
                )
                filled += 1

        assert (
            MAX_ROOT_AUTH_SESSION_BYTES // (tab_bytes + 200)
            <= filled
            <= MAX_ROOT_AUTH_SESSION_BYTES // tab_bytes
        )
        got = await client.get_root_authentication_session(REALM, root.id)
        assert filled + 1 == len(got.tabs)
        assert {} == dict(got.tabs[tab.tab_id].auth_notes)

    async def test_unicode_and_json_characters_round_trip(
        self, client: AsyncSessionStoreClient, tab: AuthenticationSession
    ) -> None:
        """Note names and values with quotes, slashes, escapes and non-ASCII come back unchanged."""
        notes = {'q"uote': 'va"l\\ue/', "ключ": "значение 🙂", "1": "numeric-looking name", "empty": ""}
        got = await client.update_authentication_session(
            REALM,
            tab.root_id,
            tab.tab_id,
            "app",
            set_client_notes=notes,
            redirect_uri='https://a/b?c=d&e="f"',
        )
        assert notes == dict(got.client_notes)
        assert 'https://a/b?c=d&e="f"' == got.redirect_uri


class TestBadInput:
    """Malformed requests are INVALID_ARGUMENT and change nothing."""

    @pytest.mark.parametrize(
        ("realm", "root_id"),
        [
            ("", "r"),
            ("x" * (MAX_ID_LENGTH + 1), "r"),
            ("realm", " "),
            ("realm", "a b"),
            ("realm", ".route"),
            ("realm", "x" * (MAX_ID_LENGTH + 1)),
            ("realm", "ctl\x01"),
        ],
    )
    async def test_bad_realm_or_root_id(
        self, client: AsyncSessionStoreClient, server: SessionStoreServer, realm: str, root_id: str
    ) -> None:
        """Get-or-create, get, restart and create-tab refuse the id and store nothing."""
        with pytest.raises(InvalidArgumentError):
            await client.get_or_create_root_authentication_session(realm, root_id)
        with pytest.raises(InvalidArgumentError):
            await client.get_root_authentication_session(realm, root_id)
        with pytest.raises(InvalidArgumentError):
            await client.restart_root_authentication_session(realm, root_id)
        with pytest.raises(InvalidArgumentError):
            await client.create_authentication_session(realm, root_id, "app")
        assert [] == await _root_keys(server)

    async def test_empty_root_id_is_refused_outside_get_or_create(
        self, client: AsyncSessionStoreClient
    ) -> None:
        """Only get-or-create takes an empty root id (to mint one)."""
        with pytest.raises(InvalidArgumentError):
            await client.get_root_authentication_session(REALM, "")
        with pytest.raises(InvalidArgumentError):
            await client.remove_root_authentication_session(REALM, "")
        with pytest.raises(InvalidArgumentError):
            await client.remove_authentication_session(REALM, "", "tab")

    @pytest.mark.parametrize(
        ("tab_id", "client_id"), [("", "app"), ("t b", "app"), ("tab", ""), ("tab", "a b")]
    )
    async def test_bad_tab_or_client_id(
        self, client: AsyncSessionStoreClient, tab_id: str, client_id: str
    ) -> None:
        """Tab and client ids must be non-empty without whitespace."""
        root = await client.get_or_create_root_authentication_session(REALM)
        with pytest.raises(InvalidArgumentError):
            await client.get_authentication_session(REALM, root.id, tab_id, client_id)
        with pytest.raises(InvalidArgumentError):
            await client.update_authentication_session(REALM, root.id, tab_id, client_id, action="x")

    async def test_create_tab_with_empty_client_is_refused(self, client: AsyncSessionStoreClient) -> None:
        """A tab needs a client."""
        root = await client.get_or_create_root_authentication_session(REALM)
        with pytest.raises(InvalidArgumentError):
            await client.create_authentication_session(REALM, root.id, "")
        assert {} == dict((await client.get_root_authentication_session(REALM, root.id)).tabs)

    @pytest.mark.parametrize(
        "change",
        [
            {"set_auth_notes": {"ok": "v", "big": "x" * (MAX_AUTH_NOTE_VALUE_LENGTH + 1)}},
            {"set_user_session_notes": {"": "v"}},
            {"set_client_notes": {"n" * 256: "v"}},
            {"set_client_notes": {"nul": "a\x00b"}},
            {"set_auth_notes": {f"n{i}": "v" for i in range(MAX_AUTH_NOTES + 1)}},
            {"remove_auth_notes": [f"n{i}" for i in range(MAX_AUTH_NOTES + 1)]},
            {"remove_client_notes": [""]},
            {"set_execution_status": {"cookie": ExecutionStatus.UNSPECIFIED}},
            {"set_execution_status": {"cookie": cast(ExecutionStatus, 99)}},
            {"set_execution_status": {"": ExecutionStatus.SUCCESS}},
            {"clear_execution_status": [""]},
            {"add_required_actions": [f"A{i}" for i in range(MAX_REQUIRED_ACTIONS + 1)]},
            {"remove_required_actions": [""]},
            {"client_scopes": ["ok", ""]},
            {"redirect_uri": "https://x/" + "p" * 5000},
            {"action": "a" * 1025},
            {"protocol": "p\x00"},
            {"authenticated_user_id": "user one"},
        ],
        ids=lambda change: next(iter(change)),
    )
    async def test_bad_update_changes_nothing(
        self, client: AsyncSessionStoreClient, clock: TestClock, change: dict[str, Any]
    ) -> None:
        """A bad part refuses the whole update (with its valid parts): tab and root stay as they were."""
        root = await client.get_or_create_root_authentication_session(REALM)
        tab = await client.create_authentication_session(REALM, root.id, "app")
        before = await client.get_root_authentication_session(REALM, root.id)
        clock.advance(5)

        with pytest.raises(InvalidArgumentError):
            await client.update_authentication_session(
                REALM, root.id, tab.tab_id, "app", **{**VALID_CHANGE, **change}
            )

        assert before == await client.get_root_authentication_session(REALM, root.id)


class TestUserSessionReusesTheRootId:
    """A browser login ends in a user session with the root authentication session's id."""

    async def test_user_session_with_the_root_id(self, client: AsyncSessionStoreClient) -> None:
        """CreateUserSession takes the root's id; the user session and the root live side by side."""
        root = await client.get_or_create_root_authentication_session(REALM)
        tab = await client.create_authentication_session(REALM, root.id, "app")

        session = await client.create_user_session(REALM, "user-1", session_id=root.id)

        assert root.id == session.id
        assert session == await client.get_user_session(REALM, root.id)
        # Login done: the finished tab goes, and with the last tab the root; the user session stays.
        assert AuthenticationSessionRemoval(removed=True, root_removed=True) == (
            await client.remove_authentication_session(REALM, root.id, tab.tab_id)
        )
        assert session == await client.get_user_session(REALM, root.id)


class TestClients:
    """The blocking client and server reflection know the AuthenticationSessions service."""

    async def test_sync_client(self, server: SessionStoreServer) -> None:
        """The blocking client carries every operation and raises the same errors."""

        def flow() -> None:  # blocking calls run in a thread: the server needs this event loop
            with SessionStoreClient(f"127.0.0.1:{server.port}") as sync:
                root = sync.get_or_create_root_authentication_session(REALM, "browser-1")
                tab = sync.create_authentication_session(REALM, root.id, "app")
                updated = sync.update_authentication_session(
                    REALM,
                    root.id,
                    tab.tab_id,
                    "app",
                    set_execution_status={"cookie": ExecutionStatus.SUCCESS},
                    set_auth_notes={"k": "v"},
                )
                assert updated == sync.get_authentication_session(REALM, root.id, tab.tab_id, "app")
                assert {tab.tab_id: updated} == dict(
                    sync.get_root_authentication_session(REALM, root.id).tabs
                )
                assert {} == dict(sync.restart_root_authentication_session(REALM, root.id).tabs)
                second = sync.create_authentication_session(REALM, root.id, "app")
                assert AuthenticationSessionRemoval(removed=True, root_removed=True) == (
                    sync.remove_authentication_session(REALM, root.id, second.tab_id)
                )
                assert not sync.remove_root_authentication_session(REALM, root.id)
                with pytest.raises(SessionNotFoundError):
                    sync.get_root_authentication_session(REALM, root.id)

        await asyncio.to_thread(flow)

    async def test_reflection_lists_the_service(self, server: SessionStoreServer) -> None:
        """Server reflection lists session_store.v1.AuthenticationSessions."""
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)  # type: ignore[arg-type]  # aio channels work; stubs say sync only
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            names: set[str] = set()
            async for reply in stub.ServerReflectionInfo(iter([request])):  # type: ignore[operator]  # untyped in the stubs
                names |= {s.name for s in reply.list_services_response.service}
        assert "session_store.v1.AuthenticationSessions" in names
