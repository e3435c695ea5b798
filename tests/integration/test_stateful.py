"""A hypothesis state machine that drives the real service side by side with the reference model.

Hypothesis state machines are synchronous, so the service runs on a private event loop in a
background thread: the in-process gRPC server on the real shards, its frozen test clock, and an async
client. Each step runs one operation through the client, applies it to `tests.reference`, compares
the answers, and then compares every read (get, list, counts, client stats) with the model, and every
session's lifecycle events in the shards' streams with the events the model recorded.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Coroutine, Iterable, Iterator
from typing import Any, ClassVar, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from session_store import (
    PreconditionFailedError,
    RealmPolicy,
    SessionNotFoundError,
    UserSession,
    UserSessionState,
)
from session_store.config import ShardSettings
from session_store.model.ids import user_partition
from session_store.server import SessionStoreServer
from session_store.storage import keys
from tests.backends import BOTH_BACKENDS, STANDALONE
from tests.harness import BackgroundService, background_service
from tests.reference import ENDINGS, ReferenceStore, RefEvent

pytestmark = BOTH_BACKENDS

T = TypeVar("T")

REALM_RM = "realm-rm"
"""A realm that allows remember-me."""
REALM_PLAIN = "realm-plain"
"""A realm that does not."""
REALMS = (REALM_RM, REALM_PLAIN)
USERS = ("alice", "bob")
CLIENTS = ("app", "admin", "api")
NOTE_NAMES = ("AUTH_TIME", "identity_provider", "k")
TICK = 100
"""Seconds per tick: every timeout and clock move is a whole number of ticks, bar half seconds.

