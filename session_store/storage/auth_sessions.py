"""Typed operations on root authentication sessions and their tabs: one method per script.

A root lives in one hash at the home partition of its id (``keys.root_auth_session``), its tabs as
fields holding compact JSON. Every operation is one script call on the shard of that partition, so
get-or-create, tab creation with eviction, and updates are atomic. The realm's lifespan and tab
limit travel as script arguments; a root dies at ``timestamp + lifespan`` (Redis TTL and reads agree).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from session_store.errors import SessionExistsError, SessionNotFoundError, StoreMemoryLowError
from session_store.model.auth_session import (
    AuthenticationSession,
    AuthenticationSessionRemoval,
    AuthenticationSessionUpdate,
    ExecutionStatus,
    RootAuthenticationSession,
    mint_tab_id,
)
from session_store.model.clock import Clock
from session_store.model.ids import PARTITION_COUNT, home_partition, mint_session_id
from session_store.model.limits import (
    MAX_AUTH_NOTES,
    MAX_AUTH_SESSION_BYTES,
    MAX_CLIENT_SCOPES,
    MAX_EXECUTION_STATUSES,
    MAX_REQUIRED_ACTIONS,
    MAX_ROOT_AUTH_SESSION_BYTES,
)
from session_store.model.policy import auth_session_lifespan, auth_sessions_limit
from session_store.security.encryption import NO_ENCRYPTION, NoteCipher
from session_store.storage import keys
from session_store.storage.policies import CachedPolicy, PolicyStore
from session_store.storage.router import Router

MAX_MINT_ATTEMPTS = 3
"""How often a freshly minted root or tab id is drawn again when it is taken (practically never)."""


def _decode_tab(realm: str, root_id: str, tab_id: str, raw: str, cipher: NoteCipher) -> AuthenticationSession:
    data = json.loads(raw)

    def notes(short: str) -> dict[str, str]:
        return cipher.decrypt_map(data.get(short) or {}, realm, root_id, tab_id, short)

    return AuthenticationSession(
        tab_id=tab_id,
        root_id=root_id,
        client_id=data["c"],
        timestamp=int(data["t"]),
        redirect_uri=data.get("r", ""),
        action=data.get("a", ""),
        protocol=data.get("p", ""),
        authenticated_user_id=data.get("u", ""),
        execution_status={k: ExecutionStatus(int(v)) for k, v in (data.get("x") or {}).items()},
        required_actions=tuple(sorted(data.get("q") or ())),
        client_scopes=tuple(sorted(data.get("s") or ())),
        user_session_notes=notes("un"),
        auth_notes=notes("an"),
        client_notes=notes("cn"),
    )


def _decode_root(
    realm: str, root_id: str, reply: Sequence[Any], cipher: NoteCipher
) -> RootAuthenticationSession:
    timestamp, deadline, flat = reply
    tabs = {
        flat[i]: _decode_tab(realm, root_id, flat[i], flat[i + 1], cipher) for i in range(0, len(flat), 2)
    }
    return RootAuthenticationSession(
        id=root_id,
        realm=realm,
        timestamp=int(timestamp),
        tabs=tabs,
        expires_at_ms=int(deadline),
    )


def _change_json(
    update: AuthenticationSessionUpdate, seal: Callable[[str, Mapping[str, str]], dict[str, str]]
) -> str:
    """The change as update_auth_session.lua takes it (see its header); empty parts left out.

    `seal(kind, notes)` encrypts the note values of a kind ("un", "an", "cn") for the tab."""
    change: dict[str, Any] = {}
    for short, value in (
        ("r", update.redirect_uri),
        ("a", update.action),
        ("p", update.protocol),
        ("u", update.authenticated_user_id),
    ):
        if value is not None:
            change[short] = value
    parts: dict[str, Any] = {
        "xc": list(update.clear_execution_status),
        "xs": {k: int(v) for k, v in update.set_execution_status.items()},
        "qr": list(update.remove_required_actions),
        "qa": list(update.add_required_actions),
        "unr": list(update.remove_user_session_notes),
        "uns": seal("un", update.set_user_session_notes),
        "anr": list(update.remove_auth_notes),
        "ans": seal("an", update.set_auth_notes),
        "cnr": list(update.remove_client_notes),
        "cns": seal("cn", update.set_client_notes),
    }
    change.update({k: v for k, v in parts.items() if v})
    if update.client_scopes is not None:
        change["s"] = list(update.client_scopes)  # [] replaces the scopes with none
    if update.clear_auth_notes:
        change["anc"] = True
    return json.dumps(change, ensure_ascii=False, separators=(",", ":"))


class AuthenticationSessionRepository:
    """Root authentication sessions and their tabs on the shards of a router."""

    def __init__(
        self, router: Router, policies: PolicyStore, clock: Clock, cipher: NoteCipher = NO_ENCRYPTION
    ) -> None:
        """Use `router` for placement, `policies` for lifespan and tab limit, `clock` for now."""
        self._router = router
        self._policies = policies
        self._clock = clock
        self._cipher = cipher

    async def _call(
        self, script: str, realm: str, root_id: str, args: Sequence[str], cached: CachedPolicy | None = None
    ) -> Any:
        """Run a script on the root's hash with now and the realm's lifespan in front of `args`."""
        if cached is None:
            cached = await self._policies.get(realm)
        partition = home_partition(root_id)
        return await self._router.call(
            partition,
            script,
            [keys.root_auth_session(partition, realm, root_id)],
            [self._clock.script_now(), str(auth_session_lifespan(cached.policy)), *args],
        )

    async def get_or_create_root_authentication_session(
        self, realm: str, root_id: str | None = None
    ) -> RootAuthenticationSession:
        """The live root with `root_id`, else a new one with that id; a new minted id when None.

        Atomic: concurrent calls with one id all get the same root.

        Raises:
            StoreMemoryLowError: the root would be new and its shard is short of memory (an existing
                live root is still returned).
            UnavailableError: the root's shard is unavailable.
        """
        if root_id is not None:
            try:
                reply = await self._call("get_or_create_root_auth_session", realm, root_id, ["0"])
            except StoreMemoryLowError as low:
                # The memory guard refuses the script (it may create); a login in progress still
                # finds its existing root.
                try:
                    return await self.get_root_authentication_session(realm, root_id)
                except SessionNotFoundError:
                    raise low from None
            return _decode_root(realm, root_id, reply, self._cipher)
        for attempt in range(1, MAX_MINT_ATTEMPTS + 1):
            minted = mint_session_id(secrets.randbelow(PARTITION_COUNT))
            try:
                reply = await self._call("get_or_create_root_auth_session", realm, minted, ["1"])
            except SessionExistsError:
                if attempt == MAX_MINT_ATTEMPTS:
                    raise
                continue
            return _decode_root(realm, minted, reply, self._cipher)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    async def get_root_authentication_session(self, realm: str, root_id: str) -> RootAuthenticationSession:
        """A live root with its tabs.

        Raises:
            SessionNotFoundError: missing or expired.
        """
        reply = await self._call("get_root_auth_session", realm, root_id, [])
        return _decode_root(realm, root_id, reply, self._cipher)

    async def remove_root_authentication_session(self, realm: str, root_id: str) -> bool:
        """Remove a root and its tabs; True when a live root was removed."""
        return int(await self._call("remove_root_auth_session", realm, root_id, [])) == 1

    async def restart_root_authentication_session(
        self, realm: str, root_id: str
    ) -> RootAuthenticationSession:
        """Remove every tab of a live root and set its timestamp to now (same id).

        Raises:
            SessionNotFoundError: missing or expired.
        """
        reply = await self._call("restart_root_auth_session", realm, root_id, [])
        return _decode_root(realm, root_id, reply, self._cipher)

    async def create_authentication_session(
        self, realm: str, root_id: str, client_id: str
    ) -> AuthenticationSession:
        """Create a tab for a client; at the realm's tab limit the oldest tabs are evicted first.

        Raises:
            SessionNotFoundError: the root is missing or expired.
            LimitExceededError: the root's tabs would exceed MAX_ROOT_AUTH_SESSION_BYTES.
            StoreMemoryLowError: the root's shard is short of memory (the memory guard).
        """
        cached = await self._policies.get(realm)
        limit = auth_sessions_limit(cached.policy)
        for attempt in range(1, MAX_MINT_ATTEMPTS + 1):
            tab_id = mint_tab_id()
            try:
                reply = await self._call(
                    "create_auth_session",
                    realm,
                    root_id,
                    [str(limit), tab_id, client_id, str(MAX_ROOT_AUTH_SESSION_BYTES)],
                    cached,
                )
            except SessionExistsError:
                if attempt == MAX_MINT_ATTEMPTS:
                    raise
                continue
            return _decode_tab(realm, root_id, reply[0], reply[1], self._cipher)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    async def get_authentication_session(
        self, realm: str, root_id: str, tab_id: str, client_id: str
    ) -> AuthenticationSession:
        """A tab of a live root, if it belongs to `client_id`.

        Raises:
            SessionNotFoundError: the root or tab is missing, the root expired, or the tab is
                another client's.
        """
        reply = await self._call("get_auth_session", realm, root_id, [tab_id, client_id])
        return _decode_tab(realm, root_id, reply[0], reply[1], self._cipher)

    async def update_authentication_session(
        self, realm: str, root_id: str, tab_id: str, client_id: str, update: AuthenticationSessionUpdate
    ) -> AuthenticationSession:
        """Apply every change of `update` to a tab in one step; the root's timestamp becomes now.

        Raises:
            SessionNotFoundError: as for get_authentication_session.
            LimitExceededError: the tab would hold too many statuses, actions, scopes or notes, or
                too many bytes; nothing changed.
        """
        reply = await self._call(
            "update_auth_session",
            realm,
            root_id,
            [
                tab_id,
                client_id,
                str(MAX_AUTH_NOTES),
                str(MAX_EXECUTION_STATUSES),
                str(MAX_REQUIRED_ACTIONS),
                str(MAX_CLIENT_SCOPES),
                str(MAX_AUTH_SESSION_BYTES),
                str(MAX_ROOT_AUTH_SESSION_BYTES),
                _change_json(
                    update, lambda kind, notes: self._cipher.encrypt_map(notes, realm, root_id, tab_id, kind)
                ),
            ],
        )
        return _decode_tab(realm, root_id, reply[0], reply[1], self._cipher)

    async def remove_authentication_session(
        self, realm: str, root_id: str, tab_id: str
    ) -> AuthenticationSessionRemoval:
        """Remove a tab; removing the last tab removes the root. Idempotent."""
        removed, root_removed = await self._call("remove_auth_session", realm, root_id, [tab_id])
        return AuthenticationSessionRemoval(removed=int(removed) == 1, root_removed=int(root_removed) == 1)
