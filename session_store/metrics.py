"""Prometheus metrics: the grpc-ecosystem server metrics, store metrics, and the `/metrics` endpoint.

Each `SessionStoreServer` owns one `Metrics` with a private `CollectorRegistry`, so several servers
in one process (tests) never share or collide on series. Label values are method, service, code,
shard, script and realm names only: never a session id, user id, token or note.

Exported names:

- ``grpc_server_started_total{grpc_type,grpc_service,grpc_method}``
- ``grpc_server_handled_total{grpc_type,grpc_service,grpc_method,grpc_code}`` (Go-style codes: ``OK``,
  ``NotFound``, ``InvalidArgument``, ...)
- ``grpc_server_handling_seconds{grpc_type,grpc_service,grpc_method}`` (histogram, from 100 µs)
- ``grpc_server_msg_received_total`` / ``grpc_server_msg_sent_total{grpc_type,grpc_service,grpc_method}``
- ``session_store_script_seconds{shard,script}`` (histogram; script is a Lua script name, or
  ``command``/``pipeline`` for plain reads)
- ``session_store_shard_errors_total{shard,kind}`` (kind: connection, timeout, oom, readonly,
  loading, masterdown, busy, noauth, noperm, unexpected)
- ``session_store_shard_up{shard}`` (1 after a call the shard answered, 0 after it could not)
- ``session_store_sessions{realm,kind}`` (kind: online, offline; refreshed in the background from the
  realm indexes, for realms this node served recently)
- ``session_store_partition_retries_total{reason}`` (reason: moved, frozen: script calls this node
  retried while resharding moved their partition)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar, cast

import grpc
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from session_store.events.stats import PipelineStats
from session_store.storage.policies import PolicyStore

log = structlog.get_logger(__name__)

HANDLING_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""RPC handling time buckets, seconds: most calls finish well under a millisecond."""

SCRIPT_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
"""Shard call time buckets, seconds (a Lua script on a local shard takes tens of microseconds)."""

PIPELINE_REFRESH_SECONDS = 5.0
"""How often the event pipeline's numbers (sessions by realm, events, lags) are read from the shards:
three reads per shard, from counters the scripts keep (no scan)."""

RECENT_REALM_SECONDS = 600.0
"""A realm this node used within this many seconds keeps its sessions series, at 0 when it has none."""

MAX_REALM_SERIES = 100
"""At most this many realms (the largest) get a `session_store_sessions` series (bounds cardinality)."""

DOWN_KINDS = frozenset({"connection", "timeout", "loading", "masterdown", "readonly"})
"""Shard call error kinds after which the shard counts as down until a call succeeds."""

GO_CODE_NAMES: dict[grpc.StatusCode, str] = {
    grpc.StatusCode.OK: "OK",
    grpc.StatusCode.CANCELLED: "Canceled",
    grpc.StatusCode.UNKNOWN: "Unknown",
    grpc.StatusCode.INVALID_ARGUMENT: "InvalidArgument",
    grpc.StatusCode.DEADLINE_EXCEEDED: "DeadlineExceeded",
    grpc.StatusCode.NOT_FOUND: "NotFound",
    grpc.StatusCode.ALREADY_EXISTS: "AlreadyExists",
    grpc.StatusCode.PERMISSION_DENIED: "PermissionDenied",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "ResourceExhausted",
    grpc.StatusCode.FAILED_PRECONDITION: "FailedPrecondition",
    grpc.StatusCode.ABORTED: "Aborted",
    grpc.StatusCode.OUT_OF_RANGE: "OutOfRange",
    grpc.StatusCode.UNIMPLEMENTED: "Unimplemented",
    grpc.StatusCode.INTERNAL: "Internal",
    grpc.StatusCode.UNAVAILABLE: "Unavailable",
    grpc.StatusCode.DATA_LOSS: "DataLoss",
    grpc.StatusCode.UNAUTHENTICATED: "Unauthenticated",
}
"""Python's status code -> the name Go's `codes.Code.String()` gives it (what dashboards expect)."""

_GRPC_LABELS = ("grpc_type", "grpc_service", "grpc_method")
_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")


