"""Single-use objects (Keycloak's SingleUseObjectProvider, §1.5) through the real service and shards."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from session_store import AsyncSessionStoreClient, InvalidArgumentError, SessionNotFoundError
from session_store.model.clock import TestClock
from session_store.model.ids import lookup_partition
from session_store.model.limits import MAX_NOTES, MAX_SINGLE_USE_KEY_LENGTH, MAX_SINGLE_USE_LIFESPAN_SECONDS
from session_store.model.single_use import SingleUseObject
from session_store.server import LOGIN_FAILURES_SERVICE_NAME, SINGLE_USE_SERVICE_NAME, SessionStoreServer
from session_store.storage import keys
from tests.backends import BOTH_BACKENDS

pytestmark = BOTH_BACKENDS

REALM = "realm-a"
CODE = "c0de-uuid.session-id.client-uuid"
RACERS = 50
RACE_ROUNDS = 5
RACE_TIMEOUT_SECONDS = 20.0
CHANNELS = 5


@contextlib.asynccontextmanager
async def _clients(server: SessionStoreServer) -> AsyncIterator[list[AsyncSessionStoreClient]]:
    """A few clients on their own channels, without retries."""
    async with contextlib.AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(
                AsyncSessionStoreClient(f"127.0.0.1:{server.port}", max_attempts=1)
            )
            for _ in range(CHANNELS)
        ]


async def _or_none(client: AsyncSessionStoreClient, key: str) -> SingleUseObject | None:
    try:
        return await client.take_single_use_object(REALM, key)
    except SessionNotFoundError:
        return None


async def _real_ttl_ms(server: SessionStoreServer, realm: str, key: str) -> int:
    """The Redis TTL of an object's key, read straight from its shard."""
    partition = lookup_partition(realm, "su", key)
    shard = server.router.shard_for(partition)
    return int(await shard.command("PTTL", keys.single_use_object(partition, realm, key)))


