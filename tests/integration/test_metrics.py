"""Prometheus metrics: exact grpc_server_* counts after known traffic, store metrics, the endpoint's life."""

from __future__ import annotations

import json
import re
import socket
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from session_store.config import Settings, SettingsError, ShardSettings
from session_store.embedded import free_port
from session_store.errors import ShardUnavailableError
from session_store.metrics import Metrics
from session_store.model.clock import TestClock
from session_store.server import SessionStoreServer
from session_store.storage.shard import Shard
from session_store.v1 import session_store_pb2 as pb
from session_store.v1 import session_store_pb2_grpc as pb_grpc

DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "session-store-dashboard.json"
SERVICE = "session_store.v1.SessionStore"
USERS = ("metrics-user-1", "metrics-user-2")


@pytest.fixture
async def metered(
    flushed_shards: tuple[ShardSettings, ...], clock: TestClock
) -> AsyncIterator[SessionStoreServer]:
    """An in-process service with its Prometheus endpoint on a free loopback port."""
    settings = Settings(
        listen="127.0.0.1:0",
        grace_seconds=0.5,
        policy_refresh_seconds=0.001,
        metrics_listen=f"127.0.0.1:{free_port()}",
    )
    srv = SessionStoreServer(settings, flushed_shards, clock=clock)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop(grace=0)


