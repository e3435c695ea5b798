"""Typed operations on single-use objects (Keycloak's SingleUseObjectProvider): one method per script.

An object lives in the partition ``lookup_partition(realm, "su", key)``: one key, one shard, so each
operation is one script call and `take` is atomic across every service node. The object's deadline
is stored with it and checked against the script's clock (so a test clock moves it), and Redis's TTL
drops it at the same moment in production.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from session_store.model.clock import Clock
from session_store.model.ids import lookup_partition
from session_store.model.single_use import SingleUseObject
from session_store.security.encryption import NO_ENCRYPTION, NoteCipher
from session_store.storage import keys
from session_store.storage.router import Router


def _note_args(notes: Mapping[str, str]) -> list[str]:
    args: list[str] = []
    for name, value in notes.items():
        args += [name, value]
    return args


def _decode(realm: str, key: str, reply: Sequence[Any], cipher: NoteCipher) -> SingleUseObject:
    deadline, flat = reply
    notes = {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}
    return SingleUseObject(
        key=key,
        notes=cipher.decrypt_map(notes, realm, "su", key),
        expires_at_ms=int(deadline),
    )


class SingleUseObjectRepository:
    """Single-use objects on the shards of a router; keys are namespaced by realm."""

    def __init__(self, router: Router, clock: Clock, cipher: NoteCipher = NO_ENCRYPTION) -> None:
        """Use `router` for placement and `clock` for now."""
        self._router = router
        self._clock = clock
        self._cipher = cipher

    async def _call(self, partition: int, script: str, keys_: Sequence[str], args: Sequence[str]) -> Any:
        return await self._router.call(partition, script, keys_, args)

    async def _on_object(self, script: str, realm: str, key: str, args: Sequence[str]) -> Any:
        """Run a script on the one key of an object, with now in front of `args`."""
        partition = lookup_partition(realm, "su", key)
        return await self._call(
            partition,
            script,
            [keys.single_use_object(partition, realm, key)],
            [self._clock.script_now(), *args],
        )

    async def put_single_use_object(
        self, realm: str, key: str, notes: Mapping[str, str], *, lifespan_seconds: int
    ) -> SingleUseObject:
        """Store or overwrite the notes under `key` for `lifespan_seconds` (validated, > 0).

        Raises:
            StoreMemoryLowError: the object's shard is short of memory (the memory guard; never for a
                token revocation, a key ending in ".revoked").
            UnavailableError: the object's shard is unavailable.
        """
        deadline = await self._on_object(
            "put_single_use_object",
            realm,
            key,
            [str(lifespan_seconds * 1000), *_note_args(self._cipher.encrypt_map(notes, realm, "su", key))],
        )
        return SingleUseObject(key=key, notes=dict(notes), expires_at_ms=int(deadline))

    async def put_single_use_object_if_absent(self, realm: str, key: str, *, lifespan_seconds: int) -> bool:
        """Store empty notes under `key` unless a live object is there; True when this call stored."""
        reply = await self._on_object(
            "put_single_use_object_if_absent", realm, key, [str(lifespan_seconds * 1000)]
        )
        return int(reply) == 1

    async def get_single_use_object(self, realm: str, key: str) -> SingleUseObject:
        """The live object under `key`.

        Raises:
            SessionNotFoundError: no live object under the key.
        """
        return _decode(
            realm, key, await self._on_object("get_single_use_object", realm, key, []), self._cipher
        )

    async def take_single_use_object(self, realm: str, key: str) -> SingleUseObject:
        """Remove the object under `key` and return it; only one of any racing callers gets it.

        Raises:
            SessionNotFoundError: no live object under the key (never there, expired, or taken).
        """
        return _decode(
            realm, key, await self._on_object("take_single_use_object", realm, key, []), self._cipher
        )

    async def replace_single_use_object(self, realm: str, key: str, notes: Mapping[str, str]) -> bool:
        """Replace the notes of the live object under `key`, keeping its expiry; False when absent."""
        encrypted = self._cipher.encrypt_map(notes, realm, "su", key)
        reply = await self._on_object("replace_single_use_object", realm, key, _note_args(encrypted))
        return int(reply) == 1

    async def contains_single_use_object(self, realm: str, key: str) -> bool:
        """Whether a live object is under `key`."""
        return int(await self._on_object("contains_single_use_object", realm, key, [])) == 1