class TestPutSingleUseObject:
    """Put stores or overwrites notes for at least the lifespan."""

    async def test_put_then_get(self, client: AsyncSessionStoreClient, clock: TestClock) -> None:
        """Get returns the notes put, expiring lifespan seconds after now."""
        await client.put_single_use_object(REALM, CODE, 60, {"nonce": "n-1", "empty": ""})

        expected = SingleUseObject(
            key=CODE, notes={"nonce": "n-1", "empty": ""}, expires_at_ms=clock.now_ms + 60_000
        )
        assert expected == await client.get_single_use_object(REALM, CODE)

    async def test_put_overwrites_notes_and_lifespan(
        self, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """A second put replaces the notes entirely and starts a new lifespan."""
        await client.put_single_use_object(REALM, CODE, 60, {"a": "1", "b": "2"})
        clock.advance(30)
        await client.put_single_use_object(REALM, CODE, 10, {"c": "3"})

        expected = SingleUseObject(key=CODE, notes={"c": "3"}, expires_at_ms=clock.now_ms + 10_000)
        assert expected == await client.get_single_use_object(REALM, CODE)

    async def test_empty_notes_still_exist(self, client: AsyncSessionStoreClient) -> None:
        """An object put without notes is present and reads back with empty notes."""
        await client.put_single_use_object(REALM, "token-id.revoked", 30)

        assert await client.contains_single_use_object(REALM, "token-id.revoked") is True
        assert {} == dict((await client.get_single_use_object(REALM, "token-id.revoked")).notes)

    async def test_redis_ttl_is_the_lifespan(
        self, client: AsyncSessionStoreClient, server: SessionStoreServer
    ) -> None:
        """Redis drops the key after the lifespan (in real time), not before."""
        await client.put_single_use_object(REALM, CODE, 120)

        assert 110_000 < await _real_ttl_ms(server, REALM, CODE) <= 120_000

    async def test_keys_are_namespaced_by_realm(self, client: AsyncSessionStoreClient) -> None:
        """The same key in another realm is another object."""
        await client.put_single_use_object(REALM, CODE, 60, {"realm": "a"})

        assert await client.contains_single_use_object("realm-b", CODE) is False
        with pytest.raises(SessionNotFoundError):
            await client.take_single_use_object("realm-b", CODE)
        assert {"realm": "a"} == dict((await client.get_single_use_object(REALM, CODE)).notes)

    async def test_keys_may_hold_spaces_and_any_printable_text(self, client: AsyncSessionStoreClient) -> None:
        """A key is free text: spaces, dots, braces, colons and non-ASCII letters are kept apart."""
        names = ["a b", "a", "b", "{x}:y", "ключ.revoked", "a  b"]
        for i, name in enumerate(names):
            await client.put_single_use_object(REALM, name, 60, {"i": str(i)})

        got = [dict((await client.get_single_use_object(REALM, name)).notes) for name in names]
        assert [{"i": str(i)} for i in range(len(names))] == got

    @pytest.mark.parametrize("lifespan", [0, -1, MAX_SINGLE_USE_LIFESPAN_SECONDS + 1])
    async def test_lifespan_out_of_range_is_invalid(
        self, client: AsyncSessionStoreClient, lifespan: int
    ) -> None:
        """A lifespan of zero, below zero or above the limit is INVALID_ARGUMENT and stores nothing."""
        with pytest.raises(InvalidArgumentError):
            await client.put_single_use_object(REALM, CODE, lifespan, {"a": "1"})
        with pytest.raises(InvalidArgumentError):
            await client.put_single_use_object_if_absent(REALM, CODE, lifespan)

        assert await client.contains_single_use_object(REALM, CODE) is False

    @pytest.mark.parametrize("key", ["", "x" * (MAX_SINGLE_USE_KEY_LENGTH + 1), "a\nb", "a\x00b", "\x7f"])
    async def test_bad_key_is_invalid(self, client: AsyncSessionStoreClient, key: str) -> None:
        """An empty, oversized or control-character key is INVALID_ARGUMENT on every RPC."""
        calls: list[Callable[[], Awaitable[object]]] = [
            lambda: client.put_single_use_object(REALM, key, 60),
            lambda: client.put_single_use_object_if_absent(REALM, key, 60),
            lambda: client.get_single_use_object(REALM, key),
            lambda: client.take_single_use_object(REALM, key),
            lambda: client.replace_single_use_object(REALM, key, {}),
            lambda: client.contains_single_use_object(REALM, key),
        ]
        for call in calls:
            with pytest.raises(InvalidArgumentError):
                await call()

    async def test_longest_key_is_accepted(self, client: AsyncSessionStoreClient) -> None:
        """A key of exactly the maximum length works."""
        key = "k" * MAX_SINGLE_USE_KEY_LENGTH
        await client.put_single_use_object(REALM, key, 60)

        assert await client.contains_single_use_object(REALM, key) is True

    async def test_bad_notes_are_invalid(self, client: AsyncSessionStoreClient) -> None:
        """Too many notes, an empty note name or a NUL in a name is INVALID_ARGUMENT, for put and replace."""
        await client.put_single_use_object(REALM, CODE, 60, {"kept": "1"})
        for notes in ({f"n{i}": "" for i in range(MAX_NOTES + 1)}, {"": "x"}, {"a\x00": "x"}):
            with pytest.raises(InvalidArgumentError):
                await client.put_single_use_object(REALM, CODE, 60, notes)
            with pytest.raises(InvalidArgumentError):
                await client.replace_single_use_object(REALM, CODE, notes)

        assert {"kept": "1"} == dict((await client.get_single_use_object(REALM, CODE)).notes)

    async def test_bad_realm_is_invalid(self, client: AsyncSessionStoreClient) -> None:
        """An empty realm or one with whitespace is INVALID_ARGUMENT."""
        for realm in ("", "a b"):
            with pytest.raises(InvalidArgumentError):
                await client.put_single_use_object(realm, CODE, 60)
            with pytest.raises(InvalidArgumentError):
                await client.contains_single_use_object(realm, CODE)


class TestExpiry:
    """An object lives until its deadline on the service clock, and not past it."""

    async def test_alive_until_the_deadline(self, client: AsyncSessionStoreClient, clock: TestClock) -> None:
        """One millisecond before the deadline every read finds the object; at the deadline none does."""
        await client.put_single_use_object(REALM, CODE, 60, {"a": "1"})
        await client.put_single_use_object(REALM, "other", 60, {"b": "2"})
        clock.advance(59.999)

        assert await client.contains_single_use_object(REALM, CODE) is True
        assert {"a": "1"} == dict((await client.get_single_use_object(REALM, CODE)).notes)

        clock.advance(0.001)

        assert await client.contains_single_use_object(REALM, CODE) is False
        with pytest.raises(SessionNotFoundError):
            await client.get_single_use_object(REALM, CODE)
        with pytest.raises(SessionNotFoundError):
            await client.take_single_use_object(REALM, "other")
        assert await client.replace_single_use_object(REALM, CODE, {"c": "3"}) is False

    async def test_expired_object_can_be_put_if_absent_again(
        self, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """Put-if-absent treats an expired object as absent."""
        assert await client.put_single_use_object_if_absent(REALM, CODE, 10) is True
        clock.advance(10)

        assert await client.put_single_use_object_if_absent(REALM, CODE, 10) is True
        assert clock.now_ms + 10_000 == (await client.get_single_use_object(REALM, CODE)).expires_at_ms


class TestPutSingleUseObjectIfAbsent:
    """Put-if-absent stores empty notes once and reports whether it did."""

    async def test_first_call_stores_empty_notes(
        self, client: AsyncSessionStoreClient, clock: TestClock
    ) -> None:
        """The first call stores, later ones do not, and the object reads as empty notes (not absent)."""
        assert await client.put_single_use_object_if_absent(REALM, CODE, 60) is True
        assert await client.put_single_use_object_if_absent(REALM, CODE, 600) is False

        expected = SingleUseObject(key=CODE, notes={}, expires_at_ms=clock.now_ms + 60_000)
        assert expected == await client.get_single_use_object(REALM, CODE)

    async def test_does_not_overwrite_a_put(self, client: AsyncSessionStoreClient) -> None:
        """A live object put with notes keeps them."""
        await client.put_single_use_object(REALM, CODE, 60, {"a": "1"})

        assert await client.put_single_use_object_if_absent(REALM, CODE, 60) is False
        assert {"a": "1"} == dict((await client.get_single_use_object(REALM, CODE)).notes)

    async def test_race_exactly_one_stores(self, server: SessionStoreServer) -> None:
        """Of many concurrent put-if-absent calls on one key, exactly one reports that it stored."""
        async with _clients(server) as clients, asyncio.timeout(RACE_TIMEOUT_SECONDS):
            for round_ in range(RACE_ROUNDS):
                key = f"code-{round_}"
                results = await asyncio.gather(
                    *(
                        clients[i % CHANNELS].put_single_use_object_if_absent(REALM, key, 60)
                        for i in range(RACERS)
                    )
                )
                assert 1 == sum(results)


class TestGetSingleUseObject:
    """Get reads without removing."""

    async def test_absent_is_not_found(self, client: AsyncSessionStoreClient) -> None:
        """A key never put is NOT_FOUND."""
        with pytest.raises(SessionNotFoundError):
            await client.get_single_use_object(REALM, CODE)

    async def test_get_does_not_consume(self, client: AsyncSessionStoreClient) -> None:
        """Reading twice returns the same object both times."""
        await client.put_single_use_object(REALM, CODE, 60, {"a": "1"})

        first = await client.get_single_use_object(REALM, CODE)
        assert first == await client.get_single_use_object(REALM, CODE)


class TestTakeSingleUseObject:
    """Take removes the object and returns it to exactly one caller."""

    async def test_take_returns_then_removes(self, client: AsyncSessionStoreClient, clock: TestClock) -> None:
        """The first take returns the notes; afterwards the key is absent for every read."""
        await client.put_single_use_object(REALM, CODE, 60, {"code": "data"})

        expected = SingleUseObject(key=CODE, notes={"code": "data"}, expires_at_ms=clock.now_ms + 60_000)
        assert expected == await client.take_single_use_object(REALM, CODE)
        with pytest.raises(SessionNotFoundError):
            await client.take_single_use_object(REALM, CODE)
        assert await client.contains_single_use_object(REALM, CODE) is False

    async def test_take_of_empty_notes(self, client: AsyncSessionStoreClient) -> None:
        """An object with empty notes is taken once, with empty notes."""
        await client.put_single_use_object_if_absent(REALM, CODE, 60)

        assert {} == dict((await client.take_single_use_object(REALM, CODE)).notes)
        with pytest.raises(SessionNotFoundError):
            await client.take_single_use_object(REALM, CODE)

    async def test_race_exactly_one_gets_the_notes(self, server: SessionStoreServer) -> None:
        """Of many concurrent takes of one key, exactly one gets the notes; the others get NOT_FOUND."""
        async with _clients(server) as clients, asyncio.timeout(RACE_TIMEOUT_SECONDS):
            for round_ in range(RACE_ROUNDS):
                key = f"code-{round_}"
                await clients[0].put_single_use_object(REALM, key, 60, {"round": str(round_)})
                results = await asyncio.gather(*(_or_none(clients[i % CHANNELS], key) for i in range(RACERS)))
                winners = [r for r in results if r is not None]
                assert [{"round": str(round_)}] == [dict(w.notes) for w in winners]


class TestReplaceSingleUseObject:
    """Replace swaps the notes of a live object and keeps its expiry."""

    async def test_replace_before_put_is_false(self, client: AsyncSessionStoreClient) -> None:
        """Replacing a key that was never put answers False and creates nothing."""
        assert await client.replace_single_use_object(REALM, CODE, {"a": "1"}) is False
        assert await client.contains_single_use_object(REALM, CODE) is False

    async def test_replace_keeps_the_deadline_and_ttl(
        self, client: AsyncSessionStoreClient, clock: TestClock, server: SessionStoreServer
    ) -> None:
        """The notes are replaced entirely; the deadline and the Redis TTL stay those of the put."""
        await client.put_single_use_object(REALM, CODE, 60, {"a": "1", "b": "2"})
        deadline = clock.now_ms + 60_000
        clock.advance(20)

        assert await client.replace_single_use_object(REALM, CODE, {"c": "3"}) is True
        assert SingleUseObject(key=CODE, notes={"c": "3"}, expires_at_ms=deadline) == (
            await client.get_single_use_object(REALM, CODE)
        )
        assert 50_000 < await _real_ttl_ms(server, REALM, CODE) <= 60_000

    async def test_replace_with_empty_notes_keeps_the_object(self, client: AsyncSessionStoreClient) -> None:
        """Replacing with no notes leaves a present object with empty notes."""
        await client.put_single_use_object(REALM, CODE, 60, {"a": "1"})

        assert await client.replace_single_use_object(REALM, CODE, {}) is True
        assert {} == dict((await client.get_single_use_object(REALM, CODE)).notes)


class TestContainsSingleUseObject:
    """Contains is a presence test."""

    async def test_contains(self, client: AsyncSessionStoreClient) -> None:
        """Absent, then present after a put, then absent after a take."""
        assert await client.contains_single_use_object(REALM, CODE) is False
        await client.put_single_use_object(REALM, CODE, 60)
        assert await client.contains_single_use_object(REALM, CODE) is True
        await client.take_single_use_object(REALM, CODE)
        assert await client.contains_single_use_object(REALM, CODE) is False


class TestServiceRegistration:
    """The SingleUseObjects and LoginFailures services are served next to SessionStore."""

    async def test_health_serving(self, server: SessionStoreServer) -> None:
        """Health reports SERVING for both services."""
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            for name in (SINGLE_USE_SERVICE_NAME, LOGIN_FAILURES_SERVICE_NAME):
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=name))  # type: ignore[attr-defined]  # the stubs lack the generated methods
                assert health_pb2.HealthCheckResponse.SERVING == reply.status

    def test_service_names(self) -> None:
        """The services have their proto names."""
        assert ("session_store.v1.SingleUseObjects", "session_store.v1.LoginFailures") == (
            SINGLE_USE_SERVICE_NAME,
            LOGIN_FAILURES_SERVICE_NAME,
        )
