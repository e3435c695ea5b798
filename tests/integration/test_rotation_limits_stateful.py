"""A hypothesis state machine for refresh-token rotation and session limits against a dict model.

The service runs on a private event loop in a background thread (hypothesis state machines are
synchronous): the in-process gRPC server on the real shards, its frozen test clock, and a client.
Logins (with and without limits), SSO logins into new clients (attach with limits), refreshes and
introspections of any token ever issued, logouts, detaches and small clock moves are applied to the
service and to the model below, which restates keycloak-semantics.md §3 and §4 on its own. Clock
moves stay far below every timeout, so nothing expires here: expiry is test_stateful.py's subject.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import pytest
from hypothesis import HealthCheck, event, settings
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
    ClientSession,
    LimitBehavior,
    RealmPolicy,
    RefreshTokenReuseError,
    RefreshTokenUse,
    SessionLimitExceededError,
    SessionLimits,
    SessionNotFoundError,
    SessionStoreError,
    StaleRefreshTokenError,
    UserSession,
)
from session_store.config import ShardSettings
from tests.harness import BackgroundService, background_service

T = TypeVar("T")

MAX_REUSE = {"rot0": 0, "rot1": 1}
"""Realms with revoke_refresh_token on, and their refresh_token_max_reuse."""
PLAIN = "plain"
"""A realm with revoke_refresh_token off."""
REALMS = (*MAX_REUSE, PLAIN)
USERS = ("alice", "bob")
CLIENTS = ("app", "api")
CALL_TIMEOUT_SECONDS = 30.0


# --- the reference model ------------------------------------------------------------------------


@dataclass
class RefClient:
    """A client session: timestamps (s) and rotation chains {reuse id: [token id, uses, last iat]}."""

    timestamp: int
    started: int
    chains: dict[str, list[Any]] = field(default_factory=dict)


@dataclass
class RefSession:
    """A live online user session."""

    realm: str
    user: str
    started: int
    last_refresh: int
    clients: dict[str, RefClient] = field(default_factory=dict)


@dataclass(frozen=True)
class Token:
    """A refresh token the identity server issued: its session, client, id, chain and iat."""

    realm: str
    session_id: str
    client_id: str
    token_id: str
    reuse_id: str
    issued_at: int


class Rejected(Exception):  # noqa: N818 - a model outcome, not an error of the model
    """The model's answer when the service must raise `error`."""

    def __init__(self, error: type[SessionStoreError]) -> None:
        """Remember which error the service must raise."""
        super().__init__(error.__name__)
        self.error = error


