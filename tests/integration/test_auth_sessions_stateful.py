"""A hypothesis state machine that drives authentication sessions side by side with a dict model.

As in test_stateful.py, the service runs on a private event loop in a background thread (hypothesis
state machines are synchronous): the in-process gRPC server on the real shards, its frozen test
clock, and an async client. The model restates Keycloak §1.4 directly: a root lives until
timestamp + lifespan, every change stamps it now, a new tab at the limit evicts the oldest tabs
(smallest timestamp, then creation order), the last tab removed takes the root along.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
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

from session_store import RealmPolicy, SessionNotFoundError
from session_store.config import ShardSettings
from session_store.model.auth_session import (
    AuthenticationSession,
    AuthenticationSessionRemoval,
    RootAuthenticationSession,
)
from tests.harness import BackgroundService, background_service

T = TypeVar("T")

REALM_SHORT = "realm-short"
REALM_DEFAULT = "realm-default"
REALMS = (REALM_SHORT, REALM_DEFAULT)
LIFESPAN = {REALM_SHORT: 600, REALM_DEFAULT: 1800}
"""max(access code lifespans): 600 s set below; Keycloak's defaults give 1800 s."""
LIMIT = {REALM_SHORT: 3, REALM_DEFAULT: 300}
POLICIES = (
    RealmPolicy(realm=REALM_SHORT, access_code_lifespan_login=600, auth_sessions_limit=3),
    RealmPolicy(realm=REALM_DEFAULT),
)
CALLER_IDS = ("cookie-1", "cookie-2.node-a", "cookie-3")
"""Ids a browser brings (AUTH_SESSION_ID); the route suffix is stripped."""
CLIENTS = ("app", "admin")
NOTE_NAMES = ("k1", "k2", "k3")
CALL_TIMEOUT_SECONDS = 30.0


@pytest.fixture
def service(redis_shards: tuple[ShardSettings, ...]) -> Iterator[BackgroundService]:
    """A service on its own loop thread, for a synchronous hypothesis state machine."""
    with background_service(redis_shards, POLICIES) as svc:
        yield svc


async def _or_none(coro: Coroutine[Any, Any, T]) -> T | None:
    """The result, or None for NOT_FOUND."""
    try:
        return await coro
    except SessionNotFoundError:
        return None


@dataclass
class RefTab:
    """One tab as the model keeps it."""

    client_id: str
    timestamp: int
    order: int
    user_session_notes: dict[str, str] = field(default_factory=dict)
    auth_notes: dict[str, str] = field(default_factory=dict)
    client_notes: dict[str, str] = field(default_factory=dict)


@dataclass
class RefRoot:
    """One root as the model keeps it."""

    timestamp: int
    tabs: dict[str, RefTab] = field(default_factory=dict)
    created_tabs: int = 0


