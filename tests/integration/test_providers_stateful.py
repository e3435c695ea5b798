"""A hypothesis state machine for single-use objects and login failures against a plain-dict model.

The service runs on a private event loop in a background thread (the in-process gRPC server on the
real shards, with its frozen test clock); the machine drives it with the blocking client. Each step
applies one operation to the service and to the model and compares the answers; after every step
every object and every login-failure record reads back as the model says.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import ClassVar, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from session_store import RealmPolicy, SessionNotFoundError
from session_store.config import ShardSettings
from session_store.model.brute_force import FailureCounters, effective_brute_force, record_failure
from session_store.model.login_failure import LoginFailure
from session_store.model.policy import BruteForcePolicy, BruteForceStrategy
from session_store.model.single_use import SingleUseObject
from tests.harness import BackgroundService, background_service

T = TypeVar("T")

REALMS = ("realm-a", "realm-b")
KEYS = ("code-1", "code-2", "tok.revoked")
USERS = ("alice", "bob", "carol")
NOTE_NAMES = ("code", "nonce", "k")
CALL_TIMEOUT_SECONDS = 30.0
BRUTE_FORCE = (
    BruteForcePolicy(
        enabled=True,
        failure_factor=3,
        wait_increment_seconds=60,
        minimum_quick_login_wait_seconds=30,
        max_failure_wait_seconds=200,
        max_delta_time_seconds=600,
    ),
    BruteForcePolicy(
        enabled=True,
        strategy=BruteForceStrategy.LINEAR,
        permanent_lockout=True,
        max_temporary_lockouts=1,
        failure_factor=2,
        wait_increment_seconds=40,
        quick_login_check_milliseconds=500,
        max_delta_time_seconds=300,
    ),
    BruteForcePolicy(enabled=True, permanent_lockout=True, failure_factor=4),
    BruteForcePolicy(failure_factor=2),
)
"""Small numbers, so that a few failures lock: temporary lockouts (MULTIPLE), permanent after one
temporary lockout (LINEAR), permanent only, and detection off."""
LIFESPANS = (100, 200, 300, 600)
"""Seconds. Redis also expires an object in real time after its lifespan: every lifespan is far
longer than a whole run, so only the test clock decides."""

notes_st = st.dictionaries(st.sampled_from(NOTE_NAMES), st.sampled_from(("", "v", "x" * 30)), max_size=3)
seconds_st = st.one_of(
    st.sampled_from((0.2, 0.499, 0.5, 0.999, 1.0, 1.5)),
    st.sampled_from((30, 40, 59, 60, 99, 100, 200, 300, 301, 600, 601)),
    st.integers(0, 700),
)
"""Sub-second moves (quick logins), moves to the edges of lifespans and waits, and long ones."""


@pytest.fixture
def service(redis_shards: tuple[ShardSettings, ...]) -> Iterator[BackgroundService]:
    """A service on its own loop thread, for a synchronous hypothesis state machine."""
    with background_service(redis_shards, ()) as svc:
        yield svc


def _or_none(call: Callable[[], T]) -> T | None:
    """The result, or None for NOT_FOUND."""
    try:
        return call()
    except SessionNotFoundError:
        return None


@dataclass
class Model:
    """What the service should hold: objects with their deadlines, and failure counters."""

    objects: dict[tuple[str, str], SingleUseObject] = field(default_factory=dict)
    failures: dict[tuple[str, str], FailureCounters] = field(default_factory=dict)
    brute_force: dict[str, BruteForcePolicy] = field(default_factory=dict)

    def live(self, realm: str, key: str, now_ms: int) -> SingleUseObject | None:
        """The object under a key if it is alive now."""
        found = self.objects.get((realm, key))
        return found if found is not None and now_ms < found.expires_at_ms else None

    def failure(self, realm: str, user: str, now_ms: int) -> LoginFailure | None:
        """A user's record as the service reports it now."""
        counters = self.failures.get((realm, user))
        if counters is None:
            return None
        return LoginFailure.of(realm, user, counters, effective_brute_force(self.brute_force[realm]), now_ms)