def go_code_name(code: Any) -> str:
    """The Go-style name of a status code given as a `grpc.StatusCode`, its integer value, or None (OK)."""
    if code is None:
        return "OK"
    if isinstance(code, grpc.StatusCode):
        return GO_CODE_NAMES[code]
    for member in grpc.StatusCode:
        if member.value[0] == code:
            return GO_CODE_NAMES[member]
    return "Unknown"


class Metrics:
    """Every series of one server, in its own registry, plus the HTTP endpoint that exposes them."""

    def __init__(self) -> None:
        """Create the series (none is exported with a value until something happens, except retries)."""
        self.registry = CollectorRegistry()
        r = self.registry
        self.started = Counter("grpc_server_started", "RPCs started on the server.", _GRPC_LABELS, registry=r)
        self.handled = Counter(
            "grpc_server_handled",
            "RPCs completed on the server, regardless of success or failure.",
            (*_GRPC_LABELS, "grpc_code"),
            registry=r,
        )
        self.handling = Histogram(
            "grpc_server_handling_seconds",
            "Response latency of RPCs handled by the server, in seconds.",
            _GRPC_LABELS,
            buckets=HANDLING_BUCKETS,
            registry=r,
        )
        self.received = Counter(
            "grpc_server_msg_received", "Messages received by the server.", _GRPC_LABELS, registry=r
        )
        self.sent = Counter("grpc_server_msg_sent", "Messages sent by the server.", _GRPC_LABELS, registry=r)
        self.script_seconds = Histogram(
            "session_store_script_seconds",
            "Time of one call to a Redis shard (a Lua script, or a plain command/pipeline), in seconds.",
            ("shard", "script"),
            buckets=SCRIPT_BUCKETS,
            registry=r,
        )
        self.shard_errors = Counter(
            "session_store_shard_errors",
            "Shard calls that failed, by kind (connection, timeout, Redis error code, unexpected).",
            ("shard", "kind"),
            registry=r,
        )
        self.shard_up = Gauge(
            "session_store_shard_up",
            "1 if the shard answered its last call (or the startup ping), 0 if it could not.",
            ("shard",),
            registry=r,
        )
        self.sessions = Gauge(
            "session_store_sessions",
            "Sessions not yet ended by realm and kind (online/offline), from the shards' counters.",
            ("realm", "kind"),
            registry=r,
        )
        self.stream_length = Gauge(
            "session_store_event_stream_length",
            "Entries in the shard's event stream.",
            ("shard",),
            registry=r,
        )
        self.sweeper_lag = Gauge(
            "session_store_sweeper_lag_seconds",
            "How long the shard's oldest passed deadline has waited for its expired event.",
            ("shard",),
            registry=r,
        )
        self.watchers = Gauge("session_store_watchers", "Watch streams open on this node.", registry=r)
        self.watcher_lag = Gauge(
            "session_store_watcher_lag_seconds",
            "How far the slowest watch stream of this node is behind the newest event it has seen.",
            registry=r,
        )
        self._events = _EventsCollector()
        r.register(self._events)
        self.retries = Counter(
            "session_store_partition_retries",
            "Calls retried because their partition had moved or was frozen by resharding.",
            ("reason",),
            registry=r,
        )
        for reason in ("moved", "frozen"):
            self.retries.labels(reason)
        self._http: tuple[Any, Any] | None = None
        self.port = 0

    # -- store metrics ------------------------------------------------------------------------

    def observe_retry(self, reason: str) -> None:
        """Count one call retried because its partition had moved ("moved") or was frozen ("frozen")."""
        self.retries.labels(reason).inc()

    def observe_shard_call(self, shard: str, script: str, seconds: float, kind: str | None) -> None:
        """The `Shard` observer: latency per shard and script, errors by kind, and shard up/down."""
        self.script_seconds.labels(shard, script).observe(seconds)
        if kind is None:
            self.shard_up.labels(shard).set(1)
            return
        self.shard_errors.labels(shard, kind).inc()
        if kind in DOWN_KINDS:
            self.shard_up.labels(shard).set(0)

    def mark_shards_up(self, shards: list[str]) -> None:
        """Record that every shard answered the startup ping."""
        for shard in shards:
            self.shard_up.labels(shard).set(1)

    def update_pipeline(self, stats: PipelineStats, recent_realms: list[str]) -> None:
        """Set the event pipeline's series from a snapshot.

        Sessions by realm come from the shards' counters: the largest MAX_REALM_SERIES realms, plus
        the realms this node used recently (0 when they have none). A shard that did not answer keeps
        its stream and lag series; its sessions are missing from the totals until it answers.
        """
        counts = stats.sessions
        by_realm: dict[str, int] = {}
        for (realm, _), count in counts.items():
            by_realm[realm] = by_realm.get(realm, 0) + count
        largest = sorted(by_realm, key=lambda realm: (-by_realm[realm], realm))[:MAX_REALM_SERIES]
        keep = set(largest) | set(recent_realms[:MAX_REALM_SERIES])
        for realm in keep:
            for kind, offline in (("online", False), ("offline", True)):
                self.sessions.labels(realm, kind).set(counts.get((realm, offline), 0))
        for labels in list(self._session_label_sets()):
            if labels[0] not in keep:
                with contextlib.suppress(KeyError):
                    self.sessions.remove(*labels)
        for name, shard in stats.shards.items():
            self.stream_length.labels(name).set(shard.stream_length)
            self.sweeper_lag.labels(name).set(shard.overdue_ms / 1000)
        self.watchers.set(stats.watchers)
        self.watcher_lag.set(max(stats.watcher_lags_ms, default=0) / 1000)
        self._events.events = stats.events

    def _session_label_sets(self) -> list[tuple[str, str]]:
        return [
            (sample.labels["realm"], sample.labels["kind"])
            for family in self.sessions.collect()
            for sample in family.samples
        ]

    async def refresh_pipeline(
        self, source: Callable[[], Awaitable[PipelineStats]], policies: PolicyStore
    ) -> None:
        """Read the pipeline's numbers once and set their series; a failure is logged, never raised."""
        try:
            stats = await source()
        except Exception as exc:  # a metrics refresh must never stop the loop
            log.warning("pipeline_stats_failed", error=type(exc).__name__)
            return
        self.update_pipeline(stats, policies.recent_realms(RECENT_REALM_SECONDS))

    async def run_pipeline_refresh(
        self,
        source: Callable[[], Awaitable[PipelineStats]],
        policies: PolicyStore,
        interval: float = PIPELINE_REFRESH_SECONDS,
    ) -> None:
        """Refresh the pipeline's series every `interval` seconds until cancelled."""
        while True:
            await self.refresh_pipeline(source, policies)
            await asyncio.sleep(interval)

    # -- HTTP endpoint ------------------------------------------------------------------------

    def start_http(self, listen: str) -> int:
        """Serve `/metrics` on `host:port` (port 0 picks a free one) in a thread; returns the port.

        Raises:
            OSError: the address could not be bound.
        """
        host, _, port = listen.rpartition(":")
        server, thread = start_http_server(int(port), addr=host.strip("[]"), registry=self.registry)
        self._http = (server, thread)
        self.port = int(server.server_port)
        return self.port

    async def stop_http(self) -> None:
        """Stop the endpoint and close its socket (waits for the serving thread to end)."""
        if self._http is None:
            return
        server, thread = self._http
        self._http = None
        await asyncio.to_thread(server.shutdown)
        server.server_close()
        await asyncio.to_thread(thread.join, 5.0)

    # -- gRPC interceptor ---------------------------------------------------------------------

    def interceptor(self) -> MetricsInterceptor:
        """The server interceptor recording the grpc_server_* series into this registry."""
        return MetricsInterceptor(self)