class AuthSessionModel:
    """Roots by (realm, id); answers each operation as the service must (None = NOT_FOUND)."""

    def __init__(self) -> None:
        """No roots."""
        self.roots: dict[tuple[str, str], RefRoot] = {}

    def _live(self, realm: str, root_id: str, now_ms: int) -> RefRoot | None:
        root = self.roots.get((realm, root_id))
        if root is None or (root.timestamp + LIFESPAN[realm]) * 1000 <= now_ms:
            return None
        return root

    @staticmethod
    def _tab(root_id: str, tab_id: str, tab: RefTab) -> AuthenticationSession:
        return AuthenticationSession(
            tab_id=tab_id,
            root_id=root_id,
            client_id=tab.client_id,
            timestamp=tab.timestamp,
            user_session_notes=dict(tab.user_session_notes),
            auth_notes=dict(tab.auth_notes),
            client_notes=dict(tab.client_notes),
        )

    def get_root(self, realm: str, root_id: str, now_ms: int) -> RootAuthenticationSession | None:
        """A live root, as the service returns it."""
        root = self._live(realm, root_id, now_ms)
        if root is None:
            return None
        return RootAuthenticationSession(
            id=root_id,
            realm=realm,
            timestamp=root.timestamp,
            tabs={t: self._tab(root_id, t, tab) for t, tab in root.tabs.items()},
            expires_at_ms=(root.timestamp + LIFESPAN[realm]) * 1000,
        )

    def get_or_create(self, realm: str, root_id: str, now_ms: int) -> RootAuthenticationSession:
        """The live root, else a new empty one stamped now."""
        if self._live(realm, root_id, now_ms) is None:
            self.roots[(realm, root_id)] = RefRoot(timestamp=now_ms // 1000)
        root = self.get_root(realm, root_id, now_ms)
        assert root is not None
        return root

    def create_tab(
        self, realm: str, root_id: str, tab_id: str, client_id: str, now_ms: int
    ) -> AuthenticationSession | None:
        """A new tab (the oldest evicted at the limit); the root is stamped now."""
        root = self._live(realm, root_id, now_ms)
        if root is None:
            return None
        by_age = sorted(root.tabs, key=lambda t: (root.tabs[t].timestamp, root.tabs[t].order))
        for evicted in by_age[: max(0, len(by_age) - LIMIT[realm] + 1)]:
            del root.tabs[evicted]
        root.tabs[tab_id] = RefTab(client_id=client_id, timestamp=now_ms // 1000, order=root.created_tabs)
        root.created_tabs += 1
        root.timestamp = now_ms // 1000
        return self._tab(root_id, tab_id, root.tabs[tab_id])

    def get_tab(
        self, realm: str, root_id: str, tab_id: str, client_id: str, now_ms: int
    ) -> AuthenticationSession | None:
        """A tab of a live root, if it is the client's."""
        root = self._live(realm, root_id, now_ms)
        tab = None if root is None else root.tabs.get(tab_id)
        if tab is None or tab.client_id != client_id:
            return None
        return self._tab(root_id, tab_id, tab)

    def update_notes(
        self,
        realm: str,
        root_id: str,
        tab_id: str,
        client_id: str,
        now_ms: int,
        *,
        kind: str,
        set_notes: dict[str, str],
        remove_notes: list[str],
        clear_auth_notes: bool,
    ) -> AuthenticationSession | None:
        """Removes then sets on one note map (auth notes: cleared first if asked); root stamped now."""
        root = self._live(realm, root_id, now_ms)
        tab = None if root is None else root.tabs.get(tab_id)
        if root is None or tab is None or tab.client_id != client_id:
            return None
        if clear_auth_notes:
            tab.auth_notes.clear()
        notes: dict[str, str] = getattr(tab, kind)
        for name in remove_notes:
            notes.pop(name, None)
        notes.update(set_notes)
        root.timestamp = now_ms // 1000
        return self._tab(root_id, tab_id, tab)

    def remove_tab(self, realm: str, root_id: str, tab_id: str, now_ms: int) -> AuthenticationSessionRemoval:
        """Remove a tab; the last one takes the root along, else the root is stamped now."""
        root = self._live(realm, root_id, now_ms)
        if root is None or tab_id not in root.tabs:
            return AuthenticationSessionRemoval(removed=False, root_removed=False)
        del root.tabs[tab_id]
        if not root.tabs:
            del self.roots[(realm, root_id)]
            return AuthenticationSessionRemoval(removed=True, root_removed=True)
        root.timestamp = now_ms // 1000
        return AuthenticationSessionRemoval(removed=True, root_removed=False)

    def restart(self, realm: str, root_id: str, now_ms: int) -> RootAuthenticationSession | None:
        """No tabs, stamped now, same id."""
        root = self._live(realm, root_id, now_ms)
        if root is None:
            return None
        root.tabs.clear()
        root.timestamp = now_ms // 1000
        return self.get_root(realm, root_id, now_ms)

    def remove_root(self, realm: str, root_id: str, now_ms: int) -> bool:
        """Remove a root; True when it was live."""
        live = self._live(realm, root_id, now_ms) is not None
        self.roots.pop((realm, root_id), None)
        return live


realms_st = st.sampled_from((REALM_SHORT, REALM_SHORT, REALM_DEFAULT))
"""Mostly the realm whose tab limit (3) is reached within a few steps."""
notes_st = st.dictionaries(st.sampled_from(NOTE_NAMES), st.sampled_from(("", "v", 'é/"x')), max_size=2)
names_st = st.lists(st.sampled_from(NOTE_NAMES), unique=True, max_size=2)
seconds_st = st.one_of(
    st.integers(0, 120),
    st.sampled_from((299, 300, 599, 600, 601, 1199, 1200, 1799, 1800, 1801)),
    st.just(0.5),
)
"""Short moves, the lifespans (600 s, 1800 s) and their neighbours exactly, and half seconds (a
root stamped at x.5 s is stamped x s)."""


class AuthSessionMachine(RuleBasedStateMachine):
    """Create roots and tabs, update notes, remove tabs and roots, restart, and let time pass.

    Rules pick roots and tabs from those seen so far (in creation order, so examples replay), live
    or not: a removed or expired one must stay gone.
    """

    svc: ClassVar[BackgroundService]
    """The service under test; a subclass per test run sets it."""

    def __init__(self) -> None:
        """Start from empty shards and an empty model."""
        super().__init__()
        self.client = self.svc.client
        self.svc.reset()
        # Every example starts on a whole second: which moves cross a second (and so which tabs share
        # a timestamp) must not depend on where earlier examples left the shared clock.
        self.svc.clock.advance((1000 - self.svc.clock.now_ms % 1000) % 1000 / 1000)
        self.model = AuthSessionModel()
        self.known_roots: list[tuple[str, str]] = []
        self.known_tabs: list[tuple[str, str, str, str]] = []
        """(realm, root id, tab id, client id)"""

    @property
    def now(self) -> int:
        """The test clock, epoch ms."""
        return self.svc.clock.now_ms

    def _root(self, data: st.DataObject) -> tuple[str, str]:
        """Mostly the newest root (so that tabs pile up to the limit), sometimes any root seen."""
        if data.draw(st.sampled_from((True, True, False)), label="newest root"):
            return self.known_roots[-1]
        return data.draw(st.sampled_from(self.known_roots), label="root")

    def _tab(self, data: st.DataObject) -> tuple[str, str, str, str]:
        return data.draw(st.sampled_from(self.known_tabs), label="tab")

    @initialize(realm=realms_st)
    def first_root(self, realm: str) -> None:
        """Start with one minted root, whichever rules this example runs."""
        self.get_or_create(realm=realm, caller_id=None)

    @rule(realm=realms_st, caller_id=st.none() | st.sampled_from(CALLER_IDS))
    def get_or_create(self, realm: str, caller_id: str | None) -> None:
        """Get or create a root: minted, or a browser's id (live: returned as is; else new)."""
        got = self.svc.run(self.client.get_or_create_root_authentication_session(realm, caller_id or ""))
        root_id = got.id if caller_id is None else caller_id.split(".", 1)[0]
        assert self.model.get_or_create(realm, root_id, self.now) == got
        if (realm, root_id) not in self.known_roots:
            self.known_roots.append((realm, root_id))

    @rule(data=st.data(), client_id=st.sampled_from(CLIENTS), wait=st.sampled_from((0, 0, 1, 1, 7)))
    def create_tab(self, data: st.DataObject, client_id: str, wait: int) -> None:
        """After a short wait, open a tab for a client (evicting the oldest at the limit)."""
        self.svc.clock.advance(wait)
        realm, root_id = self._root(data)
        got = self.svc.run(_or_none(self.client.create_authentication_session(realm, root_id, client_id)))
        tab_id = "-" if got is None else got.tab_id
        assert self.model.create_tab(realm, root_id, tab_id, client_id, self.now) == got
        if got is not None:
            self.known_tabs.append((realm, root_id, got.tab_id, client_id))

    @precondition(lambda self: self.known_tabs)
    @rule(
        data=st.data(),
        wrong_client=st.sampled_from((False, False, False, True)),
        kind=st.sampled_from(("user_session_notes", "auth_notes", "client_notes")),
        set_notes=notes_st,
        remove_notes=names_st,
        clear_auth_notes=st.booleans(),
    )
    def update_notes(
        self,
        *,
        data: st.DataObject,
        wrong_client: bool,
        kind: str,
        set_notes: dict[str, str],
        remove_notes: list[str],
        clear_auth_notes: bool,
    ) -> None:
        """Set and remove notes of one map of a tab (now and then as the wrong client)."""
        realm, root_id, tab_id, client_id = self._tab(data)
        if wrong_client:
            client_id = next(c for c in CLIENTS if c != client_id)
        change: dict[str, Any] = {f"set_{kind}": set_notes, f"remove_{kind}": remove_notes}
        got = self.svc.run(
            _or_none(
                self.client.update_authentication_session(
                    realm, root_id, tab_id, client_id, clear_auth_notes=clear_auth_notes, **change
                )
            )
        )
        expected = self.model.update_notes(
            realm,
            root_id,
            tab_id,
            client_id,
            self.now,
            kind=kind,
            set_notes=set_notes,
            remove_notes=remove_notes,
            clear_auth_notes=clear_auth_notes,
        )
        assert expected == got

    @precondition(lambda self: self.known_tabs)
    @rule(data=st.data())
    def remove_tab(self, data: st.DataObject) -> None:
        """Remove a tab (the last one takes its root along)."""
        realm, root_id, tab_id, _ = self._tab(data)
        got = self.svc.run(self.client.remove_authentication_session(realm, root_id, tab_id))
        assert self.model.remove_tab(realm, root_id, tab_id, self.now) == got

    @rule(data=st.data())
    def restart(self, data: st.DataObject) -> None:
        """Restart a root: no tabs, same id."""
        realm, root_id = self._root(data)
        got = self.svc.run(_or_none(self.client.restart_root_authentication_session(realm, root_id)))
        assert self.model.restart(realm, root_id, self.now) == got

    @rule(data=st.data())
    def remove_root(self, data: st.DataObject) -> None:
        """Remove a root with its tabs."""
        realm, root_id = self._root(data)
        got = self.svc.run(self.client.remove_root_authentication_session(realm, root_id))
        assert self.model.remove_root(realm, root_id, self.now) == got

    @rule(seconds=seconds_st)
    def advance(self, seconds: float) -> None:
        """Let time pass."""
        self.svc.clock.advance(seconds)

    @rule(data=st.data(), early_ms=st.sampled_from((0, 0, 1)))
    def advance_to_a_deadline(self, data: st.DataObject, early_ms: int) -> None:
        """Move the clock exactly to a live root's deadline, or a millisecond before it."""
        live = [r for r in self.known_roots if self.model.get_root(*r, self.now) is not None]
        if not live:
            return
        root = self.model.get_root(*data.draw(st.sampled_from(live), label="live root"), self.now)
        assert root is not None
        self.svc.clock.advance(max(0, root.expires_at_ms - early_ms - self.now) / 1000)

    @invariant()
    def reads_match_the_model(self) -> None:
        """Every root and tab ever seen reads back as the model says (tabs also as the wrong client)."""
        roots, tabs = list(self.known_roots), list(self.known_tabs)

        def other(client_id: str) -> str:
            return next(c for c in CLIENTS if c != client_id)

        async def snapshot() -> tuple[
            list[RootAuthenticationSession | None], list[AuthenticationSession | None]
        ]:
            c = self.client
            got_roots = asyncio.gather(*(_or_none(c.get_root_authentication_session(r, i)) for r, i in roots))
            got_tabs = asyncio.gather(
                *(
                    _or_none(c.get_authentication_session(r, i, t, client))
                    for r, i, t, owner in tabs
                    for client in (owner, other(owner))
                )
            )
            return await got_roots, await got_tabs

        got_roots, got_tabs = self.svc.run(snapshot())
        now, m = self.now, self.model
        assert [m.get_root(r, i, now) for r, i in roots] == got_roots
        expected_tabs = [
            m.get_tab(r, i, t, client, now) for r, i, t, owner in tabs for client in (owner, other(owner))
        ]
        assert expected_tabs == got_tabs


def _bound(service: BackgroundService) -> type[AuthSessionMachine]:
    """The machine class, bound to a running service."""

    class Machine(AuthSessionMachine):
        svc = service

    return Machine


class TestStatefulAuthenticationSessions:
    """The service against the reference model of Keycloak's authentication-session rules."""

    @pytest.mark.slow
    @pytest.mark.timeout(120)
    def test_service_matches_reference_model(self, service: BackgroundService) -> None:
        """Any sequence of root and tab operations and clock moves leaves the service where the model is."""
        run_state_machine_as_test(
            _bound(service),
            settings=settings(
                max_examples=60,
                stateful_step_count=40,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            ),
        )
