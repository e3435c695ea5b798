"""Session limits (Keycloak's user-session count limiter, keycloak-semantics.md §4) on real shards."""

from __future__ import annotations

import asyncio
import itertools
import statistics
from collections.abc import MutableMapping, Sequence
from typing import Any

import pytest
from structlog.testing import capture_logs

from session_store import (
    AsyncSessionStoreClient,
    ClientSession,
    InvalidArgumentError,
    LimitBehavior,
    RealmPolicy,
    SessionExistsError,
    SessionLimitExceededError,
    SessionLimits,
    SessionNotFoundError,
    UserSession,
)
from session_store.model.clock import TestClock
from session_store.model.ids import home_partition, lookup_partition
from session_store.server import SessionStoreServer
from session_store.storage import keys
from session_store.storage.sessions import MAX_LIMIT_ATTEMPTS
from tests.backends import BOTH_BACKENDS

pytestmark = BOTH_BACKENDS

REALM = "limited"
DENY = LimitBehavior.DENY_NEW_SESSION
TERMINATE = LimitBehavior.TERMINATE_OLDEST_SESSION
RACERS = 100
RACE_ROUNDS = 3
RACE_TIMEOUT_SECONDS = 60.0


def _ids(sessions: Sequence[UserSession]) -> set[str]:
    return {s.id for s in sessions}


async def _logins(
    client: AsyncSessionStoreClient, clock: TestClock, user: str, clients: Sequence[Sequence[str]]
) -> list[UserSession]:
    """One session per entry, a second apart (the first is the oldest), with those client sessions."""
    sessions = []
    for client_ids in clients:
        session = await client.create_user_session(REALM, user)
        for client_id in client_ids:
            await client.attach_client_session(REALM, session.id, client_id)
        sessions.append(session)
        clock.advance(1)
    return sessions