class _EventsCollector(Collector):
    """`session_store_events_total{type}`: the shards' own event counters (cluster-wide, monotonic
    per shard), exported as a counter from the last snapshot."""

    def __init__(self) -> None:
        self.events: dict[str, int] = {}

    def collect(self) -> list[CounterMetricFamily]:
        family = CounterMetricFamily(
            "session_store_events", "Events appended to the shards' streams, by type.", labels=["type"]
        )
        for kind, count in sorted(self.events.items()):
            family.add_metric([kind], count)
        return [family]


def _split_method(full_method: str) -> tuple[str, str]:
    """ "/pkg.Service/Method" -> ("pkg.Service", "Method")."""
    service, _, method = full_method.lstrip("/").rpartition("/")
    return service or "unknown", method


class _Call:
    """The labelled series of one method, looked up once per method."""

    def __init__(self, metrics: Metrics, grpc_type: str, service: str, method: str) -> None:
        self._metrics = metrics
        self._labels = (grpc_type, service, method)
        self.started = metrics.started.labels(*self._labels)
        self.handling = metrics.handling.labels(*self._labels)
        self.received = metrics.received.labels(*self._labels)
        self.sent = metrics.sent.labels(*self._labels)
        self._handled: dict[Any, Any] = {}

    def done(self, started: float, code: Any) -> None:
        self.handling.observe(time.perf_counter() - started)
        handled = self._handled.get(code)
        if handled is None:
            handled = self._metrics.handled.labels(*self._labels, go_code_name(code))
            self._handled[code] = handled
        handled.inc()


