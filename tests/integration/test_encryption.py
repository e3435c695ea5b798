"""Notes encrypted at rest on real shards: nothing readable in Redis, everything readable through the
service, values bound to their session, and key rotation that leaves every value under the newest key."""

from __future__ import annotations

import base64
import contextlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from session_store.client import AsyncSessionStoreClient
from session_store.config import Settings, ShardSettings
from session_store.errors import PreconditionFailedError
from session_store.model.clock import TestClock
from session_store.model.ids import home_partition
from session_store.model.policy import RealmPolicy
from session_store.security.encryption import PREFIX, NoteCipher
from session_store.security.rotation import rotate_keys
from session_store.server import SessionStoreServer
from session_store.storage import keys

REALM = "vault"
SECRET = "eyJhbGciOiJSUzI1NiJ9.secret-token-value"  # noqa: S105 - a made-up token the test looks for in Redis


def write_ring(path: Path, keys_: list[tuple[str, bytes]]) -> Path:
    """A key file with these keys, oldest first."""
    path.write_text(json.dumps({"keys": [{"id": i, "key": base64.b64encode(k).decode()} for i, k in keys_]}))
    return path


@contextlib.asynccontextmanager
async def encrypting_node(
    shards: tuple[ShardSettings, ...], key_file: Path, clock: TestClock
) -> AsyncIterator[tuple[SessionStoreServer, AsyncSessionStoreClient]]:
    """A node encrypting with the ring in `key_file`, and a client of it."""
    settings = Settings(
        listen="127.0.0.1:0", grace_seconds=0.5, policy_refresh_seconds=0.001, encryption_keys_file=key_file
    )
    srv = SessionStoreServer(settings, shards, clock=clock)
    await srv.start()
    try:
        async with AsyncSessionStoreClient(f"127.0.0.1:{srv.port}", max_attempts=1) as client:
            yield srv, client
    finally:
        await srv.stop(grace=0)


async def raw_dump(srv: SessionStoreServer) -> str:
    """Every hash of every shard, as one text blob (what someone with Redis access would see)."""
    out: list[str] = []
    for shard in srv.router.shards.values():
        for key in await shard.command("KEYS", "ss:{*"):
            if await shard.command("TYPE", key) == "hash":
                out += [key, *map(str, await shard.command("HGETALL", key))]
    return "\n".join(out)


async def store_everything(client: AsyncSessionStoreClient) -> tuple[str, str, str]:
    """A session with a note, a client session with a note, an offline copy, an authentication tab
    with notes of each kind and a single-use object, all holding SECRET."""
    await client.set_realm_policy(RealmPolicy(realm=REALM, offline_session_idle_timeout=3600))
    s = await client.create_user_session(REALM, "alice", notes={"id_token": SECRET})
    await client.attach_client_session(REALM, s.id, "app", notes={"refresh": SECRET})
    await client.update_user_session(REALM, s.id, set_notes={"later": SECRET})
    await client.create_offline_session(REALM, s.id, ["app"])
    root = await client.get_or_create_root_authentication_session(REALM)
    tab = await client.create_authentication_session(REALM, root.id, "app")
    await client.update_authentication_session(
        REALM,
        root.id,
        tab.tab_id,
        "app",
        set_user_session_notes={"u": SECRET},
        set_auth_notes={"a": SECRET},
        set_client_notes={"c": SECRET},
    )
    await client.put_single_use_object(REALM, "code-1", 60, notes={"code": SECRET})
    return s.id, root.id, tab.tab_id


async def read_everything(client: AsyncSessionStoreClient, sid: str, root: str, tab: str) -> list[str]:
    """Every note stored by store_everything, read back through the service."""
    online = await client.get_user_session(REALM, sid)
    offline = await client.get_user_session(REALM, sid, offline=True)
    t = await client.get_authentication_session(REALM, root, tab, "app")
    su = await client.get_single_use_object(REALM, "code-1")
    return [
        online.notes["id_token"],
        online.notes["later"],
        online.client_sessions["app"].notes["refresh"],
        offline.client_sessions["app"].notes["refresh"],
        t.user_session_notes["u"],
        t.auth_notes["a"],
        t.client_notes["c"],
        su.notes["code"],
    ]


class TestEncryptionAtRest:
    """With a key ring configured, no note value is stored in clear."""

    async def test_nothing_in_clear_everything_readable(
        self, flushed_shards: tuple[ShardSettings, ...], clock: TestClock, tmp_path: Path
    ) -> None:
        """Every kind of note is ciphertext in Redis and its clear value through the API."""
        key_file = write_ring(tmp_path / "keys.json", [("k1", os.urandom(32))])
        async with encrypting_node(flushed_shards, key_file, clock) as (srv, client):
            ids = await store_everything(client)
            assert [SECRET] * 8 == await read_everything(client, *ids)
            dump = await raw_dump(srv)
        assert SECRET not in dump
        assert dump.count(PREFIX + "k1:") >= 7

    async def test_a_note_copied_into_another_session_fails_to_decrypt(
        self, flushed_shards: tuple[ShardSettings, ...], clock: TestClock, tmp_path: Path
    ) -> None:
        """Someone with Redis access copying a note value into another user's session gains nothing."""
        key_file = write_ring(tmp_path / "keys.json", [("k1", os.urandom(32))])
        async with encrypting_node(flushed_shards, key_file, clock) as (srv, client):
            victim = await client.create_user_session(REALM, "alice", notes={"id_token": SECRET})
            thief = await client.create_user_session(REALM, "mallory")
            v_part, t_part = home_partition(victim.id), home_partition(thief.id)
            v_shard, t_shard = srv.router.shard_for(v_part), srv.router.shard_for(t_part)
            stolen = await v_shard.command(
                "HGET", keys.session(v_part, victim.id, offline=False), "n:id_token"
            )
            await t_shard.command("HSET", keys.session(t_part, thief.id, offline=False), "n:id_token", stolen)
            with pytest.raises(PreconditionFailedError, match="failed to decrypt"):
                await client.get_user_session(REALM, thief.id)


class TestKeyRotation:
    """A new key encrypts new writes, old values stay readable, and rotation rewrites them all."""

    async def test_rotate_then_drop_the_old_key(
        self, flushed_shards: tuple[ShardSettings, ...], clock: TestClock, tmp_path: Path
    ) -> None:
        """After `keys rotate` under [k1, k2], a ring holding only k2 reads every note."""
        k1, k2 = os.urandom(32), os.urandom(32)
        path = tmp_path / "keys.json"
        async with encrypting_node(flushed_shards, write_ring(path, [("k1", k1)]), clock) as (_, client):
            ids = await store_everything(client)
        async with encrypting_node(flushed_shards, write_ring(path, [("k1", k1), ("k2", k2)]), clock) as (
            srv,
            client,
        ):
            assert [SECRET] * 8 == await read_everything(client, *ids)
            report = await rotate_keys(srv.router, NoteCipher.from_file(path), max_keys_per_second=10_000)
            assert report.rewritten >= 7
            assert 0 == (await rotate_keys(srv.router, NoteCipher.from_file(path))).rewritten
            dump = await raw_dump(srv)
        assert PREFIX + "k1:" not in dump
        async with encrypting_node(flushed_shards, write_ring(path, [("k2", k2)]), clock) as (_, client):
            assert [SECRET] * 8 == await read_everything(client, *ids)