Redis expires a session key in real time, after the test-clock time the session had left when it
was written; the test clock stands still between moves. With deadlines a tick apart, a session the
model holds alive has a minute or more of real time left: far more than an example takes.
"""
POLICIES = (
    RealmPolicy(
        realm=REALM_RM,
        sso_session_idle_timeout=90 * TICK,
        sso_session_max_lifespan=400 * TICK,
        sso_session_idle_timeout_remember_me=180 * TICK,
        sso_session_max_lifespan_remember_me=800 * TICK,
        remember_me=True,
        client_session_idle_timeout=30 * TICK,
        offline_session_idle_timeout=400 * TICK,
        offline_session_max_lifespan_enabled=True,
        offline_session_max_lifespan=900 * TICK,
        client_offline_session_idle_timeout=20 * TICK,
    ),
    RealmPolicy(
        realm=REALM_PLAIN,
        sso_session_idle_timeout=60 * TICK,
        sso_session_max_lifespan=300 * TICK,
        client_session_max_lifespan=150 * TICK,
        offline_session_idle_timeout=300 * TICK,
    ),
)
"""Short timeouts (in ticks), so that clock moves matter: client sessions can die long before their
user session (idle in one realm, max lifespan in the other), and offline ones before their session."""
CALL_TIMEOUT_SECONDS = 30.0
COUNT_EVERY_STEPS = 3
"""Steps between two count checks at least: a count scans all 4096 partitions."""
USER_PARTITIONS = sorted({user_partition(realm, user) for realm in REALMS for user in USERS})
"""Every partition a session of this machine lives in (a user's sessions share their partition)."""
EVENT_FIELDS = frozenset({"t", "r", "u", "s", "o", "c", "why", "at", "dl"})
"""The fields of a stream entry (storage/keys.py)."""


@pytest.fixture
def service(backend_shards: tuple[ShardSettings, ...]) -> Iterator[BackgroundService]:
    """A service on its own loop thread, for a synchronous hypothesis state machine."""
    with background_service(backend_shards, POLICIES) as svc:
        yield svc


async def _or_none(coro: Coroutine[Any, Any, T]) -> T | None:
    """The result, or None for NOT_FOUND."""
    try:
        return await coro
    except SessionNotFoundError:
        return None


def _by_id(sessions: list[UserSession]) -> list[UserSession]:
    return sorted(sessions, key=lambda s: s.id)


def _event(fields: dict[str, str]) -> RefEvent:
    """A stream entry as the model's event (absent fields are empty)."""
    assert set(fields) <= EVENT_FIELDS, f"unknown fields in {fields}"
    assert fields.get("o", "1") == "1", f"o is '1' or absent: {fields}"
    return RefEvent(
        type=fields["t"],
        realm=fields["r"],
        user_id=fields["u"],
        session_id=fields["s"],
        offline="o" in fields,
        at=int(fields["at"]),
        clients=tuple(json.loads(fields.get("c", "[]"))),
        why=fields.get("why", ""),
        deadline=int(fields["dl"]) if "dl" in fields else None,
    )


async def _sweep_and_read_streams(server: SessionStoreServer) -> list[tuple[str, RefEvent]]:
    """End every session past its deadline at the clock's now, then read every shard's stream.

    `sweep_all` passes over a partition the background sweeper has claimed, which may still be
    sweeping it when that returns; so the machine's partitions are swept directly as well (no
    claim). A session ends once whoever gets there first, so the two sweepers cannot disagree.
    Returns (shard name, event) pairs, in stream order per shard.
    """
    await server.sweeper.sweep_all()
    await asyncio.gather(
        *(server.sweeper.sweep_partition(server.router.shard_for(p), p) for p in USER_PARTITIONS)
    )
    names = list(server.router.shards)
    streams = await asyncio.gather(
        *(server.router.shards[name].command("XRANGE", keys.EVENTS, "-", "+") for name in names)
    )
    return [
        (name, _event(dict(zip(flat[::2], flat[1::2], strict=True))))
        for name, entries in zip(names, streams, strict=True)
        for _, flat in entries
    ]


def _by_session(events: Iterable[RefEvent]) -> dict[tuple[bool, str], list[RefEvent]]:
    """Events per session (offline flag, id), in their order."""
    found: dict[tuple[bool, str], list[RefEvent]] = {}
    for e in events:
        found.setdefault((e.offline, e.session_id), []).append(e)
    return found


def _lifecycles(events: list[RefEvent]) -> list[list[str]]:
    """The event types of one session key, split where a session begins (`created`): an offline
    copy may begin again under the id of one that ended."""
    found: list[list[str]] = []
    for e in events:
        if e.type == "created" or not found:
            found.append([])
        found[-1].append(e.type)
    return found


def _show(lives: list[list[str]]) -> str:
    """Lifecycles as one short line, runs collapsed ("expired x3"): a bug may repeat an event a lot."""
    runs = [[(t, len(list(g))) for t, g in itertools.groupby(life)] for life in lives]
    return " | ".join(", ".join(t if n == 1 else f"{t} x{n}" for t, n in life) for life in runs)


def _assert_events_match(
    expected: dict[tuple[bool, str], list[RefEvent]], got: dict[tuple[bool, str], list[RefEvent]]
) -> None:
    """Per session, in order: each lifecycle in the stream has at most one ending, last; the stream
    ends exactly the lifecycles the model ended; the types are the model's; then every field."""
    for key in sorted(expected.keys() | got.keys()):
        name = f"{'offline' if key[0] else 'online'} session {key[1]}"
        mine, theirs = expected.get(key, []), got.get(key, [])
        lives = _lifecycles(theirs)
        for life in lives:
            assert [t for t in life if t in ENDINGS] in ([], life[-1:]), (
                f"{name} ends more than once or not last: {_show(lives)}"
            )
        ended = [life[-1] in ENDINGS for life in _lifecycles(mine)]
        assert ended == [life[-1] in ENDINGS for life in lives], (
            f"{name}: the model ended {ended} of its lifecycles; the stream has {_show(lives)}"
        )
        assert _show(_lifecycles(mine)) == _show(lives), name
        assert mine == theirs, name


notes_st = st.dictionaries(st.sampled_from(NOTE_NAMES), st.sampled_from(("", "1", "x" * 20)), max_size=2)
offline_st = st.sampled_from((False, False, False, True))
"""Mostly online: most ids have no offline twin."""
other_realm_st = st.sampled_from((False,) * 7 + (True,))
"""Now and then the wrong realm, which must find nothing."""
back_st = st.one_of(st.just(0), st.integers(1, 30).map(lambda ticks: ticks * TICK))
"""Seconds before now to refresh at; 0 = now."""
seconds_st = st.one_of(
    st.integers(0, 30).map(lambda ticks: ticks * TICK),
    st.integers(0, 30).map(lambda ticks: ticks * TICK),
    st.sampled_from((29, 30, 31, 59, 60, 61, 89, 90, 150, 180, 200, 300, 400)).map(lambda t: t * TICK),
    st.integers(0, 200).map(lambda ticks: ticks * TICK),
    st.just(0.5),
)
"""Mostly short moves, so that sessions live through several steps while client sessions die;
sometimes a timeout's exact length, sometimes a long jump, and now and then half a second (session
times are whole seconds: a session started at x.5 s started at x s)."""

wait_st = st.one_of(st.just(0), st.integers(0, 60).map(lambda ticks: ticks * TICK))
"""Time between two requests on a session."""


class SessionMachine(RuleBasedStateMachine):
    """Create, touch, attach, detach, update, log out, revoke, go offline and let time pass.

    Rules pick their session with `st.data()` from the ids created so far, in creation order (so a
    failing example replays), mostly among the ids the model holds alive, now and then any id (a
    removed or expired one must stay gone). Touches mostly name clients attached to that session.
    """

    svc: ClassVar[BackgroundService]
    """The service under test; a subclass per test run sets it."""

    def __init__(self) -> None:
        """Start from empty shards and an empty model."""
        super().__init__()
        self.client = self.svc.client
        self.svc.reset()
        # The clock is shared by every example and only moves forward: start each on a whole second,
        # or a half second left by the last one changes which second a time falls in, so a replay
        # (while shrinking) can behave differently from its original.
        self.svc.clock.advance(-self.svc.clock.now_ms % 1000 / 1000)
        self.model = ReferenceStore(POLICIES)
        self.created: list[str] = []
        self.realm_of: dict[str, str] = {}
        self.attached: dict[str, set[str]] = {}
        self.caller_ids = itertools.count()
        self.steps_since_counts = 0

    @property
    def now(self) -> int:
        """The test clock, epoch ms."""
        return self.svc.clock.now_ms

    def _pick(self, data: st.DataObject, offline: bool = False) -> str:
        """A session id: mostly one the model holds alive, sometimes any id ever created.

        Half the time some time passes first, as it does between two requests: moving the clock
        inside a step keeps it moving in examples whose swarm left out the `advance` rule.
        """
        self.svc.clock.advance(data.draw(wait_st, label="wait"))
        live = [s for s in self.created if self.model.get(self.realm_of[s], s, offline, self.now)]
        anyone = data.draw(st.sampled_from((False, False, False, True)), label="any id")
        return data.draw(st.sampled_from(self.created if anyone or not live else live), label="session")

    def _clients(self, data: st.DataObject, sid: str, min_size: int = 0) -> list[str]:
        """Some client ids, mostly among those attached to the session (live or not)."""
        known = sorted(self.attached.get(sid, ()))
        pool = known if known and data.draw(st.sampled_from((True, True, True, False))) else CLIENTS
        return data.draw(
            st.lists(st.sampled_from(pool), unique=True, min_size=min_size, max_size=3), label="clients"
        )

    def _client(self, data: st.DataObject, sid: str) -> str:
        """One client id, mostly one attached to the session (live or not)."""
        return self._clients(data, sid, min_size=1)[0]

    def _realm(self, sid: str, other: bool) -> str:
        realm = self.realm_of[sid]
        return next(r for r in REALMS if r != realm) if other else realm

    @initialize(realm=st.sampled_from(REALMS), login_client=st.sampled_from(CLIENTS))
    def first_login(self, realm: str, login_client: str) -> None:
        """Start with one login and its client session, whichever rules this example runs."""
        self.login(
            realm=realm,
            user=USERS[0],
            remember_me=False,
            caller_id=False,
            notes={},
            login_client=login_client,
        )

    @rule(
        realm=st.sampled_from(REALMS),
        user=st.sampled_from(USERS),
        remember_me=st.booleans(),
        caller_id=st.booleans(),
        notes=notes_st,
        login_client=st.none() | st.sampled_from(CLIENTS),
    )
    def login(
        self,
        *,
        realm: str,
        user: str,
        remember_me: bool,
        caller_id: bool,
        notes: dict[str, str],
        login_client: str | None,
    ) -> None:
        """Create a user session (minted or caller-brought id) and, as a login does, a client session."""
        session_id = f"auth-{next(self.caller_ids)}-{realm}.node-1" if caller_id else ""
        fields: dict[str, Any] = {"login_username": f"{user}@x", "ip_address": "10.0.0.1", "notes": notes}
        try:
            got = self.svc.run(
                self.client.create_user_session(
                    realm,
                    user,
                    session_id=session_id,
                    auth_method="openid-connect",
                    remember_me=remember_me,
                    **fields,
                )
            )
        except PreconditionFailedError:
            with pytest.raises(PreconditionFailedError):
                self.model.create("-", realm, user, self.now, remember_me=remember_me, **fields)
            return
        expected = self.model.create(got.id, realm, user, self.now, remember_me=remember_me, **fields)
        assert expected == got
        if caller_id:
            assert session_id.split(".", 1)[0] == got.id
        self.created.append(got.id)
        self.realm_of[got.id] = realm
        if login_client is not None:
            self.attach_client(got.id, False, login_client, {})

    @precondition(lambda self: self.created)
    @rule(data=st.data(), offline=offline_st, back=back_st, other_realm=other_realm_st)
    def touch(self, data: st.DataObject, offline: bool, back: int, other_realm: bool) -> None:
        """Refresh a session and some client sessions, now or at an earlier second."""
        sid = self._pick(data, offline)
        self.touch_session(sid, offline, self._clients(data, sid), back, self._realm(sid, other_realm))

    @precondition(lambda self: self.created)
    @rule(data=st.data())
    def refresh_token_grant(self, data: st.DataObject) -> None:
        """Refresh as a refresh-token grant does: the online session and one client session, now."""
        sid = self._pick(data)
        client_id = self._client(data, sid)
        self.touch_session(sid, False, [client_id], 0, self.realm_of[sid])

    def touch_session(self, sid: str, offline: bool, client_ids: list[str], back: int, realm: str) -> None:
        """Touch through the service and the model and compare the answers."""
        at = 0 if back == 0 else self.now // 1000 - back
        got = self.svc.run(
            _or_none(
                self.client.touch_user_session(
                    realm, sid, offline=offline, last_session_refresh=at, client_ids=client_ids
                )
            )
        )
        assert self.model.touch(realm, sid, offline, at=at, client_ids=client_ids, now_ms=self.now) == got

    @precondition(lambda self: self.created)
    @rule(data=st.data(), offline=offline_st, client_id=st.sampled_from(CLIENTS), notes=notes_st)
    def attach(self, data: st.DataObject, offline: bool, client_id: str, notes: dict[str, str]) -> None:
        """Attach (or replace) a client session."""
        self.attach_client(self._pick(data, offline), offline, client_id, notes)

    def attach_client(self, sid: str, offline: bool, client_id: str, notes: dict[str, str]) -> None:
        """Attach through the service and the model and compare the answers."""
        realm = self.realm_of[sid]
        uri = f"https://{client_id}/cb"
        got = self.svc.run(
            _or_none(
                self.client.attach_client_session(
                    realm,
                    sid,
                    client_id,
                    offline=offline,
                    redirect_uri=uri,
                    protocol="openid-connect",
                    notes=notes,
                )
            )
        )
        expected = self.model.attach(realm, sid, offline, client_id, self.now, redirect_uri=uri, notes=notes)
        assert expected == got
        self.attached.setdefault(sid, set()).add(client_id)

    @precondition(lambda self: self.created)
    @rule(data=st.data(), offline=offline_st)
    def detach(self, data: st.DataObject, offline: bool) -> None:
        """Detach a client session."""
        sid = self._pick(data, offline)
        client_id = self._client(data, sid)
        realm = self.realm_of[sid]
        got = self.svc.run(self.client.detach_client_session(realm, sid, client_id, offline=offline))
        assert self.model.detach(realm, sid, offline, client_id, self.now) == got

    @precondition(lambda self: self.created)
    @rule(
        data=st.data(),
        offline=offline_st,
        set_notes=notes_st,
        remove_notes=st.lists(st.sampled_from(NOTE_NAMES), unique=True, max_size=2),
        state=st.none() | st.sampled_from(UserSessionState),
    )
    def update_notes(
        self,
        data: st.DataObject,
        offline: bool,
        set_notes: dict[str, str],
        remove_notes: list[str],
        state: UserSessionState | None,
    ) -> None:
        """Set and remove notes and maybe set the state."""
        sid = self._pick(data, offline)
        realm = self.realm_of[sid]
        got = self.svc.run(
            _or_none(
                self.client.update_user_session(
                    realm, sid, offline=offline, set_notes=set_notes, remove_notes=remove_notes, state=state
                )
            )
        )
        expected = self.model.update(
            realm, sid, offline, set_notes=set_notes, remove_notes=remove_notes, state=state, now_ms=self.now
        )
        assert expected == got

    @precondition(lambda self: self.created)
    @rule(data=st.data(), offline=offline_st, other_realm=other_realm_st, admin=st.booleans())
    def logout(self, data: st.DataObject, offline: bool, other_realm: bool, admin: bool) -> None:
        """Remove one session, as a logout or an administrator's revoke (from the wrong realm this
        removes nothing)."""
        sid = self._pick(data, offline)
        realm = self._realm(sid, other_realm)
        got = self.svc.run(
            self.client.remove_user_session(realm, sid, offline=offline, revoked_by_admin=admin)
        )
        assert self.model.remove(realm, sid, offline, self.now, revoked_by_admin=admin) == got

    @precondition(lambda self: self.created)
    @rule(realm=st.sampled_from(REALMS), user=st.sampled_from(USERS), offline=offline_st)
    def revoke_user(self, realm: str, user: str, offline: bool) -> None:
        """Remove all online (or all offline) sessions of a user."""
        got = self.svc.run(self.client.remove_user_sessions(realm, user, offline=offline))
        assert self.model.remove_user(realm, user, offline, self.now) == got

    @precondition(lambda self: self.created)
    @rule(data=st.data())
    def create_offline(self, data: st.DataObject) -> None:
        """Copy an online session and some client sessions offline, or refresh the offline copy."""
        sid = self._pick(data)
        self.copy_offline(sid, self._clients(data, sid))

    @precondition(lambda self: self.created)
    @rule(data=st.data())
    def offline_token_grant(self, data: st.DataObject) -> None:
        """A login asking for offline access: the client session, then the offline copy with it."""
        sid = self._pick(data)
        client_id = self._client(data, sid)
        self.attach_client(sid, False, client_id, {})
        self.copy_offline(sid, [client_id])

    def copy_offline(self, sid: str, client_ids: list[str]) -> None:
        """Create or refresh the offline copy through the service and the model; compare."""
        realm = self.realm_of[sid]
        got = self.svc.run(_or_none(self.client.create_offline_session(realm, sid, client_ids)))
        assert self.model.create_offline(realm, sid, client_ids, self.now) == got

    @rule(seconds=seconds_st)
    def advance(self, seconds: float) -> None:
        """Let time pass."""
        self.svc.clock.advance(seconds)

    @invariant()
    def reads_match_the_model(self) -> None:
        """Every id ever created reads back as the model says, and so does every user's list."""
        self.steps_since_counts += 1
        sids = list(self.created)
        pairs = [(r, u) for r in REALMS for u in USERS]
        flags = (False, True)

        async def snapshot() -> tuple[list[UserSession | None], list[list[UserSession]]]:
            c = self.client
            gets = asyncio.gather(
                *(_or_none(c.get_user_session(self.realm_of[s], s, offline=o)) for s in sids for o in flags)
            )
            lists = asyncio.gather(*(c.list_user_sessions(r, u, offline=o) for r, u in pairs for o in flags))
            return await gets, await lists

        gets, lists = self.svc.run(snapshot())
        now, m = self.now, self.model
        assert [m.get(self.realm_of[s], s, o, now) for s in sids for o in flags] == gets
        assert [m.list_user(r, u, o, now) for r, u in pairs for o in flags] == [_by_id(x) for x in lists]

    @invariant()
    def events_match_the_model(self) -> None:
        """After a sweep at the clock's now, each session's stream events are the model's events.

        Expiry events appear only when some path notices the deadline; sweeping first makes every
        session dead by now have its `expired` event, so the comparison does not depend on the
        background sweeper's timing. Checked in turn: each session's events are on one shard (so
        their order is total); each session the stream shows ended has one ending event, last, and
        the stream ends exactly the sessions the model ended; the types match the model's; then
        every field, `at` (the clock of the step that caused it) included. Hypothesis runs it after
        every step, so at every clock value before the clock moves again: an `expired` event's `at`
        is then the first clock value at or after the deadline, whichever path got there first.
        """
        stream = self.svc.run(_sweep_and_read_streams(self.svc.server))
        self.model.expire_due(self.now)
        shards: dict[tuple[bool, str], set[str]] = {}
        for shard, e in stream:
            shards.setdefault((e.offline, e.session_id), set()).add(shard)
        assert {} == {k: v for k, v in shards.items() if len(v) > 1}, "a session's events on two shards"
        _assert_events_match(_by_session(self.model.events), _by_session(e for _, e in stream))

    @precondition(lambda self: self.steps_since_counts >= COUNT_EVERY_STEPS)
    @rule(
        realm=st.sampled_from(REALMS), offline=st.booleans(), client_id=st.none() | st.sampled_from(CLIENTS)
    )
    def check_counts(self, realm: str, offline: bool, client_id: str | None) -> None:
        """The realm's session count and client stats (and maybe one client's count) match the model.

        A rule rather than an invariant: each count scans all 4096 partitions, too slow for every
        step; as a rule it is placed (and shrunk) like any other step.
        """
        self.steps_since_counts = 0
        c = self.client

        async def counts() -> tuple[int, dict[str, int], int | None]:
            count = await c.count_sessions(realm, offline=offline)
            stats = await c.get_client_session_stats(realm, offline=offline)
            if client_id is None:
                return count, stats, None
            return count, stats, await c.count_sessions(realm, client_id, offline=offline)

        count, stats, client_count = self.svc.run(counts())
        expected_stats = self.model.client_stats(realm, offline, self.now)
        assert self.model.count(realm, offline, self.now) == count
        assert expected_stats == stats
        if client_id is not None:
            assert expected_stats.get(client_id, 0) == client_count


def _bound(service: BackgroundService) -> type[SessionMachine]:
    """The machine class, bound to a running service."""

    class Machine(SessionMachine):
        svc = service

    return Machine


class TestStatefulSessions:
    """The service against the reference model of Keycloak's rules."""

    @pytest.mark.slow
    @pytest.mark.timeout(300)
    def test_service_matches_reference_model(self, service: BackgroundService, backend: str) -> None:
        """Any sequence of session operations and clock moves leaves the service where the model is."""
        run_state_machine_as_test(
            _bound(service),
            settings=settings(
                # The cluster run (16 groups, each step's counts over all of them) is slower per step:
                # fewer examples keep it within CI's budget; the standalone run draws the full set.
                max_examples=100 if backend == STANDALONE else 40,
                stateful_step_count=40,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            ),
        )


class TestStatefulRegressions:
    """Counterexamples of the state machine, replayed step by step with the same checks."""

    def test_refresh_does_not_revive_an_expired_client_session(self, service: BackgroundService) -> None:
        """A refresh that names a client session which expired at that instant leaves it expired."""
        m = _bound(service)()
        m.login(
            realm=REALM_RM, user="alice", remember_me=False, caller_id=False, notes={}, login_client="app"
        )
        sid = m.created[0]
        m.advance(seconds=30 * TICK)  # the client idle timeout; the user session (90 ticks) lives on
        m.touch_session(sid, False, ["app"], 0, REALM_RM)
        m.reads_match_the_model()
        m.events_match_the_model()
        assert {} == dict(m.svc.run(m.client.get_user_session(REALM_RM, sid)).client_sessions)

    def test_offline_copy_replaces_an_expired_offline_client_session(
        self, service: BackgroundService
    ) -> None:
        """Refreshing an offline copy copies a client again whose offline client session expired."""
        m = _bound(service)()
        m.login(
            realm=REALM_RM, user="alice", remember_me=False, caller_id=False, notes={}, login_client="app"
        )
        sid = m.created[0]
        m.copy_offline(sid, ["app"])
        m.advance(seconds=60 * TICK)  # past both client idle timeouts (30, 20), not the sessions' (90, 400)
        m.attach_client(sid, False, "app", {})
        m.copy_offline(sid, ["app"])
        m.reads_match_the_model()
        m.events_match_the_model()
        assert ["app"] == list(
            m.svc.run(m.client.get_user_session(REALM_RM, sid, offline=True)).client_sessions
        )