def _final_code(context: grpc.aio.ServicerContext[Any, Any], failed: bool) -> Any:
    """The status the call ends with: what the servicer set or aborted with, else OK or UNKNOWN."""
    code = context.code()
    if code is None and context.cancelled():
        return grpc.StatusCode.CANCELLED
    if code is None and failed:
        return grpc.StatusCode.UNKNOWN
    return code


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Records started/handled/handling-time/messages for unary and streaming RPCs alike.

    Streaming handlers' iterators are returned to grpc.aio un-awaited (wrapped in async generators),
    which keeps server reflection, a stream-stream service, working.
    """

    def __init__(self, metrics: Metrics) -> None:
        """Record into `metrics`."""
        self._metrics = metrics
        self._calls: dict[str, _Call] = {}

    def _call(self, full_method: str, handler: grpc.RpcMethodHandler[Any, Any]) -> _Call:
        call = self._calls.get(full_method)
        if call is None:
            kind = (
                ("bidi_stream" if handler.response_streaming else "client_stream")
                if handler.request_streaming
                else ("server_stream" if handler.response_streaming else "unary")
            )
            call = _Call(self._metrics, kind, *_split_method(full_method))
            self._calls[full_method] = call
        return call

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[_Req, _Resp] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[_Req, _Resp] | None:
        """Wrap the method's handler; unknown methods (no handler) pass through unrecorded."""
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        return cast("grpc.RpcMethodHandler[_Req, _Resp]", self._wrap(handler_call_details.method, handler))

    def _wrap(self, full_method: str, handler: grpc.RpcMethodHandler[Any, Any]) -> Any:
        call = self._call(full_method, handler)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _unary_unary(call, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _unary_stream(call, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                _stream_unary(call, handler.stream_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return grpc.stream_stream_rpc_method_handler(
            _stream_stream(call, handler.stream_stream),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


async def _counted(call: _Call, requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        call.received.inc()
        yield request


def _unary_unary(call: _Call, behavior: Any) -> Any:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        call.started.inc()
        call.received.inc()
        started = time.perf_counter()
        failed = True
        try:
            response = await behavior(request, context)
            failed = False
        finally:
            call.done(started, _final_code(context, failed))
        call.sent.inc()
        return response

    return wrapper


def _stream_unary(call: _Call, behavior: Any) -> Any:
    async def wrapper(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        call.started.inc()
        started = time.perf_counter()
        failed = True
        try:
            response = await behavior(_counted(call, requests), context)
            failed = False
        finally:
            call.done(started, _final_code(context, failed))
        call.sent.inc()
        return response

    return wrapper


async def _responses(
    call: _Call, result: Any, context: grpc.aio.ServicerContext[Any, Any]
) -> AsyncIterator[Any]:
    """Pass a streaming handler's responses through, counting them and recording the outcome.

    A handler that writes with `context.write` returns a coroutine instead of an iterator; it is
    awaited here (its messages are not counted).
    """
    started = time.perf_counter()
    failed = True
    try:
        if hasattr(result, "__aiter__"):
            async for response in result:
                call.sent.inc()
                yield response
        else:
            await result
        failed = False
    finally:
        call.done(started, _final_code(context, failed))


# The wrappers must themselves be async generator functions: grpc.aio inspects the behavior to pick
# its streaming path, and treats a plain function returning an async iterator as a sync generator.


def _unary_stream(call: _Call, behavior: Any) -> Any:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        call.started.inc()
        call.received.inc()
        async for response in _responses(call, behavior(request, context), context):
            yield response

    return wrapper


def _stream_stream(call: _Call, behavior: Any) -> Any:
    async def wrapper(
        requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        call.started.inc()
        async for response in _responses(call, behavior(_counted(call, requests), context), context):
            yield response

    return wrapper