class Model:
    """Sessions, client sessions and rotation state as dicts; Keycloak's §3 and §4 as plain code."""

    def __init__(self) -> None:
        """No sessions."""
        self.sessions: dict[str, RefSession] = {}

    def user_sessions(self, realm: str, user: str) -> dict[str, RefSession]:
        """The live sessions of a user in a realm."""
        return {i: s for i, s in self.sessions.items() if (s.realm, s.user) == (realm, user)}

    def victims(
        self,
        others: dict[str, RefSession],
        limits: SessionLimits,
        client_id: str,
        *,
        new_user_session: bool,
    ) -> list[str]:
        """UserSessionLimitsAuthenticator: the sessions to terminate; raises Rejected to deny."""

        def oldest(ids: list[str], limit: int) -> list[str]:
            ordered = sorted(ids, key=lambda i: (others[i].last_refresh, others[i].started, i))
            return ordered[: max(0, len(ids) - (limit - 1))]

        def exceeds(count: int, limit: int) -> bool:
            return limit > 0 and count >= limit

        with_client = (
            [i for i, s in others.items() if client_id in s.clients] if limits.client_limit > 0 else []
        )
        terminate = limits.behavior == LimitBehavior.TERMINATE_OLDEST_SESSION
        if new_user_session and exceeds(len(others), limits.realm_limit):
            if not terminate:
                raise Rejected(SessionLimitExceededError)
            gone = oldest(with_client, limits.client_limit) if limits.client_limit > 0 else []
            if exceeds(len(others) - len(gone), limits.realm_limit):
                gone += oldest([i for i in others if i not in gone], limits.realm_limit)
            return gone
        if exceeds(len(with_client), limits.client_limit):
            if not terminate:
                raise Rejected(SessionLimitExceededError)
            return oldest(with_client, limits.client_limit)
        return []

    def create(self, sid: str, realm: str, user: str, now_s: int, limits: SessionLimits | None) -> list[str]:
        """A login; returns the terminated session ids."""
        gone: list[str] = []
        if limits is not None and limits.enabled:
            others = self.user_sessions(realm, user)
            gone = self.victims(others, limits, limits.client_id, new_user_session=True)
        for victim in gone:
            del self.sessions[victim]
        self.sessions[sid] = RefSession(realm, user, now_s, now_s)
        return gone

    def attach(self, sid: str, client_id: str, now_s: int, limits: SessionLimits | None) -> list[str]:
        """An attach (a new client login with limits); returns the terminated session ids."""
        session = self.sessions[sid]
        gone: list[str] = []
        if limits is not None and limits.client_limit > 0 and client_id not in session.clients:
            others = {i: s for i, s in self.user_sessions(session.realm, session.user).items() if i != sid}
            gone = self.victims(others, limits, client_id, new_user_session=False)
        for victim in gone:
            del self.sessions[victim]
        session.clients[client_id] = RefClient(now_s, now_s)
        return gone

    def use(self, token: Token, new_issued_at: int, *, introspect: bool, now_s: int) -> tuple[int, RefClient]:
        """A refresh (or introspection) of a token: the use count and client session, or Rejected."""
        session = self.sessions.get(token.session_id)
        if session is None or session.realm != token.realm or token.client_id not in session.clients:
            raise Rejected(SessionNotFoundError)
        client = session.clients[token.client_id]
        iat = token.issued_at
        if iat + 1 < session.started or iat + 1 < client.started:
            raise Rejected(StaleRefreshTokenError)
        count = 0
        if token.realm in MAX_REUSE:
            seen, uses, last = client.chains.get(token.reuse_id, [None, 0, 0])
            error: type[SessionStoreError] | None = None
            if seen is not None and seen != token.token_id and iat < last:
                error = StaleRefreshTokenError
            elif seen != token.token_id and introspect:
                uses = 0
            else:
                if seen != token.token_id:
                    seen, uses = token.token_id, 0
                if uses > MAX_REUSE[token.realm]:
                    error = RefreshTokenReuseError
            if error is not None:
                if not introspect:
                    del session.clients[token.client_id]
                raise Rejected(error)
            count = uses
            if not introspect:
                count = uses + 1
                client.chains[token.reuse_id] = [seen, count, new_issued_at or now_s]
        if not introspect:
            at = new_issued_at if 0 < new_issued_at <= now_s else now_s
            client.timestamp = max(client.timestamp, at)
            session.last_refresh = max(session.last_refresh, at)
        return count, client

    def view(self, realm: str, user: str) -> list[tuple[str, int, int, dict[str, tuple[int, int]]]]:
        """What a list of the user's sessions must show: ids, times and client sessions' times."""
        return sorted(
            (i, s.started, s.last_refresh, {c: (x.timestamp, x.started) for c, x in s.clients.items()})
            for i, s in self.user_sessions(realm, user).items()
        )


def _view(sessions: list[UserSession]) -> list[tuple[str, int, int, dict[str, tuple[int, int]]]]:
    return sorted(
        (
            s.id,
            s.started,
            s.last_session_refresh,
            {c: (x.timestamp, x.started) for c, x in s.client_sessions.items()},
        )
        for s in sessions
    )


# --- the service on its own loop -----------------------------------------------------------------


ROTATION_POLICIES = tuple(
    RealmPolicy(realm=realm, revoke_refresh_token=True, refresh_token_max_reuse=max_reuse)
    for realm, max_reuse in MAX_REUSE.items()
)
"""Rotation on in every realm, each with its own maximum reuse."""


def _pick(data: st.DataObject, items: Sequence[T], label: str) -> T:
    """One of `items`, drawn so that replays draw the same way however many items there are.

    The lists drawn from (sessions, tokens) hold the service's outcomes, and a limit's tie between
    equally old sessions is broken by their random ids: sampling the list itself would make
    hypothesis see a different strategy on replay (FlakyStrategyDefinition).
    """
    return items[data.draw(st.integers(0, 2**16 - 1), label=label) % len(items)]


@pytest.fixture
def service(redis_shards: tuple[ShardSettings, ...]) -> Iterator[BackgroundService]:
    """A service on its own loop thread, for a synchronous hypothesis state machine."""
    with background_service(redis_shards, ROTATION_POLICIES) as svc:
        yield svc


# --- the machine ---------------------------------------------------------------------------------

limits_st = st.none() | st.builds(
    SessionLimits,
    realm_limit=st.integers(0, 3),
    client_limit=st.integers(0, 2),
    client_id=st.sampled_from(CLIENTS),
    behavior=st.sampled_from(LimitBehavior),
)
attach_limits_st = st.none() | st.builds(
    SessionLimits, client_limit=st.sampled_from((0, 1, 1, 2)), behavior=st.sampled_from(LimitBehavior)
)
seconds_st = st.sampled_from((0, 0, 0.5, 1, 1, 2, 3))
"""Small moves: same-second tokens (Keycloak compares whole seconds) and a few seconds apart."""


