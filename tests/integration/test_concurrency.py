"""Concurrent operations on one user's sessions, from many clients, end in a state the rules allow.

Every call is stamped with two ticks of one counter: when it was sent and when its answer came back.
A call whose answer came back before another was sent happened before it; calls whose spans overlap
may have run in either order. The checks only demand what every such order agrees on.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Any

import pytest

from session_store import (
    AsyncSessionStoreClient,
    SessionExistsError,
    SessionNotFoundError,
    UserSession,
)
from session_store.model.ids import home_partition, user_partition
from session_store.server import SessionStoreServer
from tests.backends import BOTH_BACKENDS

pytestmark = BOTH_BACKENDS

CLIENTS = ("app", "admin", "api", "cli")
CHANNELS = 8
OPERATIONS = 200
ROUNDS = 4
RACERS = 16
RACE_ROUNDS = 20


@contextlib.asynccontextmanager
async def _channels(server: SessionStoreServer, n: int) -> AsyncIterator[list[AsyncSessionStoreClient]]:
    """`n` clients, each with its own channel to the server, without retries."""
    async with contextlib.AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(
                AsyncSessionStoreClient(f"127.0.0.1:{server.port}", max_attempts=1)
            )
            for _ in range(n)
        ]


@dataclass
class Call:
    """One finished call: what it was, its span in ticks, and what it answered."""

    kind: str
    session_id: str
    client_id: str
    sent: int
    answered: int
    result: Any
    """The answer, or the SessionNotFoundError it raised."""

    @property
    def ok(self) -> bool:
        """It answered without NOT_FOUND."""
        return not isinstance(self.result, SessionNotFoundError)


class _Recorder:
    """Runs calls and stamps them with ticks of one counter."""

    def __init__(self) -> None:
        """No calls yet."""
        self._ticks = itertools.count()
        self.calls: list[Call] = []

    async def __call__(
        self, kind: str, session_id: str, client_id: str, coro: Coroutine[Any, Any, Any]
    ) -> None:
        """Run one call and record it; NOT_FOUND is recorded, anything else fails the test."""
        sent = next(self._ticks)
        try:
            result = await coro
        except SessionNotFoundError as exc:
            result = exc
        self.calls.append(Call(kind, session_id, client_id, sent, next(self._ticks), result))


def _before(a: Call, b: Call) -> bool:
    """`a` answered before `b` was sent."""
    return a.answered < b.sent


def _check_history(calls: list[Call], session_ids: list[str]) -> set[str]:
    """Check the removal rules on a history; returns the ids no call removed."""
    live: set[str] = set()
    for sid in session_ids:
        mine = [c for c in calls if c.session_id == sid]
        removes = [c for c in mine if c.kind == "remove"]
        winners = [c for c in removes if c.result is True]
        # Nothing expires (the clock stands still), so the first remove wins and only it.
        assert (1 if removes else 0) == len(winners), sid
        if not winners:
            live.add(sid)
            assert [] == [c for c in mine if not c.ok], sid
            continue
        removed = winners[0]
        for c in mine:
            if _before(removed, c):
                # No resurrection: once a remove returned True, the session stays gone.
                expected: Any = False if c.kind in ("remove", "detach") else SessionNotFoundError
                got = c.result if c.kind in ("remove", "detach") else type(c.result)
                assert (c.kind, expected) == (c.kind, got), sid
            elif _before(c, removed):
                assert (c.kind, True) == (c.kind, c.ok), sid
    return live


def _allowed_clients(calls: list[Call], sid: str, client_id: str, read: Call | None) -> set[bool]:
    """Whether a client session may be present: at a read, or (read None) at the end."""
    attaches = [
        c for c in calls if (c.kind, c.session_id, c.client_id) == ("attach", sid, client_id) and c.ok
    ]
    detaches = [c for c in calls if (c.kind, c.session_id, c.client_id) == ("detach", sid, client_id)]

    def may_run_before_read(c: Call) -> bool:
        return read is None or c.sent < read.answered

    def surely_before_read(c: Call) -> bool:
        return read is None or _before(c, read)

    # Present for sure: an attach done before the read, and no detach that could come after it.
    surely = any(
        surely_before_read(a) and not any(not _before(d, a) and may_run_before_read(d) for d in detaches)
        for a in attaches
    )
    # Absent for sure: no attach could run before the read, or a detach surely came after all of them.
    possible = [a for a in attaches if may_run_before_read(a)]
    gone = not possible or any(
        surely_before_read(d) and all(_before(a, d) for a in possible) for d in detaches
    )
    assert not (surely and gone)
    if surely:
        return {True}
    return {False} if gone else {True, False}


def _schedule(
    clients: list[AsyncSessionStoreClient], realm: str, sids: list[str], rnd: random.Random, record: _Recorder
) -> list[Coroutine[Any, Any, None]]:
    """OPERATIONS random calls on the sessions, spread over the clients, not started yet."""
    ops: list[Coroutine[Any, Any, None]] = []
    for _ in range(OPERATIONS):
        c, sid, cid = rnd.choice(clients), rnd.choice(sids), rnd.choice(CLIENTS)
        kind = rnd.choices(("touch", "attach", "detach", "get", "remove"), weights=(6, 8, 4, 4, 1))[0]
        if kind == "touch":
            names = rnd.sample(CLIENTS, rnd.randint(0, 2))
            ops.append(record(kind, sid, "", c.touch_user_session(realm, sid, client_ids=names)))
        elif kind == "attach":
            ops.append(record(kind, sid, cid, c.attach_client_session(realm, sid, cid)))
        elif kind == "detach":
            ops.append(record(kind, sid, cid, c.detach_client_session(realm, sid, cid)))
        elif kind == "get":
            ops.append(record(kind, sid, "", c.get_user_session(realm, sid)))
        else:
            ops.append(record(kind, sid, "", c.remove_user_session(realm, sid)))
    return ops


async def _live_clients(client: AsyncSessionStoreClient, realm: str, sids: list[str]) -> dict[str, set[str]]:
    """The live sessions among `sids`, each with its live client ids."""
    found: dict[str, set[str]] = {}
    for sid in sids:
        with contextlib.suppress(SessionNotFoundError):
            found[sid] = set((await client.get_user_session(realm, sid)).client_sessions)
    return found


@pytest.mark.slow
@pytest.mark.timeout(60)
class TestConcurrentOperations:
    """Touches, attaches, detaches, reads and logouts racing on one user's sessions."""

    async def test_mixed_operations_end_in_an_allowed_state(self, server: SessionStoreServer) -> None:
        """No lost client session, no resurrected session, and counts equal to the live set."""
        async with _channels(server, CHANNELS) as clients:
            for round_ in range(ROUNDS):
                realm, user = f"realm-{round_}", "alice"
                sids = [(await clients[0].create_user_session(realm, user)).id for _ in range(3)]
                sids += [
                    (await clients[0].create_user_session(realm, user, session_id=f"auth-{realm}-{i}")).id
                    for i in range(2)
                ]
                record = _Recorder()
                rnd = random.Random(round_)  # noqa: S311 - a reproducible schedule, not a secret
                await asyncio.gather(*_schedule(clients, realm, sids, rnd, record))
                calls = record.calls
                live = _check_history(calls, sids)

                # Every read saw client sessions the history allows.
                for read in (c for c in calls if c.kind in ("get", "touch") and c.ok):
                    seen = set(read.result.client_sessions)
                    for cid in CLIENTS:
                        allowed = _allowed_clients(calls, read.session_id, cid, read)
                        assert (read.session_id, cid, True) == (
                            read.session_id,
                            cid,
                            (cid in seen) in allowed,
                        )

                # The end state: the history's live sessions with allowed client sessions; counts agree.
                final = await _live_clients(clients[0], realm, sids)
                assert live == set(final)
                for sid, present in final.items():
                    for cid in CLIENTS:
                        allowed = _allowed_clients(calls, sid, cid, None)
                        assert (sid, cid, True) == (sid, cid, (cid in present) in allowed)
                listed = await clients[1].list_user_sessions(realm, user)
                assert final == {s.id: set(s.client_sessions) for s in listed}
                per_client = {cid: sum(cid in present for present in final.values()) for cid in CLIENTS}
                assert len(final) == await clients[2].count_sessions(realm)
                stats = await clients[3].get_client_session_stats(realm)
                assert {k: v for k, v in per_client.items() if v} == stats
                for cid in CLIENTS:
                    assert per_client[cid] == await clients[4].count_sessions(realm, cid)