class ProvidersMachine(RuleBasedStateMachine):
    """Put, put-if-absent, take, replace; record, clear, remove failures; switch policies; let time pass."""

    svc: ClassVar[BackgroundService]
    """The service under test; a subclass per test run sets it."""

    def __init__(self) -> None:
        """Start from empty shards, each realm on other brute-force settings, and an empty model."""
        super().__init__()
        self.svc.reset()
        self.client = self.svc.sync_client
        self.model = Model()
        for index, realm in enumerate(REALMS):
            self.switch_policy(realm, index)

    @property
    def now(self) -> int:
        """The test clock, epoch ms."""
        return self.svc.clock.now_ms

    @rule(
        realm=st.sampled_from(REALMS),
        key=st.sampled_from(KEYS),
        life=st.sampled_from(LIFESPANS),
        notes=notes_st,
    )
    def put(self, realm: str, key: str, life: int, notes: dict[str, str]) -> None:
        """Store or overwrite an object."""
        self.client.put_single_use_object(realm, key, life, notes)
        self.model.objects[realm, key] = SingleUseObject(
            key=key, notes=notes, expires_at_ms=self.now + 1000 * life
        )

    @rule(realm=st.sampled_from(REALMS), key=st.sampled_from(KEYS), life=st.sampled_from(LIFESPANS))
    def put_if_absent(self, realm: str, key: str, life: int) -> None:
        """Store empty notes unless a live object is there."""
        stored = self.client.put_single_use_object_if_absent(realm, key, life)
        expected = self.model.live(realm, key, self.now) is None
        assert expected == stored
        if expected:
            self.model.objects[realm, key] = SingleUseObject(key=key, expires_at_ms=self.now + 1000 * life)

    @rule(realm=st.sampled_from(REALMS), key=st.sampled_from(KEYS))
    def take(self, realm: str, key: str) -> None:
        """Take an object: its notes once, then nothing."""
        taken = _or_none(lambda: self.client.take_single_use_object(realm, key))
        assert self.model.live(realm, key, self.now) == taken
        self.model.objects.pop((realm, key), None)

    @rule(realm=st.sampled_from(REALMS), key=st.sampled_from(KEYS), notes=notes_st)
    def replace(self, realm: str, key: str, notes: dict[str, str]) -> None:
        """Replace the notes of a live object, keeping its deadline."""
        replaced = self.client.replace_single_use_object(realm, key, notes)
        current = self.model.live(realm, key, self.now)
        assert (current is not None) == replaced
        if current is not None:
            self.model.objects[realm, key] = SingleUseObject(
                key=key, notes=notes, expires_at_ms=current.expires_at_ms
            )

    @rule(
        realm=st.sampled_from(REALMS),
        user=st.sampled_from(USERS),
        ip=st.sampled_from(("", "10.0.0.1", "2001:db8::7")),
    )
    def record_failure(self, realm: str, user: str, ip: str) -> None:
        """A failed login: the record the service returns is the model's."""
        got = self.client.record_login_failure(realm, user, ip_address=ip)
        eff = effective_brute_force(self.model.brute_force[realm])
        before = self.model.failures.get((realm, user), FailureCounters())
        self.model.failures[realm, user] = record_failure(before, eff, now_ms=self.now, ip_address=ip)
        assert self.model.failure(realm, user, self.now) == got

    @rule(realm=st.sampled_from(REALMS), user=st.sampled_from(USERS), remove=st.booleans())
    def clear_failures(self, realm: str, user: str, remove: bool) -> None:
        """A successful login (clear) or a deleted user (remove): the record goes."""
        call = self.client.remove_login_failure if remove else self.client.clear_login_failure
        assert ((realm, user) in self.model.failures) == call(realm, user)
        self.model.failures.pop((realm, user), None)

    @rule(realm=st.sampled_from(REALMS))
    def remove_realm_failures(self, realm: str) -> None:
        """Every record of a realm goes, and the count says how many there were."""
        mine = [k for k in self.model.failures if k[0] == realm]
        assert len(mine) == self.client.remove_realm_login_failures(realm)
        for k in mine:
            del self.model.failures[k]

    @rule(realm=st.sampled_from(REALMS), index=st.integers(0, len(BRUTE_FORCE) - 1))
    def switch_policy(self, realm: str, index: int) -> None:
        """Change a realm's brute-force settings: later failures and every lock flag follow them."""
        self.client.set_realm_policy(RealmPolicy(realm=realm, brute_force=BRUTE_FORCE[index]))
        self.model.brute_force[realm] = BRUTE_FORCE[index]

    @rule(seconds=seconds_st)
    def advance(self, seconds: float) -> None:
        """Let time pass."""
        self.svc.clock.advance(seconds)

    def _edges(self) -> list[int]:
        """The instants (epoch ms) ahead at which something changes: deadlines and lock ends."""
        deadlines = [o.expires_at_ms for o in self.model.objects.values()]
        lock_ends = [1000 * c.failed_login_not_before for c in self.model.failures.values()]
        return sorted({t for t in deadlines + lock_ends if t > self.now})

    @precondition(lambda self: self._edges())
    @rule(data=st.data(), early=st.booleans())
    def advance_to_an_edge(self, data: st.DataObject, early: bool) -> None:
        """Move the clock to an object's deadline or a lock's end, or to one millisecond before it."""
        target = data.draw(st.sampled_from(self._edges()), label="edge") - (1 if early else 0)
        if target > self.now:
            self.svc.clock.advance((target - self.now) / 1000)

    @invariant()
    def reads_match_the_model(self) -> None:
        """Every object and every record reads back as the model says."""
        now, c = self.now, self.client
        for realm in REALMS:
            for key in KEYS:
                expected = self.model.live(realm, key, now)
                assert expected == _or_none(lambda: c.get_single_use_object(realm, key))  # noqa: B023 - called at once
                assert (expected is not None) == c.contains_single_use_object(realm, key)
            for user in USERS:
                got = _or_none(lambda: c.get_login_failure(realm, user))  # noqa: B023 - called at once
                assert self.model.failure(realm, user, now) == got


def _bound(service: BackgroundService) -> type[ProvidersMachine]:
    """The machine class, bound to a running service."""

    class Machine(ProvidersMachine):
        svc = service

    return Machine


class TestStatefulProviders:
    """Single-use objects and login failures against the model of Keycloak's rules."""

    @pytest.mark.slow
    @pytest.mark.timeout(180)
    def test_service_matches_model(self, service: BackgroundService) -> None:
        """Any sequence of operations, policy switches and clock moves leaves the service as the model."""
        run_state_machine_as_test(
            _bound(service),
            settings=settings(
                max_examples=35,
                stateful_step_count=25,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