def scrape_text(port: int) -> str:
    """The exposition text the endpoint serves now (a blocking read: the endpoint runs in a thread)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def scrape(port: int) -> list[Sample]:
    """Every sample the endpoint exposes now."""
    return [s for family in text_string_to_metric_families(scrape_text(port)) for s in family.samples]


def value(samples: list[Sample], name: str, **labels: str) -> float:
    """The one sample named `name` whose labels include `labels` (0 if there is none)."""
    found = [s.value for s in samples if s.name == name and labels.items() <= s.labels.items()]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else 0.0


def handled(samples: list[Sample], method: str, code: str) -> float:
    """grpc_server_handled_total of a SessionStore method ending with `code`."""
    return value(
        samples, "grpc_server_handled_total", grpc_service=SERVICE, grpc_method=method, grpc_code=code
    )


async def traffic(port: int) -> tuple[list[str], int]:
    """Known calls: 3 creates, 1 found and 1 missing get, 1 bad policy, 2 removals (1 bad), 1 count.

    Returns the session ids created and the progress messages of the good removal.
    """
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.SessionStoreStub(channel)
        ids = [
            (await stub.CreateUserSession(pb.CreateUserSessionRequest(realm="kept", user_id=USERS[0]))).id,
            (await stub.CreateUserSession(pb.CreateUserSessionRequest(realm="kept", user_id=USERS[1]))).id,
            (await stub.CreateUserSession(pb.CreateUserSessionRequest(realm="doomed", user_id=USERS[0]))).id,
        ]
        await stub.GetUserSession(pb.GetUserSessionRequest(realm="kept", session_id=ids[0]))
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.GetUserSession(pb.GetUserSessionRequest(realm="kept", session_id="no-such-session"))
        assert grpc.StatusCode.NOT_FOUND == missing.value.code()
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await stub.SetRealmPolicy(
                pb.SetRealmPolicyRequest(policy=pb.RealmPolicy(realm="kept", sso_session_idle_timeout=-1))
            )
        assert grpc.StatusCode.INVALID_ARGUMENT == bad.value.code()
        progress = [p async for p in stub.RemoveSessions(pb.RemoveSessionsRequest(realm="doomed", all=True))]
        assert 1 == progress[-1].removed
        with pytest.raises(grpc.aio.AioRpcError) as bad_stream:
            _ = [p async for p in stub.RemoveSessions(pb.RemoveSessionsRequest(realm="doomed"))]
        assert grpc.StatusCode.INVALID_ARGUMENT == bad_stream.value.code()
        await stub.CountSessions(pb.CountSessionsRequest(realm="kept"))
    return ids, len(progress)


class TestGrpcServerMetrics:
    """The grpc-ecosystem series count every call once, streaming ones included."""

    async def test_exact_counts_after_traffic(self, metered: SessionStoreServer) -> None:
        """Handled by method and Go-style code, started, messages and histogram counts match the calls."""
        _, messages = await traffic(metered.port)
        samples = scrape(metered.metrics_port)
        assert 3 == handled(samples, "CreateUserSession", "OK")
        assert 1 == handled(samples, "GetUserSession", "OK")
        assert 1 == handled(samples, "GetUserSession", "NotFound")
        assert 1 == handled(samples, "SetRealmPolicy", "InvalidArgument")
        assert 1 == handled(samples, "RemoveSessions", "OK")
        assert 1 == handled(samples, "RemoveSessions", "InvalidArgument")
        assert 1 == handled(samples, "CountSessions", "OK")
        handled_total = sum(
            s.value
            for s in samples
            if s.name == "grpc_server_handled_total" and s.labels["grpc_service"] == SERVICE
        )
        assert 9 == handled_total
        started = {
            s.labels["grpc_method"]: s.value
            for s in samples
            if s.name == "grpc_server_started_total" and s.labels["grpc_service"] == SERVICE
        }
        expected = {"CreateUserSession": 3, "GetUserSession": 2, "SetRealmPolicy": 1, "RemoveSessions": 2}
        assert {**expected, "CountSessions": 1} == started
        stream = {"grpc_service": SERVICE, "grpc_method": "RemoveSessions", "grpc_type": "server_stream"}
        assert 2 == value(samples, "grpc_server_handling_seconds_count", **stream)
        assert 2 == value(samples, "grpc_server_msg_received_total", **stream)
        assert messages == value(samples, "grpc_server_msg_sent_total", **stream)
        assert messages > 1
        unary = {"grpc_service": SERVICE, "grpc_method": "CreateUserSession", "grpc_type": "unary"}
        assert 3 == value(samples, "grpc_server_handling_seconds_count", **unary)
        assert 3 == value(samples, "grpc_server_msg_sent_total", **unary)
        assert 3 == value(samples, "grpc_server_handling_seconds_bucket", **unary, le="+Inf")
        assert 0 == value(samples, "grpc_server_handling_seconds_bucket", **unary, le="0.0")

    async def test_sub_millisecond_buckets(self, metered: SessionStoreServer) -> None:
        """The handling-time histogram resolves below a millisecond."""
        await traffic(metered.port)
        bounds = {
            float(s.labels["le"])
            for s in scrape(metered.metrics_port)
            if s.name == "grpc_server_handling_seconds_bucket"
        }
        assert {0.0001, 0.00025, 0.0005, 0.001} <= bounds

    async def test_reflection_still_works(self, metered: SessionStoreServer) -> None:
        """Server reflection (a bidi stream) answers through the interceptor and is counted."""
        async with grpc.aio.insecure_channel(f"127.0.0.1:{metered.port}") as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)  # type: ignore[arg-type]  # aio channels work; stubs say sync only
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            names: set[str] = set()
            async for reply in stub.ServerReflectionInfo(iter([request])):  # type: ignore[operator]  # untyped in the stubs
                names |= {s.name for s in reply.list_services_response.service}
        assert SERVICE in names
        stream = {"grpc_method": "ServerReflectionInfo", "grpc_type": "bidi_stream", "grpc_code": "OK"}
        samples = scrape(metered.metrics_port)
        assert 1 == value(samples, "grpc_server_handled_total", **stream)
        del stream["grpc_code"]
        assert 1 == value(samples, "grpc_server_msg_received_total", **stream)
        assert 1 == value(samples, "grpc_server_msg_sent_total", **stream)


class TestStoreMetrics:
    """Script latency per shard, shard up, sessions by realm, retries."""

    async def test_script_latency_and_shards(self, metered: SessionStoreServer) -> None:
        """Every script the traffic used has latency samples; every shard is up; no shard errors."""
        await traffic(metered.port)
        samples = scrape(metered.metrics_port)
        per_script: dict[str, float] = {}
        for s in samples:
            if s.name == "session_store_script_seconds_count":
                per_script[s.labels["script"]] = per_script.get(s.labels["script"], 0) + s.value
        for script in ("create_user_session", "get_user_session", "remove_sessions_batch", "pipeline"):
            assert per_script.get(script, 0) > 0, script
        shards = set(metered.router.shards)
        assert {1.0} == {value(samples, "session_store_shard_up", shard=name) for name in shards}
        assert shards == {s.labels["shard"] for s in samples if s.name == "session_store_shard_up"}
        assert [] == [s for s in samples if s.name == "session_store_shard_errors_total"]

    async def test_sessions_by_realm(self, metered: SessionStoreServer) -> None:
        """A refresh sets live sessions for every realm used: 2 online in "kept", 0 in the emptied realm."""
        await traffic(metered.port)
        assert metered.metrics is not None
        await metered.metrics.refresh_pipeline(metered.pipeline_stats, metered.policies)
        samples = scrape(metered.metrics_port)
        assert 2 == value(samples, "session_store_sessions", realm="kept", kind="online")
        assert 0 == value(samples, "session_store_sessions", realm="kept", kind="offline")
        assert 0 == value(samples, "session_store_sessions", realm="doomed", kind="online")
        assert 1 == len([s for s in samples if s.labels == {"realm": "doomed", "kind": "online"}])

    async def test_event_pipeline_series(self, metered: SessionStoreServer) -> None:
        """Events by type (3 created, 1 revoked), stream lengths and lags come from the shards' counters."""
        await traffic(metered.port)
        assert metered.metrics is not None
        await metered.metrics.refresh_pipeline(metered.pipeline_stats, metered.policies)
        samples = scrape(metered.metrics_port)
        assert 3 == value(samples, "session_store_events_total", type="created")
        assert 1 == value(samples, "session_store_events_total", type="revoked")
        lengths = [s.value for s in samples if s.name == "session_store_event_stream_length"]
        assert 4 == sum(lengths)
        assert len(metered.router.shards) == len(lengths)
        assert {0.0} == {s.value for s in samples if s.name == "session_store_sweeper_lag_seconds"}
        assert 0 == value(samples, "session_store_watchers")

    async def test_retries_exported_at_zero(self, metered: SessionStoreServer) -> None:
        """Retries on moved/frozen partitions exist from the start, at 0 (no resharding yet)."""
        samples = scrape(metered.metrics_port)
        assert 0 == value(samples, "session_store_partition_retries_total", reason="moved")
        assert 0 == value(samples, "session_store_partition_retries_total", reason="frozen")

    async def test_no_ids_in_labels(self, metered: SessionStoreServer) -> None:
        """No label value is a session id or a user id used by the traffic."""
        ids, _ = await traffic(metered.port)
        assert metered.metrics is not None
        await metered.metrics.refresh_pipeline(metered.pipeline_stats, metered.policies)
        label_values = {v for s in scrape(metered.metrics_port) for v in s.labels.values()}
        assert set() == label_values & {*ids, *USERS, "no-such-session"}