def _user_at_home(realm: str, session_id: str) -> str:
    """A user whose partition is the session id's home partition (its session needs no pointer)."""
    home = home_partition(session_id)
    return next(u for u in (f"user-{i}" for i in itertools.count()) if user_partition(realm, u) == home)


async def _race(
    clients: list[AsyncSessionStoreClient], realm: str, users: list[str], session_id: str
) -> list[UserSession | SessionExistsError]:
    """One concurrent create per user, all with `session_id`; each answer or ALREADY_EXISTS."""

    async def create(i: int) -> UserSession | SessionExistsError:
        try:
            return await clients[i % len(clients)].create_user_session(realm, users[i], session_id=session_id)
        except SessionExistsError as exc:
            return exc

    return list(await asyncio.gather(*(create(i) for i in range(len(users)))))


@pytest.mark.slow
@pytest.mark.timeout(60)
class TestConcurrentCreate:
    """Creates racing for one caller-brought session id."""

    @pytest.mark.parametrize("same_user", [True, False], ids=["same-user", "different-users"])
    async def test_exactly_one_create_wins(self, server: SessionStoreServer, same_user: bool) -> None:
        """Exactly one create succeeds, the others get ALREADY_EXISTS, and the winner is found by id.

        With different users, one racer lives in the id's home partition, where its session needs no
        pointer to another partition: the id is just as taken, whichever racer wins.
        """
        async with _channels(server, CHANNELS) as clients:
            for round_ in range(RACE_ROUNDS):
                realm, session_id = f"realm-{round_}", f"auth-session-{round_}"
                users = ["alice"] * RACERS
                if not same_user:
                    users = [f"racer-{i}" for i in range(RACERS - 1)]
                    users.insert(round_ % RACERS, _user_at_home(realm, session_id))
                results = await _race(clients, realm, users, session_id)
                winners = [r for r in results if isinstance(r, UserSession)]
                assert (1, RACERS - 1) == (len(winners), len(results) - len(winners))
                got = await clients[0].get_user_session(realm, session_id)
                assert (session_id, winners[0].user_id) == (got.id, got.user_id)
                listed = await clients[1].list_user_sessions(realm, winners[0].user_id)
                assert [session_id] == [s.id for s in listed]
                assert 1 == await clients[2].count_sessions(realm)