class TestCreateWithRealmLimit:
    """CreateUserSession with limits: the realm limit."""

    async def test_deny_refuses_the_session_past_the_limit(self, client: AsyncSessionStoreClient) -> None:
        """With 3 live sessions and limit 3, a fourth login is SESSION_LIMIT_EXCEEDED and changes nothing."""
        limits = SessionLimits(realm_limit=3)
        made = [await client.create_user_session(REALM, "alice", limits=limits) for _ in range(3)]

        with pytest.raises(SessionLimitExceededError):
            await client.create_user_session(REALM, "alice", limits=limits)
        assert _ids(made) == _ids(await client.list_user_sessions(REALM, "alice"))
        assert [()] * 3 == [s.evicted_session_ids for s in made]

    async def test_a_refused_login_leaves_no_broker_hint(
        self, client: AsyncSessionStoreClient, server: SessionStoreServer
    ) -> None:
        """Refused logins with broker ids take their lookup hints back: only the live session's remain."""
        limits = SessionLimits(realm_limit=1)
        made = await client.create_user_session(REALM, "alice", broker_user_id="idp-alice", limits=limits)
        for _ in range(3):
            with pytest.raises(SessionLimitExceededError):
                await client.create_user_session(REALM, "alice", broker_user_id="idp-alice", limits=limits)
        key = keys.broker_user_hints(
            lookup_partition(REALM, "bu", "idp-alice"), REALM, "idp-alice", offline=False
        )
        members = await server.router.shard_for(keys.partition_of(key)).command("ZRANGE", key, 0, -1)
        assert [f"{home_partition(made.id)}:{made.id}"] == members
        assert [made.id] == [
            s.id for s in await client.find_user_sessions_by_broker_user_id(REALM, "idp-alice")
        ]

    async def test_a_taken_id_leaves_hints_and_pointer_as_they_were(
        self, client: AsyncSessionStoreClient, server: SessionStoreServer
    ) -> None:
        """Another user's create with a taken caller-brought id is ALREADY_EXISTS and writes nothing."""
        made = await client.create_user_session(REALM, "alice", session_id="kc-taken", broker_user_id="idp-a")
        pointer = keys.pointer(home_partition("kc-taken"), "kc-taken")
        shard = server.router.shard_for(home_partition("kc-taken"))
        before = await shard.command("PEXPIRETIME", pointer)
        with pytest.raises(SessionExistsError):
            await client.create_user_session(REALM, "alice", session_id="kc-taken", broker_user_id="idp-b")
        key = keys.broker_user_hints(lookup_partition(REALM, "bu", "idp-b"), REALM, "idp-b", offline=False)
        assert 0 == await server.router.shard_for(keys.partition_of(key)).command("EXISTS", key)
        assert abs(before - await shard.command("PEXPIRETIME", pointer)) < 2000
        assert made.id == (await client.get_user_session(REALM, "kc-taken")).id

    async def test_terminate_removes_the_least_recently_refreshed(
        self, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """The oldest by lastSessionRefresh goes (not the first created), with its client sessions."""
        first, second, third = await _logins(client, clock, "alice", [["app"], ["app"], []])
        await client.touch_user_session(REALM, first.id)

        new = await client.create_user_session(
            REALM, "alice", limits=SessionLimits(realm_limit=3, behavior=TERMINATE)
        )
        assert (second.id,) == new.evicted_session_ids
        assert {first.id, third.id, new.id} == _ids(await client.list_user_sessions(REALM, "alice"))
        with pytest.raises(SessionNotFoundError):
            await client.get_user_session(REALM, second.id)
        assert 3 == await client.count_sessions(REALM)
        assert {"app": 1} == await client.get_client_session_stats(REALM)

    async def test_terminate_removes_enough_to_leave_room_for_one(
        self, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """With 5 sessions and a limit of 2, the 4 oldest go: count - (limit - 1)."""
        made = await _logins(client, clock, "alice", [[]] * 5)

        new = await client.create_user_session(
            REALM, "alice", limits=SessionLimits(realm_limit=2, behavior=TERMINATE)
        )
        assert [s.id for s in made[:4]] == list(new.evicted_session_ids)
        assert {made[4].id, new.id} == _ids(await client.list_user_sessions(REALM, "alice"))

    async def test_only_live_online_sessions_of_the_user_in_the_realm_count(
        self, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """Expired, logged-out, offline-only, other users' and other realms' sessions do not count."""
        await client.set_realm_policy(RealmPolicy(realm=REALM, sso_session_idle_timeout=100))
        expired = await client.create_user_session(REALM, "alice")
        await client.create_offline_session(REALM, expired.id)
        clock.advance(100)
        logged_out = await client.create_user_session(REALM, "alice")
        await client.remove_user_session(REALM, logged_out.id)
        await client.create_user_session(REALM, "bob")
        await client.create_user_session("elsewhere", "alice")
        live = await client.create_user_session(REALM, "alice")

        new = await client.create_user_session(REALM, "alice", limits=SessionLimits(realm_limit=2))
        assert () == new.evicted_session_ids
        assert {live.id, new.id} == _ids(await client.list_user_sessions(REALM, "alice"))

    async def test_no_limit_means_no_limit(self, client: AsyncSessionStoreClient) -> None:
        """Limits of 0 (Keycloak: <= 0 is off) let any number of sessions in."""
        limits = SessionLimits(realm_limit=0, client_limit=0, client_id="app")
        for _ in range(5):
            await client.create_user_session(REALM, "alice", limits=limits)

        assert 5 == len(await client.list_user_sessions(REALM, "alice"))

    async def test_a_denied_caller_brought_id_stays_free(self, client: AsyncSessionStoreClient) -> None:
        """A denied login with the caller's id releases the id: a later login may take it."""
        limits = SessionLimits(realm_limit=1)
        first = await client.create_user_session(REALM, "alice", limits=limits)
        with pytest.raises(SessionLimitExceededError):
            await client.create_user_session(REALM, "alice", session_id="auth-session-1", limits=limits)
        await client.remove_user_session(REALM, first.id)

        again = await client.create_user_session(REALM, "alice", session_id="auth-session-1", limits=limits)
        assert "auth-session-1" == again.id


class TestCreateWithClientLimit:
    """CreateUserSession with limits: the client limit, alone and with the realm limit."""

    async def test_deny_counts_sessions_with_the_client(
        self, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """Two sessions with "app" reach a client limit of 2; sessions without it do not count."""
        await _logins(client, clock, "alice", [["app"], ["app"], ["api"]])
        limits = SessionLimits(client_limit=2, client_id="app")

        with pytest.raises(SessionLimitExceededError):
            await client.create_user_session(REALM, "alice", limits=limits)
        ok = await client.create_user_session(
            REALM, "alice", limits=SessionLimits(client_limit=2, client_id="api")
        )
        assert () == ok.evicted_session_ids

    async def test_an_expired_client_session_does_not_count(
        self, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """A session whose "app" client session expired is not a session with "app"."""
        await client.set_realm_policy(RealmPolicy(realm=REALM, client_session_idle_timeout=10))
        await _logins(client, clock, "alice", [["app"]])
        clock.advance(10)

        new = await client.create_user_session(
            REALM, "alice", limits=SessionLimits(client_limit=1, client_id="app")
        )
        assert () == new.evicted_session_ids

    async def test_terminate_removes_the_oldest_with_the_client(
        self, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """Below the realm limit, the client limit alone terminates the oldest sessions with the client."""
        oldest_other, app_1, app_2 = await _logins(client, clock, "alice", [["api"], ["app"], ["app"]])

        new = await client.create_user_session(
            REALM,
            "alice",
            limits=SessionLimits(realm_limit=5, client_limit=2, client_id="app", behavior=TERMINATE),
        )
        assert (app_1.id,) == new.evicted_session_ids
        assert {oldest_other.id, app_2.id, new.id} == _ids(await client.list_user_sessions(REALM, "alice"))

    async def test_at_the_realm_limit_the_client_limit_is_applied_first(
        self, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """Keycloak: at the realm limit, the oldest sessions with the client go first, even when newer."""
        old_1, old_2, newest_app = await _logins(client, clock, "alice", [["api"], ["api"], ["app"]])

        new = await client.create_user_session(
            REALM,
            "alice",
            limits=SessionLimits(realm_limit=3, client_limit=1, client_id="app", behavior=TERMINATE),
        )
        assert (newest_app.id,) == new.evicted_session_ids
        assert {old_1.id, old_2.id, new.id} == _ids(await client.list_user_sessions(REALM, "alice"))

    async def test_at_the_realm_limit_the_realm_limit_takes_the_rest(
        self, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """When the client terminations leave the realm limit reached, the oldest of the rest go too."""
        old_1, app, old_2, newest = await _logins(client, clock, "alice", [["api"], ["app"], [], []])

        new = await client.create_user_session(
            REALM,
            "alice",
            limits=SessionLimits(realm_limit=2, client_limit=1, client_id="app", behavior=TERMINATE),
        )
        assert [app.id, old_1.id, old_2.id] == list(new.evicted_session_ids)
        assert {newest.id, new.id} == _ids(await client.list_user_sessions(REALM, "alice"))

    async def test_at_the_realm_limit_deny_denies(
        self, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """At the realm limit a deny behaviour refuses, whatever the client count."""
        await _logins(client, clock, "alice", [["api"], ["api"]])

        with pytest.raises(SessionLimitExceededError):
            await client.create_user_session(
                REALM, "alice", limits=SessionLimits(realm_limit=2, client_limit=5, client_id="app")
            )

    async def test_bad_limits_are_invalid_arguments(self, client: AsyncSessionStoreClient) -> None:
        """A negative limit, a bad client id or a client limit without a client id is refused."""
        with pytest.raises(InvalidArgumentError):
            SessionLimits(realm_limit=-1)
        with pytest.raises(InvalidArgumentError):
            SessionLimits(client_limit=1, client_id="a b")
        with pytest.raises(InvalidArgumentError):
            await client.create_user_session(REALM, "alice", limits=SessionLimits(client_limit=1))
        assert [] == await client.list_user_sessions(REALM, "alice")


class TestAttachWithLimits:
    """AttachClientSession with limits: the client limit of a new client login in an SSO session."""

    async def test_deny_refuses_a_new_client_session_past_the_client_limit(
        self, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """Another session with "app" reaches a client limit of 1: the attach is refused, nothing changes."""
        with_app, sso = await _logins(client, clock, "alice", [["app"], []])

        with pytest.raises(SessionLimitExceededError):
            await client.attach_client_session(REALM, sso.id, "app", limits=SessionLimits(client_limit=1))
        assert {} == dict((await client.get_user_session(REALM, sso.id)).client_sessions)
        assert ["app"] == list((await client.get_user_session(REALM, with_app.id)).client_sessions)

    async def test_terminate_logs_out_the_oldest_other_session_with_the_client(
        self, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """The attach terminates the oldest other sessions with the client and reports their ids."""
        app_1, app_2, _, sso = await _logins(client, clock, "alice", [["app"], ["app"], ["api"], []])

        attached = await client.attach_client_session(
            REALM, sso.id, "app", limits=SessionLimits(client_limit=2, behavior=TERMINATE)
        )
        assert (app_1.id,) == attached.evicted_session_ids
        assert ["app"] == list((await client.get_user_session(REALM, sso.id)).client_sessions)
        with pytest.raises(SessionNotFoundError):
            await client.get_user_session(REALM, app_1.id)
        assert 3 == len(await client.list_user_sessions(REALM, "alice"))
        assert app_2.id in _ids(await client.list_user_sessions(REALM, "alice"))

    async def test_a_session_that_has_the_client_is_not_limited(
        self, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """Re-authenticating a client the session already has never counts (Keycloak test L10)."""
        _, again = await _logins(client, clock, "alice", [["app"], ["app"]])

        replaced = await client.attach_client_session(
            REALM, again.id, "app", notes={"n": "1"}, limits=SessionLimits(client_limit=1)
        )
        assert ((), {"n": "1"}) == (replaced.evicted_session_ids, dict(replaced.notes))

    async def test_the_realm_limit_does_not_apply_to_an_attach(
        self, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """An attach is no new user session: only the client limit applies."""
        _, sso = await _logins(client, clock, "alice", [[], []])

        attached = await client.attach_client_session(
            REALM, sso.id, "app", limits=SessionLimits(realm_limit=1, client_limit=1)
        )
        assert isinstance(attached, ClientSession)

    async def test_caller_brought_ids_are_found(
        self, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """A session whose id lives through a pointer elsewhere is limited like any other."""
        other = await client.create_user_session(REALM, "alice", session_id="brought-1")
        await client.attach_client_session(REALM, other.id, "app")
        sso = await client.create_user_session(REALM, "alice", session_id="brought-2")

        attached = await client.attach_client_session(
            REALM, "brought-2.route-7", "app", limits=SessionLimits(client_limit=1, behavior=TERMINATE)
        )
        assert ("brought-1",) == attached.evicted_session_ids
        assert [sso.id] == [s.id for s in await client.list_user_sessions(REALM, "alice")]

    async def test_bad_attach_limits_are_invalid_arguments(
        self, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """Limits on an offline attach, or naming another client, are refused."""
        (session,) = await _logins(client, clock, "alice", [["app"]])
        await client.create_offline_session(REALM, session.id, ["app"])

        with pytest.raises(InvalidArgumentError):
            await client.attach_client_session(
                REALM, session.id, "api", offline=True, limits=SessionLimits(client_limit=1)
            )
        with pytest.raises(InvalidArgumentError):
            await client.attach_client_session(
                REALM, session.id, "api", limits=SessionLimits(client_limit=1, client_id="app")
            )

    async def test_a_missing_session_is_not_found(self, client: AsyncSessionStoreClient) -> None:
        """Limits do not change NOT_FOUND for a missing session."""
        with pytest.raises(SessionNotFoundError):
            await client.attach_client_session(REALM, "missing", "app", limits=SessionLimits(client_limit=1))


def _attempts(logs: Sequence[MutableMapping[str, Any]]) -> list[int]:
    """The script calls of each limited create or attach, from the storage layer's log lines."""
    return [int(e["attempts"]) for e in logs if e["event"] == "session_limits_attempts"]


def _report(what: str, attempts: list[int]) -> None:
    """Print the script calls per limited call (read with -s; the lead's report quotes them)."""
    print(
        f"\n{what}: {len(attempts)} calls, script attempts max {max(attempts)}, "
        f"mean {statistics.mean(attempts):.1f}, total {sum(attempts)}"
    )


class TestLimitRaces:
    """Many simultaneous logins of one user: the limit holds exactly, whatever the interleaving."""

    @pytest.mark.timeout(180)
    @pytest.mark.parametrize("behavior", [DENY, TERMINATE])
    async def test_parallel_logins_leave_exactly_the_limit(
        self, client: AsyncSessionStoreClient, behavior: LimitBehavior
    ) -> None:
        """100 parallel logins with a realm limit of 3 leave 3 sessions: deny refuses 97; terminate
        lets all in and reports exactly the sessions it removed."""
        limits = SessionLimits(realm_limit=3, behavior=behavior)
        all_attempts: list[int] = []
        for round_ in range(RACE_ROUNDS):
            user = f"racer-{round_}"

            async def login(user: str = user) -> UserSession | SessionLimitExceededError:
                try:
                    return await client.create_user_session(REALM, user, limits=limits)
                except SessionLimitExceededError as exc:
                    return exc

            with capture_logs() as logs:
                results = await asyncio.wait_for(
                    asyncio.gather(*(login() for _ in range(RACERS))), RACE_TIMEOUT_SECONDS
                )
            made = [r for r in results if isinstance(r, UserSession)]
            left = _ids(await client.list_user_sessions(REALM, user))
            evicted = list(itertools.chain.from_iterable(s.evicted_session_ids for s in made))
            assert 3 == len(left)
            if behavior == DENY:
                assert (3, RACERS - 3) == (len(made), RACERS - len(made))
                assert [] == evicted
                assert _ids(made) == left
            else:
                assert RACERS == len(made)
                assert sorted(_ids(made) - left) == sorted(evicted)
            attempts = _attempts(logs)
            assert RACERS == len(attempts)
            assert max(attempts) < MAX_LIMIT_ATTEMPTS
            all_attempts += attempts
        _report(f"{RACE_ROUNDS} x {RACERS} parallel logins, {behavior.name}", all_attempts)

    @pytest.mark.timeout(120)
    @pytest.mark.parametrize("behavior", [DENY, TERMINATE])
    async def test_parallel_client_logins_leave_exactly_the_client_limit(
        self, client: AsyncSessionStoreClient, clock: TestClock, behavior: LimitBehavior
    ) -> None:
        """30 sessions of one user attach "app" at once with a client limit of 3: 3 keep it."""
        sessions = await _logins(client, clock, "alice", [[]] * 30)

        async def attach(sid: str) -> ClientSession | SessionLimitExceededError:
            try:
                return await client.attach_client_session(
                    REALM, sid, "app", limits=SessionLimits(client_limit=3, behavior=behavior)
                )
            except SessionLimitExceededError as exc:
                return exc

        with capture_logs() as logs:
            results = await asyncio.wait_for(
                asyncio.gather(*(attach(s.id) for s in sessions)), RACE_TIMEOUT_SECONDS
            )
        attached = [r for r in results if isinstance(r, ClientSession)]
        left = await client.list_user_sessions(REALM, "alice")
        with_app = {s.id for s in left if "app" in s.client_sessions}
        evicted = list(itertools.chain.from_iterable(c.evicted_session_ids for c in attached))
        assert 3 == len(with_app)
        if behavior == DENY:
            assert (3, 30) == (len(attached), len(left))
        else:
            assert 30 == len(attached)
            assert sorted(_ids(sessions) - _ids(left)) == sorted(evicted)
            assert 27 == len(evicted)
        _report(f"30 parallel attaches, {behavior.name}", _attempts(logs))
