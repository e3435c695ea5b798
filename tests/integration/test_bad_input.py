"""Bad input gets a clear status with a machine-readable reason, and changes nothing."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from session_store import (
    AsyncSessionStoreClient,
    InvalidArgumentError,
    LimitExceededError,
    RealmPolicy,
    SessionExistsError,
    SessionNotFoundError,
)
from session_store.api.convert import policy_to_proto
from session_store.model.limits import MAX_ID_LENGTH, MAX_NOTE_VALUE_LENGTH, MAX_NOTES
from session_store.server import SessionStoreServer
from session_store.v1 import session_store_pb2 as pb
from session_store.v1 import session_store_pb2_grpc as pb_grpc
from tests.backends import BOTH_BACKENDS

pytestmark = BOTH_BACKENDS


class TestInvalidIds:
    """Ids that are empty, too long, or hold whitespace are INVALID_ARGUMENT."""

    @pytest.mark.parametrize(
        ("realm", "user"),
        [
            ("", "u"),
            ("r", ""),
            ("x" * (MAX_ID_LENGTH + 1), "u"),
            ("r", "a b"),
            ("r", "tab\tid"),
            ("r", "nul\x00"),
        ],
    )
    async def test_create_rejects(self, client: AsyncSessionStoreClient, realm: str, user: str) -> None:
        """Create refuses the id and stores nothing."""
        with pytest.raises(InvalidArgumentError):
            await client.create_user_session(realm, user)
        assert 0 == await client.count_sessions("r")

    @pytest.mark.parametrize(
        "session_id", ["", ".route-only", "with space", "x" * (MAX_ID_LENGTH + 1), "ctl\x01"]
    )
    async def test_get_rejects(self, client: AsyncSessionStoreClient, session_id: str) -> None:
        """A malformed session id is INVALID_ARGUMENT, not NOT_FOUND."""
        with pytest.raises(InvalidArgumentError):
            await client.get_user_session("r", session_id)

    async def test_caller_brought_id_with_whitespace(self, client: AsyncSessionStoreClient) -> None:
        """A caller-brought id with whitespace is refused."""
        with pytest.raises(InvalidArgumentError):
            await client.create_user_session("r", "u", session_id="bad id")

    async def test_empty_client_id(self, client: AsyncSessionStoreClient) -> None:
        """Attaching a client session needs a client id."""
        session = await client.create_user_session("r", "u")
        with pytest.raises(InvalidArgumentError):
            await client.attach_client_session("r", session.id, "")


class TestSizeLimits:
    """Notes and client sessions are bounded; a refused change leaves the session as it was."""

    async def test_note_value_too_long(self, client: AsyncSessionStoreClient) -> None:
        """A note value over the cap is INVALID_ARGUMENT."""
        with pytest.raises(InvalidArgumentError):
            await client.create_user_session("r", "u", notes={"n": "x" * (MAX_NOTE_VALUE_LENGTH + 1)})
        assert [] == await client.list_user_sessions("r", "u")

    async def test_too_many_notes_in_one_request(self, client: AsyncSessionStoreClient) -> None:
        """More notes than the cap in one request is INVALID_ARGUMENT."""
        with pytest.raises(InvalidArgumentError):
            await client.create_user_session("r", "u", notes={f"n{i}": "v" for i in range(MAX_NOTES + 1)})

    async def test_too_many_notes_over_time(self, client: AsyncSessionStoreClient) -> None:
        """Updates that would take a session over the notes cap are RESOURCE_EXHAUSTED and change nothing."""
        session = await client.create_user_session("r", "u", notes={f"a{i}": "v" for i in range(MAX_NOTES)})
        with pytest.raises(LimitExceededError):
            await client.update_user_session("r", session.id, set_notes={"one-more": "v"}, remove_notes=[])
        assert session.notes == (await client.get_user_session("r", session.id)).notes
        replaced = await client.update_user_session(
            "r", session.id, set_notes={"b": "v"}, remove_notes=["a0"]
        )
        assert MAX_NOTES == len(replaced.notes)

    async def test_empty_note_name(self, client: AsyncSessionStoreClient) -> None:
        """A note needs a name."""
        with pytest.raises(InvalidArgumentError):
            await client.create_user_session("r", "u", notes={"": "v"})


class TestPolicyValidation:
    """Realm policies with impossible values are refused."""

    async def test_negative_timeout(self, server: SessionStoreServer) -> None:
        """A negative timeout is INVALID_ARGUMENT with a message naming the field."""
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = pb_grpc.SessionStoreStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.SetRealmPolicy(
                    pb.SetRealmPolicyRequest(policy=pb.RealmPolicy(realm="r", sso_session_idle_timeout=-1))
                )
        assert grpc.StatusCode.INVALID_ARGUMENT == caught.value.code()
        assert "sso_session_idle_timeout" in (caught.value.details() or "")

    async def test_missing_policy(self, server: SessionStoreServer) -> None:
        """A set request without a policy is INVALID_ARGUMENT."""
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = pb_grpc.SessionStoreStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.SetRealmPolicy(pb.SetRealmPolicyRequest())
        assert grpc.StatusCode.INVALID_ARGUMENT == caught.value.code()

    async def test_bad_client_override_id(self, server: SessionStoreServer) -> None:
        """A client override for an id with whitespace is INVALID_ARGUMENT and nothing is stored."""
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = pb_grpc.SessionStoreStub(channel)
            policy = pb.RealmPolicy(realm="r", clients={"bad id": pb.ClientPolicy(session_idle_timeout=5)})
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.SetRealmPolicy(pb.SetRealmPolicyRequest(policy=policy))
            assert grpc.StatusCode.INVALID_ARGUMENT == caught.value.code()
            stored = await stub.GetRealmPolicy(pb.GetRealmPolicyRequest(realm="r"))
            assert policy_to_proto(RealmPolicy(realm="r")) == stored


class TestStatusDetails:
    """Errors carry google.rpc.ErrorInfo with our reason, and never a stack trace."""

    async def test_not_found_reason(self, server: SessionStoreServer) -> None:
        """A missing session is NOT_FOUND with reason SESSION_NOT_FOUND."""
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = pb_grpc.SessionStoreStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetUserSession(pb.GetUserSessionRequest(realm="r", session_id="missing"))
        err = caught.value
        assert grpc.StatusCode.NOT_FOUND == err.code()
        status = rpc_status.from_call(err)  # type: ignore[arg-type]  # AioRpcError is a Call at run time
        assert status is not None
        info = error_details_pb2.ErrorInfo()
        assert status.details[0].Unpack(info)
        assert ("SESSION_NOT_FOUND", "session-store") == (info.reason, info.domain)
        assert "Traceback" not in (err.details() or "")

    async def test_duplicate_caller_brought_id(self, client: AsyncSessionStoreClient) -> None:
        """A taken caller-brought id is ALREADY_EXISTS, for the same or another user."""
        await client.create_user_session("r", "u1", session_id="kc-1")
        with pytest.raises(SessionExistsError):
            await client.create_user_session("r", "u1", session_id="kc-1")
        with pytest.raises(SessionExistsError):
            await client.create_user_session("r", "u2", session_id="kc-1.other-route")
        assert "u1" == (await client.get_user_session("r", "kc-1")).user_id
        assert [] == await client.list_user_sessions("r", "u2")

    async def test_missing_session_operations(self, client: AsyncSessionStoreClient) -> None:
        """Every by-id write on a missing session is NOT_FOUND (removes answer removed=False)."""
        for call in (
            client.touch_user_session("r", "missing"),
            client.update_user_session("r", "missing", set_notes={"a": "b"}),
            client.get_client_session("r", "missing", "app"),
            client.update_client_session("r", "missing", "app"),
        ):
            with pytest.raises(SessionNotFoundError):
                await call
        assert await client.remove_user_session("r", "missing") is False
        assert await client.detach_client_session("r", "missing", "app") is False