class TestShardDown:
    """A shard that cannot be reached shows as down, with its errors counted by kind."""

    async def test_refused_connection_marks_the_shard_down(self) -> None:
        """A call to a port nobody listens on: shard_up 0, one "connection" error, latency recorded."""
        metrics = Metrics()
        metrics.mark_shards_up(["gone"])
        shard = Shard(
            "gone",
            f"redis://127.0.0.1:{free_port()}",
            connect_timeout=0.5,
            observer=metrics.observe_shard_call,
        )
        try:
            with pytest.raises(ShardUnavailableError):
                await shard.command("PING")
        finally:
            await shard.close()
        get = metrics.registry.get_sample_value
        assert 0 == get("session_store_shard_up", {"shard": "gone"})
        assert 1 == get("session_store_shard_errors_total", {"shard": "gone", "kind": "connection"})
        assert 1 == get("session_store_script_seconds_count", {"shard": "gone", "script": "command"})


class TestEndpointLifecycle:
    """The endpoint is off by default, on when configured, and closed by stop()."""

    async def test_off_by_default(self, server: SessionStoreServer) -> None:
        """Without SESSION_STORE_METRICS_LISTEN nothing is recorded or served."""
        assert (None, 0) == (server.metrics, server.metrics_port)

    async def test_stop_closes_the_socket(
        self, flushed_shards: tuple[ShardSettings, ...], clock: TestClock
    ) -> None:
        """After stop() the port refuses connections; a second server in the process has its own registry."""
        settings = Settings(listen="127.0.0.1:0", grace_seconds=0, metrics_listen="127.0.0.1:0")
        first = SessionStoreServer(settings, flushed_shards, clock=clock)
        second = SessionStoreServer(settings, flushed_shards, clock=clock)
        await first.start()
        await second.start()
        try:
            await traffic(first.port)
            assert 3 == handled(scrape(first.metrics_port), "CreateUserSession", "OK")
            assert 0 == handled(scrape(second.metrics_port), "CreateUserSession", "OK")
        finally:
            await first.stop(grace=0)
            await second.stop(grace=0)
        for port in (first.metrics_port, second.metrics_port):
            with (
                pytest.raises(ConnectionRefusedError),
                socket.create_connection(("127.0.0.1", port), timeout=2),
            ):
                pass

    def test_setting_from_env(self) -> None:
        """SESSION_STORE_METRICS_LISTEN is read, and anything but host:port is refused."""
        env = {"SESSION_STORE_METRICS_LISTEN": "127.0.0.1:9464"}
        assert "127.0.0.1:9464" == Settings.from_env(env).metrics_listen
        assert "" == Settings.from_env({}).metrics_listen
        with pytest.raises(SettingsError, match="METRICS_LISTEN"):
            Settings.from_env({"SESSION_STORE_METRICS_LISTEN": "9464"})


class TestDashboard:
    """deploy/grafana/session-store-dashboard.json is valid and queries only exported series."""

    async def test_queries_only_exported_metrics(self, metered: SessionStoreServer) -> None:
        """Every grpc_server_*/session_store_* name in a panel query is a family the server exports."""
        dashboard = json.loads(DASHBOARD.read_text())
        exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
        assert len(exprs) >= 6
        used = {m for e in exprs for m in re.findall(r"\b(?:grpc_server|session_store)_[a-z_]+", e)}
        text = scrape_text(metered.metrics_port)
        exported = {s.name for family in text_string_to_metric_families(text) for s in family.samples}
        exported |= {f.name for f in text_string_to_metric_families(text)}
        # Series with labels appear only once observed; the families are declared from the start.
        declared = set(re.findall(r"^# TYPE (\S+)", text, flags=re.MULTILINE))
        for name in declared:
            exported |= {name, f"{name}_total", f"{name}_bucket", f"{name}_count", f"{name}_sum"}
        assert set() == used - exported
        assert {
            "grpc_server_handled_total",
            "grpc_server_handling_seconds_bucket",
            "session_store_script_seconds_bucket",
            "session_store_shard_up",
            "session_store_sessions",
        } <= used