class RotationLimitsMachine(RuleBasedStateMachine):
    """Logins with limits, new client logins with limits, refreshes, introspections, logouts, time."""

    svc: ClassVar[BackgroundService]
    """The service under test; a subclass per test run sets it."""

    def __init__(self) -> None:
        """Start from empty shards and an empty model, at the start of a whole second."""
        super().__init__()
        self.svc.reset()
        # The clock carries on from the previous example: align it, so that which steps share a
        # second (Keycloak compares whole seconds) is the same whenever an example is replayed.
        self.svc.clock.advance((-self.svc.clock.now_ms % 1000) / 1000)
        self.client = self.svc.client
        self.model = Model()
        self.created: list[tuple[str, str]] = []
        self.tokens: list[Token] = []
        self.used: list[Token] = []
        self.serial = itertools.count()
        self.home = REALMS[0]

    @property
    def now_s(self) -> int:
        """The test clock, epoch seconds."""
        return self.svc.clock.now_ms // 1000

    def _issue(self, realm: str, sid: str, client_id: str, reuse_id: str, issued_at: int) -> None:
        self.tokens.append(Token(realm, sid, client_id, f"jti-{next(self.serial)}", reuse_id, issued_at))

    def _check_outcome(self, got: object, expected: object) -> None:
        """Both raised the same error, or neither raised."""
        event(f"outcome: {type(got).__name__}")
        if isinstance(expected, Rejected):
            assert expected.error is type(got), (expected.error, got)
        else:
            assert not isinstance(got, SessionStoreError), got

    @initialize(realm=st.sampled_from(REALMS), client_id=st.sampled_from(CLIENTS))
    def first_login(self, realm: str, client_id: str) -> None:
        """Start with one login in the realm most of this example's logins go to."""
        self.home = realm
        self.create(realm, USERS[0], None, client_id)

    @rule(
        data=st.data(),
        user=st.sampled_from((*USERS, USERS[0])),
        limits=limits_st,
        client_id=st.sampled_from(CLIENTS),
    )
    def login(self, data: st.DataObject, user: str, limits: SessionLimits | None, client_id: str) -> None:
        """A login (mostly in the example's realm, so that limits are reached), with limits."""
        home = _pick(data, (True, True, True, False), "home realm")
        realm = self.home if home else _pick(data, REALMS, "realm")
        self.create(realm, user, limits, client_id)

    def create(self, realm: str, user: str, limits: SessionLimits | None, client_id: str) -> None:
        """A login (create with limits), its client session and its first refresh token."""
        got = self.svc.outcome(self.client.create_user_session(realm, user, limits=limits))
        if isinstance(got, SessionLimitExceededError):
            event("login denied")
            with pytest.raises(Rejected):
                self.model.create("-", realm, user, self.now_s, limits)
            return
        assert isinstance(got, UserSession), got
        assert list(got.evicted_session_ids) == self.model.create(got.id, realm, user, self.now_s, limits)
        event(f"login terminated {len(got.evicted_session_ids)}")
        self.created.append((realm, got.id))
        self.attach_client(realm, got.id, client_id, None)

    def attach_client(self, realm: str, sid: str, client_id: str, limits: SessionLimits | None) -> None:
        """Attach through the service and the model; a new chain's token on success."""
        got = self.svc.outcome(self.client.attach_client_session(realm, sid, client_id, limits=limits))
        if sid not in self.model.sessions:
            assert isinstance(got, SessionNotFoundError), got
            return
        try:
            gone = self.model.attach(sid, client_id, self.now_s, limits)
        except Rejected as rejected:
            self._check_outcome(got, rejected)
            return
        assert isinstance(got, ClientSession), got
        assert (list(got.evicted_session_ids), got.timestamp, got.started) == (gone, self.now_s, self.now_s)
        event(f"attach terminated {len(gone)}")
        self._issue(realm, sid, client_id, f"chain-{next(self.serial)}", self.now_s)

    @precondition(lambda self: self.created)
    @rule(data=st.data(), limits=attach_limits_st)
    def sso_login(self, data: st.DataObject, limits: SessionLimits | None) -> None:
        """A client login into an existing session (mostly a live one, mostly a client it lacks)."""
        live = [(r, i) for r, i in self.created if i in self.model.sessions]
        anyone = not live or _pick(data, (False, False, False, True), "any session")
        realm, sid = _pick(data, self.created if anyone else live, "session")
        has = self.model.sessions[sid].clients if sid in self.model.sessions else {}
        new = [c for c in CLIENTS if c not in has]
        prefer_new: bool = data.draw(st.sampled_from((True, True, True, False)), label="new")
        pool = new if new and prefer_new else CLIENTS
        self.attach_client(realm, sid, _pick(data, pool, "client"), limits)

    @precondition(lambda self: self.tokens)
    @rule(
        data=st.data(),
        new_issued_at=st.sampled_from(("now", "now", "explicit", "earlier", "later")),
        introspect=st.sampled_from((False, False, False, True)),
    )
    def refresh(self, data: st.DataObject, new_issued_at: str, introspect: bool) -> None:
        """Present any token ever issued (mostly a recent one); a refresh issues the chain's next token."""
        recent = data.draw(st.booleans(), label="recent")
        self.use(
            _pick(data, self.tokens[-4:] if recent else self.tokens, "token"),
            new_issued_at,
            introspect,
        )

    @precondition(lambda self: self.used)
    @rule(data=st.data(), new_issued_at=st.sampled_from(("now", "explicit")))
    def reuse(self, data: st.DataObject, new_issued_at: str) -> None:
        """Present one of the last tokens used again (a retried or replayed refresh)."""
        self.use(_pick(data, self.used[-2:], "token"), new_issued_at, False)

    def use(self, token: Token, new_issued_at: str, introspect: bool) -> None:
        """Use or introspect a token through the service and the model; compare."""
        self.used.append(token)
        new_iat = {"now": 0, "explicit": self.now_s, "earlier": self.now_s - 2, "later": self.now_s + 2}[
            new_issued_at
        ]
        got = self.svc.outcome(
            self.client.use_refresh_token(
                token.realm,
                token.session_id,
                token.client_id,
                token.token_id,
                issued_at=token.issued_at,
                reuse_id=token.reuse_id,
                new_issued_at=new_iat,
                introspect=introspect,
            )
        )
        try:
            count, ref = self.model.use(token, new_iat, introspect=introspect, now_s=self.now_s)
        except Rejected as rejected:
            self._check_outcome(got, rejected)
            return
        assert isinstance(got, RefreshTokenUse), got
        event(f"use count {got.use_count}")
        assert (count, ref.timestamp, ref.started) == (
            got.use_count,
            got.client_session.timestamp,
            got.client_session.started,
        )
        if not introspect:
            self._issue(token.realm, token.session_id, token.client_id, token.reuse_id, new_iat or self.now_s)

    @precondition(lambda self: self.created)
    @rule(data=st.data())
    def logout(self, data: st.DataObject) -> None:
        """Remove one session."""
        realm, sid = _pick(data, self.created, "session")
        got = self.svc.run(self.client.remove_user_session(realm, sid))
        assert (self.model.sessions.pop(sid, None) is not None) == got

    @precondition(lambda self: self.created)
    @rule(data=st.data(), client_id=st.sampled_from(CLIENTS))
    def detach(self, data: st.DataObject, client_id: str) -> None:
        """Remove one client session (its tokens then find nothing)."""
        realm, sid = _pick(data, self.created, "session")
        got = self.svc.run(self.client.detach_client_session(realm, sid, client_id))
        session = self.model.sessions.get(sid)
        assert (session is not None and session.clients.pop(client_id, None) is not None) == got

    @rule(seconds=seconds_st)
    def advance(self, seconds: float) -> None:
        """Let a little time pass."""
        self.svc.clock.advance(seconds)

    @invariant()
    def sessions_match_the_model(self) -> None:
        """Every user's live sessions, their refresh times and client sessions are the model's."""
        pairs = [(r, u) for r in REALMS for u in USERS]

        async def lists() -> list[list[UserSession]]:
            return list(await asyncio.gather(*(self.client.list_user_sessions(r, u) for r, u in pairs)))

        got = self.svc.run(lists())
        assert [self.model.view(r, u) for r, u in pairs] == [_view(x) for x in got]


def _bound(service: BackgroundService) -> type[RotationLimitsMachine]:
    """The machine class, bound to a running service."""

    class Machine(RotationLimitsMachine):
        svc = service

    return Machine


class TestStatefulRotationAndLimits:
    """Rotation and session limits against the reference model."""

    @pytest.mark.slow
    @pytest.mark.timeout(300)
    def test_service_matches_reference_model(self, service: BackgroundService) -> None:
        """Any sequence of logins, client logins, refreshes, logouts and clock moves matches the model."""
        run_state_machine_as_test(
            _bound(service),
            settings=settings(
                max_examples=150,
                stateful_step_count=40,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            ),
        )
